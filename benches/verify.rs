//! In-process verification with 100,000 tokens indexed (SPEC section 10: under 2 µs per call),
//! plus the index's build time and memory per token for 10,000 and 100,000 ApiKeys, with one
//! grant set shared by every key and with a set of its own per key, printed before the
//! Criterion runs (a counting allocator measures the bytes the index keeps).
//!
//! `cargo bench --bench verify`

use std::hint::black_box;
use std::ops::Range;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::Timestamp;
use keysmith::api::{ApiKey, Encoding};
use keysmith::grants::Context;
use keysmith::token::Token;
use keysmith::verifier::decision::{Code, VerifyRequest};
use keysmith::verifier::index::Index;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

/// ApiKey `key-<i>` in namespace `tenant-<i % 100>`: one slot, a realistic CMS grant set (the
/// same for every key, as when keys are stamped from a template), metadata, an environment, and
/// `token` as its current token.
fn apikey(i: usize, token: &Token) -> ApiKey {
    apikey_with(i, token, "content:*")
}

/// [`apikey`] with its own read resource pattern, so no two keys share a grant set.
fn apikey_with(i: usize, token: &Token, read: &str) -> ApiKey {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": format!("key-{i}"), "namespace": format!("tenant-{}", i % 100)},
        "spec": {
            "environment": "production",
            "tokens": [{"name": "delivery", "prefix": "cms_dt_", "metadata": {"content": "published"}}],
            "grants": [
                {"effect": "allow", "actions": ["content.read"], "resources": [read]},
                {"effect": "allow", "actions": ["content.update"], "resources": ["content:pages:*"],
                 "fields": ["title", "body"], "conditions": {"status": ["draft"], "own": true}},
                {"effect": "deny", "actions": ["*.delete"]},
            ],
        },
        "status": {"tokens": [{"name": "delivery", "id": token.id(), "sha256": token.sha256_hex(),
            "issuedAt": "2026-11-01T00:00:00Z", "expiresAt": "2027-11-01T00:00:00Z"}]},
    }))
    .expect("benchmark ApiKey deserializes")
}

/// ApiKeys `keys` (by number) with a fresh token each.
fn fleet(keys: Range<usize>, distinct_grants: bool) -> (Vec<ApiKey>, Vec<Token>) {
    let tokens: Vec<Token> = keys
        .clone()
        .map(|_| Token::generate("cms_dt_", 32, Encoding::Base62).expect("token"))
        .collect();
    let keys = keys
        .zip(&tokens)
        .map(|(i, t)| match distinct_grants {
            true => apikey_with(i, t, &format!("content:site-{i}:*")),
            false => apikey(i, t),
        })
        .collect();
    (keys, tokens)
}

fn now() -> Timestamp {
    "2026-11-23T10:00:00Z".parse().expect("time")
}

/// Build time and bytes per token for `n` ApiKeys, printed once. The keys are made in batches
/// that are dropped before the count, so only what the index keeps is counted, and only
/// [`Index::apply`] is timed.
fn report_index_cost(n: usize, distinct_grants: bool) {
    const BATCH: usize = 1_000;
    let before = counting_alloc::live_bytes();
    let index = Index::default();
    let mut took = Duration::ZERO;
    for batch in (0..n).step_by(BATCH) {
        let (keys, _tokens) = fleet(batch..(batch + BATCH).min(n), distinct_grants);
        let start = Instant::now();
        for key in &keys {
            index.apply(key, now());
        }
        took += start.elapsed();
    }
    let bytes = counting_alloc::live_bytes() - before;
    println!(
        "index of {n} ApiKeys ({} tokens, {} grant sets): built in {took:?} ({:?} per key), {} bytes per token",
        index.tokens(),
        if distinct_grants {
            "distinct"
        } else {
            "shared"
        },
        took / n as u32,
        bytes / index.tokens() as isize
    );
    black_box(index);
}

fn verify(c: &mut Criterion) {
    for n in [10_000, 100_000] {
        report_index_cost(n, false);
        report_index_cost(n, true);
    }
    // Built one key at a time: 100,000 ApiKey objects at once would dwarf the index.
    let tokens: Vec<Token> = (0..100_000)
        .map(|_| Token::generate("cms_dt_", 32, Encoding::Base62).expect("token"))
        .collect();
    let index = Index::default();
    for (i, t) in tokens.iter().enumerate() {
        index.apply(&apikey(i, t), now());
    }
    assert_eq!(index.tokens(), 100_000);
    let token = tokens[tokens.len() / 2].expose_secret().to_owned();
    let unknown = Token::generate("cms_dt_", 32, Encoding::Base62).expect("token");
    let malformed = format!("{}x", &token[..token.len() - 1]);
    let request = |token| VerifyRequest {
        environment: Some("production"),
        ..VerifyRequest::token(token)
    };
    let fields = vec!["title".to_string()];
    let mut authorize = request(&token);
    authorize.action = Some("content.update");
    authorize.resource = Some("content:pages:home");
    authorize.fields = &fields;
    authorize.context = Context {
        status: Some("draft"),
        locale: None,
        owner: Some("tenant-0/key-50000"),
    };
    assert_eq!(index.verify(&authorize, now()).code, Code::Valid);

    let mut group = c.benchmark_group("verify_100k_tokens");
    group.bench_function("valid_authenticate", |b| {
        b.iter(|| index.verify(black_box(&request(&token)), now()))
    });
    group.bench_function("valid_authorize_grants", |b| {
        b.iter(|| index.verify(black_box(&authorize), now()))
    });
    group.bench_function("not_found", |b| {
        b.iter(|| index.verify(black_box(&request(unknown.expose_secret())), now()))
    });
    group.bench_function("malformed", |b| {
        b.iter(|| index.verify(black_box(&request(&malformed)), now()))
    });
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
