//! `keysmith_token_verifications_total{namespace, apikey, token, code}`: verifications per
//! token and answer code, for the ApiKeys that opt in with the annotation
//! `keysmith.dev/usage-metrics: "true"`.
//!
//! Per-token series are opt-in, and the opt-in is the key author's, so the operator bounds it:
//! at most `--token-metrics-max-tokens` tokens (slots) have series, 10 codes each. Keys are
//! admitted as the verifier sees them, each with as many of its slots as there is room for; the
//! verifications of the slots left out are counted in
//! `keysmith_token_verifications_untracked_total`, and a key left out is admitted at its next
//! change once room is free. A key that opts out or is deleted loses its series and frees its
//! room. Keys that did not opt in cost one atomic load per verification.

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

/// Most tokens (slots) that may have per-token series (`--token-metrics-max-tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenMetricsCap(pub usize);

impl Default for TokenMetricsCap {
    /// 1,000 tokens: at most 10,000 series.
    fn default() -> Self {
        TokenMetricsCap(1000)
    }
}

/// An ApiKey, by namespace and name.
type KeyName = (String, String);

/// Which opted-in keys have series.
#[derive(Default)]
struct Tracked {
    /// Admitted keys and the slot names their series may carry.
    slots: HashMap<KeyName, Vec<String>>,
    /// Opted-in keys with slots left out for lack of room.
    left_out: HashSet<KeyName>,
    /// The number of slot names in `slots`.
    tokens: usize,
}

/// The per-token counters of opted-in keys.
pub struct TokenMetrics {
    family: Family<TokenLabels, Counter>,
    untracked: Counter,
    cap: usize,
    tracked: RwLock<Tracked>,
    /// Keys in `tracked` (admitted or left out), read without the lock on the hot path.
    count: AtomicUsize,
}

impl TokenMetrics {
    /// Create the metrics, for at most `cap` tokens, and register them in `registry` (prefix
    /// `keysmith`).
    pub fn register(registry: &mut Registry, cap: TokenMetricsCap) -> TokenMetrics {
        let family = Family::<TokenLabels, Counter>::default();
        registry.register(
            "token_verifications",
            "Verifications per token and code, for ApiKeys annotated keysmith.dev/usage-metrics: \"true\"",
            family.clone(),
        );
        let untracked = Counter::default();
        registry.register(
            "token_verifications_untracked",
            "Verifications of tokens of ApiKeys annotated keysmith.dev/usage-metrics that have no series because --token-metrics-max-tokens tokens have them",
            untracked.clone(),
        );
        TokenMetrics {
            family,
            untracked,
            cap: cap.0,
            tracked: RwLock::default(),
            count: AtomicUsize::new(0),
        }
    }

    fn tracked(&self) -> std::sync::RwLockWriteGuard<'_, Tracked> {
        self.tracked.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Follow one watched ApiKey's opt-in (and its slot names).
    pub fn apply(&self, apikey: &ApiKey) {
        let wants = apikey
            .annotations()
            .get(ANNOTATION)
            .is_some_and(|v| v == "true");
        let key = (apikey.namespace().unwrap_or_default(), apikey.name_any());
        if !wants {
            self.forget(&key.0, &key.1);
            return;
        }
        let mut tracked = self.tracked();
        let before = tracked.slots.remove(&key).unwrap_or_default();
        tracked.tokens -= before.len();
        // The key's own slots count as room: an unchanged key keeps its series.
        let room = self.cap.saturating_sub(tracked.tokens);
        let mut slots: Vec<String> = apikey.spec.tokens.iter().map(|t| t.name.clone()).collect();
        if slots.len() > room {
            slots.truncate(room);
            tracked.left_out.insert(key.clone());
        } else {
            tracked.left_out.remove(&key);
        }
        let gone: Vec<String> = before.into_iter().filter(|s| !slots.contains(s)).collect();
        self.remove_series(&key, &gone);
        if !slots.is_empty() {
            tracked.tokens += slots.len();
            tracked.slots.insert(key, slots);
        }
        self.count_keys(&tracked);
    }

    fn count_keys(&self, tracked: &Tracked) {
        let keys = tracked.slots.len() + tracked.left_out.len();
        self.count.store(keys, Ordering::Relaxed);
    }

    /// Drop a deleted (or opted-out) key's series.
    pub fn forget(&self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        let mut tracked = self.tracked();
        if let Some(slots) = tracked.slots.remove(&key) {
            tracked.tokens -= slots.len();
            self.remove_series(&key, &slots);
        }
        tracked.left_out.remove(&key);
        self.count_keys(&tracked);
    }

    /// Drop the series of keys not in `present` (gone while the watch was down).
    pub fn retain(&self, present: &HashSet<(String, String)>) {
        let gone: Vec<(String, String)> = {
            let tracked = self.tracked.read().unwrap_or_else(|e| e.into_inner());
            (tracked.slots.keys())
                .chain(&tracked.left_out)
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
        let tracked = self.tracked.read().unwrap_or_else(|e| e.into_inner());
        let name = (key.namespace.clone(), key.name.clone());
        // The slot must be one the key names, so a series is always one `forget` removes.
        let known = (tracked.slots.get(&name))
            .is_some_and(|slots| slots.iter().any(|s| s == found.slot_name()));
        if !known {
            if tracked.left_out.contains(&name) {
                self.untracked.inc();
            }
        } else {
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
        named("billing", annotation, slots)
    }

    fn named(name: &str, annotation: Option<&str>, slots: &[&str]) -> ApiKey {
        let mut metadata = serde_json::json!({"name": name, "namespace": "team"});
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
        found_in("billing", slot)
    }

    fn found_in(name: &str, slot: &str) -> Found {
        let key = named(name, None, &[slot]);
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
            leaked: false,
        }
    }

    #[test]
    fn only_opted_in_keys_get_series_and_lose_them_when_they_opt_out() {
        let mut registry = Registry::with_prefix("keysmith");
        let metrics = TokenMetrics::register(&mut registry, TokenMetricsCap::default());
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
        let metrics = TokenMetrics::register(&mut registry, TokenMetricsCap::default());
        metrics.apply(&apikey(Some("true"), &["primary"]));
        metrics.record(&found("primary"), Code::Valid);
        assert!(exposition(&registry).contains("apikey=\"billing\""));
        metrics.forget("team", "billing");
        assert!(!exposition(&registry).contains("apikey=\"billing\""));
    }

    #[test]
    fn opted_in_tokens_beyond_the_cap_get_no_series_and_are_counted() {
        // The opt-in is the key author's; the number of series is the operator's (issue 27, N12).
        let mut registry = Registry::with_prefix("keysmith");
        let metrics = TokenMetrics::register(&mut registry, TokenMetricsCap(3));
        let series = |registry: &Registry| {
            (exposition(registry).lines())
                .filter(|l| l.starts_with("keysmith_token_verifications_total{"))
                .map(|l| l.split(",code").next().unwrap().to_owned())
                .collect::<std::collections::BTreeSet<_>>()
        };
        let untracked = |registry: &Registry| {
            (exposition(registry).lines())
                .find_map(|l| l.strip_prefix("keysmith_token_verifications_untracked_total "))
                .unwrap()
                .to_owned()
        };
        let verify_all = || {
            for (key, slot) in [("a", "one"), ("a", "two"), ("b", "one"), ("b", "two")] {
                metrics.record(&found_in(key, slot), Code::Valid);
            }
        };
        metrics.apply(&named("a", Some("true"), &["one", "two"]));
        metrics.apply(&named("b", Some("true"), &["one", "two"]));
        // A watch event of an admitted key keeps its series.
        metrics.apply(&named("a", Some("true"), &["one", "two"]));
        verify_all();
        let kept = [
            "keysmith_token_verifications_total{namespace=\"team\",apikey=\"a\",token=\"one\"",
            "keysmith_token_verifications_total{namespace=\"team\",apikey=\"a\",token=\"two\"",
            "keysmith_token_verifications_total{namespace=\"team\",apikey=\"b\",token=\"one\"",
        ];
        assert_eq!(series(&registry), kept.map(str::to_owned).into());
        assert_eq!(untracked(&registry), "1");

        // Room freed by a key that goes is taken at the next change of one left out.
        metrics.forget("team", "a");
        metrics.apply(&named("b", Some("true"), &["one", "two"]));
        verify_all();
        assert_eq!(series(&registry).len(), 2, "{:?}", series(&registry));
        assert_eq!(untracked(&registry), "1");

        let mut registry = Registry::with_prefix("keysmith");
        let none = TokenMetrics::register(&mut registry, TokenMetricsCap(0));
        none.apply(&named("a", Some("true"), &["one"]));
        none.record(&found_in("a", "one"), Code::Valid);
        assert!(series(&registry).is_empty());
        assert_eq!(untracked(&registry), "1");
    }
}
