//! Fault injection for reliability tests: error answers (409, 429 with
//! `Retry-After`, 500) at a rate or for the next N matching requests, added
//! latency, requests held until released, and watch streams closed early
//! (after N events, after a duration, or all open ones at once). Rates draw
//! from a seeded RNG so a test run is reproducible.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::error::{ApiError, qualified};

/// Which requests a fault applies to: a verb (`get`, `list`, `watch`,
/// `create`, `update`, `patch`, `delete`, `deletecollection`) and a plural
/// resource (`secrets`, `apikeys`, `apikeys/status`), `*` for any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    verb: String,
    resource: String,
}

impl Target {
    /// Match `verb` on `resource`; `*` matches anything.
    pub fn new(verb: &str, resource: &str) -> Self {
        Target {
            verb: verb.into(),
            resource: resource.into(),
        }
    }

    /// Every request.
    pub fn any() -> Self {
        Target::new("*", "*")
    }

    fn matches(&self, verb: &str, resource: &str, subresource: &str) -> bool {
        let full = if subresource.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}/{subresource}")
        };
        (self.verb == "*" || self.verb == verb)
            && (self.resource == "*" || self.resource == full || self.resource == resource)
    }
}

#[derive(Debug)]
struct ErrorRule {
    target: Target,
    code: u16,
    rate: f64,
    remaining: Option<u32>,
}

#[derive(Debug)]
struct Inner {
    errors: Vec<ErrorRule>,
    latency: Vec<(Target, Duration)>,
    held: Vec<Target>,
    watch_max_events: Option<usize>,
    watch_max_duration: Option<Duration>,
    rng: StdRng,
    injected: u64,
}

/// Limits applied to every watch stream opened while they are set.
#[derive(Debug, Clone, Copy, Default)]
pub struct WatchLimits {
    /// Close after this many events (bookmarks included).
    pub max_events: Option<usize>,
    /// Close after this long.
    pub max_duration: Option<Duration>,
}

/// The fault settings of a running emulator; cheap to clone, shared.
#[derive(Debug, Clone)]
pub struct Faults {
    inner: Arc<Mutex<Inner>>,
    /// Bumped to close every open watch; bumped on hold/release too, so
    /// waiting requests re-check.
    close_epoch: Arc<tokio::sync::watch::Sender<u64>>,
    held_changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults::new(0)
    }
}

impl Faults {
    /// No faults; rates draw from `seed`.
    pub fn new(seed: u64) -> Self {
        Faults {
            close_epoch: Arc::new(tokio::sync::watch::Sender::new(0)),
            held_changed: Arc::new(tokio::sync::watch::Sender::new(0)),
            inner: Arc::new(Mutex::new(Inner {
                errors: Vec::new(),
                latency: Vec::new(),
                held: Vec::new(),
                watch_max_events: None,
                watch_max_duration: None,
                rng: StdRng::seed_from_u64(seed),
                injected: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reseed the RNG behind error rates.
    pub fn seed(&self, seed: u64) {
        self.lock().rng = StdRng::seed_from_u64(seed);
    }

    /// Answer a fraction `rate` (0.0..=1.0) of matching requests with `code`
    /// (409, 429 or 500).
    pub fn error_rate(&self, target: Target, code: u16, rate: f64) {
        self.lock().errors.push(ErrorRule {
            target,
            code,
            rate: rate.clamp(0.0, 1.0),
            remaining: None,
        });
    }

    /// Answer the next `count` matching requests with `code`.
    pub fn fail_next(&self, target: Target, code: u16, count: u32) {
        self.lock().errors.push(ErrorRule {
            target,
            code,
            rate: 1.0,
            remaining: Some(count),
        });
    }

    /// Delay matching requests by `delay` before they are served.
    pub fn latency(&self, target: Target, delay: Duration) {
        self.lock().latency.push((target, delay));
    }

    /// Close every watch stream after `n` events.
    pub fn close_watches_after_events(&self, n: usize) {
        self.lock().watch_max_events = Some(n);
    }

    /// Close every watch stream after `d`.
    pub fn close_watches_after(&self, d: Duration) {
        self.lock().watch_max_duration = Some(d);
    }

    /// Close every watch stream open right now (clients see the connection
    /// end and re-watch from their last resourceVersion).
    pub fn close_open_watches(&self) {
        self.close_epoch.send_modify(|e| *e += 1);
    }

    /// Hold matching requests (before they are served) until [`Faults::release`]:
    /// a deterministic way to keep a client disconnected while the test
    /// changes state behind its back.
    pub fn hold(&self, target: Target) {
        self.lock().held.push(target);
        self.held_changed.send_modify(|e| *e += 1);
    }

    /// Let held requests through.
    pub fn release(&self) {
        self.lock().held.clear();
        self.held_changed.send_modify(|e| *e += 1);
    }

    /// Remove every fault and release held requests.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.errors.clear();
        inner.latency.clear();
        inner.held.clear();
        inner.watch_max_events = None;
        inner.watch_max_duration = None;
        drop(inner);
        self.held_changed.send_modify(|e| *e += 1);
    }

    /// Wait while a matching hold is in place.
    pub(crate) async fn wait_if_held(&self, verb: &str, resource: &str, subresource: &str) {
        let mut changes = self.held_changed.subscribe();
        loop {
            let held = self
                .lock()
                .held
                .iter()
                .any(|t| t.matches(verb, resource, subresource));
            if !held || changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// A receiver that changes when open watches must close.
    pub(crate) fn close_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.close_epoch.subscribe()
    }

    /// How many error answers have been injected so far.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    /// The delay and the injected error (if any) for one request.
    pub(crate) fn decide(
        &self,
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        name: &str,
    ) -> (Duration, Option<ApiError>) {
        let mut inner = self.lock();
        let delay = inner
            .latency
            .iter()
            .filter(|(t, _)| t.matches(verb, resource, subresource))
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default();
        let mut chosen = None;
        let Inner {
            errors,
            rng,
            injected,
            ..
        } = &mut *inner;
        for rule in errors.iter_mut() {
            if rule.remaining == Some(0) || !rule.target.matches(verb, resource, subresource) {
                continue;
            }
            if rng.random_bool(rule.rate) {
                if let Some(n) = rule.remaining.as_mut() {
                    *n -= 1;
                }
                *injected += 1;
                chosen = Some(match rule.code {
                    409 => ApiError::conflict(
                        group,
                        resource,
                        name,
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ),
                    429 => ApiError::too_many_requests(1),
                    code => {
                        let mut e = ApiError::internal(format!(
                            "Internal error occurred: injected fault for {verb} {}",
                            qualified(group, resource)
                        ));
                        e.code = code;
                        e
                    }
                });
                break;
            }
        }
        errors.retain(|r| r.remaining != Some(0));
        (delay, chosen)
    }

    /// Limits for a watch opened now.
    pub(crate) fn watch_limits(&self) -> WatchLimits {
        let inner = self.lock();
        WatchLimits {
            max_events: inner.watch_max_events,
            max_duration: inner.watch_max_duration,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_next_counts_down_and_rates_are_seeded() {
        let f = Faults::new(7);
        f.fail_next(Target::new("update", "apikeys"), 409, 2);
        for _ in 0..2 {
            assert_eq!(
                f.decide("update", "keysmith.dev", "apikeys", "", "a")
                    .1
                    .unwrap()
                    .code,
                409
            );
        }
        assert!(
            f.decide("update", "keysmith.dev", "apikeys", "", "a")
                .1
                .is_none()
        );
        assert!(
            f.decide("get", "keysmith.dev", "apikeys", "", "a")
                .1
                .is_none()
        );

        let run = |seed| {
            let f = Faults::new(seed);
            f.error_rate(Target::any(), 500, 0.5);
            (0..32)
                .map(|_| f.decide("get", "", "secrets", "", "").1.is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        let hits = run(1).iter().filter(|x| **x).count();
        assert!(hits > 0 && hits < 32);
    }
}
