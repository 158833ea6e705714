//! The Events a plan publishes on the ApiKey: one per kind of token change, a warning when a
//! rotation ends a replaced token's window early, a warning when `Expiring` or `Expired` turns
//! true, a warning when an access list cannot be put in effect, and a note when a rotation waits
//! for a disabled key.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::api::MAX_EARLIER;
use crate::validation::ValidSlot;

use super::Planner;
use super::conditions::{self, DISABLED, EXPIRED, EXPIRING, READY, reason};
use super::readiness::DISABLED_MESSAGE;
use super::slot::{SlotAction, SlotOutcome};

/// Reason of the Warning event when a rotation ends a replaced token's window early.
pub const OVERLAP_CUT: &str = "OverlapCut";

/// The type of a Kubernetes Event; the shell maps it to its client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Something went as it should (a token minted or rotated).
    Normal,
    /// Something needs a person (an invalid spec, a conflict, an expiry).
    Warning,
}

/// An event to publish on the ApiKey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    /// Normal or Warning.
    pub type_: EventKind,
    /// CamelCase reason (SPEC 4.4).
    pub reason: &'static str,
    /// What happened; ids and hashes only, never a token.
    pub note: String,
}

impl PlannedEvent {
    /// Whether it is published before the plan's writes rather than after them. Events say
    /// what happened, so they follow the writes, except a cut window: a controller that dies
    /// between the status write and its events would otherwise end a promised window without a
    /// word. Said first, a crash can at worst announce a cut that the next pass makes anyway.
    pub fn before_writes(&self) -> bool {
        self.reason == OVERLAP_CUT
    }
}

impl Planner<'_> {
    /// One `Minted` and one `Rotated` event, each listing the slots it concerns.
    pub(super) fn slot_events(&self, outcomes: &[(&ValidSlot, SlotOutcome)]) -> Vec<PlannedEvent> {
        let mut minted = Vec::new();
        let mut rotated = Vec::new();
        for (slot, o) in outcomes {
            let label = o.action.mint_label().unwrap_or_default();
            match o.action {
                SlotAction::Mint(_) => minted.push(format!(
                    "slot {} ({label}): token {}",
                    slot.name, o.status.id
                )),
                SlotAction::Rotate(_) => rotated.push(match &o.status.previous {
                    Some(p) => format!(
                        "slot {} ({label}): token {} replaces {} (valid until {})",
                        slot.name, o.status.id, p.id, p.valid_until.0
                    ),
                    None => format!(
                        "slot {} ({label}): token {} replaces the previous one at once",
                        slot.name, o.status.id
                    ),
                }),
                SlotAction::Keep | SlotAction::DropPrevious => {}
            }
        }
        let event = |reason, notes: Vec<String>| PlannedEvent {
            type_: EventKind::Normal,
            reason,
            note: notes.join("; "),
        };
        let mut events = Vec::new();
        if !minted.is_empty() {
            events.push(event("Minted", minted));
        }
        if !rotated.is_empty() {
            events.push(event("Rotated", rotated));
        }
        let cut: Vec<String> = outcomes
            .iter()
            .flat_map(|(slot, o)| {
                o.cut.iter().map(move |p| {
                    format!(
                        "slot {}: token {} stopped verifying now instead of at {}",
                        slot.name, p.id, p.valid_until.0
                    )
                })
            })
            .collect();
        if !cut.is_empty() {
            events.push(PlannedEvent {
                type_: EventKind::Warning,
                reason: OVERLAP_CUT,
                note: format!(
                    "{}: a slot keeps at most {} replaced tokens in their overlap windows, and another rotation came first",
                    cut.join("; "),
                    1 + MAX_EARLIER
                ),
            });
        }
        events
    }

    /// `Expiring` and `Expired` events, on the transition to True only; `RotationPending` when
    /// the `Disabled` message starts or changes to name a rotation that waits for the key to be
    /// enabled, so the request is acknowledged where `kubectl describe` shows events;
    /// `AccessConflict` and `AccessListsOff` when `Ready` starts or changes to say so.
    pub(super) fn condition_events(&self, desired: &[Condition]) -> Vec<PlannedEvent> {
        let access = conditions::find(desired, READY)
            .filter(|c| c.status == "False")
            .and_then(|c| {
                let why = [reason::ACCESS_CONFLICT, reason::ACCESS_LISTS_OFF]
                    .into_iter()
                    .find(|r| c.reason == *r)?;
                let was = conditions::find(&self.observed.conditions, READY);
                let new = was.is_none_or(|o| o.reason != c.reason || o.message != c.message);
                new.then(|| PlannedEvent {
                    type_: EventKind::Warning,
                    reason: why,
                    note: c.message.clone(),
                })
            });
        let pending = conditions::find(desired, DISABLED)
            .filter(|c| c.status == "True" && c.message != DISABLED_MESSAGE)
            .filter(|c| {
                conditions::find(&self.observed.conditions, DISABLED)
                    .is_none_or(|o| o.message != c.message)
            })
            .map(|c| PlannedEvent {
                type_: EventKind::Normal,
                reason: "RotationPending",
                note: c.message.clone(),
            });
        [(EXPIRING, "Expiring"), (EXPIRED, "Expired")]
            .into_iter()
            .filter(|(type_, _)| {
                conditions::is_true(desired, type_)
                    && !conditions::is_true(&self.observed.conditions, type_)
            })
            .map(|(type_, reason)| PlannedEvent {
                type_: EventKind::Warning,
                reason,
                note: conditions::find(desired, type_)
                    .map(|c| c.message.clone())
                    .unwrap_or_default(),
            })
            .chain(pending)
            .chain(access)
            .collect()
    }
}
