//! The controller's Prometheus metrics (SPEC 4.4), registered into the shared registry of
//! [`crate::telemetry`]. Labels carry names and reasons only, never token material.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use jiff::Timestamp;

use crate::api::ApiKeyStatus;
use crate::apikeys::Unreadables;
use crate::planner::conditions::{self, READY};

/// Values of the `condition` label of `keysmith_apikey_ready_status`, as cert-manager's
/// `certmanager_certificate_ready_status` has them.
const READY_VALUES: [&str; 3] = ["True", "False", "Unknown"];

/// Labels `{reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why it happened.
    pub reason: String,
}

/// Why a reconcile failed: the `reason` label of `keysmith_reconcile_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorReason {
    /// A Kubernetes API call failed.
    Api,
    /// The OS random number generator failed.
    Mint,
    /// `spec.publish` names something the key may not write.
    Publish,
    /// Adding or removing the finalizer failed.
    Finalizer,
}

impl ErrorReason {
    /// Every reason, each exported from the start so that a rate over it never starts from an
    /// absent series (and an alert on it sees the first error).
    pub const ALL: [ErrorReason; 4] = [
        ErrorReason::Api,
        ErrorReason::Mint,
        ErrorReason::Publish,
        ErrorReason::Finalizer,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::Api => "api",
            ErrorReason::Mint => "mint",
            ErrorReason::Publish => "publish",
            ErrorReason::Finalizer => "finalizer",
        }
    }
}

/// Labels `{lease}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseLabel {
    /// Name of the Lease the controllers compete for.
    pub lease: String,
}

/// Labels `{namespace, apikey, token}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// Namespace of the ApiKey.
    pub namespace: String,
    /// ApiKey name.
    pub apikey: String,
    /// Slot name.
    pub token: String,
}

/// Labels `{namespace, apikey}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    /// Namespace of the ApiKey.
    pub namespace: String,
    /// ApiKey name.
    pub apikey: String,
}

/// Labels `{namespace, apikey, condition}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    /// Namespace of the ApiKey.
    pub namespace: String,
    /// ApiKey name.
    pub apikey: String,
    /// `True`, `False` or `Unknown`.
    pub condition: &'static str,
}

/// The controller's metrics.
#[derive(Clone)]
pub struct ControllerMetrics {
    /// `keysmith_reconcile_duration_seconds`.
    pub reconcile_duration: Histogram,
    /// `keysmith_reconcile_errors_total{reason}`.
    pub reconcile_errors: Family<ReasonLabel, Counter>,
    /// `keysmith_tokens_minted_total{reason}`.
    pub tokens_minted: Family<ReasonLabel, Counter>,
    /// `keysmith_token_expiry_timestamp_seconds{namespace,apikey,token}`.
    pub token_expiry: Family<TokenLabels, Gauge>,
    /// `keysmith_apikey_expiry_timestamp_seconds{namespace,apikey}`.
    pub key_expiry: Family<KeyLabels, Gauge>,
    /// `keysmith_token_next_rotation_timestamp_seconds{namespace,apikey,token}`.
    pub next_rotation: Family<TokenLabels, Gauge>,
    /// `keysmith_apikey_ready_status{namespace,apikey,condition}`.
    pub ready: Family<ReadyLabels, Gauge>,
    /// `keysmith_rollout_restarts_total`.
    pub rollout_restarts: Counter,
    /// `keysmith_controller_leader{lease}`.
    leader: Family<LeaseLabel, Gauge>,
    /// `keysmith_apikeys_unreadable_total`.
    pub unreadable: Unreadables,
}

impl ControllerMetrics {
    /// Create the metrics and register them in `registry`.
    pub fn register(registry: &mut Registry) -> ControllerMetrics {
        let metrics = ControllerMetrics {
            // 1 ms to about 16 s.
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            reconcile_errors: Family::default(),
            tokens_minted: Family::default(),
            token_expiry: Family::default(),
            key_expiry: Family::default(),
            next_rotation: Family::default(),
            ready: Family::default(),
            rollout_restarts: Counter::default(),
            leader: Family::default(),
            unreadable: Unreadables::register(registry, "apikeys_unreadable"),
        };
        for reason in ErrorReason::ALL {
            // Created at 0, so that every reason is exported from the start.
            drop(metrics.reconcile_errors.get_or_create(&ReasonLabel {
                reason: reason.as_str().to_owned(),
            }));
        }
        registry.register_with_unit(
            "reconcile_duration",
            "Time spent reconciling one ApiKey",
            Unit::Seconds,
            metrics.reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by reason (api, mint, publish, finalizer)",
            metrics.reconcile_errors.clone(),
        );
        registry.register(
            "tokens_minted",
            "Tokens minted, by reason (initial, secret-changed, schedule, renew, trigger, annotation)",
            metrics.tokens_minted.clone(),
        );
        registry.register(
            "token_expiry_timestamp_seconds",
            "Unix time at which the current token of a slot stops verifying: its own expiry or the key's spec.expiresAt, whichever comes first",
            metrics.token_expiry.clone(),
        );
        registry.register(
            "apikey_expiry_timestamp_seconds",
            "Unix time of an ApiKey's spec.expiresAt, after which none of its tokens verifies and no rotation renews them",
            metrics.key_expiry.clone(),
        );
        registry.register(
            "token_next_rotation_timestamp_seconds",
            "Unix time at which the controller rotates the current token of a slot",
            metrics.next_rotation.clone(),
        );
        registry.register(
            "apikey_ready_status",
            "The Ready condition of an ApiKey: 1 for its status (True, False or Unknown), 0 for the others",
            metrics.ready.clone(),
        );
        registry.register(
            "rollout_restarts",
            "Workloads restarted after a rotation",
            metrics.rollout_restarts.clone(),
        );
        registry.register(
            "controller_leader",
            "1 while this controller holds the leader Lease and reconciles, else 0",
            metrics.leader.clone(),
        );
        metrics
    }

    /// The leader gauge of Lease `lease`, exported (as 0) from now on.
    pub fn leader(&self, lease: &str) -> Gauge {
        self.leader
            .get_or_create(&LeaseLabel {
                lease: lease.to_owned(),
            })
            .clone()
    }

    /// Count a mint.
    pub fn minted(&self, reason: &str) {
        self.tokens_minted
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Count a failed reconcile.
    pub fn error(&self, reason: ErrorReason) {
        self.reconcile_errors
            .get_or_create(&ReasonLabel {
                reason: reason.as_str().to_owned(),
            })
            .inc();
    }

    /// Publish when every current token of a key stops verifying, and the key's own end
    /// (`key_end`, its `spec.expiresAt`); drop the series of slots that `previous` had and
    /// `current` no longer has. A token stops at its own expiry or the key's end, whichever
    /// comes first, so a key with only `spec.expiresAt` exports a series per slot too: the expiry
    /// alert sees it. The key's end is also exported alone, so that the alert can tell an end
    /// no rotation renews from a token expiry a scheduled rotation replaces in time.
    pub fn track_expiry(
        &self,
        namespace: &str,
        apikey: &str,
        key_end: Option<Timestamp>,
        previous: Option<&ApiKeyStatus>,
        current: &ApiKeyStatus,
    ) {
        let key = key_labels(namespace, apikey);
        match key_end {
            Some(end) => {
                self.key_expiry.get_or_create(&key).set(end.as_second());
            }
            None => {
                self.key_expiry.remove(&key);
            }
        }
        let labels = |slot: &str| token_labels(namespace, apikey, slot);
        for gone in previous.iter().flat_map(|p| &p.tokens) {
            if !current.tokens.iter().any(|t| t.name == gone.name) {
                self.token_expiry.remove(&labels(&gone.name));
            }
        }
        for token in &current.tokens {
            let own = token.expires_at.as_ref().map(|at| at.0);
            match own.into_iter().chain(key_end).min() {
                Some(at) => {
                    self.token_expiry
                        .get_or_create(&labels(&token.name))
                        .set(at.as_second());
                }
                None => {
                    self.token_expiry.remove(&labels(&token.name));
                }
            }
        }
    }

    /// Publish the next rotation of every slot in `rotations` (the planner's), and drop the
    /// series of the other slots of `previous` and `current`: they no longer rotate, or are gone.
    pub fn track_rotations(
        &self,
        namespace: &str,
        apikey: &str,
        previous: Option<&ApiKeyStatus>,
        current: &ApiKeyStatus,
        rotations: &[(String, Timestamp)],
    ) {
        let labels = |slot: &str| token_labels(namespace, apikey, slot);
        for (slot, due) in rotations {
            self.next_rotation
                .get_or_create(&labels(slot))
                .set(due.as_second());
        }
        for token in previous
            .iter()
            .flat_map(|p| &p.tokens)
            .chain(&current.tokens)
        {
            if !rotations.iter().any(|(slot, _)| *slot == token.name) {
                self.next_rotation.remove(&labels(&token.name));
            }
        }
    }

    /// Publish the status of the Ready condition in `current` (`Unknown` when it has none), one
    /// series per possible status so that a change never leaves the old one behind.
    pub fn track_ready(&self, namespace: &str, apikey: &str, current: &ApiKeyStatus) {
        let status = conditions::find(&current.conditions, READY).map_or("Unknown", |c| &c.status);
        for condition in READY_VALUES {
            self.ready
                .get_or_create(&ready_labels(namespace, apikey, condition))
                .set(i64::from(condition == status));
        }
    }

    /// Forget a deleted key's series.
    pub fn forget(&self, namespace: &str, apikey: &str, status: Option<&ApiKeyStatus>) {
        self.key_expiry.remove(&key_labels(namespace, apikey));
        for token in status.iter().flat_map(|s| &s.tokens) {
            let labels = token_labels(namespace, apikey, &token.name);
            self.token_expiry.remove(&labels);
            self.next_rotation.remove(&labels);
        }
        for condition in READY_VALUES {
            self.ready
                .remove(&ready_labels(namespace, apikey, condition));
        }
    }

    /// Forget every key's series: this controller stopped reconciling (it lost the Lease), so
    /// they would go stale beside the new leader's.
    pub fn forget_all(&self) {
        self.token_expiry.clear();
        self.key_expiry.clear();
        self.next_rotation.clear();
        self.ready.clear();
    }
}

fn token_labels(namespace: &str, apikey: &str, slot: &str) -> TokenLabels {
    TokenLabels {
        namespace: namespace.to_owned(),
        apikey: apikey.to_owned(),
        token: slot.to_owned(),
    }
}

fn key_labels(namespace: &str, apikey: &str) -> KeyLabels {
    KeyLabels {
        namespace: namespace.to_owned(),
        apikey: apikey.to_owned(),
    }
}

fn ready_labels(namespace: &str, apikey: &str, condition: &'static str) -> ReadyLabels {
    ReadyLabels {
        namespace: namespace.to_owned(),
        apikey: apikey.to_owned(),
        condition,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TokenStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn token(name: &str, expires: Option<i64>) -> TokenStatus {
        TokenStatus {
            name: name.into(),
            id: "ks_abcdef".into(),
            sha256: "00".into(),
            issued_at: Time(jiff::Timestamp::UNIX_EPOCH),
            expires_at: expires.map(|s| Time(jiff::Timestamp::from_second(s).unwrap())),
            rotation_trigger: None,
            rotate_annotation: None,
            rotate_slot_annotation: None,
            previous: None,
            earlier: Vec::new(),
            last_used_at: None,
            leak: None,
        }
    }

    #[test]
    fn expiry_series_follow_the_slots() {
        let mut registry = crate::telemetry::registry();
        let metrics = ControllerMetrics::register(&mut registry);
        let two = ApiKeyStatus {
            tokens: vec![
                token("a", Some(1_900_000_000)),
                token("b", Some(1_800_000_000)),
            ],
            ..ApiKeyStatus::default()
        };
        metrics.track_expiry("cms", "site", None, None, &two);
        let one = ApiKeyStatus {
            tokens: vec![token("a", Some(1_900_000_000))],
            ..ApiKeyStatus::default()
        };
        metrics.track_expiry("cms", "site", None, Some(&two), &one);
        metrics.minted("initial");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains(
            r#"keysmith_token_expiry_timestamp_seconds{namespace="cms",apikey="site",token="a"} 1900000000"#
        ), "{text}");
        assert!(!text.contains(r#"token="b""#), "{text}");
        assert!(text.contains(r#"keysmith_tokens_minted_total{reason="initial"} 1"#));
        metrics.forget("cms", "site", Some(&one));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains(r#"apikey="site""#), "{text}");
    }

    fn encode(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn every_error_reason_and_the_leader_are_exported_from_the_start() {
        let mut registry = crate::telemetry::registry();
        let metrics = ControllerMetrics::register(&mut registry);
        let text = encode(&registry);
        for reason in ["api", "mint", "publish", "finalizer"] {
            assert!(
                text.contains(&format!(
                    r#"keysmith_reconcile_errors_total{{reason="{reason}"}} 0"#
                )),
                "{text}"
            );
        }
        metrics.error(ErrorReason::Publish);
        let leader = metrics.leader("keysmith-controller");
        let text = encode(&registry);
        assert!(
            text.contains(r#"keysmith_reconcile_errors_total{reason="publish"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"keysmith_controller_leader{lease="keysmith-controller"} 0"#),
            "{text}"
        );
        leader.set(1);
        assert!(
            encode(&registry)
                .contains(r#"keysmith_controller_leader{lease="keysmith-controller"} 1"#)
        );
    }

    #[test]
    fn a_controller_that_stops_leading_forgets_every_key() {
        let mut registry = crate::telemetry::registry();
        let metrics = ControllerMetrics::register(&mut registry);
        let status = ApiKeyStatus {
            tokens: vec![token("a", Some(1_900_000_000))],
            ..ApiKeyStatus::default()
        };
        let due = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        for apikey in ["site", "shop"] {
            metrics.track_ready("cms", apikey, &status);
            metrics.track_expiry("cms", apikey, Some(due), None, &status);
            metrics.track_rotations("cms", apikey, None, &status, &[("a".to_owned(), due)]);
        }
        assert!(encode(&registry).contains(r#"apikey="shop""#));
        metrics.forget_all();
        let text = encode(&registry);
        assert!(!text.contains("apikey="), "{text}");
        assert!(
            text.contains(r#"keysmith_reconcile_errors_total{reason="api"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn ready_and_rotation_series_follow_the_key_and_go_with_it() {
        let mut registry = crate::telemetry::registry();
        let metrics = ControllerMetrics::register(&mut registry);
        let mut status = ApiKeyStatus {
            tokens: vec![token("a", None), token("b", None)],
            ..ApiKeyStatus::default()
        };
        let due = |s| jiff::Timestamp::from_second(s).unwrap();
        metrics.track_ready("cms", "site", &status);
        let both = [
            ("a".to_owned(), due(1_700_000_000)),
            ("b".to_owned(), due(1_800_000_000)),
        ];
        metrics.track_rotations("cms", "site", None, &status, &both);
        let text = encode(&registry);
        for (condition, value) in [("True", 0), ("False", 0), ("Unknown", 1)] {
            assert!(text.contains(&format!(
                r#"keysmith_apikey_ready_status{{namespace="cms",apikey="site",condition="{condition}"}} {value}"#
            )), "{text}");
        }
        assert!(text.contains(
            r#"keysmith_token_next_rotation_timestamp_seconds{namespace="cms",apikey="site",token="b"} 1800000000"#
        ), "{text}");

        status.conditions = vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: READY.into(),
            status: "True".into(),
            reason: "Minted".into(),
            message: String::new(),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }];
        metrics.track_ready("cms", "site", &status);
        // Slot b stops rotating (say its renewBefore was removed): its series goes.
        let previous = status.clone();
        metrics.track_rotations("cms", "site", Some(&previous), &status, &both[..1]);
        let text = encode(&registry);
        assert!(
            text.contains(
                r#"keysmith_apikey_ready_status{namespace="cms",apikey="site",condition="True"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"keysmith_apikey_ready_status{namespace="cms",apikey="site",condition="Unknown"} 0"#
        ), "{text}");
        assert!(text.contains(
            r#"keysmith_token_next_rotation_timestamp_seconds{namespace="cms",apikey="site",token="a"} 1700000000"#
        ), "{text}");
        assert!(!text.contains(r#"token="b""#), "{text}");

        metrics.forget("cms", "site", Some(&status));
        assert!(!encode(&registry).contains(r#"apikey="site""#));
    }
}
