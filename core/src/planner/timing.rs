//! Time arithmetic of the planner: when a slot is due for rotation, its deterministic jitter, and
//! the expiry-warning window. Everything here works on whole seconds, because status times are
//! serialized with second precision: a sub-second value would never compare equal after a round
//! trip through the API server, and every resync would write.

use std::time::Duration;

use jiff::Timestamp;

use crate::validation::Cadence;

/// Largest jitter added to a scheduled rotation (SPEC 4.1 step 6).
pub const MAX_JITTER: Duration = Duration::from_secs(3600);
/// Jitter is at most this fraction of the rotation interval.
const JITTER_FRACTION: f64 = 0.1;
const DAY: Duration = Duration::from_secs(24 * 3600);
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

/// `ts` without its fraction of a second.
pub fn whole_seconds(ts: Timestamp) -> Timestamp {
    Timestamp::from_second(ts.as_second()).unwrap_or(ts)
}

/// `ts + d`, saturating at the end of jiff's range (a 5y lifetime never gets near it).
pub fn add(ts: Timestamp, d: Duration) -> Timestamp {
    ts.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// `ts - d`, saturating at the start of jiff's range.
pub fn sub(ts: Timestamp, d: Duration) -> Timestamp {
    ts.checked_sub(d).unwrap_or(Timestamp::MIN)
}

/// `later - earlier` as a `Duration`, zero when `later` is not later.
pub fn between(earlier: Timestamp, later: Timestamp) -> Duration {
    Duration::try_from(later.duration_since(earlier)).unwrap_or(Duration::ZERO)
}

/// A number in `[0, 1)` derived from the object's UID, so that ten thousand keys on one
/// schedule spread out, and one key's due time never changes between reconciles.
pub fn jitter_fraction(uid: Option<&str>) -> f64 {
    uid.map_or(0.0, |uid| {
        f64::from(crc32fast::hash(uid.as_bytes())) / (f64::from(u32::MAX) + 1.0)
    })
}

/// Jitter for a rotation interval: `fraction` of the window, which is 10% of the interval and at
/// most [`MAX_JITTER`], in whole seconds. The cap applies to the window, not to the product: capped
/// afterwards, every interval over ten hours would put almost every key at the cap, and keys
/// applied together would rotate (and restart their consumers) in the same second.
pub fn jitter(interval: Duration, fraction: f64) -> Duration {
    let window = jitter_window(interval).as_secs_f64();
    Duration::from_secs((window * fraction).floor() as u64)
}

/// The span jitter spreads over: 10% of the interval in whole seconds, at most [`MAX_JITTER`].
fn jitter_window(interval: Duration) -> Duration {
    Duration::from_secs((interval.as_secs_f64() * JITTER_FRACTION).floor() as u64).min(MAX_JITTER)
}

/// When the cadence next rotates a token issued at `issued_at`: the undelayed time and the
/// jittered due time.
pub fn cadence_due(cadence: &Cadence, issued_at: Timestamp, fraction: f64) -> Option<Timestamp> {
    match cadence {
        Cadence::Every(every) => Some(add(add(issued_at, *every), jitter(*every, fraction))),
        Cadence::Schedule(schedule) => {
            let run = schedule.next_after(issued_at)?;
            // The jitter is bounded by the gap to the following run, so it never skips one.
            let gap = schedule.interval_after(issued_at).unwrap_or(Duration::ZERO);
            Some(add(run, jitter(gap, fraction)))
        }
    }
}

/// How long before an expiry `Expiring` turns True: a week for lifetimes over a week, a day for
/// one to seven days, and the whole lifetime under a day (SPEC 4.4).
pub fn warning_window(lifetime: Duration) -> Duration {
    if lifetime > WEEK {
        WEEK
    } else if lifetime >= DAY {
        DAY
    } else {
        lifetime
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_bounded_by_ten_percent_and_an_hour() {
        assert_eq!(
            jitter(Duration::from_secs(600), 0.999),
            Duration::from_secs(59)
        );
        // Over ten hours the window is the hour cap, and the fraction spreads keys across it.
        assert_eq!(
            jitter(Duration::from_secs(30 * 24 * 3600), 0.5),
            MAX_JITTER / 2
        );
        assert_eq!(jitter(Duration::from_secs(600), 0.0), Duration::ZERO);
    }

    proptest::proptest! {
        /// Keys created together (random UIDs, one interval) rotate spread over the whole jitter
        /// window: no second holds more than a small share of them, whatever the interval.
        #[test]
        fn rotations_of_keys_created_together_spread_over_the_window(
            interval_secs in 3600u64..(5 * 365 * 24 * 3600),
            seed in proptest::prelude::any::<u64>(),
        ) {
            const KEYS: usize = 2000;
            let interval = Duration::from_secs(interval_secs);
            let window = jitter_window(interval).as_secs();
            let mut per_second = std::collections::HashMap::<u64, usize>::new();
            for i in 0..KEYS {
                let uid = format!("{seed:016x}-{i:08x}-4c2b-9a57-6f0f3c2b1a00");
                let j = jitter(interval, jitter_fraction(Some(&uid))).as_secs();
                proptest::prop_assert!(j < window.max(1), "{j} s outside a {window} s window");
                *per_second.entry(j).or_default() += 1;
            }
            // An even spread puts KEYS / window keys in a second (at most 6 for a 360 s window);
            // allow four times that, and never less than 2% of the fleet.
            let busiest = per_second.values().copied().max().unwrap_or(0);
            let allowed = (4 * KEYS / window.max(1) as usize).max(KEYS / 50);
            proptest::prop_assert!(busiest <= allowed, "{busiest} of {KEYS} keys in one second");
        }
    }

    #[test]
    fn jitter_fraction_is_deterministic_and_below_one() {
        let a = jitter_fraction(Some("0b0d3a4e-1111-4c2b-9a57-6f0f3c2b1a00"));
        assert_eq!(
            a,
            jitter_fraction(Some("0b0d3a4e-1111-4c2b-9a57-6f0f3c2b1a00"))
        );
        assert!((0.0..1.0).contains(&a));
        assert_eq!(jitter_fraction(None), 0.0);
    }

    #[test]
    fn warning_windows_follow_the_lifetime() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(warning_window(h(8760)), WEEK);
        assert_eq!(warning_window(h(7 * 24)), DAY);
        assert_eq!(warning_window(h(24)), DAY);
        assert_eq!(warning_window(h(2)), h(2));
    }
}
