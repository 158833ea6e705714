//! Slowing repeated failures per client address: a token bucket of failed verifications.
//!
//! Each address may fail `burst` times at once and `refill_per_sec` times a second after that;
//! beyond, each failed answer is delayed by the time the bucket needs to pay the debt back, up to
//! `max_delay`. Answers are delayed, never refused, so a legitimate client with a broken token
//! sees a slow 401 rather than an error it cannot explain, while guessing tokens gets no faster
//! than `refill_per_sec` per connection. The debt is capped at `max_delay` worth so an address
//! recovers within that time once it stops.
//!
//! The same buckets, keyed by something else than an address, bound the usage API's reviews per
//! caller ([`Throttle::charge`]): there a delay is answered as `429` with `Retry-After`.
//!
//! IPv6 clients are counted per /64, the smallest block an end site usually gets. Memory is
//! bounded: past `max_addresses`, addresses whose bucket has refilled are forgotten first, then
//! those not in debt. An address in debt is never forgotten, so a flood of new (or spoofed)
//! addresses cannot wipe out a penalty; while every tracked address is in debt, a new address is
//! not tracked and its failures wait the longest delay.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Throttle parameters.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleConfig {
    /// Failures allowed at once.
    pub burst: u32,
    /// Failures allowed per second after the burst (at least 1).
    pub refill_per_sec: u32,
    /// Longest delay of one answer.
    pub max_delay: Duration,
    /// Most addresses (or other keys) tracked.
    pub max_addresses: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            burst: 20,
            refill_per_sec: 5,
            max_delay: Duration::from_secs(1),
            max_addresses: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Thousandths of a failure, so refills and delays are exact.
    milli: i64,
    at: Instant,
}

/// Per-address failure buckets (or per `K`). Only failed verifications take the lock.
#[derive(Debug)]
pub struct Throttle<K = IpAddr> {
    config: ThrottleConfig,
    table: Mutex<Table<K>>,
}

#[derive(Debug)]
struct Table<K> {
    buckets: HashMap<K, Bucket>,
    /// Every tracked address is in debt until then at least: no need to look for room before.
    in_debt_until: Option<Instant>,
}

impl Throttle<IpAddr> {
    /// Record a failed verification from `ip` at `now`; returns how long to delay its answer.
    pub fn on_failure(&self, ip: IpAddr, now: Instant) -> Duration {
        self.charge(address_key(ip), now)
    }
}

impl<K: Hash + Eq> Throttle<K> {
    /// An empty throttle.
    pub fn new(config: ThrottleConfig) -> Throttle<K> {
        Throttle {
            config,
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                in_debt_until: None,
            }),
        }
    }

    /// Take one from `key`'s bucket at `now`; returns how long `key` owes (zero when the bucket
    /// held one).
    pub fn charge(&self, key: K, now: Instant) -> Duration {
        let c = &self.config;
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.buckets.contains_key(&key)
            && table.buckets.len() >= c.max_addresses
            && !table.make_room(c, now)
        {
            // Forgetting an address in debt would let it start over.
            return c.max_delay;
        }
        let bucket = table.buckets.entry(key).or_insert(Bucket {
            milli: full(c),
            at: now,
        });
        let rate = i64::from(c.refill_per_sec.max(1));
        let floor = -(c.max_delay.as_millis() as i64) * rate;
        bucket.milli = (refilled(c, bucket, now) - 1000).max(floor);
        bucket.at = now;
        if bucket.milli >= 0 {
            Duration::ZERO
        } else {
            // milli / 1000 failures owed, paid back at `rate` a second.
            Duration::from_nanos((-bucket.milli * 1_000_000 / rate) as u64).min(c.max_delay)
        }
    }

    /// Addresses currently tracked.
    pub fn tracked(&self) -> usize {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.buckets.len()
    }
}

impl<K> Table<K> {
    /// Forget refilled addresses, then, if still full, those not in debt; false when every
    /// address is in debt.
    fn make_room(&mut self, c: &ThrottleConfig, now: Instant) -> bool {
        if self.in_debt_until.is_some_and(|until| now < until) {
            return false;
        }
        self.buckets.retain(|_, b| refilled(c, b, now) < full(c));
        if self.buckets.len() >= c.max_addresses {
            self.buckets.retain(|_, b| refilled(c, b, now) < 0);
        }
        if self.buckets.len() < c.max_addresses {
            self.in_debt_until = None;
            return true;
        }
        // Scanning again before the smallest debt is paid back would free nothing.
        let rate = u64::from(c.refill_per_sec.max(1));
        let soonest = self
            .buckets
            .values()
            .map(|b| refilled(c, b, now).unsigned_abs() * 1_000_000 / rate)
            .min()
            .unwrap_or(0);
        self.in_debt_until = Some(now + Duration::from_nanos(soonest));
        false
    }
}

fn full(c: &ThrottleConfig) -> i64 {
    i64::from(c.burst) * 1000
}

fn refilled(c: &ThrottleConfig, b: &Bucket, now: Instant) -> i64 {
    let micros = now.saturating_duration_since(b.at).as_micros();
    let gained = (micros * u128::from(c.refill_per_sec) / 1000).min(u128::from(u32::MAX)) as i64;
    (b.milli + gained).min(full(c))
}

/// IPv4 per address; IPv6 per /64.
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn throttle() -> Throttle {
        Throttle::new(ThrottleConfig::default())
    }

    #[test]
    fn burst_passes_then_failures_are_delayed_up_to_the_cap() {
        let t = throttle();
        let start = Instant::now();
        for _ in 0..20 {
            assert_eq!(t.on_failure(ip("203.0.113.1"), start), Duration::ZERO);
        }
        assert_eq!(
            t.on_failure(ip("203.0.113.1"), start),
            Duration::from_millis(200)
        );
        assert_eq!(
            t.on_failure(ip("203.0.113.1"), start),
            Duration::from_millis(400)
        );
        for _ in 0..10 {
            t.on_failure(ip("203.0.113.1"), start);
        }
        assert_eq!(
            t.on_failure(ip("203.0.113.1"), start),
            Duration::from_secs(1)
        );
        // Another address is unaffected.
        assert_eq!(t.on_failure(ip("203.0.113.2"), start), Duration::ZERO);
    }

    #[test]
    fn debt_is_paid_back_over_time() {
        let t = throttle();
        let start = Instant::now();
        for _ in 0..40 {
            t.on_failure(ip("203.0.113.1"), start);
        }
        // The debt was capped at one second's refill (5): after 1.2 s the bucket holds one token.
        let later = start + Duration::from_millis(1200);
        assert_eq!(t.on_failure(ip("203.0.113.1"), later), Duration::ZERO);
        assert_eq!(
            t.on_failure(ip("203.0.113.1"), later),
            Duration::from_millis(200)
        );
        // Steady 5 failures a second is never delayed after a full refill.
        let mut now = later + Duration::from_secs(10);
        for _ in 0..100 {
            assert_eq!(t.on_failure(ip("203.0.113.1"), now), Duration::ZERO);
            now += Duration::from_millis(200);
        }
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let t = throttle();
        let start = Instant::now();
        for i in 0..20 {
            let addr = format!("2001:db8:1:2::{i:x}");
            assert_eq!(t.on_failure(ip(&addr), start), Duration::ZERO);
        }
        assert!(t.on_failure(ip("2001:db8:1:2:ffff::1"), start) > Duration::ZERO);
        assert_eq!(t.on_failure(ip("2001:db8:1:3::1"), start), Duration::ZERO);
        for _ in 0..20 {
            t.on_failure(ip("::ffff:198.51.100.1"), start);
        }
        assert!(t.on_failure(ip("198.51.100.1"), start) > Duration::ZERO);
    }

    /// A throttle tracking at most `max_addresses`.
    fn bounded(max_addresses: usize) -> Throttle {
        Throttle::new(ThrottleConfig {
            max_addresses,
            ..ThrottleConfig::default()
        })
    }

    /// Thirty failures from `addr` at `at`: deep in debt.
    fn hammer(t: &Throttle, addr: &str, at: Instant) {
        for _ in 0..30 {
            t.on_failure(ip(addr), at);
        }
    }

    #[test]
    fn memory_is_bounded_and_idle_addresses_go_first() {
        let t = bounded(3);
        let start = Instant::now();
        hammer(&t, "198.51.100.1", start);
        t.on_failure(ip("198.51.100.2"), start);
        t.on_failure(ip("198.51.100.3"), start);
        // Much later, .2 and .3 have refilled; .1 keeps failing and stays in debt.
        let later = start + Duration::from_secs(60);
        hammer(&t, "198.51.100.1", later);
        t.on_failure(ip("198.51.100.4"), later);
        assert_eq!(t.tracked(), 2, "the refilled addresses were evicted");
        assert!(t.on_failure(ip("198.51.100.1"), later) > Duration::ZERO);
    }

    #[test]
    fn filling_the_table_never_forgets_a_penalty() {
        let t = bounded(3);
        let start = Instant::now();
        hammer(&t, "198.51.100.1", start);
        // A flood of new addresses, one failure each: they take the free room, then evict one
        // another, never the address in debt.
        for i in 0..1000u32 {
            let spoofed = IpAddr::from(std::net::Ipv4Addr::from(0xCB00_7100 + i));
            t.on_failure(spoofed, start);
        }
        assert!(t.tracked() <= 3);
        assert_eq!(
            t.on_failure(ip("198.51.100.1"), start),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_table_full_of_penalties_delays_newcomers_instead() {
        let t = bounded(2);
        let start = Instant::now();
        hammer(&t, "198.51.100.1", start);
        hammer(&t, "198.51.100.2", start);
        assert_eq!(
            t.on_failure(ip("198.51.100.3"), start),
            Duration::from_secs(1)
        );
        assert!(t.on_failure(ip("198.51.100.1"), start) > Duration::ZERO);
        assert!(t.on_failure(ip("198.51.100.2"), start) > Duration::ZERO);
        // Once the penalties are paid, newcomers are tracked again.
        let later = start + Duration::from_secs(10);
        assert_eq!(t.on_failure(ip("198.51.100.3"), later), Duration::ZERO);
    }
}
