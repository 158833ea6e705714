//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
//! strategic merge patch for the built-in types in the cases kubectl
//! produces (merge keys on the common lists, `$patch`, `$retainKeys`,
//! `$setElementOrder`, `$deleteFromPrimitiveList`). Server-side apply lives in
//! `managed`.

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

/// The PATCH content types Kubernetes accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`
    Merge,
    /// `application/json-patch+json`
    Json,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml`
    Apply,
}

impl PatchType {
    /// Recognise a `Content-Type` header value.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// Apply a JSON merge patch.
pub fn merge_patch(doc: &mut Value, patch: &Value) {
    json_patch::merge(doc, patch);
}

/// Apply a JSON patch the way the API server does (evanphx/json-patch v4):
/// the whole patch applies or none of it, and a failed operation answers
/// `422`. One difference from RFC 6902 is kept for fidelity: `test` of a
/// missing object member treats it as `null`, so
/// `{"op":"test","path":"/metadata/finalizers","value":null}` succeeds when
/// the object has no finalizers (kube-rs's finalizer helper relies on it).
/// The member's parent must still exist, and an array index must be in range.
pub fn json_patch(doc: &mut Value, patch: &Value) -> ApiResult<()> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    // The real server's answer names neither the operation nor the path.
    let rejected = |_: String| {
        ApiError::invalid_patch("the server rejected our request due to an error in our request")
    };
    let mut work = doc.clone();
    for op in ops.iter() {
        match op {
            json_patch::PatchOperation::Test(test) => {
                test_op(&work, test).map_err(rejected)?;
            }
            other => {
                json_patch::patch(&mut work, std::slice::from_ref(other))
                    .map_err(|e| rejected(e.to_string()))?;
            }
        }
    }
    *doc = work;
    Ok(())
}

/// evanphx/json-patch's `test`: a missing member (or a `null` one) equals `null`.
fn test_op(doc: &Value, test: &json_patch::TestOperation) -> Result<(), String> {
    let path = test.path.as_str();
    let failed = || format!("testing value {path} failed");
    let Some((parent, last)) = test.path.split_back() else {
        // The root document.
        return if *doc == test.value {
            Ok(())
        } else {
            Err(failed())
        };
    };
    let parent = doc
        .pointer(parent.as_str())
        .ok_or_else(|| format!("test operation does not apply: doc is missing path: {path}"))?;
    let key = last.decoded();
    let current = match parent {
        Value::Object(map) => map.get(key.as_ref()),
        Value::Array(items) => {
            let index = key
                .parse::<usize>()
                .ok()
                .filter(|i| *i < items.len())
                .ok_or_else(|| format!("unable to access invalid index: {key}"))?;
            items.get(index)
        }
        _ => {
            return Err(format!(
                "test operation does not apply: doc is missing path: {path}"
            ));
        }
    };
    match current {
        None | Some(Value::Null) if test.value.is_null() => Ok(()),
        Some(v) if *v == test.value => Ok(()),
        _ => Err(failed()),
    }
}

/// The strategic merge key of a built-in list field, if it merges by key.
fn merge_key(field: &str, item: &Value) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "ports" if item.get("containerPort").is_some() => Some("containerPort"),
        "ports" => Some("port"),
        _ => None,
    }
}

/// Primitive lists with the `merge` strategy (others are replaced).
fn merges_primitives(field: &str) -> bool {
    field == "finalizers"
}

/// Apply a strategic merge patch to a built-in object.
pub fn strategic_merge(doc: &mut Value, patch: &Value) -> ApiResult<()> {
    match (doc, patch) {
        (Value::Object(d), Value::Object(p)) => {
            strategic_map(d, p);
            Ok(())
        }
        _ => Err(ApiError::bad_request(
            "strategic merge patch must be a JSON object",
        )),
    }
}

fn strategic_map(doc: &mut Map<String, Value>, patch: &Map<String, Value>) {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch.clone();
        replaced.remove("$patch");
        *doc = replaced;
        return;
    }
    if let Some(keep) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        doc.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, pv) in patch {
        if key == "$patch" || key == "$retainKeys" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(del)) = (doc.get_mut(field), pv.as_array()) {
                items.retain(|i| !del.contains(i));
            }
            continue;
        }
        if key.starts_with("$setElementOrder/") {
            // Applied after the list itself is merged, below.
            continue;
        }
        if pv.is_null() {
            doc.remove(key);
            continue;
        }
        match (doc.get_mut(key), pv) {
            (Some(Value::Object(dm)), Value::Object(pm)) => {
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    doc.remove(key);
                } else {
                    strategic_map(dm, pm);
                }
            }
            (Some(Value::Array(dl)), Value::Array(pl)) => strategic_list(key, dl, pl),
            (_, Value::Object(pm)) => {
                if pm.get("$patch").and_then(Value::as_str) != Some("delete") {
                    let mut fresh = Map::new();
                    strategic_map(&mut fresh, pm);
                    doc.insert(key.clone(), Value::Object(fresh));
                }
            }
            (_, Value::Array(pl)) => {
                let mut fresh = Vec::new();
                strategic_list(key, &mut fresh, pl);
                doc.insert(key.clone(), Value::Array(fresh));
            }
            _ => {
                doc.insert(key.clone(), pv.clone());
            }
        }
    }
    for (key, order) in patch {
        if let (Some(field), Some(order)) =
            (key.strip_prefix("$setElementOrder/"), order.as_array())
            && let Some(Value::Array(items)) = doc.get_mut(field)
        {
            reorder(field, items, order);
        }
    }
}

fn strategic_list(field: &str, doc: &mut Vec<Value>, patch: &[Value]) {
    let first = patch.first().cloned().unwrap_or(Value::Null);
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *doc = patch
            .iter()
            .filter(|p| p.get("$patch").is_none())
            .cloned()
            .collect();
        return;
    }
    match merge_key(field, &first) {
        Some(key) if first.is_object() => {
            for item in patch {
                let id = item.get(key);
                let pos = doc.iter().position(|d| d.get(key) == id);
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        doc.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        if let (Value::Object(dm), Value::Object(pm)) = (&mut doc[i], item) {
                            strategic_map(dm, pm);
                        }
                    }
                    (None, false) => {
                        let mut fresh = Map::new();
                        if let Value::Object(pm) = item {
                            strategic_map(&mut fresh, pm);
                        }
                        doc.push(Value::Object(fresh));
                    }
                }
            }
        }
        _ if merges_primitives(field) => {
            for item in patch {
                if !doc.contains(item) {
                    doc.push(item.clone());
                }
            }
        }
        _ => *doc = patch.to_vec(),
    }
}

/// Order list items as `$setElementOrder` says; items it does not mention
/// keep their relative order after the mentioned ones.
fn reorder(field: &str, items: &mut [Value], order: &[Value]) {
    let first = order.first().cloned().unwrap_or(Value::Null);
    let key = merge_key(field, &first).filter(|_| first.is_object());
    let rank = |item: &Value| {
        order
            .iter()
            .position(|o| match key {
                Some(k) => o.get(k) == item.get(k),
                None => o == item,
            })
            .unwrap_or(usize::MAX)
    };
    items.sort_by_key(rank);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let mut doc = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "a:2"}, {"name": "b", "$patch": "delete"}]}}}});
        strategic_merge(&mut doc, &patch).unwrap();
        assert_eq!(
            doc["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "a:2"}])
        );
    }

    #[test]
    fn strategic_merge_deletes_nulls_and_unions_finalizers() {
        let mut doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]}});
        let patch = json!({"metadata": {"labels": {"a": null}, "finalizers": ["y"]}});
        strategic_merge(&mut doc, &patch).unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"b": "2"}, "finalizers": ["x", "y"]}})
        );
    }

    #[test]
    fn json_patch_test_failure_is_unprocessable() {
        let mut doc = json!({"a": 1});
        let err =
            json_patch(&mut doc, &json!([{"op": "test", "path": "/a", "value": 2}])).unwrap_err();
        assert_eq!(err.code, 422);
    }

    #[test]
    fn json_patch_test_of_missing_member_equals_null() {
        // kube-rs's finalizer helper adds the first finalizer like this; the
        // API server (evanphx/json-patch) accepts it.
        let mut doc = json!({"metadata": {"name": "a"}});
        let patch = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["keysmith.dev/revoke"]}
        ]);
        json_patch(&mut doc, &patch).unwrap();
        assert_eq!(
            doc["metadata"]["finalizers"],
            json!(["keysmith.dev/revoke"])
        );
        // An explicit null is null too.
        let mut doc = json!({"metadata": {"finalizers": null}});
        json_patch(&mut doc, &patch).unwrap();
        assert_eq!(
            doc["metadata"]["finalizers"],
            json!(["keysmith.dev/revoke"])
        );
    }

    #[test]
    fn json_patch_test_keeps_failing_where_the_api_server_fails() {
        let original = json!({"metadata": {"finalizers": ["x"]}, "list": [1]});
        let cases = [
            // Present member against null.
            json!([{"op": "test", "path": "/metadata/finalizers", "value": null}]),
            // Missing member against a non-null value.
            json!([{"op": "test", "path": "/metadata/labels", "value": {}}]),
            // Missing parent.
            json!([{"op": "test", "path": "/spec/x", "value": null}]),
            // Array index out of range is an error, not null.
            json!([{"op": "test", "path": "/list/1", "value": null}]),
            // A failing test after an applied operation rolls the patch back.
            json!([
                {"op": "add", "path": "/a", "value": 1},
                {"op": "test", "path": "/metadata/finalizers/0", "value": "y"}
            ]),
        ];
        for patch in cases {
            let mut doc = original.clone();
            let err = json_patch(&mut doc, &patch).unwrap_err();
            assert_eq!(err.code, 422, "{patch}");
            assert_eq!(doc, original, "{patch}");
        }
        // The remove half of the finalizer helper: test the element, then remove it.
        let mut doc = original.clone();
        json_patch(
            &mut doc,
            &json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": "x"},
                {"op": "remove", "path": "/metadata/finalizers/0"}
            ]),
        )
        .unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!([]));
    }
}
