//! `metadata.managedFields` bookkeeping and server-side apply: who owns
//! which field, conflicts between managers, and removal of fields a manager
//! stops applying when nobody else owns them.

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult, Cause};
use crate::fields::{FieldSet, ListKind, Shape, remove_at, value_at};

/// Which part of an object a write may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The main resource of a kind without a status subresource: everything.
    Whole,
    /// The main resource of a kind with a status subresource: all but status.
    Main,
    /// The `/status` subresource: status only.
    Status,
}

impl Part {
    fn subresource(self) -> &'static str {
        match self {
            Part::Status => "status",
            _ => "",
        }
    }
}

/// Metadata fields the server owns; never in a manager's set.
const SERVER_FIELDS: &[&[&str]] = &[
    &["f:apiVersion"],
    &["f:kind"],
    &["f:metadata", "f:name"],
    &["f:metadata", "f:namespace"],
    &["f:metadata", "f:uid"],
    &["f:metadata", "f:resourceVersion"],
    &["f:metadata", "f:generation"],
    &["f:metadata", "f:creationTimestamp"],
    &["f:metadata", "f:deletionTimestamp"],
    &["f:metadata", "f:deletionGracePeriodSeconds"],
    &["f:metadata", "f:managedFields"],
    &["f:metadata", "f:selfLink"],
];

/// The fields of `obj` that a write to `part` manages.
pub fn owned_fields(obj: &Value, shape: Shape<'_>, part: Part) -> FieldSet {
    let mut set = FieldSet::from_value(obj, shape);
    for path in SERVER_FIELDS {
        set.remove_path(path);
    }
    match part {
        Part::Whole => set,
        Part::Main => {
            set.remove_path(&["f:status"]);
            set
        }
        Part::Status => set.only("f:status"),
    }
}

#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: String,
    fields: FieldSet,
}

fn read_entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: e["manager"].as_str().unwrap_or_default().into(),
            operation: e["operation"].as_str().unwrap_or("Update").into(),
            api_version: e["apiVersion"].as_str().unwrap_or_default().into(),
            time: e["time"].as_str().unwrap_or_default().into(),
            subresource: e["subresource"].as_str().unwrap_or_default().into(),
            fields: FieldSet::from_fields_v1(&e["fieldsV1"]),
        })
        .collect()
}

fn write_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": e.fields.to_fields_v1(),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if list.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
    } else {
        obj["metadata"]["managedFields"] = Value::Array(list);
    }
}

/// Record a non-apply write (create, update, patch) by `manager`: it takes
/// ownership of every field it changed, other managers lose those fields, and
/// removed fields leave every set. `old` is `None` for a create.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    shape: Shape<'_>,
    part: Part,
    manager: &str,
    now: &str,
) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let new_set = owned_fields(new, shape, part);
    let old_set = old
        .map(|o| owned_fields(o, shape, part))
        .unwrap_or_default();
    let mut changed = FieldSet::default();
    for (path, leaf) in new_set.members() {
        let differs = match old.and_then(|o| value_at(o, &path)) {
            None => true,
            Some(before) => leaf && value_at(new, &path) != Some(before),
        };
        if differs {
            add_path(&mut changed, &path);
        }
    }
    // A map or list the write adds is owned as such (`"."` in fieldsV1), as structured-merge-diff's
    // comparison records it; `metadata` itself is the server's.
    for path in containers(&new_set) {
        if path != ["f:metadata"] && old.and_then(|o| value_at(o, &path)).is_none() {
            add_path(&mut changed, &path);
        }
    }
    let mut removed = old_set;
    removed.subtract(&new_set);
    // Owned maps and lists the write removed leave every set too.
    for e in &entries {
        for (path, _) in e.fields.members() {
            if value_at(new, &path).is_none() {
                add_path(&mut removed, &path);
            }
        }
    }
    for e in &mut entries {
        e.fields.subtract(&removed);
        e.fields.subtract(&changed);
    }
    if !changed.is_empty() {
        let api_version = new["apiVersion"].as_str().unwrap_or_default().to_string();
        match entries.iter_mut().find(|e| {
            e.manager == manager && e.operation == "Update" && e.subresource == part.subresource()
        }) {
            Some(e) => {
                e.fields.union(&changed);
                e.time = now.to_string();
                e.api_version = api_version;
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version,
                time: now.to_string(),
                subresource: part.subresource().into(),
                fields: changed,
            }),
        }
    }
    write_entries(new, entries);
}

/// The paths of the maps and lists of `set`: nodes with children that are not members.
fn containers(set: &FieldSet) -> Vec<Vec<String>> {
    fn walk(set: &FieldSet, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        for (k, child) in &set.children {
            prefix.push(k.clone());
            if !child.member && !child.children.is_empty() {
                out.push(prefix.clone());
            }
            walk(child, prefix, out);
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    walk(set, &mut Vec::new(), &mut out);
    out
}

fn add_path(set: &mut FieldSet, path: &[String]) {
    let mut node = set;
    for el in path {
        node = node.children.entry(el.clone()).or_default();
    }
    node.member = true;
}

/// Merge an applied configuration into the live object following the list
/// and map semantics of `shape`.
fn merge_applied(live: &mut Value, applied: &Value, shape: Shape<'_>) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) if !shape.atomic_map() => {
            for (k, av) in a {
                if av.is_null() {
                    l.remove(k);
                    continue;
                }
                match l.get_mut(k) {
                    Some(lv) => merge_applied(lv, av, shape.child(k)),
                    None => {
                        l.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => match shape.list_kind() {
            ListKind::Map(keys) => {
                for item in a {
                    let same = |x: &Value| keys.iter().all(|k| x.get(k) == item.get(k));
                    match l.iter_mut().find(|x| same(x)) {
                        Some(existing) => merge_applied(existing, item, shape.items()),
                        None => l.push(item.clone()),
                    }
                }
            }
            ListKind::Set => {
                for item in a {
                    if !l.contains(item) {
                        l.push(item.clone());
                    }
                }
            }
            ListKind::Atomic => *l = a.clone(),
        },
        (live, applied) => *live = applied.clone(),
    }
}

fn path_string(path: &[String]) -> String {
    path.iter()
        .map(|el| match el.strip_prefix("f:") {
            Some(f) => format!(".{f}"),
            None => format!("[{}]", el.split_once(':').map_or(el.as_str(), |(_, r)| r)),
        })
        .collect()
}

/// Server-side apply of `applied` by `manager` onto `live` (`None`: the
/// object does not exist yet). Returns the new object with managedFields.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    shape: Shape<'_>,
    part: Part,
    manager: &str,
    force: bool,
    now: &str,
) -> ApiResult<Value> {
    let mut entries = live.map(read_entries).unwrap_or_default();
    let applied_set = owned_fields(applied, shape, part);
    let is_mine = |e: &Entry| {
        e.manager == manager && e.operation == "Apply" && e.subresource == part.subresource()
    };
    let current = live.cloned().unwrap_or_else(|| json!({}));

    if !force {
        let mut causes = Vec::new();
        let mut lines = Vec::new();
        for e in entries.iter().filter(|e| !is_mine(e)) {
            for (path, leaf) in applied_set.intersect(&e.fields).members() {
                if leaf && value_at(&current, &path) != value_at(applied, &path) {
                    let field = path_string(&path);
                    // The real server names the API version of an Update manager only.
                    let with = if e.operation == "Apply" {
                        format!("conflict with \"{}\"", e.manager)
                    } else {
                        format!("conflict with \"{}\" using {}", e.manager, e.api_version)
                    };
                    lines.push(format!("- {with}: {field}"));
                    causes.push(Cause::new("FieldManagerConflict", field.clone(), with));
                }
            }
        }
        if !causes.is_empty() {
            let message = if causes.len() == 1 {
                format!(
                    "Apply failed with 1 conflict: {}: {}",
                    causes[0].message, causes[0].field
                )
            } else {
                format!(
                    "Apply failed with {} conflicts: {}",
                    causes.len(),
                    lines.join("\n")
                )
            };
            return Err(ApiError::apply_conflict(message, causes));
        }
    }

    let mut merged = current.clone();
    merge_applied(&mut merged, applied, shape);

    let previously_mine = entries
        .iter()
        .find(|e| is_mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for e in entries.iter_mut().filter(|e| !is_mine(e)) {
        if force {
            e.fields.subtract(&applied_set);
        }
    }
    let mut others = FieldSet::default();
    for e in entries.iter().filter(|e| !is_mine(e)) {
        others.union(&e.fields);
    }
    // As structured-merge-diff's prune: a struct field counts as owned by
    // whoever owns something under it, so a nested object the manager no
    // longer applies (and nobody else owns anything in) goes as a whole
    // instead of staying behind as `{}`. The object's metadata always stays:
    // an applied configuration names its object.
    let mut kept = applied_set.clone();
    kept.union(&others);
    let mut kept = kept.with_named_fields(shape);
    kept.children.entry("f:metadata".into()).or_default().member = true;
    let mut dropped = previously_mine.with_named_fields(shape);
    dropped.subtract(&kept);
    // Remove outermost paths first; their descendants go with them (removing
    // a list-map item's key field first would make the item unfindable).
    let mut paths: Vec<Vec<String>> = dropped.members().into_iter().map(|(p, _)| p).collect();
    paths.sort_by_key(Vec::len);
    let mut removed: Vec<Vec<String>> = Vec::new();
    for p in paths {
        if removed.iter().any(|r| p.starts_with(r)) {
            continue;
        }
        remove_at(&mut merged, &p);
        removed.push(p);
    }

    let api_version = applied["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    entries.retain(|e| !is_mine(e));
    entries.push(Entry {
        manager: manager.to_string(),
        operation: "Apply".into(),
        api_version,
        time: now.to_string(),
        subresource: part.subresource().into(),
        fields: applied_set,
    });
    write_entries(&mut merged, entries);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T00:00:00Z";

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})
    }

    #[test]
    fn apply_conflicts_with_other_manager_unless_forced() {
        let shape = Shape::root(None);
        let first = apply(
            None,
            &cm(json!({"a": "1"})),
            shape,
            Part::Whole,
            "one",
            false,
            NOW,
        )
        .unwrap();
        let err = apply(
            Some(&first),
            &cm(json!({"a": "2"})),
            shape,
            Part::Whole,
            "two",
            false,
            NOW,
        )
        .unwrap_err();
        assert_eq!(err.code, 409);
        assert!(
            err.message.contains("conflict with \"one\""),
            "{}",
            err.message
        );
        // The same value is shared ownership, not a conflict.
        apply(
            Some(&first),
            &cm(json!({"a": "1"})),
            shape,
            Part::Whole,
            "two",
            false,
            NOW,
        )
        .unwrap();
        let forced = apply(
            Some(&first),
            &cm(json!({"a": "2"})),
            shape,
            Part::Whole,
            "two",
            true,
            NOW,
        )
        .unwrap();
        assert_eq!(forced["data"]["a"], "2");
        let managers: Vec<&str> = forced["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, vec!["two"], "one lost its only field");
    }

    #[test]
    fn dropping_a_field_from_apply_removes_it_unless_someone_else_owns_it() {
        let shape = Shape::root(None);
        let v1 = apply(
            None,
            &cm(json!({"a": "1", "b": "2"})),
            shape,
            Part::Whole,
            "m",
            false,
            NOW,
        )
        .unwrap();
        let v2 = apply(
            Some(&v1),
            &cm(json!({"a": "1"})),
            shape,
            Part::Whole,
            "m",
            false,
            NOW,
        )
        .unwrap();
        assert_eq!(v2["data"], json!({"a": "1"}));

        let mut edited = v1.clone();
        edited["data"]["b"] = json!("3");
        record_update(Some(&v1), &mut edited, shape, Part::Whole, "editor", NOW);
        let v3 = apply(
            Some(&edited),
            &cm(json!({"a": "1"})),
            shape,
            Part::Whole,
            "m",
            false,
            NOW,
        )
        .unwrap();
        assert_eq!(v3["data"]["b"], "3", "editor owns b now");
    }

    #[test]
    fn a_nested_object_no_longer_applied_goes_as_a_whole() {
        // status.tokens[name=x].previous {id, sha256}: structured-merge-diff
        // removes the whole field, not just its members (which would leave
        // `previous: {}` behind and fail the schema's required fields).
        let schema = json!({"type": "object", "properties": {
            "metadata": {"type": "object"},
            "status": {"type": "object", "properties": {"tokens": {
                "type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {
                    "name": {"type": "string"},
                    "current": {"type": "string"},
                    "previous": {"type": "object", "required": ["id", "sha256"], "properties": {
                        "id": {"type": "string"}, "sha256": {"type": "string"}}}}}}}}}});
        let shape = Shape::root(Some(&schema));
        let obj = |status: Value| {
            json!({"apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
                   "metadata": {"name": "k"}, "status": status})
        };
        let with_previous = obj(json!({"tokens": [
            {"name": "x", "current": "b", "previous": {"id": "a", "sha256": "aa"}}]}));
        let without_previous = obj(json!({"tokens": [{"name": "x", "current": "b"}]}));
        let v1 = apply(None, &with_previous, shape, Part::Status, "c", false, NOW).unwrap();
        let v2 = apply(
            Some(&v1),
            &without_previous,
            shape,
            Part::Status,
            "c",
            false,
            NOW,
        )
        .unwrap();
        assert_eq!(
            v2["status"],
            json!({"tokens": [{"name": "x", "current": "b"}]})
        );
        assert_eq!(v2["metadata"]["name"], "k");

        // Another manager owning a member keeps the object and that member.
        let mut edited = v1.clone();
        edited["status"]["tokens"][0]["previous"]["id"] = json!("z");
        record_update(Some(&v1), &mut edited, shape, Part::Status, "editor", NOW);
        let v3 = apply(
            Some(&edited),
            &without_previous,
            shape,
            Part::Status,
            "c",
            false,
            NOW,
        )
        .unwrap();
        assert_eq!(
            v3["status"]["tokens"][0],
            json!({"name": "x", "current": "b", "previous": {"id": "z"}})
        );

        // Labels no longer applied go as a whole; the metadata stays.
        let labelled = json!({"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "c", "labels": {"a": "1"}}});
        let w1 = apply(
            None,
            &labelled,
            Shape::root(None),
            Part::Whole,
            "m",
            false,
            NOW,
        )
        .unwrap();
        let w2 = apply(
            Some(&w1),
            &cm(json!({"x": "1"})),
            Shape::root(None),
            Part::Whole,
            "m",
            false,
            NOW,
        )
        .unwrap();
        assert_eq!(
            w2["metadata"],
            json!({"name": "c", "managedFields": w2["metadata"]["managedFields"]})
        );
        assert_eq!(w2["data"], json!({"x": "1"}));
    }
}
