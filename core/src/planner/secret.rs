//! The Secret a plan writes, and whose Secret it is: the desired object, whether the observed one
//! already matches it, whether the key may write it at all (ownership and adoption), and what
//! revoking the key does to it.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::api::{
    ADOPT_ANNOTATION, APIKEY_LABEL, ApiKey, MANAGED_BY, MANAGED_BY_LABEL, TOKEN_IDS_ANNOTATION,
};
use crate::token::Token;
use crate::validation::ValidSlot;

use super::Planner;
use super::slot::SlotOutcome;

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
    /// Entries that hold no token, by Secret key: agentgateway's `sha256:` hashes. They reveal
    /// nothing that verifies, so they are written and shown as they are.
    pub hashed: BTreeMap<String, String>,
    /// The Secret of this name as observed, which the write must still find; `None`: none was
    /// observed, so the write creates it.
    pub observed: Option<Precondition>,
}

/// The object a write or a deletion was planned from. It goes ahead only if the Secret is still
/// that object at that version, so a Secret deleted and created again by someone else, or
/// changed, after the ownership check is never written or deleted on the strength of that check
/// (the API server answers 409, and the key is planned again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Precondition {
    /// The observed object's uid.
    pub uid: Option<String>,
    /// The observed object's resourceVersion.
    pub resource_version: Option<String>,
}

impl Precondition {
    /// The precondition that `secret` is still as observed.
    pub fn of(secret: &Secret) -> Precondition {
        Precondition {
            uid: secret.metadata.uid.clone(),
            resource_version: secret.metadata.resource_version.clone(),
        }
    }
}

/// A Secret to delete, with the precondition that it is still the one observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// Secret name.
    pub name: String,
    /// The Secret as observed.
    pub observed: Precondition,
}

impl Deletion {
    /// The deletion of `secret` as observed.
    pub fn of(secret: &Secret) -> Deletion {
        Deletion {
            name: secret.metadata.name.clone().unwrap_or_default(),
            observed: Precondition::of(secret),
        }
    }
}

impl DesiredSecret {
    /// The complete object to apply. The values go into `data` (never `stringData`, whose keys
    /// would survive their removal under server-side apply). The observed uid and
    /// resourceVersion go into its metadata: preconditions of an apply or a replace.
    pub fn to_secret(&self) -> Secret {
        let observed = self.observed.clone().unwrap_or_default();
        Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                uid: observed.uid,
                resource_version: observed.resource_version,
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
                    .chain(
                        self.hashed
                            .iter()
                            .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec()))),
                    )
                    .collect(),
            ),
            ..Secret::default()
        }
    }
}

/// Whether `secret` names `key` (by UID) as its controller.
pub(super) fn controlled_by(secret: &Secret, key: &ApiKey) -> bool {
    controls(key, &secret.metadata)
}

/// Whether the object of `meta` has `key` as its controller (ownerReference by uid).
pub(super) fn controls(key: &ApiKey, meta: &ObjectMeta) -> bool {
    let uid = key.metadata.uid.as_deref();
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

/// What revoking a key does to the Secret it names, if that Secret is still as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The key created the Secret: delete it.
    Delete(Deletion),
    /// The key adopted the Secret: remove only what Keysmith wrote, keep the rest.
    Release(Precondition),
    /// The Secret is missing or not this key's.
    Leave,
}

/// The revocation of `key` for the Secret it names.
pub fn revocation(key: &ApiKey, secret: Option<&Secret>) -> Revocation {
    match secret {
        Some(s) if controlled_by(s, key) && opted_in(s, key) => {
            Revocation::Release(Precondition::of(s))
        }
        Some(s) if controlled_by(s, key) => Revocation::Delete(Deletion::of(s)),
        _ => Revocation::Leave,
    }
}

/// Why `key` may not write `secret`, if it may not. Writing a Secret the key does not control
/// acts with the controller's rights, so it takes the Secret's own consent (the adopt
/// annotation, which only someone who may write the Secret can set) besides `spec.secret.adopt`,
/// and never happens to a Secret another controller owns.
pub(super) fn secret_conflict(key: &ApiKey, secret: &Secret) -> Option<String> {
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

impl Planner<'_> {
    /// The Secret holding each slot's token; `None` once the key has expired or while no slot
    /// has a token.
    pub(super) fn desired_secret(
        &self,
        outcomes: &[(&ValidSlot, SlotOutcome)],
    ) -> Option<DesiredSecret> {
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
            hashed: BTreeMap::new(),
            observed: self.secret.map(Precondition::of),
        })
    }

    /// Whether the observed Secret already is what `desired` describes. Extra labels,
    /// annotations and data keys written by others are not ours to judge; a slot that was removed
    /// changes `keysmith.dev/token-ids`, so its key is still dropped by the next apply.
    pub(super) fn secret_matches(&self, desired: &DesiredSecret) -> bool {
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
}
