//! The `apikeys.keysmith.dev` CustomResourceDefinition, generated from the Rust types in [`crate::api`].
//!
//! Two touches on top of what kube and schemars derive, both for `kubectl explain`: descriptions
//! lose the line breaks of wrapped doc comments (kubectl prints them verbatim, mid-sentence), and
//! `status.conditions[].type`/`.reason` list what Keysmith writes instead of the generic text of
//! the Kubernetes `Condition` type.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use crate::api::ApiKey;
use crate::planner::conditions::{DISABLED, EXPIRED, EXPIRING, READY, reason};

mod reference;

pub use reference::{API_REFERENCE_COMMAND, api_reference_markdown};

/// Every reason Keysmith writes: the value, the conditions that carry it, and what it means.
/// `status.conditions[].reason` in the CRD is written from this table.
pub const REASONS: &[(&str, &str, &str)] = &[
    (
        reason::MINTED,
        "Ready=True",
        "the tokens were minted (first mint, or a lost or edited Secret was re-minted)",
    ),
    (reason::ROTATED, "Ready=True", "the tokens were rotated"),
    (
        reason::INVALID_SPEC,
        "Ready=False",
        "the spec breaks a rule; the message names the field and the rule",
    ),
    (
        reason::SECRET_CONFLICT,
        "Ready=False",
        "the Secret exists and this ApiKey does not own it (see `spec.secret.adopt`)",
    ),
    (
        reason::HEADER_SECRET_MISSING,
        "Ready=False",
        "a Secret or key named by `restrictions.requiredHeaders[].valueFrom` is missing, or the \
         Secret does not name this key in its `keysmith.dev/header-source` annotation",
    ),
    (
        reason::DUPLICATE_PERSONAL_KEY,
        "Ready=False",
        "the owner already has a personal key in this namespace, the one minted (the message \
         names it); this one is minted once that one is deleted",
    ),
    (
        reason::PERSONAL_KEYS_DISABLED,
        "Ready=False",
        "the key is personal (`spec.owner`) and this installation does not mint personal keys \
         (the controller's `--personal-keys`)",
    ),
    (
        reason::ACCESS_CONFLICT,
        "Ready=False",
        "a Role or RoleBinding named `<apikey>.keysmith-access` exists and this ApiKey does not \
         own it, so `spec.access` is not in effect",
    ),
    (
        reason::ACCESS_LISTS_OFF,
        "Ready=False",
        "`spec.access` is set and Keysmith was installed without `accessLists.enabled`: nobody \
         is given read access",
    ),
    (
        reason::API_ERROR,
        "Ready=False",
        "a Kubernetes API call failed; the message says which",
    ),
    (
        reason::EXPIRED,
        "Ready=False, Expired=True",
        "the key's `expiresAt` or a current token's expiry has passed",
    ),
    (
        reason::DISABLED,
        "Ready=False, Disabled=True",
        "`spec.disabled` is true",
    ),
    (
        reason::EXPIRY_APPROACHING,
        "Expiring=True",
        "a current token or the key ends within its warning window and will not be renewed in time",
    ),
    (
        reason::NONE,
        "Expiring, Expired or Disabled False",
        "nothing to report",
    ),
];

/// The CRD as Kubernetes should receive it.
pub fn apikey_crd() -> CustomResourceDefinition {
    let mut crd = ApiKey::crd();
    for version in &mut crd.spec.versions {
        let schema = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut());
        if let Some(schema) = schema {
            document_conditions(schema);
            unwrap_descriptions(schema);
        }
    }
    crd
}

/// The CRD as YAML, exactly as committed under `crds/`.
pub fn apikey_crd_yaml() -> String {
    serde_saphyr::to_string(&apikey_crd()).expect("a CRD always serializes to YAML")
}

/// The description of `status.conditions[].reason`: every value of [`REASONS`], with its meaning.
pub fn condition_reason_description() -> String {
    let listed: Vec<String> = REASONS
        .iter()
        .map(|(reason, carried_by, meaning)| format!("- `{reason}` ({carried_by}): {meaning}."))
        .collect();
    format!(
        "Why the condition has its status, in CamelCase. Keysmith writes:\n\n{}",
        listed.join("\n")
    )
}

fn document_conditions(schema: &mut JSONSchemaProps) {
    let Some(condition) = property(schema, "status")
        .and_then(|status| property(status, "conditions"))
        .and_then(|conditions| match conditions.items.as_mut() {
            Some(JSONSchemaPropsOrArray::Schema(item)) => Some(item.as_mut()),
            _ => None,
        })
    else {
        return;
    };
    if let Some(type_) = property(condition, "type") {
        type_.description = Some(format!(
            "The aspect this condition describes: `{READY}`, `{EXPIRING}`, `{EXPIRED}` or `{DISABLED}`."
        ));
    }
    if let Some(reason) = property(condition, "reason") {
        reason.description = Some(condition_reason_description());
    }
}

fn property<'a>(schema: &'a mut JSONSchemaProps, name: &str) -> Option<&'a mut JSONSchemaProps> {
    schema.properties.as_mut()?.get_mut(name)
}

/// Rewrites every description under `schema` with [`unwrap_lines`].
fn unwrap_descriptions(schema: &mut JSONSchemaProps) {
    if let Some(description) = schema.description.as_mut() {
        *description = unwrap_lines(description);
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        unwrap_descriptions(child);
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(item)) => unwrap_descriptions(item),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => {
            items.iter_mut().for_each(unwrap_descriptions)
        }
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(additional)) = schema.additional_properties.as_mut() {
        unwrap_descriptions(additional);
    }
    for branch in [&mut schema.all_of, &mut schema.any_of, &mut schema.one_of]
        .into_iter()
        .flatten()
        .flatten()
    {
        unwrap_descriptions(branch);
    }
}

/// Joins the lines of each paragraph with spaces. Blank-line paragraph breaks stay, and so does
/// the break before a list item (`- `, `* `, `1. `), so lists still read as lists.
pub fn unwrap_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, paragraph) in text.split("\n\n").enumerate() {
        if i > 0 {
            out.push_str("\n\n");
        }
        for (j, line) in paragraph.lines().map(str::trim).enumerate() {
            if j > 0 {
                out.push(if is_list_item(line) { '\n' } else { ' ' });
            }
            out.push_str(line);
        }
    }
    out
}

/// Whether a line starts a list item.
pub fn is_list_item(line: &str) -> bool {
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    line.starts_with("- ")
        || line.starts_with("* ")
        || (digits > 0 && line[digits..].starts_with(". "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_wrapped_lines_and_keeps_paragraphs_and_lists() {
        assert_eq!(
            unwrap_lines("One sentence\nwrapped twice\n  here.\n\nNext paragraph:\n- a\n- b\n1. c"),
            "One sentence wrapped twice here.\n\nNext paragraph:\n- a\n- b\n1. c"
        );
    }
}
