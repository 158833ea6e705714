//! The other kinds Keysmith touches: events (kube-rs `Recorder` on
//! events.k8s.io/v1, and core/v1 events as `kubectl describe` lists them),
//! Leases for leader election, rollout restarts of StatefulSets and
//! DaemonSets, and the emulator running as a separate process.

use std::time::Duration;

use crate::common::{emulator, eventually, gadgets};
use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event;
use keysmith_emulator::{Config, Emulator};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as RecordedEvent, EventType, Recorder, Reporter};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

#[tokio::test]
async fn recorder_events_create_then_patch_a_series() {
    let emu = emulator(Config::default()).await;
    emu.apply_yaml(crate::common::GADGET).unwrap();
    let client = emu.client().await.unwrap();
    let g = gadgets(&client, "default").get("sprocket").await.unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "keysmith".into(),
            instance: None,
        },
    );
    let event = RecordedEvent {
        type_: EventType::Normal,
        reason: "Minted".into(),
        note: Some("minted 2 tokens".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let reference = g.object_ref(&crate::common::gadget_resource());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("Minted"));
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(
        emu.request_log().writes("events"),
        2,
        "one create, one patch"
    );

    // core/v1 events, found the way `kubectl describe` looks for them.
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let ev: CoreEvent = serde_json::from_value(json!({
        "metadata": {"generateName": "sprocket."},
        "involvedObject": {"kind": "Gadget", "name": "sprocket", "namespace": "default", "uid": g.uid()},
        "reason": "Rotated", "message": "rotated", "type": "Normal"
    }))
    .unwrap();
    let created = core.create(&PostParams::default(), &ev).await.unwrap();
    assert!(created.name_any().starts_with("sprocket."));
    let found = core
        .list(&ListParams::default().fields(&format!(
            "involvedObject.name=sprocket,involvedObject.namespace=default,involvedObject.uid={}",
            g.uid().unwrap()
        )))
        .await
        .unwrap();
    // The Recorder's events.k8s.io/v1 event is the same stored Event, so it is found too.
    let mut reasons: Vec<_> = found
        .items
        .iter()
        .filter_map(|e| e.reason.clone())
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["Minted", "Rotated"]);
}

#[tokio::test]
async fn an_events_v1_update_may_grow_the_series_but_not_change_the_note() {
    let emu = emulator(Config::default()).await;
    let events: Api<Event> = Api::namespaced(emu.client().await.unwrap(), "default");
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": "site.1"},
        "regarding": {"kind": "ApiKey", "name": "site", "namespace": "default"},
        "note": "token ks_aaaaaa", "reason": "Rotated", "type": "Normal", "action": "Reconcile",
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "keysmith", "reportingInstance": "keysmith-0",
    }))
    .unwrap();
    events.create(&PostParams::default(), &event).await.unwrap();
    let series = json!({"series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}});
    events
        .patch("site.1", &PatchParams::default(), &Patch::Merge(&series))
        .await
        .unwrap();
    let note = json!({"note": "token ks_bbbbbb"});
    let refused = events
        .patch("site.1", &PatchParams::default(), &Patch::Merge(&note))
        .await;
    let Err(kube::Error::Api(status)) = refused else {
        panic!("a changed note is refused: {refused:?}");
    };
    assert_eq!(status.code, 422);
    assert!(
        status
            .message
            .starts_with(r#"Event "site.1" is invalid: message: Invalid value: "token ks_bbbbbb": field is immutable"#),
        "{}",
        status.message
    );
    let stored = events.get("site.1").await.unwrap();
    assert_eq!(stored.note.as_deref(), Some("token ks_aaaaaa"));
    assert_eq!(stored.series.unwrap().count, 2);
}

#[tokio::test]
async fn leases_take_turns_with_optimistic_concurrency() {
    let emu = Emulator::start(Config::default()).await.unwrap();
    let leases: Api<Lease> = Api::namespaced(emu.client().await.unwrap(), "default");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "keysmith-leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}))
    .unwrap();
    let held = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut by_b = held.clone();
    by_b.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let mut by_c = held.clone();
    by_c.spec.as_mut().unwrap().holder_identity = Some("c".into());
    leases
        .replace("keysmith-leader", &PostParams::default(), &by_b)
        .await
        .unwrap();
    let lost = leases
        .replace("keysmith-leader", &PostParams::default(), &by_c)
        .await;
    assert!(matches!(lost, Err(kube::Error::Api(s)) if s.code == 409));
    let now = leases.get("keysmith-leader").await.unwrap();
    assert_eq!(now.spec.unwrap().holder_identity.as_deref(), Some("b"));
}

#[tokio::test]
async fn rollout_restart_annotations_on_statefulsets_and_daemonsets() {
    let emu = Emulator::start(Config::default()).await.unwrap();
    emu.apply_yaml(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: default}
spec:
  selector: {matchLabels: {app: db}}
  serviceName: db
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: "db:1"}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: default}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: agent, image: "agent:1"}]}
"#,
    )
    .unwrap();
    let client = emu.client().await.unwrap();
    let patch = Patch::Strategic(
        json!({"spec": {"template": {"metadata": {"annotations": {"keysmith.dev/restarted-for": "ks_abc123"}}}}}),
    );
    let sts = Api::<StatefulSet>::namespaced(client.clone(), "default")
        .patch("db", &PatchParams::default(), &patch)
        .await
        .unwrap();
    assert_eq!(sts.metadata.generation, Some(2));
    let ds = Api::<DaemonSet>::namespaced(client.clone(), "default")
        .patch("agent", &PatchParams::default(), &patch)
        .await
        .unwrap();
    let annotations = ds.spec.template.metadata.unwrap().annotations.unwrap();
    assert_eq!(annotations["keysmith.dev/restarted-for"], "ks_abc123");
    // The same patch again changes nothing and is not a write.
    let again = Api::<DaemonSet>::namespaced(client, "default")
        .patch("agent", &PatchParams::default(), &patch)
        .await
        .unwrap();
    assert_eq!(again.resource_version(), ds.metadata.resource_version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_as_a_process_for_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let crd = format!(
        "{}/tests/fixtures/gadgets-crd.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysmith-emulator"))
        .args(["--port", "0", "--tls", "--apply", &crd, "--kubeconfig"])
        .arg(&kubeconfig)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("the kubeconfig", || async {
        kubeconfig.exists().then_some(())
    })
    .await;
    let out = tokio::process::Command::new("/usr/bin/kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .args(["get", "crd", "-o", "name"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "customresourcedefinition.apiextensions.k8s.io/gadgets.example.com"
    );
    child.start_kill().unwrap();
    tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
}
