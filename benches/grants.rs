//! Grant evaluation on a realistic grant set: what the verifier pays per authorized request.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keysmith::api::{ApiKeySpec, Grant};
use keysmith::grants::{CompiledGrants, Context, Pattern, Request};
use keysmith::validation;

const KEY: &str = "cms/marketing-site";

/// A management key of a multi-site CMS: the `grants.yaml` example plus the usual extras.
fn grants() -> Vec<Grant> {
    serde_json::from_value(serde_json::json!([
        { "effect": "allow", "actions": ["content.read"], "resources": ["workspace:site-a:content:*"] },
        {
            "effect": "allow",
            "actions": ["content.create", "content.update"],
            "resources": ["workspace:site-a:content:pages:*", "workspace:site-a:content:posts:*"],
            "fields": ["hero_title", "body", "summary", "tags", "seo_title", "seo_description"],
            "conditions": { "status": ["draft", "review"], "locales": ["en", "de", "fr"], "own": true },
        },
        { "effect": "allow", "actions": ["users.read", "users.update"], "resources": ["workspace:site-a:users:*"] },
        { "effect": "allow", "actions": ["media.*"], "resources": ["workspace:site-a:media:*"] },
        { "effect": "deny", "actions": ["content.*"], "resources": ["workspace:*:content:legal:*"] },
        { "effect": "deny", "actions": ["content.update"], "fields": ["slug", "author"] },
        { "effect": "deny", "actions": ["*.delete"] },
    ]))
    .expect("benchmark grants deserialize")
}

fn evaluate(c: &mut Criterion) {
    let compiled = CompiledGrants::compile(&grants()).expect("benchmark grants compile");
    let fields = vec!["hero_title".to_string(), "body".to_string()];
    let update = Request {
        action: Some("content.update"),
        resource: Some("workspace:site-a:content:pages:home"),
        fields: &fields,
        context: Context {
            status: Some("draft"),
            locale: Some("de"),
            owner: Some(KEY),
        },
    };
    let read = Request {
        action: Some("content.read"),
        resource: Some("workspace:site-a:content:posts:42"),
        ..Request::default()
    };
    let legal = Request {
        resource: Some("workspace:site-a:content:legal:terms"),
        ..read
    };
    let unknown = Request {
        action: Some("billing.read"),
        resource: Some("workspace:site-a:billing:invoices"),
        ..Request::default()
    };
    let cases = [
        ("allowed update with fields and conditions", update),
        ("allowed read", read),
        ("denied by a deny grant", legal),
        ("no matching allow", unknown),
    ];
    let mut group = c.benchmark_group("grants/evaluate");
    for (name, request) in cases {
        group.bench_function(name, |b| {
            b.iter(|| black_box(&compiled).evaluate(black_box(&request), black_box(KEY)))
        });
    }
    group.finish();
}

fn pattern(c: &mut Criterion) {
    let glob = Pattern::parse("workspace:*:content:*:home").expect("benchmark pattern parses");
    c.bench_function("grants/pattern glob", |b| {
        b.iter(|| black_box(&glob).matches(black_box("workspace:site-a:content:pages:home")))
    });
}

/// The most expensive spec the API server admits: 63 deny grants of 64 action patterns that
/// each scan the whole action and fail at its end, then `allow *`, as large as the 256 KiB spec
/// cap lets them be. Checked against validation, so it is a spec a tenant can really write.
fn worst_grants() -> Vec<Grant> {
    let deny = |i: usize| {
        let actions: Vec<String> = (0..64)
            .map(|j| format!("*{}b{i}.{j}*", "a".repeat(50)))
            .collect();
        serde_json::json!({ "effect": "deny", "actions": actions })
    };
    let mut grants: Vec<serde_json::Value> = (0..63).map(deny).collect();
    grants.push(serde_json::json!({ "effect": "allow", "actions": ["*"] }));
    let spec: ApiKeySpec = serde_json::from_value(serde_json::json!({
        "tokens": [{ "name": "main" }],
        "grants": grants,
    }))
    .expect("worst-case spec deserializes");
    validation::validate(&spec).expect("the worst-case spec is admitted");
    spec.grants
}

fn worst_case(c: &mut Criterion) {
    let compiled = CompiledGrants::compile(&worst_grants()).expect("worst-case grants compile");
    // As long as a /v1/verify body (16 KiB) leaves room for.
    let action = "a".repeat(15_000);
    let request = Request {
        action: Some(&action),
        ..Request::default()
    };
    c.bench_function("grants/worst case", |b| {
        b.iter(|| black_box(&compiled).evaluate(black_box(&request), black_box(KEY)))
    });
}

criterion_group!(benches, evaluate, pattern, worst_case);
criterion_main!(benches);
