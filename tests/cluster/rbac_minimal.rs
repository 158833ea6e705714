//! The chart's RBAC is sufficient and minimal: the controller and the verifier run as their
//! ServiceAccounts under exactly the rules in `charts/keysmith/files/`, through a scenario that
//! uses every feature (mint, rotation with restarts of every workload kind, an Argo Rollout
//! among them, and a missing target, required headers from a Secret, usage write-back, a failed
//! write reported in status, revocation, leader election). No request is denied, and every verb on every resource the
//! rules grant is used, so removing any one of them fails this test (or, for a verb the code
//! stops needing, makes the test ask for its removal). On the real backend the witness is the API server's audit log and the judge
//! its RBAC authorizer, with real ServiceAccount tokens.

use std::collections::BTreeSet;

use crate::harness::verifier::{Identity, eventually, request};
use crate::harness::{chart_clients, cluster};
use keysmith::api::ApiKey;
use keysmith::components;
use keysmith::controller;
use keysmith::devcluster;
use keysmith::telemetry::Shutdown;
use keysmith_testenv::rbac::{self, Permission};
use kube::Api;

const CONTROLLER_RULES: &str = include_str!("../../charts/keysmith/files/controller-rules.yaml");
const LEADER_RULES: &str =
    include_str!("../../charts/keysmith/files/controller-leader-election-rules.yaml");
const VERIFIER_RULES: &str = include_str!("../../charts/keysmith/files/verifier-rules.yaml");

/// Every permission a chart rules file grants.
fn granted(rules: &str) -> BTreeSet<Permission> {
    rbac::granted(&serde_saphyr::from_str(rules).expect("rules parse"))
}

fn identity_user(identity: &Identity) -> String {
    match identity {
        Identity::ServiceAccount { namespace, name } => {
            format!("system:serviceaccount:{namespace}:{name}")
        }
        other => panic!("not a ServiceAccount: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_rules_are_sufficient_and_every_granted_verb_is_used() {
    let cluster = cluster("default").await;
    cluster
        .apply_yaml(&rbac::workloads("default"))
        .await
        .expect("workloads");
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = api.local_addr().unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let components = devcluster::components(
        chart_clients(&cluster).await,
        "rbac-test",
        controller::system_clock(),
        api,
        metrics,
        None,
    );
    components::preflight(&components)
        .await
        .expect("the chart's rules suffice to start");
    let (stop, shutdown) = Shutdown::new();
    let running = tokio::spawn(components::serve(components, shutdown));

    // Mint, then rotate twice: restarts of every kind, and the same missing-target warning
    // twice, which the event recorder sends as a create and then a patch of the series.
    for trigger in ["one", "two", "three"] {
        cluster
            .apply_yaml(&rbac::key("default", trigger))
            .await
            .expect("ApiKey applies");
        eventually("the rotation to be delivered", || async {
            let key = cluster
                .get("keysmith.dev/v1alpha1", "ApiKey", "default", "everything")
                .await?;
            let slot = &key["status"]["tokens"][0];
            (slot["rotationTrigger"] == trigger).then_some(())?;
            let token = rbac::token(&cluster, "default").await?;
            (keysmith::token::sha256_hex(&token) == slot["sha256"]).then_some(())
        })
        .await;
    }

    // The verifier: a verification with the header from the Secret, which writes usage back.
    let token = rbac::token(&cluster, "default")
        .await
        .expect("the Secret holds the token");
    let body = serde_json::json!({"token": token, "action": "read", "headers": {"X-Client-Secret": "s3cret"}});
    eventually("a VALID verification", || async {
        let answer = request(api_addr, "POST", "/v1/verify", &[], Some(&body.to_string())).await;
        answer.body.contains("\"VALID\"").then_some(())
    })
    .await;
    eventually("lastUsedAt in status", || async {
        let key = cluster
            .get("keysmith.dev/v1alpha1", "ApiKey", "default", "everything")
            .await?;
        key["status"]["tokens"][0]["lastUsedAt"].as_str().map(drop)
    })
    .await;

    // A write that fails: the condition `Ready=False ApiError` is applied on its own (a patch).
    cluster
        .apply_yaml(&rbac::failing_key("default"))
        .await
        .expect("a key publishing over a foreign Secret");
    eventually("Ready=False ApiError", || {
        rbac::failing_key_reported(&cluster, "default")
    })
    .await;

    // Revocation: the Secret goes with the key.
    Api::<ApiKey>::namespaced(cluster.client().await.unwrap(), "default")
        .delete("everything", &Default::default())
        .await
        .expect("delete");
    eventually("the Secret to be deleted", || async {
        cluster
            .get("v1", "Secret", "default", "everything")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    stop.trigger();
    running.await.unwrap().expect("components stop cleanly");

    let mut controller_grants = granted(CONTROLLER_RULES);
    controller_grants.extend(granted(LEADER_RULES));
    for (identity, grants) in [
        (devcluster::controller_identity(), controller_grants),
        (devcluster::verifier_identity(), granted(VERIFIER_RULES)),
    ] {
        let (ok, denied) = rbac::used(&cluster, &identity_user(&identity));
        assert!(denied.is_empty(), "{identity:?} was denied: {denied:#?}");
        let unused: Vec<_> = grants.difference(&ok).collect();
        assert!(
            unused.is_empty(),
            "{identity:?} is granted verbs it never used (remove them from the chart): {unused:#?}"
        );
    }
}

/// Issue 27, N8: RBAC cannot hide a field, so whoever holds the chart's view role reads the
/// whole ApiKey, a literal `requiredHeaders[].value` included, though no Secret. The docs must
/// say exactly that (they said viewers saw ids and hashes only) and point to `valueFrom`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_view_role_reads_literal_header_values_as_the_docs_say_and_no_secret() {
    const NS: &str = "cms";
    const LITERAL: &str = "literal-shared-value";
    let cluster = cluster(NS).await;
    let roles = std::process::Command::new(keysmith_testenv::binaries::binary("helm"))
        .args([
            "template",
            "keysmith",
            concat!(env!("CARGO_MANIFEST_DIR"), "/charts/keysmith"),
        ])
        .args(["--show-only", "templates/rbac-users.yaml"])
        .output()
        .expect("helm runs");
    assert!(
        roles.status.success(),
        "{}",
        String::from_utf8_lossy(&roles.stderr)
    );
    cluster
        .apply_yaml(&String::from_utf8(roles.stdout).expect("UTF-8"))
        .await
        .expect("the chart's user roles apply");
    cluster
        .apply_yaml(&format!(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: viewer, namespace: {NS}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: keysmith-apikeys-view}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: viewer}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: site-secret, namespace: {NS}}}
stringData: {{value: from-a-secret}}
---
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {{name: site, namespace: {NS}}}
spec:
  tokens: [{{name: a}}]
  restrictions:
    requiredHeaders:
      - {{name: X-Client, value: {LITERAL}}}
      - {{name: X-Client-Secret, valueFrom: {{secretKeyRef: {{name: site-secret, key: value}}}}}}
"#
        ))
        .await
        .expect("fixtures apply");
    let viewer = cluster
        .client_as(&Identity::user("viewer", &[]))
        .await
        .expect("viewer client");
    let keys: Api<ApiKey> = Api::namespaced(viewer.clone(), NS);
    let key = eventually("the RoleBinding to take effect", || async {
        keys.get("site").await.ok()
    })
    .await;
    let seen = serde_json::to_string(&key).unwrap();
    assert!(seen.contains(LITERAL), "{seen}");
    assert!(!seen.contains("from-a-secret"), "{seen}");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(viewer, NS);
    let denied = secrets.get("site-secret").await.expect_err("no Secret");
    assert!(
        matches!(&denied, kube::Error::Api(s) if s.code == 403),
        "{denied:?}"
    );

    let docs = |path: &str| {
        let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
            .expect("docs");
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let operations = docs("docs/operations.md");
    assert!(!operations.contains("ids and hashes only"), "operations.md");
    assert!(
        operations.contains("literal `requiredHeaders[].value`"),
        "operations.md says what viewers see"
    );
    let security = docs("docs/security.md");
    for claim in [
        "literal `requiredHeaders[].value` is readable by anyone who may read the ApiKey",
        "`valueFrom`",
    ] {
        assert!(security.contains(claim), "security.md: {claim}");
    }
}
