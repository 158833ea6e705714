//! DELETE and DELETECOLLECTION: preconditions, propagation policy
//! (`Background`, `Foreground`, `Orphan`), finalizers and
//! `deletionTimestamp`, then the garbage collector's sweep.

use axum::http::StatusCode;
use axum::response::Response;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusDetails};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::gc;
use crate::http::{ResourceCall, json_response};
use crate::state::{ObjectRef, State, finalizers, meta_str, now, present};
use crate::store::EventType;
use crate::verbs::list::{ListBody, ListQuery};

/// `DeleteOptions` that matter here.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `Background` (default), `Foreground` or `Orphan`.
    pub propagation: Option<String>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Read a `DeleteOptions` body plus query parameters.
    pub fn from_body(body: &Value, propagation_param: Option<&str>, dry_run: bool) -> Self {
        DeleteOptions {
            propagation: body["propagationPolicy"]
                .as_str()
                .or(propagation_param)
                .map(String::from)
                .or_else(|| match body["orphanDependents"].as_bool() {
                    Some(true) => Some("Orphan".into()),
                    _ => None,
                }),
            uid: body["preconditions"]["uid"].as_str().map(String::from),
            resource_version: body["preconditions"]["resourceVersion"]
                .as_str()
                .map(String::from),
            dry_run: dry_run || body["dryRun"].as_array().is_some_and(|a| !a.is_empty()),
        }
    }

    /// The options of a DELETE request: its body and query.
    fn of(call: &ResourceCall<'_>) -> ApiResult<Self> {
        Ok(DeleteOptions::from_body(
            &call.decode_body()?,
            call.param("propagationPolicy"),
            call.write_options().dry_run,
        ))
    }
}

/// The preconditions of a delete, against the stored object.
fn check_preconditions(r: ObjectRef<'_>, obj: &Value, opts: &DeleteOptions) -> ApiResult<()> {
    let failed = |why: String| {
        ApiError::conflict(
            &r.rt.group,
            &r.rt.plural,
            r.name,
            &format!("Precondition failed: {why}"),
        )
    };
    if let Some(uid) = &opts.uid
        && uid != meta_str(obj, "uid")
    {
        return Err(failed(format!(
            "UID in precondition: {uid}, UID in object meta: {}",
            meta_str(obj, "uid")
        )));
    }
    if let Some(rv) = &opts.resource_version
        && rv != meta_str(obj, "resourceVersion")
    {
        return Err(failed(format!(
            "ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
            meta_str(obj, "resourceVersion")
        )));
    }
    Ok(())
}

/// Mark an object as being deleted: `deletionTimestamp` (once), its finalizers, and a
/// namespace's `Terminating` phase.
fn mark_deleting(obj: &mut Value, fins: Vec<String>, is_namespace: bool) {
    if obj["metadata"]["deletionTimestamp"].is_null() {
        obj["metadata"]["deletionTimestamp"] = json!(now());
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        if let Some(g) = obj["metadata"]["generation"].as_i64() {
            obj["metadata"]["generation"] = json!(g + 1);
        }
    }
    if !fins.is_empty() {
        obj["metadata"]["finalizers"] = json!(fins);
    }
    if is_namespace {
        obj["status"]["phase"] = json!("Terminating");
    }
}

impl State {
    /// DELETE of one object.
    pub fn delete(&mut self, r: ObjectRef<'_>, opts: &DeleteOptions) -> ApiResult<Value> {
        let rt = r.rt;
        let gr = rt.group_resource();
        let mut obj = r.stored(self).cloned().ok_or_else(|| r.not_found())?;
        check_preconditions(r, &obj, opts)?;
        if opts.dry_run {
            return Ok(present(rt, &obj));
        }
        let policy = opts.propagation.as_deref().unwrap_or("Background");
        if policy == "Orphan" {
            gc::orphan_dependents(self, meta_str(&obj, "uid"));
        }
        let mut fins = finalizers(&obj);
        if policy == "Foreground" && !fins.iter().any(|f| f == gc::FOREGROUND) {
            fins.push(gc::FOREGROUND.into());
        }
        let is_namespace = rt.group.is_empty() && rt.plural == "namespaces";
        if fins.is_empty() && !is_namespace {
            let removed = self
                .remove_final(&gr, r.namespace, r.name)
                .expect("object read above under the same lock");
            gc::sweep(self);
            return Ok(present(rt, &removed));
        }
        mark_deleting(&mut obj, fins, is_namespace);
        let rv = self.store.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.store.put(&gr, obj.clone(), EventType::Modified);
        gc::sweep(self);
        Ok(present(rt, r.stored(self).unwrap_or(&obj)))
    }
}

/// Answer a DELETE.
pub fn serve(call: &ResourceCall<'_>) -> ApiResult<Response> {
    let options = DeleteOptions::of(call)?;
    let r = call.object();
    let mut st = call.server.state();
    let deleted = st.delete(r, &options)?;
    let gone = r.stored(&st).is_none();
    drop(st);
    // The real server answers an immediate delete of a custom resource with a Status
    // (its registry does not return the deleted object), a pending one with the object.
    if gone && call.rt.crd.is_some() {
        let status = Status {
            status: Some("Success".into()),
            details: Some(StatusDetails {
                name: Some(r.name.to_string()),
                group: Some(call.rt.group.clone()),
                kind: Some(call.rt.plural.clone()),
                uid: Some(meta_str(&deleted, "uid").to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        return Ok(json_response(StatusCode::OK, &status, &[]));
    }
    Ok(json_response(StatusCode::OK, &deleted, &[]))
}

/// Answer a DELETECOLLECTION: delete every selected object, answer the list of them.
pub fn serve_collection(call: &ResourceCall<'_>) -> ApiResult<Response> {
    let options = DeleteOptions::of(call)?;
    let query = ListQuery {
        namespace: call.namespace_filter(),
        labels: call.labels()?,
        fields: call.fields()?,
        ..Default::default()
    };
    let mut st = call.server.state();
    let keys: Vec<(String, String)> = st
        .list(&call.rt, &query)?
        .items
        .iter()
        .map(|item| {
            let meta = |field: &str| meta_str(item, field).to_string();
            (meta("namespace"), meta("name"))
        })
        .collect();
    let mut deleted = Vec::new();
    for (ns, name) in &keys {
        deleted.push(st.delete(ObjectRef::new(&call.rt, ns, name), &options)?);
    }
    let rv = st.store.current_rv();
    Ok(json_response(
        StatusCode::OK,
        &ListBody::new(&call.rt, deleted, rv, None, None),
        &[],
    ))
}
