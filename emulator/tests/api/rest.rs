//! REST semantics through a kube-rs client: resourceVersions, conflicts,
//! generation, the status subresource, schema and CEL validation, paging,
//! selectors, finalizers, garbage collection, patches and server-side apply.

use crate::common::{emulator, eventually, gadget, gadgets, get};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use keysmith_emulator::Config;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::Status;
use kube::{Api, ResourceExt};
use serde_json::json;

fn api_error(e: kube::Error) -> Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn secret(name: &str, labels: serde_json::Value) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "stringData": {"k": "v"}
    }))
    .unwrap()
}

#[tokio::test]
async fn crud_with_resource_versions_uids_and_timestamps() {
    let emu = emulator(Config::default()).await;
    let secrets: Api<Secret> = Api::namespaced(emu.client().await.unwrap(), "default");
    let created = secrets
        .create(&PostParams::default(), &secret("s1", json!({})))
        .await
        .unwrap();
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();
    assert!(created.uid().is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(
        created.data.unwrap()["k"].0,
        b"v",
        "stringData folds into data"
    );

    let mut s = secrets.get("s1").await.unwrap();
    s.data
        .as_mut()
        .unwrap()
        .insert("k2".into(), k8s_openapi::ByteString(b"x".to_vec()));
    let updated = secrets
        .replace("s1", &PostParams::default(), &s)
        .await
        .unwrap();
    let rv2: u64 = updated.resource_version().unwrap().parse().unwrap();
    assert!(rv2 > rv1, "one global counter moves forward");

    // A no-op update is not a write.
    let same = secrets
        .replace("s1", &PostParams::default(), &updated)
        .await
        .unwrap();
    assert_eq!(same.resource_version(), updated.resource_version());

    let err = api_error(
        secrets
            .create(&PostParams::default(), &secret("s1", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));

    secrets
        .delete("s1", &DeleteParams::default())
        .await
        .unwrap();
    let err = api_error(secrets.get("s1").await.unwrap_err());
    assert_eq!(err.code, 404);
    assert_eq!(err.message, "secrets \"s1\" not found");

    let err = api_error(
        Api::<Secret>::namespaced(emu.client().await.unwrap(), "nowhere")
            .create(&PostParams::default(), &secret("s", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.message, "namespaces \"nowhere\" not found");
}

#[tokio::test]
async fn stale_update_is_a_conflict() {
    let emu = emulator(Config::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(emu.client().await.unwrap(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let mut first = cms.get("c").await.unwrap();
    let mut second = first.clone();
    first.data.as_mut().unwrap().insert("a".into(), "2".into());
    cms.replace("c", &PostParams::default(), &first)
        .await
        .unwrap();
    second.data.as_mut().unwrap().insert("a".into(), "3".into());
    let err = api_error(
        cms.replace("c", &PostParams::default(), &second)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on configmaps \"c\": the object has been modified; please apply your changes to the latest version and try again"
    );
}

#[tokio::test]
async fn generation_tracks_spec_and_status_is_a_separate_subresource() {
    let emu = emulator(Config::default()).await;
    let api = gadgets(&emu.client().await.unwrap(), "default");
    let mut g = gadget("g", json!({"size": 2}));
    g.data["status"] = json!({"observedGeneration": 99});
    let created = api.create(&PostParams::default(), &g).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(
        created.data.get("status").is_none(),
        "status is not writable on create"
    );

    let pp = PatchParams::default();
    let labelled = api
        .patch(
            "g",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        labelled.metadata.generation,
        Some(1),
        "metadata changes keep generation"
    );

    let resized = api
        .patch("g", &pp, &Patch::Merge(json!({"spec": {"size": 4}})))
        .await
        .unwrap();
    assert_eq!(resized.metadata.generation, Some(2));

    let status = json!({"status": {"observedGeneration": 2,
        "conditions": [{"type": "Ready", "status": "True"}]}, "spec": {"size": 9}});
    let with_status = api
        .patch_status("g", &pp, &Patch::Merge(status))
        .await
        .unwrap();
    assert_eq!(with_status.data["status"]["observedGeneration"], 2);
    assert_eq!(with_status.data["spec"]["size"], 4, "/status ignores spec");
    assert_eq!(
        with_status.metadata.generation,
        Some(2),
        "status writes keep generation"
    );

    let mut main = api.get("g").await.unwrap();
    main.data["status"] = json!({"observedGeneration": 7});
    let replaced = api
        .replace("g", &PostParams::default(), &main)
        .await
        .unwrap();
    assert_eq!(
        replaced.data["status"]["observedGeneration"], 2,
        "main resource ignores status"
    );
}

#[tokio::test]
async fn schema_defaults_rejections_and_cel() {
    let emu = emulator(Config::default()).await;
    let api = gadgets(&emu.client().await.unwrap(), "default");
    let ok = api
        .create(
            &PostParams::default(),
            &gadget(
                "ok",
                json!({"size": 1, "slots": [{"name": "a"}], "junk": 1}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(ok.data["spec"]["color"], "red", "default applied");
    assert_eq!(
        ok.data["spec"]["slots"][0]["bytes"], 32,
        "nested default applied"
    );
    assert!(
        ok.data["spec"].get("junk").is_none(),
        "unknown field pruned"
    );

    let bad = gadget(
        "bad",
        json!({"size": 11, "color": "pink", "prefix": "A-B",
                                   "slots": [{"name": "a", "bytes": 8}]}),
    );
    let err = api_error(api.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        "Gadget.example.com \"bad\" is invalid: [\
spec.color: Unsupported value: \"pink\": supported values: \"red\", \"green\", \"blue\", \
spec.prefix: Invalid value: \"A-B\": spec.prefix in body should match '^[a-z_]{0,8}$', \
spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10, \
spec.slots[0].bytes: Invalid value: 8: spec.slots[0].bytes in body should be greater than or equal to 16, \
<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; \
correct the existing errors to complete validation]",
        "an unsupported value stops the CEL rules, as on the real server"
    );

    let err = api_error(
        api.create(&PostParams::default(), &gadget("req", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        err.message,
        "Gadget.example.com \"req\" is invalid: [spec.size: Required value, <nil>: Invalid value: \
null: some validation rules were not checked because the object was invalid; correct the \
existing errors to complete validation]",
        "a missing required field stops the CEL rules, as on the real server"
    );

    let err = api_error(
        api.create(
            &PostParams::default(),
            &gadget("cel", json!({"size": 5, "maxSize": 3})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        err.message,
        "Gadget.example.com \"cel\" is invalid: spec: Invalid value: size must not exceed maxSize",
        "a failed rule shows no value, as on the real server (v1.37)"
    );
}

#[tokio::test]
async fn list_paging_and_selectors() {
    let emu = emulator(Config::default()).await;
    let secrets: Api<Secret> = Api::namespaced(emu.client().await.unwrap(), "default");
    for i in 0..5 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        secrets
            .create(
                &PostParams::default(),
                &secret(&format!("s{i}"), json!({"tier": tier})),
            )
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut remaining = Vec::new();
    let mut lp = ListParams::default().limit(2);
    loop {
        let page = secrets.list(&lp).await.unwrap();
        assert!(page.items.len() <= 2);
        names.extend(page.items.iter().map(|s| s.name_any()));
        remaining.push(page.metadata.remaining_item_count);
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(names, vec!["s0", "s1", "s2", "s3", "s4"]);
    // Every page counts what follows it (the count is carried from page to page).
    assert_eq!(remaining, vec![Some(3), Some(1), None]);

    // The page as JSON: list kind, paging metadata, and items that carry their own kind.
    let client = emu.client().await.unwrap();
    let raw: serde_json::Value = client
        .request(get("/api/v1/namespaces/default/secrets?limit=2"))
        .await
        .unwrap();
    assert_eq!(raw["kind"], "SecretList");
    assert_eq!(raw["apiVersion"], "v1");
    assert_eq!(raw["metadata"]["remainingItemCount"], 3);
    assert!(raw["metadata"]["continue"].is_string(), "{raw}");
    let items = raw["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for item in items {
        assert_eq!(
            (&item["apiVersion"], &item["kind"]),
            (&json!("v1"), &json!("Secret"))
        );
        assert!(item["metadata"]["resourceVersion"].is_string(), "{item}");
    }

    let even = secrets
        .list(&ListParams::default().labels("tier=even"))
        .await
        .unwrap();
    assert_eq!(even.items.len(), 3);

    // With a selector, pages continue through the matches, and (as the API server does) say
    // nothing of how many are left. s4 ends the store: the page that holds it is the last.
    assert_eq!(
        selected_pages(&secrets, "tier=even").await,
        [vec!["s0", "s2"], vec!["s4"]]
    );
    // A page cut at its limit continues while any object follows it, matched or not, as on the
    // API server: s4 does not match, so the last page is empty.
    assert_eq!(
        selected_pages(&secrets, "tier=odd").await,
        [vec!["s1", "s3"], vec![]]
    );
    let odd = secrets
        .list(&ListParams::default().labels("tier in (odd),tier!=even"))
        .await
        .unwrap();
    assert_eq!(odd.items.len(), 2);
    let one = secrets
        .list(&ListParams::default().fields("metadata.name=s3"))
        .await
        .unwrap();
    assert_eq!(
        one.items.iter().map(|s| s.name_any()).collect::<Vec<_>>(),
        vec!["s3"]
    );

    // A continue token from before a compaction is too old.
    let page = secrets.list(&ListParams::default().limit(1)).await.unwrap();
    let token = page.metadata.continue_.unwrap();
    secrets
        .create(&PostParams::default(), &secret("late", json!({})))
        .await
        .unwrap();
    emu.compact(0);
    let err = api_error(
        secrets
            .list(&ListParams::default().limit(1).continue_token(&token))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 410);
}

/// The names on each page of a list of `secrets` selected by `labels`, in pages of two.
async fn selected_pages(secrets: &Api<Secret>, labels: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut lp = ListParams::default().labels(labels).limit(2);
    loop {
        let page = secrets.list(&lp).await.unwrap();
        assert_eq!(page.metadata.remaining_item_count, None);
        pages.push(page.items.iter().map(|s| s.name_any()).collect());
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => return pages,
        }
    }
}

#[tokio::test]
async fn finalizers_block_deletion_until_removed() {
    let emu = emulator(Config::default()).await;
    let api = gadgets(&emu.client().await.unwrap(), "default");
    let mut g = gadget("held", json!({"size": 1}));
    g.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &g).await.unwrap();

    api.delete("held", &DeleteParams::default()).await.unwrap();
    let held = api.get("held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(
        held.metadata.generation,
        Some(2),
        "deletion bumps generation"
    );

    let err = api_error(
        api.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["example.com/hold", "example.com/new"]}}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("no new finalizers can be added"),
        "{}",
        err.message
    );

    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_error(api.get("held").await.unwrap_err()).code, 404);
}

fn owned_cm(name: &str, owner: &kube::api::DynamicObject, block: bool) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": [{
        "apiVersion": "example.com/v1", "kind": "Gadget", "name": owner.name_any(),
        "uid": owner.uid().unwrap(), "controller": true, "blockOwnerDeletion": block}]}}))
    .unwrap()
}

#[tokio::test]
async fn owner_reference_garbage_collection() {
    let emu = emulator(Config::default()).await;
    let client = emu.client().await.unwrap();
    let api = gadgets(&client, "default");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    // Background: the dependent goes once the owner is gone.
    let owner = api
        .create(&PostParams::default(), &gadget("bg", json!({"size": 1})))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &owned_cm("bg-dep", &owner, false))
        .await
        .unwrap();
    api.delete("bg", &DeleteParams::background()).await.unwrap();
    assert_eq!(api_error(cms.get("bg-dep").await.unwrap_err()).code, 404);

    // Foreground: the owner waits for a blocking dependent held by a finalizer.
    let owner = api
        .create(&PostParams::default(), &gadget("fg", json!({"size": 1})))
        .await
        .unwrap();
    let mut dep = owned_cm("fg-dep", &owner, true);
    dep.metadata.finalizers = Some(vec!["example.com/slow".into()]);
    cms.create(&PostParams::default(), &dep).await.unwrap();
    api.delete("fg", &DeleteParams::foreground()).await.unwrap();
    let waiting = api.get("fg").await.unwrap();
    assert_eq!(waiting.finalizers(), ["foregroundDeletion"]);
    assert!(
        cms.get("fg-dep")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    cms.patch(
        "fg-dep",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_error(api.get("fg").await.unwrap_err()).code, 404);

    // Orphan: the dependent stays, without the reference.
    let owner = api
        .create(&PostParams::default(), &gadget("or", json!({"size": 1})))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &owned_cm("or-dep", &owner, false))
        .await
        .unwrap();
    api.delete("or", &DeleteParams::orphan()).await.unwrap();
    let kept = cms.get("or-dep").await.unwrap();
    assert!(
        kept.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_contents() {
    let emu = emulator(Config::default()).await;
    let client = emu.client().await.unwrap();
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    nss.create(&PostParams::default(), &ns).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "doomed");
    let mut s = secret("held", json!({}));
    s.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    secrets.create(&PostParams::default(), &s).await.unwrap();
    nss.delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = nss.get("doomed").await.unwrap();
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    let err = api_error(
        secrets
            .create(&PostParams::default(), &secret("new", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 403);
    secrets
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert_eq!(api_error(nss.get("doomed").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn json_strategic_and_merge_patches() {
    let emu = emulator(Config::default()).await;
    let deploys: Api<Deployment> = Api::namespaced(emu.client().await.unwrap(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}
    }))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let pp = PatchParams::default();
    let smp = json!({"spec": {"template": {"metadata": {"annotations": {"keysmith.dev/restarted-for": "id1"}},
                                           "spec": {"containers": [{"name": "b", "image": "b:2"}]}}}});
    let patched = deploys
        .patch("web", &pp, &Patch::Strategic(smp))
        .await
        .unwrap();
    let containers = patched
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers
        .clone();
    assert_eq!(
        containers
            .iter()
            .map(|c| (c.name.as_str(), c.image.as_deref().unwrap()))
            .collect::<Vec<_>>(),
        vec![("a", "a:1"), ("b", "b:2")],
        "containers merge by name"
    );
    assert_eq!(patched.metadata.generation, Some(2));

    let jp: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 3}]))
    .unwrap();
    let patched = deploys
        .patch("web", &pp, &Patch::Json::<()>(jp))
        .await
        .unwrap();
    assert_eq!(patched.spec.replicas, Some(3));

    // Strategic merge is for built-ins only, as in Kubernetes.
    let api = gadgets(&emu.client().await.unwrap(), "default");
    api.create(&PostParams::default(), &gadget("g", json!({"size": 1})))
        .await
        .unwrap();
    let err = api_error(
        api.patch("g", &pp, &Patch::Strategic(json!({"spec": {"size": 2}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 415);
}

#[tokio::test]
async fn server_side_apply_tracks_managers() {
    let emu = emulator(Config::default()).await;
    let api = gadgets(&emu.client().await.unwrap(), "default");
    let apply = |manager: &str, force: bool| {
        let mut pp = PatchParams::apply(manager);
        pp.force = force;
        pp
    };
    let body = |spec: serde_json::Value| json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": spec});
    let first = api
        .patch(
            "g",
            &apply("alice", false),
            &Patch::Apply(body(
                json!({"size": 2, "prefix": "a", "slots": [{"name": "x"}]}),
            )),
        )
        .await
        .unwrap();
    let mf = first.metadata.managed_fields.clone().unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("alice"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    let fields = &mf[0].fields_v1.as_ref().unwrap().0;
    assert!(
        fields["f:spec"]["f:slots"]
            .get("k:{\"name\":\"x\"}")
            .is_some(),
        "{fields}"
    );

    // Bob adds his own slot (list-map items are owned per key) without conflict.
    let both = api
        .patch(
            "g",
            &apply("bob", false),
            &Patch::Apply(body(json!({"size": 2, "slots": [{"name": "y"}]}))),
        )
        .await
        .unwrap();
    let slots: Vec<&str> = both.data["spec"]["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(slots, vec!["x", "y"]);

    let err = api_error(
        api.patch(
            "g",
            &apply("bob", false),
            &Patch::Apply(body(json!({"size": 5}))),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert_eq!(
        err.message, "Apply failed with 1 conflict: conflict with \"alice\": .spec.size",
        "the real server names the API version of Update managers only"
    );
    let forced = api
        .patch(
            "g",
            &apply("bob", true),
            &Patch::Apply(body(json!({"size": 5}))),
        )
        .await
        .unwrap();
    assert_eq!(forced.data["spec"]["size"], 5);
    assert!(
        forced.data["spec"]["slots"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["name"] != "y"),
        "bob stopped applying slot y, nobody else owns it"
    );

    // Alice drops prefix: it goes, since only she owned it.
    let dropped = api
        .patch(
            "g",
            &apply("alice", false),
            &Patch::Apply(body(json!({"slots": [{"name": "x"}]}))),
        )
        .await
        .unwrap();
    assert!(dropped.data["spec"].get("prefix").is_none());
    assert_eq!(dropped.data["spec"]["size"], 5, "bob still owns size");

    // A merge patch by another manager takes ownership as an Update.
    let edited = api
        .patch(
            "g",
            &PatchParams {
                field_manager: Some("editor".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"maxSize": 9}})),
        )
        .await
        .unwrap();
    let editor = edited
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("editor"))
        .unwrap();
    assert_eq!(editor.operation.as_deref(), Some("Update"));
    assert_eq!(
        editor.fields_v1.unwrap().0,
        json!({"f:spec": {"f:maxSize": {}}})
    );
}

#[tokio::test]
async fn https_and_crd_lifecycle_in_discovery() {
    let emu = emulator(Config {
        tls: true,
        ..Config::default()
    })
    .await;
    assert!(emu.url().starts_with("https://"));
    let client = emu.client().await.unwrap();
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .unwrap();
    let (ar, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.plural == "gadgets")
        .expect("CRD resource discovered");
    assert_eq!(ar.kind, "Gadget");
    assert!(
        caps.subresources
            .iter()
            .any(|(s, _)| s.plural == "gadgets/status" || s.plural == "status")
    );

    emu.apply_yaml(crate::common::GADGET).unwrap();
    let api = gadgets(&client, "default");
    assert_eq!(
        api.get("sprocket").await.unwrap().data["spec"]["slots"][1]["bytes"],
        48
    );

    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    let crd = crds.get("gadgets.example.com").await.unwrap();
    let established = crd
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established);
    crds.delete("gadgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let err = api_error(api.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(err.code, 404, "the resource is no longer served");
    eventually("CR storage dropped", || async {
        emu.list("example.com/v1", "Gadget", None)
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn kube_finalizer_helper_json_patches_apply() {
    // kube-rs's finalizer helper adds the first finalizer with
    // `test /metadata/finalizers == null` then `add`, and removes it with
    // `test /metadata/finalizers/N == name` then `remove`: the API server
    // (evanphx/json-patch) treats the missing member as null.
    use kube::runtime::controller::Action;
    use kube::runtime::finalizer::{Event, finalizer};
    use std::sync::Arc;

    let emu = emulator(Config::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(emu.client().await.unwrap(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "f"}})).unwrap();
    let cm = cms.create(&PostParams::default(), &cm).await.unwrap();
    let ok = |_: Event<ConfigMap>| async { Ok::<_, std::io::Error>(Action::await_change()) };

    finalizer(&cms, "example.com/f", Arc::new(cm), ok)
        .await
        .unwrap();
    let cm = cms.get("f").await.unwrap();
    assert_eq!(cm.finalizers(), ["example.com/f"]);

    cms.delete("f", &DeleteParams::default()).await.unwrap();
    let deleting = cms.get("f").await.unwrap();
    finalizer(&cms, "example.com/f", Arc::new(deleting), ok)
        .await
        .unwrap();
    assert_eq!(api_error(cms.get("f").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn names_in_bodies_follow_check_name() {
    let emu = emulator(Config::default()).await;
    let client = emu.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "n"}, "data": {"a": "1"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let ssa = PatchParams::apply("tester");

    // Apply to an existing object without a name: the stored name carries over.
    let applied = cms
        .patch(
            "n",
            &ssa,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"b": "2"}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.name_any(), "n");
    assert_eq!(applied.data.unwrap()["b"], "2");

    // Apply creating an object without a name, a PUT without a name, and a
    // mismatched name: 400 from checkName.
    let unnamed = Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {}}));
    let err = api_error(cms.patch("new", &ssa, &unnamed).await.unwrap_err());
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            400,
            "the name of the object () does not match the name on the URL (new)"
        )
    );
    let mut put = cms.get("n").await.unwrap();
    put.metadata.name = None;
    let err = api_error(
        cms.replace("n", &PostParams::default(), &put)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            400,
            "the name of the object () does not match the name on the URL (n)"
        )
    );
    put.metadata.name = Some("other".into());
    let err = api_error(
        cms.replace("n", &PostParams::default(), &put)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 400);
}

/// What differential runs against a real kube-apiserver (tests/shipped/conformance.rs) showed and the
/// emulator now does the same way: an Update owns the maps and lists it adds (`"."`), an
/// ownerReference is owned as a whole, an immediate delete of a custom resource answers a
/// Status, a strategic merge patch of one answers the real server's 415, and a failed JSON
/// patch the bare 422.
#[tokio::test]
async fn answers_measured_against_a_real_server() {
    let emu = emulator(Config::default()).await;
    let client = emu.client().await.unwrap();
    let api = gadgets(&client, "default");
    let created = api
        .create(
            &PostParams::default(),
            &gadget("g", json!({"size": 1, "slots": [{"name": "a"}]})),
        )
        .await
        .unwrap();
    let fields = serde_json::to_value(&created.metadata.managed_fields.as_ref().unwrap()[0])
        .unwrap()["fieldsV1"]
        .clone();
    assert_eq!(fields["f:spec"]["."], json!({}), "{fields}");
    assert_eq!(fields["f:spec"]["f:slots"]["."], json!({}), "{fields}");

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let mut owned = secret("owned", json!({}));
    owned.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({
            "apiVersion": "example.com/v1", "kind": "Gadget", "name": "g",
            "uid": created.metadata.uid, "controller": true,
        }))
        .unwrap(),
    ]);
    let owned = secrets
        .create(&PostParams::default(), &owned)
        .await
        .unwrap();
    let fields = serde_json::to_value(&owned.metadata.managed_fields.as_ref().unwrap()[0]).unwrap()
        ["fieldsV1"]
        .clone();
    let key = format!("k:{{\"uid\":\"{}\"}}", created.metadata.uid.unwrap());
    assert_eq!(
        fields["f:metadata"]["f:ownerReferences"],
        json!({".": {}, key: {}})
    );

    let strategic = api_error(
        api.patch(
            "g",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"size": 2}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        strategic.message,
        "the body of the request was in an unknown format - accepted media types include: \
         application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    );
    let failed: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/spec/size", "value": 9}])).unwrap();
    let failed = api_error(
        api.patch("g", &PatchParams::default(), &Patch::Json::<()>(failed))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (failed.code, failed.message.as_str()),
        (
            422,
            "the server rejected our request due to an error in our request"
        )
    );

    let deleted = api.delete("g", &DeleteParams::default()).await.unwrap();
    let status = deleted.right().expect("a Status, not the object");
    assert_eq!(status.details.unwrap().name, "g");
}
