//! The usage ring's memory at 10,000 keys, each token used until its ring is full with every
//! field at its longest: measured with a counting allocator and held to the bound the docs state
//! (`activity::TOKEN_BYTES` per tracked token). Prints the figure (`--nocapture`).

#[path = "../benches/support/counting_alloc.rs"]
mod counting_alloc;

use keysmith::api::{ApiKey, Encoding};
use keysmith::token::Token;
use keysmith::verifier::activity::{
    Activity, MAX_ACTION, MAX_RESOURCE, MAX_USER_AGENT, RING, TOKEN_BYTES,
};
use keysmith::verifier::audit::{Endpoint, Request};
use keysmith::verifier::decision::{Code, VerifyRequest};
use keysmith::verifier::index::{Found, Index};

const KEYS: usize = 10_000;

fn apikey(i: usize, token: &Token) -> ApiKey {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": format!("key-{i:05}"), "namespace": "team-payments"},
        "spec": {"tokens": [{"name": "primary", "prefix": "ks_"}]},
        "status": {"tokens": [{"name": "primary", "id": token.id(), "sha256": token.sha256_hex(),
            "issuedAt": "2026-11-01T00:00:00Z"}]},
    }))
    .expect("ApiKey")
}

#[test]
fn ten_thousand_full_rings_stay_within_the_stated_bound() {
    let index = Index::default();
    let now: jiff::Timestamp = "2026-11-26T10:00:00Z".parse().unwrap();
    let found: Vec<Found> = (0..KEYS)
        .map(|i| {
            let token = Token::generate("ks_", 32, Encoding::Base62).expect("token");
            index.apply(&apikey(i, &token), now);
            let request = VerifyRequest::token(token.expose_secret());
            index.verify(&request, now).found.expect("indexed")
        })
        .collect();
    // Longer than every limit, so every stored field is at its longest.
    let user_agent = "u".repeat(MAX_USER_AGENT * 2);
    let action = "a".repeat(MAX_ACTION * 2);
    let resource = "r".repeat(MAX_RESOURCE * 2);
    let request = Request {
        endpoint: Endpoint::Verify,
        client: Some("2001:db8::1".parse().unwrap()),
        end_user: Some("2001:db8::2".parse().unwrap()),
        user_agent: Some(&user_agent),
        action: Some(&action),
        resource: Some(&resource),
    };

    let before = counting_alloc::live_bytes();
    let activity = Activity::new(KEYS);
    for (i, f) in found.iter().enumerate() {
        for n in 0..RING {
            let at = now + jiff::SignedDuration::from_secs((i * RING + n) as i64);
            activity.record(f, Code::Valid, &request, at);
        }
    }
    let bytes = counting_alloc::live_bytes() - before;
    assert_eq!(activity.tracked(), KEYS);
    let per_token = bytes as f64 / KEYS as f64;
    println!(
        "usage activity: {KEYS} tokens with full rings hold {bytes} bytes ({:.1} MiB, {per_token:.0} \
         bytes per token; bound {TOKEN_BYTES})",
        bytes as f64 / (1024.0 * 1024.0)
    );
    assert!(bytes > 0);
    assert!(
        bytes as usize <= KEYS * TOKEN_BYTES,
        "{bytes} bytes for {KEYS} tokens exceeds the stated bound of {TOKEN_BYTES} per token"
    );
    // Recording more into full rings allocates nothing.
    let full = counting_alloc::live_bytes();
    for f in &found {
        activity.record(f, Code::Forbidden, &request, now);
    }
    assert_eq!(counting_alloc::live_bytes(), full);
}
