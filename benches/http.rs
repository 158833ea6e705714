//! The verification API's request handling in process, without sockets: the user-space cost of
//! one `/v1/verify` or `/v1/authz` answer (parse, decide, metrics, usage, audit line, answer),
//! with 10,000 ApiKeys indexed. `bench/load.sh` measures the same through the kernel; this is
//! the part Keysmith's own code decides, and it is steady on a busy machine.
//!
//! `cargo bench --bench http`

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::Full;
use hyper::Request;
use hyper::body::Bytes;
use keysmith::api::{ApiKey, Encoding};
use keysmith::telemetry::LogFormat;
use keysmith::token::Token;
use keysmith::verifier::http::handle;
use keysmith::verifier::tenancy::Tenancy;
use keysmith::verifier::usage::UsageReporter;
use keysmith::verifier::{Options, Verifier};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

const KEYS: usize = 10_000;

fn apikey(i: usize, token: &Token) -> ApiKey {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": format!("key-{i}"), "namespace": "load"},
        "spec": {
            "environment": "production",
            "tokens": [{"name": "primary", "prefix": "ks_"}],
            "grants": [{"effect": "allow", "actions": ["content.read"], "resources": ["content:*"]}],
        },
        "status": {"tokens": [{"name": "primary", "id": token.id(), "sha256": token.sha256_hex(),
            "issuedAt": "2026-11-01T00:00:00Z", "expiresAt": "2036-11-01T00:00:00Z"}]},
    }))
    .expect("benchmark ApiKey deserializes")
}

fn http(c: &mut Criterion) {
    let (usage, _usage_rx) = UsageReporter::channel();
    // Unscoped routes accepting every namespace: the bench measures the whole decision.
    let options = Options {
        tenancy: Tenancy::any(),
        ..Options::default()
    };
    let verifier = Verifier::new(&options, usage, &mut Registry::default());
    let tokens: Vec<Token> = (0..KEYS)
        .map(|_| Token::generate("ks_", 32, Encoding::Base62).expect("token"))
        .collect();
    let now = jiff::Timestamp::now();
    for (i, t) in tokens.iter().enumerate() {
        verifier.index.apply(&apikey(i, t), now);
    }
    let token = tokens[KEYS / 2].expose_secret().to_owned();
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("address");
    let body = Bytes::from(format!(
        r#"{{"token":"{token}","action":"content.read","resource":"content:pages:home"}}"#
    ));
    let verify = || {
        Request::post("/v1/verify")
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .header("user-agent", "wrk")
            .body(Full::new(body.clone()))
            .expect("request")
    };
    let bearer = format!("Bearer {token}");
    let authz = || {
        Request::get("/v1/authz?action=content.read&resource=content:pages:home")
            .header("authorization", &bearer)
            .header("user-agent", "wrk")
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    // With a timer: the handler bounds how long a body may take.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let answer = runtime.block_on(handle(&verifier, peer, verify()));
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "application/json");
    let answer = runtime.block_on(handle(&verifier, peer, authz()));
    assert_eq!(answer.headers()["x-keysmith-code"], "VALID");

    let mut group = c.benchmark_group("http_10k_keys");
    let run = |name: &str, group: &mut criterion::BenchmarkGroup<_>| {
        group.bench_function(format!("verify_{name}"), |b| {
            b.iter(|| runtime.block_on(handle(&verifier, peer, black_box(verify()))))
        });
        group.bench_function(format!("authz_{name}"), |b| {
            b.iter(|| runtime.block_on(handle(&verifier, peer, black_box(authz()))))
        });
    };
    run("without_audit", &mut group);
    // Audit lines formatted as in production (JSON), written to nowhere.
    let subscriber =
        keysmith::telemetry::subscriber(LogFormat::Json, EnvFilter::new("info"), std::io::sink);
    tracing::subscriber::with_default(subscriber, || run("with_json_audit", &mut group));
    group.finish();
}

criterion_group!(benches, http);
criterion_main!(benches);
