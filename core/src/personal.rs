//! Personal keys (`spec.owner`): keys whose tokens act as the user who created them.
//!
//! Three rules live here, as pure functions: what an owner may be ([`owner_errors`], part of
//! validation), which of a user's personal keys in a namespace is the one Keysmith mints
//! ([`first_of_owner`]), and how long their tokens may live ([`cap_lifetimes`]). That the owner
//! is the creating user, and that only the controller writes the token hashes, needs the
//! request's user: the chart's admission policies check those.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::api::{ApiKey, MAX_OWNER_GROUPS, MAX_OWNER_NAME_LEN, Owner, SYSTEM_PREFIX};
use crate::validation::{FieldError, ValidSpec};

/// How often a second personal key of one owner looks again whether the first is gone: nothing
/// else wakes it when another key is deleted.
pub const DUPLICATE_RECHECK: Duration = Duration::from_secs(60);

/// `--personal-key-max-lifetime` when unset.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// What `--personal-key-max-lifetime` accepts: 1 minute to 2 years of 8760h.
pub const MAX_LIFETIME_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(60)..=Duration::from_secs(2 * 8760 * 3600);

/// Read `--personal-key-max-lifetime`.
pub fn parse_max_lifetime(value: &str) -> Result<Duration, crate::duration::DurationError> {
    crate::duration::parse_in_range(value, MAX_LIFETIME_RANGE)
}

/// Every problem with `spec.owner`: the schema's bounds, repeated for servers that skip them.
pub fn owner_errors(owner: Option<&Owner>) -> Vec<FieldError> {
    let Some(owner) = owner else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    let mut push = |field: String, message: String| errors.push(FieldError { field, message });
    let name_problem = |value: &str, what: &str| {
        if value.is_empty() {
            Some("is empty".to_owned())
        } else if value.len() > MAX_OWNER_NAME_LEN {
            Some(format!(
                "is {} characters long; at most {MAX_OWNER_NAME_LEN} allowed",
                value.len()
            ))
        } else if value.starts_with(SYSTEM_PREFIX) {
            Some(format!(
                "{value:?} is a {SYSTEM_PREFIX} {what}, which Kubernetes reserves; personal keys \
                 act as people, not as ServiceAccounts or components"
            ))
        } else {
            None
        }
    };
    if let Some(problem) = name_problem(&owner.username, "user") {
        push("spec.owner.username".into(), problem);
    }
    if owner.groups.len() > MAX_OWNER_GROUPS {
        push(
            "spec.owner.groups".into(),
            format!(
                "has {} entries; at most {MAX_OWNER_GROUPS} allowed",
                owner.groups.len()
            ),
        );
    }
    for (i, group) in owner.groups.iter().enumerate() {
        if let Some(problem) = name_problem(group, "group") {
            push(format!("spec.owner.groups[{i}]"), problem);
        } else if owner.groups[..i].contains(group) {
            push(
                format!("spec.owner.groups[{i}]"),
                format!("{group:?} is listed twice"),
            );
        }
    }
    errors
}

/// The name of the personal key of `username` that Keysmith mints among `keys` (all in one
/// namespace): the oldest by creation time, then by name, of those not being deleted.
///
/// An admission policy sees one object, not the others in its namespace, so "one personal key
/// per user and namespace" is kept here: every later key of the same owner stays unminted
/// (`Ready=False`, naming this one) until this one is deleted (looking again every
/// [`DUPLICATE_RECHECK`]). Oldest-first is stable: a new key
/// never takes over from one that works.
pub fn first_of_owner<'a>(
    keys: impl IntoIterator<Item = &'a ApiKey>,
    username: &str,
) -> Option<&'a str> {
    keys.into_iter()
        .filter(|k| k.metadata.deletion_timestamp.is_none())
        .filter(|k| {
            k.spec
                .owner
                .as_ref()
                .is_some_and(|o| o.username == username)
        })
        .filter_map(|k| {
            let name = k.metadata.name.as_deref()?;
            Some((k.metadata.creation_timestamp.as_ref().map(|t| t.0), name))
        })
        // A key not yet created (no timestamp) sorts last: it is the newest.
        .min_by_key(|(created, name)| (created.is_none(), *created, *name))
        .map(|(_, name)| name)
}

/// Cap every slot's token lifetime at `max`: a slot without one, or with a longer one, gets
/// `max`. The key is not refused: whatever lifetime its author wrote, the platform's cap holds,
/// and a key that renews its tokens renews them within the cap (its `renewBefore`, else a third
/// of the capped lifetime).
pub fn cap_lifetimes(valid: &mut ValidSpec, max: Duration) {
    // Validation set a renewal for every slot with a lifetime when the key renews at all.
    let renews =
        valid.rotation.cadence.is_some() || valid.slots.iter().any(|s| s.renew_before.is_some());
    for slot in &mut valid.slots {
        if slot.lifetime.is_some_and(|life| life <= max) {
            continue;
        }
        slot.lifetime = Some(max);
        slot.renew_before = renews.then(|| {
            slot.renew_before
                .filter(|before| *before < max)
                .unwrap_or(max / 3)
        });
    }
}

#[cfg(test)]
mod tests;
