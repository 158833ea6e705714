//! How much work the usage API may ask of the API server on its callers' behalf: each
//! `TokenReview` and `SubjectAccessReview` it sends is charged to a [`Caller`], at most
//! [`REVIEWS_IN_FLIGHT`] are outstanding at once, and answers are kept in [`Answers`], whose
//! accepted and refused halves are bounded apart so refused credentials cannot push out
//! accepted ones.
//!
//! Who pays is chosen so that no caller can spend another's budget, and the API server's
//! aggregator is never limited as a whole: every request it forwards comes from its address with
//! the front-proxy certificate, for users it has already authenticated, so those are charged to
//! the user it names. A bearer token is charged to the peer address that sent it before it is
//! known to be valid (it names nobody yet), and the SubjectAccessReview that follows to the user
//! the token belongs to.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::verifier::throttle::{Throttle, ThrottleConfig, address_key};

/// How long a review's answer is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// Most answers kept in each half (accepted, refused) of each cache.
pub const CACHE_ENTRIES: usize = 4096;
/// Reviews one caller may cause at once.
pub const REVIEW_BURST: u32 = 20;
/// Reviews one caller may cause per second after its burst.
pub const REVIEWS_PER_SECOND: u32 = 5;
/// Longest `Retry-After`; a caller that keeps asking while refused stays refused this long after
/// it stops.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Callers whose budget is tracked; one in debt is never forgotten.
pub const MAX_CALLERS: usize = 10_000;
/// Reviews outstanding at once, all callers together.
pub const REVIEWS_IN_FLIGHT: usize = 8;
/// How long a request waits for one of those before it is refused.
pub const REVIEW_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// Who a review is charged to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A peer address (IPv6 per /64), for bearer tokens not yet reviewed.
    Peer(IpAddr),
    /// An authenticated user, by name.
    User(String),
}

impl Caller {
    /// The peer `ip`, counted as the failure throttle counts addresses.
    pub fn peer(ip: IpAddr) -> Caller {
        Caller::Peer(address_key(ip))
    }
}

/// A caller that must wait before asking again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyRequests {
    /// When to try again.
    pub retry_after: Duration,
}

/// The review budget of every caller, and the bound on reviews outstanding.
#[derive(Debug)]
pub struct ReviewLimits {
    budgets: Throttle<Caller>,
    in_flight: Semaphore,
}

impl Default for ReviewLimits {
    fn default() -> Self {
        ReviewLimits::new(ThrottleConfig {
            burst: REVIEW_BURST,
            refill_per_sec: REVIEWS_PER_SECOND,
            max_delay: MAX_RETRY_AFTER,
            max_addresses: MAX_CALLERS,
        })
    }
}

impl ReviewLimits {
    /// Budgets as `config` says, with [`REVIEWS_IN_FLIGHT`] outstanding at most.
    pub fn new(config: ThrottleConfig) -> ReviewLimits {
        ReviewLimits {
            budgets: Throttle::new(config),
            in_flight: Semaphore::new(REVIEWS_IN_FLIGHT),
        }
    }

    /// Charge one review to `caller` at `now`. A refused attempt is charged too, so a caller
    /// that ignores `Retry-After` gets nothing until it stops for that long.
    pub fn charge(&self, caller: Caller, now: Instant) -> Result<(), TooManyRequests> {
        let owed = self.budgets.charge(caller, now);
        if owed.is_zero() {
            Ok(())
        } else {
            Err(TooManyRequests { retry_after: owed })
        }
    }

    /// Charge one review to `caller`, then wait (at most [`REVIEW_QUEUE_WAIT`]) until fewer than
    /// [`REVIEWS_IN_FLIGHT`] are outstanding; hold the permit while the review runs.
    pub async fn admit(&self, caller: Caller) -> Result<SemaphorePermit<'_>, TooManyRequests> {
        self.charge(caller, Instant::now())?;
        let busy = TooManyRequests {
            retry_after: Duration::from_secs(1),
        };
        match tokio::time::timeout(REVIEW_QUEUE_WAIT, self.in_flight.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; a timeout means the API server is slow for everyone.
            Ok(Err(_)) | Err(_) => Err(busy),
        }
    }
}

/// A bounded map whose entries expire after [`CACHE_TTL`]. When it is full, expired entries go
/// first, then the oldest one: never more than one fresh entry per insert, so a burst of inserts
/// cannot empty it.
#[derive(Debug)]
pub struct Cache<K, V> {
    entries: HashMap<K, (Instant, V)>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> Cache<K, V> {
    /// An empty cache of at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Cache {
            entries: HashMap::new(),
            capacity,
        }
    }

    /// The value stored for `key`, if still fresh at `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        self.entries
            .get(key)
            .filter(|(at, _)| now.saturating_duration_since(*at) < CACHE_TTL)
            .map(|(_, v)| v.clone())
    }

    /// Store `value` for `key` at `now`.
    pub fn put(&mut self, key: K, value: V, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.entries
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < CACHE_TTL);
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            // Inserts are bounded by the review budgets, so this scan is too.
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, (now, value));
    }

    /// Forget `key`.
    pub fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Entries held, fresh or not.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Review answers: accepted (`Ok`) and refused (`Err`) kept apart, each bounded on its own, so
/// a flood of refused credentials only ever displaces other refused ones.
#[derive(Debug)]
pub struct Answers<K, T, E> {
    halves: Mutex<(Cache<K, T>, Cache<K, E>)>,
}

impl<K: Hash + Eq + Clone, T: Clone, E: Clone> Answers<K, T, E> {
    /// Empty, with `capacity` entries for each half.
    pub fn new(capacity: usize) -> Self {
        Answers {
            halves: Mutex::new((Cache::new(capacity), Cache::new(capacity))),
        }
    }

    /// The answer stored for `key`, if fresh at `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<Result<T, E>> {
        let halves = self.halves.lock().unwrap_or_else(|e| e.into_inner());
        let (accepted, refused) = &*halves;
        match accepted.get(key, now) {
            Some(value) => Some(Ok(value)),
            None => refused.get(key, now).map(Err),
        }
    }

    /// Store `answer` for `key` at `now`.
    pub fn put(&self, key: K, answer: Result<T, E>, now: Instant) {
        let mut halves = self.halves.lock().unwrap_or_else(|e| e.into_inner());
        let (accepted, refused) = &mut *halves;
        // The newest answer wins: a token revoked (or a binding granted) meanwhile is not
        // shadowed by the other half.
        match answer {
            Ok(value) => {
                refused.remove(&key);
                accepted.put(key, value, now);
            }
            Err(error) => {
                accepted.remove(&key);
                refused.put(key, error, now);
            }
        }
    }
}

#[cfg(test)]
mod tests;
