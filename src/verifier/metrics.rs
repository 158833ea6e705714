//! The verifier's metrics: `keysmith_verify_requests_total{endpoint, code}`,
//! `keysmith_verify_duration_seconds{endpoint}`, `keysmith_verify_unknown_scope_total{route}`,
//! `keysmith_verify_throttled_total{endpoint}`, `keysmith_index_tokens`,
//! `keysmith_index_unreadable_apikeys_total`, and the connection counts of [`Connections`].
//!
//! Every series of every label value is created up front and kept in arrays, so the hot path
//! indexes them instead of hashing a label set behind the family's lock (and allocating the
//! label set first), and every series is exported from the start.

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
use super::tenancy::RouteKind;
use crate::apikeys::Unreadables;

/// Bucket bounds in seconds: verification takes microseconds, so most buckets are sub-millisecond.
const BUCKETS: [f64; 12] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.01,
    0.1, 1.0,
];

/// The verifier's metrics.
pub struct Metrics {
    requests: [[Counter; Code::ALL.len()]; Endpoint::ALL.len()],
    duration: [Histogram; Endpoint::ALL.len()],
    unknown_scope: [Counter; RouteKind::ALL.len()],
    throttled: [Counter; Endpoint::ALL.len()],
    index_tokens: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Open and rejected connections of the verification API.
    pub connections: Connections,
    /// ApiKeys the index skips because they cannot be read.
    pub unreadable: Unreadables,
}

type Requests = Family<Vec<(String, String)>, Counter<u64, AtomicU64>>;

/// A family of one label whose values are all known.
type Fixed<M> = Family<[(&'static str, &'static str); 1], M, fn() -> M>;

/// The series of `family` for each of `values`, in their order.
fn series<M: Clone, const N: usize>(
    family: &Fixed<M>,
    label: &'static str,
    values: [&'static str; N],
) -> [M; N] {
    values.map(|value| family.get_or_create_owned(&[(label, value)]))
}

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
        let endpoints = Endpoint::ALL.map(Endpoint::as_str);
        let durations: Fixed<Histogram> = Family::new_with_constructor(|| Histogram::new(BUCKETS));
        let duration = series(&durations, "endpoint", endpoints);
        registry.register(
            "verify_duration_seconds",
            "Time to decide a verification (excluding any failure delay), by endpoint",
            durations,
        );
        let unknown_scopes: Fixed<Counter> = Family::default();
        let unknown_scope = series(
            &unknown_scopes,
            "route",
            RouteKind::ALL.map(RouteKind::as_str),
        );
        registry.register(
            "verify_unknown_scope",
            "Requests whose route does not accept the key's namespace (answered NOT_FOUND), or \
             names no scope it could (scoped paths answered 404, TokenReviews for audiences not \
             served), by kind of route",
            unknown_scopes,
        );
        let throttled_family: Fixed<Counter> = Family::default();
        let throttled = series(&throttled_family, "endpoint", endpoints);
        registry.register(
            "verify_throttled",
            "Answers the verifier delayed, by endpoint: failed verifications past the per-client failure throttle, and costly decisions past their namespace's budget",
            throttled_family,
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
            unknown_scope,
            throttled,
            index_tokens,
            connections: Connections::register(registry),
            // Its own name: in `keysmith run` the controller's counter shares the registry.
            unreadable: Unreadables::register(registry, "index_unreadable_apikeys"),
        }
    }

    /// Count one verification.
    pub fn observe(&self, endpoint: Endpoint, code: Code, took: Duration) {
        self.requests[endpoint.index()][code.index()].inc();
        self.duration[endpoint.index()].observe(took.as_secs_f64());
    }

    /// Count a request whose route's scope does not cover what it asked for.
    pub fn unknown_scope(&self, route: RouteKind) {
        self.unknown_scope[route.index()].inc();
    }

    /// Count an answer a throttle delayed (a failure's, or a costly decision's).
    pub fn throttled(&self, endpoint: Endpoint) {
        self.throttled[endpoint.index()].inc();
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
        metrics.unknown_scope(RouteKind::Unscoped);
        metrics.throttled(Endpoint::TokenReview);
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
            text.contains(
                "keysmith_verify_duration_seconds_bucket{le=\"0.000005\",endpoint=\"authz\"} 1"
            ),
            "{text}"
        );
        // Every endpoint's histogram is there from the start too.
        for endpoint in ["verify", "tokenreview"] {
            assert!(
                text.contains(&format!(
                    "keysmith_verify_duration_seconds_count{{endpoint=\"{endpoint}\"}} 0"
                )),
                "{text}"
            );
        }
        for (route, count) in [
            ("scoped", 0),
            ("unscoped", 1),
            ("tokenreview", 0),
            ("invalid", 0),
        ] {
            let line = format!("keysmith_verify_unknown_scope_total{{route=\"{route}\"}} {count}");
            assert!(text.contains(&line), "{text}");
        }
        for (endpoint, count) in [("verify", 0), ("authz", 0), ("tokenreview", 1)] {
            let line =
                format!("keysmith_verify_throttled_total{{endpoint=\"{endpoint}\"}} {count}");
            assert!(text.contains(&line), "{text}");
        }
        assert!(text.contains("keysmith_index_tokens 7"), "{text}");
    }
}
