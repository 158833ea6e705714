//! Leak reports (SPEC 4.6): the verifier records a report as `leak` on the token's entry in
//! status (the only status field besides `lastUsedAt` it may set, and never clear); the planner
//! applies the key's `leakResponse` to it once:
//!
//! - `rotate`: a leaked current token is rotated at once and is not kept as `previous`; a leaked
//!   replaced token (`previous`, `earlier`) is dropped, since the current one did not leak.
//! - `revoke`: a leaked token stops verifying (the verifier refuses it as soon as the record is in)
//!   and is never kept as a replaced token; a current one stays in status, marked handled, until
//!   the slot's next rotation (schedule, renewal, trigger or annotation) replaces it.
//! - `report`: the record is marked handled and the token keeps verifying.
//!
//! Either way a `LeakReported` Warning event names the slot, the token id and the source. A
//! record leaves status with its token, so a repeated report of a handled token, or a report of
//! a token rotated meanwhile, changes nothing.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{Leak, LeakResponse, TokenStatus};

use super::Planner;
use super::events::{EventKind, PlannedEvent};
use super::slot::{Replaced, SlotAction, SlotOutcome};

/// Reason of the Warning event raised for each token reported as leaked.
pub const LEAK_REPORTED: &str = "LeakReported";

/// Whether a token with this leak record stops verifying under `response`.
pub fn refused(leak: Option<&Leak>, response: LeakResponse) -> bool {
    leak.is_some() && response.refuses()
}

/// Whether the slot's current token must be rotated because it leaked.
pub(super) fn rotation_due(current: &TokenStatus, response: LeakResponse) -> bool {
    response == LeakResponse::Rotate && current.leak.is_some()
}

/// Apply `response` to the leak records of one slot's status at `now`: drop the replaced tokens
/// that leaked (unless `report`), and mark every remaining record handled. `true` when a
/// replaced token was dropped.
pub(super) fn settle(status: &mut TokenStatus, response: LeakResponse, now: Timestamp) -> bool {
    let mut replaced = Replaced::of(status);
    let dropped = replaced.retain(|p| !refused(p.leak.as_ref(), response));
    // Nothing is added, so nothing is cut.
    replaced.store(status);
    let leaks = status
        .leak
        .iter_mut()
        .chain(status.previous.iter_mut().filter_map(|p| p.leak.as_mut()))
        .chain(status.earlier.iter_mut().filter_map(|p| p.leak.as_mut()));
    for leak in leaks {
        leak.handled_at.get_or_insert(Time(now));
    }
    dropped
}

/// What happened to a leaked token, for the event.
fn outcome(response: LeakResponse, current: bool, key_expired: bool) -> &'static str {
    match (response, current) {
        // Nothing rotates past the key's end, and nothing verifies either.
        (LeakResponse::Rotate, true) if key_expired => "not rotated: the key has expired",
        (LeakResponse::Rotate, true) => "rotated at once, with no overlap window",
        (LeakResponse::Rotate | LeakResponse::Revoke, false) => "stopped verifying",
        (LeakResponse::Revoke, true) => {
            "stopped verifying; no replacement until the slot's next rotation"
        }
        (LeakResponse::Report, _) => "recorded only (leakResponse: report); it still verifies",
    }
}

impl Planner<'_> {
    /// The key's `leakResponse`, with its default applied.
    pub(super) fn leak_response(&self) -> LeakResponse {
        self.key.spec.leak_response.unwrap_or_default()
    }

    /// [`settle`] one slot's outcome; a dropped replaced token makes a kept slot's action
    /// `DropPrevious`.
    pub(super) fn settle_leaks(&self, outcome: &mut SlotOutcome) {
        if settle(&mut outcome.status, self.leak_response(), self.now)
            && outcome.action == SlotAction::Keep
        {
            outcome.action = SlotAction::DropPrevious;
        }
    }

    /// One `LeakReported` Warning per leak record not handled yet in the observed status.
    pub(super) fn leak_events(&self) -> Vec<PlannedEvent> {
        let response = self.leak_response();
        let mut events = Vec::new();
        for slot in &self.observed.tokens {
            let current = std::iter::once((slot.id.as_str(), slot.leak.as_ref(), true));
            let replaced = slot
                .previous
                .iter()
                .chain(&slot.earlier)
                .map(|p| (p.id.as_str(), p.leak.as_ref(), false));
            for (id, leak, is_current) in current.chain(replaced) {
                let Some(leak) = leak.filter(|l| l.handled_at.is_none()) else {
                    continue;
                };
                events.push(PlannedEvent {
                    type_: EventKind::Warning,
                    reason: LEAK_REPORTED,
                    note: format!(
                        "slot {}: token {id} reported leaked at {} (source: {}): {}",
                        slot.name,
                        leak.reported_at.0,
                        leak.source.as_deref().unwrap_or("not given"),
                        outcome(response, is_current, self.key_expired)
                    ),
                });
            }
        }
        events
    }
}

#[cfg(test)]
mod tests;
