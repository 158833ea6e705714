//! Publishing a key's tokens for gateways that check keys themselves (`spec.publish`): the
//! Secrets in the shape each gateway reads, which of the key's earlier ones to delete, and the
//! KongConsumer credential list to keep in step.
//!
//! Published values follow the key's status, not the other way round: every current token that
//! still verifies, and every replaced token inside its overlap window, is published; nothing is
//! once the key is disabled or past its `expiresAt`. agentgateway takes the SHA-256 the status
//! holds, as it is. For the others, token plaintext is found by its SHA-256 among the values
//! Keysmith already holds: the Secret the plan writes, the key's Secret as observed, and the
//! key's published Secrets. That is also how a replaced token stays published through its
//! overlap window after it left the key's Secret.
//!
//! Keysmith writes only Secrets this key controls (a name taken by any other Secret is a
//! conflict, never overwritten), and a KongConsumer only when its annotation
//! [`KONG_CONSUMER_ANNOTATION`] names the key, all in the key's namespace.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use crate::api::{
    APIKEY_LABEL, ApiKey, KONG_CONSUMER_ANNOTATION, KONG_CONSUMER_OF_SECRET_ANNOTATION,
    KONG_CREDENTIAL_LABEL, KONG_KEY_AUTH, LeakResponse, MANAGED_BY, MANAGED_BY_LABEL,
    PUBLISHED_FOR_AGENTGATEWAY, PUBLISHED_FOR_ENVOY_GATEWAY, PUBLISHED_FOR_KONG,
    PUBLISHED_FOR_LABEL, TOKEN_IDS_ANNOTATION, TokenStatus,
};
use crate::token::{Token, sha256_hex};
use crate::validation::validate;

use super::Plan;
use super::secret::{Deletion, DesiredSecret, Precondition, controlled_by, secret_conflict};
use super::timing::whole_seconds;

/// The field of a Kong key-auth credential Secret that holds the key.
pub const KONG_KEY_FIELD: &str = "key";
/// Suffix of an Envoy Gateway client id and of a Kong credential Secret's name for a replaced
/// token during its overlap window; the ones in `earlier` add `-2`, `-3`, `-4`.
pub const PREVIOUS_SUFFIX: &str = "previous";
/// How agentgateway's `keyHash` names the hash function before the lower-case hex digest.
pub const AGENTGATEWAY_HASH_PREFIX: &str = "sha256:";
/// Longest object name Kubernetes accepts.
pub(super) const MAX_NAME_LEN: usize = 253;

/// What publishing a key's tokens writes.
#[derive(Debug, Clone, Default)]
pub struct Publication {
    /// Published Secrets to server-side apply: those missing or not yet as desired. A Secret the
    /// key has not published before is created only if no Secret of that name exists.
    pub secrets: Vec<DesiredSecret>,
    /// This key's published Secrets that are no longer wanted (a slot's previous token left its
    /// overlap window, a slot or a gateway left the spec, a name from before the names were made
    /// unambiguous): delete them after the consumer's list no longer names them.
    pub delete: Vec<Deletion>,
    /// The KongConsumers to keep in step: the one `spec.publish` names first, then any the key's
    /// credential Secrets were published to before (withdrawn: their entries leave the list).
    pub kong: Vec<KongCredentials>,
    /// Names the key may not publish under, each with what to do about it.
    pub conflicts: Vec<String>,
    /// For a credential Secret to write under a new name, the key's Secret under an old name
    /// that holds the same token (names from before they were made unambiguous): if the new name
    /// is refused, the old one stays published instead of leaving the gateway.
    pub fallbacks: BTreeMap<String, String>,
}

impl Publication {
    /// Whether it writes nothing.
    pub fn is_quiet(&self) -> bool {
        self.secrets.is_empty() && self.delete.is_empty() && self.kong.is_empty()
    }

    /// Give up publishing under `name` (a Secret of that name is not the key's): nothing is
    /// written there, no consumer lists it, and `problem` is reported. A Secret of the key's
    /// holding the same token under an old name is kept and listed in its place.
    pub fn refuse(&mut self, name: &str, problem: String) {
        self.secrets.retain(|d| d.name != name);
        let fallback = self.fallbacks.remove(name);
        for kong in &mut self.kong {
            if let Some(at) = kong.wanted.iter().position(|w| w == name) {
                kong.wanted.remove(at);
                kong.wanted.splice(at..at, fallback.clone());
            }
        }
        if let Some(old) = fallback {
            self.delete.retain(|d| d.name != old);
        }
        self.conflicts.push(problem);
    }
}

/// Why a Secret named `name` that the key does not own cannot be published to.
pub fn not_owned(name: &str) -> String {
    format!(
        "spec.publish: Secret {name} exists and is not owned by this ApiKey; Keysmith never overwrites it: delete it or publish under another name"
    )
}

/// This key's part of a KongConsumer's `credentials` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KongCredentials {
    /// KongConsumer name, in the key's namespace.
    pub consumer: String,
    /// The credential Secrets of this key the consumer should list, in slot order.
    pub wanted: Vec<String>,
    /// Every credential name this key wrote or may write, so stale ones leave the list.
    pub ours: BTreeSet<String>,
    /// The key no longer publishes to this consumer: its entries only leave the list, and a
    /// consumer that is gone or no longer consents has nothing of the key's left to remove.
    pub withdrawn: bool,
}

impl KongCredentials {
    /// The consumer's list with this key's part brought up to date: entries of other writers
    /// stay where they are, this key's stale ones go, its wanted ones follow.
    pub fn merged(&self, current: &[String]) -> Vec<String> {
        let mut merged: Vec<String> = current
            .iter()
            .filter(|c| !self.ours.contains(*c))
            .cloned()
            .collect();
        merged.extend(self.wanted.iter().cloned());
        merged
    }

    /// The consumer's list without any of this key's entries (revocation).
    pub fn removed(&self, current: &[String]) -> Vec<String> {
        current
            .iter()
            .filter(|c| !self.ours.contains(*c))
            .cloned()
            .collect()
    }
}

/// Whether a KongConsumer consents to hold `key`'s credentials: its annotation
/// [`KONG_CONSUMER_ANNOTATION`] lists the key's name.
pub fn consents(consumer: &ObjectMeta, key: &str) -> bool {
    consumer
        .annotations
        .as_ref()
        .and_then(|a| a.get(KONG_CONSUMER_ANNOTATION))
        .is_some_and(|names| names.split(',').any(|n| n.trim() == key))
}

// Published names and ids must tell every (namespace, key, slot, token) apart, or one key could
// publish under another's name (N9). Namespaces and slots are DNS labels (no `.`), ApiKey names
// DNS subdomains (`.` allowed), and none has a `_`: so a `.` before and after the key's name
// delimits it, and a `_` starts a replaced token's suffix.

/// The Envoy Gateway client id of a slot's token: `<namespace>.<apikey>.<slot>` for the current
/// one, `_previous`, `_previous-2`, ... appended for replaced ones (`suffix`).
pub fn envoy_client_id(namespace: &str, apikey: &str, slot: &str, suffix: Option<&str>) -> String {
    match suffix {
        None => format!("{namespace}.{apikey}.{slot}"),
        Some(suffix) => format!("{namespace}.{apikey}.{slot}_{suffix}"),
    }
}

/// The suffix of a slot's replaced token by its place: `previous` for `status.tokens[].previous`,
/// then `previous-2` for `earlier[0]`, and so on.
pub fn replaced_suffix(rank: usize) -> String {
    match rank {
        0 => PREVIOUS_SUFFIX.to_owned(),
        n => format!("{PREVIOUS_SUFFIX}-{}", n + 1),
    }
}

/// The name of a Kong credential Secret of a slot's token: `<apikey>.<slot>.kong` for the current
/// one, `-previous`, `-previous-2`, ... appended for replaced ones (`suffix`). The last
/// `.`-separated part is `kong...`, the one before it the slot, the rest the key.
pub fn kong_secret_name(apikey: &str, slot: &str, suffix: Option<&str>) -> String {
    match suffix {
        None => format!("{apikey}.{slot}.kong"),
        Some(suffix) => format!("{apikey}.{slot}.kong-{suffix}"),
    }
}

/// The KongConsumers of `key`: the one `spec.publish` names, then those its credential Secrets
/// among `published` record ([`KONG_CONSUMER_OF_SECRET_ANNOTATION`]), each with every credential
/// Secret of the key as its own entries and nothing wanted yet. Revocation uses them to take the
/// key's entries out.
pub fn kong_parts(key: &ApiKey, published: &[Secret]) -> Vec<KongCredentials> {
    let credentials: Vec<&Secret> = published
        .iter()
        .filter(|s| is_published_for(s, PUBLISHED_FOR_KONG) && controlled_by(s, key))
        .collect();
    let ours: BTreeSet<String> = credentials
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    let named = key
        .spec
        .publish
        .iter()
        .find_map(|p| p.kong.as_ref())
        .map(|k| k.consumer.clone());
    let recorded = credentials.iter().filter_map(|s| {
        s.metadata
            .annotations
            .as_ref()?
            .get(KONG_CONSUMER_OF_SECRET_ANNOTATION)
            .cloned()
    });
    let mut parts: Vec<KongCredentials> = Vec::new();
    for consumer in named.iter().cloned().chain(recorded) {
        if parts.iter().all(|p| p.consumer != consumer) {
            parts.push(KongCredentials {
                withdrawn: named.as_ref() != Some(&consumer),
                consumer,
                wanted: Vec::new(),
                ours: ours.clone(),
            });
        }
    }
    parts
}

/// The key's published Secrets among `published` (revocation deletes them).
pub fn owned(key: &ApiKey, published: &[Secret]) -> Vec<Deletion> {
    published
        .iter()
        .filter(|s| {
            controlled_by(s, key)
                && s.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(PUBLISHED_FOR_LABEL))
        })
        .map(Deletion::of)
        .collect()
}

/// What publishing `key`'s tokens writes after `plan`. `secret` is the key's Secret as observed,
/// `published` its published Secrets as observed (those labelled with the key's name and
/// [`PUBLISHED_FOR_LABEL`]). A key whose spec is invalid or whose Secret is not its own changes
/// nothing: its plan writes nothing either.
pub fn publication(
    key: &ApiKey,
    plan: &Plan,
    secret: Option<&Secret>,
    published: &[Secret],
    now: Timestamp,
) -> Publication {
    let Ok(valid) = validate(&key.spec) else {
        return Publication::default();
    };
    if secret.is_some_and(|s| secret_conflict(key, s).is_some()) {
        return Publication::default();
    }
    let now = whole_seconds(now);
    let name = key.metadata.name.clone().unwrap_or_default();
    let namespace = key.metadata.namespace.clone().unwrap_or_default();
    let Some(owner) = key.controller_owner_ref(&()) else {
        return Publication::default();
    };
    let expired = valid
        .expires_at
        .is_some_and(|end| now >= whole_seconds(end));
    let active = !key.spec.disabled && !expired;
    let tokens = plan
        .status
        .as_ref()
        .or(key.status.as_ref())
        .map(|s| s.tokens.as_slice())
        .unwrap_or_default();
    let hashes: Vec<Live> = if active {
        tokens
            .iter()
            .flat_map(|t| live(t, now, key.spec.leak_response.unwrap_or_default()))
            .collect()
    } else {
        Vec::new()
    };
    // (slot, suffix, token) for every token a gateway should accept now whose value Keysmith
    // holds.
    let pool = Pool::new(key, plan, secret, published);
    let live: Vec<(&str, Option<String>, Token)> = hashes
        .iter()
        .filter_map(|l| Some((l.slot, l.suffix.clone(), pool.find(l.sha256)?)))
        .collect();

    let mut desired = Vec::new();
    for entry in &key.spec.publish {
        if let Some(secret_name) = entry.envoy_gateway_secret(&name) {
            let data = live
                .iter()
                .map(|(slot, suffix, token)| {
                    let id = envoy_client_id(&namespace, &name, slot, suffix.as_deref());
                    (id, token.clone())
                })
                .collect();
            desired.push(published_secret(
                key,
                &owner,
                secret_name,
                PUBLISHED_FOR_ENVOY_GATEWAY,
                data,
                published,
            ));
        }
        if let Some(secret_name) = entry.agentgateway_secret(&name) {
            let mut secret = published_secret(
                key,
                &owner,
                secret_name,
                PUBLISHED_FOR_AGENTGATEWAY,
                BTreeMap::new(),
                published,
            );
            let mut ids = Vec::new();
            for l in &hashes {
                let client = envoy_client_id(&namespace, &name, l.slot, l.suffix.as_deref());
                let value = agentgateway_entry(key, &client, l);
                secret.hashed.insert(client, value);
                ids.push(l.id);
            }
            secret
                .annotations
                .insert(TOKEN_IDS_ANNOTATION.to_owned(), ids.join(","));
            desired.push(secret);
        }
    }
    let mut kong = kong_parts(key, published);
    if let Some(kong) = kong.iter_mut().find(|k| !k.withdrawn) {
        for (slot, suffix, token) in &live {
            let secret_name = kong_secret_name(&name, slot, suffix.as_deref());
            let data = BTreeMap::from([(KONG_KEY_FIELD.to_owned(), token.clone())]);
            let mut secret = published_secret(
                key,
                &owner,
                secret_name,
                PUBLISHED_FOR_KONG,
                data,
                published,
            );
            secret
                .labels
                .insert(KONG_CREDENTIAL_LABEL.to_owned(), KONG_KEY_AUTH.to_owned());
            secret.annotations.insert(
                KONG_CONSUMER_OF_SECRET_ANNOTATION.to_owned(),
                kong.consumer.clone(),
            );
            kong.wanted.push(secret.name.clone());
            desired.push(secret);
        }
    }

    let mut refused = Vec::new();
    let mut names = BTreeSet::from([key.secret_name()]);
    for d in &desired {
        let problem = if d.name.len() > MAX_NAME_LEN {
            Some(format!(
                "spec.publish: the Secret name {} is longer than {MAX_NAME_LEN} characters; shorten the ApiKey or slot name, or set envoyGateway.secretName or agentgateway.secretName",
                d.name
            ))
        } else if !names.insert(d.name.clone()) {
            Some(format!(
                "spec.publish: the Secret name {} is already the key's own Secret or another published Secret; set another envoyGateway.secretName, agentgateway.secretName or spec.secret.name",
                d.name
            ))
        } else {
            published
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(d.name.as_str()))
                .filter(|s| !controlled_by(s, key))
                .map(|_| not_owned(&d.name))
        };
        refused.extend(problem.map(|p| (d.name.clone(), p)));
    }
    let delete: Vec<Deletion> = owned(key, published)
        .into_iter()
        .filter(|old| !desired.iter().any(|d| d.name == old.name))
        .collect();
    let fallbacks = fallbacks(&desired, &delete, published);
    let mut publication = Publication {
        secrets: desired,
        delete,
        kong,
        fallbacks,
        ..Publication::default()
    };
    for (name, problem) in refused {
        publication.refuse(&name, problem);
    }
    let wanted: Vec<String> = publication
        .kong
        .iter()
        .flat_map(|k| k.wanted.clone())
        .collect();
    for kong in &mut publication.kong {
        kong.ours.extend(wanted.iter().cloned());
    }
    publication
        .secrets
        .retain(|d| !published.iter().any(|s| matches(s, d)));
    publication
}

/// For each Kong credential in `desired`, the Secret among those to `delete` that holds the same
/// token (see [`Publication::fallbacks`]).
fn fallbacks(
    desired: &[DesiredSecret],
    delete: &[Deletion],
    published: &[Secret],
) -> BTreeMap<String, String> {
    let key_of = |s: &Secret| s.data.as_ref()?.get(KONG_KEY_FIELD).map(|v| v.0.clone());
    desired
        .iter()
        .filter_map(|d| {
            let token = d.data.get(KONG_KEY_FIELD)?.expose_secret().as_bytes();
            let old = published.iter().find(|s| {
                is_published_for(s, PUBLISHED_FOR_KONG)
                    && delete
                        .iter()
                        .any(|x| s.metadata.name.as_ref() == Some(&x.name))
                    && key_of(s).as_deref() == Some(token)
            })?;
            Some((d.name.clone(), old.metadata.name.clone()?))
        })
        .collect()
}

/// A token a gateway should accept now, as the key's status shows it.
struct Live<'a> {
    slot: &'a str,
    /// `None` for the slot's current token, else the replaced token's suffix.
    suffix: Option<String>,
    id: &'a str,
    sha256: &'a str,
}

/// The tokens of one slot a gateway should accept at `now`: the current one until it expires
/// (or a leak report revokes it), unsuffixed, and each replaced one inside its overlap window,
/// suffixed by its place (`previous`, then `previous-2` for `earlier[0]`, ...).
fn live(status: &TokenStatus, now: Timestamp, response: LeakResponse) -> Vec<Live<'_>> {
    let current_valid = status.expires_at.as_ref().is_none_or(|e| e.0 > now)
        && !super::leak_refused(status.leak.as_ref(), response);
    let current = current_valid.then_some(Live {
        slot: &status.name,
        suffix: None,
        id: &status.id,
        sha256: &status.sha256,
    });
    let replaced = status
        .previous
        .iter()
        .chain(&status.earlier)
        .enumerate()
        .filter(|(_, p)| p.valid_until.0 > now)
        .map(|(rank, p)| Live {
            slot: &status.name,
            suffix: Some(replaced_suffix(rank)),
            id: &p.id,
            sha256: &p.sha256,
        });
    current.into_iter().chain(replaced).collect()
}

/// The value of an agentgateway entry, in the shape its `apiKeyAuthentication` reads. Fields
/// serialize in declaration order, so the value is the same whatever serde_json features are on.
#[derive(serde::Serialize)]
struct AgentgatewayEntry<'a> {
    /// `sha256:` and the lower-case hex SHA-256 of the token.
    #[serde(rename = "keyHash")]
    key_hash: String,
    metadata: AgentgatewayMetadata<'a>,
}

/// Whose token an agentgateway entry is; its policies' CEL sees each field as `apiKey.<field>`.
/// Slot metadata is left out: at up to 70 KB a slot, five entries a slot could pass the
/// Secret's 1 MiB.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct AgentgatewayMetadata<'a> {
    namespace: &'a str,
    apikey: &'a str,
    slot: &'a str,
    /// The entry's key, the same client id Envoy Gateway forwards.
    client_id: &'a str,
    /// The token's public id (prefix and 6 characters).
    token_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<&'a str>,
}

/// The value of agentgateway entry `client` of `key` for the token `live`.
fn agentgateway_entry(key: &ApiKey, client: &str, live: &Live) -> String {
    let entry = AgentgatewayEntry {
        key_hash: format!("{AGENTGATEWAY_HASH_PREFIX}{}", live.sha256),
        metadata: AgentgatewayMetadata {
            namespace: key.metadata.namespace.as_deref().unwrap_or_default(),
            apikey: key.metadata.name.as_deref().unwrap_or_default(),
            slot: live.slot,
            client_id: client,
            token_id: live.id,
            environment: key.spec.environment.as_deref(),
        },
    };
    serde_json::to_string(&entry).expect("strings serialize")
}

/// Token values Keysmith holds for a key, by SHA-256.
struct Pool(HashMap<String, Token>);

impl Pool {
    fn new(key: &ApiKey, plan: &Plan, secret: Option<&Secret>, published: &[Secret]) -> Pool {
        let mut pool = HashMap::new();
        let held = secret
            .into_iter()
            .chain(published)
            .filter(|s| controlled_by(s, key))
            .flat_map(|s| s.data.iter().flatten())
            .filter_map(|(_, v)| Token::try_from(String::from_utf8(v.0.clone()).ok()?).ok());
        for token in held {
            pool.insert(sha256_hex(token.expose_secret()), token);
        }
        for token in plan.secret.iter().flat_map(|s| s.data.values()) {
            pool.insert(token.sha256_hex(), token.clone());
        }
        Pool(pool)
    }

    fn find(&self, sha256: &str) -> Option<Token> {
        self.0.get(sha256).cloned()
    }
}

fn published_secret(
    key: &ApiKey,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    name: String,
    published_for: &str,
    data: BTreeMap<String, Token>,
    published: &[Secret],
) -> DesiredSecret {
    let observed = published
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name.as_str()))
        .map(Precondition::of);
    let labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        (
            APIKEY_LABEL.to_owned(),
            key.metadata.name.clone().unwrap_or_default(),
        ),
        (PUBLISHED_FOR_LABEL.to_owned(), published_for.to_owned()),
    ]);
    let ids: Vec<&str> = data.values().map(Token::id).collect();
    let annotations = BTreeMap::from([(TOKEN_IDS_ANNOTATION.to_owned(), ids.join(","))]);
    DesiredSecret {
        name,
        namespace: key.metadata.namespace.clone().unwrap_or_default(),
        type_: "Opaque".to_owned(),
        labels,
        annotations,
        owner: owner.clone(),
        data,
        hashed: BTreeMap::new(),
        observed,
    }
}

fn is_published_for(secret: &Secret, gateway: &str) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(PUBLISHED_FOR_LABEL))
        .is_some_and(|v| v == gateway)
}

/// Whether `observed` already is `desired`: the same name, this key's, Keysmith's labels and
/// annotations, and exactly the desired data (an entry that should be gone is a difference).
fn matches(observed: &Secret, desired: &DesiredSecret) -> bool {
    let meta = &observed.metadata;
    let contains = |have: &Option<BTreeMap<String, String>>, want: &BTreeMap<String, String>| {
        want.iter()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    let data: BTreeMap<&str, &[u8]> = observed
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.0.as_slice()))
        .collect();
    let want: BTreeMap<&str, &[u8]> = desired
        .data
        .iter()
        .map(|(k, t)| (k.as_str(), t.expose_secret().as_bytes()))
        .chain(
            desired
                .hashed
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes())),
        )
        .collect();
    meta.name.as_deref() == Some(desired.name.as_str())
        && meta
            .owner_references
            .iter()
            .flatten()
            .any(|o| *o == desired.owner)
        && contains(&meta.labels, &desired.labels)
        && contains(&meta.annotations, &desired.annotations)
        && data == want
}

#[cfg(test)]
mod tests;
