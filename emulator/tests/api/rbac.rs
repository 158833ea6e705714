//! RBAC: requests made as a ServiceAccount are checked against Roles,
//! ClusterRoles and bindings loaded from YAML, with Kubernetes' 403 wording.

use crate::common::{emulator, gadget, gadgets};
use k8s_openapi::api::core::v1::Secret;
use keysmith_emulator::{Config, Identity};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const CHART_RBAC: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: keysmith}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: keysmith-controller, namespace: keysmith}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: keysmith-controller}
rules:
- apiGroups: [example.com]
  resources: [gadgets]
  verbs: [get, list, watch, update, patch]
- apiGroups: [example.com]
  resources: [gadgets/status]
  verbs: [patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: keysmith-controller}
subjects:
- {kind: ServiceAccount, name: keysmith-controller, namespace: keysmith}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: keysmith-controller}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: secrets, namespace: keysmith}
rules:
- apiGroups: [""]
  resources: [secrets]
  verbs: [create, get]
  resourceNames: []
"#;

#[tokio::test]
async fn service_account_is_held_to_its_roles() {
    let emu = emulator(Config {
        rbac: true,
        ..Config::default()
    })
    .await;
    emu.apply_yaml(CHART_RBAC).unwrap();
    emu.apply_yaml(crate::common::GADGET).unwrap();
    let sa = Identity::service_account("keysmith", "keysmith-controller");
    let client = emu.client_as(&sa).await.unwrap();

    // Granted cluster-wide by the ClusterRoleBinding.
    let api = gadgets(&client, "default");
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    api.patch_status(
        "sprocket",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"observedGeneration": 1}})),
    )
    .await
    .unwrap();

    // Not granted: create, and secrets (the Role exists but is not bound).
    let err = match api
        .create(&PostParams::default(), &gadget("new", json!({"size": 1})))
        .await
    {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected 403, got {other:?}"),
    };
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        err.message,
        "gadgets.example.com is forbidden: User \"system:serviceaccount:keysmith:keysmith-controller\" cannot create resource \"gadgets\" in API group \"example.com\" in the namespace \"default\""
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "keysmith");
    let err = match secrets.get("x").await {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected 403, got {other:?}"),
    };
    assert_eq!(
        err.message,
        "secrets \"x\" is forbidden: User \"system:serviceaccount:keysmith:keysmith-controller\" cannot get resource \"secrets\" in API group \"\" in the namespace \"keysmith\""
    );
    assert!(!emu.can(&sa, "get", "", "secrets", "keysmith"));

    // Binding the Role grants it in that namespace only.
    emu.apply_yaml(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: secrets, namespace: keysmith}
subjects:
- {kind: ServiceAccount, name: keysmith-controller, namespace: keysmith}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: secrets}
"#,
    )
    .unwrap();
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "x"}, "stringData": {"a": "b"}}))
            .unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    secrets.get("x").await.unwrap();
    assert!(emu.can(&sa, "get", "", "secrets", "keysmith"));
    assert!(!emu.can(&sa, "get", "", "secrets", "default"));

    // Status patches need `gadgets/status`; the main resource's patch right is not enough the other way round.
    let main_only = Identity::user("alice", &[]);
    emu.apply_yaml(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: gadget-editor}
rules:
- {apiGroups: [example.com], resources: [gadgets], verbs: [get, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice, namespace: default}
subjects:
- {kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: gadget-editor}
"#,
    )
    .unwrap();
    let alice = gadgets(&emu.client_as(&main_only).await.unwrap(), "default");
    alice
        .patch(
            "sprocket",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}})),
        )
        .await
        .unwrap();
    let err = match alice
        .patch_status(
            "sprocket",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {}})),
        )
        .await
    {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected 403, got {other:?}"),
    };
    assert!(
        err.message
            .contains("cannot patch resource \"gadgets/status\""),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn unknown_tokens_are_unauthorized_when_rbac_is_on() {
    let emu = emulator(Config {
        rbac: true,
        ..Config::default()
    })
    .await;
    let client = emu.client_as(&Identity::Admin).await.unwrap();
    // The admin (system:masters) bypasses RBAC.
    let api = gadgets(&client, "default");
    api.list(&ListParams::default()).await.unwrap();
    emu.add_token("opaque", keysmith_emulator::UserInfo::user("bob", &[]));
    let with_token = |token: &str| {
        let kc = emu
            .kubeconfig(&Identity::Admin)
            .replace(&emu.token(&Identity::Admin), token);
        async move {
            let config = kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::from_yaml(&kc).unwrap(),
                &Default::default(),
            )
            .await
            .unwrap();
            gadgets(&kube::Client::try_from(config).unwrap(), "default")
        }
    };
    match with_token("wrong").await.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 401),
        other => panic!("expected 401, got {other:?}"),
    }
    match with_token("opaque")
        .await
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403),
        other => panic!("expected 403, got {other:?}"),
    }
    let bob = emu.request_log().filter(|e| e.user == "bob");
    assert_eq!(bob.len(), 1);
    assert_eq!((bob[0].verb.as_str(), bob[0].code), ("list", 403));
}

/// Server-side apply that would create the object is authorized as `create` too, as in the API
/// server: `patch` alone updates existing objects but cannot create new ones.
#[tokio::test]
async fn apply_that_creates_needs_create_as_well_as_patch() {
    let emu = emulator(Config {
        rbac: true,
        ..Config::default()
    })
    .await;
    emu.apply_yaml(CHART_RBAC).unwrap();
    emu.apply_yaml(crate::common::GADGET).unwrap();
    let sa = Identity::service_account("keysmith", "keysmith-controller");
    let gadgets: Api<kube::api::DynamicObject> = Api::namespaced_with(
        emu.client_as(&sa).await.unwrap(),
        "default",
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("example.com", "v1", "Gadget"),
            "gadgets",
        ),
    );
    let body = |size: i64| {
        json!({"apiVersion": "example.com/v1", "kind": "Gadget",
               "metadata": {"name": "made-by-apply"}, "spec": {"size": size}})
    };
    let params = PatchParams::apply("test").force();
    let err = gadgets
        .patch("made-by-apply", &params, &Patch::Apply(body(1)))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err}")
    };
    assert_eq!(status.code, 403);
    assert!(
        status
            .message
            .contains("cannot create resource \"gadgets\""),
        "{}",
        status.message
    );
    assert!(
        emu.get("example.com/v1", "Gadget", "default", "made-by-apply")
            .is_none()
    );

    // Once the object exists, patch permission suffices for the same apply.
    emu.apply_object(&body(1)).unwrap();
    gadgets
        .patch("made-by-apply", &params, &Patch::Apply(body(2)))
        .await
        .expect("an apply to an existing object needs only patch");
}
