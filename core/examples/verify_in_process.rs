//! Verifying Keysmith tokens inside a Rust service, without a round trip to `keysmith verifier`.
//!
//! A service that embeds `keysmith-core` keeps an [`Index`] of the ApiKeys it accepts (fed by its
//! own watch of `apikeys.keysmith.dev`, or by any other source of ApiKey objects) and asks it
//! about each presented token. The index holds only the SHA-256 hashes the controller writes to
//! `status.tokens`; the plaintext exists only in the Secret the client reads and in the request.
//!
//! `cargo run -p keysmith-core --example verify_in_process`

use std::error::Error;

use jiff::Timestamp;
use keysmith_core::api::ApiKey;
use keysmith_core::planner::{self, headers::HeaderSecrets};
use keysmith_core::verifier::decision::{Code, VerifyRequest};
use keysmith_core::verifier::index::Index;

fn main() -> Result<(), Box<dyn Error>> {
    let now = Timestamp::now();

    // An ApiKey as the API server returns it. Here the controller's pure planner stands in for
    // the cluster: it mints the token, writes its hash to status and the token to the Secret,
    // exactly as `keysmith controller` would.
    let mut key: ApiKey = serde_json::from_value(serde_json::json!({
        "apiVersion": "keysmith.dev/v1alpha1",
        "kind": "ApiKey",
        "metadata": {"name": "site", "namespace": "cms", "uid": "4b8f0c1e-2d3a-4e5f-8a9b-0c1d2e3f4a5b"},
        "spec": {
            "tokens": [{"name": "delivery", "prefix": "cms_dt_", "secretKey": "DELIVERY"}],
            "grants": [
                {"effect": "allow", "actions": ["content.read"], "resources": ["content:*"]},
                {"effect": "deny", "actions": ["*.delete"]},
            ],
        },
    }))?;
    let observed = planner::Observed {
        key: &key,
        secret: None,
        header_secrets: &HeaderSecrets::new(),
        published: &[],
        personal: Default::default(),
        access: Default::default(),
    };
    let plan = planner::plan(&observed, now, &mut planner::mint_token)?;
    key.status = plan.status;
    let secret = plan.secret.ok_or("a new key gets a Secret")?.to_secret();

    // The service: index every ApiKey it accepts; re-apply one on each change, revoke it on
    // deletion (`Index::revoke`), and keep only the listed ones after a relist (`Index::retain`).
    let index = Index::default();
    let applied = index.apply(&key, now);
    println!("indexed {} token(s) of cms/site", applied.tokens);

    // A client presents the token it read from the Secret.
    let data = secret.data.ok_or("the Secret has data")?;
    let presented = String::from_utf8(data["DELIVERY"].0.clone())?;
    let request = |action| VerifyRequest {
        action: Some(action),
        resource: Some("content:pages:home"),
        ..VerifyRequest::token(&presented)
    };

    for (action, expected) in [
        ("content.read", Code::Valid),
        ("content.delete", Code::Forbidden),
    ] {
        let verdict = index.verify(&request(action), now);
        // Only the token's public id is safe to print, never the token.
        let id = verdict.token_id.unwrap_or("-");
        println!("{action} with token {id}: {}", verdict.code);
        assert_eq!(verdict.code, expected);
    }
    Ok(())
}
