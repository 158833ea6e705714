//! Grant evaluation on a realistic grant set: what the verifier pays per authorized request.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keysmith::api::{ApiKeySpec, Grant};
use keysmith::grants::{self, CompiledGrants, Context, Pattern, Request};
use keysmith::validation;

#[path = "shared/worst_case.rs"]
mod worst_case;

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

/// A spec a tenant can really write: validation must admit it.
fn admitted(grants: Vec<serde_json::Value>) -> CompiledGrants {
    let spec: ApiKeySpec = serde_json::from_value(serde_json::json!({
        "tokens": [{ "name": "main" }],
        "grants": grants,
    }))
    .expect("worst-case spec deserializes");
    let valid = validation::validate(&spec).expect("the worst-case spec is admitted");
    valid.slots[0].grants.clone()
}

/// The most expensive patterns validation admits ([`worst_case::pattern_grants`]).
fn worst_patterns() -> CompiledGrants {
    admitted(worst_case::pattern_grants())
}

/// The most expensive field lists validation admits: 63 deny grants on every action sharing the
/// [`grants::MAX_FIELD_ENTRIES`] entries, long fields that share all but their last bytes with
/// the requested ones, so every comparison of every lookup runs to the end; then `allow *`.
fn worst_fields() -> CompiledGrants {
    let deny = |i: usize| {
        let fields: Vec<String> = (i * 4..(i + 1) * 4)
            .map(|j| format!("{}{j:04}", "f".repeat(grants::MAX_FIELD_LEN - 4)))
            .collect();
        serde_json::json!({ "effect": "deny", "actions": ["*"], "fields": fields })
    };
    let mut list: Vec<serde_json::Value> = (0..63).map(deny).collect();
    list.push(serde_json::json!({ "effect": "allow", "actions": ["*"] }));
    admitted(list)
}

fn worst_case(c: &mut Criterion) {
    let patterns = worst_patterns();
    let fields_spec = worst_fields();
    let action = "a".repeat(grants::MAX_ACTION_LEN);
    let fields: Vec<String> = (0..grants::MAX_REQUEST_FIELDS)
        .map(|j| format!("{}~{j:03}", "f".repeat(grants::MAX_FIELD_LEN - 4)))
        .collect();
    let long = Request {
        action: Some(&action),
        ..Request::default()
    };
    let with_fields = Request {
        fields: &fields,
        ..long
    };
    // What the issue measured: an action as long as a /v1/verify body (16 KiB) leaves room for.
    let oversized = "a".repeat(15_000);
    let cases = [
        ("patterns", &patterns, long),
        ("fields", &fields_spec, with_fields),
        (
            "oversized action",
            &patterns,
            Request {
                action: Some(&oversized),
                ..Request::default()
            },
        ),
    ];
    let mut group = c.benchmark_group("grants/worst case");
    for (name, compiled, request) in cases {
        group.bench_function(name, |b| {
            b.iter(|| black_box(compiled).evaluate(black_box(&request), black_box(KEY)))
        });
    }
    group.finish();
}

criterion_group!(benches, evaluate, pattern, worst_case);
criterion_main!(benches);
