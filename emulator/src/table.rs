//! Server-side printing: the `meta.k8s.io/v1 Table` kubectl asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`, with a CRD's
//! `additionalPrinterColumns` (evaluated with the JSONPath subset they use)
//! or NAME/AGE-style columns for built-ins.

use serde_json::{Value, json};

use crate::registry::{GroupResource, PrinterColumn, ResourceType};
use crate::state::present;
use crate::watch::partial_metadata;

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Field(String),
    Index(usize),
    Wildcard,
    Filter {
        path: Vec<String>,
        negate: bool,
        value: Value,
    },
}

fn parse_filter(expr: &str) -> Option<Segment> {
    // ?(@.type=="Ready")
    let inner = expr.strip_prefix("?(")?.strip_suffix(')')?.trim();
    let (lhs, negate, rhs) = if let Some((l, r)) = inner.split_once("!=") {
        (l, true, r)
    } else {
        let (l, r) = inner.split_once("==")?;
        (l, false, r)
    };
    let path = lhs
        .trim()
        .strip_prefix('@')?
        .split('.')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let rhs = rhs.trim();
    let value = if let Some(s) = rhs
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .or_else(|| rhs.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
    {
        Value::String(s.to_string())
    } else {
        serde_json::from_str(rhs).unwrap_or_else(|_| Value::String(rhs.to_string()))
    };
    Some(Segment::Filter {
        path,
        negate,
        value,
    })
}

/// Parse the JSONPath subset of printer columns: `.a.b`, `[0]`, `[*]`,
/// `['key']`, `[?(@.f=="v")]`, optionally wrapped in `{}`.
fn parse(path: &str) -> Option<Vec<Segment>> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .unwrap_or(p);
    let mut segs = Vec::new();
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && chars[j] != '.' && chars[j] != '[' {
                    j += 1;
                }
                if j > start {
                    segs.push(Segment::Field(chars[start..j].iter().collect()));
                }
                i = j;
            }
            '[' => {
                let mut depth = 0;
                let mut j = i;
                while j < chars.len() {
                    match chars[j] {
                        '[' | '(' => depth += 1,
                        ']' | ')' => depth -= 1,
                        _ => {}
                    }
                    if depth == 0 {
                        break;
                    }
                    j += 1;
                }
                let inner: String = chars[i + 1..j.min(chars.len())].iter().collect();
                let inner = inner.trim();
                segs.push(if inner == "*" {
                    Segment::Wildcard
                } else if inner.starts_with('?') {
                    parse_filter(inner)?
                } else if let Ok(n) = inner.parse() {
                    Segment::Index(n)
                } else {
                    Segment::Field(inner.trim_matches(|c| c == '\'' || c == '"').to_string())
                });
                i = j + 1;
            }
            _ => {
                let start = i;
                let mut j = i;
                while j < chars.len() && chars[j] != '.' && chars[j] != '[' {
                    j += 1;
                }
                segs.push(Segment::Field(chars[start..j].iter().collect()));
                i = j;
            }
        }
    }
    Some(segs)
}

/// Evaluate a printer-column JSONPath; every match, in order.
pub fn eval<'v>(obj: &'v Value, path: &str) -> Vec<&'v Value> {
    let Some(segs) = parse(path) else {
        return Vec::new();
    };
    let mut cur = vec![obj];
    for seg in &segs {
        let mut next = Vec::new();
        for v in cur {
            match seg {
                Segment::Field(f) => next.extend(v.get(f.as_str())),
                Segment::Index(n) => next.extend(v.get(*n)),
                Segment::Wildcard => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Segment::Filter {
                    path,
                    negate,
                    value,
                } => {
                    for item in v.as_array().into_iter().flatten() {
                        let mut x = item;
                        for f in path {
                            x = &x[f.as_str()];
                        }
                        if (x == value) != *negate {
                            next.push(item);
                        }
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

/// Kubernetes' `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        match h % 24 {
            0 => format!("{d}d"),
            r => format!("{d}d{r}h"),
        }
    } else if h < 24 * 365 * 2 {
        format!("{d}d")
    } else if h < 24 * 365 * 8 {
        format!("{}y{}d", d / 365, d % 365)
    } else {
        format!("{}y", d / 365)
    }
}

fn age(ts: &Value) -> Value {
    let Some(t) = ts.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()) else {
        return Value::Null;
    };
    let secs = jiff::Timestamp::now().as_second() - t.as_second();
    json!(human_duration(secs))
}

fn cell(obj: &Value, col: &PrinterColumn) -> Value {
    let found = eval(obj, &col.json_path);
    if found.is_empty() {
        return Value::Null;
    }
    if col.type_ == "date" {
        return age(found[0]);
    }
    if found.len() == 1 {
        return match (col.type_.as_str(), found[0]) {
            ("string", Value::String(_))
            | ("integer" | "number", Value::Number(_))
            | ("boolean", Value::Bool(_)) => found[0].clone(),
            (_, Value::String(s)) => json!(s),
            (_, other) => json!(other.to_string()),
        };
    }
    let parts: Vec<String> = found
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    json!(parts.join(","))
}

fn column(name: &str, type_: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({"name": name, "type": type_, "format": format, "description": description, "priority": priority})
}

/// A column definition and how to compute its cell.
type Column = (Value, Box<dyn Fn(&Value) -> Value>);

/// `translateTimestampSince`: the age of a timestamp, `<unknown>` when there is none.
fn since(ts: &Value) -> String {
    match age(ts) {
        Value::String(s) => s,
        _ => "<unknown>".into(),
    }
}

/// The API server's Event printer (`printEvent`, generated wide as every server-side table),
/// over the stored core form, so both Event views print the same rows.
fn event_columns() -> Vec<Column> {
    // First seen is the deprecated timestamp, else eventTime (the events.k8s.io API sets only that).
    fn first_seen(e: &Value) -> String {
        if e["firstTimestamp"].is_string() {
            since(&e["firstTimestamp"])
        } else {
            since(&e["eventTime"])
        }
    }
    fn last_seen(e: &Value) -> String {
        if e["series"].is_object() {
            since(&e["series"]["lastObservedTime"])
        } else if e["lastTimestamp"].is_string() {
            since(&e["lastTimestamp"])
        } else {
            first_seen(e)
        }
    }
    fn count(e: &Value) -> i64 {
        match e["series"]["count"].as_i64() {
            Some(n) => n,
            // Singleton events of the new API carry no count.
            None => e["count"].as_i64().filter(|n| *n > 0).unwrap_or(1),
        }
    }
    fn object(e: &Value) -> String {
        let r = &e["involvedObject"];
        let kind = r["kind"].as_str().unwrap_or_default().to_lowercase();
        match r["name"].as_str().filter(|n| !n.is_empty()) {
            Some(name) => format!("{kind}/{name}"),
            None => kind,
        }
    }
    // The deprecated source, else the reporting controller and instance (`formatEventSource`).
    fn source(e: &Value) -> String {
        let either = |old: &Value, new: &Value| {
            let old = old.as_str().unwrap_or_default();
            if old.is_empty() {
                new.as_str().unwrap_or_default().to_string()
            } else {
                old.to_string()
            }
        };
        let component = either(&e["source"]["component"], &e["reportingComponent"]);
        let host = either(&e["source"]["host"], &e["reportingInstance"]);
        if host.is_empty() {
            component
        } else {
            format!("{component}, {host}")
        }
    }
    let text = |field: &'static str| move |e: &Value| json!(e[field].as_str().unwrap_or_default());
    vec![
        (
            column(
                "Last Seen",
                "string",
                "",
                "The time at which the most recent occurrence of this event was recorded.",
                0,
            ),
            Box::new(|e: &Value| json!(last_seen(e))),
        ),
        (
            column(
                "Type",
                "string",
                "",
                "Type of this event (Normal, Warning), new types could be added in the future",
                0,
            ),
            Box::new(text("type")),
        ),
        (
            column(
                "Reason",
                "string",
                "",
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
                0,
            ),
            Box::new(text("reason")),
        ),
        (
            column(
                "Object",
                "string",
                "",
                "The object that this event is about.",
                0,
            ),
            Box::new(|e: &Value| json!(object(e))),
        ),
        (
            column(
                "Subobject",
                "string",
                "",
                "The field of the object this event is about.",
                1,
            ),
            Box::new(|e: &Value| {
                json!(
                    e["involvedObject"]["fieldPath"]
                        .as_str()
                        .unwrap_or_default()
                )
            }),
        ),
        (
            column(
                "Source",
                "string",
                "",
                "The component reporting this event.",
                1,
            ),
            Box::new(|e: &Value| json!(source(e))),
        ),
        (
            column(
                "Message",
                "string",
                "",
                "A human-readable description of the status of this operation.",
                0,
            ),
            Box::new(|e: &Value| json!(e["message"].as_str().unwrap_or_default().trim())),
        ),
        (
            column(
                "First Seen",
                "string",
                "",
                "The time at which the event was first recorded.",
                1,
            ),
            Box::new(|e: &Value| json!(first_seen(e))),
        ),
        (
            column(
                "Count",
                "string",
                "",
                "The number of times this event has occurred.",
                1,
            ),
            Box::new(|e: &Value| json!(count(e))),
        ),
        (
            column(
                "Name",
                "string",
                "name",
                "Name must be unique within a namespace.",
                1,
            ),
            Box::new(|e: &Value| e["metadata"]["name"].clone()),
        ),
    ]
}

fn builtin_columns(rt: &ResourceType) -> Vec<Column> {
    if rt.group_resource() == GroupResource::new("", "events") {
        return event_columns();
    }
    let name_col = column(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
        0,
    );
    let age_col = column(
        "Age",
        "string",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
        0,
    );
    let name = |o: &Value| o["metadata"]["name"].clone();
    let age_of = |o: &Value| age(&o["metadata"]["creationTimestamp"]);
    let mut cols: Vec<Column> = vec![(name_col, Box::new(name))];
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "secrets") => {
            cols.push((
                column("Type", "string", "", "The type of the secret", 0),
                Box::new(|o: &Value| o["type"].clone()),
            ));
            cols.push((
                column("Data", "string", "", "The number of entries in the data", 0),
                Box::new(|o: &Value| json!(o["data"].as_object().map_or(0, |m| m.len()))),
            ));
        }
        ("", "namespaces") => cols.push((
            column("Status", "string", "", "The status of the namespace", 0),
            Box::new(|o: &Value| o["status"]["phase"].clone()),
        )),
        ("apps", "deployments" | "statefulsets") => cols.push((
            column("Ready", "string", "", "Number of ready replicas", 0),
            Box::new(|o: &Value| {
                json!(format!(
                    "{}/{}",
                    o["status"]["readyReplicas"].as_i64().unwrap_or(0),
                    o["spec"]["replicas"].as_i64().unwrap_or(1)
                ))
            }),
        )),
        _ => {}
    }
    cols.push((age_col, Box::new(age_of)));
    cols
}

/// What a table row's `object` carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// Nothing.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The full object.
    Object,
}

/// Render objects as a Table.
pub fn render(
    rt: &ResourceType,
    items: &[&Value],
    resource_version: u64,
    continue_token: Option<&str>,
    include: IncludeObject,
) -> Value {
    let (defs, rows): (Vec<Value>, Vec<Value>) =
        match rt.crd.as_ref().filter(|c| !c.printer_columns.is_empty()) {
            Some(crd) => {
                let mut defs = vec![column(
                    "Name",
                    "string",
                    "name",
                    "Name must be unique within a namespace.",
                    0,
                )];
                defs.extend(crd.printer_columns.iter().map(|c| {
                    column(
                        &c.name,
                        if c.type_ == "date" { "date" } else { &c.type_ },
                        &c.format,
                        &c.description,
                        c.priority,
                    )
                }));
                let rows = items
                    .iter()
                    .map(|o| {
                        let mut cells = vec![o["metadata"]["name"].clone()];
                        cells.extend(crd.printer_columns.iter().map(|c| cell(o, c)));
                        row(rt, o, cells, include)
                    })
                    .collect();
                (defs, rows)
            }
            None => {
                let cols = builtin_columns(rt);
                let defs = cols.iter().map(|(d, _)| d.clone()).collect();
                let rows = items
                    .iter()
                    .map(|o| row(rt, o, cols.iter().map(|(_, f)| f(o)).collect(), include))
                    .collect();
                (defs, rows)
            }
        };
    let mut meta = json!({"resourceVersion": resource_version.to_string()});
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
           "columnDefinitions": defs, "rows": rows})
}

fn row(rt: &ResourceType, obj: &Value, cells: Vec<Value>, include: IncludeObject) -> Value {
    let mut r = json!({"cells": cells});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => r["object"] = partial_metadata(obj),
        IncludeObject::Object => r["object"] = present(rt, obj),
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_subset() {
        let obj = json!({"status": {"conditions": [
            {"type": "Expiring", "status": "False"}, {"type": "Ready", "status": "True"}],
            "tokens": [{"name": "a"}, {"name": "b"}]},
            "metadata": {"labels": {"app.kubernetes.io/name": "x"}}});
        assert_eq!(
            eval(&obj, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![&json!("True")]
        );
        assert_eq!(
            eval(&obj, ".status.tokens[*].name"),
            vec![&json!("a"), &json!("b")]
        );
        assert_eq!(eval(&obj, "{.status.tokens[1].name}"), vec![&json!("b")]);
        assert_eq!(
            eval(&obj, ".metadata.labels['app.kubernetes.io/name']"),
            vec![&json!("x")]
        );
        assert!(eval(&obj, ".spec.missing").is_empty());
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(3 * 86400), "3d");
    }
}
