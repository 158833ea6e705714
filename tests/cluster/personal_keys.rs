//! Personal keys (`spec.owner`) and the controller, on both backends: the example is minted as
//! it says, its tokens are capped at the platform's lifetime, and a second key of the same owner
//! in a namespace stays unminted until the first is gone. (Who may create them, and who may
//! write their tokens, are the chart's admission policies: `tests/shipped/chart_real.rs`.)

use jiff::SignedDuration;
use kube::api::DeleteParams;
use serde_json::Value;

use crate::harness::controller::{Harness, condition, ready, token};
use keysmith_emulator::eventually;

const EXAMPLE: &str = include_str!("../../examples/personal-key.yaml");
const EXAMPLE_NS: &str = "default";

/// How long a key's current token of `slot` lives, from its status.
fn lifetime(key: &Value, slot: &str) -> SignedDuration {
    let at = |field: &str| -> jiff::Timestamp {
        token(key, slot)[field]
            .as_str()
            .expect(field)
            .parse()
            .expect("a time")
    };
    at("expiresAt").duration_since(at("issuedAt"))
}

async fn apikey(h: &Harness, name: &str) -> Option<Value> {
    h.cluster
        .get("keysmith.dev/v1alpha1", "ApiKey", EXAMPLE_NS, name)
        .await
}

async fn wait_for(h: &Harness, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(what, || async {
        apikey(h, name).await.filter(|k| check(k))
    })
    .await
}

/// A personal key of `username` in the example's namespace.
fn personal(name: &str, username: &str, expires_after: &str) -> String {
    format!(
        "apiVersion: keysmith.dev/v1alpha1\nkind: ApiKey\n\
         metadata: {{name: {name}, namespace: {EXAMPLE_NS}}}\n\
         spec:\n  owner: {{username: {username}}}\n  tokens: [{{name: t}}]\n  \
         expiresAfter: {expires_after}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_personal_key_per_owner_is_minted_with_capped_tokens() {
    let h = Harness::start().await;
    h.apply(EXAMPLE).await;
    let first = wait_for(&h, "alice-cli", "the example to be Ready", ready).await;
    assert_eq!(
        lifetime(&first, "kubectl"),
        SignedDuration::from_hours(30 * 24)
    );
    // Status first, then the Secret.
    eventually("the example's Secret to hold its token", || async {
        let secret = h
            .cluster
            .get("v1", "Secret", EXAMPLE_NS, "alice-cli")
            .await?;
        secret["data"]["token"].is_string().then_some(())
    })
    .await;

    // A lifetime beyond the platform's cap (the default 90 days) is capped.
    h.apply(&personal("bobs", "bob", "365d")).await;
    let bobs = wait_for(&h, "bobs", "bob's key to be Ready", ready).await;
    assert_eq!(lifetime(&bobs, "t"), SignedDuration::from_hours(90 * 24));

    // alice's second key waits, naming her first, and gets no Secret.
    h.apply(&personal("alice-second", "alice", "1d")).await;
    let second = wait_for(&h, "alice-second", "the second key to be refused", |k| {
        condition(k, "Ready").is_some_and(|(status, _)| status == "False")
    })
    .await;
    let conditions = second["status"]["conditions"]
        .as_array()
        .expect("conditions");
    let reason = conditions
        .iter()
        .find(|c| c["type"] == "Ready")
        .expect("Ready");
    assert_eq!(reason["reason"], "DuplicatePersonalKey", "{second}");
    assert!(
        reason["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"alice-cli\"")),
        "{second}"
    );
    assert!(
        second["status"]["tokens"]
            .as_array()
            .is_none_or(Vec::is_empty)
    );
    assert!(
        h.cluster
            .get("v1", "Secret", EXAMPLE_NS, "alice-second")
            .await
            .is_none()
    );

    // Once the first is gone (revoked), the second is hers.
    let keys: kube::Api<keysmith::api::ApiKey> = kube::Api::namespaced(h.admin.clone(), EXAMPLE_NS);
    keys.delete("alice-cli", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the second key to be minted", || async {
        // Its recheck would come within a minute; a resync asks at once.
        h.clock.resync();
        apikey(&h, "alice-second").await.filter(ready)
    })
    .await;
}

/// The CRD keeps a key personal, and whose, from its creation (transition rules, which both
/// backends evaluate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_is_fixed_at_creation() {
    use kube::api::{Patch, PatchParams};
    let h = Harness::start().await;
    h.apply(&personal("mine", "alice", "1d")).await;
    h.apply(
        "apiVersion: keysmith.dev/v1alpha1\nkind: ApiKey\n\
         metadata: {name: plain, namespace: default}\nspec: {tokens: [{name: t}]}\n",
    )
    .await;
    let keys: kube::Api<keysmith::api::ApiKey> = kube::Api::namespaced(h.admin.clone(), EXAMPLE_NS);
    for (name, patch, says) in [
        (
            "mine",
            serde_json::json!({"spec": {"owner": {"username": "bob"}}}),
            "owner is immutable",
        ),
        (
            "mine",
            serde_json::json!({"spec": {"owner": null}}),
            "owner cannot be added to or removed",
        ),
        (
            "plain",
            serde_json::json!({"spec": {"owner": {"username": "alice"}}}),
            "owner cannot be added to or removed",
        ),
    ] {
        let refused = keys
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect_err("the CRD refuses it");
        assert!(
            refused.to_string().contains(says),
            "{name} {patch}: {refused}"
        );
    }
    // Everything else about a personal key stays editable.
    let edit = serde_json::json!({"spec": {"description": "alice's laptop"}});
    keys.patch("mine", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("an ordinary edit");
}
