//! The HTTP surface: every request is authenticated (then impersonation
//! applied), routed, answered by discovery, OpenAPI, the review kinds, a
//! REST verb or an aggregated API's backend, and written to the request log.

mod negotiate;
mod resource;
mod review;
mod route;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::rbac::{Attributes, UserInfo};
use crate::server::{LogEntry, Server};
use crate::{aggregator, discovery, impersonation, openapi};

pub use negotiate::{Presentation, json_response};
pub use resource::ResourceCall;
use route::{Query, Route};

/// Largest request body read at all; a resource write over
/// [`resource::MAX_OBJECT_BODY`] is refused with 413 after authorization, as by the real server.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// The router serving every path.
pub fn router(server: Arc<Server>) -> Router {
    Router::new().fallback(handle).with_state(server)
}

/// An authenticated request, as every handler reads it.
struct Call<'a> {
    server: &'a Server,
    user: &'a UserInfo,
    method: &'a Method,
    path: &'a str,
    /// The path with its query string, as sent.
    path_and_query: &'a str,
    headers: &'a HeaderMap,
    query: &'a Query,
    body: Bytes,
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_string())
}

/// The log entry of a request, before its answer is known.
fn log_entry(method: &Method, path: &str, route: &Route, user: String) -> LogEntry {
    let mut entry = LogEntry {
        verb: method.as_str().to_lowercase(),
        group: String::new(),
        resource: String::new(),
        subresource: String::new(),
        namespace: String::new(),
        name: String::new(),
        user,
        code: 0,
        path: path.to_string(),
    };
    if let Route::Resource(r) = route {
        entry.verb = r.verb.to_string();
        entry.group = r.group.clone();
        entry.resource = r.resource.clone();
        entry.subresource = r.subresource.clone();
        entry.namespace = r.namespace.clone();
        entry.name = r.name.clone();
    }
    entry
}

async fn handle(AxumState(server): AxumState<Arc<Server>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let query = Query::parse(parts.uri.query());
    let path = parts.uri.path();
    let route = route::route(&parts.method, path, query.watch());
    let requester = server.auth.authenticate(bearer(&parts.headers).as_deref());
    // Impersonation follows authentication, as in the API server's filter chain: faults, RBAC,
    // reviews and the request log all see the impersonated user.
    let acting = requester.as_ref().map(|r| {
        impersonation::acting_user(r.clone(), &parts.headers, |user, attrs| {
            server.permits(user, attrs)
        })
    });
    let logged_user = match (&acting, &requester) {
        (Some(Ok(user)), _) | (_, Some(user)) => user.name.clone(),
        _ => String::new(),
    };
    let mut entry = log_entry(&parts.method, path, &route, logged_user);
    let response = match acting {
        None => ApiError::unauthorized().into_response(),
        Some(Err(e)) => ApiError::from(e).into_response(),
        Some(Ok(user)) => match axum::body::to_bytes(body, MAX_BODY).await {
            Err(_) => ApiError::request_entity_too_large(resource::MAX_OBJECT_BODY).into_response(),
            Ok(body) => {
                let call = Call {
                    server: &server,
                    user: &user,
                    method: &parts.method,
                    path,
                    path_and_query: parts.uri.path_and_query().map_or(path, |p| p.as_str()),
                    headers: &parts.headers,
                    query: &query,
                    body,
                };
                dispatch(&call, route)
                    .await
                    .unwrap_or_else(IntoResponse::into_response)
            }
        },
    };
    entry.code = response.status().as_u16();
    server.log.push(entry);
    response
}

async fn dispatch(call: &Call<'_>, route: Route) -> ApiResult<Response> {
    if let Some(backend) = aggregated(call.server, &route) {
        return proxy(call, &route, backend).await;
    }
    if let Route::Resource(r) = route {
        return resource::serve(call, r).await;
    }
    if matches!(route, Route::Health) {
        return Ok((StatusCode::OK, "ok").into_response());
    }
    if matches!(route, Route::NotFound) {
        return Err(ApiError::no_route());
    }
    call.server.require(
        call.user,
        &Attributes::NonResource {
            verb: call.method.as_str().to_lowercase(),
            path: call.path.to_string(),
        },
    )?;
    if matches!(route, Route::OpenApiV2) {
        return Ok(openapi_v2(call.headers));
    }
    let document = non_resource(call.server, route).ok_or_else(ApiError::no_route)?;
    Ok(json_response(StatusCode::OK, &document, &[]))
}

/// The backend of the aggregated API a path addresses (below `/apis/GROUP/VERSION`), if any.
fn aggregated(server: &Server, route: &Route) -> Option<aggregator::Backend> {
    let (group, version) = match route {
        Route::Resource(r) => (&r.group, &r.version),
        Route::Resources(group, version) => (group, version),
        _ => return None,
    };
    aggregator::backend(&server.state(), group, version)
}

/// An aggregated API's request: authorized here as the API server does for every path (so RBAC
/// on the extension's resources holds before the backend hears of it), then proxied.
async fn proxy(
    call: &Call<'_>,
    route: &Route,
    backend: aggregator::Backend,
) -> ApiResult<Response> {
    let attributes = match route {
        Route::Resource(r) => r.attributes(r.verb),
        _ => Attributes::NonResource {
            verb: call.method.as_str().to_lowercase(),
            path: call.path.to_string(),
        },
    };
    call.server.require(call.user, &attributes)?;
    let forward = aggregator::Forward {
        backend,
        user: call.user,
        method: call.method,
        path_and_query: call.path_and_query.to_string(),
        headers: call.headers,
        body: call.body.clone(),
    };
    aggregator::proxy(call.server, forward).await
}

/// `/openapi/v2`, as protobuf when the client asks for it (kubectl does), else as JSON.
fn openapi_v2(headers: &HeaderMap) -> Response {
    const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if accept.contains(PROTOBUF) {
        // The real server answers with this type (`.v1.0`, not `@v1.0`).
        let content_type = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, content_type)],
            openapi::v2_protobuf(),
        )
            .into_response();
    }
    json_response(StatusCode::OK, &openapi::v2(), &[])
}

/// Discovery and OpenAPI documents; `None` when the path names none.
fn non_resource(server: &Server, route: Route) -> Option<Value> {
    let st = server.state();
    match route {
        Route::Version => Some(discovery::version()),
        Route::CoreVersions => Some(discovery::core_versions(&server.address)),
        Route::Groups => Some(discovery::group_list(
            &st.registry,
            &aggregator::groups(&st),
        )),
        Route::Group(g) => discovery::group(&st.registry, &aggregator::groups(&st), &g),
        Route::Resources(g, v) => discovery::resource_list(&st.registry, &g, &v),
        Route::OpenApiRoot => Some(openapi::root(&st.registry)),
        Route::OpenApiDoc(p) => match p.split('/').collect::<Vec<_>>().as_slice() {
            ["api", v] => openapi::group_version(&st.registry, "", v),
            ["apis", g, v] => openapi::group_version(&st.registry, g, v),
            _ => None,
        },
        Route::Health | Route::NotFound | Route::Resource(_) | Route::OpenApiV2 => None,
    }
}
