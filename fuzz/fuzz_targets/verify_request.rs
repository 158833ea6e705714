//! The `/v1/verify` body parser and the decision behind it, on arbitrary bytes: never panics,
//! and a token is found exactly when the answer is neither MALFORMED nor NOT_FOUND. A body whose
//! token is `@` is given the one indexed token, so the fuzzer reaches every later check.
#![no_main]

use std::sync::OnceLock;

use keysmith_core::api::{ApiKey, Encoding};
use keysmith_core::token::Token;
use keysmith_core::verifier::decision::Code;
use keysmith::verifier::http::parse_verify_body;
use keysmith_core::verifier::index::Index;
use libfuzzer_sys::fuzz_target;

fn fixture() -> &'static (Index, String) {
    static FIXTURE: OnceLock<(Index, String)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let token = Token::generate("ks_", 32, Encoding::Base62).expect("token");
        let key: ApiKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "k", "namespace": "ns"},
            "spec": {"environment": "production", "tokens": [{"name": "main"}],
                "grants": [
                    {"effect": "allow", "actions": ["content.*"], "resources": ["content:*"],
                     "fields": ["title"], "conditions": {"status": ["draft"], "locales": ["en"], "own": true}},
                    {"effect": "deny", "actions": ["content.delete"]}],
                "restrictions": {"ipAllowList": ["10.0.0.0/8", "2001:db8::/32"], "requiredHeaders": [
                    {"name": "x-literal", "value": "v"},
                    {"name": "x-secret", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}},
            "status": {"tokens": [{"name": "main", "id": token.id(), "sha256": token.sha256_hex(),
                "issuedAt": "2026-01-01T00:00:00Z", "expiresAt": "2030-01-01T00:00:00Z"}],
                "requiredHeaders": [{"name": "x-secret", "secretKeyRef": {"name": "s", "key": "k"},
                    "sha256": keysmith_core::token::sha256_hex("s3cret")}]},
        }))
        .expect("fixture ApiKey");
        let index = Index::default();
        index.apply(&key, jiff::Timestamp::UNIX_EPOCH);
        (index, token.expose_secret().to_owned())
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut body) = parse_verify_body(data) else {
        return;
    };
    let (index, token) = fixture();
    if body.token == "@" {
        body.token = token.as_str().into();
    }
    let headers = body.headers();
    let request = body.request(&headers, Some("192.0.2.1".parse().expect("address")));
    let now = "2027-01-01T00:00:00Z".parse().expect("time");
    let verdict = index.verify(&request, now);
    assert_eq!(
        verdict.found.is_some(),
        !matches!(verdict.code, Code::Malformed | Code::NotFound)
    );
});
