//! `docs/api-reference.md` is the CRD's schema as Markdown: the committed file must equal what
//! [`keysmith_core::crd::api_reference_markdown`] generates, so the reference cannot drift from the CRD.

use keysmith_core::crd::{API_REFERENCE_COMMAND, api_reference_markdown, apikey_crd};
use serde_json::Value;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api-reference.md");

#[test]
fn committed_api_reference_equals_generated() {
    let generated = api_reference_markdown();
    if std::env::var_os("KEYSMITH_WRITE_API_REFERENCE").is_some() {
        std::fs::write(PATH, &generated).expect("docs/api-reference.md is writable");
    }
    let committed = std::fs::read_to_string(PATH).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/api-reference.md is stale (the API types changed): run `{API_REFERENCE_COMMAND}`"
    );
}

/// Every field path of the schema, e.g. `spec.tokens[].prefix`.
fn field_paths(node: &Value, path: &str, out: &mut Vec<String>) {
    for (name, child) in node["properties"].as_object().into_iter().flatten() {
        let p = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        out.push(p.clone());
        field_paths(child, &p, out);
        field_paths(&child["items"], &format!("{p}[]"), out);
    }
}

#[test]
fn every_spec_and_status_field_has_a_row() {
    let crd = serde_json::to_value(apikey_crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut paths = Vec::new();
    field_paths(&schema["properties"]["spec"], "spec", &mut paths);
    field_paths(&schema["properties"]["status"], "status", &mut paths);
    assert!(paths.len() > 60, "the walk found the schema: {paths:?}");
    let reference = api_reference_markdown();
    let missing: Vec<_> = paths
        .iter()
        .filter(|p| !reference.contains(&format!("| `{p}` |")))
        .collect();
    assert!(missing.is_empty(), "fields without a row: {missing:#?}");
}

#[test]
fn rows_carry_type_requiredness_bounds_and_rules() {
    let reference = api_reference_markdown();
    let row = |path: &str| {
        reference
            .lines()
            .find(|l| l.starts_with(&format!("| `{path}` |")))
            .unwrap_or_else(|| panic!("no row for {path}"))
            .to_owned()
    };
    let bytes = row("spec.tokens[].bytes");
    assert!(bytes.contains("| integer (int32) | no |"), "{bytes}");
    assert!(
        bytes.contains("default `32`") && bytes.contains("16 to 64"),
        "{bytes}"
    );
    let name = row("spec.tokens[].name");
    assert!(
        name.contains("| string | yes |") && name.contains("1 to 56 characters"),
        "{name}"
    );
    let encoding = row("spec.tokens[].encoding");
    assert!(encoding.contains("one of `base62`, `hex`"), "{encoding}");
    let tokens = row("spec.tokens");
    assert!(
        tokens.contains("list of object | yes | 1 to 8 items"),
        "{tokens}"
    );
    assert!(reference.contains("* Rule: set at most one of rotation.every and rotation.schedule."));
    assert!(
        reference.contains("| Reason | always |"),
        "printer columns are listed"
    );
}
