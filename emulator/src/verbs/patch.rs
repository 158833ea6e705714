//! PATCH in the four patch types: JSON merge, JSON patch and strategic merge
//! patch the current object and replace it; server-side apply merges by field
//! ownership (see `managed.rs`) and creates the object when it is missing.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::admission::check_type;
use crate::error::{ApiError, ApiResult};
use crate::http::{ResourceCall, json_response};
use crate::patch::{self, PatchType};
use crate::rbac;
use crate::schema;
use crate::state::{ObjectRef, State, meta_str, now, present};
use crate::verbs::update::ManagedFields;
use crate::verbs::{WriteOptions, Written, part_of, shape_of};

impl State {
    /// PATCH in any of the four patch types.
    pub fn patch(
        &mut self,
        r: ObjectRef<'_>,
        patch_type: PatchType,
        body: &Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        let current = r.stored(self).cloned();
        if patch_type == PatchType::Apply {
            return self.apply(r, current, body, opts);
        }
        let current = current.ok_or_else(|| r.not_found())?;
        let mut doc = present(r.rt, &current);
        match patch_type {
            PatchType::Merge => patch::merge_patch(&mut doc, body),
            PatchType::Json => patch::json_patch(&mut doc, body)?,
            PatchType::Strategic => {
                if !r.rt.supports_strategic_merge() {
                    return Err(ApiError::unsupported_patch_type());
                }
                patch::strategic_merge(&mut doc, body)?;
            }
            PatchType::Apply => unreachable!("handled above"),
        }
        // A patch that names a resourceVersion is a precondition; one that
        // does not applies to whatever is current.
        let wanted_rv = match patch_type {
            PatchType::Json => doc["metadata"]["resourceVersion"].clone(),
            _ => body["metadata"]["resourceVersion"].clone(),
        };
        doc["metadata"]["resourceVersion"] = if wanted_rv.is_string() {
            wanted_rv
        } else {
            current["metadata"]["resourceVersion"].clone()
        };
        self.update(r, doc, opts)
    }

    /// Server-side apply of `body` to `current` (the stored object, if any).
    fn apply(
        &mut self,
        r: ObjectRef<'_>,
        current: Option<Value>,
        body: &Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        let rt = r.rt;
        check_applied_configuration(r, current.is_some(), body, opts)?;
        let mut applied = body.clone();
        applied["apiVersion"] = json!(rt.api_version());
        applied["kind"] = json!(rt.kind);
        if let Some(schema) = rt.crd.as_ref().and_then(|c| c.schema.as_ref()) {
            // Unknown fields must not become owned.
            schema::prune(schema, &mut applied);
        }
        let live = current.as_ref().map(|c| present(rt, c));
        let mut merged = crate::managed::apply(
            live.as_ref(),
            &applied,
            shape_of(rt),
            part_of(rt, r.status),
            &opts.manager,
            opts.force,
            &now(),
        )?;
        let Some(current) = current else {
            return self.create(rt, r.namespace, merged, opts);
        };
        let body_rv = meta_str(body, "resourceVersion");
        merged["metadata"]["resourceVersion"] = if body_rv.is_empty() {
            current["metadata"]["resourceVersion"].clone()
        } else {
            json!(body_rv)
        };
        self.replace(r, merged, opts, ManagedFields::Applied)
    }
}

/// What an applied configuration must be: an object of the URL's kind, sent with a field
/// manager, naming the URL's object.
fn check_applied_configuration(
    r: ObjectRef<'_>,
    exists: bool,
    body: &Value,
    opts: &WriteOptions,
) -> ApiResult<()> {
    if opts.manager.is_empty() {
        return Err(ApiError::bad_request(
            "PATCH, application/apply-patch+yaml requires a non-empty fieldManager query parameter",
        ));
    }
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the applied configuration must be an object",
        ));
    }
    check_type(r.rt, body)?;
    // Like the API server, accept an applied configuration without a name when the object
    // exists: the merged result carries the stored name (kube-lease-manager applies Lease
    // changes this way). Creating an object needs the name in the body, as checkName runs
    // on the apply result.
    let body_name = meta_str(body, "name");
    if body_name != r.name && (!exists || !body_name.is_empty()) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            r.name
        )));
    }
    Ok(())
}

/// Answer a PATCH: 201 when an apply created the object.
pub fn serve(call: &ResourceCall<'_>) -> ApiResult<Response> {
    let ct = call.content_type();
    let patch_type =
        PatchType::from_content_type(&ct).ok_or_else(|| ApiError::unsupported_media_type(&ct))?;
    let patch = call.decode_body()?;
    let r = call.object();
    let mut st = call.server.state();
    let existed = r.stored(&st).is_some();
    // An apply that creates the object is authorized as `create` as well, as in the API
    // server: `patch` alone must not let a client create objects.
    if !existed && patch_type == PatchType::Apply && call.server.auth.rbac {
        let create = call.request.attributes("create");
        if !rbac::authorize(&st, call.user, &create) {
            return Err(ApiError::forbidden(rbac::forbidden_message(
                call.user, &create,
            )));
        }
    }
    let patched = st.patch(r, patch_type, &patch, &call.write_options())?;
    let code = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json_response(code, &patched.object, &patched.warnings))
}
