//! The one harness of the integration tests. Every suite runs against the backend that
//! `KEYSMITH_TEST_CLUSTER` names: the API emulator (default) or a real kube-apiserver, etcd and
//! kube-controller-manager (`real`, built by `testenv/install`). Either way RBAC is on and the
//! controller and verifier act as the chart's ServiceAccounts with the chart's rules.
//!
//! - [`controller`]: a controller running in-process with a clock the test moves, and the API
//!   writes it made (the emulator's request log or the real server's audit log).
//! - [`verifier`]: a verifier running in-process, ApiKeys whose status holds hashes of tokens the
//!   test minted, and helpers to ask it.
//! - [`http`]: a minimal HTTP/1.1 client; [`logs`]: the process's log lines, captured.
//! - [`github`]: a signing key and signed headers, as GitHub sends leak reports.
#![allow(dead_code, unused_imports)]

pub mod controller;
pub mod github;
pub mod http;
pub mod logs;
pub mod verifier;

pub use keysmith_emulator::{Config, eventually};
pub use keysmith_testenv::{Backend, Cluster, Identity};
use serde_json::{Value, json};

/// A cluster prepared like one with the chart installed, plus `namespace`.
pub async fn cluster(namespace: &str) -> Cluster {
    let cluster = Cluster::with_chart(Backend::from_env(), Config::default())
        .await
        .expect("the test cluster starts");
    cluster
        .apply_object(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        )
        .await
        .expect("namespace applies");
    cluster
}

/// Clients of `cluster` acting as the chart's ServiceAccounts (real tokens on a real server).
pub async fn chart_clients(cluster: &Cluster) -> keysmith::devcluster::ChartClients {
    use keysmith::devcluster::{controller_identity, verifier_identity};
    keysmith::devcluster::ChartClients {
        controller: cluster
            .client_as(&controller_identity())
            .await
            .expect("controller client"),
        verifier: cluster
            .client_as(&verifier_identity())
            .await
            .expect("verifier client"),
    }
}

/// The emulator for a test (or a part of one) that needs what only it can do, such as fault
/// injection; `None`, with a line saying what was skipped, on the real API server.
pub fn emulator_only<'a>(
    cluster: &'a Cluster,
    what: &str,
) -> Option<&'a keysmith_emulator::Emulator> {
    let emu = cluster.emulator();
    if emu.is_none() {
        println!("skipped on the real API server (needs the emulator's fault injection): {what}");
    }
    emu
}

/// Fail a test that needs the real API server when it runs on the emulator: `testenv/test`
/// runs such a test (marked `#[ignore]`) only in its real pass, so it is never counted as
/// passed where it could not run.
pub fn needs_real_server(what: &str) {
    assert!(
        real(),
        "this test needs a real kube-apiserver ({what}): run it with KEYSMITH_TEST_CLUSTER=real"
    );
}

/// The emulator for a test that needs what only it can do (fault injection); fails on the real
/// API server, whose pass in `testenv/test` skips such a test by name.
pub fn needs_emulator<'a>(cluster: &'a Cluster, what: &str) -> &'a keysmith_emulator::Emulator {
    cluster.emulator().unwrap_or_else(|| {
        panic!(
            "this test needs the API emulator ({what}): testenv/test skips it on the real server"
        )
    })
}

/// The chart's `keysmith-apikeys-view` ClusterRole (read ApiKeys, never their Secrets) and a
/// RoleBinding of it to `user` in `namespace`, as YAML to apply.
pub fn view_role_for(user: &str, namespace: &str) -> String {
    format!(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: keysmith-apikeys-view}}
rules:
  - apiGroups: ["keysmith.dev"]
    resources: ["apikeys", "apikeys/status"]
    verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {user}, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: keysmith-apikeys-view}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]
"#
    )
}

/// The number in environment variable `name` (a test's budget), or `default` when unset.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

/// Whether the suites run against the real API server.
pub fn real() -> bool {
    Backend::from_env() == Backend::Real
}

/// The admin's view of ApiKeys as untyped objects: a typed `Api<ApiKey>` cannot read back the
/// unreadable ones these helpers write.
pub fn raw_apikeys(admin: &kube::Client, namespace: &str) -> kube::Api<kube::api::DynamicObject> {
    let resource = kube::api::ApiResource::erase::<keysmith::api::ApiKey>(&());
    kube::Api::namespaced_with(admin.clone(), namespace, &resource)
}

/// Merge `patch` into ApiKey `name`, creating it from `patch` when it does not exist.
pub async fn write_raw_apikey(
    admin: &kube::Client,
    namespace: &str,
    name: &str,
    patch: Value,
) -> kube::Result<()> {
    use kube::api::{Patch, PatchParams, PostParams};
    let api = raw_apikeys(admin, namespace);
    if api.get_opt(name).await?.is_some() {
        return api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(drop);
    }
    let mut object = json!({
        "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": name, "namespace": namespace},
    });
    json_patch::merge(&mut object, &patch);
    let object = serde_json::from_value(object).expect("an object");
    api.create(&PostParams::default(), &object).await.map(drop)
}

/// Write `spec.tokens: "oops"` into ApiKey `name`, as an object written before a schema change
/// is: accepted under a CRD variant whose `spec.tokens` may be anything, then the real CRD
/// applied back (the server does not validate stored objects again). Keysmith cannot read it.
pub async fn write_unreadable_apikey(cluster: &Cluster, namespace: &str, name: &str) {
    let admin = cluster.client().await.expect("admin client");
    let real = serde_json::to_value(keysmith::crd::apikey_crd()).unwrap();
    let mut loose = real.clone();
    let spec = &mut loose["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    spec["properties"]["tokens"] = json!({"x-kubernetes-preserve-unknown-fields": true});
    // Its rules assume `tokens` is a list.
    spec.as_object_mut()
        .unwrap()
        .remove("x-kubernetes-validations");
    cluster
        .apply_object(&loose)
        .await
        .expect("loose CRD applies");
    // The server switches to a changed schema a moment after the write.
    eventually("the loose schema to accept tokens: \"oops\"", || async {
        let patch = json!({"spec": {"tokens": "oops"}});
        write_raw_apikey(&admin, namespace, name, patch).await.ok()
    })
    .await;
    cluster.apply_object(&real).await.expect("real CRD applies");
}
