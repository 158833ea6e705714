//! The chart installed on a real control plane (kube-apiserver, etcd and kube-controller-manager
//! from `testenv/install`): what `helm template --include-crds` renders is server-side applied
//! with the real kubectl, so schema errors, deprecated APIs and Pod Security violations that a
//! text render never sees fail here. In `mode: split` the controller and the verifier then run
//! in-process as the rendered ServiceAccounts, with real tokens, through a scenario that uses
//! every permission the rendered roles grant, and `kubectl auth can-i` shows what they do not
//! grant.
//!
//! `tests/shipped/chart_tools.rs` checks the render itself; `tests/cluster/rbac_minimal.rs` the rules in
//! `charts/keysmith/files/` on either test backend.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use keysmith::api::ApiKey;
use keysmith::components::{self, Components, ControllerPart, VerifierPart};
use keysmith::controller::{self, leader::LeaderConfig};
use keysmith::scope::Scope;
use keysmith::telemetry::Shutdown;
use keysmith_emulator::eventually;
use keysmith_testenv::binaries::binary;
use keysmith_testenv::rbac::{self, KEY, Permission};
use keysmith_testenv::{Backend, Cluster, Identity, RealOptions};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::http;
use crate::rendered::{CHART, NAMESPACE, RELEASE, of_kind, str_at};
/// The real server's version, which `helm install` would render for: the verifier's status
/// policy needs 1.30 (`tests/shipped/chart_tools.rs` renders for the oldest supported, 1.25).
const KUBE_VERSION: &str = "v1.37.2";
/// Where the ApiKeys and the workloads they restart live.
const APPS: &str = "apps";
/// A namespace the scoped install does not watch.
const OTHER: &str = "other";
/// What the real server warns about the rendered chart: nothing (a deprecated API, a dropped
/// field or a Pod Security problem would show here).
const KNOWN_WARNINGS: [&str; 0] = [];

/// The chart as `helm template` renders it with `sets` (the CRD is one of its templates): the
/// text and its objects.
fn render(sets: &[&str]) -> (String, Vec<Value>) {
    render_with(sets, None)
}

/// [`render`], reading the cluster of the kubeconfig `cluster` when given, as `helm upgrade`
/// does (`lookup` sees what is installed).
fn render_with(sets: &[&str], cluster: Option<&Path>) -> (String, Vec<Value>) {
    let mut args = vec![
        "template",
        RELEASE,
        CHART,
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
    ];
    let kubeconfig = cluster.map(|path| path.to_str().expect("UTF-8 path"));
    if let Some(kubeconfig) = kubeconfig {
        args.extend(["--dry-run=server", "--kubeconfig", kubeconfig]);
    }
    for set in sets {
        args.extend(["--set", set]);
    }
    let output = Command::new(binary("helm"))
        .args(&args)
        .output()
        .expect("helm runs");
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(
        output.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let objects: Vec<Value> = serde_saphyr::from_multiple::<Value>(&text)
        .expect("the render is YAML")
        .into_iter()
        .filter(Value::is_object)
        .collect();
    (text, objects)
}

fn namespace_object(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// A control plane with the chart installed, and an administrator's kubeconfig in `dir`.
struct Install {
    cluster: Cluster,
    objects: Vec<Value>,
    admin: PathBuf,
}

/// Start a real control plane and install the chart rendered with `sets` as `helm install
/// --create-namespace` would, asserting that the server accepts and stores every object and
/// that each Deployment rolls out Pods.
async fn install(sets: &[&str], dir: &Path) -> Install {
    install_with(sets, dir, &RealOptions::default()).await
}

/// [`install`] on a control plane started with `real`.
async fn install_with(sets: &[&str], dir: &Path, real: &RealOptions) -> Install {
    let cluster = Cluster::start_with(Backend::Real, Default::default(), real)
        .await
        .expect("the real control plane starts (testenv/install builds it)");
    let admin = dir.join("admin.kubeconfig");
    cluster
        .write_kubeconfig(&admin, &Identity::Admin)
        .await
        .expect("admin kubeconfig");
    // The release namespace enforces the `restricted` Pod Security Standard that
    // docs/operations.md promises, so the Pods below are admitted only if the chart keeps it.
    let restricted = json!({"pod-security.kubernetes.io/enforce": "restricted"});
    for namespace in [
        namespace_object(NAMESPACE, restricted),
        namespace_object(APPS, json!({})),
        namespace_object(OTHER, json!({})),
    ] {
        cluster.apply_object(&namespace).await.expect("namespace");
    }
    // A Pod without those settings is refused, so the admission of the chart's Pods means
    // something.
    let bare = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bare", "namespace": NAMESPACE},
        "spec": {"containers": [{"name": "bare", "image": "bare"}]},
    });
    let refused = cluster
        .apply_object(&bare)
        .await
        .expect_err("a Pod outside the restricted standard is refused");
    assert!(
        refused.to_string().contains("violates PodSecurity"),
        "{refused}"
    );

    let (text, objects) = render(sets);
    let manifest = dir.join("chart.yaml");
    std::fs::write(&manifest, text).expect("write the render");
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&admin)
        .args(["apply", "--server-side", "--field-manager=helm", "-f"])
        .arg(&manifest)
        .output()
        .expect("kubectl runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{sets:?}: the API server rejected the chart:\n{stderr}"
    );
    // Warnings name deprecated APIs, fields the server dropped and schema it ignores.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("Warning:"))
        .collect();
    assert_eq!(
        warnings, KNOWN_WARNINGS,
        "{sets:?}: the API server's warnings changed (a fixed one leaves KNOWN_WARNINGS):\n{stderr}"
    );

    for object in &objects {
        let (api_version, kind, name) = (
            str_at(object, "/apiVersion"),
            str_at(object, "/kind"),
            str_at(object, "/metadata/name"),
        );
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
        assert!(
            cluster
                .get(api_version, kind, namespace, name)
                .await
                .is_some(),
            "{sets:?}: {kind} {namespace}/{name} was not stored"
        );
    }
    let crd = of_kind(&objects, "CustomResourceDefinition")
        .next()
        .expect("the chart renders the CRD");
    eventually("the CRD to be established", || async {
        let stored = cluster
            .get(
                str_at(crd, "/apiVersion"),
                "CustomResourceDefinition",
                "",
                str_at(crd, "/metadata/name"),
            )
            .await?;
        stored["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
            .then_some(())
    })
    .await;

    // No kubelet runs, but kube-controller-manager turns each Deployment into a ReplicaSet and
    // that into Pods, which admission checks against the namespace's Pod Security level.
    for deployment in of_kind(&objects, "Deployment") {
        let name = str_at(deployment, "/metadata/name");
        let account = str_at(deployment, "/spec/template/spec/serviceAccountName");
        // Without spec.replicas (a HorizontalPodAutoscaler owns it) a Deployment starts with
        // one; no autoscaler controller runs here to change that.
        let replicas = deployment["spec"]["replicas"].as_u64().unwrap_or(1);
        eventually(
            &format!("{name}'s Pods, admitted as restricted, running as {account}"),
            || async {
                let pods = cluster.list("v1", "Pod", Some(NAMESPACE)).await;
                let owned = |owner: &str, o: &Value| {
                    o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| refs.iter().any(|r| r["name"] == owner))
                };
                let replica_set = cluster
                    .list("apps/v1", "ReplicaSet", Some(NAMESPACE))
                    .await
                    .into_iter()
                    .find(|rs| owned(name, rs))?;
                let replica_set = str_at(&replica_set, "/metadata/name").to_owned();
                let ours: Vec<_> = pods.iter().filter(|p| owned(&replica_set, p)).collect();
                (ours.len() as u64 == replicas
                    && ours
                        .iter()
                        .all(|p| p["spec"]["serviceAccountName"] == account))
                .then_some(())
            },
        )
        .await;
    }
    Install {
        cluster,
        objects,
        admin,
    }
}

/// The ServiceAccount the Deployment running `keysmith <subcommand>` uses, as rendered.
fn service_account_of<'a>(objects: &'a [Value], subcommand: &str) -> &'a str {
    let deployment = of_kind(objects, "Deployment")
        .find(|d| d["spec"]["template"]["spec"]["containers"][0]["args"][0] == subcommand)
        .unwrap_or_else(|| panic!("no Deployment runs `keysmith {subcommand}`"));
    str_at(deployment, "/spec/template/spec/serviceAccountName")
}

/// Every permission the rendered Roles and ClusterRoles grant, through the rendered bindings,
/// to the ServiceAccount `account` of the release namespace.
fn granted(objects: &[Value], account: &str) -> BTreeSet<Permission> {
    let bindings = objects
        .iter()
        .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding");
    let mut out = BTreeSet::new();
    for binding in bindings {
        let binds_account = binding["subjects"].as_array().is_some_and(|subjects| {
            subjects.iter().any(|s| {
                s["kind"] == "ServiceAccount" && s["namespace"] == NAMESPACE && s["name"] == account
            })
        });
        if !binds_account {
            continue;
        }
        let role = objects
            .iter()
            .find(|o| {
                o["kind"] == binding["roleRef"]["kind"]
                    && o["metadata"]["name"] == binding["roleRef"]["name"]
            })
            .expect("the bound role is rendered");
        out.extend(rbac::granted(&role["rules"]));
    }
    out
}

/// What `account` did successfully according to the audit log, and what it was denied.
fn used(cluster: &Cluster, account: &str) -> (BTreeSet<Permission>, Vec<String>) {
    rbac::used(
        cluster,
        &format!("system:serviceaccount:{NAMESPACE}:{account}"),
    )
}

/// `kubectl auth can-i` as the release's ServiceAccount `account`, against the real server.
fn can_i(admin: &Path, account: &str, question: &[&str]) -> bool {
    can_i_as(
        admin,
        &format!("system:serviceaccount:{NAMESPACE}:{account}"),
        question,
    )
}

/// `kubectl auth can-i` as user `user`, against the real server.
fn can_i_as(admin: &Path, user: &str, question: &[&str]) -> bool {
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(admin)
        .args(["auth", "can-i"])
        .args(question)
        .arg(format!("--as={user}"))
        .output()
        .expect("kubectl runs");
    // Exit status 1 means "no" as well as failure, so the answer is read from the output.
    match String::from_utf8_lossy(&output.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl auth can-i {question:?} as {user}: {other} {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Assert each (account, question, expected answer) against the real server.
fn assert_can_i(admin: &Path, cases: &[(&str, &[&str], bool)]) {
    let wrong: Vec<String> = cases
        .iter()
        .filter(|(account, question, expected)| can_i(admin, account, question) != *expected)
        .map(|(account, question, expected)| {
            format!("{account} can-i {question:?}: expected {expected}")
        })
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_chart_is_accepted_by_a_real_api_server_and_rolls_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let install = install(&["mode=combined"], dir.path()).await;
    // `keysmith run` holds the controller's and the verifier's permissions under one account.
    let account = service_account_of(&install.objects, "run");
    let run = process(
        Some(controller_part(&install.cluster, account).await),
        Some(verifier_part(&install.cluster, account, listener().await).await),
    )
    .await;
    components::preflight(&run)
        .await
        .expect("the combined account may start both parts");
}

/// Restart targets of every kind the controller may patch (one missing), and the Secret a
/// required header's value comes from, so the scenario needs every granted permission.
async fn listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port")
}

/// A client acting as the release's ServiceAccount `account`, with a real token.
async fn client_of(cluster: &Cluster, account: &str) -> kube::Client {
    cluster
        .client_as(&Identity::service_account(NAMESPACE, account))
        .await
        .unwrap_or_else(|e| panic!("a client as {account}: {e}"))
}

/// The controller as `account`, holding its Lease in the release namespace (the rendered
/// Deployments' `POD_NAMESPACE`).
async fn controller_part(cluster: &Cluster, account: &str) -> ControllerPart {
    ControllerPart {
        client: client_of(cluster, account).await,
        leader: LeaderConfig::new(NAMESPACE, format!("{account}-0")),
        clock: controller::system_clock(),
        personal_keys: keysmith::controller::PersonalKeyPolicy::ACCEPTED,
        access_lists: false,
        concurrency: controller::DEFAULT_CONCURRENCY,
    }
}

async fn verifier_part(
    cluster: &Cluster,
    account: &str,
    api: tokio::net::TcpListener,
) -> VerifierPart {
    VerifierPart {
        client: client_of(cluster, account).await,
        api,
        trusted_proxies: Vec::new(),
        // What is checked here is the chart's RBAC, in whichever namespace the keys are.
        tenancy: keysmith::verifier::tenancy::Tenancy::any(),
        usage: None,
        clock: keysmith::controller::system_clock(),
    }
}

/// One Keysmith process running `controller`, `verifier` or both, on every ApiKey.
async fn process(controller: Option<ControllerPart>, verifier: Option<VerifierPart>) -> Components {
    Components {
        controller,
        verifier,
        scope: Scope::default(),
        metrics: listener().await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_chart_runs_on_a_real_api_server_with_exactly_its_rendered_rbac() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Install {
        cluster,
        objects,
        admin,
    } = install(&[], dir.path()).await;
    assert_eq!(
        of_kind(&objects, "Deployment").count(),
        2,
        "split is the default mode"
    );
    let controller_sa = service_account_of(&objects, "controller");
    let verifier_sa = service_account_of(&objects, "verifier");
    assert_ne!(
        controller_sa, verifier_sa,
        "each component has its own account"
    );
    cluster
        .apply_yaml(&rbac::workloads(APPS))
        .await
        .expect("workloads");

    // Two processes, as the split Deployments run them, each with its account's real token.
    let verifier_api = listener().await;
    let verify_addr = verifier_api.local_addr().expect("address");
    let processes = [
        process(Some(controller_part(&cluster, controller_sa).await), None).await,
        process(
            None,
            Some(verifier_part(&cluster, verifier_sa, verifier_api).await),
        )
        .await,
    ];
    let (stop, shutdown) = Shutdown::new();
    let mut running = Vec::new();
    for process in processes {
        components::preflight(&process)
            .await
            .expect("the rendered RBAC suffices to start");
        running.push(tokio::spawn(components::serve(process, shutdown.clone())));
    }

    // Mint, then rotate twice: restarts of every kind, and the same missing-target warning
    // twice, which the event recorder sends as a create and then a patch of the series.
    for trigger in ["one", "two", "three"] {
        cluster
            .apply_yaml(&rbac::key(APPS, trigger))
            .await
            .expect("ApiKey");
        eventually(&format!("Ready with trigger {trigger}"), || async {
            let key = cluster
                .get("keysmith.dev/v1alpha1", "ApiKey", APPS, KEY)
                .await?;
            let ready = key["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let slot = &key["status"]["tokens"][0];
            let token = rbac::token(&cluster, APPS).await?;
            (ready
                && slot["rotationTrigger"] == trigger
                && keysmith::token::sha256_hex(&token) == slot["sha256"])
                .then_some(())
        })
        .await;
    }

    // The verifier answers for the Secret's token (with the header whose value the controller
    // read from a Secret and published as a hash), and writes the use back to status.
    let token = rbac::token(&cluster, APPS)
        .await
        .expect("the Secret's token");
    let body = json!({"token": token, "action": "read", "headers": {"X-Client-Secret": "s3cret"}})
        .to_string();
    eventually("a VALID verification", || async {
        let answer = http::request(verify_addr, "POST", "/v1/verify", &[], Some(&body)).await;
        (answer.status == 200 && answer.body.contains("\"VALID\"")).then_some(())
    })
    .await;
    eventually("lastUsedAt in status", || async {
        let key = cluster
            .get("keysmith.dev/v1alpha1", "ApiKey", APPS, KEY)
            .await?;
        key["status"]["tokens"][0]["lastUsedAt"].as_str().map(drop)
    })
    .await;

    // A write that fails: the condition `Ready=False ApiError` is applied on its own (a patch).
    cluster
        .apply_yaml(&rbac::failing_key(APPS))
        .await
        .expect("a key publishing over a foreign Secret");
    eventually("Ready=False ApiError", || {
        rbac::failing_key_reported(&cluster, APPS)
    })
    .await;

    // Deleting the key revokes it: the Secret goes, then the key once its finalizer is removed.
    Api::<ApiKey>::namespaced(cluster.client().await.expect("admin client"), APPS)
        .delete(KEY, &Default::default())
        .await
        .expect("delete");
    eventually("the Secret and the key to be gone", || async {
        let secret = cluster.get("v1", "Secret", APPS, KEY).await;
        let key = cluster
            .get("keysmith.dev/v1alpha1", "ApiKey", APPS, KEY)
            .await;
        (secret.is_none() && key.is_none()).then_some(())
    })
    .await;
    stop.trigger();
    for process in running {
        process
            .await
            .expect("joins")
            .expect("the process stops cleanly");
    }

    for account in [controller_sa, verifier_sa] {
        let (ok, denied) = used(&cluster, account);
        assert!(denied.is_empty(), "{account} was denied: {denied:#?}");
        let grants = granted(&objects, account);
        assert!(!grants.is_empty(), "{account} is bound to no rules");
        let unused: Vec<_> = grants.difference(&ok).collect();
        assert!(
            unused.is_empty(),
            "{account} is granted what it never used (remove it from the chart): {unused:#?}"
        );
    }

    // Least privilege from the other side: what the cluster-wide roles leave out. Each "no" has
    // a "yes" on the same resource, so a can-i that always says no would fail.
    assert_can_i(
        &admin,
        &[
            (verifier_sa, &["list", "apikeys.keysmith.dev", "-A"], true),
            (
                verifier_sa,
                &["get", "apikeys.keysmith.dev", "-n", APPS],
                false,
            ),
            (
                verifier_sa,
                &["update", "apikeys.keysmith.dev", "-n", APPS],
                false,
            ),
            (verifier_sa, &["get", "secrets", "-n", APPS], false),
            (verifier_sa, &["list", "secrets", "-A"], false),
            (verifier_sa, &["create", "secrets", "-n", APPS], false),
            (
                verifier_sa,
                &["patch", "deployments.apps", "-n", APPS],
                false,
            ),
            (
                controller_sa,
                &["patch", "deployments.apps", "-n", APPS],
                true,
            ),
            (
                controller_sa,
                &["update", "deployments.apps", "-n", APPS],
                false,
            ),
            (
                controller_sa,
                &["patch", "apikeys.keysmith.dev", "-n", APPS],
                true,
            ),
            (
                controller_sa,
                &["update", "apikeys.keysmith.dev", "-n", APPS],
                false,
            ),
            (
                controller_sa,
                &["delete", "apikeys.keysmith.dev", "-n", APPS],
                false,
            ),
            (
                controller_sa,
                &["create", "leases.coordination.k8s.io", "-n", NAMESPACE],
                true,
            ),
            (
                controller_sa,
                &["create", "leases.coordination.k8s.io", "-n", APPS],
                false,
            ),
            (
                controller_sa,
                &[
                    "create",
                    "rolebindings.rbac.authorization.k8s.io",
                    "-n",
                    APPS,
                ],
                false,
            ),
            (
                controller_sa,
                &["create", "clusterrolebindings.rbac.authorization.k8s.io"],
                false,
            ),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_chart_confines_both_accounts_to_the_watched_namespace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let watch = format!("watchNamespace={APPS}");
    // Held, not destructured, so the control plane lives until the questions are answered. The
    // optional objects and pod options ride along, so the real server checks them too, and the
    // Pods still pass `restricted` without a fixed user and group (as OpenShift runs them).
    let sets = [
        watch.as_str(),
        "verifier.autoscaling.enabled=true",
        "grafanaDashboard.enabled=true",
        "verifier.networkPolicy.allowedNamespaces={apps}",
        "verifier.networkPolicy.allowedCIDRs={192.0.2.0/24}",
        "controller.podSecurityContext.runAsUser=null",
        "controller.podSecurityContext.runAsGroup=null",
        "controller.securityContext.runAsUser=null",
        "controller.securityContext.runAsGroup=null",
        "controller.podLabels.team=platform",
        "controller.serviceAccount.annotations.example\\.com/role=keysmith",
        "verifier.extraEnv[0].name=EXTRA",
        "verifier.extraEnv[0].value=on",
        "verifier.extraArgs={--max-connections=4096}",
        "verifier.extraVolumes[0].name=extra",
        "verifier.extraVolumes[0].emptyDir.medium=Memory",
        "verifier.extraVolumeMounts[0].name=extra",
        "verifier.extraVolumeMounts[0].mountPath=/extra",
        "commonLabels.team=platform",
        "service.annotations.example\\.com/exposure=internal",
        "service.labels.exposure=internal",
        "controller.startupProbe.httpGet.path=/healthz",
        "controller.startupProbe.httpGet.port=metrics",
        "controller.startupProbe.failureThreshold=30",
        "verifier.readinessProbe.timeoutSeconds=3",
        "verifier.strategy.type=Recreate",
        "revisionHistoryLimit=3",
        "podDisruptionBudget.maxUnavailable=1",
        "logLevel=debug",
        "extraObjects[0].apiVersion=v1",
        "extraObjects[0].kind=ConfigMap",
        "extraObjects[0].metadata.name=extra",
        "extraObjects[0].metadata.namespace=keysmith",
    ];
    let install = install(&sets, dir.path()).await;
    for (kind, count) in [
        ("HorizontalPodAutoscaler", 1),
        ("NetworkPolicy", 1),
        // The dashboard and the extra object.
        ("ConfigMap", 2),
    ] {
        assert_eq!(of_kind(&install.objects, kind).count(), count, "{kind}");
    }
    let controller_sa = service_account_of(&install.objects, "controller");
    let verifier_sa = service_account_of(&install.objects, "verifier");
    assert_can_i(
        &install.admin,
        &[
            (verifier_sa, &["get", "secrets", "-n", APPS], false),
            (verifier_sa, &["get", "secrets", "-n", OTHER], false),
            (verifier_sa, &["get", "secrets", "-n", NAMESPACE], false),
            (controller_sa, &["get", "secrets", "-n", APPS], true),
            (
                verifier_sa,
                &["list", "apikeys.keysmith.dev", "-n", APPS],
                true,
            ),
            (verifier_sa, &["list", "apikeys.keysmith.dev", "-A"], false),
            (controller_sa, &["create", "secrets", "-n", APPS], true),
            (controller_sa, &["create", "secrets", "-n", OTHER], false),
            (
                controller_sa,
                &["patch", "deployments.apps", "-n", OTHER],
                false,
            ),
            (
                controller_sa,
                &["list", "apikeys.keysmith.dev", "-A"],
                false,
            ),
            (
                controller_sa,
                &["create", "leases.coordination.k8s.io", "-n", NAMESPACE],
                true,
            ),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifier_account_may_change_only_last_used_at_and_read_no_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Install {
        cluster,
        objects,
        admin,
    } = install(&[], dir.path()).await;
    let verifier_sa = service_account_of(&objects, "verifier");
    assert_eq!(
        of_kind(&objects, "ValidatingAdmissionPolicyBinding").count(),
        1,
        "the split chart guards the verifier's status writes"
    );
    assert_can_i(
        &admin,
        &[
            (verifier_sa, &["get", "secrets", "-A"], false),
            (verifier_sa, &["list", "secrets", "-A"], false),
            (verifier_sa, &["watch", "secrets", "-A"], false),
            (
                verifier_sa,
                &[
                    "patch",
                    "apikeys.keysmith.dev",
                    "--subresource=status",
                    "-n",
                    APPS,
                ],
                true,
            ),
        ],
    );

    // A key with the status the controller would have written (by the administrator, whom the
    // policy does not restrict), holding a token and a required header's hash.
    cluster
        .apply_yaml(&rbac::key(APPS, "one"))
        .await
        .expect("ApiKey");
    let admin_keys = Api::<ApiKey>::namespaced(cluster.client().await.expect("admin"), APPS);
    let hash = |s: &str| keysmith::token::sha256_hex(s);
    let status = json!({"status": {
        "observedGeneration": 1,
        "secretName": KEY,
        "tokens": [{"name": "api", "id": "all_AAAAAA", "sha256": hash("the real token"),
            "issuedAt": "2026-11-01T00:00:00Z", "expiresAt": "2027-11-01T00:00:00Z",
            "previous": {"id": "all_DDDDDD", "sha256": hash("replaced"),
                "validUntil": "2026-11-24T00:00:00Z"},
            "earlier": [{"id": "all_EEEEEE", "sha256": hash("replaced before"),
                "validUntil": "2026-11-24T00:00:00Z"}]}],
        "servedGeneration": 1,
        "servedPolicy": {"tokens": [{"name": "api"}]},
        "requiredHeaders": [{"name": "X-Client-Secret",
            "secretKeyRef": {"name": "client-secret", "key": "value"}, "sha256": hash("s3cret")}],
    }});
    admin_keys
        .patch_status(KEY, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("the administrator writes status");

    // The verifier's own write: lastUsedAt of each token, as the usage write-back sends it.
    let verifier_keys = Api::<ApiKey>::namespaced(client_of(&cluster, verifier_sa).await, APPS);
    let as_verifier = PatchParams {
        field_manager: Some(keysmith::verifier::usage::FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let used_at: jiff::Timestamp = "2026-11-23T10:00:00Z".parse().expect("time");
    let entry = |replaced, token| keysmith::verifier::usage::StatusEntry {
        position: 0,
        replaced,
        sha256: hash(token),
    };
    let usage = keysmith::verifier::usage::usage_patch(
        &[
            (entry(None, "the real token"), used_at),
            (entry(Some(0), "replaced"), used_at),
            (entry(Some(1), "replaced before"), used_at),
        ]
        .into(),
    );
    verifier_keys
        .patch_status(KEY, &as_verifier, &Patch::Json::<()>(usage))
        .await
        .expect("the verifier may set lastUsedAt");

    // The server enforces a policy once it has loaded it, some time after the install: wait
    // until a forged write to a throwaway key is refused, so no forged write below lands first.
    cluster
        .apply_yaml(&format!(
            "apiVersion: keysmith.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: policy-probe, \
             namespace: {APPS}}}\nspec: {{tokens: [{{name: api}}]}}\n"
        ))
        .await
        .expect("probe ApiKey");
    admin_keys
        .patch_status(
            "policy-probe",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .expect("the administrator writes the probe's status");
    // A new value on every attempt: one that got through before the policy was active would
    // make the next identical write a no-op, which the policy has no reason to refuse.
    let attempts = std::sync::atomic::AtomicI64::new(9);
    eventually(
        "the policy to refuse the verifier's forged write",
        || async {
            let value = attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let forged =
                json!([{"op": "replace", "path": "/status/observedGeneration", "value": value}]);
            let forged: json_patch::Patch = serde_json::from_value(forged).expect("patch");
            verifier_keys
                .patch_status("policy-probe", &as_verifier, &Patch::Json::<()>(forged))
                .await
                .err()
                .filter(|e| e.to_string().contains("may change only"))
                .map(drop)
        },
    )
    .await;

    // Anything else it would need to make a token of its own verify, or keep one verifying, is
    // refused by the policy, whatever RBAC allows.
    let forged = [
        json!([{"op": "replace", "path": "/status/tokens/0/sha256", "value": hash("forged")}]),
        json!([{"op": "add", "path": "/status/tokens/-", "value": {"name": "extra",
            "id": "all_BBBBBB", "sha256": hash("forged"), "issuedAt": "2026-11-01T00:00:00Z"}}]),
        json!([{"op": "replace", "path": "/status/tokens/0/previous", "value": {"id": "all_CCCCCC",
            "sha256": hash("forged"), "validUntil": "2030-01-01T00:00:00Z"}}]),
        json!([{"op": "replace", "path": "/status/tokens/0/previous/validUntil",
            "value": "2030-01-01T00:00:00Z"}]),
        json!([{"op": "add", "path": "/status/tokens/0/earlier/-", "value": {"id": "all_CCCCCC",
            "sha256": hash("forged"), "validUntil": "2030-01-01T00:00:00Z"}}]),
        json!([{"op": "replace", "path": "/status/tokens/0/earlier/0/sha256", "value": hash("forged")}]),
        json!([{"op": "add", "path": "/status/servedPolicy/grants", "value": [{"effect": "allow",
            "actions": ["*"]}]}]),
        json!([{"op": "replace", "path": "/status/servedGeneration", "value": 9}]),
        json!([{"op": "remove", "path": "/status/tokens/0/expiresAt"}]),
        json!([{"op": "replace", "path": "/status/requiredHeaders/0/sha256", "value": hash("mine")}]),
        json!([{"op": "remove", "path": "/status/requiredHeaders"}]),
        json!([{"op": "replace", "path": "/status/observedGeneration", "value": 7}]),
        json!([{"op": "remove", "path": "/status"}]),
    ];
    for patch in forged {
        let patch: json_patch::Patch = serde_json::from_value(patch.clone()).expect("patch");
        let refused = verifier_keys
            .patch_status(KEY, &as_verifier, &Patch::Json::<()>(patch.clone()))
            .await
            .expect_err("the policy refuses it");
        assert!(
            refused
                .to_string()
                .contains("the Keysmith verifier may change only status.tokens[].lastUsedAt"),
            "{patch:?}: {refused}"
        );
    }

    // A leak report, as the leak-report endpoint records it: allowed on an entry without one.
    let leak = |source: &str| keysmith::api::Leak {
        reported_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(used_at),
        source: Some(source.into()),
        handled_at: None,
    };
    for (replaced, token) in [(None, "the real token"), (Some(1), "replaced before")] {
        let reported = keysmith::verifier::leaks::leak_patch(
            &entry(replaced, token),
            &leak("https://example.com/leak"),
        );
        verifier_keys
            .patch_status(KEY, &as_verifier, &Patch::Json::<()>(reported))
            .await
            .expect("the verifier may record a leak");
    }
    // But it may not take a report back, rewrite one, or mark one handled (the controller's
    // part): the only thing a compromised verifier can do with leaks is report more of them.
    let handled =
        json!({"reportedAt": "2026-11-23T10:00:00Z", "handledAt": "2026-11-23T10:00:00Z"});
    let forged = [
        json!([{"op": "remove", "path": "/status/tokens/0/leak"}]),
        json!([{"op": "replace", "path": "/status/tokens/0/leak/source", "value": "elsewhere"}]),
        json!([{"op": "replace", "path": "/status/tokens/0/leak/reportedAt",
            "value": "2026-11-24T10:00:00Z"}]),
        json!([{"op": "add", "path": "/status/tokens/0/leak/handledAt",
            "value": "2026-11-23T10:00:00Z"}]),
        json!([{"op": "add", "path": "/status/tokens/0/previous/leak", "value": handled}]),
        json!([{"op": "remove", "path": "/status/tokens/0/earlier/0/leak"}]),
    ];
    for patch in forged {
        let patch: json_patch::Patch = serde_json::from_value(patch.clone()).expect("patch");
        let refused = verifier_keys
            .patch_status(KEY, &as_verifier, &Patch::Json::<()>(patch.clone()))
            .await
            .expect_err("the policy refuses it");
        assert!(
            refused.to_string().contains(
                "the Keysmith verifier may only add a leak record to a token that has none"
            ),
            "{patch:?}: {refused}"
        );
    }

    let stored = admin_keys.get_status(KEY).await.expect("status");
    let stored = serde_json::to_value(stored.status).expect("JSON");
    assert_eq!(stored["tokens"][0]["sha256"], hash("the real token"));
    assert_eq!(stored["tokens"][0]["lastUsedAt"], "2026-11-23T10:00:00Z");
    assert_eq!(
        stored["tokens"][0]["leak"],
        json!({"reportedAt": "2026-11-23T10:00:00Z", "source": "https://example.com/leak"})
    );
    assert_eq!(
        stored["tokens"][0]["earlier"][0]["leak"]["source"],
        "https://example.com/leak"
    );
    assert_eq!(stored["tokens"][0]["previous"].get("leak"), None);
    assert_eq!(
        stored["tokens"][0]["previous"]["lastUsedAt"],
        "2026-11-23T10:00:00Z"
    );
    assert_eq!(
        stored["tokens"][0]["earlier"][0]["lastUsedAt"],
        "2026-11-23T10:00:00Z"
    );
    assert_eq!(stored["tokens"][0]["previous"]["sha256"], hash("replaced"));
    assert_eq!(stored["tokens"].as_array().map(Vec::len), Some(1));
    assert_eq!(stored["requiredHeaders"][0]["sha256"], hash("s3cret"));
}

/// Whether `user` may get the usage of ApiKeys in `namespace`, by a SubjectAccessReview (kubectl
/// auth can-i needs discovery, which an aggregated API without a running backend lacks).
async fn may_read_usage(cluster: &Cluster, user: &str, groups: &[&str], namespace: &str) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            groups: Some(groups.iter().map(|g| g.to_string()).collect()),
            resource_attributes: Some(ResourceAttributes {
                group: Some("usage.keysmith.dev".into()),
                resource: Some("apikeyusages".into()),
                verb: Some("get".into()),
                namespace: Some(namespace.into()),
                name: Some("any".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(cluster.client().await.expect("admin"));
    api.create(&Default::default(), &review)
        .await
        .expect("SubjectAccessReview")
        .status
        .is_some_and(|s| s.allowed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_api_objects_are_accepted_and_grant_what_docs_security_lists() {
    let dir = tempfile::tempdir().expect("temp dir");
    let install = install(&["usage.enabled=true"], dir.path()).await;
    let objects = &install.objects;
    // The APIService trusts the CA of the certificate the verifier serves.
    let service = of_kind(objects, "APIService")
        .next()
        .expect("the APIService is rendered");
    let secret = of_kind(objects, "Secret")
        .find(|s| str_at(s, "/metadata/name").ends_with("-usage-tls"))
        .expect("the usage certificate is rendered");
    assert_eq!(
        str_at(service, "/spec/caBundle"),
        str_at(secret, "/data/ca.crt")
    );
    assert_eq!(str_at(service, "/spec/service/name"), "keysmith-verifier");
    // Later renders (helm upgrade, a GitOps diff with cluster access) take the certificate over
    // from the cluster: the Secret and the APIService stay as installed.
    let stored = install
        .cluster
        .get("v1", "Secret", NAMESPACE, str_at(secret, "/metadata/name"))
        .await
        .expect("the usage certificate is stored");
    assert_eq!(stored["data"], secret["data"]);
    for _ in 0..2 {
        let (_, again) = render_with(&["usage.enabled=true"], Some(&install.admin));
        let secret_again = of_kind(&again, "Secret")
            .find(|s| str_at(s, "/metadata/name").ends_with("-usage-tls"))
            .expect("the usage certificate is rendered");
        assert_eq!(secret_again["data"], stored["data"]);
        let service_again = of_kind(&again, "APIService").next().expect("APIService");
        assert_eq!(service_again["spec"], service["spec"]);
    }
    let verifier = service_account_of(objects, "verifier");
    let controller = service_account_of(objects, "controller");
    assert_can_i(
        &install.admin,
        &[
            (
                verifier,
                &["create", "tokenreviews.authentication.k8s.io"],
                true,
            ),
            (
                verifier,
                &["create", "subjectaccessreviews.authorization.k8s.io"],
                true,
            ),
            (
                verifier,
                &[
                    "get",
                    "configmap/extension-apiserver-authentication",
                    "-n",
                    "kube-system",
                ],
                true,
            ),
            (
                verifier,
                &["get", "configmap/other", "-n", "kube-system"],
                false,
            ),
            (
                verifier,
                &["list", "endpointslices.discovery.k8s.io", "-n", NAMESPACE],
                true,
            ),
            (
                verifier,
                &["list", "endpointslices.discovery.k8s.io", "-n", APPS],
                false,
            ),
            (
                controller,
                &["create", "tokenreviews.authentication.k8s.io"],
                false,
            ),
        ],
    );
    let account = |name: &str| format!("system:serviceaccount:{NAMESPACE}:{name}");
    let groups = ["system:serviceaccounts", "system:authenticated"];
    // A replica reads the others' usage with its own token.
    assert!(may_read_usage(&install.cluster, &account(verifier), &groups, APPS).await);
    assert!(!may_read_usage(&install.cluster, &account(controller), &groups, APPS).await);
    // The reader joins the built-in edit role: a namespace's developer may read its keys'
    // usage, and no other namespace's.
    install
        .cluster
        .apply_object(&json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "dev-edit", "namespace": APPS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                "name": "edit"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dev"}],
        }))
        .await
        .expect("binding");
    eventually("edit to include the usage reader", || async {
        may_read_usage(&install.cluster, "dev", &[], APPS)
            .await
            .then_some(())
    })
    .await;
    assert!(!may_read_usage(&install.cluster, "dev", &[], OTHER).await);
}

/// The NOTES `helm install` prints for `sets` against the cluster of the kubeconfig `admin`.
fn notes(admin: &Path, sets: &[&str]) -> String {
    let mut args = vec![
        "install",
        RELEASE,
        CHART,
        "--namespace",
        NAMESPACE,
        "--dry-run=server",
        // The chart is in place already (applied by `install`), as after a real install.
        "--take-ownership",
        "--kubeconfig",
        admin.to_str().expect("UTF-8 path"),
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let output = Command::new(binary("helm"))
        .args(&args)
        .output()
        .expect("helm runs");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(
        output.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .split_once("\nNOTES:\n")
        .unwrap_or_else(|| panic!("no NOTES in:\n{stdout}"))
        .1
        .to_owned()
}

/// The shell commands NOTES print, as printed: each indented line that starts with `kubectl`,
/// `curl` or `sed`, with the lines it continues onto (a trailing `\`).
fn notes_commands(notes: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut continued: Option<String> = None;
    for line in notes.lines() {
        let command = match continued.take() {
            Some(start) => format!("{start}\n{line}"),
            None if line.starts_with("   ")
                && ["kubectl ", "curl ", "sed "]
                    .iter()
                    .any(|tool| line.trim_start().starts_with(tool)) =>
            {
                line.trim_start().to_owned()
            }
            None => continue,
        };
        if command.ends_with('\\') {
            continued = Some(command);
        } else {
            commands.push(command);
        }
    }
    commands
}

/// A printed command through bash, as a user's shell runs it, with the administrator's
/// kubeconfig, from the repository (where `examples/` is): whether it succeeded, and its output.
fn run_printed(command: &str, admin: &Path) -> (bool, String) {
    let output = Command::new("bash")
        .args(["-o", "pipefail", "-c", command])
        .env("KUBECONFIG", admin)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Pods reported running and ready, as a kubelet would once their probes pass: no kubelet runs
/// here, and `kubectl rollout status` waits for available replicas.
async fn report_pods_ready(cluster: &Cluster) {
    use k8s_openapi::api::core::v1::Pod;
    let pods = Api::<Pod>::namespaced(cluster.client().await.expect("admin"), NAMESPACE);
    let now = jiff::Timestamp::now().to_string();
    let ready = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
    ]}});
    for pod in pods.list(&Default::default()).await.expect("pods") {
        let name = pod.metadata.name.expect("named");
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&ready))
            .await
            .unwrap_or_else(|e| panic!("pod {name} ready: {e}"));
    }
}

/// Some once the Secret of the NOTES' example key (examples/public-delivery.yaml) holds the
/// token whose hash the key's status publishes.
async fn minted_example_token(cluster: &Cluster) -> Option<()> {
    use k8s_openapi::api::core::v1::Secret;
    let key = cluster
        .get(
            "keysmith.dev/v1alpha1",
            "ApiKey",
            "default",
            "storefront-web",
        )
        .await?;
    let secret: Secret = serde_json::from_value(
        cluster
            .get("v1", "Secret", "default", "storefront-web")
            .await?,
    )
    .ok()?;
    let token = secret.data?.get("CMS_PUBLIC_DELIVERY_TOKEN")?.0.clone();
    let token = String::from_utf8(token).ok()?;
    (keysmith::token::sha256_hex(&token) == key["status"]["tokens"][0]["sha256"]).then_some(())
}

/// NOTES work as printed on a default install: every command they print runs, verbatim, against
/// the real API server the chart is installed on, with a controller and a verifier running as
/// the rendered Deployments would (their accounts, the verifier's tenancy flags). Only the
/// port-forward cannot (no kubelet, so no pod to forward to): the commands reach the verifier
/// this test runs instead of its forwarded port. The key lands in `default`, which a default
/// install (`acceptNamespaces: []`) accepts only on the scoped routes, and the token travels
/// through a pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_commands_work_as_printed_on_a_default_install() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Install {
        cluster,
        objects,
        admin,
    } = install(&[], dir.path()).await;
    let controller_sa = service_account_of(&objects, "controller");
    let verifier_sa = service_account_of(&objects, "verifier");
    // The verifier accepts the namespaces the rendered Deployment tells it to: none unscoped.
    let verifier_args = &of_kind(&objects, "Deployment")
        .find(|d| d["spec"]["template"]["spec"]["containers"][0]["args"][0] == "verifier")
        .expect("the verifier Deployment")["spec"]["template"]["spec"]["containers"][0]["args"];
    let accepted = verifier_args
        .as_array()
        .expect("args")
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("--accept-namespaces="))
        .unwrap_or_default();
    let tenancy = keysmith::verifier::tenancy::Tenancy::parse(accepted, &[]).expect("tenancy");
    let api = listener().await;
    let verifier_addr = api.local_addr().expect("address");
    let processes = [
        process(Some(controller_part(&cluster, controller_sa).await), None).await,
        process(
            None,
            Some(VerifierPart {
                tenancy,
                ..verifier_part(&cluster, verifier_sa, api).await
            }),
        )
        .await,
    ];
    let (stop, shutdown) = Shutdown::new();
    let running: Vec<_> = processes
        .into_iter()
        .map(|p| tokio::spawn(components::serve(p, shutdown.clone())))
        .collect();
    report_pods_ready(&cluster).await;

    // Going without the verifier's status policy is a choice NOTES warn about (issue 27, N11).
    let unguarded = notes(&admin, &["verifier.statusPolicy=false"]);
    assert!(
        unguarded.contains("WARNING: verifier.statusPolicy is false"),
        "{unguarded}"
    );
    // Leak reports, off by default, get a step of their own naming what is on and where.
    let leaks = notes(
        &admin,
        &[
            "accessLists.enabled=true",
            "leakReports.tokenSecret=leak-token",
        ],
    );
    assert!(leaks.contains("\n6. Who may read a key:\n"), "{leaks}");
    assert!(
        leaks.contains("\n\n7. Leak reports are on, on the verification API of keysmith-verifier"),
        "{leaks}"
    );
    assert!(leaks.contains("Secret leak-token (key token)"), "{leaks}");
    assert!(leaks.contains("/v1/leaks/trufflehog-verify"), "{leaks}");
    assert!(!leaks.contains("/v1/leaks/github"), "{leaks}");
    let github = notes(&admin, &["leakReports.githubKeysSecret=github-keys"]);
    assert!(github.contains("\n6. Leak reports are on"), "{github}");
    assert!(
        github.contains("signed with a key in Secret\n   github-keys."),
        "{github}"
    );
    assert!(!github.contains("POST /v1/leaks takes"), "{github}");
    let notes = notes(&admin, &[]);
    assert!(!notes.contains("WARNING: verifier.statusPolicy"), "{notes}");
    assert!(!notes.contains("Leak reports"), "{notes}");
    let commands = notes_commands(&notes);
    let forwarded = "http://localhost:8080";
    let (port_forwards, commands): (Vec<_>, Vec<_>) = commands
        .into_iter()
        .partition(|c| c.contains(" port-forward "));
    assert_eq!(port_forwards.len(), 1, "{notes}");
    assert!(
        port_forwards[0].ends_with("svc/keysmith-verifier 8080:80 &"),
        "{}",
        port_forwards[0]
    );
    // Every step's commands are there to run: readiness, the example key, both routes, rotation.
    for step in [
        "rollout status deployment/keysmith-verifier",
        "rollout status deployment/keysmith-controller",
        "apply -f examples/public-delivery.yaml",
        "wait --for=condition=Ready",
        "/v1/namespaces/default/verify",
        "/v1/namespaces/default/authz",
        "annotate ak storefront-web keysmith.dev/rotate=",
    ] {
        assert!(
            commands.iter().any(|c| c.contains(step)),
            "NOTES print no `{step}`:\n{notes}"
        );
    }
    let mut answers = Vec::new();
    for printed in &commands {
        assert!(
            !printed.contains("/v1/verify") && !printed.contains("/v1/authz"),
            "an unscoped route answers NOT_FOUND on a default install: {printed}"
        );
        assert!(
            !printed.contains("$TOKEN") && !printed.contains("TOKEN="),
            "a token on a command line: {printed}"
        );
        let command = printed.replace(forwarded, &format!("http://{verifier_addr}"));
        if command != *printed {
            // The verifier serves the key once its watch has seen the minted status; the
            // command is the one printed, run until it answers.
            let expected = if command.contains("/verify") {
                "\"code\":\"VALID\""
            } else {
                "HTTP/1.1 200"
            };
            let answer = eventually(&format!("`{printed}` to answer {expected}"), || async {
                let (ok, out) = run_printed(&command, &admin);
                (ok && out.contains(expected)).then_some(out)
            })
            .await;
            answers.push(answer);
            continue;
        }
        let (ok, out) = run_printed(&command, &admin);
        assert!(ok, "`{printed}` failed:\n{out}");
        if command.contains(" wait --for=condition=Ready") {
            // Ready goes out just before the Secret write (README, "Ready and the Secret"); a
            // person reading the Secret next has given it that moment.
            eventually("the Secret to hold the minted token", || {
                minted_example_token(&cluster)
            })
            .await;
        }
    }
    let [verify, authz] = &answers[..] else {
        panic!("NOTES print one verify and one authz command: {notes}")
    };
    assert!(verify.contains("\"valid\":true"), "{verify}");
    assert!(
        authz
            .to_ascii_lowercase()
            .contains("x-keysmith-key: default/storefront-web"),
        "{authz}"
    );
    stop.trigger();
    for process in running {
        process
            .await
            .expect("joins")
            .expect("the process stops cleanly");
    }
}

/// Personal keys on the real authorizer with the chart's policies (`personalKeys.enabled`):
/// nobody creates a personal key for someone else or with groups they are not in, the owner
/// cannot change, and only the controller's ServiceAccount changes a personal key's tokens:
/// not its owner, not another namespace editor with `apikeys/status`, not the verifier (which
/// still writes `lastUsedAt`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_keys_are_their_creators_and_only_the_controller_sets_their_tokens() {
    use kube::api::PostParams;
    use std::sync::atomic::{AtomicU32, Ordering};

    let dir = tempfile::tempdir().expect("temp dir");
    let Install {
        cluster, objects, ..
    } = install(&["personalKeys.enabled=true"], dir.path()).await;
    let controller_sa = service_account_of(&objects, "controller");
    let verifier_sa = service_account_of(&objects, "verifier");
    cluster
        .apply_yaml(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n\
             metadata: {{name: apikey-editor, namespace: {APPS}}}\n\
             rules: [{{apiGroups: [keysmith.dev], resources: [apikeys, apikeys/status], verbs: ['*']}}]\n\
             ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
             metadata: {{name: apikey-editors, namespace: {APPS}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: apikey-editor}}\n\
             subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}},\n\
             {{apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}}]\n"
        ))
        .await
        .expect("RBAC for alice and bob");
    let keys_as = |identity: Identity| {
        let cluster = &cluster;
        async move {
            let client = cluster.client_as(&identity).await.expect("client");
            Api::<ApiKey>::namespaced(client, APPS)
        }
    };
    let alice = keys_as(Identity::user("alice", &["dev-team"])).await;
    let bob = keys_as(Identity::user("bob", &["dev-team"])).await;
    let controller_keys = Api::<ApiKey>::namespaced(client_of(&cluster, controller_sa).await, APPS);
    let verifier_keys = Api::<ApiKey>::namespaced(client_of(&cluster, verifier_sa).await, APPS);
    let personal = |name: &str, owner: Value| -> ApiKey {
        serde_json::from_value(json!({
            "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": name, "namespace": APPS},
            "spec": {"tokens": [{"name": "me"}], "owner": owner},
        }))
        .expect("ApiKey")
    };
    let create = PostParams::default();

    // The server enforces a policy some time after the install: a fresh name per attempt, so
    // a key admitted before that cannot turn later attempts into AlreadyExists.
    let attempt = AtomicU32::new(0);
    eventually("the owner policy to refuse bob's key for alice", || async {
        let name = format!("for-alice-{}", attempt.fetch_add(1, Ordering::Relaxed));
        let key = personal(&name, json!({"username": "alice"}));
        bob.create(&create, &key)
            .await
            .err()
            .filter(|e| {
                e.to_string()
                    .contains("nobody creates a personal key for someone else")
            })
            .map(drop)
    })
    .await;
    let other_group = personal("groups", json!({"username": "alice", "groups": ["admins"]}));
    let refused = alice
        .create(&create, &other_group)
        .await
        .expect_err("refused");
    assert!(
        refused
            .to_string()
            .contains("only groups the user creating the key is in"),
        "{refused}"
    );
    let own = json!({"username": "alice", "groups": ["dev-team"]});
    alice
        .create(&create, &personal("alices", own))
        .await
        .expect("alice creates her own personal key");

    // The owner is fixed for the key's life, whoever asks.
    for (patch, says) in [
        (
            json!([{"op": "replace", "path": "/spec/owner/username", "value": "bob"}]),
            "owner is immutable",
        ),
        (
            json!([{"op": "remove", "path": "/spec/owner"}]),
            "owner cannot be added to or removed",
        ),
    ] {
        let patch: json_patch::Patch = serde_json::from_value(patch).expect("patch");
        let refused = alice
            .patch("alices", &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
            .expect_err("the CRD refuses it");
        assert!(refused.to_string().contains(says), "{refused}");
    }

    // The controller writes the key's tokens.
    let hash = |s: &str| keysmith::token::sha256_hex(s);
    let status = json!({"status": {"tokens": [{"name": "me", "id": "ks_AAAAAA",
        "sha256": hash("alice's token"), "issuedAt": "2026-11-01T00:00:00Z",
        "expiresAt": "2027-01-30T00:00:00Z"}]}});
    controller_keys
        .patch_status("alices", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("the controller writes a personal key's tokens");

    // Anyone else's hash is refused, once the status policy is in force too.
    let forged = AtomicU32::new(0);
    eventually("the status policy to refuse bob's hash", || async {
        let value = hash(&format!("bob's {}", forged.fetch_add(1, Ordering::Relaxed)));
        let patch = json!([{"op": "replace", "path": "/status/tokens/0/sha256", "value": value}]);
        let patch: json_patch::Patch = serde_json::from_value(patch).expect("patch");
        bob.patch_status("alices", &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
            .err()
            .filter(|e| e.to_string().contains("only the Keysmith controller"))
            .map(drop)
    })
    .await;
    let plants = [
        json!([{"op": "replace", "path": "/status/tokens/0/sha256", "value": hash("planted")}]),
        json!([{"op": "add", "path": "/status/tokens/-", "value": {"name": "extra",
            "id": "ks_BBBBBB", "sha256": hash("planted"), "issuedAt": "2026-11-01T00:00:00Z"}}]),
        json!([{"op": "add", "path": "/status/tokens/0/previous", "value": {"id": "ks_CCCCCC",
            "sha256": hash("planted"), "validUntil": "2030-01-01T00:00:00Z"}}]),
        json!([{"op": "remove", "path": "/status/tokens/0/expiresAt"}]),
    ];
    for (who, keys) in [
        ("alice", &alice),
        ("bob", &bob),
        ("the verifier", &verifier_keys),
    ] {
        for plant in &plants {
            let patch: json_patch::Patch = serde_json::from_value(plant.clone()).expect("patch");
            let refused = keys
                .patch_status("alices", &PatchParams::default(), &Patch::Json::<()>(patch))
                .await
                .expect_err("the policy refuses it");
            // The verifier's writes are held by its own status policy too; the API server
            // answers with whichever refusing policy it evaluated first.
            let refused = refused.to_string();
            assert!(
                refused.contains("only the Keysmith controller")
                    || (who == "the verifier"
                        && refused.contains("the Keysmith verifier may change only")),
                "{who} {plant}: {refused}"
            );
        }
    }
    // The verifier's usage write-back still lands, and the controller may rotate.
    let entry = keysmith::verifier::usage::StatusEntry {
        position: 0,
        replaced: None,
        sha256: hash("alice's token"),
    };
    let used_at: jiff::Timestamp = "2026-11-23T10:00:00Z".parse().expect("time");
    let usage = keysmith::verifier::usage::usage_patch(&[(entry, used_at)].into());
    let as_verifier = PatchParams {
        field_manager: Some(keysmith::verifier::usage::FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    verifier_keys
        .patch_status("alices", &as_verifier, &Patch::Json::<()>(usage))
        .await
        .expect("the verifier may set lastUsedAt");
    let rotated =
        json!([{"op": "replace", "path": "/status/tokens/0/sha256", "value": hash("rotated")}]);
    let rotated: json_patch::Patch = serde_json::from_value(rotated).expect("patch");
    controller_keys
        .patch_status(
            "alices",
            &PatchParams::default(),
            &Patch::Json::<()>(rotated),
        )
        .await
        .expect("the controller rotates");
    let stored = alice.get_status("alices").await.expect("status");
    let stored = serde_json::to_value(stored.status).expect("JSON");
    assert_eq!(stored["tokens"][0]["sha256"], hash("rotated"));
    assert_eq!(stored["tokens"][0]["lastUsedAt"], "2026-11-23T10:00:00Z");
    assert_eq!(stored["tokens"].as_array().map(Vec::len), Some(1));

    // The policy is about personal keys: an ordinary key's status stays RBAC's to grant.
    cluster
        .apply_yaml(&rbac::key(APPS, "ordinary"))
        .await
        .expect("ApiKey");
    bob.patch_status(KEY, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("apikeys/status writes an ordinary key's status");
}

/// `kubectl` with `kubeconfig` and `args`: whether it succeeded, and what it printed.
fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs");
    let mut printed = String::from_utf8_lossy(&output.stdout).into_owned();
    printed.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), printed)
}

/// The issue's "done when" for personal keys, on a real kube-apiserver whose webhook token
/// authenticator is the verifier (docs/gateways.md), with the chart's policies: a personal key
/// the certificate user alice creates is alice, with her groups, to `kubectl --token`, and may
/// do exactly what her RBAC allows, as it changes; bob cannot create one for her; disabling it
/// and rotating it without overlap end the power of its (old) token; a namespace admin who cannot
/// read Secrets deletes it, and its token then stops working at the API server once the server's
/// token cache lets go. With access lists on, alice reads the key's Secret and bob and carol
/// do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_personal_key_acts_as_its_owner_at_the_api_server_until_it_is_deleted() {
    use keysmith::verifier::http::TOKENREVIEW_PATH;
    use keysmith::verifier::tenancy::Tenancy;
    use kube::api::{DeleteParams, PostParams};
    use std::sync::atomic::{AtomicU32, Ordering};
    // The audience kube-apiserver asks the webhook for (its issuer).
    const AUDIENCE: &str = "https://kubernetes.default.svc";

    let dir = tempfile::tempdir().expect("temp dir");
    let verifier_api = listener().await;
    let webhook = format!(
        "http://{}{TOKENREVIEW_PATH}",
        verifier_api.local_addr().expect("address")
    );
    let real = RealOptions {
        token_webhook: Some(webhook),
    };
    let Install {
        cluster,
        objects,
        admin,
    } = install_with(
        &["personalKeys.enabled=true", "accessLists.enabled=true"],
        dir.path(),
        &real,
    )
    .await;
    let controller_sa = service_account_of(&objects, "controller");
    let verifier_sa = service_account_of(&objects, "verifier");

    // As docs/gateways.md sets it up: the API server's audience accepts the keys of APPS and
    // opts in to personal keys.
    let tenancy = Tenancy::parse("", &[&format!("{AUDIENCE}={APPS}")])
        .and_then(|t| t.with_personal_audiences(&[AUDIENCE.to_owned()]))
        .expect("tenancy");
    let verifier = VerifierPart {
        tenancy,
        ..verifier_part(&cluster, verifier_sa, verifier_api).await
    };
    let processes = [
        process(
            Some(ControllerPart {
                access_lists: true,
                ..controller_part(&cluster, controller_sa).await
            }),
            None,
        )
        .await,
        process(None, Some(verifier)).await,
    ];
    let (stop, shutdown) = Shutdown::new();
    let mut running = Vec::new();
    for process in processes {
        running.push(tokio::spawn(components::serve(process, shutdown.clone())));
    }

    // alice and bob may create ApiKeys in APPS; alice may read its ConfigMaps; carol administers
    // ApiKeys there but, unlike the built-in admin and edit roles, reads no Secret.
    cluster
        .apply_yaml(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n\
             metadata: {{name: apikey-admin, namespace: {APPS}}}\n\
             rules: [{{apiGroups: [keysmith.dev], resources: [apikeys], verbs: ['*']}}]\n\
             ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
             metadata: {{name: apikey-admins, namespace: {APPS}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: apikey-admin}}\n\
             subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}},\n\
             {{apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}},\n\
             {{apiGroup: rbac.authorization.k8s.io, kind: User, name: carol}}]\n\
             ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n\
             metadata: {{name: configmap-reader, namespace: {APPS}}}\n\
             rules: [{{apiGroups: [''], resources: [configmaps], verbs: [get, list]}}]\n\
             ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
             metadata: {{name: dev-team-reads-configmaps, namespace: {APPS}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}}\n\
             subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: Group, name: dev-team}}]\n"
        ))
        .await
        .expect("RBAC");
    let keys_as = |identity: Identity| {
        let cluster = &cluster;
        async move {
            let client = cluster.client_as(&identity).await.expect("client");
            Api::<ApiKey>::namespaced(client, APPS)
        }
    };
    let alice = keys_as(Identity::user("alice", &["dev-team"])).await;
    let bob = keys_as(Identity::user("bob", &["dev-team"])).await;
    let carol = keys_as(Identity::user("carol", &[])).await;
    let personal = |name: &str, username: &str| -> ApiKey {
        serde_json::from_value(json!({
            "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": name, "namespace": APPS},
            "spec": {"tokens": [{"name": "cli", "prefix": "alice_"}],
                "owner": {"username": username, "groups": ["dev-team"]}},
        }))
        .expect("ApiKey")
    };

    // bob cannot create alice's key (a fresh name per attempt while the policy loads).
    let attempt = AtomicU32::new(0);
    eventually("the owner policy to refuse bob's key for alice", || async {
        let name = format!("bobs-{}", attempt.fetch_add(1, Ordering::Relaxed));
        bob.create(&PostParams::default(), &personal(&name, "alice"))
            .await
            .err()
            .filter(|e| e.to_string().contains("for someone else"))
            .map(drop)
    })
    .await;
    alice
        .create(&PostParams::default(), &personal("alices", "alice"))
        .await
        .expect("alice creates her personal key");
    // The minted token, read by alice herself: the key's Role lets its owner, and only its
    // owner, get the Secret (bob edits ApiKeys beside her, carol administers them).
    let alices_secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
        cluster
            .client_as(&Identity::user("alice", &["dev-team"]))
            .await
            .expect("client"),
        APPS,
    );
    let token = eventually("alice to read her key's token", || async {
        let secret = alices_secrets.get("alices").await.ok()?;
        String::from_utf8(secret.data?.get("cli")?.0.clone()).ok()
    })
    .await;
    for other in ["bob", "carol"] {
        assert!(
            !can_i_as(&admin, other, &["get", "secret/alices", "-n", APPS]),
            "{other} may not read alice's key"
        );
    }

    // A kubeconfig holding nothing but the key's token.
    let mut config = kube::config::Kubeconfig::read_from(&admin).expect("admin kubeconfig");
    for user in &mut config.auth_infos {
        user.auth_info = Some(serde_json::from_value(json!({"token": token})).expect("token"));
    }
    let as_key = dir.path().join("alices-key.kubeconfig");
    std::fs::write(&as_key, serde_saphyr::to_string(&config).expect("YAML")).expect("write");

    let (ok, whoami) = kubectl(&as_key, &["auth", "whoami", "-o", "json"]);
    assert!(ok, "{whoami}");
    let whoami: Value = serde_json::from_str(&whoami).expect("JSON");
    let user = &whoami["status"]["userInfo"];
    assert_eq!(user["username"], "alice", "{whoami}");
    let groups: Vec<&str> = user["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(groups.contains(&"dev-team"), "{groups:?}");
    assert!(
        !groups.iter().any(|g| g.starts_with("keysmith:")),
        "{groups:?}"
    );
    assert_eq!(
        user["extra"]["keysmith.dev/apikey"],
        json!([format!("{APPS}/alices")])
    );

    // Exactly alice's RBAC: her group's ConfigMaps, nothing else.
    let may = |args: &[&str]| kubectl(&as_key, args).0;
    assert!(may(&["get", "configmaps", "-n", APPS]));
    assert!(!may(&["get", "configmaps", "-n", OTHER]));
    assert!(!may(&["get", "secrets", "-n", APPS]));
    // Her RBAC changes, and so does the key's power: the binding goes, and a new one comes.
    cluster
        .client()
        .await
        .map(|c| Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(c, APPS))
        .expect("admin")
        .delete("dev-team-reads-configmaps", &DeleteParams::default())
        .await
        .expect("unbind");
    eventually("alice's key to lose the ConfigMaps with her", || async {
        (!may(&["get", "configmaps", "-n", APPS])).then_some(())
    })
    .await;
    cluster
        .apply_yaml(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
             metadata: {{name: alice-reads-configmaps, namespace: {APPS}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}}\n\
             subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}}]\n"
        ))
        .await
        .expect("bind alice");
    eventually("alice's key to read ConfigMaps again with her", || async {
        may(&["get", "configmaps", "-n", APPS]).then_some(())
    })
    .await;

    // Suspending the key suspends its power at the API server (failures are not cached), and
    // lifting the suspension restores it.
    let set = |patch: Value| {
        let carol = &carol;
        async move {
            carol
                .patch("alices", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("carol edits alice's key");
        }
    };
    let whoami = |kubeconfig: PathBuf| async move { kubectl(&kubeconfig, &["auth", "whoami"]) };
    set(json!({"spec": {"disabled": true}})).await;
    eventually(
        "the API server to refuse the disabled key's token",
        || async {
            let (ok, printed) = whoami(as_key.clone()).await;
            (!ok && printed.contains("Unauthorized")).then_some(())
        },
    )
    .await;
    set(json!({"spec": {"disabled": false}})).await;
    eventually("the enabled key's token to be alice again", || async {
        let (ok, printed) = whoami(as_key.clone()).await;
        (ok && printed.contains("alice")).then_some(())
    })
    .await;

    // A rotation without overlap ends the old token's power and hands the new one alice's.
    set(json!({"spec": {"rotation": {"trigger": "rotated", "overlap": "0"}}})).await;
    let rotated = eventually("the rotated token in the Secret", || async {
        let secret = cluster.get("v1", "Secret", APPS, "alices").await?;
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(secret).ok()?;
        let value = String::from_utf8(secret.data?.get("cli")?.0.clone()).ok()?;
        (value != token).then_some(value)
    })
    .await;
    eventually("the API server to refuse the replaced token", || async {
        let (ok, printed) = whoami(as_key.clone()).await;
        (!ok && printed.contains("Unauthorized")).then_some(())
    })
    .await;
    for user in &mut config.auth_infos {
        user.auth_info = Some(serde_json::from_value(json!({"token": rotated})).expect("token"));
    }
    std::fs::write(&as_key, serde_saphyr::to_string(&config).expect("YAML")).expect("write");
    let (ok, printed) = whoami(as_key.clone()).await;
    assert!(ok && printed.contains("alice"), "{printed}");

    // carol, who reads no Secret, revokes alice's key.
    let (_, can_read) = kubectl(
        &admin,
        &[
            "auth", "can-i", "get", "secrets", "-n", APPS, "--as", "carol",
        ],
    );
    assert_eq!(can_read.trim(), "no");
    carol
        .delete("alices", &DeleteParams::default())
        .await
        .expect("carol deletes alice's key");
    // Within the API server's token cache (successes are kept about 10 s), the token is no one.
    eventually(
        "the API server to refuse the deleted key's token",
        || async {
            let (ok, printed) = kubectl(&as_key, &["auth", "whoami"]);
            (!ok && printed.contains("Unauthorized")).then_some(())
        },
    )
    .await;

    stop.trigger();
    for process in running {
        process
            .await
            .expect("joins")
            .expect("the process stops cleanly");
    }
}

/// Who may create and edit ApiKeys in [`APPS`]: `editor` cannot read Secrets there, `owner` can,
/// `partial` only the Secrets `wide`, `wide-envoy-gateway` and `wide-agentgateway`.
const ACCESS_USERS: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: apikeys-edit, namespace: apps}
rules:
  - {apiGroups: [keysmith.dev], resources: [apikeys], verbs: [get, list, watch, create, update, patch, delete]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: secrets-read, namespace: apps}
rules:
  - {apiGroups: [""], resources: [secrets], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: apikeys-edit, namespace: apps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: apikeys-edit}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: editor}
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: owner}
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: partial}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: wide-read, namespace: apps}
rules:
  - {apiGroups: [""], resources: [secrets], verbs: [get], resourceNames: [wide, wide-envoy-gateway, wide-agentgateway]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: wide-read, namespace: apps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: wide-read}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: partial}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: secrets-read, namespace: apps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: secrets-read}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: owner}
"#;

/// An ApiKey of [`APPS`] named `name` whose access list names `users` (none: no list).
fn access_key(name: &str, users: Option<&[&str]>) -> Value {
    let mut key = json!({
        "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": name, "namespace": APPS},
        "spec": {"tokens": [{"name": "delivery"}]},
    });
    if let Some(users) = users {
        key["spec"]["access"] = json!({"users": users});
    }
    key
}

/// Server-side apply `key` as `user`.
async fn apply_as(cluster: &Cluster, user: &str, key: &Value) -> Result<(), kube::Error> {
    apply_as_with(cluster, user, key, false).await
}

/// [`apply_as`], only through admission when `dry_run`.
async fn apply_as_with(
    cluster: &Cluster,
    user: &str,
    key: &Value,
    dry_run: bool,
) -> Result<(), kube::Error> {
    let client = cluster
        .client_as(&Identity::user(user, &[]))
        .await
        .expect("a client");
    let name = str_at(key, "/metadata/name");
    let mut params = PatchParams::apply(user);
    params.dry_run = dry_run;
    Api::<ApiKey>::namespaced(client, APPS)
        .patch(name, &params, &Patch::Apply(key))
        .await
        .map(drop)
}

/// Whether `user` may read Secret `name` of [`APPS`]: a real read.
async fn reads_secret(cluster: &Cluster, user: &str, name: &str) -> bool {
    let client = cluster
        .client_as(&Identity::user(user, &[]))
        .await
        .expect("a client");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client, APPS);
    match secrets.get(name).await {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 403 => false,
        Err(e) => panic!("reading Secret {name} as {user}: {e}"),
    }
}

/// Issue 28, access lists, on the real API server with the chart's admission policy and the
/// controller under its rendered rights: a user who may edit ApiKeys but not read Secrets cannot
/// set an access list (nor add themselves to one); a listed user reads the key's Secret and
/// nobody else does; removing a name removes the access; an edited Role is put back; deleting
/// the key deletes the Role and RoleBinding. The controller is denied nothing and uses every
/// right the access rules add, and holds no `bind` or `escalate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lists_let_only_readers_grant_reading_and_grant_exactly_the_listed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Install {
        cluster,
        objects,
        admin,
    } = install(&["accessLists.enabled=true"], dir.path()).await;
    let controller_sa = service_account_of(&objects, "controller");
    let deployment = of_kind(&objects, "Deployment")
        .find(|d| d["spec"]["template"]["spec"]["containers"][0]["args"][0] == "controller")
        .expect("the controller's Deployment");
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    let access_lists = args
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == "--access-lists"));
    assert!(access_lists, "the chart sets --access-lists: {args}");
    cluster.apply_yaml(ACCESS_USERS).await.expect("users");
    let process = process(
        Some(ControllerPart {
            access_lists,
            ..controller_part(&cluster, controller_sa).await
        }),
        None,
    )
    .await;
    let (stop, shutdown) = Shutdown::new();
    components::preflight(&process)
        .await
        .expect("the rendered RBAC suffices to start");
    let running = tokio::spawn(components::serve(process, shutdown));

    // No escalation: the editor may write ApiKeys, but not grant reading their Secrets. The API
    // server loads a new policy in the background: a dry run (admission runs, nothing is
    // stored) shows when it is in force.
    let escalation = access_key("shared", Some(&["editor"]));
    eventually("the access-list policy to be in force", || async {
        apply_as_with(&cluster, "editor", &escalation, true)
            .await
            .is_err_and(|e| e.to_string().contains("spec.access"))
            .then_some(())
    })
    .await;
    let refused = apply_as(&cluster, "editor", &escalation)
        .await
        .expect_err("the policy refuses an access list from someone who cannot read the Secret");
    assert!(
        refused
            .to_string()
            .contains("spec.access: only someone who may get Secret shared"),
        "{refused}"
    );
    apply_as(&cluster, "editor", &access_key("plain", None))
        .await
        .expect("the editor may create a key without an access list");

    apply_as(
        &cluster,
        "owner",
        &access_key("shared", Some(&["alice", "carol"])),
    )
    .await
    .expect("the owner reads the Secret, so may grant reading it");
    let role = "shared.keysmith-access";
    eventually("alice to read the Secret", || async {
        reads_secret(&cluster, "alice", "shared")
            .await
            .then_some(())
    })
    .await;
    eventually("status.access to name alice", || async {
        let key = cluster
            .get("keysmith.dev/v1alpha1", "ApiKey", APPS, "shared")
            .await?;
        let access = &key["status"]["access"];
        (access["role"] == role && access["subjects"][0]["name"] == "alice").then_some(())
    })
    .await;
    assert!(!reads_secret(&cluster, "bob", "shared").await);
    assert!(
        !reads_secret(&cluster, "alice", "plain").await,
        "only the key's Secrets"
    );
    let secret = ["get", "secret/shared", "-n", APPS];
    assert!(can_i_as(&admin, "alice", &secret));
    assert!(!can_i_as(&admin, "bob", &secret));
    assert!(!can_i_as(
        &admin,
        "alice",
        &["get", "secret/plain", "-n", APPS]
    ));
    assert!(!can_i_as(&admin, "alice", &["list", "secrets", "-n", APPS]));

    // Nor may the editor add a name (themselves) to the owner's list.
    let refused = apply_as(
        &cluster,
        "editor",
        &access_key("shared", Some(&["alice", "carol", "editor"])),
    )
    .await
    .expect_err("the editor cannot add to a list");
    assert!(refused.to_string().contains("spec.access"), "{refused}");

    // The published Secrets are asked for too (Kong's, many, as every Secret of the namespace),
    // within the API server's CEL budget for the largest key (8 slots, both gateways).
    let mut wide = access_key("wide", Some(&["alice"]));
    wide["spec"]["tokens"] = (1..=8).map(|i| json!({"name": format!("s{i}")})).collect();
    wide["spec"]["publish"] = json!([{"envoyGateway": {}}, {"kong": {"consumer": "shop"}}]);
    // Dry runs: admission decides, and no key publishing to a Kong this cluster lacks is stored.
    let refused = apply_as_with(&cluster, "partial", &wide, true)
        .await
        .expect_err("a reader of the key's own Secrets only may not grant the Kong credentials");
    assert!(
        refused
            .to_string()
            .contains("only someone who may get every Secret of the namespace"),
        "{refused}"
    );
    apply_as_with(&cluster, "owner", &wide, true)
        .await
        .expect("the owner reads every Secret of the namespace");
    // The agentgateway Secret is asked for by name: its name could be any Secret's.
    wide["spec"]["publish"] = json!([{"envoyGateway": {}}, {"agentgateway": {}}]);
    apply_as_with(&cluster, "partial", &wide, true)
        .await
        .expect("partial reads the key's own Secrets");
    wide["spec"]["publish"] = json!([{"agentgateway": {"secretName": "plain"}}]);
    let refused = apply_as_with(&cluster, "partial", &wide, true)
        .await
        .expect_err("naming another Secret as the agentgateway one grants nothing");
    assert!(
        refused
            .to_string()
            .contains("only someone who may get the key's agentgateway Secret"),
        "{refused}"
    );

    // Removing a name removes the access.
    apply_as(&cluster, "owner", &access_key("shared", Some(&["carol"])))
        .await
        .expect("the owner edits the list");
    eventually("alice to lose the Secret", || async {
        (!reads_secret(&cluster, "alice", "shared").await).then_some(())
    })
    .await;
    assert!(reads_secret(&cluster, "carol", "shared").await);
    assert!(!can_i_as(&admin, "alice", &secret));
    assert!(can_i_as(&admin, "carol", &secret));

    // A hand edit of the Role is put back.
    cluster
        .apply_object(&json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": role, "namespace": APPS},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}],
        }))
        .await
        .expect("an edit of the Role");
    eventually("the Role to be put back", || async {
        let stored = cluster
            .get("rbac.authorization.k8s.io/v1", "Role", APPS, role)
            .await?;
        let rule = &stored["rules"][0];
        (rule["verbs"] == json!(["get"]) && rule["resourceNames"] == json!(["shared"]))
            .then_some(())
    })
    .await;

    // Deleting the key deletes the Role and the RoleBinding.
    Api::<ApiKey>::namespaced(cluster.client().await.expect("admin client"), APPS)
        .delete("shared", &Default::default())
        .await
        .expect("delete");
    eventually(
        "the key, its Role and its RoleBinding to be gone",
        || async {
            let rbac = "rbac.authorization.k8s.io/v1";
            let stored = cluster.get(rbac, "Role", APPS, role).await;
            let binding = cluster.get(rbac, "RoleBinding", APPS, role).await;
            let key = cluster
                .get("keysmith.dev/v1alpha1", "ApiKey", APPS, "shared")
                .await;
            (stored.is_none() && binding.is_none() && key.is_none()).then_some(())
        },
    )
    .await;
    stop.trigger();
    running
        .await
        .expect("joins")
        .expect("the process stops cleanly");

    let (ok, denied) = used(&cluster, controller_sa);
    assert!(denied.is_empty(), "the controller was denied: {denied:#?}");
    let access_rules: Value = serde_saphyr::from_str(include_str!(
        "../../charts/keysmith/files/controller-access-rules.yaml"
    ))
    .expect("rules parse");
    let unused: Vec<_> = rbac::granted(&access_rules)
        .difference(&ok)
        .cloned()
        .collect();
    assert!(unused.is_empty(), "access rules never used: {unused:#?}");
    // Granting `get` on a Secret takes holding it, not `bind` or `escalate`.
    assert_can_i(
        &admin,
        &[
            (
                controller_sa,
                &[
                    "create",
                    "rolebindings.rbac.authorization.k8s.io",
                    "-n",
                    APPS,
                ],
                true,
            ),
            (
                controller_sa,
                &["bind", "roles.rbac.authorization.k8s.io", "-n", APPS],
                false,
            ),
            (
                controller_sa,
                &["escalate", "roles.rbac.authorization.k8s.io", "-n", APPS],
                false,
            ),
            (
                controller_sa,
                &["create", "clusterrolebindings.rbac.authorization.k8s.io"],
                false,
            ),
        ],
    );
}
