//! `keysmith_token_verifications_total{namespace, apikey, token, code}`: verifications per
//! token and answer code, for the ApiKeys that opt in with the annotation
//! `keysmith.dev/usage-metrics: "true"`.
//!
//! Per-token series are opt-in so their number stays what the cluster's owners chose: at most
//! (opted-in keys) x (their slots) x (10 codes). A key that opts out or is deleted loses its
//! series. Keys that did not opt in cost one atomic load per verification.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use kube::ResourceExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::api::ApiKey;

use super::decision::Code;
use super::index::Found;

/// The annotation an ApiKey sets to `"true"` to get per-token series.
pub const ANNOTATION: &str = "keysmith.dev/usage-metrics";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    namespace: String,
    apikey: String,
    token: String,
    code: String,
}

/// The per-token counters of opted-in keys.
pub struct TokenMetrics {
    family: Family<TokenLabels, Counter>,
    /// Opted-in keys and the slot names their series may carry.
    opted_in: RwLock<HashMap<(String, String), Vec<String>>>,
    /// `opted_in.len()`, read without the lock on the hot path.
    count: AtomicUsize,
}

impl TokenMetrics {
    /// Create the family and register it in `registry` (prefix `keysmith`).
    pub fn register(registry: &mut Registry) -> TokenMetrics {
        let family = Family::<TokenLabels, Counter>::default();
        registry.register(
            "token_verifications",
            "Verifications per token and code, for ApiKeys annotated keysmith.dev/usage-metrics: \"true\"",
            family.clone(),
        );
        TokenMetrics {
            family,
            opted_in: RwLock::default(),
            count: AtomicUsize::new(0),
        }
    }

    /// Follow one watched ApiKey's opt-in (and its slot names).
    pub fn apply(&self, apikey: &ApiKey) {
        let wants = apikey
            .annotations()
            .get(ANNOTATION)
            .is_some_and(|v| v == "true");
        let key = (apikey.namespace().unwrap_or_default(), apikey.name_any());
        if wants {
            let slots = apikey.spec.tokens.iter().map(|t| t.name.clone()).collect();
            let mut opted = self.opted_in.write().unwrap_or_else(|e| e.into_inner());
            if let Some(before) = opted.insert(key.clone(), slots) {
                let now = &opted[&key];
                let gone: Vec<String> = before.into_iter().filter(|s| !now.contains(s)).collect();
                self.remove_series(&key, &gone);
            }
            self.count.store(opted.len(), Ordering::Relaxed);
        } else {
            self.forget(&key.0, &key.1);
        }
    }

    /// Drop a deleted (or opted-out) key's series.
    pub fn forget(&self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        let mut opted = self.opted_in.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slots) = opted.remove(&key) {
            self.remove_series(&key, &slots);
        }
        self.count.store(opted.len(), Ordering::Relaxed);
    }

    /// Drop the series of keys not in `present` (gone while the watch was down).
    pub fn retain(&self, present: &HashSet<(String, String)>) {
        let gone: Vec<(String, String)> = {
            let opted = self.opted_in.read().unwrap_or_else(|e| e.into_inner());
            opted
                .keys()
                .filter(|k| !present.contains(*k))
                .cloned()
                .collect()
        };
        for (namespace, name) in gone {
            self.forget(&namespace, &name);
        }
    }

    fn remove_series(&self, (namespace, apikey): &(String, String), slots: &[String]) {
        for token in slots {
            for code in Code::ALL {
                self.family.remove(&TokenLabels {
                    namespace: namespace.clone(),
                    apikey: apikey.clone(),
                    token: token.clone(),
                    code: code.as_str().to_owned(),
                });
            }
        }
    }

    /// Count one verification of `found` when its key opted in.
    pub fn record(&self, found: &Found, code: Code) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let key = &found.key;
        let opted = self.opted_in.read().unwrap_or_else(|e| e.into_inner());
        // The slot must be one the key names, so a series is always one `forget` removes.
        let known = opted
            .get(&(key.namespace.clone(), key.name.clone()))
            .is_some_and(|slots| slots.iter().any(|s| s == found.slot_name()));
        if known {
            self.family
                .get_or_create(&TokenLabels {
                    namespace: key.namespace.clone(),
                    apikey: key.name.clone(),
                    token: found.slot_name().to_owned(),
                    code: code.as_str().to_owned(),
                })
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apikey(annotation: Option<&str>, slots: &[&str]) -> ApiKey {
        let mut metadata = serde_json::json!({"name": "billing", "namespace": "team"});
        if let Some(value) = annotation {
            metadata["annotations"] = serde_json::json!({ ANNOTATION: value });
        }
        let tokens: Vec<_> = slots
            .iter()
            .map(|s| serde_json::json!({"name": s, "prefix": "ks_"}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
            "metadata": metadata, "spec": {"tokens": tokens},
        }))
        .unwrap()
    }

    fn exposition(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    fn found(slot: &str) -> Found {
        let key = apikey(None, &[slot]);
        let (info, _) = super::super::key::KeyInfo::from_apikey(&key, &Default::default());
        Found {
            key: std::sync::Arc::new(info),
            slot: 0,
            status_position: 0,
            replaced: None,
            hash: keysmith_core::verifier::index::TokenHash::of("test"),
            id: "ks_abcdef".into(),
            expires_at: None,
            usage: Default::default(),
        }
    }

    #[test]
    fn only_opted_in_keys_get_series_and_lose_them_when_they_opt_out() {
        let mut registry = Registry::with_prefix("keysmith");
        let metrics = TokenMetrics::register(&mut registry);
        let primary = found("primary");
        metrics.record(&primary, Code::Valid);
        assert!(!exposition(&registry).contains("apikey=\"billing\""));

        metrics.apply(&apikey(Some("true"), &["primary"]));
        metrics.record(&primary, Code::Valid);
        metrics.record(&primary, Code::Valid);
        metrics.record(&primary, Code::Forbidden);
        let text = exposition(&registry);
        assert!(
            text.contains(
                "keysmith_token_verifications_total{namespace=\"team\",apikey=\"billing\",token=\"primary\",code=\"VALID\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("code=\"FORBIDDEN\"} 1"), "{text}");

        // A slot the key no longer names loses its series; an opt-out loses them all.
        metrics.apply(&apikey(Some("true"), &["other"]));
        assert!(!exposition(&registry).contains("token=\"primary\""));
        metrics.record(&primary, Code::Valid);
        assert!(!exposition(&registry).contains("token=\"primary\""));
        metrics.apply(&apikey(Some("true"), &["primary"]));
        metrics.record(&primary, Code::Valid);
        assert!(exposition(&registry).contains("token=\"primary\""));
        metrics.apply(&apikey(Some("false"), &["primary"]));
        assert!(!exposition(&registry).contains("apikey=\"billing\""));
        metrics.record(&primary, Code::Valid);
        assert!(!exposition(&registry).contains("apikey=\"billing\""));
    }

    #[test]
    fn a_deleted_key_loses_its_series() {
        let mut registry = Registry::with_prefix("keysmith");
        let metrics = TokenMetrics::register(&mut registry);
        metrics.apply(&apikey(Some("true"), &["primary"]));
        metrics.record(&found("primary"), Code::Valid);
        assert!(exposition(&registry).contains("apikey=\"billing\""));
        metrics.forget("team", "billing");
        assert!(!exposition(&registry).contains("apikey=\"billing\""));
    }
}
