//! UPDATE (PUT, and the write every patch ends in): optimistic concurrency,
//! the status subresource, the fields a client cannot change, `generation`,
//! no-op detection and managedFields.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::admission::{self, check_type};
use crate::error::{ApiError, ApiResult};
use crate::gc;
use crate::http::{ResourceCall, json_response};
use crate::managed;
use crate::state::{ObjectRef, State, finalizers, meta_str, now, present};
use crate::store::EventType;
use crate::verbs::{WriteOptions, Written, part_of, shape_of};

/// Metadata a replace keeps from the stored object, whatever the body says.
const KEPT: [&str; 5] = [
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
];

/// Who records the managedFields of a replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagedFields {
    /// The replace records an update by the request's field manager.
    Record,
    /// The body carries a server-side apply result whose managedFields stand as they are.
    Applied,
}

/// The object without metadata (and without status when `status` is
/// separate): what `generation` tracks.
fn spec_part(obj: &Value, without_status: bool) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if without_status {
            m.remove("status");
        }
    }
    v
}

/// The API server's checkName: a PUT body must name its object (and so must the result of
/// a patch, which carries the stored name unless it removed it).
fn check_name(r: ObjectRef<'_>, obj: &Value) -> ApiResult<()> {
    let body_name = meta_str(obj, "name");
    if body_name != r.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            r.name
        )));
    }
    Ok(())
}

/// A body that names a resourceVersion must name the current one.
fn check_resource_version(r: ObjectRef<'_>, old: &Value, obj: &Value) -> ApiResult<()> {
    let body_rv = meta_str(obj, "resourceVersion");
    if !body_rv.is_empty() && body_rv != meta_str(old, "resourceVersion") {
        return Err(ApiError::conflict(
            &r.rt.group,
            &r.rt.plural,
            r.name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    Ok(())
}

/// A `/status` write: the stored object with the body's status.
fn status_only(old: &Value, obj: &Value, managed: ManagedFields) -> Value {
    let mut merged = old.clone();
    merged["status"] = obj["status"].clone();
    let managed_from = match managed {
        ManagedFields::Record => old,
        ManagedFields::Applied => obj,
    };
    merged["metadata"]["managedFields"] = managed_from["metadata"]["managedFields"].clone();
    merged
}

/// A main-resource write: the body, with the stored status (when status is separate), the
/// metadata only the server sets, and the URL's name and namespace.
fn keep_server_fields(r: ObjectRef<'_>, old: &Value, obj: &mut Value) {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    if r.rt.status_subresource {
        match old.get("status") {
            Some(s) => obj["status"] = s.clone(),
            None => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    for f in KEPT {
        match old["metadata"].get(f) {
            Some(v) => obj["metadata"][f] = v.clone(),
            None => {
                if let Some(m) = obj["metadata"].as_object_mut() {
                    m.remove(f);
                }
            }
        }
    }
    obj["metadata"]["name"] = json!(r.name);
    if r.rt.namespaced {
        obj["metadata"]["namespace"] = json!(r.namespace);
    }
    if obj["metadata"]["managedFields"].is_null() {
        obj["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
    }
}

/// `generation` moves when anything but metadata (and a separate status) changed.
fn bump_generation(r: ObjectRef<'_>, old: &Value, obj: &mut Value) {
    if !r.rt.has_generation {
        return;
    }
    let separate_status = r.rt.status_subresource;
    let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
    let changed = spec_part(old, separate_status) != spec_part(obj, separate_status);
    obj["metadata"]["generation"] = json!(if changed { generation + 1 } else { generation });
}

/// Whether a write would store what is stored already, managedFields aside.
fn changes_nothing(old: &Value, obj: &Value) -> bool {
    let mut candidate = obj.clone();
    candidate["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
    candidate == *old
}

impl State {
    /// Replace an object (PUT), on the main resource or `/status`.
    pub fn update(
        &mut self,
        r: ObjectRef<'_>,
        obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        self.replace(r, obj, opts, ManagedFields::Record)
    }

    /// [`State::update`], with the managedFields of a server-side apply already computed
    /// when `managed` says so.
    pub fn replace(
        &mut self,
        r: ObjectRef<'_>,
        mut obj: Value,
        opts: &WriteOptions,
        managed: ManagedFields,
    ) -> ApiResult<Written> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let rt = r.rt;
        check_type(rt, &obj)?;
        // The update happens in the form `rt` serves (managedFields and no-op detection compare
        // like with like); `put_versioned` converts the result back to the storage form.
        let old = self.get(r)?;
        check_name(r, &obj)?;
        check_resource_version(r, &old, &obj)?;
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        if r.status {
            obj = status_only(&old, &obj, managed);
        } else {
            keep_server_fields(r, &old, &mut obj);
        }
        obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        admission::forbid_new_finalizers(rt, r.name, &old, &obj)?;
        let warnings = admission::admit(rt, &mut obj, Some(&old), opts.field_validation)?;
        bump_generation(r, &old, &mut obj);
        // A write that changes nothing is not a write: no new resourceVersion,
        // no event (clients rely on this to keep resyncs free).
        if changes_nothing(&old, &obj) {
            return Ok(Written {
                object: old,
                warnings,
            });
        }
        if managed == ManagedFields::Record {
            managed::record_update(
                Some(&old),
                &mut obj,
                shape_of(rt),
                part_of(rt, r.status),
                &opts.manager,
                &now(),
            );
        }
        if opts.dry_run {
            return Ok(Written {
                object: obj,
                warnings,
            });
        }
        let stored = self.put_versioned(rt, obj, EventType::Modified);
        if !stored["metadata"]["deletionTimestamp"].is_null() && finalizers(&stored).is_empty() {
            gc::sweep(self);
        }
        Ok(Written {
            object: present(rt, &stored),
            warnings,
        })
    }
}

/// Answer a PUT.
pub fn serve(call: &ResourceCall<'_>) -> ApiResult<Response> {
    let obj = call.decode_body()?;
    let updated = call
        .server
        .state()
        .update(call.object(), obj, &call.write_options())?;
    Ok(json_response(
        StatusCode::OK,
        &updated.object,
        &updated.warnings,
    ))
}
