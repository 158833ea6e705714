//! Status conditions (SPEC 4.4) and how they carry over between reconciles.
//!
//! A condition keeps its `lastTransitionTime` unless its `status` really changes; reason and
//! message changes alone do not move it. Together with stable messages (no times, no counters)
//! this is what makes a healthy resync compare equal to the observed status and write nothing.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types Keysmith writes, in the order they appear in status.
pub const READY: &str = "Ready";
/// A current token or the key ends within its warning window and will not be renewed in time.
pub const EXPIRING: &str = "Expiring";
/// The key's `expiresAt` or a current token's expiry has passed.
pub const EXPIRED: &str = "Expired";
/// `spec.disabled` is set.
pub const DISABLED: &str = "Disabled";

/// `Ready` reasons (SPEC 4.4).
pub mod reason {
    /// Tokens were minted (first mint, or a lost/changed Secret re-minted).
    pub const MINTED: &str = "Minted";
    /// Tokens were rotated.
    pub const ROTATED: &str = "Rotated";
    /// The spec breaks a rule; the message names the field.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The Secret exists and this ApiKey does not own it.
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    /// The key or a current token has expired.
    pub const EXPIRED: &str = "Expired";
    /// The key is suspended.
    pub const DISABLED: &str = "Disabled";
    /// The key's owner already has a personal key in its namespace, which is the one minted.
    pub const DUPLICATE_PERSONAL_KEY: &str = "DuplicatePersonalKey";
    /// The key is personal and this installation does not mint personal keys.
    pub const PERSONAL_KEYS_DISABLED: &str = "PersonalKeysDisabled";
    /// A Secret or key that `requiredHeaders[].valueFrom` names does not exist.
    pub const HEADER_SECRET_MISSING: &str = "HeaderSecretMissing";
    /// `spec.access`: the Role or RoleBinding name is taken by an object the key does not own.
    pub const ACCESS_CONFLICT: &str = "AccessConflict";
    /// `spec.access` is set and the controller runs without `--access-lists`.
    pub const ACCESS_LISTS_OFF: &str = "AccessListsOff";
    /// A Kubernetes API call failed (set by the shell, not the planner).
    pub const API_ERROR: &str = "ApiError";
    /// Reason of a True `Expiring` condition.
    pub const EXPIRY_APPROACHING: &str = "ExpiryApproaching";
    /// Reason of a False `Expiring`/`Expired`/`Disabled` condition.
    pub const NONE: &str = "None";
}

/// What one condition should say; [`merge`] turns it into a `Condition`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Desired {
    /// Condition type.
    pub type_: &'static str,
    /// True or False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable detail; must not contain times or anything else that changes by itself.
    pub message: String,
}

impl Desired {
    /// A condition with the given values.
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Desired {
        Desired {
            type_,
            status,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    /// A False condition with reason `None` and no message.
    pub fn off(type_: &'static str) -> Desired {
        Desired::new(type_, false, reason::NONE, "")
    }
}

/// The conditions to write: `desired` merged over `observed`, keeping `lastTransitionTime` of
/// every condition whose status did not change. Conditions of other types (written by someone
/// else) are not ours to keep or drop, so they are left out of what Keysmith applies.
pub(crate) fn merge(
    observed: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = if d.status { "True" } else { "False" };
            let since = find(observed, d.type_)
                .filter(|o| o.status == status)
                .map_or(Time(now), |o| o.last_transition_time.clone());
            Condition {
                type_: d.type_.to_owned(),
                status: status.to_owned(),
                reason: d.reason.clone(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// The condition of a type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether a condition of `type_` is True in `conditions`.
pub(crate) fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let first = merge(
            &[],
            &[Desired::new(READY, true, reason::MINTED, "m")],
            Some(1),
            at(10),
        );
        assert_eq!(first[0].last_transition_time, Time(at(10)));
        let same_status = merge(
            &first,
            &[Desired::new(READY, true, reason::ROTATED, "r")],
            Some(2),
            at(20),
        );
        assert_eq!(same_status[0].last_transition_time, Time(at(10)));
        assert_eq!(same_status[0].reason, reason::ROTATED);
        let flipped = merge(
            &same_status,
            &[Desired::new(READY, false, reason::DISABLED, "d")],
            Some(3),
            at(30),
        );
        assert_eq!(flipped[0].last_transition_time, Time(at(30)));
    }
}
