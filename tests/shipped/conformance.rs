//! Differential conformance: every test starts the API emulator and a real control plane
//! (kube-apiserver, etcd, kube-controller-manager), sends both the same requests through kube-rs
//! and the real `kubectl`, normalizes what is bound to differ between two servers (uids,
//! resourceVersions, timestamps, ages, continue tokens) and asserts the answers are equal. A
//! difference the emulator keeps on purpose is asserted explicitly, side by side, and listed in
//! `docs/emulator.md`.

use std::future::Future;
use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use keysmith_emulator::{Config, Identity};
use keysmith_testenv::{Backend, Cluster};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams, WatchParams,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde_json::{Value, json};

const NS: &str = "default";
const VERIFIER: &str = "system:serviceaccount:keysmith:keysmith-verifier";

/// One backend: the cluster, an administrator client and an administrator kubeconfig file.
struct Side {
    cluster: Cluster,
    admin: Client,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

/// The two backends a test compares.
struct Pair {
    emu: Side,
    real: Side,
    dir: tempfile::TempDir,
}

impl Side {
    async fn start(backend: Backend, dir: &Path) -> Side {
        let config = Config {
            tls: true,
            ..Config::default()
        };
        let cluster = Cluster::with_chart(backend, config)
            .await
            .unwrap_or_else(|e| panic!("{backend:?} starts: {e}"));
        let name = format!("{backend:?}").to_lowercase();
        let kubeconfig = dir.join(format!("{name}.kubeconfig"));
        cluster
            .write_kubeconfig(&kubeconfig, &Identity::Admin)
            .await
            .expect("kubeconfig written");
        Side {
            admin: cluster.client().await.expect("admin client"),
            cluster,
            kubeconfig,
            cache: dir.join(format!("{name}-cache")),
        }
    }

    async fn client(&self, identity: &Identity) -> Client {
        match identity {
            Identity::Admin => self.admin.clone(),
            other => self.cluster.client_as(other).await.expect("client"),
        }
    }

    async fn kubectl(&self, args: &[&str]) -> Value {
        let out = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .env_remove("KUBECONFIG")
            .output()
            .await
            .expect("kubectl runs");
        json!({
            "code": out.status.code(),
            "stdout": normalize_text(&String::from_utf8_lossy(&out.stdout)),
            "stderr": normalize_text(&String::from_utf8_lossy(&out.stderr)),
        })
    }
}

impl Pair {
    async fn start() -> Pair {
        let dir = tempfile::tempdir().expect("temporary folder");
        let (emu, real) = tokio::join!(
            Side::start(Backend::Emulator, dir.path()),
            Side::start(Backend::Real, dir.path())
        );
        Pair { emu, real, dir }
    }

    /// Run `step` as `identity` on both backends and return both answers, normalized.
    async fn both_as<F, Fut>(&self, identity: &Identity, step: F) -> (Value, Value)
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Value>,
    {
        let (emu, real) = tokio::join!(self.emu.client(identity), self.real.client(identity));
        let (emu, real) = tokio::join!(step(emu), step(real));
        (normalize(emu), normalize(real))
    }

    /// Run `step` as `identity` on both backends, assert the answers are equal, return it.
    async fn same_as<F, Fut>(&self, what: &str, identity: &Identity, step: F) -> Value
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Value>,
    {
        let (emu, real) = self.both_as(identity, step).await;
        assert_same(what, &emu, &real);
        emu
    }

    /// Like [`Pair::same`], with known differences (docs/emulator.md): at each JSON pointer the
    /// emulator must answer the first value and the real server the second; the rest must agree.
    async fn known<F, Fut>(
        &self,
        what: &str,
        identity: &Identity,
        differences: &[(&str, Value, Value)],
        step: F,
    ) -> Value
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Value>,
    {
        let (mut emu, mut real) = self.both_as(identity, step).await;
        for (pointer, on_emu, on_real) in differences {
            assert_eq!(
                &take(&mut emu, pointer),
                on_emu,
                "{what}: the emulator at {pointer}"
            );
            assert_eq!(
                &take(&mut real, pointer),
                on_real,
                "{what}: the real server at {pointer}"
            );
        }
        assert_same(what, &emu, &real);
        emu
    }

    /// [`Pair::same_as`] as the administrator.
    async fn same<F, Fut>(&self, what: &str, step: F) -> Value
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Value>,
    {
        self.same_as(what, &Identity::Admin, step).await
    }

    /// Run the real kubectl with `args` against both, assert equal exit codes and output.
    async fn kubectl(&self, args: &[&str]) -> Value {
        let (emu, real) = tokio::join!(self.emu.kubectl(args), self.real.kubectl(args));
        assert_same(&format!("kubectl {}", args.join(" ")), &emu, &real);
        emu
    }

    /// A file both kubectl runs can read.
    fn file(&self, name: &str, content: &Value) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, serde_json::to_string(content).expect("JSON")).expect("file");
        path.to_string_lossy().into_owned()
    }
}

/// Remove the value at a JSON pointer (`null` when absent), so what is left can be compared.
fn take(answer: &mut Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
    match answer.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(key).unwrap_or(Value::Null),
        Some(Value::Array(items)) => key
            .parse::<usize>()
            .ok()
            .filter(|i| *i < items.len())
            .map_or(Value::Null, |i| items.remove(i)),
        _ => Value::Null,
    }
}

fn assert_same(what: &str, emu: &Value, real: &Value) {
    assert!(
        emu == real,
        "{what}: the emulator and the real API server differ\nemulator: {}\nreal:     {}",
        serde_json::to_string_pretty(emu).expect("JSON"),
        serde_json::to_string_pretty(real).expect("JSON"),
    );
}

/// Fields whose values are the server's own (identities, versions, clocks): their presence is
/// compared, their values are not.
const VOLATILE: &[&str] = &[
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "time",
    "eventTime",
    "continue",
];

fn normalize(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = if VOLATILE.contains(&k.as_str()) && !v.is_null() && v != "" {
                        Value::String(format!("<{k}>"))
                    } else if k == "causes" {
                        // The real server validates properties in Go map order: causes come in
                        // any order.
                        let mut causes = normalize(v);
                        if let Some(list) = causes.as_array_mut() {
                            list.sort_by_key(Value::to_string);
                        }
                        causes
                    } else if k == "managedFields" {
                        // The real server orders entries by operation, then by their time in
                        // whole seconds, then manager, apiVersion and subresource: two writes
                        // that straddle a second boundary swap places. With times masked, the
                        // order is compared without its time part.
                        let mut entries = normalize(v);
                        if let Some(list) = entries.as_array_mut() {
                            list.sort_by_key(|e| {
                                ["operation", "manager", "apiVersion", "subresource"]
                                    .map(|f| e[f].as_str().unwrap_or_default().to_owned())
                            });
                        }
                        entries
                    } else {
                        normalize(v)
                    };
                    // managedFields name an ownerReference by its owner's uid.
                    let k = match k.strip_prefix(r#"k:{"uid":"#) {
                        Some(_) => r#"k:{"uid":"<uid>"}"#.to_owned(),
                        None => k,
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        other => other,
    }
}

/// kubectl's text with ages (`5s`, `2m3s`) and the values of describe's volatile lines
/// replaced, and runs of spaces collapsed (an age's width moves the columns after it).
fn normalize_text(text: &str) -> Vec<String> {
    const KEYS: &[&str] = &[
        "Creation Timestamp:",
        "Deletion Timestamp:",
        "Resource Version:",
        "UID:",
        "Uid:",
        "Time:",
    ];
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if let Some(key) = KEYS.iter().find(|k| trimmed.starts_with(**k)) {
                return format!("{key} <value>");
            }
            line.split_whitespace()
                .map(|token| match () {
                    () if is_age(token) => "<age>",
                    // kube-rs's Recorder names an Event after the clock: `object.<hex nanos>`.
                    () if token.rsplit_once('.').is_some_and(|(_, t)| {
                        t.len() == 16 && t.chars().all(|c| c.is_ascii_hexdigit())
                    }) =>
                    {
                        "<event-name>"
                    }
                    () => token,
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn is_age(token: &str) -> bool {
    let units = token.trim_start_matches(|c: char| c.is_ascii_digit() || "smhdy".contains(c));
    units.is_empty()
        && token.starts_with(|c: char| c.is_ascii_digit())
        && token.ends_with(|c: char| "smhdy".contains(c))
}

/// A request's answer: the object, or the API's `Status` under `error`.
fn outcome<T: Serialize>(result: kube::Result<T>) -> Value {
    match result {
        Ok(value) => to_json(value),
        Err(kube::Error::Api(status)) => json!({ "error": status }),
        Err(e) => panic!("the request failed outside the API: {e}"),
    }
}

fn to_json<T: Serialize>(value: T) -> Value {
    serde_json::to_value(value).expect("JSON")
}

fn dynamic(client: Client, api_version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Api::namespaced_with(client, NS, &ApiResource::from_gvk_with_plural(&gvk, plural))
}

fn apikeys(client: Client) -> Api<DynamicObject> {
    dynamic(client, "keysmith.dev/v1alpha1", "ApiKey", "apikeys")
}

fn secrets(client: Client) -> Api<DynamicObject> {
    dynamic(client, "v1", "Secret", "secrets")
}

fn apikey(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": name, "namespace": NS}, "spec": spec,
    })
}

fn one_slot() -> Value {
    json!({"tokens": [{"name": "primary"}]})
}

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("an object")
}

async fn create(client: Client, value: Value) -> Value {
    let api = dynamic(
        client,
        value["apiVersion"].as_str().expect("apiVersion"),
        value["kind"].as_str().expect("kind"),
        &format!("{}s", value["kind"].as_str().expect("kind").to_lowercase()),
    );
    outcome(api.create(&PostParams::default(), &object(value)).await)
}

fn error(answer: &Value) -> (u64, &str) {
    let status = &answer["error"];
    (
        status["code"].as_u64().unwrap_or_default(),
        status["reason"].as_str().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_already_exists_and_stale_update_conflict() {
    let pair = Pair::start().await;

    let missing = pair
        .same("get of a missing ApiKey", |c| async move {
            outcome(apikeys(c).get("missing").await)
        })
        .await;
    assert_eq!(error(&missing), (404, "NotFound"));
    assert_eq!(
        missing["error"]["message"],
        r#"apikeys.keysmith.dev "missing" not found"#
    );
    let kubectl = pair.kubectl(&["get", "ak", "missing"]).await;
    assert_eq!(kubectl["code"], 1);

    let created = pair
        .same("create", |c| create(c, apikey("taken", one_slot())))
        .await;
    assert_eq!(created["metadata"]["generation"], 1);
    let again = pair
        .same("create of an existing name", |c| {
            create(c, apikey("taken", one_slot()))
        })
        .await;
    assert_eq!(error(&again), (409, "AlreadyExists"));

    let updates = pair
        .same("updates from one resourceVersion", |c| async move {
            let api = apikeys(c);
            let mut stale = api.get("taken").await.expect("get");
            let mut fresh = stale.clone();
            fresh.data["spec"]["description"] = json!("first");
            let first = outcome(api.replace("taken", &PostParams::default(), &fresh).await);
            stale.data["spec"]["description"] = json!("second");
            let second = outcome(api.replace("taken", &PostParams::default(), &stale).await);
            json!([first, second])
        })
        .await;
    assert_eq!(updates[0]["spec"]["description"], "first");
    assert_eq!(error(&updates[1]), (409, "Conflict"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_and_cel_rejections_are_422_invalid() {
    let pair = Pair::start().await;
    let nine: Vec<Value> = (0..9).map(|i| json!({"name": format!("s{i}")})).collect();
    let cases = [
        (
            "prefix pattern",
            json!({"tokens": [{"name": "primary", "prefix": "bad-prefix"}]}),
        ),
        ("too many token slots", json!({ "tokens": nine })),
        ("no token slot", json!({"tokens": []})),
        ("tokens missing", json!({})),
        (
            "CEL: overlap >= every",
            json!({"tokens": [{"name": "primary"}], "rotation": {"every": "1h", "overlap": "2h"}}),
        ),
        (
            "CEL: every and schedule",
            json!({"tokens": [{"name": "primary"}], "rotation": {"every": "1h", "schedule": "@daily"}}),
        ),
        (
            "CEL: duplicate Secret keys",
            json!({"tokens": [{"name": "a", "secretKey": "K"}, {"name": "b", "secretKey": "K"}]}),
        ),
    ];
    for (what, spec) in cases {
        let answer = pair
            .same(what, |c| create(c, apikey("invalid", spec.clone())))
            .await;
        assert_eq!(error(&answer), (422, "Invalid"), "{what}: {answer}");
    }
    // Two schema errors in one item: the emulator prints the minimum as 16.0, the real server
    // as 16. The real server's order of the two varies (Go map order), so the causes are sorted.
    let spec = json!({"tokens": [{"name": "primary", "bytes": 8, "encoding": "base64"}]});
    let (mut emu, mut real) = pair
        .both_as(&Identity::Admin, |c| {
            create(c, apikey("invalid", spec.clone()))
        })
        .await;
    let minimum = "spec.tokens[0].bytes in body should be greater than or equal to 16";
    for (answer, printed) in [
        (&mut emu, format!("{minimum}.0")),
        (&mut real, minimum.to_owned()),
    ] {
        let message = take(answer, "/error/message");
        assert!(
            message
                .as_str()
                .is_some_and(|m| m.contains(&format!("{printed},"))),
            "{message}"
        );
        for cause in answer["error"]["details"]["causes"]
            .as_array_mut()
            .expect("causes")
        {
            if cause["field"] == "spec.tokens[0].bytes" {
                assert_eq!(cause["message"], format!("Invalid value: 8: {printed}"));
                cause["message"] = Value::Null;
            }
        }
    }
    assert_same("bytes below the minimum, unknown encoding", &emu, &real);
    let file = pair.file(
        "invalid.json",
        &apikey(
            "invalid",
            json!({"tokens": [{"name": "primary", "prefix": "no-dash"}]}),
        ),
    );
    let applied = pair.kubectl(&["apply", "-f", &file]).await;
    assert_eq!(applied["code"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_without_rights() {
    let pair = Pair::start().await;
    pair.same("fixture", |c| create(c, apikey("guarded", one_slot())))
        .await;
    let nobody = Identity::service_account(NS, "nobody");
    let answers = pair
        .known(
            "requests without any rights",
            &nobody,
            // The real server's 403 names the resource in details; the emulator's has none.
            &[
                (
                    "/0/error/details",
                    Value::Null,
                    json!({"group": "keysmith.dev", "kind": "apikeys", "name": "guarded"}),
                ),
                (
                    "/1/error/details",
                    Value::Null,
                    json!({"group": "keysmith.dev", "kind": "apikeys"}),
                ),
                (
                    "/2/error/details",
                    Value::Null,
                    json!({"group": "keysmith.dev", "kind": "apikeys"}),
                ),
                ("/3/error/details", Value::Null, json!({"kind": "secrets"})),
            ],
            |c| async move {
                json!([
                    outcome(apikeys(c.clone()).get("guarded").await),
                    outcome(apikeys(c.clone()).list(&ListParams::default()).await),
                    create(c.clone(), apikey("sneaky", one_slot())).await,
                    outcome(secrets(c).list(&ListParams::default()).await),
                ])
            },
        )
        .await;
    for answer in answers.as_array().expect("answers") {
        assert_eq!(error(answer), (403, "Forbidden"), "{answer}");
    }

    let verifier = Identity::service_account("keysmith", "keysmith-verifier");
    let answers = pair
        .known(
            "the verifier's rights",
            &verifier,
            &[
                (
                    "/0/error/details",
                    Value::Null,
                    json!({"group": "keysmith.dev", "kind": "apikeys", "name": "guarded"}),
                ),
                ("/2/error/details", Value::Null, json!({"kind": "secrets"})),
            ],
            |c| async move {
                json!([
                    outcome(apikeys(c.clone()).get("guarded").await),
                    outcome(apikeys(c.clone()).list(&ListParams::default()).await)["items"]
                        .as_array()
                        .map(Vec::len),
                    outcome(secrets(c).list(&ListParams::default()).await),
                ])
            },
        )
        .await;
    assert_eq!(error(&answers[0]), (403, "Forbidden"));
    assert_eq!(answers[1], 1);
    assert_eq!(error(&answers[2]), (403, "Forbidden"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_bumps_on_spec_only_and_status_is_a_subresource() {
    let pair = Pair::start().await;
    let steps = pair
        .same("spec, metadata and status writes", |c| async move {
            let api = apikeys(c.clone());
            let merge = |v: Value| Patch::Merge(v);
            let pp = PatchParams::default();
            json!([
                create(
                    c,
                    apikey(
                        "gen",
                        json!({"tokens": [{"name": "primary"}], "description": "one"})
                    )
                )
                .await,
                outcome(
                    api.patch(
                        "gen",
                        &pp,
                        &merge(json!({"metadata": {"labels": {"team": "a"}}}))
                    )
                    .await
                ),
                outcome(
                    api.patch_status(
                        "gen",
                        &pp,
                        &merge(json!({
                            "spec": {"description": "ignored by status"},
                            "status": {"observedGeneration": 1, "secretName": "gen"},
                        }))
                    )
                    .await
                ),
                outcome(
                    api.patch(
                        "gen",
                        &pp,
                        &merge(json!({
                            "spec": {"description": "two"},
                            "status": {"secretName": "ignored by the main resource"},
                        }))
                    )
                    .await
                ),
                outcome(
                    api.patch("gen", &pp, &merge(json!({"spec": {"description": "two"}})))
                        .await
                ),
            ])
        })
        .await;
    let generations: Vec<&Value> = steps
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| &s["metadata"]["generation"])
        .collect();
    assert_eq!(
        generations,
        [&json!(1), &json!(1), &json!(1), &json!(2), &json!(2)]
    );
    assert_eq!(steps[2]["spec"]["description"], "one");
    assert_eq!(steps[3]["status"]["secretName"], "gen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizer_keeps_a_deleted_object_until_removed() {
    let pair = Pair::start().await;
    // The real server reports the forbidden new finalizer twice.
    let cause = json!({"field": "metadata.finalizers", "reason": "FieldValueForbidden",
        "message": "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"example.com/another\"}"});
    let steps = pair
        .known(
            "delete with a finalizer",
            &Identity::Admin, &[("/4/error/details/causes/1", Value::Null, cause)], |c| async move {
            let api = apikeys(c.clone());
            let mut key = apikey("held", one_slot());
            key["metadata"]["finalizers"] = json!(["keysmith.dev/revoke"]);
            let pp = PatchParams::default();
            json!([
                create(c, key).await,
                outcome(api.delete("held", &DeleteParams::default()).await.map(|e| e.either(to_json, to_json))),
                outcome(api.get("held").await),
                outcome(api.patch("held", &pp, &Patch::Merge(json!({"metadata": {"labels": {"late": "yes"}}}))).await),
                outcome(api.patch("held", &pp, &Patch::Json::<()>(serde_json::from_value(json!([
                    {"op": "add", "path": "/metadata/finalizers/-", "value": "example.com/another"}
                ])).expect("JSON patch"))).await),
                outcome(api.patch("held", &pp, &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await),
                outcome(api.get("held").await),
            ])
        })
        .await;
    assert_eq!(
        steps[1]["metadata"]["deletionTimestamp"],
        "<deletionTimestamp>"
    );
    assert_eq!(
        steps[2]["metadata"]["finalizers"],
        json!(["keysmith.dev/revoke"])
    );
    assert_eq!(steps[3]["metadata"]["labels"]["late"], "yes");
    assert_eq!(error(&steps[4]), (422, "Invalid"));
    assert_eq!(error(&steps[6]), (404, "NotFound"));
}

/// Create an ApiKey and a Secret it owns; return the Secret's answer.
async fn owned_secret(c: Client, owner: &str, block: bool) -> Value {
    let key = create(c.clone(), apikey(owner, one_slot())).await;
    create(
        c,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("{owner}-tokens"), "namespace": NS, "ownerReferences": [{
                "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey", "name": owner,
                "uid": key["metadata"]["uid"], "controller": true, "blockOwnerDeletion": block,
            }]},
            "stringData": {"primary": "not-a-real-token"},
        }),
    )
    .await
}

async fn gone(api: &Api<DynamicObject>, name: &str) -> Option<()> {
    api.get_opt(name)
        .await
        .expect("get")
        .is_none()
        .then_some(())
}

/// Wait until the garbage collector removed `name`. Longer than `keysmith_emulator::eventually`: the real
/// kube-controller-manager's collector picks up a new resource type (the CRD) only on its
/// discovery resync, every 30 s.
async fn collected(api: &Api<DynamicObject>, name: &str) {
    let deadline = tokio::time::Instant::now() + 3 * keysmith_emulator::EVENTUALLY_TIMEOUT;
    while gone(api, name).await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} was not garbage-collected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_secret_is_garbage_collected() {
    let pair = Pair::start().await;
    let background = pair
        .same("background deletion of the owner", |c| async move {
            let secret = owned_secret(c.clone(), "owner", false).await;
            let delete = outcome(
                apikeys(c.clone())
                    .delete("owner", &DeleteParams::background())
                    .await
                    .map(|e| e.either(to_json, to_json)),
            );
            let secrets = secrets(c);
            collected(&secrets, "owner-tokens").await;
            json!([secret, delete])
        })
        .await;
    assert_eq!(
        background[0]["metadata"]["ownerReferences"][0]["name"],
        "owner"
    );

    // The emulator collects the dependents within the delete and answers with a Status; the
    // real server answers with the owner, held by the foregroundDeletion finalizer.
    let foreground = pair
        .both_as(&Identity::Admin, |c| async move {
            owned_secret(c.clone(), "fg", true).await;
            let keys = apikeys(c.clone());
            let delete = outcome(
                keys.delete("fg", &DeleteParams::foreground())
                    .await
                    .map(|e| e.either(to_json, to_json)),
            );
            let secrets = secrets(c);
            collected(&secrets, "fg-tokens").await;
            collected(&keys, "fg").await;
            delete
        })
        .await;
    assert_eq!(foreground.0["status"], "Success");
    assert_eq!(foreground.0["details"]["name"], "fg");
    assert_eq!(
        foreground.1["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    assert_eq!(
        foreground.1["metadata"]["deletionTimestamp"],
        "<deletionTimestamp>"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_patch_json_patch_and_server_side_apply() {
    let pair = Pair::start().await;
    let patches = pair
        .same("merge and JSON patches", |c| async move {
            let api = apikeys(c.clone());
            let pp = PatchParams::default();
            let json_patch =
                |v: Value| Patch::Json::<()>(serde_json::from_value(v).expect("JSON patch"));
            json!([
                create(
                    c,
                    apikey(
                        "patched",
                        json!({"tokens": [{"name": "primary"}], "description": "one"})
                    )
                )
                .await,
                outcome(
                    api.patch(
                        "patched",
                        &pp,
                        &Patch::Merge(json!({
                            "spec": {"description": null, "environment": "prod"}
                        }))
                    )
                    .await
                ),
                outcome(
                    api.patch(
                        "patched",
                        &pp,
                        &json_patch(json!([
                            {"op": "add", "path": "/spec/tokens/-", "value": {"name": "secondary"}},
                            {"op": "replace", "path": "/spec/environment", "value": "dev"},
                        ]))
                    )
                    .await
                ),
                outcome(
                    api.patch(
                        "patched",
                        &pp,
                        &json_patch(json!([
                            {"op": "test", "path": "/spec/environment", "value": "prod"},
                        ]))
                    )
                    .await
                ),
                outcome(
                    api.patch(
                        "patched",
                        &pp,
                        &json_patch(json!([
                            {"op": "remove", "path": "/spec/missing"},
                        ]))
                    )
                    .await
                ),
                outcome(
                    api.patch(
                        "patched",
                        &pp,
                        &Patch::Strategic(json!({"spec": {"environment": "x"}}))
                    )
                    .await
                ),
            ])
        })
        .await;
    assert_eq!(patches[1]["spec"]["environment"], "prod");
    assert!(patches[1]["spec"].get("description").is_none());
    assert_eq!(patches[2]["spec"]["tokens"][1]["name"], "secondary");
    assert_eq!(error(&patches[3]).0, 422);
    assert_eq!(error(&patches[4]).0, 422);
    assert_eq!(error(&patches[5]), (415, "UnsupportedMediaType"));

    // A forced apply takes the conflicting field only: the real server keeps alice as a
    // co-owner of the fields both applied with equal values; the emulator drops her entry.
    let applies = pair
        .known(
            "server-side apply by two managers",
            &Identity::Admin,
            &[("/2/metadata/managedFields/1", Value::Null, json!({
                "apiVersion": "keysmith.dev/v1alpha1", "fieldsType": "FieldsV1", "manager": "bob",
                "operation": "Apply", "time": "<time>",
                "fieldsV1": {"f:spec": {"f:description": {}, "f:tokens": {"k:{\"name\":\"primary\"}": {".": {}, "f:name": {}}}}},
            })), ("/2/metadata/managedFields/0/fieldsV1/f:spec/f:description", json!({}), Value::Null),
              ("/2/metadata/managedFields/0/manager", json!("bob"), json!("alice"))],
            |c| async move {
            let api = apikeys(c);
            let apply = |manager: &str, description: &str, force: bool| {
                let mut params = PatchParams::apply(manager);
                params.force = force;
                let body = apikey(
                    "applied",
                    json!({"tokens": [{"name": "primary"}], "description": description}),
                );
                let api = api.clone();
                async move { outcome(api.patch("applied", &params, &Patch::Apply(body)).await) }
            };
            json!([
                apply("alice", "from alice", false).await,
                apply("bob", "from bob", false).await,
                apply("bob", "from bob", true).await,
            ])
        })
        .await;
    assert_eq!(error(&applies[1]), (409, "Conflict"));
    assert!(
        applies[1]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(r#"conflict with "alice""#)),
        "{}",
        applies[1]
    );
    assert_eq!(applies[2]["spec"]["description"], "from bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_with_limit_and_continue() {
    let pair = Pair::start().await;
    // The real server's last page of a custom resource list carries an empty continue token.
    let pages = pair
        .known(
            "list in pages of two",
            &Identity::Admin,
            &[("/2/metadata/continue", Value::Null, json!(""))],
            |c| async move {
                for i in 0..5 {
                    create(c.clone(), apikey(&format!("page-{i}"), one_slot())).await;
                }
                let api = apikeys(c);
                let mut pages = Vec::new();
                let mut params = ListParams::default().limit(2);
                loop {
                    let page = api.list(&params).await.expect("list");
                    let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
                    pages.push(json!({
                    "names": page.items.iter().map(|o| o.metadata.name.clone()).collect::<Vec<_>>(),
                    "metadata": page.metadata,
                }));
                    match next {
                        Some(token) => params = params.continue_token(&token),
                        None => break,
                    }
                }
                Value::Array(pages)
            },
        )
        .await;
    assert_eq!(pages.as_array().map(Vec::len), Some(3));
    assert_eq!(pages[0]["names"], json!(["page-0", "page-1"]));
    assert_eq!(pages[0]["metadata"]["remainingItemCount"], 3);
    assert_eq!(pages[2]["names"], json!(["page-4"]));
    let chunked = pair
        .kubectl(&["get", "ak", "--chunk-size=2", "-o", "name"])
        .await;
    assert_eq!(chunked["stdout"].as_array().map(Vec::len), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_with_a_label_selector_and_continue() {
    let pair = Pair::start().await;
    // Matches interleaved with objects the selectors skip. A page cut at its limit continues
    // whenever any object follows its last item in the store, matched or not (so a page can be
    // empty); a page short of its limit, or one ending at the last stored object, is the last.
    const TIERS: [Option<&str>; 6] = [
        Some("gold"),
        None,
        Some("gold"),
        Some("gold"),
        Some("gold"),
        Some("silver"),
    ];
    const QUERIES: [(&str, u32); 3] = [("tier=gold", 2), ("tier=gold", 3), ("tier!=gold", 2)];
    let answers = pair
        .same("list with a label selector in pages", |c| async move {
            for (i, tier) in TIERS.into_iter().enumerate() {
                let mut key = apikey(&format!("sel-{i}"), one_slot());
                if let Some(tier) = tier {
                    key["metadata"]["labels"] = json!({ "tier": tier });
                }
                create(c.clone(), key).await;
            }
            let api = apikeys(c);
            let mut answers = Vec::new();
            for (selector, limit) in QUERIES {
                let params = ListParams::default().labels(selector).limit(limit);
                answers.push(all_pages(&api, params).await);
            }
            Value::Array(answers)
        })
        .await;
    let names = |query: usize| -> Vec<Value> {
        let pages = answers[query].as_array().expect("pages");
        pages.iter().map(|p| p["names"].clone()).collect()
    };
    // sel-5 follows sel-4 and does not match: the second page still continues, to an empty one.
    assert_eq!(
        names(0),
        [
            json!(["sel-0", "sel-2"]),
            json!(["sel-3", "sel-4"]),
            json!([])
        ]
    );
    // The second page is short of its limit: it is the last, though sel-5 follows it.
    assert_eq!(
        names(1),
        [json!(["sel-0", "sel-2", "sel-3"]), json!(["sel-4"])]
    );
    // The page is full, but its last item is the last stored object: nothing follows.
    assert_eq!(names(2), [json!(["sel-1", "sel-5"])]);
    for page in answers
        .as_array()
        .expect("queries")
        .iter()
        .flat_map(|q| q.as_array().expect("pages"))
    {
        assert_eq!(
            page["metadata"].get("remainingItemCount"),
            None,
            "a list with a selector does not count what is left: {page}"
        );
    }
}

/// Every page of a paged list, each as its names, whether it continues, and its metadata.
async fn all_pages(api: &Api<DynamicObject>, mut params: ListParams) -> Value {
    let mut pages = Vec::new();
    loop {
        let mut page = api.list(&params).await.expect("list");
        // The real server ends with an empty continue token, the emulator with none: what is
        // compared is whether there is a next page.
        let next = page.metadata.continue_.take().filter(|c| !c.is_empty());
        pages.push(json!({
            "names": page.items.iter().map(|o| o.metadata.name.clone()).collect::<Vec<_>>(),
            "continues": next.is_some(),
            "metadata": page.metadata,
        }));
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Value::Array(pages),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_explain_describe_and_events() {
    let pair = Pair::start().await;
    pair.same("a described ApiKey with status and an event", |c| async move {
        let spec = json!({"tokens": [{"name": "primary", "prefix": "acme_"}], "description": "shown by describe"});
        let key = create(c.clone(), apikey("shown", spec)).await;
        let status = json!({"status": {
            "observedGeneration": 1,
            "secretName": "shown",
            "expiresAt": "2030-01-01T00:00:00Z",
            "nextRotationAt": "2029-12-01T00:00:00Z",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Minted", "message": "1 token",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "tokens": [{"name": "primary", "id": "acme_abc123", "sha256": "00", "issuedAt": "2026-01-01T00:00:00Z"}],
        }});
        let patched = outcome(apikeys(c.clone()).patch_status("shown", &PatchParams::default(), &Patch::Merge(status)).await);
        let stored: DynamicObject = serde_json::from_value(key).expect("an ApiKey");
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("keysmith.dev", "v1alpha1", "ApiKey"),
            "apikeys",
        );
        let recorder = Recorder::new(c, Reporter { controller: "keysmith".into(), instance: Some("keysmith-0".into()) });
        let minted = Event {
            type_: EventType::Normal,
            reason: "Minted".into(),
            note: Some("minted token primary".into()),
            action: "Mint".into(),
            secondary: None,
        };
        recorder.publish(&minted, &stored.object_ref(&ar)).await.expect("event published");
        patched
    })
    .await;
    for args in [
        &["get", "ak"][..],
        &["get", "ak", "-o", "wide"],
        &["get", "apikeys.keysmith.dev", "shown", "--show-labels"],
        &["explain", "apikey.spec.tokens"],
        &["explain", "ak.status.conditions"],
        &["describe", "ak", "shown"],
        &["get", "events"],
        &["get", "events", "-o", "wide"],
        &[
            "get",
            "events.events.k8s.io",
            "--field-selector",
            "regarding.name=shown",
        ],
    ] {
        let out = pair.kubectl(args).await;
        assert_eq!(out["code"], 0, "kubectl {args:?}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_v1_update_grows_the_series_but_may_not_change_the_note() {
    let pair = Pair::start().await;
    pair.same("an Event's series grown, then its note changed", |c| async move {
        let events = dynamic(c, "events.k8s.io/v1", "Event", "events");
        let event = serde_json::from_value(json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "site.1", "namespace": NS},
            "regarding": {"kind": "ApiKey", "name": "site", "namespace": NS},
            "note": "token ks_aaaaaa", "reason": "Rotated", "type": "Normal",
            "action": "Reconcile", "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "keysmith", "reportingInstance": "keysmith-0",
        }))
        .expect("an Event");
        events
            .create(&PostParams::default(), &event)
            .await
            .expect("the Event is created");
        let series = json!({"series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}});
        let grown = events
            .patch("site.1", &PatchParams::default(), &Patch::Merge(series))
            .await
            .expect("the series grows");
        let note = json!({"note": "token ks_bbbbbb"});
        let refused = outcome(
            events
                .patch("site.1", &PatchParams::default(), &Patch::Merge(note))
                .await,
        );
        json!({"grown": {"note": grown.data["note"], "series": grown.data["series"]}, "refused": refused})
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_for_the_verifier_and_the_administrator() {
    let pair = Pair::start().await;
    let as_verifier = format!("--as={VERIFIER}");
    let cases: [(&[&str], &str); 9] = [
        (&["list", "apikeys.keysmith.dev"], "yes"),
        (&["watch", "ak"], "yes"),
        (&["get", "ak"], "no"),
        (&["create", "apikeys"], "no"),
        (&["patch", "ak", "--subresource=status"], "yes"),
        (&["update", "ak", "--subresource=status"], "no"),
        (&["get", "secrets", "-n", "keysmith"], "no"),
        (&["list", "secrets"], "no"),
        (&["delete", "secrets", "-A"], "no"),
    ];
    for (verb, expected) in cases {
        let mut args = vec!["auth", "can-i"];
        args.extend(verb);
        args.push(&as_verifier);
        let out = pair.kubectl(&args).await;
        assert_eq!(out["stdout"], json!([expected]), "{args:?}: {out}");
    }
    let admin = pair.kubectl(&["auth", "can-i", "create", "ak"]).await;
    assert_eq!(admin["stdout"], json!(["yes"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_resource_version_sees_changes_in_order() {
    let pair = Pair::start().await;
    let events = pair
        .same("a watch from the list's resourceVersion", |c| async move {
            let api = apikeys(c.clone());
            let rv = api
                .list(&ListParams::default())
                .await
                .expect("list")
                .metadata
                .resource_version
                .expect("a resourceVersion");
            let stream = api
                .watch(&WatchParams::default().timeout(30), &rv)
                .await
                .expect("watch");
            create(c, apikey("watched", one_slot())).await;
            api.patch(
                "watched",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"description": "changed"}})),
            )
            .await
            .expect("patch");
            api.delete("watched", &DeleteParams::default())
                .await
                .expect("delete");
            let seen: Vec<_> = stream.take(3).try_collect().await.expect("watch events");
            serde_json::to_value(seen).expect("JSON")
        })
        .await;
    let types: Vec<&Value> = events
        .as_array()
        .expect("events")
        .iter()
        .map(|e| &e["type"])
        .collect();
    assert_eq!(
        types,
        [&json!("ADDED"), &json!("MODIFIED"), &json!("DELETED")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn date_time_and_integer_formats_of_the_crd() {
    let pair = Pair::start().await;
    let with = |field: &str, value: Value| {
        let mut spec = one_slot();
        spec[field] = value;
        spec
    };
    let bytes = |value: Value| json!({"tokens": [{"name": "primary", "bytes": value}]});
    let mut specs: Vec<Value> = [
        "next tuesday",
        "2024-01-01T10:00:00Z",
        "2024-01-01t10:00:00.5+01:00",
        "2024-01-01T10:00:00ZT10",
        "2024-01-01T10:00:00",
        "2024-02-30T10:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T10:00:00+0100",
        "",
    ]
    .into_iter()
    .map(|at| with("expiresAt", json!(at)))
    .collect();
    specs.extend([
        with("expiresAt", json!(5)),
        with("expiresAt", json!(true)),
        with("description", json!(5)),
        bytes(json!(32.5)),
        bytes(json!(32.000_000_000_1)),
        bytes(json!(32.0)),
        bytes(json!("32")),
    ]);
    let answers = pair
        .same("date-time and int32 values", |c| {
            let specs = specs.clone();
            async move {
                let api = apikeys(c);
                let dry_run = PostParams {
                    dry_run: true,
                    ..PostParams::default()
                };
                let mut answers = Vec::new();
                for spec in specs {
                    let key = object(apikey("formats", spec));
                    answers.push(outcome(api.create(&dry_run, &key).await));
                }
                Value::Array(answers)
            }
        })
        .await;
    assert_eq!(error(&answers[0]), (422, "Invalid"));
    let causes = answers[0]["error"]["details"]["causes"]
        .as_array()
        .expect("causes");
    assert!(
        causes.contains(&json!({"reason": "FieldValueTypeInvalid", "field": "spec.expiresAt",
            "message": "Invalid value: \"next tuesday\": spec.expiresAt in body must be of type date-time: \"next tuesday\""})),
        "{causes:?}"
    );
    assert_eq!(answers[1]["spec"]["expiresAt"], "2024-01-01T10:00:00Z");
    assert_eq!(answers[14]["spec"]["tokens"][0]["bytes"], 32);

    let file = pair.file(
        "expires-next-tuesday.json",
        &apikey("tuesday", with("expiresAt", json!("next tuesday"))),
    );
    let applied = pair.kubectl(&["apply", "-f", &file]).await;
    assert_eq!(applied["code"], 1);
}

/// An ApiKey whose JSON, as kube-rs sends it, is exactly `size` bytes: padded with an unknown
/// field, which both servers prune (with a warning), so only the body is big.
fn padded_apikey(name: &str, size: usize) -> Value {
    let mut key = apikey(name, one_slot());
    key["spec"]["padding"] = json!("");
    let bare = serde_json::to_vec(&object(key.clone()))
        .expect("JSON")
        .len();
    key["spec"]["padding"] = json!("x".repeat(size - bare));
    assert_eq!(
        serde_json::to_vec(&object(key.clone()))
            .expect("JSON")
            .len(),
        size
    );
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_over_three_mib_are_413() {
    const LIMIT: usize = 3 * 1024 * 1024;
    let pair = Pair::start().await;
    let answers = pair
        .same("bodies at and over 3 MiB", |c| async move {
            let api = apikeys(c.clone());
            let over = padded_apikey("sized", LIMIT + 1);
            json!([
                create(c.clone(), padded_apikey("sized", LIMIT)).await,
                create(c, padded_apikey("over", LIMIT + 1)).await,
                outcome(
                    api.replace("sized", &PostParams::default(), &object(over.clone()))
                        .await
                ),
                outcome(
                    api.patch(
                        "sized",
                        &PatchParams::default(),
                        &Patch::Merge(over.clone())
                    )
                    .await
                ),
                outcome(
                    api.patch("missing", &PatchParams::default(), &Patch::Merge(over))
                        .await
                ),
            ])
        })
        .await;
    assert_eq!(answers[0]["metadata"]["name"], "sized");
    assert_eq!(answers[0]["spec"].get("padding"), None);
    for answer in &answers.as_array().expect("answers")[1..] {
        assert_eq!(
            answer["error"],
            json!({"status": "Failure", "code": 413, "reason": "RequestEntityTooLarge", "metadata": {},
                   "message": "Request entity too large: limit is 3145728"}),
        );
    }
}

/// An ApiKey whose annotation keys and values total `bytes` in UTF-8 (`é` is two).
fn annotated_apikey(bytes: usize) -> Value {
    let mut key = apikey("annotated", one_slot());
    let accents = "é".repeat(1000);
    let rest = bytes - "a.example/one".len() - accents.len() - "c".len();
    key["metadata"]["annotations"] = json!({"a.example/one": accents, "c": "y".repeat(rest)});
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_over_256_kib_are_invalid() {
    const LIMIT: usize = 256 * 1024;
    let pair = Pair::start().await;
    let answers = pair
        .same("annotations at and over 256 KiB", |c| async move {
            let api = apikeys(c.clone());
            let more = json!({"metadata": {"annotations": {"d": "z"}}});
            json!([
                create(c.clone(), annotated_apikey(LIMIT + 1)).await,
                create(c, annotated_apikey(LIMIT)).await,
                outcome(
                    api.patch("annotated", &PatchParams::default(), &Patch::Merge(more))
                        .await
                ),
            ])
        })
        .await;
    let too_long = json!({"reason": "FieldValueTooLong", "field": "metadata.annotations",
                          "message": "Too long: may not be more than 262144 bytes"});
    assert_eq!(error(&answers[0]), (422, "Invalid"));
    let causes = answers[0]["error"]["details"]["causes"]
        .as_array()
        .expect("causes");
    assert!(causes.contains(&too_long), "{causes:?}");
    assert_eq!(answers[1]["metadata"]["name"], "annotated");
    // On an update of a custom object the real server lists the cause three times.
    let causes = answers[2]["error"]["details"]["causes"]
        .as_array()
        .expect("causes");
    assert_eq!(causes.iter().filter(|c| **c == too_long).count(), 3);

    // What `kubectl apply` writes as last-applied-configuration for a big spec: the same
    // object applied server-side (no such annotation) is accepted.
    let field = |i: usize| format!("{i:03}{}", "f".repeat(247));
    let grant = json!({"actions": ["read"], "effect": "allow",
                       "fields": (0..256).map(field).collect::<Vec<_>>()});
    let mut spec = one_slot();
    spec["grants"] = json!(vec![grant; 5]);
    let file = pair.file("big-spec.json", &apikey("big-spec", spec));
    let applied = pair.kubectl(&["apply", "-f", &file]).await;
    assert_eq!(applied["code"], 1);
    assert!(
        applied["stderr"]
            .to_string()
            .contains("metadata.annotations: Too long: may not be more than 262144 bytes"),
        "{applied}"
    );
    let server_side = pair.kubectl(&["apply", "--server-side", "-f", &file]).await;
    assert_eq!(
        server_side["stdout"],
        json!(["apikey.keysmith.dev/big-spec serverside-applied"])
    );
}

/// A Secret holding `bytes` bytes of values in `stringData` (folded into `data`), over two keys.
fn secret_of(name: &str, bytes: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
        "stringData": {"a": "x".repeat(bytes - 10), "b": "y".repeat(10)},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_data_over_1_mib_is_invalid() {
    const LIMIT: usize = 1024 * 1024;
    let pair = Pair::start().await;
    let answers = pair
        .same("Secret data at and over 1 MiB", |c| async move {
            let grow = json!({"stringData": {"c": "z"}});
            json!([
                create(c.clone(), secret_of("over", LIMIT + 1)).await,
                create(c.clone(), secret_of("at", LIMIT)).await,
                outcome(
                    secrets(c)
                        .patch("at", &PatchParams::default(), &Patch::Merge(grow))
                        .await
                ),
            ])
        })
        .await;
    let too_long = json!({"reason": "FieldValueTooLong", "field": "data",
                          "message": "Too long: may not be more than 1048576 bytes"});
    for refused in [&answers[0], &answers[2]] {
        assert_eq!(error(refused), (422, "Invalid"), "{refused}");
        let causes = refused["error"]["details"]["causes"]
            .as_array()
            .expect("causes");
        assert_eq!(causes, &vec![too_long.clone()], "{refused}");
    }
    assert_eq!(answers[1]["metadata"]["name"], "at");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_a_v1_list() {
    let pair = Pair::start().await;
    let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
    "items": [
        apikey("listed", one_slot()),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "listed", "namespace": NS}, "data": {"k": "dg=="}}),
    ]});
    let file = pair.file("list.json", &list);
    let created = pair.kubectl(&["apply", "-f", &file]).await;
    assert_eq!(
        created["stdout"],
        json!([
            "apikey.keysmith.dev/listed created",
            "secret/listed created"
        ]),
        "{created}"
    );
    let again = pair.kubectl(&["apply", "-f", &file]).await;
    assert_eq!(
        again["stdout"],
        json!([
            // Both servers: the defaults they filled in make kubectl patch the ApiKey again.
            "apikey.keysmith.dev/listed configured",
            "secret/listed unchanged"
        ]),
        "{again}"
    );
    // What `kubectl get -o yaml` printed, applied back to the server it came from.
    for side in [&pair.emu, &pair.real] {
        let printed = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&side.kubeconfig)
            .arg("--cache-dir")
            .arg(&side.cache)
            .args(["get", "ak,secret", "listed", "-o", "yaml"])
            .env_remove("KUBECONFIG")
            .output()
            .await
            .expect("kubectl runs");
        assert!(printed.status.success(), "{printed:?}");
        let path = pair.dir.path().join("printed.yaml");
        std::fs::write(&path, &printed.stdout).expect("file");
        let applied = side
            .kubectl(&["apply", "-f", &path.to_string_lossy()])
            .await;
        assert_eq!(applied["code"], 0, "{applied}");
    }

    // The real server's v2 document has definitions, so kubectl refuses an unknown field in an
    // item before sending anything; the emulator's has none, so kubectl leaves the items to
    // the server, which refuses the ApiKey (strict field validation) and stores the ConfigMap
    // it cannot check (docs/emulator.md).
    let bad = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
         "metadata": {"name": "bogus", "namespace": NS}, "spec": {"bogus": 1, "tokens": [{"name": "primary"}]}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bogus", "namespace": NS},
         "bogus": 2, "data": {"a": "b"}},
    ]});
    let file = pair.file("bad-list.json", &bad);
    let args = ["apply", "-f", &file];
    let (emu, real) = tokio::join!(pair.emu.kubectl(&args), pair.real.kubectl(&args));
    assert_eq!((&emu["code"], &real["code"]), (&json!(1), &json!(1)));
    assert_eq!(real["stdout"], json!([]));
    assert!(
        real["stderr"][0].as_str().is_some_and(|e| e.contains(
            r#"error validating data: [ValidationError(ApiKey.spec): unknown field "bogus" in dev.keysmith.v1alpha1.ApiKey.spec"#
        )),
        "{real}"
    );
    assert_eq!(emu["stdout"], json!(["configmap/bogus created"]));
    assert!(
        emu["stderr"][0]
            .as_str()
            .is_some_and(|e| e.contains(r#"strict decoding error: unknown field "spec.bogus""#)),
        "{emu}"
    );
}
