//! ValidatingAdmissionPolicies, which the chart uses to let the verifier change only
//! `lastUsedAt` in ApiKey status: the real API server enforces them, the emulator does not serve
//! `admissionregistration.k8s.io` at all (docs/emulator.md). What the chart's own policy allows
//! and refuses is `tests/shipped/chart_real.rs`'s business; this test pins the difference, so it fails
//! when the emulator starts implementing policies and the list in docs/emulator.md must change.

use crate::harness::verifier::{NS, cluster, eventually, status_token, token, verifier_identity};
use keysmith::api::ApiKey;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

/// A policy refusing every status write of the verifier's ServiceAccount, and its binding.
fn refuse_verifier_status_writes(user: &str) -> [serde_json::Value; 2] {
    [
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": "no-verifier-status"},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{"apiGroups": ["keysmith.dev"],
                    "apiVersions": ["*"], "operations": ["UPDATE"], "resources": ["apikeys/status"]}]},
                "matchConditions": [{"name": "verifier",
                    "expression": format!("request.userInfo.username == '{user}'")}],
                "validations": [{"expression": "false", "message": "refused by policy"}],
            },
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": "no-verifier-status"},
            "spec": {"policyName": "no-verifier-status", "validationActions": ["Deny"]},
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_policies_bind_the_verifier_on_the_real_server_only() {
    let cluster = cluster().await;
    let keysmith_testenv::Identity::ServiceAccount { namespace, name } = verifier_identity() else {
        panic!("the verifier runs as a ServiceAccount");
    };
    let user = format!("system:serviceaccount:{namespace}:{name}");
    let admin = Api::<ApiKey>::namespaced(cluster.client().await.expect("admin"), NS);
    let key: ApiKey = serde_json::from_value(json!({
        "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": "k", "namespace": NS}, "spec": {"tokens": [{"name": "main"}]},
    }))
    .expect("ApiKey");
    admin
        .create(&PostParams::default(), &key)
        .await
        .expect("created");
    let status = json!({"status": {"tokens": [status_token("main", &token("ks_"))]}});
    admin
        .patch_status("k", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    let verifier = Api::<ApiKey>::namespaced(
        cluster
            .client_as(&verifier_identity())
            .await
            .expect("verifier client"),
        NS,
    );
    let used = |at: &str| {
        let op = json!([{"op": "add", "path": "/status/tokens/0/lastUsedAt", "value": at}]);
        Patch::Json::<()>(serde_json::from_value(op).expect("patch"))
    };

    let mut applied = Vec::new();
    for object in refuse_verifier_status_writes(&user) {
        applied.push(cluster.apply_object(&object).await);
    }
    if cluster.emulator().is_some() {
        assert!(
            applied.iter().all(Result::is_err),
            "the emulator now serves admission policies: enforce them and update docs/emulator.md"
        );
        verifier
            .patch_status("k", &PatchParams::default(), &used("2026-11-23T10:00:00Z"))
            .await
            .expect("nothing refuses the verifier's write on the emulator");
        return;
    }
    for result in applied {
        result.expect("the real server stores the policy");
    }
    // Policies take effect once the server has loaded them.
    eventually("the policy to refuse the verifier's write", || async {
        let refused = verifier
            .patch_status("k", &PatchParams::default(), &used("2026-11-23T10:00:00Z"))
            .await
            .err()?;
        refused
            .to_string()
            .contains("refused by policy")
            .then_some(())
    })
    .await;
}
