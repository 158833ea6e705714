//! Field sets in the `FieldsV1` format of `metadata.managedFields`, and the
//! list/map semantics ("shape") that decide how a field path is named:
//! `f:name` for struct fields and map keys, `k:{"name":"x"}` for items of a
//! `x-kubernetes-list-type: map` list, `v:"x"` for items of a set, and
//! atomic lists/maps as single leaves.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// How a list is merged and owned.
#[derive(Debug, Clone, PartialEq)]
pub enum ListKind {
    /// Replaced and owned as a whole.
    Atomic,
    /// Items are scalars owned individually.
    Set,
    /// Items are objects identified by these keys.
    Map(Vec<String>),
}

/// The schema context of a value: the CRD's structural schema when there is
/// one, otherwise Kubernetes' built-in list semantics looked up by field name.
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    schema: Option<&'a Value>,
    field: &'a str,
    builtin: bool,
}

/// Built-in list semantics for the fields Keysmith and kubectl write on
/// core/apps/rbac objects (from the Kubernetes API types' list markers).
fn builtin_list_kind(field: &str) -> ListKind {
    let keys: &[&str] = match field {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" => &["name"],
        "volumeMounts" => &["mountPath"],
        "ports" => &["containerPort", "port", "protocol"],
        "conditions" => &["type"],
        "ownerReferences" => &["uid"],
        "finalizers" => return ListKind::Set,
        _ => return ListKind::Atomic,
    };
    ListKind::Map(keys.iter().map(|s| s.to_string()).collect())
}

impl<'a> Shape<'a> {
    /// The root shape of an object of a kind with or without a CRD schema.
    pub fn root(schema: Option<&'a Value>) -> Self {
        Shape {
            schema,
            field: "",
            builtin: schema.is_none(),
        }
    }

    /// The shape of a child field or map value.
    pub fn child(&self, key: &'a str) -> Shape<'a> {
        // metadata is never described by CRD schemas beyond name/namespace;
        // it always follows the built-in ObjectMeta semantics.
        if self.field.is_empty() && key == "metadata" {
            return Shape {
                schema: None,
                field: key,
                builtin: true,
            };
        }
        let schema = self.schema.and_then(|s| {
            s.get("properties")
                .and_then(|p| p.get(key))
                .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
        });
        Shape {
            schema,
            field: key,
            builtin: self.builtin,
        }
    }

    /// The shape of list items.
    pub fn items(&self) -> Shape<'a> {
        Shape {
            schema: self.schema.and_then(|s| s.get("items")),
            field: self.field,
            builtin: self.builtin,
        }
    }

    /// How a list at this position behaves.
    pub fn list_kind(&self) -> ListKind {
        if self.builtin {
            return builtin_list_kind(self.field);
        }
        let Some(s) = self.schema else {
            return ListKind::Atomic;
        };
        match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListKind::Set,
            Some("map") => ListKind::Map(
                s.get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|k| k.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ => ListKind::Atomic,
        }
    }

    /// Whether `key` of an object at this position is a named (struct)
    /// field rather than a key of a map: structured-merge-diff treats a
    /// named field as owned by whoever owns something under it.
    pub fn named_field(&self, key: &str) -> bool {
        if self.field.is_empty() && key == "metadata" {
            return true;
        }
        if self.builtin {
            // The built-in types' maps (whose keys are not named fields).
            return !matches!(
                self.field,
                "labels"
                    | "annotations"
                    | "data"
                    | "stringData"
                    | "binaryData"
                    | "nodeSelector"
                    | "matchLabels"
                    | "limits"
                    | "requests"
            );
        }
        self.schema
            .and_then(|s| s.get("properties"))
            .and_then(|p| p.get(key))
            .is_some()
    }

    /// Whether an object at this position is owned as a whole.
    pub fn atomic_map(&self) -> bool {
        if self.builtin {
            // LabelSelector and similar are atomic structs in the built-in types.
            // OwnerReference is an atomic struct too (`+structType=atomic`).
            return matches!(self.field, "selector" | "matchLabels" | "ownerReferences");
        }
        self.schema
            .and_then(|s| s.get("x-kubernetes-map-type"))
            .and_then(Value::as_str)
            == Some("atomic")
    }
}

/// The `k:{...}` element name of a list-map item.
fn map_key(item: &Value, keys: &[String]) -> String {
    let parts: Vec<String> = keys
        .iter()
        .filter_map(|k| {
            item.get(k)
                .map(|v| format!("{}:{}", Value::String(k.clone()), v))
        })
        .collect();
    format!("k:{{{}}}", parts.join(","))
}

/// A set of field paths, as a trie keyed by path elements.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSet {
    /// The node itself is a member (a leaf field, or a list-map item as such).
    pub member: bool,
    /// Child path elements.
    pub children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// Every field of a value, at its shape.
    pub fn from_value(v: &Value, shape: Shape<'_>) -> FieldSet {
        let mut set = FieldSet::default();
        match v {
            Value::Object(m) if !m.is_empty() && !shape.atomic_map() => {
                for (k, child) in m {
                    set.children.insert(
                        format!("f:{k}"),
                        FieldSet::from_value(child, shape.child(k)),
                    );
                }
            }
            Value::Array(items) => match shape.list_kind() {
                ListKind::Map(keys) if !items.is_empty() => {
                    for item in items {
                        let mut node = FieldSet::from_value(item, shape.items());
                        node.member = true;
                        set.children.insert(map_key(item, &keys), node);
                    }
                }
                ListKind::Set if !items.is_empty() => {
                    for item in items {
                        set.children.insert(
                            format!("v:{item}"),
                            FieldSet {
                                member: true,
                                children: BTreeMap::new(),
                            },
                        );
                    }
                }
                _ => set.member = true,
            },
            _ => set.member = true,
        }
        set
    }

    /// Parse a `fieldsV1` object.
    pub fn from_fields_v1(v: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        if let Some(m) = v.as_object() {
            if m.is_empty() {
                set.member = true;
            }
            for (k, child) in m {
                if k == "." {
                    set.member = true;
                } else {
                    set.children
                        .insert(k.clone(), FieldSet::from_fields_v1(child));
                }
            }
        }
        set
    }

    /// Render as a `fieldsV1` object.
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (k, c) in &self.children {
            m.insert(k.clone(), c.to_fields_v1());
        }
        Value::Object(m)
    }

    /// Remove a top-level path like `["f:metadata", "f:uid"]`.
    pub fn remove_path(&mut self, path: &[&str]) {
        match path {
            [] => {}
            [last] => {
                self.children.remove(*last);
            }
            [first, rest @ ..] => {
                if let Some(c) = self.children.get_mut(*first) {
                    c.remove_path(rest);
                    if c.is_empty() {
                        self.children.remove(*first);
                    }
                }
            }
        }
    }

    /// Keep only the subtree under one top-level element (e.g. `f:status`).
    pub fn only(&self, element: &str) -> FieldSet {
        let mut out = FieldSet::default();
        if let Some(c) = self.children.get(element) {
            out.children.insert(element.to_string(), c.clone());
        }
        out
    }

    /// Set union.
    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, c) in &other.children {
            self.children.entry(k.clone()).or_default().union(c);
        }
    }

    /// Set difference.
    pub fn subtract(&mut self, other: &FieldSet) {
        if other.member {
            self.member = false;
        }
        for (k, c) in &other.children {
            if let Some(mine) = self.children.get_mut(k) {
                mine.subtract(c);
                if mine.is_empty() {
                    self.children.remove(k);
                }
            }
        }
    }

    /// Set intersection.
    pub fn intersect(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            if let Some(o) = other.children.get(k) {
                let i = c.intersect(o);
                if !i.is_empty() {
                    out.children.insert(k.clone(), i);
                }
            }
        }
        out
    }

    /// The set with every named field that has members under it made a
    /// member itself (structured-merge-diff's `EnsureNamedFieldsAreMembers`):
    /// `a.b.c` also owns `a` and `a.b` when they are struct fields, but not
    /// map keys.
    pub fn with_named_fields(&self, shape: Shape<'_>) -> FieldSet {
        let mut out = FieldSet {
            member: self.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            let mut node = match k.strip_prefix("f:") {
                Some(field) => {
                    let mut node = c.with_named_fields(shape.child(field));
                    node.member |= shape.named_field(field);
                    node
                }
                None => c.with_named_fields(shape.items()),
            };
            node.member |= c.member;
            out.children.insert(k.clone(), node);
        }
        out
    }

    /// Every member path, with whether it is a leaf (no children).
    pub fn members(&self) -> Vec<(Vec<String>, bool)> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, bool)>) {
        if self.member {
            out.push((prefix.clone(), self.children.is_empty()));
        }
        for (k, c) in &self.children {
            prefix.push(k.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }
}

/// Find the list index an element (`k:`, `v:`, `i:`) refers to.
fn list_index(items: &[Value], element: &str) -> Option<usize> {
    if let Some(keys) = element.strip_prefix("k:") {
        let want: Map<String, Value> = serde_json::from_str(keys).ok()?;
        items
            .iter()
            .position(|item| want.iter().all(|(k, v)| item.get(k) == Some(v)))
    } else if let Some(val) = element.strip_prefix("v:") {
        let want: Value = serde_json::from_str(val).ok()?;
        items.iter().position(|item| *item == want)
    } else {
        element.strip_prefix("i:")?.parse().ok()
    }
}

/// The value at a field path, if present.
pub fn value_at<'v>(v: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut cur = v;
    for el in path {
        cur = match (el.strip_prefix("f:"), cur) {
            (Some(field), Value::Object(m)) => m.get(field)?,
            (None, Value::Array(items)) => &items[list_index(items, el)?],
            _ => return None,
        };
    }
    Some(cur)
}

/// Remove the value at a field path (a no-op when absent).
pub fn remove_at(v: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for el in parent_path {
        cur = match (el.strip_prefix("f:"), cur) {
            (Some(field), Value::Object(m)) => match m.get_mut(field) {
                Some(c) => c,
                None => return,
            },
            (None, Value::Array(items)) => match list_index(items, el) {
                Some(i) => &mut items[i],
                None => return,
            },
            _ => return,
        };
    }
    match (last.strip_prefix("f:"), cur) {
        (Some(field), Value::Object(m)) => {
            m.remove(field);
        }
        (None, Value::Array(items)) => {
            if let Some(i) = list_index(items, last) {
                items.remove(i);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_map_items_are_keyed_and_round_trip() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "tokens": {"type": "array", "x-kubernetes-list-type": "map",
                       "x-kubernetes-list-map-keys": ["name"],
                       "items": {"type": "object"}}}}}});
        let obj = json!({"spec": {"tokens": [{"name": "a", "bytes": 32}]},
                         "metadata": {"finalizers": ["x"], "labels": {"l": "v"}}});
        let set = FieldSet::from_value(&obj, Shape::root(Some(&schema)));
        let v1 = set.to_fields_v1();
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:finalizers": {"v:\"x\"": {}}, "f:labels": {"f:l": {}}},
                   "f:spec": {"f:tokens": {"k:{\"name\":\"a\"}": {".": {}, "f:bytes": {}, "f:name": {}}}}})
        );
        assert_eq!(FieldSet::from_fields_v1(&v1), set);
        let path: Vec<String> = ["f:spec", "f:tokens", "k:{\"name\":\"a\"}", "f:bytes"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(value_at(&obj, &path), Some(&json!(32)));
        let mut o = obj.clone();
        remove_at(&mut o, &path[..3]);
        assert_eq!(o["spec"]["tokens"], json!([]));
    }

    #[test]
    fn set_algebra() {
        let a = FieldSet::from_value(&json!({"a": 1, "b": {"c": 2}}), Shape::root(None));
        let b = FieldSet::from_value(&json!({"b": {"c": 3}}), Shape::root(None));
        let mut d = a.clone();
        d.subtract(&b);
        assert_eq!(d.to_fields_v1(), json!({"f:a": {}}));
        assert_eq!(a.intersect(&b), b);
    }
}
