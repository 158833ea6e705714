//! The verifier's metrics (SPEC section 4.4): `keysmith_verify_requests_total{endpoint, code}`,
//! `keysmith_verify_duration_seconds`, `keysmith_index_tokens`,
//! `keysmith_index_unreadable_apikeys_total`, and the connection counts of
//! [`Connections`].
//!
//! The counters of every endpoint and code are created up front and kept in a 2-D array, so the
//! hot path indexes it instead of hashing a label set behind the family's lock (and allocating
//! the label set first).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::audit::Endpoint;
use super::decision::Code;
use super::server::Connections;
use crate::apikeys::Unreadables;

/// Bucket bounds in seconds: verification takes microseconds, so most buckets are sub-millisecond.
const BUCKETS: [f64; 12] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.01,
    0.1, 1.0,
];

/// The verifier's metrics.
pub struct Metrics {
    requests: [[Counter; Code::ALL.len()]; Endpoint::ALL.len()],
    duration: Histogram,
    index_tokens: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Open and rejected connections of the verification API.
    pub connections: Connections,
    /// ApiKeys the index skips because they cannot be read.
    pub unreadable: Unreadables,
}

type Requests = Family<Vec<(String, String)>, Counter<u64, AtomicU64>>;

impl Metrics {
    /// Create the metrics and register them in `registry` (whose prefix should be `keysmith`).
    pub fn register(registry: &mut Registry) -> Metrics {
        let family = Requests::default();
        let requests = Endpoint::ALL.map(|e| {
            Code::ALL.map(|c| {
                family
                    .get_or_create(&vec![
                        ("endpoint".into(), e.as_str().into()),
                        ("code".into(), c.as_str().into()),
                    ])
                    .clone()
            })
        });
        registry.register(
            "verify_requests",
            "Verifications answered, by endpoint and code",
            family,
        );
        let duration = Histogram::new(BUCKETS);
        registry.register(
            "verify_duration_seconds",
            "Time to decide a verification (excluding any failure delay)",
            duration.clone(),
        );
        let index_tokens = Gauge::default();
        registry.register(
            "index_tokens",
            "Tokens (current and previous) the verifier's index accepts",
            index_tokens.clone(),
        );
        Metrics {
            requests,
            duration,
            index_tokens,
            connections: Connections::register(registry),
            // Its own name: in `keysmith run` the controller's counter shares the registry.
            unreadable: Unreadables::register(registry, "index_unreadable_apikeys"),
        }
    }

    /// Count one verification.
    pub fn observe(&self, endpoint: Endpoint, code: Code, took: Duration) {
        self.requests[endpoint.index()][code.index()].inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Publish the index size.
    pub fn set_index_tokens(&self, tokens: usize) {
        self.index_tokens
            .set(i64::try_from(tokens).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_are_the_specified_ones() {
        let mut registry = Registry::with_prefix("keysmith");
        let metrics = Metrics::register(&mut registry);
        metrics.observe(Endpoint::Authz, Code::NotFound, Duration::from_micros(3));
        metrics.set_index_tokens(7);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "keysmith_verify_requests_total{endpoint=\"authz\",code=\"NOT_FOUND\"} 1"
            ),
            "{text}"
        );
        // Every endpoint and code is exported from the start, so rates never start from absent.
        assert_eq!(
            text.matches("keysmith_verify_requests_total{").count(),
            Endpoint::ALL.len() * Code::ALL.len(),
            "{text}"
        );
        assert!(
            text.contains(
                "keysmith_verify_requests_total{endpoint=\"tokenreview\",code=\"VALID\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "keysmith_verify_requests_total{endpoint=\"verify\",code=\"NOT_FOUND\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains("keysmith_verify_duration_seconds_bucket{le=\"0.000005\"} 1"),
            "{text}"
        );
        assert!(text.contains("keysmith_index_tokens 7"), "{text}");
    }
}
