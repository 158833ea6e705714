//! Admission: what the server checks and fills in before it stores a write.
//! Names, namespaces, `apiVersion`/`kind`, a custom object's schema (pruning,
//! defaults, validation) and CEL rules, and each built-in kind's own rules
//! (Secret `stringData`, Namespace phase, CRD names and established status).

use base64::Engine;
use serde_json::{Value, json};

use crate::cel::Rules;
use crate::error::{ApiError, ApiResult, Cause};
use crate::registry::{GroupResource, ResourceType};
use crate::schema;
use crate::state::{State, meta_str, now};

/// What the server does with fields a custom object's schema does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and return a warning (the server default).
    #[default]
    Warn,
    /// Reject the request.
    Strict,
}

impl FieldValidation {
    /// Parse the `fieldValidation` query parameter.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            _ => FieldValidation::Warn,
        }
    }
}

/// Whether `name` is a lowercase RFC 1123 subdomain.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The name a created object may have.
pub fn validate_name(rt: &ResourceType, name: &str) -> ApiResult<()> {
    // RBAC objects use path-segment names (`system:controller:x` is legal).
    let ok = if rt.group == "rbac.authorization.k8s.io" {
        !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
    } else {
        is_dns_subdomain(name)
    };
    if ok {
        return Ok(());
    }
    Err(ApiError::invalid(
        &rt.group,
        &rt.kind,
        name,
        vec![Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!(
                "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ),
        )],
    ))
}

/// A namespaced object can only be created in an existing namespace that is not terminating.
pub fn check_namespace(st: &State, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<()> {
    if !rt.namespaced {
        return Ok(());
    }
    if ns.is_empty() {
        return Err(ApiError::bad_request("namespace is required"));
    }
    match st.store.get(&GroupResource::new("", "namespaces"), "", ns) {
        None => Err(ApiError::not_found("", "namespaces", ns)),
        Some(n) if !n["metadata"]["deletionTimestamp"].is_null() => {
            Err(ApiError::forbidden(format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                rt.plural
            )))
        }
        Some(_) => Ok(()),
    }
}

/// A body's `apiVersion` and `kind`, when given, must be the ones the URL names.
pub fn check_type(rt: &ResourceType, obj: &Value) -> ApiResult<()> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    if !api_version.is_empty() && api_version != rt.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if !kind.is_empty() && kind != rt.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    Ok(())
}

/// An object being deleted may lose finalizers but not gain any.
pub fn forbid_new_finalizers(
    rt: &ResourceType,
    name: &str,
    old: &Value,
    obj: &Value,
) -> ApiResult<()> {
    if old["metadata"]["deletionTimestamp"].is_null() {
        return Ok(());
    }
    let before: Vec<&Value> = old["metadata"]["finalizers"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let added: Vec<String> = obj["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| !before.contains(f))
        .map(|f| f.to_string())
        .collect();
    if added.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(
        &rt.group,
        &rt.kind,
        name,
        vec![Cause::new(
            "FieldValueForbidden",
            "metadata.finalizers",
            format!(
                "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                added.join(", ")
            ),
        )],
    ))
}

/// Schema, CEL and kind-specific admission of an object about to be stored
/// (`old` is the stored object on an update); returns warnings.
pub fn admit(
    rt: &ResourceType,
    obj: &mut Value,
    old: Option<&Value>,
    field_validation: FieldValidation,
) -> ApiResult<Vec<String>> {
    let mut warnings = Vec::new();
    let name = meta_str(obj, "name").to_string();
    // Metadata is validated with the rest of the object: one 422 lists both. A real server
    // validates a custom object's metadata three times on an update and lists each cause
    // three times (naming it once in the message).
    let mut causes = metadata_causes(obj);
    if rt.crd.is_some() && old.is_some() {
        causes = causes
            .into_iter()
            .flat_map(|c| [c.clone(), c.clone(), c])
            .collect();
    }
    if let Some(crd) = rt.crd.as_ref()
        && let (Some(schema), Some(rules)) = (&crd.schema, &crd.rules)
    {
        warnings.extend(prune_unknown_fields(rt, schema, obj, field_validation)?);
        *obj = schema::apply_defaults(schema, obj);
        causes.extend(schema::validate(schema, obj));
        if stops_cel(&causes) {
            if rules.any() {
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    "<nil>",
                    "Invalid value: null: some validation rules were not checked because \
                     the object was invalid; correct the existing errors to complete validation",
                ));
            }
        } else {
            warnings.extend(evaluate_rules(rt, rules, obj, old, &mut causes));
        }
        whole_numbers_as_integers(obj);
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(&rt.group, &rt.kind, &name, causes));
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "secrets") => {
            fold_string_data(obj);
            secret_size(obj, &rt.kind, &name)?;
        }
        ("", "namespaces") => {
            obj["spec"]["finalizers"] = json!(["kubernetes"]);
            if obj["metadata"]["deletionTimestamp"].is_null() {
                obj["status"] = json!({"phase": "Active"});
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => admit_crd(obj, &name)?,
        ("events.k8s.io", "events") => {
            if let Some(old) = old {
                immutable_event_fields(obj, old, &name)?;
            }
        }
        _ => {}
    }
    Ok(warnings)
}

/// The API server's limit on all annotations of one object together (`TotalAnnotationSizeLimitB`).
const ANNOTATIONS_LIMIT: usize = 256 * 1024;

/// What is wrong with an object's metadata: annotations whose keys and values together exceed
/// 256 KiB in UTF-8 bytes (what `kubectl apply`'s last-applied-configuration of a big object
/// runs into).
fn metadata_causes(obj: &Value) -> Vec<Cause> {
    let size: usize = obj["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum();
    if size <= ANNOTATIONS_LIMIT {
        return Vec::new();
    }
    vec![Cause::new(
        "FieldValueTooLong",
        "metadata.annotations",
        format!("Too long: may not be more than {ANNOTATIONS_LIMIT} bytes"),
    )]
}

/// Store a whole float (`32.0`) as the integer a real server writes back (`32`): it keeps a
/// custom object as Go decoded it, a float64, and Go prints whole floats without a fraction.
fn whole_numbers_as_integers(v: &mut Value) {
    match v {
        Value::Number(n) => {
            // Within ±2^63, so that the cast below is exact.
            if let Some(f) = n.as_f64().filter(|f| {
                !n.is_i64() && !n.is_u64() && f.trunc() == *f && f.abs() < 9.223_372_036_854_775e18
            }) {
                *v = json!(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(m) => m.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

/// An update through events.k8s.io/v1 may not change what the event says happened, as the API
/// server's ValidateEventUpdate has it: a repeat is counted in `series`, and a different
/// occurrence is a new Event. Causes name the stored (core v1) fields, as the server's do.
fn immutable_event_fields(obj: &Value, old: &Value, name: &str) -> ApiResult<()> {
    let causes: Vec<Cause> = [
        ("regarding", "involvedObject"),
        ("reason", "reason"),
        ("note", "message"),
    ]
    .into_iter()
    .filter(|(field, _)| obj.get(field) != old.get(field))
    .map(|(field, core)| {
        let value = obj.get(field).cloned().unwrap_or(Value::Null);
        Cause::new(
            "FieldValueInvalid",
            core,
            format!("Invalid value: {value}: field is immutable"),
        )
    })
    .collect();
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid("", "Event", name, causes))
}

/// Drop the fields `schema` does not know, answering as `field_validation` asks: an error
/// (`Strict`), warnings (`Warn`) or nothing (`Ignore`).
fn prune_unknown_fields(
    rt: &ResourceType,
    schema: &Value,
    obj: &mut Value,
    field_validation: FieldValidation,
) -> ApiResult<Vec<String>> {
    let mut unknown = schema::prune(schema, obj);
    unknown.sort();
    let described = unknown.iter().map(|u| format!("unknown field \"{u}\""));
    match field_validation {
        FieldValidation::Strict if !unknown.is_empty() => {
            let list: Vec<String> = described.collect();
            Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                rt.kind,
                rt.api_version(),
                rt.kind,
                list.join(", ")
            )))
        }
        FieldValidation::Warn => Ok(described.collect()),
        _ => Ok(Vec::new()),
    }
}

/// As the real server: schema errors of these kinds stop the CEL rules (and say so),
/// others (a pattern, a minimum) do not.
fn stops_cel(causes: &[Cause]) -> bool {
    causes.iter().any(|c| {
        matches!(
            c.reason.as_str(),
            "FieldValueNotSupported"
                | "FieldValueRequired"
                | "FieldValueTooLong"
                | "FieldValueTooMany"
                | "FieldValueTypeInvalid"
        )
    })
}

/// Run the CEL rules, adding their failures to `causes`; returns a warning per rule the
/// emulator could not evaluate.
fn evaluate_rules(
    rt: &ResourceType,
    rules: &Rules,
    obj: &Value,
    old: Option<&Value>,
    causes: &mut Vec<Cause>,
) -> Vec<String> {
    let outcome = crate::cel::evaluate(rules, obj, old, (&rt.api_version(), &rt.group, &rt.kind));
    causes.extend(outcome.causes);
    outcome
        .skipped
        .iter()
        .map(|r| format!("x-kubernetes-validations rule not evaluated by the emulator: {r}"))
        .collect()
}

/// Secrets: `stringData` is write-only sugar folded into base64 `data`.
fn fold_string_data(obj: &mut Value) {
    let Some(string_data) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    if let Some(m) = string_data.as_object() {
        for (k, v) in m {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
            obj["data"][k] = json!(encoded);
        }
    }
    if obj.get("type").is_none() {
        obj["type"] = json!("Opaque");
    }
}

/// The API server's limit on the values of one Secret together (`MaxSecretSize`); keys do not
/// count.
const SECRET_DATA_LIMIT: usize = 1024 * 1024;

/// Refuse a Secret whose decoded values exceed [`SECRET_DATA_LIMIT`], as the API server does.
fn secret_size(obj: &Value, kind: &str, name: &str) -> ApiResult<()> {
    let size: usize = obj["data"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, v)| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str()?)
                .ok()
        })
        .map(|v| v.len())
        .sum();
    if size <= SECRET_DATA_LIMIT {
        return Ok(());
    }
    Err(ApiError::invalid(
        "",
        kind,
        name,
        vec![Cause::new(
            "FieldValueTooLong",
            "data",
            format!("Too long: may not be more than {SECRET_DATA_LIMIT} bytes"),
        )],
    ))
}

/// CRDs: the name must be `plural.group`; the server marks it established.
fn admit_crd(obj: &mut Value, name: &str) -> ApiResult<()> {
    let spec = obj["spec"].clone();
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let causes = crd_causes(&spec, &versions, name);
    if !causes.is_empty() {
        return Err(ApiError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            name,
            causes,
        ));
    }
    obj["status"] = crd_status(&spec, &versions);
    Ok(())
}

/// What is wrong with a CRD's names and versions.
fn crd_causes(spec: &Value, versions: &[Value], name: &str) -> Vec<Cause> {
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    let mut causes = Vec::new();
    if plural.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.names.plural",
            "Required value",
        ));
    }
    if spec["names"]["kind"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.names.kind",
            "Required value",
        ));
    }
    if name != format!("{plural}.{group}") {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    if versions.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.versions",
            "Required value",
        ));
    }
    if versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count()
        != 1
    {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "spec.versions",
            "Invalid value: \"array\": must have exactly one version marked as storage version",
        ));
    }
    causes
}

/// The status of an accepted CRD: its names accepted, established at once.
fn crd_status(spec: &Value, versions: &[Value]) -> Value {
    let kind = spec["names"]["kind"].as_str().unwrap_or_default();
    let mut accepted = spec["names"].clone();
    if accepted["singular"].is_null() {
        accepted["singular"] = json!(kind.to_lowercase());
    }
    if accepted["listKind"].is_null() {
        accepted["listKind"] = json!(format!("{kind}List"));
    }
    let ts = now();
    let storage: Vec<Value> = versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .map(|v| v["name"].clone())
        .collect();
    json!({
        "acceptedNames": accepted,
        "storedVersions": storage,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": ts},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": ts},
        ],
    })
}
