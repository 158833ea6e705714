//! The reconcile decision as a pure function (SPEC 4.1–4.4): from one [`Observed`] snapshot (an
//! `ApiKey`, the Secret it writes if it exists, the Secrets its required headers read, the
//! Secrets it published for gateways) and the time, decide per slot whether to keep, mint,
//! rotate or drop a replaced token, and derive the status, the Secret, the restarts, the
//! publication, the events and the requeue.
//!
//! No I/O happens here, and randomness comes in through the `mint` function, so every decision
//! is reproducible in tests. A plan with `status: None` and `secret: None` writes nothing: that is
//! what a resync of a healthy key must produce (SPEC 4.1 step 7).
//!
//! Here: the [`Plan`], its entry point [`plan`] and the pass that assembles it. The parts:
//! `slot` (the per-slot decision), `secret` (the Secret and whose it is), [`restart`] (rollout
//! restarts and whether a workload consents), `readiness` (the conditions a valid key carries),
//! `events`, `requeue`, with [`conditions`] (how conditions carry over), [`headers`]
//! (Secret-sourced required headers) and `timing` (jitter, cadences, warning windows).

pub mod access;
pub mod conditions;
pub mod headers;
pub mod publish;
pub mod restart;
pub mod timing;

mod events;
mod leaks;
mod readiness;
mod requeue;
mod secret;
mod slot;

pub use events::{EventKind, OVERLAP_CUT, PlannedEvent};
pub use leaks::{LEAK_REPORTED, refused as leak_refused};
pub use restart::Restart;
pub use secret::{Deletion, DesiredSecret, Precondition, Revocation, revocation};
pub use slot::{MintReason, RotateReason, SlotAction};

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{ApiKey, ApiKeyStatus, TokenStatus};
use crate::token::{GenerateError, Token};
use crate::validation::{ValidSlot, ValidSpec, validate};
use crate::{personal, served};
use conditions::{Desired, READY, reason};
use headers::{HEADER_RECHECK, HeaderSecrets, Resolved};
use requeue::CONFLICT_REQUEUE;
use secret::secret_conflict;
use timing::whole_seconds;

/// What one reconcile observed, read once before planning: everything [`plan`] decides from.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The ApiKey, read fresh.
    pub key: &'a ApiKey,
    /// The Secret the key names (owned or not), if it exists.
    pub secret: Option<&'a Secret>,
    /// The Secrets [`headers::referenced`] names that exist.
    pub header_secrets: &'a HeaderSecrets,
    /// The key's published Secrets (labelled with its name and a gateway; see
    /// [`publish::publication`]).
    pub published: &'a [Secret],
    /// The platform's rules for personal keys, and the owner's other keys.
    pub personal: PersonalKeys<'a>,
    /// The key's Role and RoleBinding, and whether access lists are on (see [`access`]).
    pub access: access::Observed<'a>,
}

/// What planning a personal key needs besides the key (ignored for other keys).
#[derive(Debug, Clone, Copy)]
pub struct PersonalKeys<'a> {
    /// `--personal-keys`: whether this installation mints personal keys at all. Only where the
    /// admission policies that check their owner are installed; elsewhere anyone could name
    /// anyone as a key's owner.
    pub accepted: bool,
    /// `--personal-key-max-lifetime`: see [`personal::cap_lifetimes`].
    pub max_lifetime: Duration,
    /// [`personal::first_of_owner`] of the key's owner in its namespace, as the controller's
    /// cache knows the keys; `None`: the cache knows no other, so this one is the first.
    pub first_of_owner: Option<&'a str>,
}

impl Default for PersonalKeys<'_> {
    fn default() -> Self {
        PersonalKeys {
            accepted: true,
            max_lifetime: personal::DEFAULT_MAX_LIFETIME,
            first_of_owner: None,
        }
    }
}

/// Everything one reconcile should do, in the order the shell does it.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The status to apply; `None`: the observed status is already right.
    pub status: Option<ApiKeyStatus>,
    /// The Secret to apply; `None`: leave it as it is.
    pub secret: Option<DesiredSecret>,
    /// Workloads to restart after the Secret is written.
    pub restarts: Vec<Restart>,
    /// The Secrets published for gateways and the KongConsumer lists, written after the restarts.
    pub publication: publish::Publication,
    /// The Role and RoleBinding of `spec.access`, written after the restarts.
    pub access: access::AccessPlan,
    /// Events to publish after the writes.
    pub events: Vec<PlannedEvent>,
    /// When to look again; `None`: only when something changes.
    pub requeue_after: Option<Duration>,
    /// The decision per slot, in spec order (for metrics and logs).
    pub slots: Vec<(String, SlotAction)>,
    /// The next time-based rotation of every slot that has one, in spec order (for metrics;
    /// `status.nextRotationAt` is the earliest). Empty while the key is blocked or suspended.
    pub rotations: Vec<(String, Timestamp)>,
}

impl Plan {
    /// Whether the plan writes nothing at all.
    pub fn is_quiet(&self) -> bool {
        self.status.is_none()
            && self.secret.is_none()
            && self.restarts.is_empty()
            && self.access.is_quiet()
            && self.publication.is_quiet()
    }
}

/// Decide what one reconcile does at `now` with what it `observed`; `mint` creates a token for a
/// slot (production: [`mint_token`]).
pub fn plan(
    observed: &Observed<'_>,
    now: Timestamp,
    mint: &mut dyn FnMut(&ValidSlot) -> Result<Token, GenerateError>,
) -> Result<Plan, GenerateError> {
    let readers = readers(observed.key);
    let access = access::Access {
        granted: access::plan(observed.key, &readers, &observed.access),
        withdrawn: access::withdraw(observed.key, &readers, &observed.access),
    };
    let mut plan = plan_key(observed, access, now, mint)?;
    plan.publication = publish::publication(
        observed.key,
        &plan,
        observed.secret,
        observed.published,
        now,
    );
    Ok(plan)
}

/// The plan of the key's own writes: status, Secret, restarts, access, events. A key that must
/// not touch its Secret only takes readers away (`access.withdrawn`).
fn plan_key(
    observed_input: &Observed<'_>,
    access: access::Access,
    now: Timestamp,
    mint: &mut dyn FnMut(&ValidSlot) -> Result<Token, GenerateError>,
) -> Result<Plan, GenerateError> {
    let Observed {
        key,
        secret,
        header_secrets,
        personal: personal_keys,
        ..
    } = *observed_input;
    let now = whole_seconds(now);
    let observed = key.status.clone().unwrap_or_default();
    // Every way a key must not touch its Secret ends here; only one of them is taken.
    let stop = |reason: &'static str, message: String, requeue: Option<Duration>| {
        let withdrawn = access.withdrawn;
        Ok(blocked(
            key, &observed, reason, message, now, requeue, withdrawn,
        ))
    };
    let mut valid = match validate(&key.spec) {
        Ok(valid) => valid,
        Err(invalid) => return stop(reason::INVALID_SPEC, invalid.to_string(), None),
    };
    let name = key.metadata.name.as_deref().unwrap_or_default();
    if let Some(owner) = &key.spec.owner {
        if !personal_keys.accepted {
            let message = "this Keysmith installation does not mint personal keys (spec.owner): \
                 without the admission policies that check owners, anyone could name anyone; \
                 the platform team enables them with the chart's personalKeys.enabled";
            return stop(reason::PERSONAL_KEYS_DISABLED, message.into(), None);
        }
        if let Some(first) = personal_keys.first_of_owner.filter(|first| *first != name) {
            let message = format!(
                "{:?} already has the personal key {first:?} in this namespace, and a user has \
                 one; delete one of the two (this one is minted once {first:?} is gone)",
                owner.username
            );
            let recheck = Some(personal::DUPLICATE_RECHECK);
            return stop(reason::DUPLICATE_PERSONAL_KEY, message, recheck);
        }
        personal::cap_lifetimes(&mut valid, personal_keys.max_lifetime);
    }
    if let Some(message) = secret.and_then(|s| secret_conflict(key, s)) {
        return stop(reason::SECRET_CONFLICT, message, Some(CONFLICT_REQUEUE));
    }
    let headers = headers::resolve(&key.spec, name, header_secrets);
    Planner::new(key, &valid, &observed, secret, now).run(&headers, access.granted, mint)
}

/// Who may read `key`'s Secrets: the subjects its Role and RoleBinding grant (see [`access`]):
/// a personal key's owner first, then `spec.access`.
pub fn readers(key: &ApiKey) -> Vec<crate::api::AccessSubject> {
    let mut readers: Vec<crate::api::AccessSubject> = key
        .spec
        .owner
        .iter()
        .map(|owner| crate::api::AccessSubject {
            kind: access::USER.to_owned(),
            name: owner.username.clone(),
            namespace: None,
        })
        .collect();
    for listed in access::listed(key) {
        if !readers.contains(&listed) {
            readers.push(listed);
        }
    }
    readers
}

/// Mint a token for a slot from the OS CSPRNG.
pub fn mint_token(slot: &ValidSlot) -> Result<Token, GenerateError> {
    Token::generate(&slot.prefix, slot.bytes, slot.encoding)
}

/// The plan of a key that must not touch its Secret (invalid spec, Secret conflict, a second
/// personal key of one owner): only the `Ready` condition changes, tokens and the other
/// conditions stay as observed, and readers the spec no longer lists lose their access
/// (`withdrawn`), as that only takes access away.
fn blocked(
    key: &ApiKey,
    observed: &ApiKeyStatus,
    reason: &'static str,
    message: String,
    now: Timestamp,
    requeue_after: Option<Duration>,
    withdrawn: access::AccessPlan,
) -> Plan {
    let ready = Desired::new(READY, false, reason, message);
    let generation = key.metadata.generation;
    let mut desired = observed.clone();
    desired.observed_generation = generation;
    desired.access = withdrawn.status.clone();
    let mut merged = conditions::merge(
        &observed.conditions,
        std::slice::from_ref(&ready),
        generation,
        now,
    );
    desired.conditions.retain(|c| c.type_ != READY);
    desired.conditions.insert(0, merged.remove(0));
    let was = conditions::find(&observed.conditions, READY);
    let changed = was.is_none_or(|c| {
        c.status != "False" || c.reason != ready.reason || c.message != ready.message
    });
    let events = if changed {
        vec![PlannedEvent {
            type_: EventKind::Warning,
            reason,
            note: ready.message.clone(),
        }]
    } else {
        Vec::new()
    };
    Plan {
        status: (desired != *observed).then_some(desired),
        secret: None,
        restarts: Vec::new(),
        access: withdrawn,
        publication: publish::Publication::default(),
        events,
        requeue_after,
        slots: Vec::new(),
        rotations: Vec::new(),
    }
}

/// State of one planning pass over a valid key.
struct Planner<'a> {
    key: &'a ApiKey,
    valid: &'a ValidSpec,
    observed: &'a ApiKeyStatus,
    secret: Option<&'a Secret>,
    now: Timestamp,
    jitter: f64,
    /// The key's `expiresAt` in whole seconds, like every other time the planner compares.
    key_end: Option<Timestamp>,
    /// Past the key's `expiresAt`: nothing verifies, nothing rotates, the Secret is left alone.
    key_expired: bool,
    /// Rotations are suspended (disabled or expired key).
    suspended: bool,
}

impl<'a> Planner<'a> {
    fn new(
        key: &'a ApiKey,
        valid: &'a ValidSpec,
        observed: &'a ApiKeyStatus,
        secret: Option<&'a Secret>,
        now: Timestamp,
    ) -> Self {
        let key_end = valid.expires_at.map(whole_seconds);
        let key_expired = key_end.is_some_and(|end| now >= end);
        Planner {
            key,
            valid,
            observed,
            secret,
            now,
            jitter: timing::jitter_fraction(key.metadata.uid.as_deref()),
            key_end,
            key_expired,
            suspended: key_expired || key.spec.disabled,
        }
    }

    fn run(
        self,
        headers: &Resolved,
        access: access::AccessPlan,
        mint: &mut dyn FnMut(&ValidSlot) -> Result<Token, GenerateError>,
    ) -> Result<Plan, GenerateError> {
        let mut outcomes = Vec::new();
        for slot in &self.valid.slots {
            if let Some(mut outcome) = self.slot(slot, mint)? {
                self.settle_leaks(&mut outcome);
                outcomes.push((slot, outcome));
            }
        }
        let minted = outcomes
            .iter()
            .any(|(_, o)| matches!(o.action, SlotAction::Mint(_) | SlotAction::Rotate(_)));
        let rotated = outcomes
            .iter()
            .any(|(_, o)| matches!(o.action, SlotAction::Rotate(_)));
        let tokens: Vec<TokenStatus> = outcomes.iter().map(|(_, o)| o.status.clone()).collect();
        let rotations = self.rotations(&tokens);

        let secret = self.desired_secret(&outcomes);
        let secret = secret.filter(|d| minted || !self.secret_matches(d));
        let restarts = if secret.is_some() && minted && !self.observed.tokens.is_empty() {
            self.restarts(&tokens)
        } else {
            Vec::new()
        };

        let desired_conditions =
            self.conditions(&tokens, minted, rotated, &headers.missing, &access);
        let generation = self.key.metadata.generation;
        let conditions = conditions::merge(
            &self.observed.conditions,
            &desired_conditions,
            generation,
            self.now,
        );
        let desired = ApiKeyStatus {
            observed_generation: generation,
            secret_name: Some(self.key.secret_name()),
            conditions,
            next_rotation_at: rotations.iter().map(|(_, due)| *due).min().map(Time),
            expires_at: self.earliest_expiry(&tokens).map(Time),
            tokens,
            required_headers: headers.hashes.clone(),
            served_generation: generation,
            served_policy: Some(served::policy_of(&self.key.spec)),
            access: access.status.clone(),
        };

        let mut events = self.leak_events();
        events.extend(self.slot_events(&outcomes));
        events.extend(self.condition_events(&desired.conditions));
        let mut requeue_after = self.requeue(&desired.tokens);
        if !headers::referenced(&self.key.spec).is_empty() {
            requeue_after = requeue_after.min(HEADER_RECHECK);
        }
        Ok(Plan {
            status: (desired != *self.observed).then_some(desired),
            secret,
            restarts,
            access,
            publication: publish::Publication::default(),
            events,
            requeue_after: Some(requeue_after),
            slots: outcomes
                .into_iter()
                .map(|(slot, o)| (slot.name.clone(), o.action))
                .collect(),
            rotations,
        })
    }
}

#[cfg(test)]
mod tests;
