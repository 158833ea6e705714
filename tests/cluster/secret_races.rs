//! N10: a Secret that changes hands between the controller's ownership check and its write or
//! deletion keeps its new owner's content. The controller checks whose the Secret is from what it
//! read, and its write or deletion then names the uid and resourceVersion it read: the API
//! server refuses it (409) if the Secret is no longer that object at that version, and the key is
//! planned again from what is there now.
//!
//! On the emulator the controller's request is held while the test swaps the Secret, so the swap
//! lands exactly between the check and the act. The real API server cannot hold a request: there
//! the same steps run unheld and show the outcome, not the interleaving.

use crate::harness::controller::*;
use crate::harness::{emulator_only, eventually};
use k8s_openapi::api::core::v1::Secret;
use keysmith_emulator::Target;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn key(trigger: &str) -> String {
    format!(
        r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {{name: site, namespace: cms}}
spec:
  tokens: [{{name: delivery}}]
  rotation: {{trigger: "{trigger}"}}
"#
    )
}

/// What a stranger keeps in the Secret: `mine` = "theirs", no owner, no Keysmith labels.
pub fn is_the_strangers(secret: &Value) -> bool {
    secret_value(secret, "mine").as_deref() == Some("theirs")
        && secret["data"].as_object().map(|d| d.len()) == Some(1)
        && secret["metadata"]["ownerReferences"].is_null()
        && secret["metadata"]["labels"]["keysmith.dev/apikey"].is_null()
}

/// A Ready key `site` with its token Secret, at rest.
async fn ready_key() -> Harness {
    let h = Harness::start().await;
    h.apply(&key("one")).await;
    h.wait_key("site", "Ready", ready).await;
    h.settle().await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_replaced_after_the_ownership_check_is_not_overwritten() {
    let h = ready_key().await;
    let secrets: Api<Secret> = Api::namespaced(h.admin.clone(), NS);
    let emu = emulator_only(&h.cluster, "holding the Secret write until the swap");
    if let Some(emu) = emu {
        emu.faults().hold(Target::new("patch", "secrets"));
    }
    // A rotation: the controller reads its Secret, checks it is its own, writes the status with
    // the new token, then applies the Secret (held).
    h.apply(&key("two")).await;
    h.wait_key("site", "the rotated status", |k| {
        token(k, "delivery")["rotationTrigger"] == "two"
    })
    .await;
    // Someone deletes the key's Secret and creates their own under the name. Unheld (the real
    // server), the controller may put its Secret back in between: delete and create again until
    // the stranger's is the one in place.
    let stranger: Secret = serde_json::from_value(json!({
        "metadata": {"name": "site", "namespace": NS},
        "stringData": {"mine": "theirs"},
    }))
    .unwrap();
    let swap = || {
        eventually("the stranger's Secret to be in place", || async {
            let _ = secrets.delete("site", &DeleteParams::default()).await;
            secrets
                .create(&PostParams::default(), &stranger)
                .await
                .ok()
                .map(drop)
        })
    };
    swap().await;
    match emu {
        Some(emu) => emu.faults().release(),
        // Unheld, a reconcile that read no Secret just before the stranger's create still
        // applies one over it, the race docs/security.md keeps (server-side apply has no
        // create-only form): swap again until a settled controller has left the stranger's
        // Secret in place, which it can only do by reporting the conflict.
        None => loop {
            h.settle().await;
            if h.secret("site").await.is_some_and(|s| is_the_strangers(&s)) {
                break;
            }
            swap().await;
        },
    }
    h.wait_key("site", "Ready=False SecretConflict", |k| {
        condition(k, "Ready") == Some(("False".into(), "SecretConflict".into()))
    })
    .await;
    h.settle().await;
    let secret = h.secret("site").await.expect("the stranger's Secret");
    assert!(is_the_strangers(&secret), "overwritten: {secret}");
}

/// Take Secret `name` over as someone else would: no owner, none of Keysmith's labels or
/// annotations, their own data.
pub async fn take_over(secrets: &Api<Secret>, name: &str) {
    let takeover = json!({
        "metadata": {"ownerReferences": null, "labels": null, "annotations": null},
        "data": null,
    });
    secrets
        .patch(name, &PatchParams::default(), &Patch::Merge(&takeover))
        .await
        .expect("take over");
    secrets
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"mine": "theirs"}})),
        )
        .await
        .expect("write their data");
}

/// Wait until the controller has read Secret `name` since the request log was cleared.
pub async fn read_by_the_controller(h: &Harness, name: &str) {
    let user = controller_user();
    eventually("the controller's read of the Secret", || async {
        let read = h.cluster.requests(|e| {
            e.user == user && e.verb == "get" && e.resource == "secrets" && e.name == name
        });
        (!read.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_taken_over_after_the_ownership_check_is_not_deleted_on_revocation() {
    let h = ready_key().await;
    let secrets: Api<Secret> = Api::namespaced(h.admin.clone(), NS);
    let emu = emulator_only(&h.cluster, "holding the Secret deletion until the takeover");
    match emu {
        Some(emu) => {
            emu.faults().hold(Target::new("delete", "secrets"));
            h.cluster.clear_requests();
        }
        // Unheld, the revocation could delete the Secret before the takeover.
        None => take_over(&secrets, "site").await,
    }
    crate::harness::raw_apikeys(&h.admin, NS)
        .delete("site", &DeleteParams::default())
        .await
        .expect("delete the ApiKey");
    if let Some(emu) = emu {
        // Revocation read the Secret and found it the key's: its deletion comes next (held).
        read_by_the_controller(&h, "site").await;
        take_over(&secrets, "site").await;
        emu.faults().release();
    }
    eventually("the ApiKey to be gone", || async {
        h.apikey("site").await.is_none().then_some(())
    })
    .await;
    let secret = h.secret("site").await.expect("the taken-over Secret");
    assert!(is_the_strangers(&secret), "changed: {secret}");
}
