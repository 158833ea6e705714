//! The installable parts stay consistent without Helm or a cluster: the chart's CRD is the
//! committed one, its values match their JSON Schema, its RBAC rules are exactly the reviewed
//! least-privilege set, and every example is an `ApiKey` the CRD schema and the types accept.
//!
//! `keysmith::validation::validate` on the examples lives in `core/tests/contract/examples.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use keysmith::api::ApiKey;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every YAML document of a file (empty and comment-only documents skipped).
fn yaml_documents(rel: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_document(rel: &str) -> Value {
    serde_saphyr::from_str::<Value>(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// A small JSON Schema / OpenAPI v3 checker: the keywords the CRD and values.schema.json use,
// except `pattern` and `format` (no regex engine among the dependencies; the patterns are
// re-checked by keysmith::validation). `additionalProperties` absent on an object with
// `properties` counts as false, as in a structural CRD schema where unknown fields are pruned:
// an example field the API server would silently drop is a mistake worth failing on.

fn check(schema: &Value, value: &Value, path: &str, root: &Value, errors: &mut Vec<String>) {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = reference
            .strip_prefix("#/")
            .map(|p| p.split('/').fold(root, |node, part| &node[part]))
            .unwrap_or(&Value::Null);
        assert!(!target.is_null(), "{path}: unresolvable $ref {reference}");
        return check(target, value, path, root, errors);
    }
    if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
        return;
    }
    if let Some(ty) = schema.get("type") {
        let types: Vec<&str> = match ty {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.iter().any(|t| has_type(value, t)) {
            errors.push(format!("{path}: {value} is not of type {types:?}"));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    if let Some(n) = value.as_f64() {
        if schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|min| n < min)
        {
            errors.push(format!("{path}: {n} is below the minimum"));
        }
        if schema
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|max| n > max)
        {
            errors.push(format!("{path}: {n} is above the maximum"));
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|min| len < min)
        {
            errors.push(format!("{path}: {s:?} is shorter than minLength"));
        }
        if schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|max| len > max)
        {
            errors.push(format!("{path}: {s:?} is longer than maxLength"));
        }
    }
    if let Some(items) = value.as_array() {
        let n = items.len() as u64;
        if schema
            .get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|min| n < min)
        {
            errors.push(format!("{path}: {n} items, fewer than minItems"));
        }
        if schema
            .get("maxItems")
            .and_then(Value::as_u64)
            .is_some_and(|max| n > max)
        {
            errors.push(format!("{path}: {n} items, more than maxItems"));
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(item_schema, item, &format!("{path}[{i}]"), root, errors);
            }
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = required.as_str().unwrap_or_default();
            if !object.contains_key(key) {
                errors.push(format!("{path}: required field {key} is missing"));
            }
        }
        for (key, child) in object {
            let child_path = format!("{path}.{key}");
            match (
                properties.and_then(|p| p.get(key)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => check(s, child, &child_path, root, errors),
                (None, Some(Value::Bool(true))) => {}
                (None, Some(s @ Value::Object(_))) => check(s, child, &child_path, root, errors),
                (None, _) if properties.is_some() => {
                    errors.push(format!("{child_path}: unknown field"))
                }
                (None, _) => {}
            }
        }
    }
}

fn has_type(value: &Value, ty: &str) -> bool {
    match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "null" => value.is_null(),
        _ => true,
    }
}

fn schema_errors(schema: &Value, value: &Value, path: &str) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, value, path, schema, &mut errors);
    errors
}

// ---------------------------------------------------------------------------------------------
// Chart

/// The chart renders the CRD from `files/apikeys.keysmith.dev.yaml` (templates/crds.yaml), a
/// link to the generated `crds/` file, so the two cannot drift. A `crds/` directory in the chart
/// would also be installed by `helm install`, and the install would then fail on the templated
/// CRD that already exists.
#[test]
fn chart_crd_is_a_link_to_the_committed_crd() {
    let link = Path::new(ROOT).join("charts/keysmith/files/apikeys.keysmith.dev.yaml");
    assert_eq!(
        fs::read_link(&link).expect("a symbolic link"),
        Path::new("../../../crds/apikeys.keysmith.dev.yaml")
    );
    assert_eq!(
        fs::canonicalize(&link).expect("the link resolves"),
        fs::canonicalize(Path::new(ROOT).join("crds/apikeys.keysmith.dev.yaml")).expect("crds/")
    );
    assert!(
        !Path::new(ROOT).join("charts/keysmith/crds").exists(),
        "charts/keysmith/crds/ would install the CRD a second time"
    );
}

#[test]
fn chart_metadata_names_the_app_version() {
    let chart = yaml_document("charts/keysmith/Chart.yaml");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "keysmith");
    assert_eq!(
        chart["appVersion"],
        env!("CARGO_PKG_VERSION"),
        "appVersion follows Cargo.toml"
    );
    // The repository is where the alerts' runbooks are read.
    let home = chart["home"].as_str().expect("home");
    assert_eq!(chart["sources"], serde_json::json!([home]));
    let values = yaml_document("charts/keysmith/values.yaml");
    assert_eq!(
        values["prometheusRule"]["runbookBaseUrl"],
        format!("{home}/blob/main/docs/operations.md")
    );
}

#[test]
fn values_parse_and_match_their_schema() {
    let schema: Value = serde_json::from_str(&read("charts/keysmith/values.schema.json"))
        .expect("values.schema.json is JSON");
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let values = yaml_document("charts/keysmith/values.yaml");
    let errors = schema_errors(&schema, &values, "values");
    assert!(
        errors.is_empty(),
        "values.yaml does not match values.schema.json:\n{}",
        errors.join("\n")
    );

    assert_eq!(
        values["mode"], "split",
        "the verifier does not run with the controller's rights by default"
    );
    assert_eq!(
        values["userRoles"]["aggregateToDefaultRoles"], false,
        "namespace editors do not mint ApiKeys unless granted"
    );
    assert_eq!(values["verifier"]["networkPolicy"]["enabled"], true);
    let mut wrong = values.clone();
    wrong["mode"] = "both".into();
    wrong["verifier"]["replicas"] = 0.into();
    wrong["typo"] = true.into();
    assert_eq!(
        schema_errors(&schema, &wrong, "values").len(),
        3,
        "the schema rejects bad values"
    );
}

/// (apiGroup, resource) -> verbs
type Rules = BTreeMap<(String, String), BTreeSet<String>>;

fn rules(rel: &str) -> Rules {
    let doc = yaml_document(rel);
    let list = doc
        .as_array()
        .unwrap_or_else(|| panic!("{rel} is a plain YAML list of rules"));
    let strings = |rule: &Value, key: &str| -> Vec<String> {
        rule[key]
            .as_array()
            .unwrap_or_else(|| panic!("{rel}: every rule lists {key}"))
            .iter()
            .map(|v| v.as_str().expect("strings").to_string())
            .collect()
    };
    let mut out = Rules::new();
    for rule in list {
        let keys: BTreeSet<&str> = rule
            .as_object()
            .expect("rule")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["apiGroups", "resources", "verbs"]),
            "{rel}: no resourceNames/nonResourceURLs"
        );
        for group in strings(rule, "apiGroups") {
            for resource in strings(rule, "resources") {
                let verbs = out.entry((group.clone(), resource)).or_default();
                verbs.extend(strings(rule, "verbs"));
            }
        }
    }
    out
}

fn expect(entries: &[(&str, &str, &[&str])]) -> Rules {
    entries
        .iter()
        .map(|(g, r, verbs)| {
            (
                (g.to_string(), r.to_string()),
                verbs.iter().map(|v| v.to_string()).collect(),
            )
        })
        .collect()
}

#[test]
fn controller_rules_are_least_privilege() {
    assert_eq!(
        rules("charts/keysmith/files/controller-rules.yaml"),
        expect(&[
            (
                "keysmith.dev",
                "apikeys",
                &["get", "list", "watch", "patch"]
            ),
            ("keysmith.dev", "apikeys/status", &["patch", "update"]),
            (
                "",
                "secrets",
                &[
                    "get", "list", "watch", "create", "update", "patch", "delete"
                ]
            ),
            ("events.k8s.io", "events", &["create", "patch"]),
            ("apps", "deployments", &["get", "patch"]),
            ("apps", "statefulsets", &["get", "patch"]),
            ("apps", "daemonsets", &["get", "patch"]),
            ("argoproj.io", "rollouts", &["get", "patch"]),
        ])
    );
    // Only with gateways.kong.enabled: a consenting KongConsumer's credential list.
    assert_eq!(
        rules("charts/keysmith/files/controller-kong-rules.yaml"),
        expect(&[(
            "configuration.konghq.com",
            "kongconsumers",
            &["get", "patch"]
        )])
    );
    // Only with accessLists.enabled: each key's Role and RoleBinding, no bind or escalate.
    assert_eq!(
        rules("charts/keysmith/files/controller-access-rules.yaml"),
        expect(&[
            (
                "rbac.authorization.k8s.io",
                "roles",
                &["get", "list", "watch", "create", "patch", "delete"]
            ),
            (
                "rbac.authorization.k8s.io",
                "rolebindings",
                &["get", "list", "watch", "create", "patch", "delete"]
            ),
        ])
    );
    assert_eq!(
        rules("charts/keysmith/files/controller-leader-election-rules.yaml"),
        expect(&[("coordination.k8s.io", "leases", &["get", "create", "patch"])])
    );
}

#[test]
fn verifier_rules_are_least_privilege() {
    let verifier = rules("charts/keysmith/files/verifier-rules.yaml");
    assert_eq!(
        verifier,
        expect(&[
            ("keysmith.dev", "apikeys", &["list", "watch"]),
            ("keysmith.dev", "apikeys/status", &["patch"]),
        ])
    );
    assert!(
        !verifier.contains_key(&(String::new(), "secrets".to_string())),
        "the verifier reads no Secret: required header values come as hashes in status"
    );
}

#[test]
fn rbac_templates_include_the_rule_files_verbatim() {
    for (template, files) in [
        (
            "charts/keysmith/templates/rbac-controller.yaml",
            &[
                "files/controller-rules.yaml",
                "files/controller-leader-election-rules.yaml",
            ][..],
        ),
        (
            "charts/keysmith/templates/rbac-verifier.yaml",
            &["files/verifier-rules.yaml"][..],
        ),
    ] {
        let text = read(template);
        for file in files {
            let include = format!("{{{{- .Files.Get \"{file}\" | nindent 2 }}}}");
            assert!(
                text.contains(&include),
                "{template} includes {file} with `{include}`"
            );
        }
        // Rules come only from the files: no inline `verbs:` that the test would not see.
        assert!(!text.contains("verbs:"), "{template} has inline rules");
        for kind in ["ClusterRole", "Role"] {
            assert!(
                text.contains(&format!("kind: {kind}\n")),
                "{template} has a {kind}"
            );
        }
    }
}

#[test]
fn deployments_run_restricted() {
    let values = yaml_document("charts/keysmith/values.yaml");
    for component in ["combined", "controller", "verifier"] {
        let pod = &values[component]["podSecurityContext"];
        let container = &values[component]["securityContext"];
        for context in [pod, container] {
            assert_eq!(context["runAsNonRoot"], true, "{component}");
            assert_eq!(context["runAsUser"], 65532, "{component}");
            assert_eq!(
                context["seccompProfile"]["type"], "RuntimeDefault",
                "{component}"
            );
        }
        assert_eq!(container["readOnlyRootFilesystem"], true, "{component}");
        assert_eq!(container["allowPrivilegeEscalation"], false, "{component}");
        assert_eq!(
            container["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{component}"
        );
        // Liveness and readiness on the metrics port every command serves.
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            assert_eq!(
                values[component][probe]["httpGet"],
                serde_json::json!({"path": path, "port": "metrics"}),
                "{component} {probe}"
            );
        }
    }
    let helpers = read("charts/keysmith/templates/_helpers.tpl");
    for needle in [
        "{{- with $v.podSecurityContext }}",
        "{{- with $v.securityContext }}",
        "{{- range $probe := list \"livenessProbe\" \"readinessProbe\" \"startupProbe\" }}",
    ] {
        assert!(helpers.contains(needle), "_helpers.tpl has {needle}");
    }
    for (template, component, command) in [
        ("deployment-combined.yaml", "combined", "run"),
        ("deployment-controller.yaml", "controller", "controller"),
        ("deployment-verifier.yaml", "verifier", "verifier"),
    ] {
        let text = read(&format!("charts/keysmith/templates/{template}"));
        for needle in [
            "include \"keysmith.deployment\"".to_string(),
            format!("\"command\" \"{command}\""),
            format!("\"values\" .Values.{component}"),
        ] {
            assert!(text.contains(&needle), "{template} has {needle}");
        }
    }
}

#[test]
fn alerts_use_the_spec_metric_names() {
    let text = read("charts/keysmith/templates/prometheusrule.yaml");
    for needle in [
        "alert: KeysmithTokenExpiringWithoutRotation",
        "alert: KeysmithReconcileErrors",
        "alert: KeysmithVerifierNotReady",
        "keysmith_token_expiry_timestamp_seconds",
        "by (namespace, apikey, token)",
        "keysmith_reconcile_errors_total{",
    ] {
        assert!(
            text.contains(needle),
            "prometheusrule.yaml contains {needle}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Examples

const EXAMPLES: [&str; 5] = [
    "cms-three-tokens.yaml",
    "grants.yaml",
    "project-token.yaml",
    "expiring-keys.yaml",
    "public-delivery.yaml",
];

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(Path::new(ROOT).join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// Every ApiKey document of every example, as (file, JSON, typed).
fn example_apikeys() -> Vec<(String, Value, ApiKey)> {
    let mut out = Vec::new();
    for path in example_files() {
        let rel = format!("examples/{}", path.file_name().unwrap().to_string_lossy());
        for doc in yaml_documents(&rel) {
            if doc["kind"] == "ApiKey" {
                let key: ApiKey = serde_json::from_value(doc.clone()).unwrap_or_else(|e| {
                    panic!("{rel}: {} is not an ApiKey: {e}", doc["metadata"]["name"])
                });
                out.push((rel.clone(), doc, key));
            }
        }
    }
    out
}

#[test]
fn the_five_seed_examples_exist_and_explain_themselves() {
    let present: Vec<String> = example_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for name in EXAMPLES {
        assert!(present.iter().any(|p| p == name), "examples/{name} exists");
        let text = read(&format!("examples/{name}"));
        assert!(
            text.starts_with("# Scenario:"),
            "examples/{name} opens with the scenario it models"
        );
        assert!(
            text.contains("kubectl ") && text.contains("curl "),
            "examples/{name} says what to try"
        );
    }
}

#[test]
fn every_example_document_parses_and_every_apikey_deserializes() {
    for path in example_files() {
        let rel = format!("examples/{}", path.file_name().unwrap().to_string_lossy());
        let docs = yaml_documents(&rel);
        assert!(!docs.is_empty(), "{rel} has documents");
        for doc in &docs {
            assert!(
                doc["apiVersion"].is_string() && doc["kind"].is_string(),
                "{rel}: every document is a Kubernetes object"
            );
            assert_eq!(
                doc["metadata"]["namespace"], "default",
                "{rel}: examples live in `default`"
            );
        }
    }
    let keys = example_apikeys();
    assert!(keys.len() >= 7, "found {} ApiKeys", keys.len());
    for (rel, doc, key) in &keys {
        assert_eq!(doc["apiVersion"], "keysmith.dev/v1alpha1", "{rel}");
        assert!(key.metadata.name.is_some(), "{rel}: named");
    }
}

#[test]
fn every_example_apikey_matches_the_crd_schema() {
    let crd = yaml_document("crds/apikeys.keysmith.dev.yaml");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut errors = Vec::new();
    for (rel, doc, _) in example_apikeys() {
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for section in ["spec", "status"] {
            if let Some(value) = doc.get(section) {
                let path = format!("{rel}:{name}.{section}");
                check(
                    &schema["properties"][section],
                    value,
                    &path,
                    schema,
                    &mut errors,
                );
            }
        }
    }
    assert!(
        errors.is_empty(),
        "examples violate the CRD schema:\n{}",
        errors.join("\n")
    );
}

#[test]
fn examples_cover_what_the_spec_lists() {
    let keys = example_apikeys();
    let by_name = |name: &str| {
        keys.iter()
            .find(|(_, _, k)| k.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("example ApiKey {name}"))
            .2
            .clone()
    };

    let cms = by_name("acme-cms");
    let slots: Vec<(&str, &str)> = cms
        .spec
        .tokens
        .iter()
        .map(|t| (t.name.as_str(), t.prefix()))
        .collect();
    assert_eq!(
        slots,
        [
            ("management", "acme_sk_"),
            ("delivery", "acme_dt_"),
            ("preview", "acme_pt_")
        ]
    );
    assert!(
        cms.spec
            .tokens
            .iter()
            .all(|t| t.encoding() == keysmith::api::Encoding::Hex)
    );
    assert!(cms.spec.grants.is_empty());
    assert_eq!(
        cms.spec.tokens[0]
            .grants
            .as_ref()
            .map(|g| g[0].actions.len()),
        Some(5)
    );
    assert!(
        cms.spec.tokens[1..]
            .iter()
            .all(|t| t.grants.as_deref() == Some(&[][..]))
    );
    assert_eq!(cms.secret_name(), "acme-cms-tokens");

    let grants = by_name("editorial-bot").spec.grants;
    assert!(
        grants
            .iter()
            .any(|g| g.effect == keysmith::api::Effect::Deny)
    );
    assert!(grants.iter().any(|g| g.fields.is_some()));
    let conditions: Vec<_> = grants
        .iter()
        .filter_map(|g| g.conditions.as_ref())
        .collect();
    assert!(conditions.iter().any(|c| c.own == Some(true)));
    assert!(conditions.iter().any(|c| c.status.is_some()));
    assert!(conditions.iter().any(|c| c.locales.is_some()));
    assert!(
        grants
            .iter()
            .flat_map(|g| g.resources.iter().flatten())
            .any(|r| r.starts_with("workspace:"))
    );

    let project = by_name("checkout-api-production").spec;
    assert_eq!(project.environment.as_deref(), Some("production"));
    let restrictions = project.restrictions.expect("restrictions");
    assert!(!restrictions.ip_allow_list.is_empty());
    assert!(restrictions.required_headers[0].value_from.is_some());

    assert_eq!(
        by_name("cms-delivery-key").spec.expires_after.as_deref(),
        Some("8760h")
    );
    assert_eq!(
        by_name("cms-management-key").spec.expires_after.as_deref(),
        Some("4380h")
    );
    for name in ["cms-delivery-key", "cms-management-key"] {
        let rotation = by_name(name).spec.rotation.expect("rotation");
        assert!(
            rotation.every.is_none()
                && rotation.schedule.is_none()
                && rotation.renew_before.is_none()
        );
        assert!(rotation.trigger.is_some(), "{name} regenerates by trigger");
    }

    for name in ["storefront-web", "storefront-mobile"] {
        let spec = by_name(name).spec;
        assert_eq!(spec.tokens[0].prefix(), "cmspub_");
        let rotation = spec.rotation.expect("rotation");
        assert_eq!(
            (rotation.every.as_deref(), rotation.overlap.as_deref()),
            (Some("90d"), Some("24h"))
        );
    }

    assert!(
        keys.iter().any(|(_, _, k)| k
            .spec
            .secret
            .as_ref()
            .is_some_and(|s| !s.restart_targets.is_empty())),
        "some example uses restartTargets"
    );
}

#[test]
fn the_usage_api_is_opt_in_and_grants_only_what_docs_security_lists() {
    let values = yaml_document("charts/keysmith/values.yaml");
    assert_eq!(
        values["usage"]["enabled"], false,
        "the usage API's cluster-wide review rights and APIService are opted into"
    );
    let text = read("charts/keysmith/templates/usage-api.yaml");
    let body = text
        .split_once("*/}}\n")
        .expect("the template opens with its comment")
        .1;
    assert!(
        body.starts_with("{{- if .Values.usage.enabled }}\n")
            && body.trim_end().ends_with("{{- end }}"),
        "every usage object is behind usage.enabled"
    );
    let verbs: Vec<&str> = body
        .lines()
        .filter_map(|l| l.trim().strip_prefix("verbs: "))
        .collect();
    assert_eq!(verbs, [r#"["get"]"#, r#"["list", "watch"]"#]);
    for resource in [
        r#"resources: ["apikeyusages"]"#,
        r#"resources: ["endpointslices"]"#,
    ] {
        assert!(body.contains(resource), "{resource}");
    }
    let mut bound: Vec<&str> = body
        .split("roleRef:")
        .skip(1)
        .filter_map(|r| r.lines().find_map(|l| l.trim().strip_prefix("name: ")))
        .collect();
    bound.sort();
    assert_eq!(
        bound,
        [
            "extension-apiserver-authentication-reader",
            "keysmith-usage-reader",
            "system:auth-delegator",
            r#"{{ include "keysmith.fullname" . }}-usage-peers"#,
        ]
    );
    // Readers join admin and edit, not view: usage shows client addresses and user agents.
    assert!(body.contains(r#"rbac.authorization.k8s.io/aggregate-to-edit: "true""#));
    assert!(body.contains(r#"rbac.authorization.k8s.io/aggregate-to-admin: "true""#));
    assert!(!body.contains("aggregate-to-view"));
}
