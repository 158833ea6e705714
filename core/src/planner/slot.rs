//! The decision for one slot: keep its token, mint one, rotate it, or drop the previous token
//! once its overlap window ends; and when each slot's next time-based rotation comes.

use std::fmt;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    MAX_EARLIER, PreviousToken, ROTATE_ANNOTATION, ROTATE_SLOT_ANNOTATION_PREFIX, TokenStatus,
};
use crate::token::{GenerateError, Token, sha256_hex};
use crate::validation::ValidSlot;

use super::timing::{self, add, sub, whole_seconds};
use super::{Planner, leaks};

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
    /// The token was reported leaked and the key's `leakResponse` is `rotate`.
    Leak,
}

/// The decision for one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotAction {
    /// Nothing changes.
    Keep,
    /// The overlap window of a replaced token ended: drop it from status.
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
            SlotAction::Rotate(RotateReason::Leak) => Some("leak"),
        }
    }
}

impl fmt::Display for SlotAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mint_label() {
            Some(label) => write!(f, "mint ({label})"),
            None if *self == SlotAction::DropPrevious => f.write_str("drop ended overlap"),
            None => f.write_str("keep"),
        }
    }
}

/// One slot's outcome.
pub(super) struct SlotOutcome {
    pub(super) action: SlotAction,
    pub(super) status: TokenStatus,
    pub(super) token: Option<Token>,
    /// Replaced tokens whose windows this outcome ended before their `validUntil`, because the
    /// slot already kept as many as it may (`OverlapCut`).
    pub(super) cut: Vec<PreviousToken>,
}

/// A slot's replaced tokens, newest first: `previous`, then `earlier`.
pub(super) struct Replaced(Vec<PreviousToken>);

impl Replaced {
    pub(super) fn of(status: &TokenStatus) -> Replaced {
        Replaced(
            status
                .previous
                .iter()
                .chain(&status.earlier)
                .cloned()
                .collect(),
        )
    }

    /// Keep the tokens whose windows are still open at `now`; `true` when one ended.
    fn drop_ended(&mut self, now: Timestamp) -> bool {
        let before = self.0.len();
        self.0.retain(|p| p.valid_until.0 > now);
        self.0.len() != before
    }

    /// Keep the tokens `keep` accepts; `true` when one went.
    pub(super) fn retain(&mut self, keep: impl FnMut(&PreviousToken) -> bool) -> bool {
        let before = self.0.len();
        self.0.retain(keep);
        self.0.len() != before
    }

    /// Write them into `status`, the newest as `previous`; those past the bound are returned.
    pub(super) fn store(mut self, status: &mut TokenStatus) -> Vec<PreviousToken> {
        let cut = self.0.split_off(self.0.len().min(1 + MAX_EARLIER));
        let mut kept = self.0.into_iter();
        status.previous = kept.next();
        status.earlier = kept.collect();
        cut
    }
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
            let action = SlotAction::Mint(MintReason::Initial);
            let outcome = self.mint(slot, mint, action, Replaced(Vec::new()))?;
            return Ok(Some(outcome));
        };
        if self.key_expired {
            // Nothing verifies past the key's end; leave status and Secret as they are.
            return Ok(Some(SlotOutcome {
                action: SlotAction::Keep,
                status: current.clone(),
                token: None,
                cut: Vec::new(),
            }));
        }
        let (held_hash, held) = self.held(slot);
        if held_hash.as_deref() != Some(current.sha256.as_str()) {
            let recovering = held_hash.is_some()
                && held_hash.as_deref() == current.previous.as_ref().map(|p| p.sha256.as_str());
            // Recovering from a crash between the status and the Secret write: the Secret still
            // holds the previous token, which is what the apps use; keep the windows as they
            // were. Otherwise the current token was lost or overwritten: the apps may still
            // hold it.
            let replaced = if recovering {
                Replaced::of(current)
            } else {
                self.demote(current)
            };
            let action = SlotAction::Mint(MintReason::SecretChanged);
            return Ok(Some(self.mint(slot, mint, action, replaced)?));
        }
        if let Some(reason) = self.rotation_due(slot, current) {
            let action = SlotAction::Rotate(reason);
            return Ok(Some(self.mint(slot, mint, action, self.demote(current))?));
        }
        let mut kept = current.clone();
        let mut replaced = Replaced::of(current);
        let action = if replaced.drop_ended(self.now) {
            SlotAction::DropPrevious
        } else {
            SlotAction::Keep
        };
        let cut = replaced.store(&mut kept);
        Ok(Some(SlotOutcome {
            action,
            status: kept,
            token: held,
            cut,
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
        mut replaced: Replaced,
    ) -> Result<SlotOutcome, GenerateError> {
        let token = mint(slot)?;
        replaced.drop_ended(self.now);
        let mut status = TokenStatus {
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
            previous: None,
            earlier: Vec::new(),
            last_used_at: None,
            leak: None,
        };
        let cut = replaced.store(&mut status);
        Ok(SlotOutcome {
            action,
            status,
            token: Some(token),
            cut,
        })
    }

    /// The slot's replaced tokens once `current` is replaced: it comes first, valid for the
    /// overlap but never past its own expiry (not at all with overlap 0), carrying its
    /// `lastUsedAt` and leak record; the tokens replaced before it keep their own windows. A
    /// token its leak record refuses is not kept at all.
    fn demote(&self, current: &TokenStatus) -> Replaced {
        let overlap = self.valid.rotation.overlap;
        let mut until = whole_seconds(add(self.now, overlap));
        if let Some(expires) = &current.expires_at {
            until = until.min(expires.0);
        }
        let refused = leaks::refused(current.leak.as_ref(), self.leak_response());
        let kept = !overlap.is_zero() && until > self.now && !refused;
        let demoted = kept.then(|| PreviousToken {
            id: current.id.clone(),
            sha256: current.sha256.clone(),
            valid_until: Time(until),
            last_used_at: current.last_used_at.clone(),
            leak: current.leak.clone(),
        });
        let Replaced(older) = Replaced::of(current);
        Replaced(demoted.into_iter().chain(older).collect())
    }

    fn annotation(&self, name: &str) -> Option<String> {
        self.key.metadata.annotations.as_ref()?.get(name).cloned()
    }

    fn slot_annotation(&self, slot: &ValidSlot) -> Option<String> {
        self.annotation(&format!("{ROTATE_SLOT_ANNOTATION_PREFIX}{}", slot.name))
    }

    fn rotation_due(&self, slot: &ValidSlot, current: &TokenStatus) -> Option<RotateReason> {
        // Before the suspension check: a leaked token must not come back when the key is enabled.
        if leaks::rotation_due(current, self.leak_response()) {
            return Some(RotateReason::Leak);
        }
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
