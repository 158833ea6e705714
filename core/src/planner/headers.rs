//! Required headers whose value an ApiKey takes from a Secret
//! (`restrictions.requiredHeaders[].valueFrom.secretKeyRef`): the controller reads those Secrets
//! and publishes only SHA-256 hashes of the values in `status.requiredHeaders`, so the verifier
//! never needs to read a Secret.
//!
//! The shell reads the Secrets [`referenced`] names and hands them in as [`HeaderSecrets`];
//! `resolve` is pure. Nothing here keeps, logs or formats a value: errors name the Secret and
//! the key only.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;

use crate::api::{ApiKeySpec, HEADER_SOURCE_ANNOTATION, RequiredHeaderStatus};
use crate::token::sha256_hex_bytes;
use crate::validation::validate;

/// The Secrets that required headers name, by name, as the shell read them from the key's
/// namespace; a name that is absent does not exist.
pub type HeaderSecrets = BTreeMap<String, Secret>;

/// How often a key with Secret-sourced headers is reconciled again to pick up a changed value:
/// those Secrets are not Keysmith's, so no watch event announces their changes.
pub(crate) const HEADER_RECHECK: Duration = Duration::from_secs(60);

/// Names of the Secrets `spec`'s required headers read; none when the spec is invalid, since
/// its names may then be paths or queries rather than Secret names, and planning acts on
/// nothing of an invalid spec anyway.
pub fn referenced(spec: &ApiKeySpec) -> BTreeSet<String> {
    if validate(spec).is_err() {
        return BTreeSet::new();
    }
    spec.restrictions
        .iter()
        .flat_map(|r| &r.required_headers)
        .filter_map(|h| h.value_from.as_ref())
        .map(|from| from.secret_key_ref.name.clone())
        .collect()
}

/// What the Secrets say about the required headers.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Resolved {
    /// Hashes of every value that was found, in spec order.
    pub hashes: Vec<RequiredHeaderStatus>,
    /// One line per value that was not found (Secret or key missing); no values.
    pub missing: Vec<String>,
}

/// Whether `secret` lets ApiKey `key` read it (see [`HEADER_SOURCE_ANNOTATION`]).
fn opts_in(secret: &Secret, key: &str) -> bool {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(HEADER_SOURCE_ANNOTATION))
        .is_some_and(|names| names.split(',').any(|n| n.trim() == key))
}

/// Hash the value of every Secret-sourced required header of `spec`, the spec of ApiKey `key`.
pub(crate) fn resolve(spec: &ApiKeySpec, key: &str, secrets: &HeaderSecrets) -> Resolved {
    let mut resolved = Resolved::default();
    let headers = spec.restrictions.iter().flat_map(|r| &r.required_headers);
    for (i, header) in headers.enumerate() {
        let Some(from) = &header.value_from else {
            continue;
        };
        let name = &from.secret_key_ref.name;
        let field = format!("spec.restrictions.requiredHeaders[{i}] ({})", header.name);
        // A missing Secret and one that has not opted in read the same: the author may not be
        // allowed to read Secrets, so Keysmith must not tell them which names exist.
        let Some(secret) = secrets.get(name.as_str()).filter(|s| opts_in(s, key)) else {
            resolved.missing.push(format!(
                "{field}: Secret {name} is missing or does not let this key read it; it must \
                 exist and someone who may edit it annotates it {HEADER_SOURCE_ANNOTATION}={key}"
            ));
            continue;
        };
        let data_key = &from.secret_key_ref.key;
        match secret.data.as_ref().and_then(|d| d.get(data_key)) {
            Some(value) => resolved.hashes.push(RequiredHeaderStatus {
                name: header.name.clone(),
                secret_key_ref: from.secret_key_ref.clone(),
                sha256: sha256_hex_bytes(&value.0),
            }),
            None => resolved
                .missing
                .push(format!("{field}: Secret {name} has no key {data_key}")),
        }
    }
    resolved
}
