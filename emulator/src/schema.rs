//! Structural-schema handling of custom objects, in the order the API server
//! applies it: prune unknown fields (reporting them for `fieldValidation`),
//! apply `default`s, then validate types, `required`, `enum`, `pattern`,
//! ranges, lengths and list uniqueness, with Kubernetes' message wording.

use std::sync::LazyLock;

use serde_json::Value;

use crate::error::Cause;

/// Remove fields the schema does not declare (unless it preserves unknown
/// fields) and return their paths. `metadata`, `apiVersion` and `kind` are
/// never pruned at the root.
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut unknown = Vec::new();
    if let Some(m) = obj.as_object_mut() {
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, v) in m.iter_mut() {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(child) = props.and_then(|p| p.get(k)) {
                prune_node(child, v, k.clone(), &mut unknown);
            }
        }
        if !preserves_unknown(schema) {
            let before: Vec<String> = m.keys().cloned().collect();
            m.retain(|k, _| {
                matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                    || props.is_some_and(|p| p.contains_key(k))
            });
            unknown.extend(before.into_iter().filter(|k| !m.contains_key(k)));
        }
    }
    unknown
}

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn prune_node(schema: &Value, v: &mut Value, path: String, unknown: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            if props.is_none() && additional.is_none() {
                return;
            }
            let keep_unknown = preserves_unknown(schema) || additional.is_some();
            let mut drop = Vec::new();
            for (k, child) in m.iter_mut() {
                match props.and_then(|p| p.get(k)).or(additional) {
                    Some(s) => prune_node(s, child, join(&path, k), unknown),
                    None if !keep_unknown => drop.push(k.clone()),
                    None => {}
                }
            }
            for k in drop {
                m.remove(&k);
                unknown.push(join(&path, &k));
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_node(item_schema, item, format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

/// Apply the schema's `default`s.
pub fn apply_defaults(schema: &Value, obj: &Value) -> Value {
    kube_cel::apply_defaults(schema, obj)
}

/// Render a value the way Kubernetes prints it after `Invalid value:`.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        Value::Null => "\"null\"".into(),
        other => other.to_string(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn invalid(path: &str, v: &Value, what: String) -> Cause {
    Cause::new(
        "FieldValueInvalid",
        path,
        format!("Invalid value: {}: {what}", shown(v)),
    )
}

/// Validate an object against its structural schema (the root's
/// `apiVersion`/`kind`/`metadata` are the server's business, not the schema's).
pub fn validate(schema: &Value, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(m) = obj.as_object() else {
        causes.push(invalid("", obj, "must be an object".into()));
        return causes;
    };
    for r in schema["required"].as_array().into_iter().flatten() {
        if let Some(r) = r.as_str()
            && !m.contains_key(r)
        {
            causes.push(Cause::new("FieldValueRequired", r, "Required value"));
        }
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, s) in props {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(v) = m.get(k) {
                check(s, v, k, &mut causes);
            }
        }
    }
    for rule_set in ["allOf", "anyOf", "oneOf"] {
        if schema.get(rule_set).is_some() {
            let mut root_only = schema.clone();
            if let Some(o) = root_only.as_object_mut() {
                o.remove("properties");
                o.remove("required");
            }
            junctors(&root_only, obj, "", &mut causes);
            break;
        }
    }
    causes
}

fn number(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn check(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    if v.is_null() {
        if schema["nullable"].as_bool() != Some(true) && schema.get("type").is_some() {
            causes.push(invalid(
                path,
                v,
                format!(
                    "{path} in body must be of type {}: \"null\"",
                    schema["type"].as_str().unwrap_or("object")
                ),
            ));
        }
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"].as_bool() == Some(true);
    if int_or_string {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            causes.push(invalid(
                path,
                v,
                format!(
                    "{path} in body must be of type integer or string: \"{}\"",
                    type_name(v)
                ),
            ));
            return;
        }
    } else if let Some(want) = schema["type"].as_str()
        && let Some((expected, found)) = type_mismatch(schema, want, v)
    {
        causes.push(Cause::new(
            "FieldValueTypeInvalid",
            path,
            format!(
                "Invalid value: \"{found}\": {path} in body must be of type {expected}: \"{found}\""
            ),
        ));
        // The real server's number checks run on a number of the wrong type too.
        if !v.is_number() {
            return;
        }
    }

    if let Some(options) = schema["enum"].as_array()
        && !options.contains(v)
    {
        let supported: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        causes.push(Cause::new(
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                v,
                supported.join(", ")
            ),
        ));
    }

    match v {
        Value::String(s) => {
            if format(schema) == Some("date-time") && !is_date_time(s) {
                causes.push(Cause::new(
                    "FieldValueTypeInvalid",
                    path,
                    format!(
                        "Invalid value: {s:?}: {path} in body must be of type date-time: {s:?}"
                    ),
                ));
            }
            if let Some(p) = schema["pattern"].as_str() {
                match regex::Regex::new(p) {
                    Ok(re) if !re.is_match(s) => causes.push(invalid(
                        path,
                        v,
                        format!("{path} in body should match '{p}'"),
                    )),
                    _ => {}
                }
            }
            let len = s.chars().count() as u64;
            if let Some(max) = schema["maxLength"].as_u64()
                && len > max
            {
                causes.push(Cause::new(
                    "FieldValueTooLong",
                    path,
                    format!("Too long: may not be more than {max} bytes"),
                ));
            }
            if let Some(min) = schema["minLength"].as_u64()
                && len < min
            {
                causes.push(invalid(
                    path,
                    v,
                    format!("{path} in body should be at least {min} chars long"),
                ));
            }
        }
        Value::Number(_) => {
            check_integer_format(schema, v, path, causes);
            check_range(schema, v, path, causes);
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(max) = schema["maxItems"].as_u64()
                && n > max
            {
                causes.push(Cause::new(
                    "FieldValueTooMany",
                    path,
                    format!("Too many: {n}: must have at most {max} items"),
                ));
            }
            if let Some(min) = schema["minItems"].as_u64()
                && n < min
            {
                // The real server shows the number of items as the invalid value.
                causes.push(invalid(
                    path,
                    &Value::from(n),
                    format!("{path} in body should have at least {min} items"),
                ));
            }
            check_list_uniqueness(schema, items, path, causes);
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), causes);
                }
            }
        }
        Value::Object(m) => {
            for r in schema["required"].as_array().into_iter().flatten() {
                if let Some(r) = r.as_str()
                    && !m.contains_key(r)
                {
                    causes.push(Cause::new(
                        "FieldValueRequired",
                        join(path, r),
                        "Required value",
                    ));
                }
            }
            let n = m.len() as u64;
            if let Some(max) = schema["maxProperties"].as_u64()
                && n > max
            {
                causes.push(Cause::new(
                    "FieldValueTooMany",
                    path,
                    format!("Too many: {n}: must have at most {max} items"),
                ));
            }
            if let Some(min) = schema["minProperties"].as_u64()
                && n < min
            {
                causes.push(invalid(
                    path,
                    v,
                    format!("{path} in body should have at least {min} properties"),
                ));
            }
            let props = schema["properties"].as_object();
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in m {
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    check(s, child, &join(path, k), causes);
                } else if let Some(s) = additional {
                    check(s, child, &format!("{path}[{k}]"), causes);
                }
            }
        }
        _ => {}
    }
    junctors(schema, v, path, causes);
}

/// The schema's `format`, when it is one the emulator checks as the real server does: the
/// ones Keysmith's CRD declares. Other formats are not checked.
fn format(schema: &Value) -> Option<&str> {
    schema["format"]
        .as_str()
        .filter(|f| matches!(*f, "date-time" | "int32" | "int64"))
}

/// The JSON type and Go format kube-openapi infers for a decoded value: integers that fit an
/// int64 decode as `int64`, every other number as `float64`.
fn go_type(v: &Value) -> (&'static str, &'static str) {
    match v {
        Value::Number(n) if n.is_i64() => ("integer", "int64"),
        Value::Number(_) => ("number", "float64"),
        other => (type_name(other), ""),
    }
}

/// go-openapi's `IsFloat64AJSONInteger`: a whole number within ±(2^53 - 1), or a positive one
/// within a relative 1e-9 of one.
fn is_json_integer(f: f64) -> bool {
    const MAX: f64 = 9_007_199_254_740_991.0;
    if !f.is_finite() || f.abs() > MAX {
        return false;
    }
    let whole = f.trunc();
    f == whole || (f > 0.0 && whole > 0.0 && (f - whole) / (f + whole) < 1e-9)
}

/// kube-openapi's type check of a non-null value against a schema with a `type`: the type
/// named and the type found when they do not fit. With a format, a value other than a string
/// or an array is reported against the format, and a string or an array passes a string
/// schema unchecked.
fn type_mismatch(schema: &Value, want: &str, v: &Value) -> Option<(String, String)> {
    let (have, have_format) = go_type(v);
    let fits = have == want
        || (want == "integer" && have == "number" && v.as_f64().is_some_and(is_json_integer))
        || (want == "number" && have == "integer");
    let string_or_array = v.is_string() || v.is_array();
    match format(schema) {
        Some(f) if !string_or_array && !fits && have_format != f => {
            Some((f.to_string(), have_format.to_string()))
        }
        Some(_) if string_or_array && !matches!(want, "integer" | "number") => None,
        _ if !fits => Some((want.to_string(), have.to_string())),
        _ => None,
    }
}

/// kube-openapi's check that a number fits its integer format (int64 by default), reported
/// without a field path and with an empty value, as the real server does.
fn check_integer_format(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    if schema["type"].as_str() != Some("integer") {
        return;
    }
    let format = format(schema);
    // Go prints the number in full and parses it as an integer of that size: a whole
    // number in [min, end).
    let (min, end) = if format == Some("int32") {
        (-2_147_483_648.0, 2_147_483_648.0)
    } else {
        (-9_223_372_036_854_775_808.0, 9_223_372_036_854_775_808.0)
    };
    let fits = match (v.as_i64(), v.as_f64()) {
        (Some(i), _) => format != Some("int32") || i32::try_from(i).is_ok(),
        (None, Some(f)) => f.trunc() == f && f >= min && f < end,
        (None, None) => true,
    };
    if fits {
        return;
    }
    let with_format = format
        .map(|f| format!(" with format {f}"))
        .unwrap_or_default();
    causes.push(Cause::new(
        "FieldValueInvalid",
        "<nil>",
        format!(
            "Invalid value: \"\": Checked value must be of type integer{with_format} in {path}"
        ),
    ));
}

/// go-openapi's `date-time` (`strfmt.IsDateTime`), as the real server checks it: a full date,
/// a `T` (either case), then `hh:mm:ss`, any one character and digits for a fraction, and `Z`
/// or `±hh:mm`; whatever follows a further `T` is ignored.
fn is_date_time(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let mut parts = lower.split('t');
    let (Some(date), Some(time)) = (parts.next(), parts.next()) else {
        return false;
    };
    s.len() >= 4 && is_full_date(date) && is_time(time)
}

/// `2006-01-02` as Go's `time.Parse` reads it: exact digits, a day that exists in that month.
fn is_full_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10
        || b[4] != b'-'
        || b[7] != b'-'
        || !digits(0..4)
        || !digits(5..7)
        || !digits(8..10)
    {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(0);
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// strfmt's time of day: `^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$`
/// (on the lowercased text), hours to 23, minutes and seconds to 59; the offset is not ranged.
fn is_time(s: &str) -> bool {
    static TIME: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(
            r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$",
        )
        .expect("a valid pattern")
    });
    TIME.captures(s)
        .is_some_and(|c| &c[1] <= "23" && &c[2] <= "59" && &c[3] <= "59")
}

fn check_range(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(x) = number(v) else { return };
    if let Some(min) = schema.get("minimum").and_then(number) {
        let exclusive = schema["exclusiveMinimum"].as_bool() == Some(true);
        if (exclusive && x <= min) || x < min {
            let op = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            causes.push(invalid(
                path,
                v,
                format!("{path} in body should be {op} {}", schema["minimum"]),
            ));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(number) {
        let exclusive = schema["exclusiveMaximum"].as_bool() == Some(true);
        if (exclusive && x >= max) || x > max {
            let op = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            causes.push(invalid(
                path,
                v,
                format!("{path} in body should be {op} {}", schema["maximum"]),
            ));
        }
    }
    if let Some(m) = schema.get("multipleOf").and_then(number)
        && m != 0.0
        && (x / m).fract() != 0.0
    {
        causes.push(invalid(
            path,
            v,
            format!(
                "{path} in body should be a multiple of {}",
                schema["multipleOf"]
            ),
        ));
    }
}

fn check_list_uniqueness(schema: &Value, items: &[Value], path: &str, causes: &mut Vec<Cause>) {
    let keys: Option<Vec<&str>> = match schema["x-kubernetes-list-type"].as_str() {
        Some("map") => Some(
            schema["x-kubernetes-list-map-keys"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default(),
        ),
        Some("set") => None,
        _ if schema["uniqueItems"].as_bool() == Some(true) => None,
        _ => return,
    };
    let identity = |item: &Value| -> Value {
        match &keys {
            Some(keys) => Value::Object(
                keys.iter()
                    .filter_map(|k| item.get(*k).map(|v| (k.to_string(), v.clone())))
                    .collect(),
            ),
            None => item.clone(),
        }
    };
    let mut seen: Vec<Value> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let id = identity(item);
        if seen.contains(&id) {
            causes.push(Cause::new(
                "FieldValueDuplicate",
                format!("{path}[{i}]"),
                format!("Duplicate value: {id}"),
            ));
        } else {
            seen.push(id);
        }
    }
}

fn junctors(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    let passes = |s: &Value| {
        let mut c = Vec::new();
        check(s, v, path, &mut c);
        c.is_empty()
    };
    for s in schema["allOf"].as_array().into_iter().flatten() {
        check(s, v, path, causes);
    }
    if let Some(any) = schema["anyOf"].as_array()
        && !any.iter().any(passes)
    {
        causes.push(invalid(
            path,
            v,
            format!("{path} in body must match at least one schema in anyOf"),
        ));
    }
    if let Some(one) = schema["oneOf"].as_array()
        && one.iter().filter(|s| passes(s)).count() != 1
    {
        causes.push(invalid(
            path,
            v,
            format!("{path} in body must match exactly one schema in oneOf"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["tokens"],
        "properties": {
            "environment": {"type": "string", "enum": ["dev", "prod"]},
            "prefix": {"type": "string", "pattern": "^[a-z_]{0,8}$", "default": "ks_"},
            "bytes": {"type": "integer", "minimum": 16, "maximum": 64},
            "tokens": {"type": "array", "minItems": 1, "x-kubernetes-list-type": "map",
                       "x-kubernetes-list-map-keys": ["name"],
                       "items": {"type": "object", "properties": {"name": {"type": "string"}}}}
        }}}})
    }

    #[test]
    fn messages_read_like_kubernetes() {
        let obj = json!({"spec": {"environment": "qa", "prefix": "A-B", "bytes": 8,
                                  "tokens": [{"name": "a"}, {"name": "a"}]}});
        let msgs: Vec<String> = validate(&schema(), &obj)
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            msgs,
            vec![
                "spec.bytes: Invalid value: 8: spec.bytes in body should be greater than or equal to 16",
                "spec.environment: Unsupported value: \"qa\": supported values: \"dev\", \"prod\"",
                "spec.prefix: Invalid value: \"A-B\": spec.prefix in body should match '^[a-z_]{0,8}$'",
                "spec.tokens[1]: Duplicate value: {\"name\":\"a\"}",
            ]
        );
        let missing = validate(&schema(), &json!({"spec": {}}));
        assert_eq!(missing[0].field, "spec.tokens");
        assert_eq!(missing[0].message, "Required value");
    }

    #[test]
    fn prune_then_default() {
        let mut obj = json!({"metadata": {"x": 1}, "spec": {"tokens": [{"name": "a", "junk": 1}], "extra": 1}, "top": 2});
        let mut unknown = prune(&schema(), &mut obj);
        unknown.sort();
        assert_eq!(unknown, vec!["spec.extra", "spec.tokens[0].junk", "top"]);
        let defaulted = apply_defaults(&schema(), &obj);
        assert_eq!(defaulted["spec"]["prefix"], "ks_");
        assert_eq!(defaulted["metadata"]["x"], 1);
    }
}
