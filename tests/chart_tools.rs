//! The chart through the pinned real tools (`testenv/install helm promtool`): `helm lint --strict`
//! and `helm template` for the default values, `mode: split` and every optional value, each on its
//! own and all together, asserting what each renders; the rendered PrometheusRule through
//! `promtool check rules` and the unit tests in `tests/alerts/alerts.test.yaml`.
//!
//! `tests/chart.rs` checks the chart's files without Helm.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use keysmith_testenv::binaries::binary;
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/keysmith");
const RELEASE: &str = "keysmith";
const NAMESPACE: &str = "keysmith";
/// The oldest Kubernetes Chart.yaml accepts (`kubeVersion: >=1.25.0-0`). Given explicitly: the
/// pinned helm is built without the version stamp of Helm's Makefile, and its fallback default
/// (v1.20.0) fails the chart's kubeVersion check.
const KUBE_VERSION: &str = "v1.25.0";
const WATCH_NAMESPACE: &str = "apps";
const SELECTOR: &str = "shard=a";
const TRUSTED_PROXY: &str = "10.244.0.0/16";
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const IMAGE: &str = "ghcr.io/keysmith-dev/keysmith";
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

/// One set of chart values: the mode and which optional values differ from their defaults.
#[derive(Clone, Copy, Debug, Default)]
struct Values {
    split: bool,
    service_monitor: bool,
    prometheus_rule: bool,
    /// `watchNamespace`: Roles in that namespace instead of ClusterRoles.
    watch_namespace: bool,
    /// `selector`, `trustedProxies`, `image.digest`, `imagePullSecrets`: flags and pod specs only.
    flags: bool,
    /// One replica of the combined or the verifier Deployment: no PodDisruptionBudget for it.
    single_replicas: bool,
    no_pdb: bool,
    no_user_roles: bool,
    no_aggregation: bool,
}

impl Values {
    /// For each mode: the defaults, each optional value on its own (or off, for those on by
    /// default), and every optional value on together.
    fn cases() -> Vec<Values> {
        let toggles: [fn(&mut Values); 8] = [
            |v| v.service_monitor = true,
            |v| v.prometheus_rule = true,
            |v| v.watch_namespace = true,
            |v| v.flags = true,
            |v| v.single_replicas = true,
            |v| v.no_pdb = true,
            |v| v.no_user_roles = true,
            |v| v.no_aggregation = true,
        ];
        let mut cases = Vec::new();
        for split in [false, true] {
            let defaults = Values {
                split,
                ..Values::default()
            };
            cases.push(defaults);
            for toggle in toggles {
                let mut values = defaults;
                toggle(&mut values);
                cases.push(values);
            }
            cases.push(Values {
                service_monitor: true,
                prometheus_rule: true,
                watch_namespace: true,
                flags: true,
                ..defaults
            });
        }
        cases
    }

    /// `--set` arguments for helm.
    fn set_args(&self) -> Vec<String> {
        let mut sets = Vec::new();
        let mut set = |on: bool, assignments: &[&str]| {
            if on {
                for assignment in assignments {
                    sets.extend(["--set".to_string(), assignment.to_string()]);
                }
            }
        };
        set(self.split, &["mode=split"]);
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
                &format!("image.digest={DIGEST}"),
                "imagePullSecrets[0].name=regcred",
            ],
        );
        set(
            self.single_replicas,
            &["combined.replicas=1", "verifier.replicas=1"],
        );
        set(self.no_pdb, &["podDisruptionBudget.enabled=false"]);
        set(self.no_user_roles, &["userRoles.create=false"]);
        set(
            self.no_aggregation,
            &["userRoles.aggregateToDefaultRoles=false"],
        );
        sets
    }

    /// The Deployments as (name, `keysmith` subcommand, ServiceAccount, replicas).
    fn deployments(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
        let verifier_replicas = if self.single_replicas { 1 } else { 2 };
        if self.split {
            vec![
                (
                    "keysmith-controller",
                    "controller",
                    "keysmith-controller",
                    2,
                ),
                (
                    "keysmith-verifier",
                    "verifier",
                    "keysmith-verifier",
                    verifier_replicas,
                ),
            ]
        } else {
            vec![("keysmith", "run", "keysmith", verifier_replicas)]
        }
    }

    /// Every object the chart should render, as (kind, namespace or "" when cluster-scoped, name).
    fn expected_objects(&self) -> BTreeSet<Object> {
        let mut objects = BTreeSet::new();
        let mut add = |kind: &str, namespace: &str, name: &str| {
            objects.insert((kind.to_string(), namespace.to_string(), name.to_string()));
        };
        for (deployment, _, account, replicas) in self.deployments() {
            add("Deployment", NAMESPACE, deployment);
            add("ServiceAccount", NAMESPACE, account);
            if !self.no_pdb && replicas > 1 {
                add("PodDisruptionBudget", NAMESPACE, deployment);
            }
        }
        add("Service", NAMESPACE, "keysmith-verifier");
        if self.split {
            add("Service", NAMESPACE, "keysmith-controller-metrics");
        }
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
        objects
    }
}

/// (kind, namespace or "" when cluster-scoped, name)
type Object = (String, String, String);

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} is not a string in {value}"))
}

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

fn of_kind<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    objects.iter().filter(move |o| o["kind"] == kind)
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

fn render(values: &Values) -> Vec<Value> {
    let sets = values.set_args();
    let mut args = vec![
        "template",
        RELEASE,
        CHART,
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
    ];
    args.extend(sets.iter().map(String::as_str));
    let text = run("helm", &args);
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

/// The lint above is only worth something if lint checks the values: the schema makes it fail.
#[test]
fn helm_lint_rejects_values_the_schema_forbids() {
    for (set, complaint) in [
        ("mode=both", "at '/mode'"),
        ("verifier.replicas=0", "at '/verifier/replicas'"),
        ("typo=true", "'typo' not allowed"),
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

#[test]
fn deployments_run_the_subcommand_flags_and_image_of_their_mode() {
    for (values, objects) in renders() {
        for (name, subcommand, account, replicas) in values.deployments() {
            let deployment = find(objects, "Deployment", name);
            assert_eq!(
                deployment["spec"]["replicas"], replicas,
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
                // Only what serves the verifier API sees client addresses.
                if subcommand != "controller" {
                    args.push(format!("--trusted-proxies={TRUSTED_PROXY}"));
                }
            }
            assert_eq!(container["args"], json!(args), "{values:?} {name}");

            let image = if values.flags {
                format!("{IMAGE}@{DIGEST}")
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
        let rendered: BTreeSet<Object> = objects.iter().map(identity).collect();
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

        // Each ServiceAccount gets the roles of what its pods run, and nothing else.
        let roles =
            |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| n.to_string()).collect() };
        let controller = ["keysmith-controller", "keysmith-leader-election"];
        let expected: BTreeMap<String, BTreeSet<String>> = if values.split {
            BTreeMap::from([
                ("keysmith-controller".to_string(), roles(&controller)),
                (
                    "keysmith-verifier".to_string(),
                    roles(&["keysmith-verifier"]),
                ),
            ])
        } else {
            let all = [controller[0], controller[1], "keysmith-verifier"];
            BTreeMap::from([("keysmith".to_string(), roles(&all))])
        };
        assert_eq!(bound, expected, "{values:?}");
    }
}

#[test]
fn services_pdbs_and_the_service_monitor_select_the_pods_they_are_for() {
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

        let verifier = values.deployments().last().expect("a Deployment").0;
        let mut services = vec![("keysmith-verifier", verifier)];
        if values.split {
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
            assert_eq!(pdb["spec"]["minAvailable"], 1, "{values:?} {name}");
        }

        for monitor in of_kind(objects, "ServiceMonitor") {
            assert_eq!(
                monitor["spec"]["namespaceSelector"]["matchNames"],
                json!([NAMESPACE]),
                "{values:?}"
            );
            assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
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
        let aggregated = (!values.no_aggregation).then_some("true");
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
        .find(|(v, _)| v.prometheus_rule && !v.split && !v.watch_namespace)
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
