//! Who gets a connection slot: the connection cap shared out between client addresses.
//!
//! One address may hold at most `max_per_peer` connections, and all together at most `max`.
//! A full cap does not turn the newcomer away while an idle connection (no request in the
//! handler) can make room for it: one idle connection of the address holding the most
//! connections is closed instead, the one idle longest. So an address that opens connections
//! and sends nothing (or never reads its answers) only ever displaces its own connections or
//! those of an address holding at least as many, and a client with a few connections is served
//! however many idle ones others hold. Refusing the newcomer would let whoever holds the slots
//! first keep everyone else out until its timeouts run out, and then race for the freed slots.
//!
//! [`Table`] is the policy on plain data; [`Slots`] shares it between the accept loop and the
//! workers that close connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// A connection as the policy sees it.
pub trait Occupant {
    /// Since when it has had no request in the handler (smaller: idle longer); `None` while it
    /// has one.
    fn idle_since(&self) -> Option<u64>;
}

/// What to do with a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission<T> {
    /// Serve it; `evicted` was taken out of the table to make room and must be closed.
    Admit {
        /// The connection closed in its favour.
        evicted: Option<T>,
    },
    /// Close it: every connection that could make room is busy.
    Refuse,
}

/// The open connections by address, within the caps.
#[derive(Debug)]
pub struct Table<T> {
    max: usize,
    max_per_peer: usize,
    total: usize,
    peers: HashMap<IpAddr, Vec<T>>,
}

impl<T: Occupant + Clone + PartialEq> Table<T> {
    /// An empty table; both caps are at least 1.
    pub fn new(max: usize, max_per_peer: usize) -> Self {
        Table {
            max: max.max(1),
            max_per_peer: max_per_peer.max(1),
            total: 0,
            peers: HashMap::new(),
        }
    }

    /// Connections in the table.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.total
    }

    /// Connections of `peer` in the table.
    pub fn of(&self, peer: IpAddr) -> usize {
        self.peers.get(&peer).map_or(0, Vec::len)
    }

    /// Admit `occupant` from `peer` if there is room or room can be made.
    pub fn admit(&mut self, peer: IpAddr, occupant: T) -> Admission<T> {
        let own = self.of(peer);
        let victim = if own >= self.max_per_peer {
            // At its own share an address can only displace itself.
            Self::longest_idle(&self.peers[&peer]).map(|at| (peer, at))
        } else if self.total >= self.max {
            self.victim_for(peer, own)
        } else {
            self.insert(peer, occupant);
            return Admission::Admit { evicted: None };
        };
        let Some((victim_peer, at)) = victim else {
            return Admission::Refuse;
        };
        let evicted = self.take(victim_peer, at);
        self.insert(peer, occupant);
        Admission::Admit {
            evicted: Some(evicted),
        }
    }

    /// Forget `occupant` (closed); nothing when it is not in the table (evicted).
    pub fn remove(&mut self, peer: IpAddr, occupant: &T) {
        if let Some(at) = self
            .peers
            .get(&peer)
            .and_then(|held| held.iter().position(|o| o == occupant))
        {
            self.take(peer, at);
        }
    }

    /// The idle connection to close for a newcomer from `peer`, which holds `own`: of the
    /// addresses holding more than `own` (or `peer` itself), the one holding the most, its
    /// connection idle longest.
    fn victim_for(&self, peer: IpAddr, own: usize) -> Option<(IpAddr, usize)> {
        self.peers
            .iter()
            .filter(|(p, held)| **p == peer || held.len() > own)
            .filter_map(|(p, held)| {
                let at = Self::longest_idle(held)?;
                let since = held[at].idle_since()?;
                Some(((held.len(), std::cmp::Reverse(since)), (*p, at)))
            })
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, victim)| victim)
    }

    fn longest_idle(held: &[T]) -> Option<usize> {
        held.iter()
            .enumerate()
            .filter_map(|(at, o)| Some((o.idle_since()?, at)))
            .min()
            .map(|(_, at)| at)
    }

    fn insert(&mut self, peer: IpAddr, occupant: T) {
        self.peers.entry(peer).or_default().push(occupant);
        self.total += 1;
    }

    fn take(&mut self, peer: IpAddr, at: usize) -> T {
        let held = self.peers.get_mut(&peer).expect("the peer holds it");
        let taken = held.swap_remove(at);
        if held.is_empty() {
            self.peers.remove(&peer);
        }
        self.total -= 1;
        taken
    }
}

/// One open connection's state, shared by the table and the task serving it.
#[derive(Debug)]
pub struct Slot {
    /// Requests of this connection in the handler.
    busy: AtomicUsize,
    /// Milliseconds since the table's epoch when it last had none.
    idle_since: AtomicU64,
    epoch: Instant,
    evicted: Notify,
}

impl Slot {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Count a request in the handler until the returned guard drops.
    pub fn working(self: &Arc<Self>) -> Working {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Working(self.clone())
    }

    /// Completes when the connection was closed to make room for another.
    pub async fn evicted(&self) {
        self.evicted.notified().await;
    }
}

/// A request in the handler; dropping it marks the connection idle from now.
#[derive(Debug)]
pub struct Working(Arc<Slot>);

impl Drop for Working {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now(), Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A slot as the table holds it.
#[derive(Debug, Clone)]
pub struct Shared(Arc<Slot>);

impl PartialEq for Shared {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Occupant for Shared {
    fn idle_since(&self) -> Option<u64> {
        (self.0.busy.load(Ordering::Relaxed) == 0)
            .then(|| self.0.idle_since.load(Ordering::Relaxed))
    }
}

/// The table shared between the accept loop and the connections' tasks.
#[derive(Debug, Clone)]
pub struct Slots {
    table: Arc<Mutex<Table<Shared>>>,
    epoch: Instant,
}

/// The client a connection's share is counted for: an IPv4 address, or an IPv6 /64 (one host
/// commonly holds a whole /64, so single IPv6 addresses would give it a share per address).
pub fn client_of(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Slots {
    /// Room for `max` connections, `max_per_peer` from one address.
    pub fn new(max: usize, max_per_peer: usize) -> Slots {
        Slots {
            table: Arc::new(Mutex::new(Table::new(max, max_per_peer))),
            epoch: Instant::now(),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table<Shared>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a new connection from `peer`, and whether another connection was closed
    /// for it.
    pub fn admit(&self, peer: IpAddr) -> Result<(Held, bool), Full> {
        let peer = client_of(peer);
        let slot = Arc::new(Slot {
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            epoch: self.epoch,
            evicted: Notify::new(),
        });
        slot.idle_since.store(slot.now(), Ordering::Relaxed);
        let admission = self.table().admit(peer, Shared(slot.clone()));
        match admission {
            Admission::Refuse => Err(Full),
            Admission::Admit { evicted } => {
                let evicting = evicted.is_some();
                if let Some(Shared(victim)) = evicted {
                    // Stored as a permit when its task is not waiting yet.
                    victim.evicted.notify_one();
                }
                Ok((
                    Held {
                        slot,
                        peer,
                        slots: self.clone(),
                    },
                    evicting,
                ))
            }
        }
    }
}

/// A connection's slot, given back when it drops.
#[derive(Debug)]
pub struct Held {
    slot: Arc<Slot>,
    peer: IpAddr,
    slots: Slots,
}

impl Held {
    /// The connection's state.
    pub fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.slots
            .table()
            .remove(self.peer, &Shared(self.slot.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A connection: its id, and since when it is idle (None: busy).
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Conn(u32, Option<u64>);

    impl Occupant for Conn {
        fn idle_since(&self) -> Option<u64> {
            self.1
        }
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    #[test]
    fn one_address_is_held_to_its_share_and_displaces_its_own_idle_connections() {
        let mut table = Table::new(10, 2);
        assert_eq!(
            table.admit(ip(1), Conn(1, Some(5))),
            Admission::Admit { evicted: None }
        );
        assert_eq!(
            table.admit(ip(1), Conn(2, Some(3))),
            Admission::Admit { evicted: None }
        );
        // The one idle longest makes room.
        assert_eq!(
            table.admit(ip(1), Conn(3, Some(9))),
            Admission::Admit {
                evicted: Some(Conn(2, Some(3)))
            }
        );
        assert_eq!(table.of(ip(1)), 2);
        // Another address is not affected by that share.
        assert_eq!(
            table.admit(ip(2), Conn(4, Some(9))),
            Admission::Admit { evicted: None }
        );
    }

    #[test]
    fn a_full_table_makes_room_from_the_largest_holder_and_refuses_when_all_are_busy() {
        let mut table = Table::new(3, 3);
        table.admit(ip(1), Conn(1, Some(1)));
        table.admit(ip(1), Conn(2, Some(2)));
        table.admit(ip(2), Conn(3, Some(0)));
        // ip(2) holds one connection: it is not displaced for another one-connection address.
        assert_eq!(
            table.admit(ip(3), Conn(4, Some(9))),
            Admission::Admit {
                evicted: Some(Conn(1, Some(1)))
            }
        );
        let mut busy = Table::new(2, 2);
        busy.admit(ip(1), Conn(1, None));
        busy.admit(ip(2), Conn(2, None));
        assert_eq!(busy.admit(ip(3), Conn(3, Some(0))), Admission::Refuse);
        assert_eq!(busy.len(), 2);
    }

    #[test]
    fn an_ipv6_64_is_one_client_and_a_mapped_ipv4_address_is_its_ipv4_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_of(a), client_of(b));
        assert_ne!(client_of(a), client_of(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_of(mapped), IpAddr::from([192, 0, 2, 7]));
        assert_eq!(client_of(ip(1)), ip(1));
    }

    #[test]
    fn removing_a_connection_frees_its_slot_once() {
        let mut table = Table::new(1, 1);
        table.admit(ip(1), Conn(1, None));
        table.remove(ip(1), &Conn(1, None));
        table.remove(ip(1), &Conn(1, None));
        assert_eq!(table.len(), 0);
        assert_eq!(
            table.admit(ip(2), Conn(2, None)),
            Admission::Admit { evicted: None }
        );
    }

    proptest! {
        /// Whatever arrives and leaves: the caps hold, busy connections are never displaced,
        /// and a newcomer is only refused when nobody holding more than it does (or itself) has
        /// an idle connection.
        #[test]
        fn caps_hold_and_only_idle_connections_of_larger_holders_make_room(
            max in 1usize..8,
            max_per_peer in 1usize..8,
            steps in proptest::collection::vec((0u8..4, proptest::option::of(0u64..100), any::<bool>()), 0..60),
        ) {
            let mut table = Table::new(max, max_per_peer);
            let mut open: Vec<(IpAddr, Conn)> = Vec::new();
            for (id, (peer, idle, leave)) in steps.into_iter().enumerate() {
                let id = u32::try_from(id).unwrap();
                if leave && !open.is_empty() {
                    let (peer, conn) = open.remove(usize::try_from(id).unwrap() % open.len());
                    table.remove(peer, &conn);
                    continue;
                }
                let peer = ip(peer);
                let own = table.of(peer);
                let conn = Conn(id, idle);
                match table.admit(peer, conn) {
                    Admission::Admit { evicted } => {
                        if let Some(victim) = evicted {
                            prop_assert!(victim.1.is_some(), "busy connection displaced");
                            let at = open.iter().position(|(_, c)| *c == victim).unwrap();
                            let (victim_peer, _) = open.remove(at);
                            let held = open.iter().filter(|(p, _)| *p == victim_peer).count() + 1;
                            prop_assert!(victim_peer == peer || held > own);
                        }
                        open.push((peer, conn));
                    }
                    Admission::Refuse => {
                        let could_make_room = open.iter().any(|(p, c)| {
                            let held = open.iter().filter(|(q, _)| q == p).count();
                            c.1.is_some() && (*p == peer || (own < max_per_peer && held > own))
                        });
                        prop_assert!(!could_make_room, "refused while room could be made");
                    }
                }
                prop_assert!(table.len() <= max);
                prop_assert_eq!(table.len(), open.len());
                prop_assert!(table.peers.values().all(|held| held.len() <= max_per_peer));
            }
        }
    }
}
