//! What the verifier knows about one `ApiKey`: everything a decision needs except the tokens,
//! built once per watch event and shared (`Arc`) by every token of the key.
//!
//! A spec that fails validation is served from the last accepted policy in status (see
//! [`crate::served`]): a rejected edit changes no answer. A key without one (never accepted) is
//! still indexed, because its tokens are in a Secret someone mounts and dropping them would turn
//! a typo into an outage. It is indexed *fail closed*: no grants (any request with an action is
//! FORBIDDEN), IP allow-list entries that do not parse are left out while the list still
//! restricts (an all-bad list admits nobody), and an unparsable `expiresAt` counts as already
//! passed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use jiff::Timestamp;

use crate::api::{ApiKey, LeakResponse, Owner, RequiredHeader, RequiredHeaderStatus};
use crate::grants::{CompiledGrant, CompiledGrants};
use crate::served::served;
use crate::validation::InvalidSpec;

use super::index::TokenHash;
use super::intern::Interner;

/// One ApiKey, as the decision reads it.
#[derive(Debug)]
pub struct KeyInfo {
    /// Namespace of the ApiKey.
    pub namespace: String,
    /// Name of the ApiKey.
    pub name: String,
    /// `<namespace>/<name>`: what `own` compares `context.owner` with and `X-Keysmith-Key` says.
    pub identity: String,
    /// `spec.environment`.
    pub environment: Option<String>,
    /// `spec.disabled`.
    pub disabled: bool,
    /// `spec.leakResponse`, with its default applied.
    pub leak_response: LeakResponse,
    /// `spec.expiresAt`: nothing verifies from this instant on.
    pub expires_at: Option<Timestamp>,
    /// `None`: any client address. `Some`: the address must fall in one of these (none: nobody).
    pub ip_allow_list: Option<Box<[IpNet]>>,
    /// Headers the request must carry.
    pub required_headers: Box<[HeaderRule]>,
    /// Token slots in spec order; index entries refer to them by position.
    pub slots: Box<[SlotInfo]>,
    /// `spec.owner`: the user a personal key acts as. Boxed: one pointer for the many keys
    /// that are not personal.
    pub owner: Option<Box<OwnerInfo>>,
}

/// The owner of a personal key, as answers report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerInfo {
    /// `spec.owner.username`.
    pub username: Box<str>,
    /// `spec.owner.groups`, in spec order.
    pub groups: Box<[Box<str>]>,
}

impl From<&Owner> for OwnerInfo {
    fn from(owner: &Owner) -> Self {
        OwnerInfo {
            username: owner.username.as_str().into(),
            groups: owner.groups.iter().map(|g| g.as_str().into()).collect(),
        }
    }
}

/// One token slot.
#[derive(Debug)]
pub struct SlotInfo {
    /// Slot name (`key.token` in answers, `X-Keysmith-Token`).
    pub name: Box<str>,
    /// Returned with every VALID answer.
    pub metadata: Metadata,
    /// The slot's effective grants (shared by every slot with the same grants); empty for an
    /// invalid spec.
    pub grants: Arc<CompiledGrants>,
}

/// A slot's metadata: a sorted boxed slice rather than a `BTreeMap`, whose smallest node holds
/// room for eleven entries (over 500 bytes) when keys usually carry one or two.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Metadata(Box<[(Box<str>, Box<str>)]>);

impl Metadata {
    /// The entries, sorted by key.
    pub fn entries(&self) -> &[(Box<str>, Box<str>)] {
        &self.0
    }
}

impl From<&BTreeMap<String, String>> for Metadata {
    fn from(map: &BTreeMap<String, String>) -> Self {
        Metadata(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
        )
    }
}

/// Compiled grant sets shared between slots whose grants are the same, and grants shared between
/// sets that differ in others: fleets stamped from one template carry one copy instead of one per
/// key, and keys with a grant of their own share the rest.
#[derive(Default)]
pub struct GrantInterner {
    grants: Interner<CompiledGrant>,
    sets: Interner<CompiledGrants>,
}

impl GrantInterner {
    /// The shared copy of `compiled`.
    fn intern(&self, compiled: CompiledGrants) -> Arc<CompiledGrants> {
        let compiled = compiled.share_grants(|grant| self.grants.share(grant));
        self.sets.share(Arc::new(compiled))
    }
}

/// A header the request must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRule {
    /// Header name, lower-cased (HTTP header names are case-insensitive).
    pub name: String,
    /// Where the expected value comes from.
    pub value: ExpectedValue,
}

/// The value a required header must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedValue {
    /// Written in the ApiKey.
    Literal(String),
    /// Taken from a Secret: the SHA-256 of the value, as the controller published it in
    /// `status.requiredHeaders`. `None` (not published yet, or the Secret or key is missing)
    /// matches nothing: fail closed.
    Sha256(Option<[u8; 32]>),
}

impl KeyInfo {
    /// Read an ApiKey, sharing grant sets through `interner`. The second value is the validation
    /// error when the spec is invalid and was indexed fail closed (see the module documentation).
    pub fn from_apikey(
        apikey: &ApiKey,
        interner: &GrantInterner,
    ) -> (KeyInfo, Option<InvalidSpec>) {
        let namespace = apikey.metadata.namespace.clone().unwrap_or_default();
        let name = apikey.metadata.name.clone().unwrap_or_default();
        let published = apikey
            .status
            .as_ref()
            .map(|s| s.required_headers.as_slice())
            .unwrap_or_default();
        let (served, error) = match served(apikey) {
            Ok(served) => (Ok((served.spec, served.valid)), served.rejected),
            Err(invalid) => (Err(&apikey.spec), Some(invalid)),
        };
        let spec = match &served {
            Ok((spec, _)) | Err(spec) => *spec,
        };
        let listed = spec
            .restrictions
            .as_ref()
            .map(|r| r.ip_allow_list.as_slice())
            .unwrap_or_default();
        let required_headers = spec
            .restrictions
            .as_ref()
            .map(|r| {
                r.required_headers
                    .iter()
                    .map(|h| header_rule(h, published))
                    .collect()
            })
            .unwrap_or_default();
        let metadata = |slot: &str| {
            spec.tokens
                .iter()
                .find(|t| t.name == slot)
                .map(|t| Metadata::from(&t.metadata))
        };
        let (slots, ip_allow_list, expires_at) = match served {
            Ok((_, valid)) => {
                let slots = valid
                    .slots
                    .into_iter()
                    .map(|s| SlotInfo {
                        metadata: metadata(&s.name).unwrap_or_default(),
                        grants: interner.intern(s.grants),
                        name: s.name.into(),
                    })
                    .collect();
                let ips = (!listed.is_empty()).then(|| valid.ip_allow_list.into());
                (slots, ips, valid.expires_at)
            }
            Err(spec) => {
                let slots = spec
                    .tokens
                    .iter()
                    .map(|t| SlotInfo {
                        name: t.name.as_str().into(),
                        metadata: Metadata::from(&t.metadata),
                        grants: Arc::default(),
                    })
                    .collect();
                let ips = (!listed.is_empty())
                    .then(|| listed.iter().filter_map(|c| parse_cidr(c)).collect());
                let expires_at = spec
                    .expires_at
                    .as_deref()
                    .map(|v| v.parse().unwrap_or(Timestamp::MIN));
                (slots, ips, expires_at)
            }
        };
        let info = KeyInfo {
            identity: format!("{namespace}/{name}"),
            namespace,
            name,
            environment: spec.environment.clone(),
            // Suspending only takes access away, so it applies from a rejected spec too.
            disabled: apikey.spec.disabled,
            // Like `disabled`: what a leak report does is never held back by a rejected spec.
            leak_response: apikey.spec.leak_response.unwrap_or_default(),
            expires_at,
            ip_allow_list,
            required_headers,
            slots,
            // From the spec, never the served policy in status: the owner is immutable and was
            // checked against its creator at admission; status is not.
            owner: apikey
                .spec
                .owner
                .as_ref()
                .filter(|o| crate::personal::owner_errors(Some(o)).is_empty())
                .map(|o| Box::new(o.into())),
        };
        (info, error)
    }

    /// Position of the slot named `name`.
    pub(crate) fn slot_index(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| &*s.name == name)
    }
}

fn header_rule(h: &RequiredHeader, published: &[RequiredHeaderStatus]) -> HeaderRule {
    let value = match (&h.value, &h.value_from) {
        // Only a hash read from the key the spec names now: after the spec moves to another
        // Secret, the old value stops matching before the controller has read the new one.
        (_, Some(from)) => ExpectedValue::Sha256(
            published
                .iter()
                .find(|p| p.name == h.name && p.secret_key_ref == from.secret_key_ref)
                .and_then(|p| TokenHash::from_hex(&p.sha256))
                .map(|hash| hash.0),
        ),
        // Neither is invalid; an empty literal is then required, which is as close to "closed"
        // as a header rule gets without a value to compare.
        (value, None) => ExpectedValue::Literal(value.clone().unwrap_or_default()),
    };
    HeaderRule {
        name: h.name.to_ascii_lowercase(),
        value,
    }
}

/// The same rule as validation: a CIDR, or a bare address meaning that host.
fn parse_cidr(value: &str) -> Option<IpNet> {
    value
        .parse::<IpNet>()
        .ok()
        .or_else(|| value.parse::<IpAddr>().ok().map(IpNet::from))
}
