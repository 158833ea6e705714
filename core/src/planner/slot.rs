//! The decision for one slot: keep its token, mint one, rotate it, or drop the previous token
//! once its overlap window ends; and when each slot's next time-based rotation comes.

use std::fmt;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{PreviousToken, ROTATE_ANNOTATION, ROTATE_SLOT_ANNOTATION_PREFIX, TokenStatus};
use crate::token::{GenerateError, Token, sha256_hex};
use crate::validation::ValidSlot;

use super::Planner;
use super::timing::{self, add, sub, whole_seconds};

/// Why a slot gets a new token without a rotation being due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MintReason {
    /// The slot has no token yet.
    Initial,
    /// The Secret lost the token or holds another value (deleted or edited by hand).
    SecretChanged,
}

/// What started a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateReason {
    /// `rotation.every` or `rotation.schedule` came due.
    Schedule,
    /// The token reached `renewBefore` ahead of its expiry.
    Renew,
    /// `rotation.trigger` changed.
    Trigger,
    /// The `keysmith.dev/rotate` or `keysmith.dev/rotate-<slot>` annotation changed.
    Annotation,
}

/// The decision for one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotAction {
    /// Nothing changes.
    Keep,
    /// The overlap window of the previous token ended: drop it from status.
    DropPrevious,
    /// A new token without a rotation.
    Mint(MintReason),
    /// The current token is replaced; it stays valid as `previous` for the overlap.
    Rotate(RotateReason),
}

impl SlotAction {
    /// The `reason` label of `keysmith_tokens_minted_total` when this action mints a token.
    pub fn mint_label(self) -> Option<&'static str> {
        match self {
            SlotAction::Keep | SlotAction::DropPrevious => None,
            SlotAction::Mint(MintReason::Initial) => Some("initial"),
            SlotAction::Mint(MintReason::SecretChanged) => Some("secret-changed"),
            SlotAction::Rotate(RotateReason::Schedule) => Some("schedule"),
            SlotAction::Rotate(RotateReason::Renew) => Some("renew"),
            SlotAction::Rotate(RotateReason::Trigger) => Some("trigger"),
            SlotAction::Rotate(RotateReason::Annotation) => Some("annotation"),
        }
    }
}

impl fmt::Display for SlotAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mint_label() {
            Some(label) => write!(f, "mint ({label})"),
            None if *self == SlotAction::DropPrevious => f.write_str("drop previous"),
            None => f.write_str("keep"),
        }
    }
}

/// One slot's outcome.
pub(super) struct SlotOutcome {
    pub(super) action: SlotAction,
    pub(super) status: TokenStatus,
    pub(super) token: Option<Token>,
}

impl Planner<'_> {
    /// The decision for one slot; `None` when the slot has no token and gets none (expired key).
    pub(super) fn slot(
        &self,
        slot: &ValidSlot,
        mint: &mut dyn FnMut(&ValidSlot) -> Result<Token, GenerateError>,
    ) -> Result<Option<SlotOutcome>, GenerateError> {
        let current = self.observed.tokens.iter().find(|t| t.name == slot.name);
        let Some(current) = current else {
            if self.key_expired {
                return Ok(None);
            }
            let outcome = self.mint(slot, mint, SlotAction::Mint(MintReason::Initial), None)?;
            return Ok(Some(outcome));
        };
        let mut kept = current.clone();
        kept.last_used_at = None;
        if self.key_expired {
            // Nothing verifies past the key's end; leave status and Secret as they are.
            return Ok(Some(SlotOutcome {
                action: SlotAction::Keep,
                status: kept,
                token: None,
            }));
        }
        let (held_hash, held) = self.held(slot);
        if held_hash.as_deref() != Some(current.sha256.as_str()) {
            let recovering = held_hash.is_some()
                && held_hash.as_deref() == current.previous.as_ref().map(|p| p.sha256.as_str());
            // Recovering from a crash between the status and the Secret write: the Secret still
            // holds the previous token, which is what the apps use; keep its window as it was.
            // Otherwise the current token was lost or overwritten: the apps may still hold it.
            let previous = if recovering {
                current.previous.clone()
            } else {
                self.demote(current)
            };
            let action = SlotAction::Mint(MintReason::SecretChanged);
            return Ok(Some(self.mint(slot, mint, action, previous)?));
        }
        if let Some(reason) = self.rotation_due(slot, current) {
            let action = SlotAction::Rotate(reason);
            return Ok(Some(self.mint(slot, mint, action, self.demote(current))?));
        }
        let action = match &kept.previous {
            Some(p) if p.valid_until.0 <= self.now => {
                kept.previous = None;
                SlotAction::DropPrevious
            }
            _ => SlotAction::Keep,
        };
        Ok(Some(SlotOutcome {
            action,
            status: kept,
            token: held,
        }))
    }

    /// The SHA-256 of the slot's Secret value and the value as a token, if it parses as one.
    fn held(&self, slot: &ValidSlot) -> (Option<String>, Option<Token>) {
        let value = self
            .secret
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(&slot.secret_key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok());
        let Some(value) = value else {
            return (None, None);
        };
        (Some(sha256_hex(&value)), Token::try_from(value).ok())
    }

    fn mint(
        &self,
        slot: &ValidSlot,
        mint: &mut dyn FnMut(&ValidSlot) -> Result<Token, GenerateError>,
        action: SlotAction,
        previous: Option<PreviousToken>,
    ) -> Result<SlotOutcome, GenerateError> {
        let token = mint(slot)?;
        let previous = previous.filter(|p| p.valid_until.0 > self.now);
        let status = TokenStatus {
            name: slot.name.clone(),
            id: token.id().to_owned(),
            sha256: token.sha256_hex(),
            issued_at: Time(self.now),
            expires_at: slot
                .lifetime
                .map(|life| Time(whole_seconds(add(self.now, life)))),
            rotation_trigger: self.valid.rotation.trigger.clone(),
            rotate_annotation: self.annotation(ROTATE_ANNOTATION),
            rotate_slot_annotation: self.slot_annotation(slot),
            previous,
            last_used_at: None,
        };
        Ok(SlotOutcome {
            action,
            status,
            token: Some(token),
        })
    }

    /// The replaced token as `previous`: valid for the overlap, never past its own expiry.
    fn demote(&self, current: &TokenStatus) -> Option<PreviousToken> {
        let overlap = self.valid.rotation.overlap;
        let mut until = whole_seconds(add(self.now, overlap));
        if let Some(expires) = &current.expires_at {
            until = until.min(expires.0);
        }
        (!overlap.is_zero() && until > self.now).then(|| PreviousToken {
            id: current.id.clone(),
            sha256: current.sha256.clone(),
            valid_until: Time(until),
        })
    }

    fn annotation(&self, name: &str) -> Option<String> {
        self.key.metadata.annotations.as_ref()?.get(name).cloned()
    }

    fn slot_annotation(&self, slot: &ValidSlot) -> Option<String> {
        self.annotation(&format!("{ROTATE_SLOT_ANNOTATION_PREFIX}{}", slot.name))
    }

    fn rotation_due(&self, slot: &ValidSlot, current: &TokenStatus) -> Option<RotateReason> {
        if self.suspended {
            return None;
        }
        let changed = |wanted: Option<String>, answered: &Option<String>| {
            wanted.is_some_and(|w| answered.as_ref() != Some(&w))
        };
        if changed(
            self.valid.rotation.trigger.clone(),
            &current.rotation_trigger,
        ) {
            return Some(RotateReason::Trigger);
        }
        if changed(
            self.annotation(ROTATE_ANNOTATION),
            &current.rotate_annotation,
        ) || changed(self.slot_annotation(slot), &current.rotate_slot_annotation)
        {
            return Some(RotateReason::Annotation);
        }
        let (due, reason) = self.next_due(slot, current)?;
        (self.now >= due).then_some(reason)
    }

    /// The next time-based rotation of a slot's current token and its cause.
    pub(super) fn next_due(
        &self,
        slot: &ValidSlot,
        current: &TokenStatus,
    ) -> Option<(Timestamp, RotateReason)> {
        let scheduled = self
            .valid
            .rotation
            .cadence
            .as_ref()
            .and_then(|c| timing::cadence_due(c, current.issued_at.0, self.jitter))
            .map(|t| (t, RotateReason::Schedule));
        let renew = slot
            .renew_before
            .zip(current.expires_at.as_ref())
            .map(|(before, expires)| (sub(expires.0, before), RotateReason::Renew));
        [scheduled, renew]
            .into_iter()
            .flatten()
            .min_by_key(|(t, _)| *t)
            .map(|(t, r)| (whole_seconds(t), r))
    }

    /// The upcoming rotation of each slot that has one, unless rotations are suspended; a slot
    /// whose rotation would come when or after the key ends has none.
    pub(super) fn rotations(&self, tokens: &[TokenStatus]) -> Vec<(String, Timestamp)> {
        if self.suspended {
            return Vec::new();
        }
        tokens
            .iter()
            .filter_map(|t| {
                let slot = self.valid.slots.iter().find(|s| s.name == t.name)?;
                let (due, _) = self.next_due(slot, t)?;
                self.key_end
                    .is_none_or(|end| due < end)
                    .then(|| (t.name.clone(), due))
            })
            .collect()
    }
}
