//! The reconcile decision as a pure function (SPEC 4.1–4.4): from an `ApiKey`, the Secret it
//! writes (if it exists), the Secrets its required headers read and the time, decide per slot whether to keep, mint, rotate or drop the
//! previous token, and derive the status, the Secret, the restarts, the events and the requeue.
//!
//! No I/O happens here, and randomness comes in through the `mint` function, so every decision
//! is reproducible in tests. A plan with `status: None` and `secret: None` writes nothing: that is
//! what a resync of a healthy key must produce (SPEC 4.1 step 7).

pub mod conditions;
pub mod headers;
pub mod restart;
pub(crate) mod timing;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Resource;

use crate::api::{
    ADOPT_ANNOTATION, APIKEY_LABEL, ApiKey, ApiKeyStatus, MANAGED_BY, MANAGED_BY_LABEL,
    PreviousToken, ROTATE_ANNOTATION, ROTATE_SLOT_ANNOTATION_PREFIX, RestartTarget,
    TOKEN_IDS_ANNOTATION, TokenStatus,
};
use crate::token::{GenerateError, Token, sha256_hex};
use crate::validation::{ValidSlot, ValidSpec, validate};
use conditions::{DISABLED, Desired, EXPIRED, EXPIRING, READY, reason};
use headers::{HEADER_RECHECK, HeaderSecrets, Resolved};
use timing::{add, between, sub, whole_seconds};

/// Longest wait between two reconciles of a healthy key.
pub(crate) const MAX_REQUEUE: Duration = Duration::from_secs(3600);
/// Retry interval while a Secret of the same name blocks the key: the conflicting Secret is not
/// labelled as ours, so its deletion does not wake the controller.
pub(crate) const CONFLICT_REQUEUE: Duration = Duration::from_secs(60);
/// Shortest requeue, so a due time a fraction of a second away is not busy-polled.
const MIN_REQUEUE: Duration = Duration::from_secs(1);

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

/// The Secret to server-side apply. `Debug` shows token ids only (see [`Token`]).
#[derive(Debug, Clone)]
pub struct DesiredSecret {
    /// Secret name.
    pub name: String,
    /// Secret namespace (the ApiKey's).
    pub namespace: String,
    /// Secret type.
    pub type_: String,
    /// Keysmith's labels plus the template's.
    pub labels: BTreeMap<String, String>,
    /// `keysmith.dev/token-ids` plus the template's annotations.
    pub annotations: BTreeMap<String, String>,
    /// Controller reference to the ApiKey.
    pub owner: OwnerReference,
    /// One token per slot, by Secret key.
    pub data: BTreeMap<String, Token>,
}

impl DesiredSecret {
    /// The complete object to apply. The values go into `data` (never `stringData`, whose keys
    /// would survive their removal under server-side apply).
    pub fn to_secret(&self) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(self.labels.clone()),
                annotations: Some(self.annotations.clone()),
                owner_references: Some(vec![self.owner.clone()]),
                ..ObjectMeta::default()
            },
            type_: Some(self.type_.clone()),
            data: Some(
                self.data
                    .iter()
                    .map(|(k, t)| (k.clone(), ByteString(t.expose_secret().as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }
}

/// A rollout restart: set the pod template annotation `keysmith.dev/restarted-for`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    /// The workload.
    pub target: RestartTarget,
    /// The sorted ids of the current tokens, joined by `,`: the same value for the same tokens,
    /// so a second patch for one rotation changes nothing and restarts nothing.
    pub restarted_for: String,
}

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

/// Everything one reconcile should do, in the order the shell does it.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The status to apply; `None`: the observed status is already right.
    pub status: Option<ApiKeyStatus>,
    /// The Secret to apply; `None`: leave it as it is.
    pub secret: Option<DesiredSecret>,
    /// Workloads to restart after the Secret is written.
    pub restarts: Vec<Restart>,
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
        self.status.is_none() && self.secret.is_none() && self.restarts.is_empty()
    }
}

/// Decide what one reconcile of `key` does at `now`. `secret` is the Secret named by the key
/// (owned or not); `header_secrets` are the Secrets [`headers::referenced`] names that exist;
/// `mint` creates a token for a slot (production: [`mint_token`]).
pub fn plan(
    key: &ApiKey,
    secret: Option<&Secret>,
    header_secrets: &HeaderSecrets,
    now: Timestamp,
    mint: &mut dyn FnMut(&ValidSlot) -> Result<Token, GenerateError>,
) -> Result<Plan, GenerateError> {
    let now = whole_seconds(now);
    let observed = key.status.clone().unwrap_or_default();
    let valid = match validate(&key.spec) {
        Ok(valid) => valid,
        Err(invalid) => {
            let ready = Desired::new(READY, false, reason::INVALID_SPEC, invalid.to_string());
            return Ok(blocked(key, &observed, ready, now, None));
        }
    };
    if let Some(message) = secret.and_then(|s| secret_conflict(key, s)) {
        let ready = Desired::new(READY, false, reason::SECRET_CONFLICT, message);
        return Ok(blocked(key, &observed, ready, now, Some(CONFLICT_REQUEUE)));
    }
    let name = key.metadata.name.as_deref().unwrap_or_default();
    let headers = headers::resolve(&key.spec, name, header_secrets);
    Planner::new(key, &valid, &observed, secret, now).run(&headers, mint)
}

/// Mint a token for a slot from the OS CSPRNG.
pub fn mint_token(slot: &ValidSlot) -> Result<Token, GenerateError> {
    Token::generate(&slot.prefix, slot.bytes, slot.encoding)
}

/// Whether `secret` names `key` (by UID) as its controller.
pub(crate) fn controlled_by(secret: &Secret, key: &ApiKey) -> bool {
    let uid = key.metadata.uid.as_deref();
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

/// What revoking a key does to the Secret it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The key created the Secret: delete it.
    Delete,
    /// The key adopted the Secret: remove only what Keysmith wrote, keep the rest.
    Release,
    /// The Secret is missing or not this key's.
    Leave,
}

/// The revocation of `key` for the Secret it names.
pub fn revocation(key: &ApiKey, secret: Option<&Secret>) -> Revocation {
    match secret {
        Some(s) if controlled_by(s, key) && opted_in(s, key) => Revocation::Release,
        Some(s) if controlled_by(s, key) => Revocation::Delete,
        _ => Revocation::Leave,
    }
}

/// Why `key` may not write `secret`, if it may not. Writing a Secret the key does not control
/// acts with the controller's rights, so it takes the Secret's own consent (the adopt
/// annotation, which only someone who may write the Secret can set) besides `spec.secret.adopt`,
/// and never happens to a Secret another controller owns.
fn secret_conflict(key: &ApiKey, secret: &Secret) -> Option<String> {
    if controlled_by(secret, key) {
        return None;
    }
    let name = key.secret_name();
    let owners = secret.metadata.owner_references.iter().flatten();
    if let Some(owner) = owners.into_iter().find(|o| o.controller == Some(true)) {
        return Some(format!(
            "Secret {name} is controlled by {} {}, and Keysmith never adopts a Secret another controller owns; set another spec.secret.name",
            owner.kind, owner.name
        ));
    }
    let opt_in = format!(
        "{ADOPT_ANNOTATION}={}",
        key.metadata.name.as_deref().unwrap_or_default()
    );
    if !key.spec.secret.as_ref().is_some_and(|s| s.adopt) {
        return Some(format!(
            "Secret {name} exists and is not owned by this ApiKey; delete or rename it, or, to take it over, set spec.secret.adopt: true and have someone who may write the Secret annotate it {opt_in}"
        ));
    }
    (!opted_in(secret, key)).then(|| {
        format!(
            "spec.secret.adopt is set, but Secret {name} has not consented: annotate it {opt_in} (kubectl annotate secret {name} {opt_in}); it takes someone who may write the Secret"
        )
    })
}

/// Whether the Secret carries the adopt annotation naming `key`.
fn opted_in(secret: &Secret, key: &ApiKey) -> bool {
    let consent = secret.metadata.annotations.as_ref();
    let consent = consent.and_then(|a| a.get(ADOPT_ANNOTATION));
    key.metadata
        .name
        .as_ref()
        .is_some_and(|n| consent == Some(n))
}

/// The plan of a key that must not touch its Secret (invalid spec, Secret conflict): only the
/// `Ready` condition changes, tokens and the other conditions stay as observed.
fn blocked(
    key: &ApiKey,
    observed: &ApiKeyStatus,
    ready: Desired,
    now: Timestamp,
    requeue_after: Option<Duration>,
) -> Plan {
    let generation = key.metadata.generation;
    let mut desired = strip_usage(observed);
    desired.observed_generation = generation;
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
            reason: if ready.reason == reason::INVALID_SPEC {
                reason::INVALID_SPEC
            } else {
                reason::SECRET_CONFLICT
            },
            note: ready.message.clone(),
        }]
    } else {
        Vec::new()
    };
    Plan {
        status: (desired != strip_usage(observed)).then_some(desired),
        secret: None,
        restarts: Vec::new(),
        events,
        requeue_after,
        slots: Vec::new(),
        rotations: Vec::new(),
    }
}

/// The observed status without what the verifier owns (`lastUsedAt`), which the controller
/// neither writes nor compares.
fn strip_usage(status: &ApiKeyStatus) -> ApiKeyStatus {
    let mut status = status.clone();
    for token in &mut status.tokens {
        token.last_used_at = None;
    }
    status
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

/// One slot's outcome.
struct SlotOutcome {
    action: SlotAction,
    status: TokenStatus,
    token: Option<Token>,
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
        mint: &mut dyn FnMut(&ValidSlot) -> Result<Token, GenerateError>,
    ) -> Result<Plan, GenerateError> {
        let mut outcomes = Vec::new();
        for slot in &self.valid.slots {
            if let Some(outcome) = self.slot(slot, mint)? {
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

        let desired_conditions = self.conditions(&tokens, minted, rotated, &headers.missing);
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
        };

        let mut events = self.slot_events(&outcomes);
        events.extend(self.condition_events(&desired.conditions));
        let mut requeue_after = self.requeue(&desired.tokens);
        if !headers::referenced(&self.key.spec).is_empty() {
            requeue_after = requeue_after.min(HEADER_RECHECK);
        }
        let observed = strip_usage(self.observed);
        Ok(Plan {
            status: (desired != observed).then_some(desired),
            secret,
            restarts,
            events,
            requeue_after: Some(requeue_after),
            slots: outcomes
                .into_iter()
                .map(|(slot, o)| (slot.name.clone(), o.action))
                .collect(),
            rotations,
        })
    }

    /// The decision for one slot; `None` when the slot has no token and gets none (expired key).
    fn slot(
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
    fn next_due(
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
    fn rotations(&self, tokens: &[TokenStatus]) -> Vec<(String, Timestamp)> {
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

    fn earliest_expiry(&self, tokens: &[TokenStatus]) -> Option<Timestamp> {
        tokens
            .iter()
            .filter_map(|t| t.expires_at.as_ref().map(|e| e.0))
            .chain(self.key_end)
            .min()
    }

    fn desired_secret(&self, outcomes: &[(&ValidSlot, SlotOutcome)]) -> Option<DesiredSecret> {
        if self.key_expired {
            return None;
        }
        let data: BTreeMap<String, Token> = outcomes
            .iter()
            .filter_map(|(slot, o)| Some((slot.secret_key.clone(), o.token.clone()?)))
            .collect();
        if data.is_empty() {
            return None;
        }
        let spec = self.key.spec.secret.clone().unwrap_or_default();
        let template = spec.template.unwrap_or_default();
        let name = self.key.metadata.name.clone().unwrap_or_default();
        let mut labels = template.labels;
        labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
        labels.insert(APIKEY_LABEL.to_owned(), name);
        let mut annotations = template.annotations;
        let ids: Vec<&str> = outcomes.iter().map(|(_, o)| o.status.id.as_str()).collect();
        annotations.insert(TOKEN_IDS_ANNOTATION.to_owned(), ids.join(","));
        Some(DesiredSecret {
            name: self.key.secret_name(),
            namespace: self.key.metadata.namespace.clone().unwrap_or_default(),
            type_: spec.type_.unwrap_or_else(|| "Opaque".to_owned()),
            labels,
            annotations,
            owner: self.key.controller_owner_ref(&())?,
            data,
        })
    }

    /// Whether the observed Secret already is what `desired` describes. Extra labels,
    /// annotations and data keys written by others are not ours to judge; a slot that was removed
    /// changes `keysmith.dev/token-ids`, so its key is still dropped by the next apply.
    fn secret_matches(&self, desired: &DesiredSecret) -> bool {
        let Some(secret) = self.secret else {
            return false;
        };
        let meta = &secret.metadata;
        let contains = |have: &Option<BTreeMap<String, String>>,
                        want: &BTreeMap<String, String>| {
            want.iter()
                .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
        };
        let data_matches = desired.data.iter().all(|(k, t)| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|b| b.0.as_slice())
                == Some(t.expose_secret().as_bytes())
        });
        contains(&meta.labels, &desired.labels)
            && contains(&meta.annotations, &desired.annotations)
            && secret.type_.as_deref().unwrap_or("Opaque") == desired.type_
            && controlled_by(secret, self.key)
            && data_matches
    }

    fn restarts(&self, tokens: &[TokenStatus]) -> Vec<Restart> {
        let mut ids: Vec<&str> = tokens.iter().map(|t| t.id.as_str()).collect();
        ids.sort_unstable();
        let restarted_for = ids.join(",");
        let targets = self
            .key
            .spec
            .secret
            .as_ref()
            .map(|s| s.restart_targets.clone())
            .unwrap_or_default();
        targets
            .into_iter()
            .map(|target| Restart {
                target,
                restarted_for: restarted_for.clone(),
            })
            .collect()
    }

    fn conditions(
        &self,
        tokens: &[TokenStatus],
        minted: bool,
        rotated: bool,
        missing_headers: &[String],
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
                |m| Desired::new(EXPIRING, true, "ExpiryApproaching", m),
            ),
            expired.map_or_else(
                || Desired::off(EXPIRED),
                |m| Desired::new(EXPIRED, true, reason::EXPIRED, m),
            ),
            if self.key.spec.disabled {
                Desired::new(DISABLED, true, reason::DISABLED, "spec.disabled is true")
            } else {
                Desired::off(DISABLED)
            },
        ]
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

    fn key_warning_start(&self, end: Timestamp) -> Option<Timestamp> {
        let created = self.key.metadata.creation_timestamp.as_ref()?.0;
        Some(sub(end, timing::warning_window(between(created, end))))
    }

    /// Start of a token's warning window, when no renewal will replace it before it expires.
    fn token_warning_start(&self, token: &TokenStatus) -> Option<Timestamp> {
        let expires = token.expires_at.as_ref()?.0;
        let slot = self.valid.slots.iter().find(|s| s.name == token.name)?;
        if slot.renew_before.is_some() && !self.suspended {
            return None;
        }
        let lifetime = between(token.issued_at.0, expires);
        Some(sub(expires, timing::warning_window(lifetime)))
    }

    fn slot_events(&self, outcomes: &[(&ValidSlot, SlotOutcome)]) -> Vec<PlannedEvent> {
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
        events
    }

    /// `Expiring` and `Expired` events, on the transition to True only.
    fn condition_events(
        &self,
        desired: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    ) -> Vec<PlannedEvent> {
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
            .collect()
    }

    /// Time to the next moment anything changes by itself, at most [`MAX_REQUEUE`].
    fn requeue(&self, tokens: &[TokenStatus]) -> Duration {
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

impl fmt::Display for SlotAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mint_label() {
            Some(label) => write!(f, "mint ({label})"),
            None if *self == SlotAction::DropPrevious => f.write_str("drop previous"),
            None => f.write_str("keep"),
        }
    }
}

#[cfg(test)]
mod tests;
