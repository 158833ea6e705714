//! OpenAPI v3 documents, enough for kubectl: the root index at
//! `/openapi/v3` and one document per group/version whose PATCH operations
//! carry the `x-kubernetes-group-version-kind` extension and the
//! `fieldValidation` parameter (kubectl reads them to decide it may leave
//! field validation to the server), plus the CRD schemas (for `kubectl
//! explain`). `/openapi/v2` is a Swagger document without definitions (see [`v2`]).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use crate::registry::{Registry, ResourceType};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn all_group_versions(reg: &Registry) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for rt in reg.all() {
        let gv = (rt.group.clone(), rt.version.clone());
        if !out.contains(&gv) {
            out.push(gv);
        }
    }
    out
}

fn hash_of(v: &Value) -> String {
    let mut h = DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

/// `/openapi/v3`.
pub fn root(reg: &Registry) -> Value {
    let mut paths = Map::new();
    for (g, v) in all_group_versions(reg) {
        let doc = group_version(reg, &g, &v).unwrap_or(Value::Null);
        let path = gv_path(&g, &v);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", hash_of(&doc))}),
        );
    }
    json!({"paths": paths})
}

fn schema_name(rt: &ResourceType) -> String {
    let group = if rt.group.is_empty() {
        "core"
    } else {
        &rt.group
    };
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{}.{}", reversed.join("."), rt.version, rt.kind)
}

fn query(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn operations(rt: &ResourceType, item: bool) -> Value {
    let gvk = json!({"group": rt.group, "version": rt.version, "kind": rt.kind});
    let body_ref = json!({"$ref": format!("#/components/schemas/{}", schema_name(rt))});
    let op = |id: &str, action: &str| {
        json!({
            "operationId": id,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            "parameters": [query("dryRun"), query("fieldManager"), query("fieldValidation")],
            "responses": {"200": {"content": {"application/json": {"schema": body_ref}}}},
        })
    };
    let mut ops = Map::new();
    if item {
        ops.insert("get".into(), op(&format!("read{}", rt.kind), "get"));
        ops.insert("put".into(), op(&format!("replace{}", rt.kind), "put"));
        ops.insert("delete".into(), op(&format!("delete{}", rt.kind), "delete"));
        let mut patch = op(&format!("patch{}", rt.kind), "patch");
        patch["parameters"]
            .as_array_mut()
            .expect("built above as an array")
            .push(query("force"));
        let mut content = Map::new();
        // Strategic merge is deliberately not advertised: kubectl would then
        // build its patch from these (schema-less) documents instead of from
        // its compiled-in types, and lose the list merge keys.
        for t in [
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ] {
            content.insert(t.into(), json!({"schema": {"type": "object"}}));
        }
        patch["requestBody"] = json!({"content": content});
        ops.insert("patch".into(), patch);
    } else {
        ops.insert("get".into(), op(&format!("list{}", rt.kind), "list"));
        ops.insert("post".into(), op(&format!("create{}", rt.kind), "post"));
    }
    Value::Object(ops)
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/GROUP/VERSION`.
pub fn group_version(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = reg.in_group_version(group, version);
    if types.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for rt in types {
        let prefix = format!("/{}", gv_path(&rt.group, &rt.version));
        let collection = if rt.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural)
        } else {
            format!("{prefix}/{}", rt.plural)
        };
        if !rt.virtual_create_only {
            paths.insert(format!("{collection}/{{name}}"), operations(rt, true));
        }
        paths.insert(collection, operations(rt, false));
        let mut schema = rt
            .crd
            .as_ref()
            .and_then(|c| c.schema.clone())
            .unwrap_or_else(
                || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            );
        schema["x-kubernetes-group-version-kind"] =
            json!([{"group": rt.group, "version": rt.version, "kind": rt.kind}]);
        schemas.insert(schema_name(rt), schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// The Swagger 2.0 document's title and version, as a real server's `info` reads.
const V2_INFO: (&str, &str) = ("Kubernetes", "1.32");

/// `/openapi/v2` as JSON: a Swagger 2.0 document with no paths and no definitions. kubectl
/// reads it (as protobuf, [`v2_protobuf`]) only to validate the items of a `v1` `List`
/// client-side, since no OpenAPI v3 operation names that kind; without it, `kubectl apply` of
/// what `kubectl get -o yaml` prints fails. With no definitions kubectl leaves every item's
/// validation to the server (`fieldValidation`), where a real server's definitions would let
/// kubectl check the items itself first.
pub fn v2() -> Value {
    json!({
        "swagger": "2.0",
        "info": {"title": V2_INFO.0, "version": V2_INFO.1},
        "paths": {},
        "definitions": {},
    })
}

/// [`v2`] as gnostic's `openapi.v2.Document` protobuf, the form kubectl asks for: `swagger` (1),
/// `info` (2: `title` 1, `version` 2), `paths` (8) and `definitions` (9), both empty.
pub fn v2_protobuf() -> Vec<u8> {
    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let len = u8::try_from(bytes.len()).expect("short fields only");
        let mut out = vec![(number << 3) | 2, len];
        out.extend_from_slice(bytes);
        out
    }
    let info = [
        field(1, V2_INFO.0.as_bytes()),
        field(2, V2_INFO.1.as_bytes()),
    ]
    .concat();
    [
        field(1, b"2.0"),
        field(2, &info),
        field(8, &[]),
        field(9, &[]),
    ]
    .concat()
}
