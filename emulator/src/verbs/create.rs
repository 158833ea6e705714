//! CREATE (POST, and server-side apply of a missing object): naming
//! (`generateName`), the namespace, the fields only the server sets, then
//! admission and the first managedFields entry.

use axum::http::StatusCode;
use axum::response::Response;
use rand::RngExt;
use serde_json::{Value, json};

use crate::admission::{self, check_type};
use crate::error::{ApiError, ApiResult, Cause};
use crate::http::{ResourceCall, json_response};
use crate::managed;
use crate::registry::ResourceType;
use crate::state::{ObjectRef, State, meta_str, new_uid, now, present};
use crate::store::EventType;
use crate::verbs::{WriteOptions, Written, part_of, shape_of};

/// Metadata only the server sets: a client's values are dropped on create.
const SERVER_SET: [&str; 7] = [
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
];

fn random_suffix() -> String {
    // Kubernetes' generateName alphabet: no vowels, no confusable digits.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Put the URL's namespace into the body (which may repeat it but not name another one);
/// cluster-scoped objects have none.
fn place_in_namespace(rt: &ResourceType, ns: &str, obj: &mut Value) -> ApiResult<()> {
    let body_ns = meta_str(obj, "namespace");
    if rt.namespaced {
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        obj["metadata"]["namespace"] = json!(ns);
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    Ok(())
}

/// The object's name, generated from `generateName` when it has none.
fn assign_name(rt: &ResourceType, obj: &mut Value) -> ApiResult<String> {
    if meta_str(obj, "name").is_empty() {
        let prefix = meta_str(obj, "generateName").to_string();
        if prefix.is_empty() {
            return Err(ApiError::invalid(
                &rt.group,
                &rt.kind,
                "",
                vec![Cause::new(
                    "FieldValueRequired",
                    "metadata.name",
                    "Required value: name or generateName is required",
                )],
            ));
        }
        obj["metadata"]["name"] = json!(format!("{prefix}{}", random_suffix()));
    }
    Ok(meta_str(obj, "name").to_string())
}

impl State {
    /// Create an object (POST, or SSA of a missing object).
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        check_type(rt, &obj)?;
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        place_in_namespace(rt, ns, &mut obj)?;
        let name = assign_name(rt, &mut obj)?;
        admission::validate_name(rt, &name)?;
        admission::check_namespace(self, rt, ns, &name)?;
        if ObjectRef::new(rt, ns, &name).stored(self).is_some() {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        if rt.status_subresource
            && let Some(m) = obj.as_object_mut()
        {
            // Status is written through /status only.
            m.remove("status");
        }
        if let Some(m) = obj["metadata"].as_object_mut() {
            for f in SERVER_SET {
                m.remove(f);
            }
        }
        let warnings = admission::admit(rt, &mut obj, None, opts.field_validation)?;
        let ts = now();
        obj["metadata"]["uid"] = json!(new_uid());
        obj["metadata"]["creationTimestamp"] = json!(ts);
        if rt.has_generation {
            obj["metadata"]["generation"] = json!(1);
        }
        if obj["metadata"]["managedFields"].is_null() {
            managed::record_update(
                None,
                &mut obj,
                shape_of(rt),
                part_of(rt, false),
                &opts.manager,
                &ts,
            );
        }
        if opts.dry_run {
            return Ok(Written {
                object: obj,
                warnings,
            });
        }
        let stored = self.put_versioned(rt, obj, EventType::Added);
        Ok(Written {
            object: present(rt, &stored),
            warnings,
        })
    }
}

/// Answer a POST.
pub fn serve(call: &ResourceCall<'_>) -> ApiResult<Response> {
    let obj = call.decode_body()?;
    let created = call.server.state().create(
        &call.rt,
        &call.request.namespace,
        obj,
        &call.write_options(),
    )?;
    Ok(json_response(
        StatusCode::CREATED,
        &created.object,
        &created.warnings,
    ))
}
