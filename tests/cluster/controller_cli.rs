//! The `keysmith controller` binary: serves health and metrics, reconciles as the chart's
//! ServiceAccount, stops cleanly on SIGTERM, and fails with one clear line without a cluster or
//! without permissions. `keysmith status` and `keysmith rotate` against the cluster of a
//! kubeconfig and context given on the command line: the table of every key, `rotate --wait`
//! returning once the Secret holds the new token, and what each says when it cannot go on.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::controller::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.0 GET: (status, body), or None while nothing listens.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

async fn kubeconfig(cluster: &Cluster, identity: &Identity) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    cluster
        .write_kubeconfig(dir.path().join("kubeconfig"), identity)
        .await
        .unwrap();
    dir
}

/// Apply ApiKey `site` in `cms` with one slot, `a`.
async fn apply_site(cluster: &Cluster) {
    cluster
        .apply_yaml(
            "apiVersion: keysmith.dev/v1alpha1\nkind: ApiKey\n\
             metadata: {name: site, namespace: cms}\nspec: {tokens: [{name: a}]}\n",
        )
        .await
        .expect("ApiKey site applies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_binary_reconciles_serves_health_and_stops_on_sigterm() {
    let cluster = cluster().await;
    let dir = kubeconfig(&cluster, &controller_identity()).await;
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .args(["controller", "--log-format", "json"])
        .arg(format!("--metrics-listen=127.0.0.1:{port}"))
        .env("KUBECONFIG", dir.path().join("kubeconfig"))
        .env("POD_NAME", "keysmith-0")
        .env("POD_NAMESPACE", CONTROLLER_NS)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let (status, _) = eventually("/readyz", || async {
        get(port, "/readyz").await.filter(|(s, _)| *s == 200)
    })
    .await;
    assert_eq!(status, 200);
    assert_eq!(get(port, "/healthz").await.unwrap().0, 200);
    apply_site(&cluster).await;
    eventually("minted by the binary", || async {
        cluster.get("v1", "Secret", NS, "site").await.map(drop)
    })
    .await;
    let lease = cluster
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            CONTROLLER_NS,
            "keysmith-controller",
        )
        .await
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "keysmith-0");
    let (_, metrics) = eventually("metrics", || async {
        get(port, "/metrics")
            .await
            .filter(|(_, body)| body.contains("keysmith_tokens_minted_total{reason=\"initial\"} 1"))
    })
    .await;
    assert!(
        metrics.contains("keysmith_reconcile_duration_seconds"),
        "{metrics}"
    );

    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops after SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "JSON logs: {first}"
    );
    // The Lease was released on the way out.
    let lease = cluster
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            CONTROLLER_NS,
            "keysmith-controller",
        )
        .await
        .unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
}

async fn controller_fails(kubeconfig: &std::path::Path) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .args(["controller", "--metrics-listen", "127.0.0.1:0"])
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_binary_fails_with_one_line_without_a_cluster_or_permissions() {
    let cluster = cluster().await;
    let denied = kubeconfig(&cluster, &Identity::user("nobody", &[])).await;
    let stderr = controller_fails(&denied.path().join("kubeconfig")).await;
    assert!(
        stderr.contains("permission denied: cannot list apikeys.keysmith.dev"),
        "{stderr}"
    );

    let unreachable = kubeconfig(&cluster, &Identity::Admin).await;
    let path = unreachable.path().join("kubeconfig");
    let text = std::fs::read_to_string(&path).unwrap();
    let port = free_port();
    let url = cluster.url();
    let (scheme, _) = url.split_once("://").unwrap();
    let (_, old_port) = url.rsplit_once(':').unwrap();
    let moved = text.replace(
        &format!("127.0.0.1:{old_port}"),
        &format!("127.0.0.1:{port}"),
    );
    std::fs::write(&path, moved).unwrap();
    let stderr = controller_fails(&path).await;
    assert!(
        stderr.contains(&format!(
            "cannot reach the Kubernetes API server at {scheme}://127.0.0.1:{port}"
        )),
        "{stderr}"
    );
}

/// One kubeconfig file with a context per `(name, identity)` of `cluster`, the first current,
/// each defaulting to namespace [`NS`]: what a platform team's kubeconfig with several clusters
/// or users looks like.
async fn kubeconfig_with_contexts(
    cluster: &Cluster,
    contexts: &[(&str, &Identity)],
) -> tempfile::TempDir {
    let mut merged = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": contexts[0].0,
        "clusters": [], "users": [], "contexts": [],
    });
    for (name, identity) in contexts {
        let one: Value = serde_saphyr::from_str(&cluster.kubeconfig(identity).await.unwrap())
            .expect("a kubeconfig");
        let (mut server, mut user) = (one["clusters"][0].clone(), one["users"][0].clone());
        server["name"] = json!(name);
        user["name"] = json!(name);
        let context =
            json!({"name": name, "context": {"cluster": name, "user": name, "namespace": NS}});
        for (list, entry) in [("clusters", server), ("users", user), ("contexts", context)] {
            merged[list].as_array_mut().unwrap().push(entry);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    // JSON is YAML: kubectl and kube-rs read it alike.
    std::fs::write(dir.path().join("kubeconfig"), merged.to_string()).unwrap();
    dir
}

/// `keysmith ARGS` with no cluster in the environment: only the flags can name one.
/// An APIService whose backend is down answers 503. kube's client retries a 503 up to 15
/// times over minutes, so `keysmith usage` sat silent for minutes before saying what is wrong;
/// it must say it at once (the timeout is only a guard against that hang).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_says_at_once_that_a_usage_api_without_a_backend_is_unavailable() {
    let cluster = cluster().await;
    apply_site(&cluster).await;
    cluster
        .apply_yaml(
            "apiVersion: v1\nkind: Service\n\
             metadata: {name: keysmith-usage, namespace: keysmith}\n\
             spec: {ports: [{port: 443, targetPort: 8443}]}\n\
             ---\n\
             apiVersion: apiregistration.k8s.io/v1\nkind: APIService\n\
             metadata: {name: v1alpha1.usage.keysmith.dev}\n\
             spec: {group: usage.keysmith.dev, version: v1alpha1, groupPriorityMinimum: 100,\n\
             \x20 versionPriority: 100, insecureSkipTLSVerify: true,\n\
             \x20 service: {name: keysmith-usage, namespace: keysmith, port: 443}}\n",
        )
        .await
        .expect("an APIService with no backend applies");
    let dir = kubeconfig(&cluster, &Identity::Admin).await;
    let path = dir.path().join("kubeconfig");
    let args = [
        "usage",
        "site",
        "-n",
        NS,
        "--kubeconfig",
        path.to_str().unwrap(),
    ];
    let out = tokio::time::timeout(Duration::from_secs(60), keysmith(&args))
        .await
        .expect("keysmith usage answers instead of retrying the 503 for minutes");
    let error = failed(&out);
    assert!(
        error.contains(
            "the usage API (usage.keysmith.dev/v1alpha1) is not available in this cluster"
        ),
        "{error}"
    );
}

async fn keysmith(args: &[&str]) -> std::process::Output {
    let nowhere = tempfile::tempdir().unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .args(args)
        .env("KUBECONFIG", nowhere.path().join("no-kubeconfig"))
        .env("HOME", nowhere.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .await
        .unwrap()
}

/// Stdout of a run that must succeed.
fn succeeded(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The one-line error of a run that must fail.
fn failed(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    stderr
}

/// The cells of a `status` table row (columns are 3 or more spaces apart; cells have none).
fn cells(line: &str) -> Vec<&str> {
    line.split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_rotate_use_the_kubeconfig_and_context_given() {
    let h = Harness::start().await;
    h.apply(
        r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: site, namespace: cms}
spec:
  tokens: [{name: a}]
  rotation: {every: 720h}
---
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: paused, namespace: cms}
spec:
  tokens: [{name: a}, {name: b}]
  disabled: true
---
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: elsewhere, namespace: default}
spec:
  tokens: [{name: a}]
"#,
    )
    .await;
    let site = h.wait_key("site", "site Ready", ready).await;
    h.wait_key("paused", "paused reconciled", |k| {
        condition(k, "Ready").is_some_and(|(_, reason)| reason == "Disabled")
    })
    .await;
    let elsewhere = eventually("elsewhere Ready", || async {
        h.cluster
            .get("keysmith.dev/v1alpha1", "ApiKey", "default", "elsewhere")
            .await
            .filter(ready)
    })
    .await;

    // The current context may do nothing; `--context admin` picks the one that may.
    let dir = kubeconfig_with_contexts(
        &h.cluster,
        &[
            ("nobody", &Identity::user("nobody", &[])),
            ("admin", &Identity::Admin),
        ],
    )
    .await;
    let path = dir.path().join("kubeconfig");
    let file = path.to_str().unwrap();
    let denied = failed(&keysmith(&["status", "-A", "--kubeconfig", file]).await);
    assert!(
        denied.contains("permission denied: cannot list apikeys.keysmith.dev;"),
        "{denied}"
    );
    let as_admin = ["--kubeconfig", file, "--context", "admin"];

    // -A: every key of every namespace, sorted, with why it is (not) ready.
    let table = succeeded(&keysmith(&[&["status", "-A"][..], &as_admin].concat()).await);
    let rows: Vec<Vec<&str>> = table.lines().map(cells).collect();
    assert_eq!(
        rows[0],
        [
            "NAMESPACE",
            "NAME",
            "READY",
            "REASON",
            "TOKENS",
            "NEXT ROTATION",
            "EXPIRES"
        ],
        "{table}"
    );
    let next_rotation = site["status"]["nextRotationAt"].as_str().unwrap();
    let elsewhere_reason = condition(&elsewhere, "Ready").unwrap().1;
    let site_reason = condition(&site, "Ready").unwrap().1;
    assert_eq!(
        rows[1..],
        [
            vec!["cms", "paused", "False", "Disabled", "2/2", "-", "-"],
            vec![
                "cms",
                "site",
                "True",
                &site_reason,
                "1/1",
                next_rotation,
                "-"
            ],
            vec![
                "default",
                "elsewhere",
                "True",
                &elsewhere_reason,
                "1/1",
                "-",
                "-"
            ],
        ],
        "{table}"
    );

    // No NAME: the context's namespace only, without the NAMESPACE column.
    let table = succeeded(&keysmith(&[&["status"][..], &as_admin].concat()).await);
    let names: Vec<&str> = table.lines().skip(1).map(|l| cells(l)[0]).collect();
    assert_eq!(names, ["paused", "site"], "{table}");
    assert!(table.starts_with("NAME "), "{table}");

    // A NAME: the key's report, in the context's namespace.
    let report = succeeded(&keysmith(&[&["status", "site"][..], &as_admin].concat()).await);
    assert!(report.contains("ApiKey cms/site"), "{report}");

    // A context the file does not have: said, with the ones it has.
    let unknown = failed(&keysmith(&["status", "--kubeconfig", file, "--context", "prod"]).await);
    assert!(
        unknown.contains(r#"the kubeconfig has no context "prod" (its contexts: nobody, admin)"#),
        "{unknown}"
    );

    // rotate --wait returns once the Secret holds the new token: read right after, it does.
    let before = secret_value(&h.secret("site").await.unwrap(), "a").unwrap();
    let out = succeeded(&keysmith(&[&["rotate", "site", "--wait"][..], &as_admin].concat()).await);
    let secret = h.secret("site").await.unwrap();
    let after = secret_value(&secret, "a").unwrap();
    assert_ne!(
        after, before,
        "rotate --wait returned before the Secret changed"
    );
    let key = h.apikey("site").await.unwrap();
    let current = token(&key, "a");
    assert_eq!(
        current["sha256"].as_str().unwrap(),
        keysmith::token::sha256_hex(&after),
        "the Secret holds the token status reports"
    );
    let id = current["id"].as_str().unwrap();
    assert!(
        out.contains(&format!("a: new token {id} in Secret cms/site")),
        "{out}"
    );
    assert!(!out.contains(&after), "token plaintext on stdout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_wait_gives_up_after_its_timeout_saying_what_the_key_reports() {
    // No controller: nothing will answer the rotation.
    let cluster = cluster().await;
    apply_site(&cluster).await;
    let dir = kubeconfig(&cluster, &Identity::Admin).await;
    let path = dir.path().join("kubeconfig");
    let out = keysmith(&[
        "rotate",
        "site",
        "-n",
        NS,
        "--wait",
        "--timeout",
        "2s",
        "--kubeconfig",
        path.to_str().unwrap(),
    ])
    .await;
    let error = failed(&out);
    assert!(
        error.contains(
            "keysmith rotate: timed out after 2s waiting for the controller to rotate every \
             slot of ApiKey cms/site: it has no status: no controller has reconciled it"
        ),
        "{error}"
    );
    // The request itself stands: a controller that comes later performs it.
    let key = cluster
        .get("keysmith.dev/v1alpha1", "ApiKey", NS, "site")
        .await
        .unwrap();
    assert!(
        key["metadata"]["annotations"]["keysmith.dev/rotate"].is_string(),
        "{key}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_refuses_a_key_that_cannot_rotate_unless_asked_to_queue_it() {
    let h = Harness::start().await;
    h.apply(
        r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: paused, namespace: cms}
spec:
  tokens: [{name: a}]
  disabled: true
---
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: broken, namespace: cms}
spec:
  tokens: [{name: a}]
  expiresAfter: 6000d
"#,
    )
    .await;
    h.wait_key("paused", "paused reconciled", |k| {
        condition(k, "Disabled").is_some_and(|(status, _)| status == "True")
    })
    .await;
    h.wait_key("broken", "broken reconciled", |k| {
        condition(k, "Ready").is_some_and(|(_, reason)| reason == "InvalidSpec")
    })
    .await;
    let dir = kubeconfig(&h.cluster, &Identity::Admin).await;
    let path = dir.path().join("kubeconfig");
    let config = ["-n", NS, "--kubeconfig", path.to_str().unwrap()];
    let annotation = |key: &Value| key["metadata"]["annotations"]["keysmith.dev/rotate"].clone();

    // Disabled: refused, saying why and what to do; nothing is requested.
    let error = failed(&keysmith(&[&["rotate", "paused", "--wait"][..], &config].concat()).await);
    assert!(
        error.contains("ApiKey cms/paused is disabled (spec.disabled is true)")
            && error.contains("set spec.disabled to false")
            && error.contains("--when-enabled"),
        "{error}"
    );
    assert!(annotation(&h.apikey("paused").await.unwrap()).is_null());

    // Invalid: refused, naming the field the condition names.
    let error = failed(&keysmith(&[&["rotate", "broken"][..], &config].concat()).await);
    assert!(
        error.contains("ApiKey cms/broken cannot rotate: its spec is invalid")
            && error.contains("spec.expiresAfter"),
        "{error}"
    );
    assert!(annotation(&h.apikey("broken").await.unwrap()).is_null());

    // Queued on purpose: requested, and the controller says it is pending until enabled.
    let out = succeeded(
        &keysmith(&[&["rotate", "paused", "--when-enabled"][..], &config].concat()).await,
    );
    assert!(out.contains("when the key is enabled"), "{out}");
    let key = h
        .wait_key("paused", "the pending rotation in Disabled", |k| {
            k["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| {
                    c["type"] == "Disabled"
                        && c["message"].as_str().is_some_and(|m| {
                            m.contains("a rotation is pending")
                                && m.contains("when the key is enabled")
                        })
                })
        })
        .await;
    assert!(annotation(&key).is_string());
    eventually("a RotationPending event", || async {
        let events = h.events("RotationPending").await;
        events
            .iter()
            .any(|e| {
                e["note"]
                    .as_str()
                    .is_some_and(|n| n.contains("a rotation is pending"))
            })
            .then_some(())
    })
    .await;
}

/// The output of `child` once it exited, which it must do within the harness's usual bound
/// rather than at its own `--timeout`.
async fn stopped(child: tokio::process::Child) -> std::process::Output {
    tokio::time::timeout(
        keysmith_emulator::EVENTUALLY_TIMEOUT,
        child.wait_with_output(),
    )
    .await
    .expect("rotate --wait stops as soon as the key cannot rotate")
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_wait_stops_when_the_key_is_disabled_or_turns_invalid_meanwhile() {
    // No controller: nothing answers the rotation, so only the key's state can end the wait.
    let cluster = cluster().await;
    apply_site(&cluster).await;
    let dir = kubeconfig(&cluster, &Identity::Admin).await;
    let path = dir.path().join("kubeconfig");
    let admin = cluster.client().await.unwrap();
    let keys: kube::Api<keysmith::api::ApiKey> = kube::Api::namespaced(admin, NS);
    let waiting = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_keysmith"))
            .args(["rotate", "site", "-n", NS, "--wait", "--timeout", "10m"])
            .arg("--kubeconfig")
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let requested = |before: Value| {
        let cluster = &cluster;
        async move {
            eventually("the rotation requested", || async {
                let key = cluster
                    .get("keysmith.dev/v1alpha1", "ApiKey", NS, "site")
                    .await?;
                let value = key["metadata"]["annotations"]["keysmith.dev/rotate"].clone();
                (value.is_string() && value != before).then_some(key)
            })
            .await
        }
    };
    let merge = |patch: Value| kube::api::Patch::Merge(patch);
    let params = kube::api::PatchParams::default();

    // The key turns invalid while the command waits (the controller's condition, for the
    // current generation): the wait ends at once with the condition's message.
    let child = waiting();
    let key = requested(Value::Null).await;
    let generation = key["metadata"]["generation"].as_i64().unwrap();
    let condition = json!({"status": {"conditions": [{
        "type": "Ready", "status": "False", "reason": "InvalidSpec",
        "message": "spec.expiresAfter: at most 5y", "observedGeneration": generation,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }]}});
    keys.patch_status("site", &params, &merge(condition))
        .await
        .unwrap();
    let error = failed(&stopped(child).await);
    assert!(
        error.contains("ApiKey cms/site cannot rotate: its spec is invalid")
            && error.contains("spec.expiresAfter: at most 5y"),
        "{error}"
    );

    // Disabled while the command waits: the same, saying the rotation stays queued.
    keys.patch_status("site", &params, &merge(json!({"status": null})))
        .await
        .unwrap();
    let before = key["metadata"]["annotations"]["keysmith.dev/rotate"].clone();
    let child = waiting();
    requested(before).await;
    keys.patch("site", &params, &merge(json!({"spec": {"disabled": true}})))
        .await
        .unwrap();
    let error = failed(&stopped(child).await);
    assert!(
        error.contains("ApiKey cms/site was disabled while waiting")
            && error.contains("happens when the key is enabled"),
        "{error}"
    );
}

#[tokio::test]
async fn status_without_a_cluster_says_where_it_looked_and_how_to_point_it_at_one() {
    let home = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .args(["status", "site"])
        .env("HOME", home.path())
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .await
        .unwrap();
    let error = failed(&out);
    let default_path = home.path().join(".kube").join("config");
    for expected in [
        format!(
            "KUBECONFIG is not set and {} does not exist",
            default_path.display()
        ),
        "KUBERNETES_SERVICE_HOST is not set, so this is not a pod".to_owned(),
        "--kubeconfig PATH and --context NAME".to_owned(),
    ] {
        assert!(error.contains(&expected), "{expected} in {error}");
    }

    // KUBECONFIG naming files that are not there: named back.
    let listed = format!(
        "{}:{}",
        home.path().join("a").display(),
        home.path().join("b").display()
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .args(["rotate", "site"])
        .env("HOME", home.path())
        .env("KUBECONFIG", &listed)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .await
        .unwrap();
    let error = failed(&out);
    assert!(
        error.contains(&format!(
            "KUBECONFIG names no existing file ({}, {})",
            home.path().join("a").display(),
            home.path().join("b").display()
        )),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_without_read_access_names_the_chart_role_that_grants_it() {
    let cluster = cluster().await;
    apply_site(&cluster).await;
    let dir = kubeconfig(&cluster, &Identity::user("viewer", &[])).await;
    let path = dir.path().join("kubeconfig");
    let file = path.to_str().unwrap();

    // One key: the view role, bound in the key's namespace.
    let denied = failed(&keysmith(&["status", "site", "-n", NS, "--kubeconfig", file]).await);
    assert!(
        denied.contains(
            "permission denied: cannot get apikeys.keysmith.dev in namespace cms; ask for the \
             ClusterRole keysmith-apikeys-view that the Keysmith chart creates \
             (<release>-apikeys-view under another release name), bound to you by a \
             RoleBinding in namespace cms ("
        ),
        "{denied}"
    );
    assert!(
        !denied.contains("RBAC rules of the Keysmith chart"),
        "{denied}"
    );
    // Every namespace: the same role, bound cluster-wide.
    let denied = failed(&keysmith(&["status", "-A", "--kubeconfig", file]).await);
    assert!(
        denied.contains(
            "cannot list apikeys.keysmith.dev; ask for the ClusterRole keysmith-apikeys-view"
        ) && denied.contains("bound to you by a ClusterRoleBinding ("),
        "{denied}"
    );

    // Doing what the line says is enough: the chart's role (rules of
    // charts/keysmith/templates/rbac-users.yaml) bound in cms lets the key and the namespace's
    // table be read, and nothing cluster-wide.
    cluster
        .apply_yaml(&crate::harness::view_role_for("viewer", NS))
        .await
        .unwrap();
    let report = eventually("the RoleBinding to take effect", || async {
        let out = keysmith(&["status", "site", "-n", NS, "--kubeconfig", file]).await;
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).unwrap())
    })
    .await;
    assert!(report.starts_with("ApiKey cms/site"), "{report}");
    let table = succeeded(&keysmith(&["status", "-n", NS, "--kubeconfig", file]).await);
    assert!(
        table.lines().nth(1).is_some_and(|l| l.starts_with("site ")),
        "{table}"
    );
    failed(&keysmith(&["status", "-A", "--kubeconfig", file]).await);
}
