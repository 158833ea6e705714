//! A request to a resource path, in the API server's order: the kind is
//! resolved and the path checked against it, injected faults apply, RBAC
//! decides, then a review is answered or the verb runs (see `verbs/`).

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::Value;

use crate::admission::FieldValidation;
use crate::error::{ApiError, ApiResult};
use crate::http::negotiate::{self, Presentation, json_response};
use crate::http::route::{Query, ResourceRequest};
use crate::http::{Call, review};
use crate::rbac::UserInfo;
use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::Server;
use crate::state::ObjectRef;
use crate::verbs::{self, WriteOptions};

/// A request for one kind's objects that routing, faults and RBAC let through: what a verb
/// handler reads.
pub struct ResourceCall<'a> {
    /// The server.
    pub server: &'a Server,
    /// Whom the request acts as.
    pub user: &'a UserInfo,
    /// What the path names.
    pub request: ResourceRequest,
    /// The kind the path names, at its version.
    pub rt: ResourceType,
    headers: &'a HeaderMap,
    query: &'a Query,
    body: &'a Bytes,
}

impl ResourceCall<'_> {
    /// The object the path names.
    pub fn object(&self) -> ObjectRef<'_> {
        ObjectRef {
            rt: &self.rt,
            namespace: &self.request.namespace,
            name: &self.request.name,
            status: self.request.subresource == "status",
        }
    }

    /// The namespace to list or watch in, `None` for all.
    pub fn namespace_filter(&self) -> Option<&str> {
        Some(self.request.namespace.as_str()).filter(|ns| !ns.is_empty())
    }

    /// One query parameter.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key)
    }

    /// Whether a query parameter is `true`.
    pub fn flag(&self, key: &str) -> bool {
        self.query.is_true(key)
    }

    /// The request's `Content-Type`.
    pub fn content_type(&self) -> String {
        negotiate::content_type(self.headers)
    }

    /// The body, decoded by its content type.
    pub fn decode_body(&self) -> ApiResult<Value> {
        negotiate::decode(self.body, &self.content_type())
    }

    /// The raw body.
    pub fn body(&self) -> &Bytes {
        self.body
    }

    /// How the client asked to see objects.
    pub fn presentation(&self) -> Presentation {
        negotiate::presentation(self.headers, self.query)
    }

    /// `labelSelector`.
    pub fn labels(&self) -> ApiResult<LabelSelector> {
        LabelSelector::parse(self.param("labelSelector").unwrap_or_default())
    }

    /// A field selector over this kind, in the stored form its objects are matched in.
    pub fn field_selector(&self, raw: &str) -> ApiResult<FieldSelector> {
        Ok(crate::events::stored_selector(
            &self.rt,
            FieldSelector::parse(raw)?,
        ))
    }

    /// `fieldSelector`.
    pub fn fields(&self) -> ApiResult<FieldSelector> {
        self.field_selector(self.param("fieldSelector").unwrap_or_default())
    }

    /// Field manager, field validation, dry run and force, from the query (the manager
    /// defaults to the client's User-Agent program name, as in the API server).
    pub fn write_options(&self) -> WriteOptions {
        let agent = self
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown");
        WriteOptions {
            manager: self.param("fieldManager").unwrap_or(agent).to_string(),
            field_validation: FieldValidation::parse(self.param("fieldValidation")),
            dry_run: self.param("dryRun") == Some("All"),
            force: self.flag("force"),
        }
    }
}

/// The largest body a write or delete may send: kube-apiserver's default
/// `--max-request-body-bytes` (3 MiB), measured at exactly 3145728 bytes on v1.37.
pub const MAX_OBJECT_BODY: usize = 3 * 1024 * 1024;

/// Answer a resource request.
pub async fn serve(call: &Call<'_>, request: ResourceRequest) -> ApiResult<Response> {
    if request.verb.is_empty() {
        return Err(ApiError::method_not_allowed());
    }
    let rt = resolve_kind(call.server, &request)?;
    inject_faults(call.server, &request).await?;
    call.server
        .require(call.user, &request.attributes(request.verb))?;
    // The real server's handlers read the body before anything else (a missing namespace or
    // object included), after authorization.
    let reads_body = matches!(
        request.verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    );
    if reads_body && call.body.len() > MAX_OBJECT_BODY {
        return Err(ApiError::request_entity_too_large(MAX_OBJECT_BODY));
    }
    let resource = ResourceCall {
        server: call.server,
        user: call.user,
        request,
        rt,
        headers: call.headers,
        query: call.query,
        body: &call.body,
    };
    if resource.rt.virtual_create_only {
        let answer = review::answer(&resource)?;
        return Ok(json_response(StatusCode::CREATED, &answer, &[]));
    }
    run_verb(&resource)
}

/// The kind a request names, when it serves the path's scope, subresource and verb.
fn resolve_kind(server: &Server, r: &ResourceRequest) -> ApiResult<ResourceType> {
    let rt = server
        .state()
        .registry
        .lookup(&r.group, &r.version, &r.resource)
        .cloned()
        .ok_or_else(ApiError::no_route)?;
    if (!rt.namespaced && !r.namespace.is_empty())
        || !(r.subresource.is_empty() || (r.subresource == "status" && rt.status_subresource))
    {
        return Err(ApiError::no_route());
    }
    if rt.virtual_create_only && r.verb != "create" {
        return Err(ApiError::method_not_allowed());
    }
    Ok(rt)
}

/// Latency, held requests and injected errors, as the test configured them.
async fn inject_faults(server: &Server, r: &ResourceRequest) -> ApiResult<()> {
    let (delay, fault) =
        server
            .faults
            .decide(r.verb, &r.group, &r.resource, &r.subresource, &r.name);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    server
        .faults
        .wait_if_held(r.verb, &r.resource, &r.subresource)
        .await;
    fault.map_or(Ok(()), Err)
}

fn run_verb(call: &ResourceCall<'_>) -> ApiResult<Response> {
    let r = &call.request;
    // Only collections can be listed or watched across namespaces.
    if call.rt.namespaced && r.namespace.is_empty() && !matches!(r.verb, "list" | "watch") {
        return Err(ApiError::no_route());
    }
    match r.verb {
        "get" => verbs::get::serve(call),
        "list" => verbs::list::serve(call),
        "watch" => verbs::watch::serve(call),
        "create" => verbs::create::serve(call),
        "update" => verbs::update::serve(call),
        "patch" => verbs::patch::serve(call),
        "delete" => verbs::delete::serve(call),
        "deletecollection" => verbs::delete::serve_collection(call),
        _ => Err(ApiError::method_not_allowed()),
    }
}
