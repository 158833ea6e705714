//! The chart through the pinned real tools (`testenv/install helm promtool`): `helm lint --strict`
//! and `helm template` for the default values, `mode: split` and every optional value, each on its
//! own and all together, asserting what each renders; the rendered PrometheusRule through
//! `promtool check rules` and the unit tests in `tests/alerts/alerts.test.yaml`.
//!
//! `tests/shipped/chart.rs` checks the chart's files without Helm.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use keysmith_testenv::binaries::binary;
use serde_json::{Value, json};

use crate::rendered::{CHART, NAMESPACE, RELEASE, of_kind, str_at};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The oldest Kubernetes Chart.yaml accepts (`kubeVersion: >=1.25.0-0`): every values case must
/// render there, not only for the Kubernetes version the pinned helm assumes.
const KUBE_VERSION: &str = "v1.25.0";
/// The oldest Kubernetes with the verifier's status policy, where split mode renders with its
/// defaults: for renders that are not about old versions.
const POLICY_KUBE_VERSION: &str = "v1.30.0";
const WATCH_NAMESPACE: &str = "apps";
const SELECTOR: &str = "shard=a";
const TRUSTED_PROXY: &str = "10.244.0.0/16";
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const IMAGE: &str = "ghcr.io/keysmith-dev/keysmith";
/// What the `flags` case pulls the image from instead: a mirror's registry and path.
const REGISTRY: &str = "registry.example.com";
const MIRRORED: &str = "mirror/keysmith";
const LOG_LEVEL: &str = "info,keysmith::verifier=debug";
const ALERTS: [&str; 3] = [
    "KeysmithReconcileErrors",
    "KeysmithTokenExpiringWithoutRotation",
    "KeysmithVerifierNotReady",
];
/// The rule file name `tests/alerts/alerts.test.yaml` loads.
const RULES_FILE: &str = "keysmith-rules.yaml";
const ALERT_TESTS: &str = "tests/alerts/alerts.test.yaml";

/// Runs a pinned tool, asserts that it succeeds, and returns its standard output.
fn run(tool: &str, args: &[&str]) -> String {
    let output = Command::new(binary(tool))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{tool} {} failed ({}):\n{stdout}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The three Deployment value blocks, each of which takes the same pod options.
const COMPONENTS: [&str; 3] = ["combined", "controller", "verifier"];
/// What the `extras` case appends to every component's arguments.
const EXTRA_ARG: &str = "--max-connections=4096";
const PRIORITY_CLASS: &str = "keysmith-critical";
/// Namespaces and CIDR the `network_peers` case admits to the verification API.
const GATEWAY_NAMESPACES: [&str; 2] = ["ingress-nginx", "envoy-gateway-system"];
const GATEWAY_CIDR: &str = "192.0.2.0/24";
const MONITORING_NAMESPACE: &str = "monitoring";
const CRD_NAME: &str = "apikeys.keysmith.dev";
const CRD_FILE: &str = "crds/apikeys.keysmith.dev.yaml";
const DASHBOARD_FILE: &str = "charts/keysmith/dashboards/keysmith.json";

/// The pod options the `extras` case sets on every component, as `--set-json` values.
fn extras() -> Vec<(&'static str, Value)> {
    vec![
        ("extraEnv", json!([{"name": "EXTRA", "value": "1"}])),
        ("extraArgs", json!([EXTRA_ARG])),
        ("extraVolumes", json!([{"name": "extra", "emptyDir": {}}])),
        (
            "extraVolumeMounts",
            json!([{"name": "extra", "mountPath": "/extra"}]),
        ),
        // The component label collides with the selector's: the selector must win.
        (
            "podLabels",
            json!({"team": "platform", "app.kubernetes.io/component": "other"}),
        ),
        ("podAnnotations", json!({"example.com/owner": "platform"})),
        ("priorityClassName", json!(PRIORITY_CLASS)),
        ("nodeSelector", json!({"kubernetes.io/os": "linux"})),
        (
            "tolerations",
            json!([{"key": "dedicated", "operator": "Exists"}]),
        ),
        (
            "affinity",
            json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [
                    {"key": "pool", "operator": "In", "values": ["system"]}]}}]}}),
        ),
    ]
}

fn custom_spread() -> Value {
    json!([{
        "maxSkew": 2,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "keysmith"}},
    }])
}

fn service_account_annotations() -> Value {
    json!({"iam.example.com/role": "keysmith"})
}

/// The `labels` case's commonLabels; the monitors and the rule repeat one of them in their own.
fn common_labels() -> Value {
    json!({"team": "platform", "release": "prometheus"})
}

/// What the `labels` case puts on the Services; the component label cannot change theirs.
fn service_labels() -> Value {
    json!({"exposure": "internal", "app.kubernetes.io/component": "other"})
}

fn service_annotations() -> Value {
    json!({"service.example.com/internal": "true"})
}

/// The `rollout` case's probe overrides (merged over the chart's) and startup probe, per
/// component.
fn probe_overrides() -> [(&'static str, Value); 2] {
    [
        ("livenessProbe", json!({"timeoutSeconds": 5})),
        (
            "startupProbe",
            json!({"httpGet": {"path": "/healthz", "port": "metrics"}, "failureThreshold": 30}),
        ),
    ]
}

/// The `extra_objects` case: an object and a YAML string, both using the chart's context.
fn extra_objects() -> Value {
    json!([
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "{{ .Release.Name }}-extra", "namespace": "{{ .Release.Namespace }}"},
         "data": {"verifier": "{{ include \"keysmith.fullname\" . }}-verifier"}},
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-extra-text\n",
    ])
}

/// One set of chart values: the mode and which optional values differ from their defaults.
#[derive(Clone, Copy, Debug, Default)]
struct Values {
    /// `mode: combined`; the default is split.
    combined: bool,
    service_monitor: bool,
    prometheus_rule: bool,
    /// `watchNamespace`: Roles in that namespace instead of ClusterRoles.
    watch_namespace: bool,
    /// `selector`, `trustedProxies`, `acceptNamespaces`, `image.digest`, `imagePullSecrets`: flags
    /// and pod specs only.
    flags: bool,
    /// One replica of the combined or the verifier Deployment: no PodDisruptionBudget for it.
    single_replicas: bool,
    no_pdb: bool,
    no_user_roles: bool,
    aggregation: bool,
    /// `crds.enabled: false`: no CRD in the templates.
    no_crds: bool,
    /// `crds.keep: false`: the CRD without `helm.sh/resource-policy: keep`.
    no_crd_keep: bool,
    /// Every pod option of [`extras`] and ServiceAccount annotations, on every component.
    extras: bool,
    /// [`custom_spread`] instead of the default spread across nodes, on every component.
    custom_spread: bool,
    /// runAsUser and runAsGroup removed (null) from every security context, as on OpenShift.
    openshift: bool,
    /// `verifier.autoscaling.enabled`: a HorizontalPodAutoscaler in split mode.
    autoscaling: bool,
    no_network_policy: bool,
    /// The verification API admits [`GATEWAY_NAMESPACES`], a label selector and [`GATEWAY_CIDR`].
    network_peers: bool,
    /// `grafanaDashboard.enabled`.
    dashboard: bool,
    /// `rbac.create: false`: no Role, ClusterRole or binding for Keysmith's own accounts.
    no_rbac: bool,
    /// Every component's `serviceAccount.create: false`, running as `existing-<component>`.
    existing_accounts: bool,
    /// `podMonitor.enabled` in [`MONITORING_NAMESPACE`], with every scrape option.
    pod_monitor: bool,
    /// [`common_labels`], and the Services' [`service_labels`] and [`service_annotations`].
    labels: bool,
    /// Every component's `strategy: Recreate` and [`probe_overrides`], `revisionHistoryLimit: 3`
    /// and the PodDisruptionBudgets' `maxUnavailable: 1`.
    rollout: bool,
    /// [`extra_objects`].
    extra_objects: bool,
}

/// A Deployment the chart should render.
struct Workload {
    name: &'static str,
    component: &'static str,
    subcommand: &'static str,
    account: String,
    /// `spec.replicas`; None when a HorizontalPodAutoscaler owns it.
    replicas: Option<u64>,
    /// The fewest and the most pods there may be.
    min: u64,
    max: u64,
}

impl Values {
    /// For each mode: the defaults, each optional value on its own (or off, for those on by
    /// default), and every optional value on together.
    fn cases() -> Vec<Values> {
        let toggles: [fn(&mut Values); 22] = [
            |v| v.service_monitor = true,
            |v| v.prometheus_rule = true,
            |v| v.watch_namespace = true,
            |v| v.flags = true,
            |v| v.single_replicas = true,
            |v| v.no_pdb = true,
            |v| v.no_user_roles = true,
            |v| v.aggregation = true,
            |v| v.no_crds = true,
            |v| v.no_crd_keep = true,
            |v| v.extras = true,
            |v| v.custom_spread = true,
            |v| v.openshift = true,
            |v| v.autoscaling = true,
            |v| v.no_network_policy = true,
            |v| v.network_peers = true,
            |v| v.no_rbac = true,
            |v| v.existing_accounts = true,
            |v| v.pod_monitor = true,
            |v| v.labels = true,
            |v| v.rollout = true,
            |v| v.extra_objects = true,
        ];
        let mut cases = Vec::new();
        for combined in [false, true] {
            let defaults = Values {
                combined,
                ..Values::default()
            };
            cases.push(defaults);
            for toggle in toggles {
                let mut values = defaults;
                toggle(&mut values);
                // The schema refuses the verifier's autoscaler in mode combined (below).
                if !(values.combined && values.autoscaling) {
                    cases.push(values);
                }
            }
            cases.push(Values {
                service_monitor: true,
                prometheus_rule: true,
                watch_namespace: true,
                flags: true,
                aggregation: true,
                extras: true,
                openshift: true,
                autoscaling: !combined,
                network_peers: true,
                dashboard: true,
                existing_accounts: true,
                labels: true,
                rollout: true,
                extra_objects: true,
                ..defaults
            });
        }
        cases
    }

    fn split(&self) -> bool {
        !self.combined
    }

    /// `--set` and `--set-json` arguments for helm.
    fn set_args(&self) -> Vec<String> {
        let mut sets = Vec::new();
        let mut set = |on: bool, assignments: &[&str]| {
            if on {
                for assignment in assignments {
                    sets.extend(["--set".to_string(), assignment.to_string()]);
                }
            }
        };
        set(self.combined, &["mode=combined"]);
        // KUBE_VERSION predates the verifier's status policy, and split mode renders there only
        // when told to go without it.
        set(self.split(), &["verifier.statusPolicy=false"]);
        set(self.service_monitor, &["serviceMonitor.enabled=true"]);
        set(self.prometheus_rule, &["prometheusRule.enabled=true"]);
        set(
            self.watch_namespace,
            &[&format!("watchNamespace={WATCH_NAMESPACE}")],
        );
        set(
            self.flags,
            &[
                &format!("selector={SELECTOR}"),
                &format!("trustedProxies={{{TRUSTED_PROXY}}}"),
                "acceptNamespaces={tenant-a,tenant-b}",
                "tokenMetrics.maxTokens=50",
                "connections.maxPerPeer=64",
                "maxConcurrentReconciles=16",
                &format!("image.digest={DIGEST}"),
                &format!("image.registry={REGISTRY}"),
                &format!("image.repository={MIRRORED}"),
                "imagePullSecrets[0].name=regcred",
            ],
        );
        set(self.no_rbac, &["rbac.create=false"]);
        set(
            self.pod_monitor,
            &[
                "podMonitor.enabled=true",
                &format!("podMonitor.namespace={MONITORING_NAMESPACE}"),
                "podMonitor.scrapeTimeout=10s",
            ],
        );
        set(
            self.rollout,
            &[
                "revisionHistoryLimit=3",
                "podDisruptionBudget.maxUnavailable=1",
            ],
        );
        set(
            self.single_replicas,
            &["combined.replicas=1", "verifier.replicas=1"],
        );
        set(self.no_pdb, &["podDisruptionBudget.enabled=false"]);
        set(self.no_user_roles, &["userRoles.create=false"]);
        set(
            self.aggregation,
            &["userRoles.aggregateToDefaultRoles=true"],
        );
        set(self.no_crds, &["crds.enabled=false"]);
        set(self.no_crd_keep, &["crds.keep=false"]);
        set(self.autoscaling, &["verifier.autoscaling.enabled=true"]);
        set(
            self.no_network_policy,
            &["verifier.networkPolicy.enabled=false"],
        );
        set(self.dashboard, &["grafanaDashboard.enabled=true"]);
        for component in COMPONENTS {
            // `--set key=null` deletes a default, which is how a user removes one.
            for context in ["podSecurityContext", "securityContext"] {
                for field in ["runAsUser", "runAsGroup"] {
                    set(
                        self.openshift,
                        &[&format!("{component}.{context}.{field}=null")],
                    );
                }
            }
        }
        let mut json_sets = Vec::new();
        for component in COMPONENTS {
            if self.extras {
                json_sets.extend(
                    extras()
                        .into_iter()
                        .map(|(k, v)| (format!("{component}.{k}"), v)),
                );
                json_sets.push((
                    format!("{component}.serviceAccount.annotations"),
                    service_account_annotations(),
                ));
            }
            if self.existing_accounts {
                json_sets.push((
                    format!("{component}.serviceAccount"),
                    json!({"create": false, "name": format!("existing-{component}")}),
                ));
            }
            if self.rollout {
                json_sets.push((format!("{component}.strategy"), json!({"type": "Recreate"})));
                json_sets.extend(
                    probe_overrides()
                        .into_iter()
                        .map(|(probe, v)| (format!("{component}.{probe}"), v)),
                );
            }
            if self.custom_spread {
                json_sets.push((
                    format!("{component}.topologySpreadConstraints"),
                    custom_spread(),
                ));
            }
        }
        if self.network_peers {
            json_sets.extend([
                (
                    "verifier.networkPolicy.allowedNamespaces".to_string(),
                    json!(GATEWAY_NAMESPACES),
                ),
                (
                    "verifier.networkPolicy.namespaceSelector".to_string(),
                    json!({"matchLabels": {"keysmith.dev/verify": "true"}}),
                ),
                (
                    "verifier.networkPolicy.allowedCIDRs".to_string(),
                    json!([GATEWAY_CIDR]),
                ),
            ]);
        }
        if self.flags {
            // A filter with a comma, which `--set` would split.
            json_sets.push(("logLevel".to_string(), json!(LOG_LEVEL)));
        }
        if self.pod_monitor {
            json_sets.extend([
                (
                    "podMonitor.relabelings".to_string(),
                    json!([{"action": "labeldrop", "regex": "pod_template_hash"}]),
                ),
                (
                    "podMonitor.metricRelabelings".to_string(),
                    json!([{"action": "drop", "sourceLabels": ["__name__"], "regex": "go_.*"}]),
                ),
                (
                    "podMonitor.labels".to_string(),
                    json!({"release": "prometheus"}),
                ),
            ]);
        }
        if self.labels {
            json_sets.extend([
                ("commonLabels".to_string(), common_labels()),
                ("service.labels".to_string(), service_labels()),
                ("service.annotations".to_string(), service_annotations()),
                // Repeating a common label must not render a duplicate key.
                (
                    "serviceMonitor.labels".to_string(),
                    json!({"release": "prometheus"}),
                ),
                (
                    "prometheusRule.labels".to_string(),
                    json!({"release": "prometheus"}),
                ),
            ]);
        }
        if self.extra_objects {
            json_sets.push(("extraObjects".to_string(), extra_objects()));
        }
        for (key, value) in json_sets {
            sets.extend(["--set-json".to_string(), format!("{key}={value}")]);
        }
        sets
    }

    /// The Deployments the chart should render.
    fn deployments(&self) -> Vec<Workload> {
        let verifier_replicas = if self.single_replicas { 1 } else { 2 };
        let account = |component: &str, default: &str| {
            if self.existing_accounts {
                format!("existing-{component}")
            } else {
                default.to_string()
            }
        };
        if self.combined {
            return vec![Workload {
                name: "keysmith",
                component: "combined",
                subcommand: "run",
                account: account("combined", "keysmith"),
                replicas: Some(verifier_replicas),
                min: verifier_replicas,
                max: verifier_replicas,
            }];
        }
        let controller = Workload {
            name: "keysmith-controller",
            component: "controller",
            subcommand: "controller",
            account: account("controller", "keysmith-controller"),
            replicas: Some(2),
            min: 2,
            max: 2,
        };
        let verifier = Workload {
            name: "keysmith-verifier",
            component: "verifier",
            subcommand: "verifier",
            account: account("verifier", "keysmith-verifier"),
            replicas: Some(verifier_replicas),
            min: verifier_replicas,
            max: verifier_replicas,
        };
        // The chart's autoscaling defaults: minReplicas 2, maxReplicas 10.
        let verifier = if self.autoscaling {
            Workload {
                replicas: None,
                min: 2,
                max: 10,
                ..verifier
            }
        } else {
            verifier
        };
        vec![controller, verifier]
    }

    /// The Deployment that serves the verification API.
    fn verifier(&self) -> Workload {
        self.deployments().pop().expect("a Deployment")
    }

    /// Every object the chart should render, as (kind, namespace or "" when cluster-scoped, name).
    fn expected_objects(&self) -> BTreeSet<Object> {
        let mut objects = BTreeSet::new();
        let mut add = |kind: &str, namespace: &str, name: &str| {
            objects.insert((kind.to_string(), namespace.to_string(), name.to_string()));
        };
        for workload in self.deployments() {
            add("Deployment", NAMESPACE, workload.name);
            if !self.existing_accounts {
                add("ServiceAccount", NAMESPACE, &workload.account);
            }
            if !self.no_pdb && workload.min > 1 {
                add("PodDisruptionBudget", NAMESPACE, workload.name);
            }
        }
        add("Service", NAMESPACE, "keysmith-verifier");
        if self.split() {
            add("Service", NAMESPACE, "keysmith-controller-metrics");
        }
        if !self.no_rbac {
            for name in ["keysmith-controller", "keysmith-verifier"] {
                if self.watch_namespace {
                    add("Role", WATCH_NAMESPACE, name);
                    add("RoleBinding", WATCH_NAMESPACE, name);
                } else {
                    add("ClusterRole", "", name);
                    add("ClusterRoleBinding", "", name);
                }
            }
            add("Role", NAMESPACE, "keysmith-leader-election");
            add("RoleBinding", NAMESPACE, "keysmith-leader-election");
        }
        if !self.no_user_roles {
            add("ClusterRole", "", "keysmith-apikeys-edit");
            add("ClusterRole", "", "keysmith-apikeys-view");
        }
        if self.service_monitor {
            add("ServiceMonitor", NAMESPACE, RELEASE);
        }
        if self.prometheus_rule {
            add("PrometheusRule", NAMESPACE, RELEASE);
        }
        if !self.no_crds {
            add("CustomResourceDefinition", "", CRD_NAME);
        }
        if !self.no_network_policy {
            add("NetworkPolicy", NAMESPACE, "keysmith-verifier");
        }
        if self.autoscaling && self.split() {
            add("HorizontalPodAutoscaler", NAMESPACE, "keysmith-verifier");
        }
        if self.dashboard {
            add("ConfigMap", NAMESPACE, "keysmith-dashboard");
        }
        if self.pod_monitor {
            add("PodMonitor", MONITORING_NAMESPACE, RELEASE);
        }
        if self.extra_objects {
            add("ConfigMap", NAMESPACE, "keysmith-extra");
            // A manifest without a namespace goes to the release namespace on install.
            add("ConfigMap", "", "keysmith-extra-text");
        }
        objects
    }
}

/// (kind, namespace or "" when cluster-scoped, name)
type Object = (String, String, String);

/// The object's identity; panics unless it has a non-empty apiVersion, kind and metadata.name.
fn identity(object: &Value) -> Object {
    for pointer in ["/apiVersion", "/kind", "/metadata/name"] {
        assert!(
            !str_at(object, pointer).is_empty(),
            "{pointer} is empty in {object}"
        );
    }
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    (
        str_at(object, "/kind").to_string(),
        namespace.to_string(),
        str_at(object, "/metadata/name").to_string(),
    )
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// Whether every label of `selector` is on `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("a selector is a map");
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The names of the Deployments whose pods `selector` selects.
fn selected_deployments<'a>(objects: &'a [Value], selector: &Value) -> Vec<&'a str> {
    of_kind(objects, "Deployment")
        .filter(|d| selects(selector, &d["spec"]["template"]["metadata"]["labels"]))
        .map(|d| str_at(d, "/metadata/name"))
        .collect()
}

/// What `helm template` prints for the release in `kube_version` with these extra arguments.
fn helm_template<'a>(kube_version: &'a str, extra: impl IntoIterator<Item = &'a str>) -> String {
    let mut args = vec![
        "template",
        RELEASE,
        CHART,
        "--namespace",
        NAMESPACE,
        "--kube-version",
        kube_version,
    ];
    args.extend(extra);
    run("helm", &args)
}

fn render(values: &Values) -> Vec<Value> {
    let sets = values.set_args();
    let text = helm_template(KUBE_VERSION, sets.iter().map(String::as_str));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{values:?}: helm template output is not YAML: {e}\n{text}"))
}

/// Every case of [`Values::cases`] with what `helm template` renders for it, rendered once.
fn renders() -> &'static [(Values, Vec<Value>)] {
    static RENDERS: OnceLock<Vec<(Values, Vec<Value>)>> = OnceLock::new();
    RENDERS.get_or_init(|| {
        Values::cases()
            .into_iter()
            .map(|values| (values, render(&values)))
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// helm lint

#[test]
fn helm_lint_strict_passes_for_every_values_case() {
    for values in Values::cases() {
        let sets = values.set_args();
        let mut args = vec![
            "lint",
            CHART,
            "--strict",
            "--namespace",
            NAMESPACE,
            "--kube-version",
            KUBE_VERSION,
        ];
        args.extend(sets.iter().map(String::as_str));
        let out = run("helm", &args);
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{values:?}: {out}"
        );
    }
}

/// The lint above is only worth something if lint checks the values: the schema makes it fail,
/// naming the value at fault, also where values only conflict with each other.
#[test]
fn helm_lint_rejects_values_the_schema_forbids() {
    for (set, complaint) in [
        ("mode=both", "at '/mode'"),
        ("verifier.replicas=0", "at '/verifier/replicas'"),
        ("typo=true", "'typo' not allowed"),
        ("combined.extraArgs=--flag", "at '/combined/extraArgs'"),
        (
            "verifier.autoscaling.maxReplicas=0",
            "at '/verifier/autoscaling/maxReplicas'",
        ),
        // Ignored until now: every combined pod also runs the controller.
        (
            "mode=combined,verifier.autoscaling.enabled=true",
            "at '/verifier/autoscaling/enabled': value must be false",
        ),
        (
            "podDisruptionBudget.minAvailable=1,podDisruptionBudget.maxUnavailable=1",
            "at '/podDisruptionBudget/minAvailable': got number, want null",
        ),
        (
            "podDisruptionBudget.maxUnavailable=1/2",
            "at '/podDisruptionBudget/maxUnavailable'",
        ),
        (
            "controller.serviceAccount.create=false",
            "at '/controller/serviceAccount/name': minLength",
        ),
        (
            "usage.certManager.enabled=true",
            "at '/usage/certManager/issuerRef/name': minLength",
        ),
        (
            "podMonitor.enabled=true,serviceMonitor.enabled=true",
            "at '/serviceMonitor/enabled': value must be false",
        ),
        (
            "commonLabels.app\\.kubernetes\\.io/component=other",
            "at '/commonLabels/app.kubernetes.io~1component': false schema",
        ),
        ("logLevel=info debug", "at '/logLevel'"),
    ] {
        let output = Command::new(binary("helm"))
            .args(["lint", CHART, "--strict", "--kube-version", KUBE_VERSION])
            .args(["--set", set])
            .output()
            .expect("helm");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            !output.status.success(),
            "--set {set} passed lint:\n{stdout}"
        );
        assert!(
            stdout.contains(complaint),
            "--set {set}: lint does not say {complaint}:\n{stdout}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// helm template

#[test]
fn helm_template_renders_exactly_the_objects_each_values_case_asks_for() {
    for (values, objects) in renders() {
        let identities: Vec<Object> = objects.iter().map(identity).collect();
        let rendered: BTreeSet<Object> = identities.iter().cloned().collect();
        assert_eq!(
            rendered.len(),
            identities.len(),
            "{values:?}: an object is rendered twice"
        );
        assert_eq!(rendered, values.expected_objects(), "{values:?}");
    }
}

/// The Lease the chart gives the controllers of `release` (with [`SELECTOR`] when `sharded`):
/// `<fullname>-controller`, then the first 10 hex digits of the selector's SHA-256.
fn lease_name(release: &str, sharded: bool) -> String {
    let mut name = format!("{release}-controller");
    if sharded {
        name = format!("{name}-{}", &keysmith::token::sha256_hex(SELECTOR)[..10]);
    }
    name
}

#[test]
fn deployments_run_the_subcommand_flags_and_image_of_their_mode() {
    for (values, objects) in renders() {
        for Workload {
            name,
            subcommand,
            account,
            replicas,
            ..
        } in values.deployments()
        {
            let deployment = find(objects, "Deployment", name);
            assert_eq!(
                deployment["spec"]["replicas"],
                json!(replicas),
                "{values:?} {name}"
            );
            let pod = &deployment["spec"]["template"]["spec"];
            assert_eq!(pod["serviceAccountName"], account, "{values:?} {name}");
            let containers = pod["containers"].as_array().expect("containers");
            assert_eq!(containers.len(), 1, "{values:?} {name}");
            let container = &containers[0];

            let mut args = vec![subcommand.to_string(), "--log-format=json".to_string()];
            if values.watch_namespace {
                args.push(format!("--namespace={WATCH_NAMESPACE}"));
            }
            if values.flags {
                args.push(format!("--selector={SELECTOR}"));
            }
            // Controllers elect their leader on a Lease of the release's, and of the shard's.
            if subcommand != "verifier" {
                args.push(format!(
                    "--lease-name={}",
                    lease_name(RELEASE, values.flags)
                ));
                let concurrency = if values.flags { 16 } else { 64 };
                args.push(format!("--max-concurrent-reconciles={concurrency}"));
            }
            if values.flags {
                // Only what serves the verifier API sees client addresses.
                if subcommand != "controller" {
                    args.push(format!("--trusted-proxies={TRUSTED_PROXY}"));
                    args.push("--accept-namespaces=tenant-a,tenant-b".to_string());
                }
            }
            // The cap on per-token series, which ApiKey authors opt into, is the operator's.
            if subcommand != "controller" {
                let tokens = if values.flags { 50 } else { 1000 };
                args.push(format!("--token-metrics-max-tokens={tokens}"));
                // So is one client address's share of the connections.
                let per_peer = if values.flags { 64 } else { 256 };
                args.push(format!("--max-connections-per-peer={per_peer}"));
            }
            if values.extras {
                args.push(EXTRA_ARG.to_string());
            }
            assert_eq!(container["args"], json!(args), "{values:?} {name}");

            let image = if values.flags {
                format!("{REGISTRY}/{MIRRORED}@{DIGEST}")
            } else {
                format!("{IMAGE}:{}", env!("CARGO_PKG_VERSION"))
            };
            assert_eq!(container["image"], image, "{values:?} {name}");
            let pull_secrets = if values.flags {
                json!([{ "name": "regcred" }])
            } else {
                Value::Null
            };
            assert_eq!(pod["imagePullSecrets"], pull_secrets, "{values:?} {name}");
        }
    }
}

#[test]
fn every_referenced_service_account_role_and_binding_is_rendered_and_bound_as_designed() {
    for (values, objects) in renders() {
        let mut rendered: BTreeSet<Object> = objects.iter().map(identity).collect();
        // Accounts the chart is told exist already count as there.
        rendered.extend(values.deployments().into_iter().map(|w| {
            (
                "ServiceAccount".to_string(),
                NAMESPACE.to_string(),
                w.account,
            )
        }));
        let mut bound: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for binding in objects
            .iter()
            .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
        {
            let (_, namespace, name) = identity(binding);
            let role_kind = str_at(binding, "/roleRef/kind");
            assert_eq!(
                binding["roleRef"]["apiGroup"], "rbac.authorization.k8s.io",
                "{values:?} {name}"
            );
            // A RoleBinding grants a Role of its own namespace; a ClusterRole is cluster-scoped.
            let role_namespace = if role_kind == "Role" {
                namespace
            } else {
                String::new()
            };
            let role = (
                role_kind.to_string(),
                role_namespace,
                str_at(binding, "/roleRef/name").to_string(),
            );
            assert!(
                rendered.contains(&role),
                "{values:?}: {name} refers to {role:?}, which is not rendered"
            );
            let subjects = binding["subjects"].as_array().expect("subjects");
            assert!(!subjects.is_empty(), "{values:?}: {name} binds nobody");
            for subject in subjects {
                let account = (
                    str_at(subject, "/kind").to_string(),
                    str_at(subject, "/namespace").to_string(),
                    str_at(subject, "/name").to_string(),
                );
                assert_eq!(account.0, "ServiceAccount", "{values:?} {name}");
                assert!(
                    rendered.contains(&account),
                    "{values:?}: {name} binds {account:?}, which is not rendered"
                );
                bound.entry(account.2).or_default().insert(role.2.clone());
            }
        }

        // Each ServiceAccount gets the roles of what its pods run, and nothing else; none with
        // rbac.create=false.
        let roles =
            |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| n.to_string()).collect() };
        let controller = ["keysmith-controller", "keysmith-leader-election"];
        let workloads = values.deployments();
        let expected: BTreeMap<String, BTreeSet<String>> = if values.no_rbac {
            BTreeMap::new()
        } else if values.split() {
            BTreeMap::from([
                (workloads[0].account.clone(), roles(&controller)),
                (workloads[1].account.clone(), roles(&["keysmith-verifier"])),
            ])
        } else {
            let all = [controller[0], controller[1], "keysmith-verifier"];
            BTreeMap::from([(workloads[0].account.clone(), roles(&all))])
        };
        assert_eq!(bound, expected, "{values:?}");
    }
}

#[test]
fn services_pdbs_and_the_monitors_select_the_pods_they_are_for() {
    for (values, objects) in renders() {
        for deployment in of_kind(objects, "Deployment") {
            assert!(
                selects(
                    &deployment["spec"]["selector"]["matchLabels"],
                    &deployment["spec"]["template"]["metadata"]["labels"]
                ),
                "{values:?}: {} does not select its own pods",
                deployment["metadata"]["name"]
            );
        }

        let verifier = values.verifier().name;
        let mut services = vec![("keysmith-verifier", verifier)];
        if values.split() {
            services.push(("keysmith-controller-metrics", "keysmith-controller"));
        }
        for (service, deployment) in services {
            let service = find(objects, "Service", service);
            let selected = selected_deployments(objects, &service["spec"]["selector"]);
            assert_eq!(
                selected,
                [deployment],
                "{values:?} {}",
                service["metadata"]["name"]
            );
            let container = &find(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
                [0];
            for port in service["spec"]["ports"].as_array().expect("ports") {
                let target = &port["targetPort"];
                assert!(
                    container["ports"]
                        .as_array()
                        .expect("container ports")
                        .iter()
                        .any(|p| &p["name"] == target),
                    "{values:?}: {} targets port {target}, which {deployment} does not expose",
                    service["metadata"]["name"]
                );
            }
        }

        for pdb in of_kind(objects, "PodDisruptionBudget") {
            let name = str_at(pdb, "/metadata/name");
            assert_eq!(
                selected_deployments(objects, &pdb["spec"]["selector"]["matchLabels"]),
                [name],
                "{values:?}"
            );
            let budget = if values.rollout {
                json!({"maxUnavailable": 1})
            } else {
                json!({"minAvailable": 1})
            };
            let mut spec = pdb["spec"].clone();
            spec.as_object_mut().expect("spec").remove("selector");
            assert_eq!(spec, budget, "{values:?} {name}");
        }

        // The PodMonitor scrapes every pod's metrics port directly, in the release namespace.
        for monitor in of_kind(objects, "PodMonitor") {
            assert_eq!(
                monitor["spec"]["namespaceSelector"]["matchNames"],
                json!([NAMESPACE]),
                "{values:?}"
            );
            let mut selected =
                selected_deployments(objects, &monitor["spec"]["selector"]["matchLabels"]);
            let mut all: Vec<&str> = values.deployments().iter().map(|w| w.name).collect();
            selected.sort();
            all.sort();
            assert_eq!(selected, all, "{values:?}");
            assert_eq!(
                monitor["spec"]["podMetricsEndpoints"],
                json!([{
                    "port": "metrics",
                    "path": "/metrics",
                    "interval": "30s",
                    "scrapeTimeout": "10s",
                    "honorLabels": true,
                    "relabelings": [{"action": "labeldrop", "regex": "pod_template_hash"}],
                    "metricRelabelings": [{"action": "drop", "sourceLabels": ["__name__"], "regex": "go_.*"}],
                }]),
                "{values:?}"
            );
            for deployment in of_kind(objects, "Deployment") {
                let ports = &deployment["spec"]["template"]["spec"]["containers"][0]["ports"];
                assert!(
                    ports
                        .as_array()
                        .expect("ports")
                        .iter()
                        .any(|p| p["name"] == "metrics"),
                    "{values:?}: {} has no metrics port to scrape",
                    deployment["metadata"]["name"]
                );
            }
        }

        for monitor in of_kind(objects, "ServiceMonitor") {
            assert_eq!(
                monitor["spec"]["namespaceSelector"]["matchNames"],
                json!([NAMESPACE]),
                "{values:?}"
            );
            assert_eq!(
                monitor["spec"]["endpoints"],
                json!([{"port": "metrics", "path": "/metrics", "interval": "30s", "honorLabels": true}]),
                "{values:?}"
            );
            for service in of_kind(objects, "Service") {
                assert!(
                    selects(
                        &monitor["spec"]["selector"]["matchLabels"],
                        &service["metadata"]["labels"]
                    ),
                    "{values:?}: the ServiceMonitor misses {}",
                    service["metadata"]["name"]
                );
                assert!(
                    service["spec"]["ports"]
                        .as_array()
                        .expect("ports")
                        .iter()
                        .any(|p| p["name"] == "metrics"),
                    "{values:?}: {} has no metrics port to scrape",
                    service["metadata"]["name"]
                );
            }
        }
    }
}

#[test]
fn user_roles_aggregate_into_the_default_roles_only_when_asked() {
    for (values, objects) in renders().iter().filter(|(v, _)| !v.no_user_roles) {
        let aggregated = values.aggregation.then_some("true");
        for (role, default_roles) in [
            ("keysmith-apikeys-edit", &["admin", "edit"][..]),
            ("keysmith-apikeys-view", &["view"][..]),
        ] {
            let labels = &find(objects, "ClusterRole", role)["metadata"]["labels"];
            for default_role in ["admin", "edit", "view"] {
                let label = format!("rbac.authorization.k8s.io/aggregate-to-{default_role}");
                let expected = aggregated.filter(|_| default_roles.contains(&default_role));
                assert_eq!(
                    labels.get(&label).and_then(Value::as_str),
                    expected,
                    "{values:?}: {role} {label}"
                );
            }
        }
    }
}

#[test]
fn deployments_carry_the_pod_options_of_their_component() {
    for (values, objects) in renders() {
        for workload in values.deployments() {
            let name = workload.name;
            let deployment = find(objects, "Deployment", name);
            let template = &deployment["spec"]["template"];
            let pod = &template["spec"];
            let container = &pod["containers"][0];
            let selector = &deployment["spec"]["selector"]["matchLabels"];
            assert_eq!(
                selector["app.kubernetes.io/component"], workload.component,
                "{values:?} {name}"
            );

            // Extras are added to what the chart sets, never in place of it.
            let env: Vec<&str> = container["env"]
                .as_array()
                .expect("env")
                .iter()
                .map(|e| str_at(e, "/name"))
                .collect();
            let mut expected_env = vec!["POD_NAME", "POD_NAMESPACE"];
            if values.flags {
                expected_env.push("RUST_LOG");
                assert_eq!(
                    container["env"][2],
                    json!({"name": "RUST_LOG", "value": LOG_LEVEL}),
                    "{values:?} {name}"
                );
            }
            let mut labels = selector.clone();
            if values.extras {
                let extras: BTreeMap<_, _> = extras().into_iter().collect();
                expected_env.push("EXTRA");
                assert_eq!(pod["volumes"], extras["extraVolumes"], "{values:?} {name}");
                assert_eq!(
                    container["volumeMounts"], extras["extraVolumeMounts"],
                    "{values:?} {name}"
                );
                assert_eq!(
                    template["metadata"]["annotations"], extras["podAnnotations"],
                    "{values:?} {name}"
                );
                for key in [
                    "priorityClassName",
                    "nodeSelector",
                    "tolerations",
                    "affinity",
                ] {
                    assert_eq!(pod[key], extras[key], "{values:?} {name} {key}");
                }
                labels["team"] = "platform".into();
            } else {
                for key in [
                    "volumes",
                    "priorityClassName",
                    "nodeSelector",
                    "tolerations",
                    "affinity",
                ] {
                    assert!(pod.get(key).is_none(), "{values:?} {name} {key}");
                }
                assert!(container.get("volumeMounts").is_none(), "{values:?} {name}");
                assert!(template["metadata"].get("annotations").is_none());
            }
            assert_eq!(env, expected_env, "{values:?} {name}");
            if values.labels {
                for (key, value) in common_labels().as_object().expect("labels") {
                    labels[key] = value.clone();
                }
            }
            // podLabels and commonLabels add to the selector's labels but cannot change them
            // (the Deployment would no longer select its own pods).
            assert_eq!(template["metadata"]["labels"], labels, "{values:?} {name}");

            if !values.existing_accounts {
                let account = find(objects, "ServiceAccount", &workload.account);
                let annotations = values
                    .extras
                    .then(service_account_annotations)
                    .unwrap_or(Value::Null);
                assert_eq!(
                    account["metadata"]["annotations"], annotations,
                    "{values:?} {}",
                    workload.account
                );
            }

            // Rollouts never drop below the ready pods there are, unless told otherwise.
            let (strategy, history) = if values.rollout {
                (json!({"type": "Recreate"}), 3)
            } else {
                (
                    json!({"type": "RollingUpdate",
                        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}),
                    10,
                )
            };
            assert_eq!(
                deployment["spec"]["strategy"], strategy,
                "{values:?} {name}"
            );
            assert_eq!(
                deployment["spec"]["revisionHistoryLimit"], history,
                "{values:?} {name}"
            );
            // Probe values are merged over the chart's probes.
            let mut liveness = json!({"httpGet": {"path": "/healthz", "port": "metrics"},
                "periodSeconds": 10, "failureThreshold": 3});
            let mut startup = Value::Null;
            if values.rollout {
                let [(_, live), (_, start)] = probe_overrides();
                liveness["timeoutSeconds"] = live["timeoutSeconds"].clone();
                startup = start;
            }
            assert_eq!(container["livenessProbe"], liveness, "{values:?} {name}");
            assert_eq!(
                container["readinessProbe"],
                json!({"httpGet": {"path": "/readyz", "port": "metrics"},
                    "periodSeconds": 5, "failureThreshold": 2}),
                "{values:?} {name}"
            );
            assert_eq!(container["startupProbe"], startup, "{values:?} {name}");

            // restricted by default; on OpenShift the platform picks the user and group.
            for (context, restricted) in [
                (
                    &pod["securityContext"],
                    json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}),
                ),
                (
                    &container["securityContext"],
                    json!({
                        "allowPrivilegeEscalation": false,
                        "readOnlyRootFilesystem": true,
                        "runAsNonRoot": true,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    }),
                ),
            ] {
                let mut expected = restricted;
                if !values.openshift {
                    expected["runAsUser"] = 65532.into();
                    expected["runAsGroup"] = 65532.into();
                }
                assert_eq!(context, &expected, "{values:?} {name}");
            }

            // Spread across nodes by default whenever there may be two pods or more.
            let spread = if values.custom_spread {
                custom_spread()
            } else if workload.max > 1 {
                json!([{
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": selector},
                }])
            } else {
                Value::Null
            };
            assert_eq!(
                pod["topologySpreadConstraints"], spread,
                "{values:?} {name}"
            );
        }
    }
}

#[test]
fn the_crd_template_is_the_generated_crd_with_helm_metadata_and_the_keep_policy() {
    let generated: Value = serde_saphyr::from_str(
        &fs::read_to_string(Path::new(ROOT).join(CRD_FILE)).expect(CRD_FILE),
    )
    .expect("the CRD is YAML");
    for (values, objects) in renders().iter().filter(|(v, _)| !v.no_crds) {
        let mut crd = find(objects, "CustomResourceDefinition", CRD_NAME).clone();
        let metadata = crd["metadata"].as_object_mut().expect("metadata");
        let labels = metadata.remove("labels").expect("Helm's labels");
        let annotations = metadata.remove("annotations");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm", "{values:?}");
        let keep = (!values.no_crd_keep).then(|| json!({"helm.sh/resource-policy": "keep"}));
        assert_eq!(annotations, keep, "{values:?}");
        // The rest is the generated file, field for field.
        assert_eq!(crd, generated, "{values:?}");
    }
}

#[test]
fn the_verifier_autoscaler_owns_the_replica_count_only_in_split_mode_when_enabled() {
    for (values, objects) in renders() {
        let autoscalers: Vec<_> = of_kind(objects, "HorizontalPodAutoscaler").collect();
        let verifier = values.verifier();
        if verifier.replicas.is_some() {
            assert!(autoscalers.is_empty(), "{values:?}");
            continue;
        }
        let [hpa] = autoscalers[..] else {
            panic!("{values:?}: one HorizontalPodAutoscaler")
        };
        assert_eq!(hpa["apiVersion"], "autoscaling/v2");
        assert_eq!(
            hpa["spec"]["scaleTargetRef"],
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": verifier.name}),
            "{values:?}"
        );
        find(objects, "Deployment", verifier.name);
        assert_eq!(
            (&hpa["spec"]["minReplicas"], &hpa["spec"]["maxReplicas"]),
            (&json!(verifier.min), &json!(verifier.max)),
            "{values:?}"
        );
        assert_eq!(
            hpa["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70}}}]),
            "{values:?}"
        );
    }
}

#[test]
fn the_network_policy_admits_the_verification_api_only_from_the_named_peers() {
    for (values, objects) in renders().iter().filter(|(v, _)| !v.no_network_policy) {
        let policy = find(objects, "NetworkPolicy", "keysmith-verifier");
        let verifier = values.verifier().name;
        assert_eq!(
            selected_deployments(objects, &policy["spec"]["podSelector"]["matchLabels"]),
            [verifier],
            "{values:?}"
        );
        assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
        let container =
            &find(objects, "Deployment", verifier)["spec"]["template"]["spec"]["containers"][0];
        let mut admitted = BTreeMap::new();
        for rule in policy["spec"]["ingress"].as_array().expect("ingress") {
            // A rule without peers admits everyone.
            let from = rule["from"].as_array().expect("every rule names its peers");
            assert!(!from.is_empty(), "{values:?}: {rule}");
            let [port] = &rule["ports"].as_array().expect("ports")[..] else {
                panic!("{values:?}: one port per rule: {rule}")
            };
            let name = str_at(port, "/port");
            assert!(
                container["ports"]
                    .as_array()
                    .expect("ports")
                    .iter()
                    .any(|p| p["name"] == name),
                "{values:?}: the policy names port {name}, which {verifier} does not expose"
            );
            admitted.insert(name.to_string(), Value::Array(from.clone()));
        }
        let mut expected = BTreeMap::from([(
            "metrics".to_string(),
            json!([{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": MONITORING_NAMESPACE}}}]),
        )]);
        if values.network_peers {
            expected.insert(
                "http".to_string(),
                json!([
                    {"namespaceSelector": {"matchExpressions": [{
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": GATEWAY_NAMESPACES,
                    }]}},
                    {"namespaceSelector": {"matchLabels": {"keysmith.dev/verify": "true"}}},
                    {"ipBlock": {"cidr": GATEWAY_CIDR}},
                ]),
            );
        }
        assert_eq!(admitted, expected, "{values:?}");
    }
}

#[test]
fn the_dashboard_config_map_carries_the_sidecar_label_and_the_dashboard() {
    let dashboard = fs::read_to_string(Path::new(ROOT).join(DASHBOARD_FILE)).expect(DASHBOARD_FILE);
    for (values, objects) in renders().iter().filter(|(v, _)| v.dashboard) {
        let config_map = find(objects, "ConfigMap", "keysmith-dashboard");
        assert_eq!(
            config_map["metadata"]["labels"]["grafana_dashboard"], "1",
            "{values:?}"
        );
        assert_eq!(
            config_map["data"]["keysmith.json"].as_str(),
            Some(dashboard.trim_end()),
            "{values:?}"
        );
    }
}

#[test]
fn common_labels_and_the_service_values_reach_their_objects() {
    for (values, objects) in renders().iter().filter(|(v, _)| v.labels) {
        for object in objects {
            let (kind, _, name) = identity(object);
            // Extra objects are the user's own, labelled as they are written.
            if name.starts_with("keysmith-extra") {
                continue;
            }
            let labels = &object["metadata"]["labels"];
            for (key, value) in common_labels().as_object().expect("labels") {
                assert_eq!(&labels[key], value, "{values:?}: {kind} {name} {key}");
            }
            assert_eq!(
                labels["app.kubernetes.io/instance"], RELEASE,
                "{values:?}: {kind} {name}"
            );
        }
        for service in of_kind(objects, "Service") {
            let labels = &service["metadata"]["labels"];
            assert_eq!(labels["exposure"], "internal", "{values:?}");
            // The chart's component label wins over service.labels'.
            assert_eq!(
                labels["app.kubernetes.io/component"],
                service["spec"]["selector"]["app.kubernetes.io/component"],
                "{values:?}"
            );
            assert_eq!(
                service["metadata"]["annotations"],
                service_annotations(),
                "{values:?}"
            );
        }
    }
}

#[test]
fn extra_objects_are_rendered_with_the_chart_context() {
    for (values, objects) in renders().iter().filter(|(v, _)| v.extra_objects) {
        let object = find(objects, "ConfigMap", "keysmith-extra");
        assert_eq!(object["metadata"]["namespace"], NAMESPACE, "{values:?}");
        assert_eq!(
            object["data"]["verifier"], "keysmith-verifier",
            "{values:?}"
        );
        find(objects, "ConfigMap", "keysmith-extra-text");
    }
}

/// The `--lease-name` of the controller Deployment the chart renders for `release` with `sets`.
fn lease_flag(release: &str, sets: &[&str]) -> String {
    let mut args = vec!["template", release, CHART, "--namespace", NAMESPACE];
    args.extend(sets.iter().flat_map(|set| ["--set", set]));
    let text = run("helm", &args);
    let objects = serde_saphyr::from_multiple::<Value>(&text).expect("YAML");
    let controller = of_kind(&objects, "Deployment")
        .find(|d| {
            d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-controller"))
        })
        .expect("a controller Deployment");
    controller["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("--lease-name="))
        .expect("--lease-name")
        .to_owned()
}

/// Two releases, or two shards, in one namespace never compete for one Lease.
#[test]
fn each_release_and_each_shard_elects_its_leader_on_its_own_lease() {
    let shard_a = format!("selector={SELECTOR}");
    let names = [
        lease_flag("one", &[]),
        lease_flag("two", &[]),
        lease_flag("one", &[&shard_a]),
        lease_flag("one", &["selector=shard=b"]),
    ];
    assert_eq!(names[0], "one-keysmith-controller");
    assert_eq!(names[2], lease_name("one-keysmith", true));
    let distinct: BTreeSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), names.len(), "{names:?}");
    // Lease names are DNS subdomains.
    for name in &names {
        assert!(
            name.len() <= 253
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
    }
    assert_eq!(
        lease_flag("one", &[&shard_a, "leaderElection.leaseName=shared"]),
        "shared"
    );
}

/// A controller and a verifier under one account would give the verifier the controller's
/// rights (and the status policy would refuse the controller's writes): the render refuses it.
#[test]
fn split_mode_refuses_one_account_for_controller_and_verifier() {
    let output = Command::new(binary("helm"))
        .args(["template", RELEASE, CHART, "--namespace", NAMESPACE])
        .args(["--set", "controller.serviceAccount.name=keysmith"])
        .args(["--set", "verifier.serviceAccount.name=keysmith"])
        .output()
        .expect("helm");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "rendered:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        stderr.contains("name the same ServiceAccount") && stderr.contains("mode combined"),
        "{stderr}"
    );
}

/// The usage API's serving certificate: generated by the chart (`helm template` has no cluster to
/// reuse one from; tests/shipped/chart_real.rs renders against one), or a cert-manager
/// Certificate whose CA the cainjector puts in the APIService.
#[test]
fn the_usage_certificate_is_generated_or_taken_from_cert_manager() {
    let usage = |sets: &[&str]| -> Vec<Value> {
        let sets: Vec<&str> = ["usage.enabled=true"].iter().chain(sets).copied().collect();
        let text = helm_template(
            POLICY_KUBE_VERSION,
            sets.iter().flat_map(|set| ["--set", *set]),
        );
        serde_saphyr::from_multiple::<Value>(&text).expect("YAML")
    };
    let secret_name = "keysmith-usage-tls";
    let generated = usage(&[]);
    let secret = find(&generated, "Secret", secret_name);
    let service = find(&generated, "APIService", "v1alpha1.usage.keysmith.dev");
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        assert!(
            secret["data"][key].as_str().is_some_and(|v| !v.is_empty()),
            "{key}"
        );
    }
    assert_eq!(service["spec"]["caBundle"], secret["data"]["ca.crt"]);
    assert!(of_kind(&generated, "Certificate").next().is_none());

    let issued = usage(&[
        "usage.certManager.enabled=true",
        "usage.certManager.issuerRef.name=cluster-ca",
        "usage.certManager.issuerRef.kind=ClusterIssuer",
    ]);
    assert!(
        of_kind(&issued, "Secret").next().is_none(),
        "no generated certificate beside cert-manager's"
    );
    let certificate = find(&issued, "Certificate", secret_name);
    assert_eq!(certificate["apiVersion"], "cert-manager.io/v1");
    assert_eq!(
        certificate["spec"],
        json!({
            "secretName": secret_name,
            "dnsNames": [
                format!("keysmith-verifier.{NAMESPACE}.svc"),
                format!("keysmith-verifier.{NAMESPACE}.svc.cluster.local"),
            ],
            "issuerRef": {"name": "cluster-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"},
        })
    );
    let service = find(&issued, "APIService", "v1alpha1.usage.keysmith.dev");
    assert_eq!(
        service["metadata"]["annotations"],
        json!({"cert-manager.io/inject-ca-from": format!("{NAMESPACE}/{secret_name}")})
    );
    assert!(
        service["spec"].get("caBundle").is_none(),
        "the cainjector's to fill"
    );
    // The verifier serves what cert-manager writes into the same Secret.
    let volumes =
        &find(&issued, "Deployment", "keysmith-verifier")["spec"]["template"]["spec"]["volumes"];
    assert_eq!(
        volumes,
        &json!([{"name": "usage-tls", "secret": {"secretName": secret_name}}])
    );
}

#[test]
fn the_leak_report_endpoint_is_off_by_default_and_mounts_each_named_secret_where_the_api_is() {
    let render = |sets: &[&str]| -> Vec<Value> {
        let text = helm_template(
            POLICY_KUBE_VERSION,
            sets.iter().flat_map(|set| ["--set", *set]),
        );
        serde_saphyr::from_multiple::<Value>(&text).expect("YAML")
    };
    let container = |objects: &[Value], name: &str| {
        find(objects, "Deployment", name)["spec"]["template"]["spec"].clone()
    };
    let leak_args = |spec: &Value| -> Vec<String> {
        spec["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a.as_str().filter(|a| a.starts_with("--leak-report")))
            .map(str::to_owned)
            .collect()
    };
    let default = render(&[]);
    assert!(leak_args(&container(&default, "keysmith-verifier")).is_empty());

    let sets = [
        "leakReports.githubKeysSecret=github-keys",
        "leakReports.tokenSecret=leak-token",
    ];
    let split = render(&sets);
    let verifier = container(&split, "keysmith-verifier");
    assert_eq!(
        leak_args(&verifier),
        [
            "--leak-report-github-keys-file=/etc/keysmith/leaks/github/github-keys.json",
            "--leak-report-token-file=/etc/keysmith/leaks/token/token",
        ]
    );
    assert_eq!(
        verifier["volumes"],
        json!([
            {"name": "leak-report-github-keys", "secret": {"secretName": "github-keys"}},
            {"name": "leak-report-token", "secret": {"secretName": "leak-token"}},
        ])
    );
    assert_eq!(
        verifier["containers"][0]["volumeMounts"],
        json!([
            {"name": "leak-report-github-keys", "mountPath": "/etc/keysmith/leaks/github", "readOnly": true},
            {"name": "leak-report-token", "mountPath": "/etc/keysmith/leaks/token", "readOnly": true},
        ])
    );
    let controller = container(&split, "keysmith-controller");
    assert!(
        leak_args(&controller).is_empty(),
        "the controller serves no API"
    );
    assert!(controller.get("volumes").is_none());

    let combined: Vec<&str> = sets.iter().copied().chain(["mode=combined"]).collect();
    let combined = render(&combined);
    assert_eq!(leak_args(&container(&combined, "keysmith")).len(), 2);
}

// ---------------------------------------------------------------------------------------------
// promtool

/// The rendered PrometheusRule's `spec.groups` as a Prometheus rule file, and its alert names.
fn rule_file(objects: &[Value]) -> (String, BTreeSet<String>) {
    let groups = &find(objects, "PrometheusRule", RELEASE)["spec"]["groups"];
    let alerts = groups
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .map(|r| str_at(r, "/alert").to_string())
        .collect();
    let text = serde_saphyr::to_string(&json!({ "groups": groups })).expect("rules as YAML");
    (text, alerts)
}

#[test]
fn rendered_alert_rules_pass_promtool_check_rules() {
    let with_rules: Vec<_> = renders()
        .iter()
        .filter(|(v, _)| v.prometheus_rule)
        .collect();
    assert!(
        with_rules.len() >= 2,
        "both modes render the PrometheusRule"
    );
    for (values, objects) in with_rules {
        let (text, alerts) = rule_file(objects);
        assert_eq!(
            alerts,
            BTreeSet::from(ALERTS.map(String::from)),
            "{values:?}"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(RULES_FILE);
        fs::write(&path, text).expect("write rules");
        let out = run(
            "promtool",
            &["check", "rules", path.to_str().expect("UTF-8")],
        );
        assert!(
            out.contains(&format!("SUCCESS: {} rules found", ALERTS.len())),
            "{values:?}: {out}"
        );
    }
}

/// The alert unit tests run against the chart as rendered with the PrometheusRule on in mode
/// combined (the verifier Deployment is `keysmith`, as the tests' kube-state-metrics series say).
#[test]
fn rendered_alert_rules_pass_their_promtool_unit_tests() {
    let (_, objects) = renders()
        .iter()
        .find(|(v, _)| v.prometheus_rule && v.combined && !v.watch_namespace)
        .expect("the combined PrometheusRule case");
    let (text, _) = rule_file(objects);
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join(RULES_FILE), text).expect("write rules");
    // promtool resolves rule_files next to the test file, so the test file goes there too.
    let tests = dir.path().join("alerts.test.yaml");
    fs::copy(Path::new(ROOT).join(ALERT_TESTS), &tests).expect("copy alert tests");
    let out = run(
        "promtool",
        &["test", "rules", tests.to_str().expect("UTF-8")],
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The anchors GitHub gives the headings of a Markdown file (outside code blocks): lower case,
/// spaces as hyphens, punctuation other than hyphens and underscores dropped.
fn heading_anchors(markdown: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut anchors = BTreeSet::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            let heading = line.trim_start_matches('#').trim();
            anchors.insert(
                heading
                    .chars()
                    .filter_map(|c| match c {
                        ' ' => Some('-'),
                        '-' | '_' => Some(c),
                        c => c.is_alphanumeric().then(|| c.to_ascii_lowercase()),
                    })
                    .collect(),
            );
        }
    }
    anchors
}

/// Every alert links its runbook: prometheusRule.runbookBaseUrl (by default the repository's
/// docs/operations.md, Chart.yaml's `home`) and an anchor docs/operations.md has.
#[test]
fn every_alert_links_its_runbook_in_docs_operations() {
    let chart: Value = serde_saphyr::from_str(
        &fs::read_to_string(Path::new(CHART).join("Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml is YAML");
    let default_base = format!("{}/blob/main/docs/operations.md", str_at(&chart, "/home"));
    let docs = fs::read_to_string(Path::new(ROOT).join("docs/operations.md")).expect("docs");
    let anchors = heading_anchors(&docs);
    assert!(anchors.contains("alert-runbooks"), "{anchors:?}");
    let own_base = "https://wiki.example.com/keysmith";
    for (base, sets) in [
        (
            default_base.as_str(),
            vec!["prometheusRule.enabled=true".to_owned()],
        ),
        (
            own_base,
            vec![
                "prometheusRule.enabled=true".to_owned(),
                format!("prometheusRule.runbookBaseUrl={own_base}"),
            ],
        ),
    ] {
        let text = helm_template(
            POLICY_KUBE_VERSION,
            sets.iter().flat_map(|s| ["--set", s.as_str()]),
        );
        let objects = serde_saphyr::from_multiple::<Value>(&text).expect("YAML");
        let (_, alerts) = rule_file(&objects);
        assert_eq!(alerts, BTreeSet::from(ALERTS.map(String::from)));
        let rules = &find(&objects, "PrometheusRule", RELEASE)["spec"]["groups"][0]["rules"];
        for rule in rules.as_array().expect("rules") {
            let alert = str_at(rule, "/alert");
            let url = str_at(rule, "/annotations/runbook_url");
            let anchor = url
                .strip_prefix(base)
                .and_then(|rest| rest.strip_prefix('#'))
                .unwrap_or_else(|| panic!("{alert}: {url} is not under {base}"));
            assert_eq!(anchor, alert.to_lowercase(), "{alert}");
            assert!(
                anchors.contains(anchor),
                "{alert}: docs/operations.md has no heading for #{anchor}"
            );
        }
    }
}

#[test]
fn alert_unit_tests_make_every_alert_fire_and_stay_silent() {
    let text = fs::read_to_string(Path::new(ROOT).join(ALERT_TESTS)).expect(ALERT_TESTS);
    let suite: Value = serde_saphyr::from_str(&text).expect("alert tests are YAML");
    assert_eq!(suite["rule_files"], json!([RULES_FILE]));
    let cases: Vec<&Value> = suite["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().expect("alert_rule_test"))
        .collect();
    for alert in ALERTS {
        let expectations = cases.iter().filter(|c| c["alertname"] == alert);
        let (firing, silent): (Vec<_>, Vec<_>) = expectations
            .map(|c| c["exp_alerts"].as_array().expect("exp_alerts").len())
            .partition(|&n| n > 0);
        assert!(!firing.is_empty(), "no test case where {alert} fires");
        assert!(
            !silent.is_empty(),
            "no test case where {alert} stays silent"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Metric names

/// Metrics the dashboard and the alerts query that Keysmith does not export: kube-state-metrics'
/// Deployment metrics.
const EXTERNAL_METRICS: [&str; 1] = ["kube_deployment_status_replicas_available"];

/// The sample names a running `keysmith dev` (the controller and the verifier in one process)
/// serves on /metrics, as Prometheus stores them: from the `# TYPE` line every registered family
/// has, with series or without.
fn exported_metric_names() -> BTreeSet<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .arg("dev")
        .arg("--kubeconfig")
        .arg(dir.path().join("kubeconfig"))
        // Port 0: the summary prints the ports really bound.
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("keysmith dev starts");
    // Read before asserting anything, so the child is stopped whatever happened.
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let text = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            let (_, rest) = line.split_once("Metrics: http://")?;
            Some(rest.split('/').next()?.to_owned())
        })
        .map(|addr| {
            let kubeconfig = dir.path().join("kubeconfig");
            std::panic::catch_unwind(|| with_a_key_end(&kubeconfig, &addr))
        });
    let _ = child.kill();
    let _ = child.wait();
    let served = text
        .expect("keysmith dev prints its metrics address")
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let text = served.expect("GET /metrics");
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(declaration) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (family, kind) = declaration.split_once(' ').expect("# TYPE name type");
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
    }
    names
}

/// The metrics of the `keysmith dev` at `addr` once it also reconciled an ApiKey with a
/// `spec.expiresAt`, applied through its `kubeconfig`: none of the examples it applies has one,
/// and only such a key exports `keysmith_apikey_expiry_timestamp_seconds`.
fn with_a_key_end(kubeconfig: &Path, addr: &str) -> std::io::Result<String> {
    const FAMILY: &str = "# TYPE keysmith_apikey_expiry_timestamp_seconds ";
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = kube::config::Kubeconfig::read_from(kubeconfig).expect("dev's kubeconfig");
        let options = kube::config::KubeConfigOptions::default();
        let config = kube::Config::from_custom_kubeconfig(config, &options)
            .await
            .expect("a client configuration");
        let client = kube::Client::try_from(config).expect("a client");
        let keys = kube::Api::<kube::api::DynamicObject>::namespaced_with(
            client,
            "default",
            &kube::api::ApiResource::erase::<keysmith::api::ApiKey>(&()),
        );
        let key = serde_json::from_value(json!({
            "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "time-boxed", "namespace": "default"},
            "spec": {"tokens": [{"name": "a"}], "expiresAt": "2099-01-01T00:00:00Z"},
        }))
        .expect("an ApiKey");
        keys.create(&kube::api::PostParams::default(), &key)
            .await
            .expect("the ApiKey is created");
        keysmith_emulator::eventually("the key's expiry series", || async {
            scrape(addr).ok().filter(|text| text.contains(FAMILY))
        })
        .await;
    });
    scrape(addr)
}

/// GET /metrics from `addr` in OpenMetrics, as Prometheus asks for it: the response, head and
/// body.
fn scrape(addr: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nAccept: application/openmetrics-text\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

/// The metric names a PromQL expression selects: identifiers outside label matchers, range
/// selectors, strings and grouping clauses that are neither functions nor keywords. Grafana's
/// `label_values(metric, label)` selects its first argument.
fn queried_metrics(expr: &str) -> BTreeSet<String> {
    // Aggregations may put their grouping clause before the parenthesis (`sum by (le) (x)`).
    const KEYWORDS: [&str; 25] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let expr = match expr.strip_prefix("label_values(") {
        Some(rest) => rest.split(',').next().expect("an argument"),
        None => expr,
    };
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // From a quote, the index past its closing quote.
    let skip_string = |mut i: usize| {
        let quote = chars[i];
        i += 1;
        while i < chars.len() && chars[i] != quote {
            i += 1 + usize::from(chars[i] == '\\');
        }
        i + 1
    };
    // From an opening bracket, the index past its closing one, past anything nested or quoted.
    let skip = |mut i: usize, open: char, close: char| {
        let mut depth = 0;
        while i < chars.len() {
            match chars[i] {
                '"' | '\'' | '`' => {
                    i = skip_string(i);
                    continue;
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            i = skip(i, '{', '}');
        } else if c == '[' {
            i = skip(i, '[', ']');
        } else if c == '"' || c == '\'' || c == '`' {
            i = skip_string(i);
        } else if c.is_ascii_digit() {
            // A number, with its fraction, exponent or duration unit.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let called = chars.get(next) == Some(&'(');
            if GROUPING.contains(&word.as_str()) && called {
                i = skip(next, '(', ')');
            } else if !called && !KEYWORDS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The dashboard's queries: every panel target and templating variable.
fn dashboard_queries() -> Vec<String> {
    let text = fs::read_to_string(Path::new(ROOT).join(DASHBOARD_FILE)).expect(DASHBOARD_FILE);
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let targets = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().expect("every panel queries"))
        .map(|t| str_at(t, "/expr").to_owned());
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| str_at(v, "/query/query").to_owned());
    targets.chain(variables).collect()
}

#[test]
fn query_parser_finds_metrics_and_skips_functions_labels_and_clauses() {
    assert_eq!(
        queried_metrics(
            r#"histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="b{c}", y=~"$v"}[$__rate_interval]))) or on (x) b_total offset 5m > bool 1e3"#
        ),
        BTreeSet::from(["a_bucket".to_owned(), "b_total".to_owned()])
    );
    assert_eq!(
        queried_metrics("label_values(keysmith_index_tokens, namespace)"),
        BTreeSet::from(["keysmith_index_tokens".to_owned()])
    );
}

#[test]
fn dashboard_has_the_operator_panels() {
    let text = fs::read_to_string(Path::new(ROOT).join(DASHBOARD_FILE)).expect(DASHBOARD_FILE);
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels: BTreeMap<&str, Vec<&str>> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .map(|p| {
            let exprs = p["targets"].as_array().expect("targets");
            (
                str_at(p, "/title"),
                exprs.iter().map(|t| str_at(t, "/expr")).collect(),
            )
        })
        .collect();
    for (title, metric) in [
        (
            "Verification rate by code",
            "keysmith_verify_requests_total",
        ),
        (
            "Verification latency",
            "keysmith_verify_duration_seconds_bucket",
        ),
        ("Index size", "keysmith_index_tokens"),
        ("Keys by readiness", "keysmith_apikey_ready_status"),
        ("Next expiries", "keysmith_token_expiry_timestamp_seconds"),
        ("Reconcile errors", "keysmith_reconcile_errors_total"),
    ] {
        let exprs = panels
            .get(title)
            .unwrap_or_else(|| panic!("no panel {title}"));
        assert!(
            exprs.iter().any(|e| queried_metrics(e).contains(metric)),
            "{title} does not query {metric}: {exprs:?}"
        );
    }
    let latency = &panels["Verification latency"];
    assert!(
        latency.iter().all(|e| e.starts_with("histogram_quantile(")),
        "{latency:?}"
    );
    // A made-up 0 would hide that nothing reports readiness: no data must look like no data.
    let readiness = &panels["Keys by readiness"];
    assert!(
        readiness.iter().all(|e| !e.contains("vector(")),
        "{readiness:?}"
    );
}

/// A renamed or removed metric fails here rather than leaving an empty panel or an alert that
/// never fires: every metric the dashboard and the rendered alerts query is one the binary
/// serves, or one of [`EXTERNAL_METRICS`].
#[test]
fn dashboard_and_alerts_query_only_metrics_the_binary_exports() {
    let (_, objects) = renders()
        .iter()
        .find(|(v, _)| v.prometheus_rule)
        .expect("a PrometheusRule case");
    let rules = &find(objects, "PrometheusRule", RELEASE)["spec"]["groups"];
    let alert_queries = rules
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .map(|r| str_at(r, "/expr").to_owned());
    let queried: BTreeSet<String> = dashboard_queries()
        .into_iter()
        .chain(alert_queries)
        .flat_map(|q| queried_metrics(&q))
        .collect();
    let exported = exported_metric_names();
    assert!(
        exported.contains("keysmith_verify_requests_total")
            && exported.contains("keysmith_reconcile_errors_total"),
        "the verifier's and the controller's metrics are served: {exported:?}"
    );
    let external = BTreeSet::from(EXTERNAL_METRICS.map(String::from));
    let unknown: Vec<_> = queried
        .difference(&exported)
        .filter(|m| !external.contains(*m))
        .collect();
    assert!(
        unknown.is_empty(),
        "queried but not exported by keysmith: {unknown:?}\nexported: {exported:?}"
    );
    let unused: Vec<_> = external.difference(&queried).collect();
    assert!(
        unused.is_empty(),
        "EXTERNAL_METRICS lists unqueried {unused:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The verifier's status policy

/// What the chart renders for `kube_version` with `sets`: the ValidatingAdmissionPolicy and its
/// binding, if any.
fn status_policy(kube_version: &str, sets: &[&str]) -> Vec<Value> {
    let text = helm_template(kube_version, sets.iter().flat_map(|set| ["--set", set]));
    serde_saphyr::from_multiple::<Value>(&text)
        .expect("helm template output is YAML")
        .into_iter()
        .filter(|o| {
            o["apiVersion"] == "admissionregistration.k8s.io/v1"
                && o["kind"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("ValidatingAdmissionPolicy"))
        })
        .collect()
}

#[test]
fn verifier_status_policy_binds_the_verifier_account_in_split_mode_from_kubernetes_1_30() {
    let rendered = status_policy(POLICY_KUBE_VERSION, &[]);
    let policy = find(
        &rendered,
        "ValidatingAdmissionPolicy",
        "keysmith-verifier-status",
    );
    let binding = find(
        &rendered,
        "ValidatingAdmissionPolicyBinding",
        "keysmith-verifier-status",
    );
    assert_eq!(rendered.len(), 2, "{rendered:#?}");
    assert_eq!(binding["spec"]["policyName"], "keysmith-verifier-status");
    assert_eq!(
        binding["spec"]["validationActions"],
        serde_json::json!(["Deny"])
    );
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    assert_eq!(
        policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"],
        serde_json::json!(["apikeys/status"])
    );
    let user = format!("'system:serviceaccount:{NAMESPACE}:keysmith-verifier'");
    let condition = str_at(policy, "/spec/matchConditions/0/expression");
    assert!(condition.ends_with(&user), "{condition}");
    // Every status field but lastUsedAt and the leak records is held: a field added to status
    // without a check here would be the verifier's to change. A leak record may only be added.
    let crd: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{CHART}/files/apikeys.keysmith.dev.yaml"))
            .expect("the CRD"),
    )
    .expect("the CRD is YAML");
    let status = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
    let token = &status["properties"]["tokens"]["items"]["properties"];
    let checks: String = policy["spec"]["validations"]
        .as_array()
        .expect("validations")
        .iter()
        .map(|v| str_at(v, "/expression"))
        .collect();
    let fields = status["properties"]
        .as_object()
        .expect("status fields")
        .keys();
    let token_fields = token.as_object().expect("token fields").keys();
    // A replaced token's fields, but for its lastUsedAt, held one by one in `previous` and as
    // a list in `earlier`.
    let replaced: Vec<&String> = token["previous"]["properties"]
        .as_object()
        .expect("previous fields")
        .keys()
        .filter(|f| *f != "lastUsedAt" && *f != "leak")
        .collect();
    for field in &replaced {
        let held = format!(".?previous.?{field} ==");
        assert!(checks.contains(&held), "previous.{field} is not held");
    }
    let listed: Vec<String> = replaced.iter().map(|f| format!("e.{f}")).collect();
    let held = format!(".?earlier.orValue([]).map(e, [{}]) ==", listed.join(", "));
    assert!(checks.contains(&held), "earlier is not held: {held}");
    for held in [
        "o.?leak == t.?leak || (!o.?leak.hasValue() && !t.?leak.?handledAt.hasValue())",
        "o.?previous.?leak == t.?previous.?leak ||",
        "e.?leak == f.?leak || (!e.?leak.hasValue() && !f.?leak.?handledAt.hasValue())",
    ] {
        assert!(
            checks.contains(held),
            "leak records are not guarded: {held}"
        );
    }
    let nested = ["tokens", "lastUsedAt", "previous", "earlier", "leak"];
    for field in fields.chain(token_fields) {
        if !nested.contains(&field.as_str()) {
            let held = [format!(".{field} =="), format!(".?{field} ==")];
            assert!(
                held.iter().any(|h| checks.contains(h)),
                "{field} is not held"
            );
        }
    }
    assert!(!checks.contains("lastUsedAt"));

    for (kube_version, sets) in [
        ("v1.29.0", &["verifier.statusPolicy=false"][..]),
        ("v1.29.0", &["mode=combined"][..]),
        ("v1.30.0", &["mode=combined"][..]),
        ("v1.30.0", &["verifier.statusPolicy=false"][..]),
    ] {
        assert!(
            status_policy(kube_version, sets).is_empty(),
            "{kube_version} {sets:?}"
        );
    }
}

/// Split mode where the policy cannot exist (below Kubernetes 1.30, or a `helm template` that
/// assumes such a version) would let the verifier write any key's status: the render refuses,
/// saying what to do, unless `verifier.statusPolicy=false` says to go without it (issue 27, N11).
#[test]
fn split_mode_without_the_status_policy_renders_only_when_told_to() {
    for kube_version in ["v1.25.0", "v1.29.9"] {
        let output = Command::new(binary("helm"))
            .args(["template", RELEASE, CHART, "--namespace", NAMESPACE])
            .args(["--kube-version", kube_version])
            .output()
            .expect("helm");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{kube_version} rendered:\n{}",
            String::from_utf8_lossy(&output.stdout)
        );
        for says in [
            "Kubernetes 1.30",
            kube_version,
            "--kube-version",
            "verifier.statusPolicy=false",
        ] {
            assert!(stderr.contains(says), "{kube_version}: {says}? {stderr}");
        }
    }
    // Told to, or nothing to guard (one account is both controller and verifier anyway).
    for sets in [&["verifier.statusPolicy=false"][..], &["mode=combined"][..]] {
        assert!(status_policy("v1.25.0", sets).is_empty(), "{sets:?}");
    }
}

/// The container arguments of the Deployment named `name` in `objects`.
fn args_of(objects: &[Value], name: &str) -> Vec<String> {
    let deployment = find(objects, "Deployment", name);
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string").to_owned())
        .collect()
}

/// `personalKeys.enabled` ships both personal-key policies, the status one exempting only the
/// controller's account, and tells the controller to mint personal keys with the lifetime cap;
/// it is off by default, needs Kubernetes 1.30, and the verifier's opt-in needs it.
#[test]
fn personal_keys_come_with_their_policies_or_not_at_all() {
    let sets = [
        "personalKeys.enabled=true",
        "personalKeys.maxLifetime=30d",
        "personalKeys.tokenReviewAudiences={https://kubernetes.default.svc}",
    ];
    let rendered = status_policy(POLICY_KUBE_VERSION, &sets);
    let owner = find(
        &rendered,
        "ValidatingAdmissionPolicy",
        "keysmith-personal-key-owner",
    );
    assert_eq!(owner["spec"]["failurePolicy"], "Fail");
    assert_eq!(
        owner["spec"]["matchConstraints"]["resourceRules"][0]["operations"],
        serde_json::json!(["CREATE"])
    );
    let status = find(
        &rendered,
        "ValidatingAdmissionPolicy",
        "keysmith-personal-key-status",
    );
    let exempt = str_at(status, "/spec/matchConditions/1/expression");
    let controller = format!("'system:serviceaccount:{NAMESPACE}:keysmith-controller'");
    assert!(exempt.ends_with(&controller), "{exempt}");
    for name in [
        "keysmith-personal-key-owner",
        "keysmith-personal-key-status",
    ] {
        let binding = find(&rendered, "ValidatingAdmissionPolicyBinding", name);
        assert_eq!(binding["spec"]["policyName"], name);
        assert_eq!(
            binding["spec"]["validationActions"],
            serde_json::json!(["Deny"])
        );
    }
    let text = helm_template(POLICY_KUBE_VERSION, sets.iter().flat_map(|s| ["--set", *s]));
    let objects = serde_saphyr::from_multiple::<Value>(&text).expect("YAML");
    let controller_args = args_of(&objects, "keysmith-controller");
    assert!(controller_args.contains(&"--personal-keys".to_owned()));
    assert!(controller_args.contains(&"--personal-key-max-lifetime=30d".to_owned()));
    let verifier_args = args_of(&objects, "keysmith-verifier");
    assert!(
        verifier_args.contains(
            &"--token-review-personal-audiences=https://kubernetes.default.svc".to_owned()
        )
    );

    // Off by default: no policies, and the controller mints no personal key.
    let default = status_policy(POLICY_KUBE_VERSION, &[]);
    assert!(
        default
            .iter()
            .all(|o| !str_at(o, "/metadata/name").contains("personal")),
        "{default:#?}"
    );
    let text = helm_template(POLICY_KUBE_VERSION, []);
    let objects = serde_saphyr::from_multiple::<Value>(&text).expect("YAML");
    assert!(
        !args_of(&objects, "keysmith-controller")
            .iter()
            .any(|a| a.starts_with("--personal"))
    );

    // Refused rather than rendered half: below 1.30, and the opt-in without the policies.
    for (kube_version, sets) in [
        (
            "v1.29.9",
            &["personalKeys.enabled=true", "verifier.statusPolicy=false"][..],
        ),
        (
            POLICY_KUBE_VERSION,
            &["personalKeys.tokenReviewAudiences={api}"][..],
        ),
    ] {
        let output = Command::new(binary("helm"))
            .args(["template", RELEASE, CHART, "--namespace", NAMESPACE])
            .args(["--kube-version", kube_version])
            .args(sets.iter().flat_map(|s| ["--set", *s]))
            .output()
            .expect("helm");
        assert!(!output.status.success(), "{kube_version} {sets:?} rendered");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("personalKeys.enabled"), "{stderr}");
    }
}

/// Issue 28: access lists are one opt-in, `accessLists.enabled`: the controller's flag, its rights
/// on roles and rolebindings, and the admission policy that keeps it from being an escalation
/// come together or not at all, in every mode and scope; the verifier gets none of it.
#[test]
fn access_lists_render_the_flag_the_rules_and_the_policy_together() {
    let cases: [(&[&str], bool); 4] = [
        (&[], false),
        (&["accessLists.enabled=true"], true),
        (&["accessLists.enabled=true", "mode=combined"], true),
        (&["accessLists.enabled=true", "watchNamespace=apps"], true),
    ];
    for (sets, on) in cases {
        let text = helm_template(POLICY_KUBE_VERSION, sets.iter().flat_map(|s| ["--set", *s]));
        let objects: Vec<Value> = serde_saphyr::from_multiple(&text).expect("YAML");
        let policy = objects.iter().any(|o| {
            o["kind"] == "ValidatingAdmissionPolicy"
                && o["metadata"]["name"] == "keysmith-access-lists"
        });
        let binding = objects.iter().any(|o| {
            o["kind"] == "ValidatingAdmissionPolicyBinding"
                && o["spec"]["policyName"] == "keysmith-access-lists"
        });
        assert_eq!((policy, binding), (on, on), "{sets:?}: the policy");
        for deployment in of_kind(&objects, "Deployment") {
            let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
            let runs_controller = args[0] != "verifier";
            let flagged = args
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "--access-lists"));
            assert_eq!(flagged, on && runs_controller, "{sets:?}: {args}");
        }
        let rbac_rules = objects
            .iter()
            .filter(|o| o["kind"] == "Role" || o["kind"] == "ClusterRole")
            .filter(|o| {
                o["rules"].as_array().is_some_and(|rules| {
                    rules.iter().any(|r| {
                        r["apiGroups"]
                            .as_array()
                            .is_some_and(|g| g.iter().any(|g| g == "rbac.authorization.k8s.io"))
                    })
                })
            })
            .map(|o| str_at(o, "/metadata/name"))
            .collect::<Vec<_>>();
        let expected: &[&str] = if on { &["keysmith-controller"] } else { &[] };
        assert_eq!(rbac_rules, expected, "{sets:?}: who may write roles");
    }
    // Below Kubernetes 1.30 the policy cannot exist: the render fails rather than go unguarded.
    let output = Command::new(binary("helm"))
        .args(["template", RELEASE, CHART, "--namespace", NAMESPACE])
        .args(["--kube-version", "v1.29.0"])
        .args([
            "--set",
            "mode=combined",
            "--set",
            "accessLists.enabled=true",
        ])
        .output()
        .expect("helm");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "rendered below 1.30");
    for says in ["accessLists.enabled", "Kubernetes 1.30", "--kube-version"] {
        assert!(stderr.contains(says), "{says}? {stderr}");
    }
}
