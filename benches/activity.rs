//! The usage ring's cost on the verification hot path: `Activity::record` for a token already
//! tracked (the steady state: a map probe under one of 32 locks and a copy into the ring), and
//! for tokens used for the first time (one allocation each), with 10,000 tokens tracked.
//!
//! `cargo bench --bench activity`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keysmith::api::{ApiKey, Encoding};
use keysmith::token::Token;
use keysmith::verifier::activity::Activity;
use keysmith::verifier::audit::{Endpoint, Request};
use keysmith::verifier::decision::{Code, VerifyRequest};
use keysmith::verifier::index::{Found, Index};

const KEYS: usize = 10_000;

fn found(n: usize) -> Vec<Found> {
    let index = Index::default();
    let now = jiff::Timestamp::now();
    (0..n)
        .map(|i| {
            let token = Token::generate("ks_", 32, Encoding::Base62).expect("token");
            let apikey: ApiKey = serde_json::from_value(serde_json::json!({
                "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
                "metadata": {"name": format!("key-{i}"), "namespace": "load"},
                "spec": {"tokens": [{"name": "primary", "prefix": "ks_"}]},
                "status": {"tokens": [{"name": "primary", "id": token.id(),
                    "sha256": token.sha256_hex(), "issuedAt": "2026-11-01T00:00:00Z"}]},
            }))
            .expect("ApiKey");
            index.apply(&apikey, now);
            let request = VerifyRequest::token(token.expose_secret());
            index.verify(&request, now).found.expect("indexed")
        })
        .collect()
}

fn activity(c: &mut Criterion) {
    let keys = found(KEYS);
    let request = Request {
        endpoint: Endpoint::Authz,
        client: Some("10.1.4.17".parse().expect("address")),
        end_user: None,
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) billing-service/2.3"),
        action: Some("content.read"),
        resource: Some("content:pages:home"),
    };
    let now = jiff::Timestamp::now();
    let tracked = Activity::new(KEYS);
    for f in &keys {
        tracked.record(f, Code::Valid, &request, now);
    }
    let mut group = c.benchmark_group("activity_10k_tokens");
    let hot = &keys[KEYS / 2];
    group.bench_function("record_tracked_token", |b| {
        b.iter(|| tracked.record(black_box(hot), Code::Valid, black_box(&request), now))
    });
    group.bench_function("record_first_use_of_10k_tokens", |b| {
        b.iter(|| {
            let fresh = Activity::new(KEYS);
            for f in &keys {
                fresh.record(f, Code::Valid, &request, now);
            }
            fresh
        })
    });
    group.finish();
}

criterion_group!(benches, activity);
criterion_main!(benches);
