//! When a token was last reported as used: the hot path's once-a-minute gate for
//! `status.tokens[].lastUsedAt`. Writing the report back is the shell's (the `keysmith`
//! verifier's usage writer).

use std::sync::atomic::{AtomicI64, Ordering};

use jiff::Timestamp;

/// Least time between two reports of one token.
pub const REPORT_EVERY_SECS: i64 = 60;

/// When a token was last reported, shared by every index entry of that token.
#[derive(Debug)]
pub struct UsageMark {
    last_reported: AtomicI64,
}

impl Default for UsageMark {
    fn default() -> Self {
        UsageMark {
            last_reported: AtomicI64::new(i64::MIN),
        }
    }
}

impl UsageMark {
    /// Whether this use should be reported: true at most once per [`REPORT_EVERY_SECS`], and to
    /// exactly one of several concurrent callers.
    pub fn claim(&self, now: Timestamp) -> bool {
        let now = now.as_second();
        let last = self.last_reported.load(Ordering::Relaxed);
        now.saturating_sub(last) >= REPORT_EVERY_SECS
            && self
                .last_reported
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_once_a_minute_per_token() {
        let mark = UsageMark::default();
        let t0: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        assert!(mark.claim(t0));
        assert!(!mark.claim(t0));
        assert!(!mark.claim(t0 + jiff::SignedDuration::from_secs(59)));
        assert!(mark.claim(t0 + jiff::SignedDuration::from_secs(60)));
    }
}
