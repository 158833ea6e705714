//! CRD `x-kubernetes-validations` rules, evaluated with kube-cel's
//! validation engine (the `cel` crate plus the Kubernetes CEL libraries).
//!
//! Rules kube-cel cannot evaluate (it reports them as compilation failures or
//! unsupported references: `cel.bind`, `sortBy`, two-variable
//! comprehensions, ...) are skipped and reported back as warnings instead of
//! rejecting every object, because a real API server would have evaluated
//! them; the README lists the gap.
//!
//! Rules are compiled once per CRD version (when the CRD is written, see
//! `registry::CrdInfo`), not on every object write: compiling dominated the
//! cost of a create.

use serde_json::Value;

use kube_cel::{ErrorKind, RootContext};

use crate::error::Cause;

thread_local! {
    // Registering the Kubernetes CEL libraries is costly; do it once per thread.
    static VALIDATOR: kube_cel::Validator = kube_cel::Validator::new();
}

/// The compiled `x-kubernetes-validations` rules of one schema.
#[derive(Debug)]
pub struct Rules(kube_cel::CompiledSchema, bool);

impl Rules {
    /// Compile every rule of `schema` (rules that do not compile are kept as
    /// compilation errors and reported as skipped when evaluated).
    pub fn compile(schema: &Value) -> Self {
        Rules(kube_cel::compile_schema(schema), has_rules(schema))
    }

    /// Whether the schema has any `x-kubernetes-validations` rule.
    pub fn any(&self) -> bool {
        self.1
    }
}

fn has_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(m) => m.contains_key("x-kubernetes-validations") || m.values().any(has_rules),
        Value::Array(items) => items.iter().any(has_rules),
        _ => false,
    }
}

/// Outcome of evaluating a schema's CEL rules.
#[derive(Debug, Default)]
pub struct CelOutcome {
    /// Rules that evaluated to false (or failed at runtime), as 422 causes.
    pub causes: Vec<Cause>,
    /// Rules the engine could not evaluate.
    pub skipped: Vec<String>,
}

fn reason(r: Option<&str>) -> (&'static str, &'static str) {
    match r {
        Some("FieldValueForbidden") => ("FieldValueForbidden", "Forbidden"),
        Some("FieldValueRequired") => ("FieldValueRequired", "Required value"),
        Some("FieldValueDuplicate") => ("FieldValueDuplicate", "Duplicate value"),
        _ => ("FieldValueInvalid", "Invalid value"),
    }
}

/// Evaluate every rule against `obj` (and `old` for transition rules).
pub fn evaluate(
    rules: &Rules,
    obj: &Value,
    old: Option<&Value>,
    root: (&str, &str, &str),
) -> CelOutcome {
    let (api_version, api_group, kind) = root;
    let ctx = RootContext {
        api_version: api_version.into(),
        api_group: api_group.into(),
        kind: kind.into(),
    };
    let mut outcome = CelOutcome::default();
    let result =
        VALIDATOR.with(|v| v.validate_compiled_with_context(&rules.0, obj, old, Some(&ctx)));
    let Err(errors) = result else {
        return outcome;
    };
    for e in errors {
        match e.kind {
            ErrorKind::CompilationFailure | ErrorKind::UnsupportedReference => {
                outcome.skipped.push(e.rule.clone());
            }
            _ => {
                let (reason, word) = reason(e.reason.as_deref());
                // The real server (v1.37) shows no value for a failed rule.
                let message = format!("{word}: {}", e.message);
                outcome
                    .causes
                    .push(Cause::new(reason, e.field_path.clone(), message));
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn failing_rule_becomes_an_invalid_cause_and_unsupported_rules_are_skipped() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.min <= self.max", "message": "min must not exceed max"},
                {"rule": "cel.bind(x, self.min, x > 0)"}
            ],
            "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}}}}});
        let rules = Rules::compile(&schema);
        let out = evaluate(
            &rules,
            &json!({"spec": {"min": 5, "max": 1}}),
            None,
            ("example.com/v1", "example.com", "Widget"),
        );
        assert_eq!(out.causes.len(), 1, "{:?}", out.causes);
        assert_eq!(out.causes[0].field, "spec");
        assert_eq!(
            out.causes[0].message,
            "Invalid value: min must not exceed max"
        );
        assert!(
            evaluate(
                &rules,
                &json!({"spec": {"min": 1, "max": 5}}),
                None,
                ("", "", "")
            )
            .causes
            .is_empty()
        );
    }
}
