//! The real kubectl (v1.32, /usr/bin/kubectl) against the emulator: apply
//! (client-side and server-side), get with server-side printing and
//! printer columns, get -o yaml, describe, patch, delete, validation errors
//! and `auth can-i` under RBAC; Events written through either API seen through
//! the other (`describe`, `get events`); impersonation (`--as`, `--as-group`).

use std::path::{Path, PathBuf};

use crate::common::{emulator, gadget_resource, gadgets};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event as EventsV1;
use keysmith_emulator::{Config, Emulator, Identity};
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Resource};
use serde_json::{Value, json};

const KUBECTL: &str = "/usr/bin/kubectl";

struct Kubectl {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

struct Output {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn new(emu: &Emulator, identity: &Identity) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        emu.write_kubeconfig(&kubeconfig, identity).unwrap();
        Kubectl { dir, kubeconfig }
    }

    fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    async fn run(&self, args: &[&str]) -> Output {
        let out = tokio::process::Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .output()
            .await
            .expect("kubectl runs");
        Output {
            ok: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.ok,
            "kubectl {args:?} failed: {}{}",
            out.stdout, out.stderr
        );
        out.stdout
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_describe_patch_delete_a_custom_resource() {
    let emu = Emulator::start(Config {
        tls: true,
        ..Config::default()
    })
    .await
    .unwrap();
    let k = Kubectl::new(&emu, &Identity::Admin);

    // Creating the CRD through kubectl makes the resource servable.
    let out = k.ok(&["apply", "-f", &fixture("gadgets-crd.yaml")]).await;
    assert_eq!(
        out.trim(),
        "customresourcedefinition.apiextensions.k8s.io/gadgets.example.com created"
    );
    let out = k.ok(&["apply", "-f", &fixture("gadget.yaml")]).await;
    assert_eq!(out.trim(), "gadget.example.com/sprocket created");

    // The controller's view: a Ready condition through the status subresource.
    gadgets(&emu.client().await.unwrap(), "default")
        .patch_status(
            "sprocket",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})),
        )
        .await
        .unwrap();

    let table = k.ok(&["get", "gadgets"]).await;
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        vec!["NAME", "READY", "SIZE", "SLOTS", "AGE"],
        "{table}"
    );
    assert_eq!(
        &lines[1][..4],
        &["sprocket", "True", "3", "primary,backup"],
        "{table}"
    );
    assert!(lines[1][4].ends_with('s'), "age column: {table}");
    let short = k.ok(&["get", "gd", "-o", "name"]).await;
    assert_eq!(short.trim(), "gadget.example.com/sprocket");

    let yaml = k.ok(&["get", "gadget", "sprocket", "-o", "yaml"]).await;
    let obj: Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(obj["spec"]["color"], "red", "defaulted");
    assert_eq!(obj["spec"]["slots"][1]["bytes"], 48);
    assert!(
        obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    // Client-side apply of a change computes a JSON merge patch for a CR.
    let changed = std::fs::read_to_string(fixture("gadget.yaml"))
        .unwrap()
        .replace("size: 3", "size: 4");
    let changed_path = k.file("gadget-4.yaml", &changed);
    assert_eq!(
        k.ok(&["apply", "-f", path(&changed_path)]).await.trim(),
        "gadget.example.com/sprocket configured"
    );
    // Re-applying still sends the (atomic) slots list, because the server
    // defaulted a field inside it, exactly as with a real API server; the
    // resulting no-op update must not be a write.
    let rv = emu.resource_version();
    k.ok(&["apply", "-f", path(&changed_path)]).await;
    assert_eq!(emu.resource_version(), rv);

    let described = k.ok(&["describe", "gadget", "sprocket"]).await;
    assert!(described.contains("Name:         sprocket"), "{described}");
    assert!(described.contains("Kind:         Gadget"), "{described}");
    assert!(
        described.lines().any(|l| l.trim() == "Size:    4"),
        "{described}"
    );
    assert!(described.contains("Type:    Ready"), "{described}");

    let out = k
        .ok(&[
            "patch",
            "gadget",
            "sprocket",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"color":"blue"}}"#,
        ])
        .await;
    assert_eq!(out.trim(), "gadget.example.com/sprocket patched");
    let color = k
        .ok(&["get", "gadget", "sprocket", "-o", "jsonpath={.spec.color}"])
        .await;
    assert_eq!(color, "blue");

    assert_eq!(
        k.ok(&["delete", "gadget", "sprocket"]).await.trim(),
        "gadget.example.com \"sprocket\" deleted"
    );
    let gone = k.run(&["get", "gadget", "sprocket"]).await;
    assert!(!gone.ok);
    assert!(
        gone.stderr
            .contains("gadgets.example.com \"sprocket\" not found"),
        "{}",
        gone.stderr
    );
}

/// kubectl validates the items of a `v1` `List` against the server's OpenAPI v2 document (no v3
/// operation names that kind); a real server accepts the List that `kubectl get -o yaml` prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_of_a_v1_list_as_get_prints_it() {
    let emu = emulator(Config::default()).await;
    let k = Kubectl::new(&emu, &Identity::Admin);
    k.ok(&["apply", "-f", &fixture("gadget.yaml")]).await;
    k.ok(&[
        "create",
        "secret",
        "generic",
        "listed",
        "--from-literal=k=v",
    ])
    .await;
    let printed = k.ok(&["get", "gadget,secret", "-o", "yaml"]).await;
    assert!(printed.starts_with("apiVersion: v1\nitems:"), "{printed}");
    assert!(printed.contains("\nkind: List\n"), "{printed}");
    let changed = k.file(
        "list.yaml",
        &printed
            .replace("size: 3", "size: 5")
            .replace("\n  data:\n    k: dg==", "\n  data:\n    k: dw=="),
    );
    let out = k.ok(&["apply", "-f", path(&changed)]).await;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "gadget.example.com/sprocket configured",
            "secret/listed configured"
        ],
    );
    let size = k
        .ok(&["get", "gadget", "sprocket", "-o", "jsonpath={.spec.size}"])
        .await;
    assert_eq!(size, "5");
    let data = k
        .ok(&["get", "secret", "listed", "-o", "jsonpath={.data.k}"])
        .await;
    assert_eq!(data, "dw==");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_with_conflicts() {
    let emu = emulator(Config::default()).await;
    let k = Kubectl::new(&emu, &Identity::Admin);
    let out = k
        .ok(&["apply", "--server-side", "-f", &fixture("gadget.yaml")])
        .await;
    assert_eq!(out.trim(), "gadget.example.com/sprocket serverside-applied");
    let stored = emu
        .get("example.com/v1", "Gadget", "default", "sprocket")
        .unwrap();
    let managers: Vec<(&str, &str)> = stored["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["manager"].as_str().unwrap(),
                m["operation"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(managers, vec![("kubectl", "Apply")]);

    let other = std::fs::read_to_string(fixture("gadget.yaml"))
        .unwrap()
        .replace("size: 3", "size: 5");
    let other_path = k.file("other.yaml", &other);
    let conflict = k
        .run(&[
            "apply",
            "--server-side",
            "--field-manager",
            "other",
            "-f",
            path(&other_path),
        ])
        .await;
    assert!(!conflict.ok);
    assert!(
        conflict.stderr.contains("conflict with \"kubectl\""),
        "{}",
        conflict.stderr
    );
    assert!(
        conflict.stderr.contains(".spec.size"),
        "{}",
        conflict.stderr
    );
    k.ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager",
        "other",
        "-f",
        path(&other_path),
    ])
    .await;
    let size = k
        .ok(&["get", "gadget", "sprocket", "-o", "jsonpath={.spec.size}"])
        .await;
    assert_eq!(size, "5");
}

const BUILTINS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: app, image: "app:1", env: [{name: A, value: "1"}]}
      - {name: sidecar, image: "sidecar:1"}
---
apiVersion: v1
kind: Secret
metadata: {name: web-token, namespace: default}
stringData: {TOKEN: abc}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_apply_of_builtins_uses_strategic_merge() {
    let emu = emulator(Config::default()).await;
    let k = Kubectl::new(&emu, &Identity::Admin);
    let p = k.file("web.yaml", BUILTINS);
    let out = k.ok(&["apply", "-f", path(&p)]).await;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec!["deployment.apps/web created", "secret/web-token created"]
    );

    let changed = k.file(
        "web2.yaml",
        &BUILTINS
            .replace("app:1", "app:2")
            .replace("      - {name: sidecar, image: \"sidecar:1\"}\n", ""),
    );
    k.ok(&["apply", "-f", path(&changed)]).await;
    let patches = emu
        .request_log()
        .filter(|e| e.verb == "patch" && e.resource == "deployments");
    assert_eq!(patches.len(), 1);
    let deploy = emu.get("apps/v1", "Deployment", "default", "web").unwrap();
    let containers = &deploy["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().unwrap().len(), 1, "{containers}");
    assert_eq!(containers[0]["image"], "app:2");
    assert_eq!(containers[0]["env"][0]["value"], "1");
    assert_eq!(deploy["metadata"]["generation"], 2);

    let table = k.ok(&["get", "deploy,secret"]).await;
    assert!(table.contains("deployment.apps/web"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("secret/web-token") && l.contains("Opaque")),
        "{table}"
    );
    // Imperative creation goes through kubectl's typed (protobuf) clients.
    k.ok(&["create", "namespace", "demo"]).await;
    k.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "demo",
        "--from-literal=a=b",
    ])
    .await;
    let a = k
        .ok(&[
            "get",
            "secret",
            "s",
            "-n",
            "demo",
            "-o",
            "jsonpath={.data.a}",
        ])
        .await;
    assert_eq!(a, "Yg==");
    let token = k
        .ok(&["get", "secret", "web-token", "-o", "jsonpath={.data.TOKEN}"])
        .await;
    assert_eq!(token, "YWJj");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_custom_objects_are_rejected_with_kubernetes_messages() {
    let emu = emulator(Config::default()).await;
    let k = Kubectl::new(&emu, &Identity::Admin);
    let bad = k.file(
        "bad.yaml",
        "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: bad}\nspec: {size: 0, color: pink}\n",
    );
    let out = k.run(&["apply", "-f", path(&bad)]).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("The Gadget \"bad\" is invalid: \n* spec.color: Unsupported value: \"pink\": supported values: \"red\", \"green\", \"blue\"\n* spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"),
        "{}",
        out.stderr
    );
    let unknown = k.file(
        "unknown.yaml",
        "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: odd}\nspec: {size: 1, junk: 1}\n",
    );
    let out = k.run(&["apply", "-f", path(&unknown)]).await;
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("strict decoding error: unknown field \"spec.junk\""),
        "{}",
        out.stderr
    );
    assert!(
        emu.get("example.com/v1", "Gadget", "default", "odd")
            .is_none()
    );
}

const SA_RBAC: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: keysmith}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: keysmith}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: secret-reader, namespace: keysmith}
rules:
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: keysmith}
subjects:
- {kind: ServiceAccount, name: reader, namespace: keysmith}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: secret-reader}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_can_i_and_forbidden_under_rbac() {
    // kubectl only sends bearer tokens over TLS.
    let emu = emulator(Config {
        rbac: true,
        tls: true,
        ..Config::default()
    })
    .await;
    emu.apply_yaml(SA_RBAC).unwrap();
    let k = Kubectl::new(&emu, &Identity::service_account("keysmith", "reader"));

    let yes = k
        .run(&["auth", "can-i", "list", "secrets", "-n", "keysmith"])
        .await;
    assert_eq!((yes.code, yes.stdout.trim()), (Some(0), "yes"));
    let no = k
        .run(&["auth", "can-i", "delete", "secrets", "-n", "keysmith"])
        .await;
    assert_eq!((no.code, no.stdout.trim()), (Some(1), "no"));
    let elsewhere = k
        .run(&["auth", "can-i", "list", "secrets", "-n", "default"])
        .await;
    assert_eq!(elsewhere.stdout.trim(), "no");

    k.ok(&["get", "secrets", "-n", "keysmith"]).await;
    let denied = k.run(&["get", "secrets", "-n", "default"]).await;
    assert!(!denied.ok);
    assert!(
        denied.stderr.contains("secrets is forbidden: User \"system:serviceaccount:keysmith:reader\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""),
        "{}",
        denied.stderr
    );
    let admin = Kubectl::new(&emu, &Identity::Admin);
    let all = admin.run(&["auth", "can-i", "*", "*"]).await;
    assert_eq!(all.stdout.trim(), "yes");
}

/// The `Events:` section of `kubectl describe` output.
fn events_section(described: &str) -> &str {
    described
        .split_once("\nEvents:")
        .map_or("", |(_, events)| events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_events_show_in_describe_and_get_events() {
    let emu = emulator(Config {
        tls: true,
        ..Config::default()
    })
    .await;
    emu.apply_yaml(crate::common::GADGET).unwrap();
    let client = emu.client().await.unwrap();
    let gadget = gadgets(&client, "default").get("sprocket").await.unwrap();
    let reference = gadget.object_ref(&gadget_resource());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "keysmith".into(),
            instance: Some("keysmith-0".into()),
        },
    );
    let minted = Event {
        type_: EventType::Normal,
        reason: "Minted".into(),
        note: Some("minted token primary".into()),
        action: "Mint".into(),
        secondary: None,
    };
    recorder.publish(&minted, &reference).await.unwrap();
    let written = emu
        .request_log()
        .filter(|e| e.resource == "events" && e.is_write());
    assert_eq!(written.len(), 1);
    assert_eq!(
        (written[0].group.as_str(), written[0].verb.as_str()),
        ("events.k8s.io", "create")
    );

    // kubectl reads core v1 Events, selected by involvedObject name, namespace, kind and uid.
    let k = Kubectl::new(&emu, &Identity::Admin);
    let described = k.ok(&["describe", "gadget", "sprocket"]).await;
    let events = events_section(&described);
    assert!(
        events.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.starts_with(&["Normal", "Minted"])
                && cells.contains(&"keysmith")
                && l.ends_with("minted token primary")
        }),
        "{described}"
    );

    let table = k.ok(&["get", "events"]).await;
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{table}"
    );
    assert_eq!(
        &lines[1][1..],
        [
            "Normal",
            "Minted",
            "gadget/sprocket",
            "minted",
            "token",
            "primary"
        ],
        "{table}"
    );

    // The same event again within the Recorder's cache window becomes a series: a merge patch
    // through events.k8s.io/v1, which describe shows as a count.
    recorder.publish(&minted, &reference).await.unwrap();
    let described = k.ok(&["describe", "gadget", "sprocket"]).await;
    assert!(
        events_section(&described).contains("(x2 over"),
        "{described}"
    );
    let wide = k.ok(&["get", "events", "-o", "wide"]).await;
    assert!(wide.contains("keysmith, keysmith-0"), "{wide}");

    // Field selectors of both views, as kubectl and kube-rs send them.
    let notes = k
        .ok(&[
            "get",
            "events.v1.events.k8s.io",
            "--field-selector",
            "regarding.name=sprocket,regarding.kind=Gadget,reportingController=keysmith",
            "-o",
            "jsonpath={.items[*].note}",
        ])
        .await;
    assert_eq!(notes, "minted token primary");
    let none = k
        .ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=other",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(none.trim(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_events_are_visible_through_events_k8s_io() {
    let emu = emulator(Config {
        tls: true,
        ..Config::default()
    })
    .await;
    let client = emu.client().await.unwrap();
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let events_v1: Api<EventsV1> = Api::namespaced(client.clone(), "default");
    let selected = WatchParams::default().fields("regarding.name=app-tokens");
    let mut watch = events_v1.watch(&selected, "0").await.unwrap().boxed();

    let k = Kubectl::new(&emu, &Identity::Admin);
    k.ok(&["create", "secret", "generic", "app-tokens"]).await;
    let uid = k
        .ok(&[
            "get",
            "secret",
            "app-tokens",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .await;
    let event: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "app-tokens.rotated"},
        "involvedObject": {"apiVersion": "v1", "kind": "Secret", "name": "app-tokens",
                           "namespace": "default", "uid": uid},
        "reason": "Rotated", "message": "rotated token delivery", "type": "Warning",
        "source": {"component": "legacy-recorder"}, "count": 3,
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:05:00Z",
    }))
    .unwrap();
    core.create(&PostParams::default(), &event).await.unwrap();

    let next_added = async {
        loop {
            match watch
                .try_next()
                .await
                .unwrap()
                .expect("the watch stays open")
            {
                WatchEvent::Added(e) => break e,
                WatchEvent::Bookmark(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    let added = tokio::time::timeout(keysmith_emulator::EVENTUALLY_TIMEOUT, next_added)
        .await
        .expect("the core v1 event reaches the events.k8s.io/v1 watch");
    assert_eq!(added.note.as_deref(), Some("rotated token delivery"));
    assert_eq!(
        added.regarding.as_ref().and_then(|r| r.uid.as_deref()),
        Some(uid.as_str())
    );
    assert_eq!(added.deprecated_count, Some(3));
    assert_eq!(
        added.deprecated_source.and_then(|s| s.component).as_deref(),
        Some("legacy-recorder")
    );

    let listed = events_v1
        .list(&ListParams::default().fields("regarding.kind=Secret,type=Warning"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].reason.as_deref(), Some("Rotated"));

    // A write through events.k8s.io/v1 is the same object in core v1. (It may grow the series;
    // the note is immutable there, as on a real server.)
    let series = json!({"series": {"count": 4, "lastObservedTime": "2026-01-01T00:05:00.000000Z"}});
    events_v1
        .patch(
            "app-tokens.rotated",
            &PatchParams::default(),
            &Patch::Merge(series),
        )
        .await
        .unwrap();
    let stored = core.get("app-tokens.rotated").await.unwrap();
    assert_eq!(stored.series.and_then(|s| s.count), Some(4));
    assert_eq!(stored.message.as_deref(), Some("rotated token delivery"));
    assert_eq!(stored.count, Some(3));
    let table = k.ok(&["get", "events"]).await;
    assert!(
        table.contains("secret/app-tokens   rotated token delivery"),
        "{table}"
    );
}

const IMPERSONATION_RBAC: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: secret-reader, namespace: default}
rules:
- {apiGroups: [""], resources: [secrets], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-reads-secrets, namespace: default}
subjects:
- {kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: secret-reader}
"#;

const CAROL_IMPERSONATES_ALICE: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: impersonate-alice}
rules:
- {apiGroups: [""], resources: [users], verbs: [impersonate], resourceNames: [alice]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: carol-impersonates-alice}
subjects:
- {kind: User, name: carol, apiGroup: rbac.authorization.k8s.io}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: impersonate-alice}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_is_authorized_and_answers_for_the_impersonated_user() {
    let emu = emulator(Config {
        rbac: true,
        tls: true,
        ..Config::default()
    })
    .await;
    emu.apply_yaml(IMPERSONATION_RBAC).unwrap();
    let admin = Kubectl::new(&emu, &Identity::Admin);

    let nobody = admin
        .run(&[
            "auth",
            "can-i",
            "list",
            "secrets",
            "--as=system:serviceaccount:x:nobody",
        ])
        .await;
    assert_eq!((nobody.code, nobody.stdout.trim()), (Some(1), "no"));
    let yes = admin
        .run(&[
            "auth",
            "can-i",
            "list",
            "secrets",
            "-n",
            "default",
            "--as=alice",
        ])
        .await;
    assert_eq!((yes.code, yes.stdout.trim()), (Some(0), "yes"));
    let no = admin
        .run(&[
            "auth",
            "can-i",
            "delete",
            "secrets",
            "-n",
            "default",
            "--as=alice",
        ])
        .await;
    assert_eq!((no.code, no.stdout.trim()), (Some(1), "no"));

    // The request runs, is authorized and is logged as the impersonated user.
    emu.request_log().clear();
    admin
        .ok(&["get", "secrets", "-n", "default", "--as=alice"])
        .await;
    let denied = admin
        .run(&["get", "configmaps", "-n", "default", "--as=alice"])
        .await;
    assert!(
        denied.stderr.contains("configmaps is forbidden: User \"alice\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\""),
        "{}",
        denied.stderr
    );
    let users: Vec<String> = emu
        .request_log()
        .filter(|e| matches!(e.resource.as_str(), "secrets" | "configmaps"))
        .into_iter()
        .map(|e| e.user)
        .collect();
    assert!(
        !users.is_empty() && users.iter().all(|u| u == "alice"),
        "{users:?}"
    );

    let whoami = admin
        .ok(&[
            "auth",
            "whoami",
            "--as=system:serviceaccount:x:nobody",
            "-o",
            "json",
        ])
        .await;
    let info: Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(
        info["status"]["userInfo"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:x",
            "system:authenticated"
        ])
    );
    let whoami = admin
        .ok(&[
            "auth",
            "whoami",
            "--as=alice",
            "--as-group=devs",
            "-o",
            "json",
        ])
        .await;
    let info: Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(
        info["status"]["userInfo"]["groups"],
        json!(["devs", "system:authenticated"])
    );

    // Someone without the impersonate verb is refused before anything else happens. (`get
    // --raw` shows the server's message; kubectl's aggregated discovery prints a 403 as
    // "unknown", with a real API server too.)
    let secrets = "/api/v1/namespaces/default/secrets";
    let bob = Kubectl::new(&emu, &Identity::user("bob", &[]));
    let refused = bob.run(&["get", "--raw", secrets, "--as=alice"]).await;
    assert!(
        refused.stderr.contains("users \"alice\" is forbidden: User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{}",
        refused.stderr
    );
    let refused = bob
        .run(&[
            "get",
            "--raw",
            secrets,
            "--as=system:serviceaccount:x:nobody",
        ])
        .await;
    assert!(
        refused.stderr.contains("serviceaccounts \"nobody\" is forbidden: User \"bob\" cannot impersonate resource \"serviceaccounts\" in API group \"\" in the namespace \"x\""),
        "{}",
        refused.stderr
    );
    let refused = bob
        .run(&["auth", "can-i", "list", "secrets", "--as=alice"])
        .await;
    assert!(!refused.ok && refused.stdout.trim() != "yes");
    assert!(
        emu.request_log()
            .filter(|e| e.user == "bob")
            .iter()
            .all(|e| e.code == 403)
    );

    // A grant of `impersonate` on one user lets carol act as alice, but not add a group.
    emu.apply_yaml(CAROL_IMPERSONATES_ALICE).unwrap();
    let carol = Kubectl::new(&emu, &Identity::user("carol", &[]));
    carol
        .ok(&["get", "secrets", "-n", "default", "--as=alice"])
        .await;
    let group = carol
        .run(&["get", "--raw", secrets, "--as=alice", "--as-group=admins"])
        .await;
    assert!(
        group.stderr.contains("groups \"admins\" is forbidden: User \"carol\" cannot impersonate resource \"groups\" in API group \"\" at the cluster scope"),
        "{}",
        group.stderr
    );
}
