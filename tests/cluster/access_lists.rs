//! Access lists (`spec.access`, issue 28), the controller's side, on either backend: with
//! `--access-lists` and the chart's access rules it keeps one Role and one RoleBinding per key,
//! owned by the key, puts them back when edited or deleted, follows edits of the list, never
//! writes over a Role of that name that is not the key's, and deletes both when the list is
//! emptied; without the flag it grants nothing and says what to set. Both backends evaluate the
//! RoleBinding, so the reads are checked here too; the admission policy and Kubernetes'
//! escalation check are the real server's (`tests/shipped/chart_real.rs`).

use k8s_openapi::api::core::v1::Secret;
use keysmith::components::{self, Components, ControllerPart};
use keysmith::controller::{self, leader::LeaderConfig};
use keysmith::scope::Scope;
use keysmith_testenv::{Cluster, Identity};
use kube::Api;
use serde_json::{Value, json};

use crate::harness::controller::{
    CONTROLLER_NS, CONTROLLER_SA, Harness, NS, cluster, condition, controller_identity, ready,
};
use crate::harness::verifier::eventually;

const RBAC: &str = "rbac.authorization.k8s.io/v1";
const ROLE: &str = "site.keysmith-access";

/// A cluster whose controller account also holds the chart's access rules.
async fn with_access_rules() -> Cluster {
    let cluster = cluster().await;
    grant_access_rules(&cluster).await;
    cluster
}

async fn grant_access_rules(cluster: &Cluster) {
    let rules: Value = serde_saphyr::from_str(include_str!(
        "../../charts/keysmith/files/controller-access-rules.yaml"
    ))
    .expect("rules parse");
    let objects = [
        json!({
            "apiVersion": RBAC, "kind": "ClusterRole",
            "metadata": {"name": "keysmith-controller-access"}, "rules": rules,
        }),
        json!({
            "apiVersion": RBAC, "kind": "ClusterRoleBinding",
            "metadata": {"name": "keysmith-controller-access"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "keysmith-controller-access"},
            "subjects": [{"kind": "ServiceAccount", "name": CONTROLLER_SA, "namespace": CONTROLLER_NS}],
        }),
    ];
    for object in objects {
        cluster
            .apply_object(&object)
            .await
            .expect("access rules apply");
    }
}

fn key(name: &str, access: Option<Value>) -> String {
    let mut key = json!({
        "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"tokens": [{"name": "delivery"}]},
    });
    if let Some(access) = access {
        key["spec"]["access"] = access;
    }
    serde_json::to_string(&key).expect("JSON is YAML")
}

async fn object(h: &Harness, kind: &str, name: &str) -> Option<Value> {
    h.cluster.get(RBAC, kind, NS, name).await
}

/// Whether `user` may read Secret `name` of [`NS`].
async fn reads(h: &Harness, user: &str, name: &str) -> bool {
    let client = h
        .cluster
        .client_as(&Identity::user(user, &[]))
        .await
        .expect("a client");
    match Api::<Secret>::namespaced(client, NS).get(name).await {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 403 => false,
        Err(e) => panic!("reading {name} as {user}: {e}"),
    }
}

fn subjects(binding: &Value) -> Vec<(String, String)> {
    binding["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let text = |f: &str| s[f].as_str().unwrap_or_default().to_owned();
            (text("kind"), text("name"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_keeps_the_keys_role_and_binding_as_the_list_says() {
    let h = Harness::start_with(with_access_rules().await, Scope::default(), true).await;
    let access = json!({
        "users": ["alice"],
        "groups": ["payments-devs"],
        "serviceAccounts": [{"name": "deployer", "namespace": "ci"}],
    });
    h.apply(&key("site", Some(access))).await;
    let site = h
        .wait_key("site", "status.access", |k| {
            ready(k) && k["status"]["access"].is_object()
        })
        .await;
    assert_eq!(site["status"]["access"]["role"], ROLE);
    assert_eq!(site["status"]["access"]["roleBinding"], ROLE);
    assert_eq!(site["status"]["access"]["secrets"], json!(["site"]));
    let role = object(&h, "Role", ROLE).await.expect("the Role");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["site"]}])
    );
    let binding = object(&h, "RoleBinding", ROLE).await.expect("the binding");
    assert_eq!(
        subjects(&binding),
        [
            ("User".into(), "alice".into()),
            ("Group".into(), "payments-devs".into()),
            ("ServiceAccount".into(), "deployer".into()),
        ]
    );
    for object in [&role, &binding] {
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!(
            (&owner["kind"], &owner["name"], &owner["controller"]),
            (&json!("ApiKey"), &json!("site"), &json!(true))
        );
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "keysmith"
        );
    }
    eventually("alice to read the Secret", || async {
        reads(&h, "alice", "site").await.then_some(())
    })
    .await;
    assert!(!reads(&h, "bob", "site").await);
    // At rest, a resync writes nothing.
    h.settle().await;

    // Deleted by hand: put back.
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(h.admin.clone(), NS)
        .delete(ROLE, &Default::default())
        .await
        .expect("delete the binding");
    eventually("the binding to be put back", || async {
        object(&h, "RoleBinding", ROLE).await.map(drop)
    })
    .await;

    // A name removed from the list leaves the binding.
    h.apply(&key("site", Some(json!({"groups": ["payments-devs"]}))))
        .await;
    eventually("alice to leave the binding", || async {
        let binding = object(&h, "RoleBinding", ROLE).await?;
        (subjects(&binding) == [("Group".to_owned(), "payments-devs".to_owned())]).then_some(())
    })
    .await;
    eventually("alice to lose the Secret", || async {
        (!reads(&h, "alice", "site").await).then_some(())
    })
    .await;

    // A rejected edit still takes a reader away, and adds nobody.
    let both = json!({"users": ["alice"], "groups": ["payments-devs"]});
    h.apply(&key("site", Some(both))).await;
    eventually("alice to be back", || async {
        let binding = object(&h, "RoleBinding", ROLE).await?;
        (subjects(&binding).len() == 2).then_some(())
    })
    .await;
    let mut rejected: Value = serde_json::from_str(&key(
        "site",
        Some(json!({"users": ["mallory"], "groups": ["payments-devs"]})),
    ))
    .unwrap();
    rejected["spec"]["expiresAfter"] = json!("1000w");
    h.apply(&rejected.to_string()).await;
    h.wait_key("site", "InvalidSpec", |k| {
        condition(k, "Ready") == Some(("False".into(), "InvalidSpec".into()))
    })
    .await;
    eventually("alice to leave the binding of a rejected spec", || async {
        let binding = object(&h, "RoleBinding", ROLE).await?;
        (subjects(&binding) == [("Group".to_owned(), "payments-devs".to_owned())]).then_some(())
    })
    .await;
    h.wait_key("site", "status.access to follow", |k| {
        k["status"]["access"]["subjects"]
            .as_array()
            .is_some_and(|s| s.len() == 1)
    })
    .await;

    // The list removed: both go, and status says nobody is granted anything.
    h.apply(&key("site", None)).await;
    h.wait_key("site", "status.access to go", |k| {
        k["status"]["access"].is_null()
    })
    .await;
    eventually("the Role and the binding to be deleted", || async {
        let role = object(&h, "Role", ROLE).await;
        let binding = object(&h, "RoleBinding", ROLE).await;
        (role.is_none() && binding.is_none()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_of_that_name_not_the_keys_is_a_conflict_and_left_alone() {
    let h = Harness::start_with(with_access_rules().await, Scope::default(), true).await;
    let theirs = json!({
        "apiVersion": RBAC, "kind": "Role",
        "metadata": {"name": ROLE, "namespace": NS},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
    });
    h.cluster.apply_object(&theirs).await.expect("their Role");
    h.apply(&key("site", Some(json!({"users": ["alice"]}))))
        .await;
    let site = h
        .wait_key("site", "AccessConflict", |k| {
            condition(k, "Ready") == Some(("False".into(), "AccessConflict".into()))
        })
        .await;
    let message = site["status"]["conditions"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("Role site.keysmith-access exists and is not owned by this ApiKey"),
        "{message}"
    );
    assert!(site["status"]["access"].is_null());
    h.settle().await;
    let events = h.events("AccessConflict").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "Warning");
    let role = object(&h, "Role", ROLE).await.expect("their Role");
    assert_eq!(role["rules"], theirs["rules"], "never written");
    assert!(role["metadata"]["ownerReferences"].is_null());
    assert!(object(&h, "RoleBinding", ROLE).await.is_none());
    assert!(h.secret("site").await.is_some(), "the tokens are minted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_access_lists_on_nothing_is_granted_and_the_key_says_what_to_set() {
    let h = Harness::start().await;
    h.apply(&key("site", Some(json!({"users": ["alice"]}))))
        .await;
    let site = h
        .wait_key("site", "AccessListsOff", |k| {
            condition(k, "Ready") == Some(("False".into(), "AccessListsOff".into()))
        })
        .await;
    let message = site["status"]["conditions"][0]["message"].as_str().unwrap();
    assert!(message.contains("accessLists.enabled=true"), "{message}");
    h.settle().await;
    assert_eq!(h.events("AccessListsOff").await.len(), 1);
    assert!(h.secret("site").await.is_some(), "the tokens are minted");
    assert!(object(&h, "Role", ROLE).await.is_none());
    assert!(object(&h, "RoleBinding", ROLE).await.is_none());
    assert!(!reads(&h, "alice", "site").await);
}

/// `examples/access-list.yaml` does what its comments say, with access lists on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_list_example_grants_what_it_says() {
    let h = Harness::start_with(with_access_rules().await, Scope::default(), true).await;
    h.apply(include_str!("../../examples/access-list.yaml"))
        .await;
    let (namespace, name) = ("default", "reporting-api.keysmith-access");
    let binding = eventually("the example's binding", || async {
        h.cluster.get(RBAC, "RoleBinding", namespace, name).await
    })
    .await;
    assert_eq!(
        subjects(&binding),
        [
            ("User".into(), "alice@example.com".into()),
            ("Group".into(), "reporting-devs".into()),
            ("ServiceAccount".into(), "deployer".into()),
        ]
    );
    let role = h
        .cluster
        .get(RBAC, "Role", namespace, name)
        .await
        .expect("the example's Role");
    assert_eq!(
        role["rules"][0]["resourceNames"],
        json!(["reporting-api-token"])
    );
}

/// `--access-lists` without the rights that go with it is one clear line at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flag_without_the_access_rules_stops_the_controller_at_start_up() {
    let cluster = cluster().await;
    let components = Components {
        controller: Some(ControllerPart {
            client: cluster
                .client_as(&controller_identity())
                .await
                .expect("controller client"),
            leader: LeaderConfig::new(CONTROLLER_NS, "preflight"),
            clock: controller::system_clock(),
            personal_keys: controller::PersonalKeyPolicy::ACCEPTED,
            access_lists: true,
            concurrency: controller::DEFAULT_CONCURRENCY,
        }),
        verifier: None,
        scope: Scope::default(),
        metrics: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let refused = components::preflight(&components)
        .await
        .expect_err("no rights on roles");
    let message = refused.to_string();
    assert!(
        message.contains("roles.rbac.authorization.k8s.io")
            && message.contains("accessLists.enabled=true"),
        "{message}"
    );
    grant_access_rules(&cluster).await;
    eventually("the granted rules to take effect", || async {
        components::preflight(&components).await.ok()
    })
    .await;
}
