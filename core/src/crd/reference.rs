//! `docs/api-reference.md`: every field of the CRD's schema as Markdown, so the reference is the
//! CRD itself and cannot drift from it (`tests/api_reference.rs` compares the committed file).

use std::fmt::Write;

use serde_json::Value;

/// How to rewrite `docs/api-reference.md` after the types changed.
pub const API_REFERENCE_COMMAND: &str = "KEYSMITH_WRITE_API_REFERENCE=1 cargo test --locked -p keysmith-core --test contract api_reference";

/// The API reference of the `ApiKey` resource, generated from [`super::apikey_crd`].
pub fn api_reference_markdown() -> String {
    let crd = serde_json::to_value(super::apikey_crd()).expect("a CRD serializes to JSON");
    let spec = &crd["spec"];
    let version = &spec["versions"][0];
    let schema = &version["schema"]["openAPIV3Schema"];
    let mut out = String::new();
    let _ = write!(
        out,
        "# ApiKey API reference\n\n\
         <!-- Generated from the CRD; do not edit. Regenerate with: {API_REFERENCE_COMMAND} -->\n\n\
         `{group}/{version}`, kind `{kind}`, {scope}, short name `{short}`, with a status \
         subresource. {description}\n\n\
         Durations use Go syntax plus `d` (24 hours) and `w` (7 days), e.g. `90d`, `1h30m`, \
         `8760h`. A field marked required must be set when its parent object is. Rules that \
         span fields are listed under the object they apply to; the API server enforces them \
         at apply time and the controller checks them again (reporting `Ready=False`, reason \
         `InvalidSpec`, naming the field).\n\n",
        group = spec["group"].as_str().unwrap_or_default(),
        version = version["name"].as_str().unwrap_or_default(),
        kind = spec["names"]["kind"].as_str().unwrap_or_default(),
        scope = spec["scope"].as_str().unwrap_or_default().to_lowercase(),
        short = spec["names"]["shortNames"][0].as_str().unwrap_or_default(),
        description = schema["description"].as_str().unwrap_or_default(),
    );
    columns(&mut out, version);
    for root in ["spec", "status"] {
        let node = &schema["properties"][root];
        section(&mut out, root, node);
    }
    out
}

fn columns(out: &mut String, version: &Value) {
    out.push_str("## `kubectl get` columns\n\n| column | shown | value |\n| --- | --- | --- |\n");
    for column in version["additionalPrinterColumns"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let shown = if column["priority"].as_i64().unwrap_or(0) > 0 {
            "with `-o wide`"
        } else {
            "always"
        };
        let _ = writeln!(
            out,
            "| {} | {shown} | {} |",
            column["name"].as_str().unwrap_or_default(),
            code(column["jsonPath"].as_str().unwrap_or_default()),
        );
    }
    out.push('\n');
}

/// One object of the schema: its description, its fields, its rules, then each nested object.
fn section(out: &mut String, path: &str, node: &Value) {
    let _ = writeln!(out, "## `{path}`\n");
    if let Some(description) = node["description"].as_str() {
        let _ = writeln!(out, "{description}\n");
    }
    let required: Vec<&str> = node["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let fields = node["properties"].as_object();
    if let Some(fields) = fields {
        out.push_str("| field | type | required | default and bounds | description |\n");
        out.push_str("| --- | --- | --- | --- | --- |\n");
        for (name, field) in fields {
            let _ = writeln!(
                out,
                "| `{path}.{name}` | {} | {} | {} | {} |",
                type_of(field),
                if required.contains(&name.as_str()) {
                    "yes"
                } else {
                    "no"
                },
                bounds(field).join("; "),
                cell(field["description"].as_str().unwrap_or_default()),
            );
        }
        out.push('\n');
    }
    for rule in node["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            out,
            "* Rule: {}.",
            rule["message"].as_str().unwrap_or_default()
        );
    }
    if node["x-kubernetes-validations"].is_array() {
        out.push('\n');
    }
    for (name, field) in fields.into_iter().flatten() {
        let child = format!("{path}.{name}");
        match object_below(field) {
            Some((suffix, object)) => section(out, &format!("{child}{suffix}"), object),
            None => {
                let rules = list_item_rules(field);
                if !rules.is_empty() {
                    let _ = writeln!(out, "Rules on `{child}`:\n\n{rules}");
                }
            }
        }
    }
}

/// The object a field holds, directly or as list items, with the path suffix (`""` or `"[]"`).
fn object_below(field: &Value) -> Option<(&'static str, &Value)> {
    let has_fields = |v: &Value| v["properties"].is_object();
    if has_fields(field) {
        Some(("", field))
    } else if has_fields(&field["items"]) {
        Some(("[]", &field["items"]))
    } else {
        None
    }
}

/// Rules on a field that is not an object with fields of its own (a map or a list).
fn list_item_rules(field: &Value) -> String {
    field["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rule| {
            format!(
                "* Rule: {}.\n",
                rule["message"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

fn type_of(field: &Value) -> String {
    let base = field["type"].as_str().unwrap_or("any");
    match base {
        "array" => format!("list of {}", type_of(&field["items"])),
        "object" if field["additionalProperties"].is_object() => {
            format!(
                "map of string to {}",
                type_of(&field["additionalProperties"])
            )
        }
        _ => match field["format"].as_str() {
            Some(format) => format!("{base} ({format})"),
            None => base.to_owned(),
        },
    }
}

/// Default, enum, ranges, lengths, counts and pattern of one field.
fn bounds(field: &Value) -> Vec<String> {
    let mut found = Vec::new();
    if !field["default"].is_null() {
        found.push(format!("default {}", code(&plain(&field["default"]))));
    }
    if let Some(values) = field["enum"].as_array() {
        let values: Vec<String> = values.iter().map(|v| code(&plain(v))).collect();
        found.push(format!("one of {}", values.join(", ")));
    }
    let range = |low: &str, high: &str, unit: &str| match (&field[low], &field[high]) {
        (Value::Null, Value::Null) => None,
        (low, Value::Null) => Some(format!("at least {}{unit}", plain(low))),
        (Value::Null, high) => Some(format!("at most {}{unit}", plain(high))),
        (low, high) => Some(format!("{} to {}{unit}", plain(low), plain(high))),
    };
    found.extend(range("minimum", "maximum", ""));
    found.extend(range("minLength", "maxLength", " characters"));
    found.extend(range("minItems", "maxItems", " items"));
    found.extend(range("minProperties", "maxProperties", " entries"));
    let entry = &field["additionalProperties"];
    found.extend(range_of(entry, "values ", " characters"));
    let item = &field["items"];
    if !item["properties"].is_object() {
        found.extend(range_of(item, "each ", " characters"));
        if let Some(pattern) = item["pattern"].as_str() {
            found.push(format!("each matches {}", code(pattern)));
        }
    }
    if let Some(pattern) = field["pattern"].as_str() {
        found.push(format!("matches {}", code(pattern)));
    }
    found
}

/// The length bound of a list item or map value, e.g. `each 1 to 256 characters`.
fn range_of(node: &Value, prefix: &str, unit: &str) -> Option<String> {
    match (&node["minLength"], &node["maxLength"]) {
        (Value::Null, Value::Null) => None,
        (low, Value::Null) => Some(format!("{prefix}at least {}{unit}", plain(low))),
        (Value::Null, high) => Some(format!("{prefix}at most {}{unit}", plain(high))),
        (low, high) => Some(format!("{prefix}{} to {}{unit}", plain(low), plain(high))),
    }
}

/// A JSON value as written in YAML: strings without quotes, whole numbers without `.0`.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// Inline code that survives a table cell: `|` escaped, and a backtick in the text fenced by two.
fn code(text: &str) -> String {
    let text = text.replace('|', "\\|");
    if text.contains('`') {
        format!("`` {text} ``")
    } else {
        format!("`{text}`")
    }
}

/// Prose in a table cell: line breaks (paragraphs, list items) become `<br>`, `|` is escaped.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', "<br>")
}
