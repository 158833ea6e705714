//! The verification policy a key serves (invariant I5): an edit the controller rejects never
//! changes the answer for an existing token.
//!
//! The controller copies the parts of every spec it accepts that decide a verification
//! ([`policy_of`]) into `status.servedPolicy`, with `status.servedGeneration`. While the spec
//! validates, the verifier serves the spec itself (so an accepted edit takes effect before the
//! controller has seen it); once an edit breaks a rule, it serves that snapshot instead, so a typo
//! in `rotation.every` or a spec grown past the size limit leaves traffic as it was. Only
//! `disabled: true` takes effect from a rejected spec: it only takes access away. A key that was
//! never accepted has no snapshot and is served fail closed (see [`crate::verifier::key`]).

use crate::api::{ApiKey, ApiKeySpec, TokenSlot};
use crate::validation::{InvalidSpec, ValidSpec, validate};

/// The parts of `spec` a verification reads: environment, `expiresAt`, grants, restrictions,
/// and each slot's name, grants and metadata. Everything else is left at its default.
pub fn policy_of(spec: &ApiKeySpec) -> ApiKeySpec {
    ApiKeySpec {
        environment: spec.environment.clone(),
        expires_at: spec.expires_at.clone(),
        grants: spec.grants.clone(),
        restrictions: spec.restrictions.clone(),
        tokens: spec
            .tokens
            .iter()
            .map(|slot| TokenSlot {
                name: slot.name.clone(),
                grants: slot.grants.clone(),
                metadata: slot.metadata.clone(),
                ..TokenSlot::default()
            })
            .collect(),
        ..ApiKeySpec::default()
    }
}

/// The policy a key serves now.
#[derive(Debug)]
pub struct Served<'a> {
    /// The spec the policy comes from: the key's own, or the snapshot in status.
    pub spec: &'a ApiKeySpec,
    /// That spec, parsed.
    pub valid: ValidSpec,
    /// The generation it was accepted at (`metadata.generation` while the spec validates).
    pub generation: Option<i64>,
    /// Why the key's own spec is not served, when the snapshot is.
    pub rejected: Option<InvalidSpec>,
}

/// The policy `key` serves, or why it has none (its spec breaks a rule and no earlier
/// generation was accepted).
pub fn served(key: &ApiKey) -> Result<Served<'_>, InvalidSpec> {
    let invalid = match validate(&key.spec) {
        Ok(valid) => {
            return Ok(Served {
                spec: &key.spec,
                valid,
                generation: key.metadata.generation,
                rejected: None,
            });
        }
        Err(invalid) => invalid,
    };
    let status = key.status.as_ref();
    let Some(snapshot) = status.and_then(|s| s.served_policy.as_ref()) else {
        return Err(invalid);
    };
    match validate(snapshot) {
        Ok(valid) => Ok(Served {
            spec: snapshot,
            valid,
            generation: status.and_then(|s| s.served_generation),
            rejected: Some(invalid),
        }),
        // Only the controller writes the snapshot, from a spec that validated; a snapshot that
        // does not is not served.
        Err(_) => Err(invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiKeyStatus, Rotation};

    fn key() -> ApiKey {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "keysmith.dev/v1alpha1",
            "kind": "ApiKey",
            "metadata": {"name": "k", "namespace": "ns", "generation": 4},
            "spec": {
                "environment": "production",
                "tokens": [{
                    "name": "main", "prefix": "ks_", "metadata": {"tier": "gold"},
                    "grants": [{"effect": "allow", "actions": ["read"]}]
                }],
                "grants": [{"effect": "allow", "actions": ["*"]}],
                "rotation": {"every": "30d", "overlap": "1h"},
                "secret": {"name": "s"}
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_valid_spec_is_served_as_it_is() {
        let key = key();
        let served = served(&key).unwrap();
        assert_eq!(served.spec, &key.spec);
        assert_eq!(served.generation, Some(4));
        assert!(served.rejected.is_none());
    }

    #[test]
    fn the_policy_keeps_what_a_verification_reads_and_nothing_else() {
        let spec = policy_of(&key().spec);
        assert_eq!(spec.environment.as_deref(), Some("production"));
        assert_eq!(spec.grants.len(), 1);
        assert_eq!(spec.tokens[0].metadata["tier"], "gold");
        assert!(spec.tokens[0].grants.is_some());
        assert!(spec.tokens[0].prefix.is_none());
        assert!(spec.rotation.is_none() && spec.secret.is_none());
        assert!(validate(&spec).is_ok());
    }

    #[test]
    fn a_rejected_spec_serves_the_last_accepted_snapshot_or_nothing() {
        let mut key = key();
        let accepted = policy_of(&key.spec);
        key.spec.rotation = Some(Rotation {
            every: Some("1000w".into()),
            ..Rotation::default()
        });
        key.metadata.generation = Some(5);
        let error = served(&key).unwrap_err();
        assert!(error.to_string().contains("spec.rotation.every"), "{error}");

        key.status = Some(ApiKeyStatus {
            served_generation: Some(4),
            served_policy: Some(accepted.clone()),
            ..ApiKeyStatus::default()
        });
        let served = served(&key).unwrap();
        assert_eq!(served.spec, &accepted);
        assert_eq!(served.generation, Some(4));
        assert!(
            served
                .rejected
                .unwrap()
                .to_string()
                .contains("spec.rotation.every")
        );
    }
}
