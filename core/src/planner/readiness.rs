//! The conditions a valid key's status carries (`Ready`, `Expiring`, `Expired`, `Disabled`), the
//! warning windows before an expiry, and the earliest expiry status reports.

use jiff::Timestamp;

use crate::api::{ROTATE_ANNOTATION, ROTATE_SLOT_ANNOTATION_PREFIX, TokenStatus};

use super::Planner;
use super::access::AccessPlan;
use super::conditions::{self, DISABLED, Desired, EXPIRED, EXPIRING, READY, reason};
use super::timing::{self, between, sub};

/// The `Disabled` message of a disabled key with no rotation waiting.
pub(super) const DISABLED_MESSAGE: &str = "spec.disabled is true";

impl Planner<'_> {
    /// The earliest end of a current token or of the key (`status.expiresAt`).
    pub(super) fn earliest_expiry(&self, tokens: &[TokenStatus]) -> Option<Timestamp> {
        tokens
            .iter()
            .filter_map(|t| t.expires_at.as_ref().map(|e| e.0))
            .chain(self.key_end)
            .min()
    }

    /// The conditions of a valid key: `Ready` with its reason, then `Expiring`, `Expired` and
    /// `Disabled`.
    pub(super) fn conditions(
        &self,
        tokens: &[TokenStatus],
        minted: bool,
        rotated: bool,
        missing_headers: &[String],
        access: &AccessPlan,
    ) -> Vec<Desired> {
        let secret_name = self.key.secret_name();
        let expired = self.expired_message(tokens);
        let expiring = self.expiring_message(tokens);
        let ready = if let Some(message) = &expired {
            Desired::new(READY, false, reason::EXPIRED, message.clone())
        } else if self.key.spec.disabled {
            let message = "spec.disabled is true: every verification answers DISABLED";
            Desired::new(READY, false, reason::DISABLED, message)
        } else if !missing_headers.is_empty() {
            let message = format!(
                "{}; requests fail HEADER_MISMATCH until it exists",
                missing_headers.join("; ")
            );
            Desired::new(READY, false, reason::HEADER_SECRET_MISSING, message)
        } else if let Some((why, message)) = &access.problem {
            Desired::new(READY, false, why, message.clone())
        } else {
            let observed = conditions::find(&self.observed.conditions, READY)
                .filter(|c| c.status == "True")
                .map(|c| c.reason.as_str());
            let why = if rotated {
                reason::ROTATED
            } else if minted {
                reason::MINTED
            } else {
                match observed {
                    Some(reason::ROTATED) => reason::ROTATED,
                    _ => reason::MINTED,
                }
            };
            let message = format!("{} token(s) current in Secret {secret_name}", tokens.len());
            Desired::new(READY, true, why, message)
        };
        vec![
            ready,
            expiring.map_or_else(
                || Desired::off(EXPIRING),
                |m| Desired::new(EXPIRING, true, reason::EXPIRY_APPROACHING, m),
            ),
            expired.map_or_else(
                || Desired::off(EXPIRED),
                |m| Desired::new(EXPIRED, true, reason::EXPIRED, m),
            ),
            if self.key.spec.disabled {
                Desired::new(
                    DISABLED,
                    true,
                    reason::DISABLED,
                    self.disabled_message(tokens),
                )
            } else {
                Desired::off(DISABLED)
            },
        ]
    }

    /// The `Disabled` message: says when a rotation asked for is waiting for the key to be
    /// enabled, since a rotation that lands long after it was asked for would otherwise surprise.
    fn disabled_message(&self, tokens: &[TokenStatus]) -> String {
        let pending = self.pending_rotations(tokens);
        if pending.is_empty() {
            return DISABLED_MESSAGE.to_owned();
        }
        format!(
            "spec.disabled is true; a rotation is pending ({}) and happens when the key is enabled",
            pending.join(", ")
        )
    }

    /// The fields whose value asks for a rotation some current token has not answered:
    /// `rotation.trigger`, `keysmith.dev/rotate`, `keysmith.dev/rotate-<slot>`, in that order.
    fn pending_rotations(&self, tokens: &[TokenStatus]) -> Vec<String> {
        let annotation = |name: &str| self.key.metadata.annotations.as_ref()?.get(name).cloned();
        let unanswered = |wanted: Option<String>, answered: &Option<String>| {
            wanted.is_some() && wanted != *answered
        };
        let mut pending: Vec<String> = Vec::new();
        let mut add = |field: String| {
            if !pending.contains(&field) {
                pending.push(field);
            }
        };
        for t in tokens {
            if unanswered(self.valid.rotation.trigger.clone(), &t.rotation_trigger) {
                add("rotation.trigger".to_owned());
            }
        }
        for t in tokens {
            if unanswered(annotation(ROTATE_ANNOTATION), &t.rotate_annotation) {
                add(ROTATE_ANNOTATION.to_owned());
            }
        }
        for t in tokens {
            let name = format!("{ROTATE_SLOT_ANNOTATION_PREFIX}{}", t.name);
            if unanswered(annotation(&name), &t.rotate_slot_annotation) {
                add(name);
            }
        }
        pending
    }

    fn expired_message(&self, tokens: &[TokenStatus]) -> Option<String> {
        if self.key_expired {
            return Some("the key reached spec.expiresAt; nothing verifies".to_owned());
        }
        let names: Vec<&str> = tokens
            .iter()
            .filter(|t| t.expires_at.as_ref().is_some_and(|e| e.0 <= self.now))
            .map(|t| t.name.as_str())
            .collect();
        (!names.is_empty()).then(|| {
            format!(
                "token(s) {} expired; change rotation.trigger or annotate keysmith.dev/rotate to regenerate",
                names.join(", ")
            )
        })
    }

    /// The tokens (and the key) inside their warning window that no rotation will replace in time.
    fn expiring_message(&self, tokens: &[TokenStatus]) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(end) = self.key_end
            && let Some(start) = self.key_warning_start(end)
            && start <= self.now
            && self.now < end
        {
            parts.push("the key reaches spec.expiresAt".to_owned());
        }
        for t in tokens {
            if let Some(start) = self.token_warning_start(t)
                && start <= self.now
                && t.expires_at.as_ref().is_some_and(|e| self.now < e.0)
            {
                parts.push(format!("token {} expires without renewal", t.name));
            }
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// Start of the key's warning window before its `expiresAt`.
    pub(super) fn key_warning_start(&self, end: Timestamp) -> Option<Timestamp> {
        let created = self.key.metadata.creation_timestamp.as_ref()?.0;
        Some(sub(end, timing::warning_window(between(created, end))))
    }

    /// Start of a token's warning window, when no renewal will replace it before it expires.
    pub(super) fn token_warning_start(&self, token: &TokenStatus) -> Option<Timestamp> {
        let expires = token.expires_at.as_ref()?.0;
        let slot = self.valid.slots.iter().find(|s| s.name == token.name)?;
        if slot.renew_before.is_some() && !self.suspended {
            return None;
        }
        let lifetime = between(token.issued_at.0, expires);
        Some(sub(expires, timing::warning_window(lifetime)))
    }
}
