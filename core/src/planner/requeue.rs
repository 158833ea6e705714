//! When to reconcile a key again without a change to wake the controller: at the next moment
//! anything changes by itself, within bounds.

use std::time::Duration;

use jiff::Timestamp;

use crate::api::TokenStatus;

use super::Planner;
use super::timing::between;

/// Longest wait between two reconciles of a healthy key.
pub(super) const MAX_REQUEUE: Duration = Duration::from_secs(3600);
/// Retry interval while a Secret of the same name blocks the key: the conflicting Secret is not
/// labelled as ours, so its deletion does not wake the controller.
pub(super) const CONFLICT_REQUEUE: Duration = Duration::from_secs(60);
/// Shortest requeue, so a due time a fraction of a second away is not busy-polled.
pub(super) const MIN_REQUEUE: Duration = Duration::from_secs(1);

impl Planner<'_> {
    /// Time to the next moment anything changes by itself, at most [`MAX_REQUEUE`].
    pub(super) fn requeue(&self, tokens: &[TokenStatus]) -> Duration {
        let mut moments: Vec<Timestamp> = Vec::new();
        for t in tokens {
            if let Some(slot) = self.valid.slots.iter().find(|s| s.name == t.name)
                && !self.suspended
                && let Some((due, _)) = self.next_due(slot, t)
            {
                moments.push(due);
            }
            moments.extend(t.previous.as_ref().map(|p| p.valid_until.0));
            moments.extend(self.token_warning_start(t));
            moments.extend(t.expires_at.as_ref().map(|e| e.0));
        }
        if let Some(end) = self.key_end {
            moments.push(end);
            moments.extend(self.key_warning_start(end));
        }
        moments
            .into_iter()
            .filter(|t| *t > self.now)
            .min()
            .map_or(MAX_REQUEUE, |t| between(self.now, t))
            .clamp(MIN_REQUEUE, MAX_REQUEUE)
    }
}
