//! The committed CRD matches the Rust types, and its schema is structural by Kubernetes' rules.

use keysmith::crd::{apikey_crd, apikey_crd_yaml};
use serde_json::Value;

const COMMITTED: &str = include_str!("../../crds/apikeys.keysmith.dev.yaml");

#[test]
fn committed_crd_equals_generated() {
    assert!(
        COMMITTED == apikey_crd_yaml(),
        "crds/apikeys.keysmith.dev.yaml is stale: run `cargo run -- crd > crds/apikeys.keysmith.dev.yaml`"
    );
}

#[test]
fn crd_command_prints_the_committed_crd() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .arg("crd")
        .output()
        .expect("keysmith runs");
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), COMMITTED);
}

fn schema() -> Value {
    let crd = serde_json::to_value(apikey_crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Paths where unknown fields are meant to be kept: only the served policy, a copy of spec
/// fields the spec's own schema checked when the controller accepted it.
const PRESERVE_UNKNOWN_ALLOWED: &[&str] = &[".status.servedPolicy"];

/// The structural-schema rules of
/// https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema
fn structural_violations(node: &Value, path: &str, out: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        out.push(format!("{path}: schema node is not an object"));
        return;
    };
    if obj.contains_key("$ref") {
        out.push(format!("{path}: $ref is not allowed"));
    }
    for combinator in ["anyOf", "oneOf", "allOf", "not"] {
        if let Some(branches) = obj.get(combinator) {
            // Inside a value validation, type/description/default/nullable/additionalProperties must not appear.
            for (i, b) in branches.as_array().into_iter().flatten().enumerate() {
                for forbidden in [
                    "type",
                    "description",
                    "default",
                    "nullable",
                    "additionalProperties",
                ] {
                    if b.get(forbidden).is_some() {
                        out.push(format!(
                            "{path}.{combinator}[{i}]: `{forbidden}` is not allowed here"
                        ));
                    }
                }
            }
        }
    }
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if preserve && !PRESERVE_UNKNOWN_ALLOWED.contains(&path) {
        out.push(format!(
            "{path}: x-kubernetes-preserve-unknown-fields where it is not meant"
        ));
    }
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let ty = obj.get("type").and_then(Value::as_str);
    if ty.is_none() && !preserve && !int_or_string {
        out.push(format!("{path}: no type"));
    }
    match ty {
        Some("object") => {
            let props = obj.get("properties").and_then(Value::as_object);
            let additional = obj.get("additionalProperties");
            if props.is_some() && additional.is_some() {
                out.push(format!("{path}: both properties and additionalProperties"));
            }
            for (name, child) in props.into_iter().flatten() {
                structural_violations(child, &format!("{path}.{name}"), out);
            }
            if let Some(additional) = additional.filter(|a| a.is_object()) {
                structural_violations(additional, &format!("{path}[*]"), out);
            }
            if props.is_none() && additional.is_none() && !preserve && !path.is_empty() {
                out.push(format!("{path}: object without properties"));
            }
        }
        Some("array") => match obj.get("items") {
            Some(items) => structural_violations(items, &format!("{path}[]"), out),
            None => out.push(format!("{path}: array without items")),
        },
        _ => {}
    }
}

#[test]
fn schema_is_structural() {
    let mut violations = Vec::new();
    structural_violations(&schema(), "", &mut violations);
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn structural_check_catches_violations() {
    let bad = serde_json::json!({
        "type": "object",
        "properties": {
            "untyped": {},
            "ref": { "$ref": "#/definitions/x", "type": "string" },
            "list": { "type": "array" },
            "choice": { "anyOf": [{ "type": "string" }, { "type": "integer" }] },
            "free": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
        }
    });
    let mut violations = Vec::new();
    structural_violations(&bad, "", &mut violations);
    for expected in [
        ".untyped: no type",
        ".ref: $ref",
        ".list: array without items",
        ".choice.anyOf[0]",
        ".free: x-kubernetes-preserve",
    ] {
        assert!(
            violations.iter().any(|v| v.contains(expected)),
            "missing {expected} in {violations:#?}"
        );
    }
}

fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, p| &v["properties"][p])
}

#[test]
fn schema_carries_the_spec_constraints() {
    let s = schema();
    let slot = &at(&s, &["spec", "tokens"])["items"];
    assert_eq!(at(&s, &["spec", "tokens"])["maxItems"], 8);
    assert_eq!(at(&s, &["spec", "tokens"])["minItems"], 1);
    assert_eq!(at(&s, &["spec", "tokens"])["x-kubernetes-list-type"], "map");
    assert_eq!(at(slot, &["prefix"])["pattern"], "^[A-Za-z0-9_]{0,32}$");
    assert_eq!(at(slot, &["prefix"])["default"], "ks_");
    assert_eq!(at(slot, &["bytes"])["minimum"].as_f64(), Some(16.0));
    assert_eq!(at(slot, &["bytes"])["maximum"].as_f64(), Some(64.0));
    assert_eq!(at(slot, &["bytes"])["default"], 32);
    assert_eq!(
        at(slot, &["encoding"])["enum"],
        serde_json::json!(["base62", "hex"])
    );
    assert_eq!(
        at(&s, &["spec", "secret", "restartTargets"])["items"]["properties"]["kind"]["enum"],
        serde_json::json!(["Deployment", "StatefulSet", "DaemonSet", "Rollout"])
    );
    let rules =
        serde_json::to_string(&at(&s, &["spec", "rotation"])["x-kubernetes-validations"]).unwrap();
    assert!(
        rules.contains("duration(self.overlap) < duration(self.every)"),
        "{rules}"
    );
    let spec_rules = serde_json::to_string(&at(&s, &["spec"])["x-kubernetes-validations"]).unwrap();
    assert!(
        spec_rules.contains("duration(self.rotation.renewBefore) < duration(self.expiresAfter)")
    );
    assert_eq!(
        at(&s, &["status", "tokens"])["x-kubernetes-list-map-keys"],
        serde_json::json!(["name"])
    );
}

#[test]
fn crd_names_and_columns() {
    let crd = apikey_crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("apikeys.keysmith.dev"));
    assert_eq!(crd.spec.names.short_names, Some(vec!["ak".to_string()]));
    assert_eq!(crd.spec.scope, "Namespaced");
    let version = &crd.spec.versions[0];
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Ready",
            "Reason",
            "Tokens",
            "Expires",
            "Next Rotation",
            "Age",
            "Message"
        ]
    );
    let wide_only: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .filter(|c| c.priority.unwrap_or(0) > 0)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        wide_only,
        ["Message"],
        "only the long message waits for -o wide"
    );
}

/// Every property of the schema has a description, so `kubectl explain` helps.
#[test]
fn every_field_is_documented() {
    fn walk(node: &Value, path: &str, out: &mut Vec<String>) {
        for (name, child) in node["properties"].as_object().into_iter().flatten() {
            let p = format!("{path}.{name}");
            if child
                .get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
                && !["apiVersion", "kind", "metadata"].contains(&name.as_str())
            {
                out.push(p.clone());
            }
            walk(child, &p, out);
            walk(&child["items"], &format!("{p}[]"), out);
        }
    }
    let mut undocumented = Vec::new();
    walk(&schema(), "", &mut undocumented);
    assert!(
        undocumented.is_empty(),
        "fields without description: {undocumented:#?}"
    );
}

/// Every list, map and string under `node` that has no upper bound (maxItems, maxProperties,
/// maxLength, or an enum).
fn unbounded(node: &Value, path: &str, out: &mut Vec<String>) {
    let bound = |key: &str| node.get(key).is_some() || node.get("enum").is_some();
    match node.get("type").and_then(Value::as_str) {
        Some("string") if !bound("maxLength") => out.push(format!("{path}: string")),
        Some("array") => {
            if !bound("maxItems") {
                out.push(format!("{path}: list"));
            }
            unbounded(&node["items"], &format!("{path}[]"), out);
        }
        Some("object") => {
            if let Some(additional) = node.get("additionalProperties").filter(|a| a.is_object()) {
                if !bound("maxProperties") {
                    out.push(format!("{path}: map"));
                }
                unbounded(additional, &format!("{path}[*]"), out);
            }
            for (name, child) in node["properties"].as_object().into_iter().flatten() {
                unbounded(child, &format!("{path}.{name}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_list_map_and_string_of_the_spec_is_bounded() {
    let schema = schema();
    let mut found = Vec::new();
    unbounded(&schema["properties"]["spec"], "spec", &mut found);
    for list in ["conditions", "tokens"] {
        if schema["properties"]["status"]["properties"][list]["maxItems"].is_null() {
            found.push(format!("status.{list}: list"));
        }
    }
    assert!(found.is_empty(), "unbounded: {found:#?}");
}

#[test]
fn map_keys_are_bounded_by_a_rule() {
    let schema = schema();
    let spec = &schema["properties"]["spec"]["properties"];
    let maps = [
        &spec["tokens"]["items"]["properties"]["metadata"],
        &spec["secret"]["properties"]["template"]["properties"]["labels"],
        &spec["secret"]["properties"]["template"]["properties"]["annotations"],
    ];
    for map in maps {
        let rules = map["x-kubernetes-validations"].to_string();
        assert!(rules.contains("k.size() <="), "{map}");
    }
}

/// Every description in the CRD, with its path.
fn descriptions(node: &Value, path: &str, out: &mut Vec<(String, String)>) {
    if let Some(d) = node.get("description").and_then(Value::as_str) {
        out.push((path.to_owned(), d.to_owned()));
    }
    for (name, child) in node["properties"].as_object().into_iter().flatten() {
        descriptions(child, &format!("{path}.{name}"), out);
    }
    descriptions_below(&node["items"], &format!("{path}[]"), out);
    descriptions_below(&node["additionalProperties"], &format!("{path}[*]"), out);
}

fn descriptions_below(node: &Value, path: &str, out: &mut Vec<(String, String)>) {
    if node.is_object() {
        descriptions(node, path, out);
    }
}

/// `kubectl explain` prints descriptions verbatim: a line break inside a paragraph shows as a
/// break in mid-sentence. Paragraph breaks and the breaks before list items are meant.
#[test]
fn no_description_breaks_a_line_in_mid_paragraph() {
    let mut found = Vec::new();
    descriptions(&schema(), "", &mut found);
    assert!(found.len() > 80, "the walk reached the whole schema");
    let broken: Vec<_> = found
        .iter()
        .filter(|(_, d)| {
            d.split("\n\n").any(|paragraph| {
                paragraph
                    .lines()
                    .skip(1)
                    .any(|line| !keysmith::crd::is_list_item(line))
            })
        })
        .collect();
    assert!(broken.is_empty(), "hard line breaks: {broken:#?}");
}

/// The reason constants of `core/src/planner/conditions.rs`, read from the source so that a reason
/// added there without documentation fails this test.
fn reason_constants() -> Vec<String> {
    let source = include_str!("../../core/src/planner/conditions.rs");
    let module = source
        .split_once("pub mod reason {")
        .and_then(|(_, rest)| rest.split_once("\n}"))
        .expect("conditions.rs has a `pub mod reason` block")
        .0;
    module
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub const "))
        .filter_map(|decl| decl.split('"').nth(1))
        .map(str::to_owned)
        .collect()
}

#[test]
fn condition_reason_lists_every_reason_keysmith_writes() {
    let s = schema();
    let condition = &at(&s, &["status", "conditions"])["items"];
    let description = at(condition, &["reason"])["description"]
        .as_str()
        .expect("reason has a description");
    let reasons = reason_constants();
    assert!(reasons.len() >= 10, "found the constants: {reasons:?}");
    let undocumented: Vec<_> = reasons
        .iter()
        .filter(|r| !description.contains(&format!("`{r}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "reasons missing from status.conditions[].reason: {undocumented:?}"
    );
    let types = at(condition, &["type"])["description"].as_str().unwrap();
    for type_ in ["Ready", "Expiring", "Expired", "Disabled"] {
        assert!(types.contains(&format!("`{type_}`")), "{types}");
    }
}

/// The planner and the controller write reasons only through the constants the test above reads,
/// never as string literals.
#[test]
fn reasons_are_written_through_the_constants() {
    let sources = [
        include_str!("../../core/src/planner/mod.rs"),
        include_str!("../../core/src/planner/readiness.rs"),
        include_str!("../../src/controller/apply.rs"),
        include_str!("../../src/controller/mod.rs"),
    ];
    for source in sources {
        for call in source.split("Desired::new(").skip(1) {
            let reason = call.split(',').nth(2).unwrap_or_default().trim();
            assert!(
                !reason.starts_with('"'),
                "a literal reason: Desired::new({call:.80}"
            );
        }
        // A JSON body (`"reason": ...`) or a typed Condition (`reason: ...`).
        for field in ["\"reason\":", "reason:"] {
            for write in source.split(field).skip(1) {
                assert!(
                    !write.trim_start().starts_with('"'),
                    "a literal reason: {write:.80}"
                );
            }
        }
    }
}
