//! The HTTP surface: path parsing into Kubernetes request attributes,
//! authentication, fault injection, RBAC, content negotiation (JSON, YAML,
//! Table, PartialObjectMetadata) and dispatch to the object lifecycle,
//! discovery, OpenAPI, watch and review handlers. Every request lands in the
//! request log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::objects::{DeleteOptions, FieldValidation, Presented, WriteOptions};
use crate::patch::PatchType;
use crate::rbac::{self, Attributes, UserInfo};
use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::{LogEntry, Server};
use crate::table::{self, IncludeObject};
use crate::watch::{self, WatchRequest, partial_metadata};
use crate::{discovery, impersonation, openapi};

/// Largest request body accepted (the API server's limit is 3 MiB per object).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// The router serving every path.
pub fn router(server: Arc<Server>) -> Router {
    Router::new().fallback(handle).with_state(server)
}

#[derive(Debug, Clone)]
struct ResourceRequest {
    verb: &'static str,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    namespace: String,
    name: String,
}

enum Route {
    Version,
    Health,
    CoreVersions,
    Groups,
    Group(String),
    Resources(String, String),
    OpenApiRoot,
    OpenApiDoc(String),
    Resource(ResourceRequest),
    NotFound,
}

fn verb_of(method: &Method, has_name: bool, watch: bool) -> Option<&'static str> {
    Some(match (method.as_str(), has_name) {
        ("GET", true) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    })
}

fn route(method: &Method, path: &str, query: &HashMap<String, String>) -> Route {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Route::Version,
        ["healthz" | "livez" | "readyz", ..] => return Route::Health,
        ["api"] => return Route::CoreVersions,
        ["api", v] => return Route::Resources(String::new(), v.to_string()),
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis"] => return Route::Groups,
        ["apis", g] => return Route::Group(g.to_string()),
        ["apis", g, v] => return Route::Resources(g.to_string(), v.to_string()),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        ["openapi", "v3"] => return Route::OpenApiRoot,
        ["openapi", "v3", rest @ ..] => return Route::OpenApiDoc(rest.join("/")),
        _ => return Route::NotFound,
    };
    let (namespace, resource, name, subresource) = match rest {
        ["namespaces", ns, res, tail @ ..] if !matches!(*res, "status" | "finalize") => (
            ns.to_string(),
            res.to_string(),
            tail.first().map(|s| s.to_string()).unwrap_or_default(),
            tail.get(1).map(|s| s.to_string()).unwrap_or_default(),
        ),
        [res, tail @ ..] => (
            String::new(),
            res.to_string(),
            tail.first().map(|s| s.to_string()).unwrap_or_default(),
            tail.get(1).map(|s| s.to_string()).unwrap_or_default(),
        ),
        [] => return Route::NotFound,
    };
    if rest.len() > 5 {
        return Route::NotFound;
    }
    let Some(verb) = verb_of(method, !name.is_empty(), watch) else {
        return Route::Resource(ResourceRequest {
            verb: "",
            group,
            version,
            resource,
            subresource,
            namespace,
            name,
        });
    };
    Route::Resource(ResourceRequest {
        verb,
        group,
        version,
        resource,
        subresource,
        namespace,
        name,
    })
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_string())
}

fn json_response(code: StatusCode, body: &impl Serialize, warnings: &[String]) -> Response {
    let mut resp = (code, axum::Json(body)).into_response();
    for w in warnings {
        let text = format!("299 - {}", Value::String(w.clone()));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

async fn handle(AxumState(server): AxumState<Arc<Server>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let query = parse_query(parts.uri.query());
    let path = parts.uri.path().to_string();
    let route = route(&parts.method, &path, &query);
    let requester = server.auth.authenticate(bearer(&parts.headers).as_deref());
    // Impersonation follows authentication, as in the API server's filter chain: faults, RBAC,
    // reviews and the request log all see the impersonated user.
    let acting = requester.as_ref().map(|r| {
        impersonation::acting_user(r.clone(), &parts.headers, |user, attrs| {
            !server.auth.rbac || rbac::authorize(&server.state(), user, attrs)
        })
    });
    let logged_user = match (&acting, &requester) {
        (Some(Ok(user)), _) | (_, Some(user)) => user.name.clone(),
        _ => String::new(),
    };
    let mut entry = LogEntry {
        verb: parts.method.as_str().to_lowercase(),
        group: String::new(),
        resource: String::new(),
        subresource: String::new(),
        namespace: String::new(),
        name: String::new(),
        user: logged_user,
        code: 0,
        path: path.clone(),
    };
    if let Route::Resource(r) = &route {
        entry.verb = r.verb.to_string();
        entry.group = r.group.clone();
        entry.resource = r.resource.clone();
        entry.subresource = r.subresource.clone();
        entry.namespace = r.namespace.clone();
        entry.name = r.name.clone();
    }
    let response = match acting {
        None => ApiError::unauthorized().into_response(),
        Some(Err(e)) => ApiError::from(e).into_response(),
        Some(Ok(user)) => {
            let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
                Ok(b) => b,
                Err(_) => {
                    let resp = ApiError::bad_request("request body too large or unreadable")
                        .into_response();
                    entry.code = resp.status().as_u16();
                    server.log.push(entry);
                    return resp;
                }
            };
            match dispatch(
                &server,
                route,
                &parts.method,
                &parts.headers,
                &query,
                &path,
                bytes,
                &user,
            )
            .await
            {
                Ok(resp) => resp,
                Err(e) => e.into_response(),
            }
        }
    };
    entry.code = response.status().as_u16();
    server.log.push(entry);
    response
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    server: &Arc<Server>,
    route: Route,
    method: &Method,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    path: &str,
    body: Bytes,
    user: &UserInfo,
) -> ApiResult<Response> {
    let non_resource = |allowed: bool| -> ApiResult<()> {
        let attrs = Attributes::NonResource {
            verb: method.as_str().to_lowercase(),
            path: path.to_string(),
        };
        if allowed || !server.auth.rbac || rbac::authorize(&server.state(), user, &attrs) {
            Ok(())
        } else {
            Err(ApiError::forbidden(rbac::forbidden_message(user, &attrs)))
        }
    };
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v, &[]));
    match route {
        Route::Version => {
            non_resource(false)?;
            ok(discovery::version())
        }
        Route::Health => Ok((StatusCode::OK, "ok").into_response()),
        Route::CoreVersions => {
            non_resource(false)?;
            ok(discovery::core_versions(&server.address))
        }
        Route::Groups => {
            non_resource(false)?;
            let st = server.state();
            ok(discovery::group_list(&st.registry))
        }
        Route::Group(g) => {
            non_resource(false)?;
            let st = server.state();
            discovery::group(&st.registry, &g).map_or_else(|| Err(ApiError::no_route()), ok)
        }
        Route::Resources(g, v) => {
            non_resource(false)?;
            let st = server.state();
            discovery::resource_list(&st.registry, &g, &v)
                .map_or_else(|| Err(ApiError::no_route()), ok)
        }
        Route::OpenApiRoot => {
            non_resource(false)?;
            let st = server.state();
            ok(openapi::root(&st.registry))
        }
        Route::OpenApiDoc(p) => {
            non_resource(false)?;
            let st = server.state();
            let segs: Vec<&str> = p.split('/').collect();
            let doc = match segs.as_slice() {
                ["api", v] => openapi::group_version(&st.registry, "", v),
                ["apis", g, v] => openapi::group_version(&st.registry, g, v),
                _ => None,
            };
            doc.map_or_else(|| Err(ApiError::no_route()), ok)
        }
        Route::NotFound => Err(ApiError::no_route()),
        Route::Resource(r) => resource(server, r, headers, query, body, user).await,
    }
}

fn write_options(query: &HashMap<String, String>, headers: &HeaderMap) -> WriteOptions {
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown");
    WriteOptions {
        manager: query
            .get("fieldManager")
            .cloned()
            .unwrap_or_else(|| agent.to_string()),
        field_validation: FieldValidation::parse(query.get("fieldValidation").map(String::as_str)),
        dry_run: query.get("dryRun").is_some_and(|d| d == "All"),
        force: query.get("force").is_some_and(|f| f == "true"),
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string()
}

/// Decode a JSON or YAML body.
fn decode(body: &Bytes, ct: &str) -> ApiResult<Value> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    if ct.contains("protobuf") {
        return crate::protobuf::decode_object(body)
            .ok_or_else(|| ApiError::unsupported_media_type(ct));
    }
    if ct.contains("cbor") {
        return Err(ApiError::unsupported_media_type(ct));
    }
    serde_json::from_slice(body).or_else(|json_err| {
        if ct.contains("yaml") {
            serde_saphyr::from_slice::<Value>(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
        } else {
            Err(ApiError::bad_request(format!(
                "couldn't get version/kind; json parse error: {json_err}"
            )))
        }
    })
}

/// A `fieldSelector` of `rt`'s view, over the stored form its objects are matched in.
fn field_selector(rt: &ResourceType, raw: &str) -> ApiResult<FieldSelector> {
    Ok(crate::events::stored_selector(
        rt,
        FieldSelector::parse(raw)?,
    ))
}

enum Presentation {
    Object,
    Table(IncludeObject),
    Metadata,
}

fn presentation(headers: &HeaderMap, query: &HashMap<String, String>) -> Presentation {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // The first acceptable media type wins, as in content negotiation.
    let first = accept
        .split(',')
        .find(|m| m.contains("json") || m.contains("*/*"))
        .unwrap_or_default();
    if first.contains("as=Table") {
        let include = match query.get("includeObject").map(String::as_str) {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        };
        Presentation::Table(include)
    } else if first.contains("as=PartialObjectMetadata") {
        Presentation::Metadata
    } else {
        Presentation::Object
    }
}

async fn resource(
    server: &Arc<Server>,
    r: ResourceRequest,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: Bytes,
    user: &UserInfo,
) -> ApiResult<Response> {
    if r.verb.is_empty() {
        return Err(ApiError::method_not_allowed());
    }
    let rt = {
        let st = server.state();
        st.registry
            .lookup(&r.group, &r.version, &r.resource)
            .cloned()
            .ok_or_else(ApiError::no_route)?
    };
    if (!rt.namespaced && !r.namespace.is_empty())
        || !(r.subresource.is_empty() || (r.subresource == "status" && rt.status_subresource))
    {
        return Err(ApiError::no_route());
    }
    if rt.virtual_create_only && r.verb != "create" {
        return Err(ApiError::method_not_allowed());
    }

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
    if let Some(e) = fault {
        return Err(e);
    }

    let attrs = Attributes::Resource {
        verb: r.verb.to_string(),
        group: r.group.clone(),
        resource: r.resource.clone(),
        subresource: r.subresource.clone(),
        namespace: r.namespace.clone(),
        name: r.name.clone(),
    };
    if server.auth.rbac && !rbac::authorize(&server.state(), user, &attrs) {
        return Err(ApiError::forbidden(rbac::forbidden_message(user, &attrs)));
    }

    if rt.virtual_create_only {
        let ct = content_type(headers);
        let review = if ct.contains("protobuf") {
            crate::protobuf::decode_review(&body)
                .ok_or_else(|| ApiError::unsupported_media_type(&ct))?
        } else {
            decode(&body, &ct)?
        };
        return Ok(json_response(
            StatusCode::CREATED,
            &answer_review(server, &rt, &r.namespace, review, user),
            &[],
        ));
    }

    let ns = r.namespace.as_str();
    let status = r.subresource == "status";
    let needs_namespace = rt.namespaced && ns.is_empty() && !matches!(r.verb, "list" | "watch");
    if needs_namespace {
        return Err(ApiError::no_route());
    }
    let opts = write_options(query, headers);
    let mut warnings = Vec::new();
    match r.verb {
        "get" => {
            // Tables are printed from the stored form, like lists.
            let st = server.state();
            let obj = st
                .store
                .get(&rt.group_resource(), ns, &r.name)
                .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, &r.name))?;
            Ok(match presentation(headers, query) {
                Presentation::Table(include) => json_response(
                    StatusCode::OK,
                    &table::render(&rt, &[obj], crate::store::rv_of(obj), None, include),
                    &[],
                ),
                Presentation::Metadata => {
                    json_response(StatusCode::OK, &partial_metadata(obj), &[])
                }
                Presentation::Object => json_response(StatusCode::OK, &Presented(&rt, obj), &[]),
            })
        }
        "list" => list(server, &rt, ns, headers, query),
        "watch" => watch(server, &rt, ns, &r.name, headers, query),
        "create" => {
            let obj = decode(&body, &content_type(headers))?;
            let created = server.state().create(&rt, ns, obj, &opts, &mut warnings)?;
            Ok(json_response(StatusCode::CREATED, &created, &warnings))
        }
        "update" => {
            let obj = decode(&body, &content_type(headers))?;
            let updated = server.state().update(
                &rt,
                ns,
                &r.name,
                status,
                obj,
                &opts,
                false,
                &mut warnings,
            )?;
            Ok(json_response(StatusCode::OK, &updated, &warnings))
        }
        "patch" => {
            let ct = content_type(headers);
            let patch_type = PatchType::from_content_type(&ct)
                .ok_or_else(|| ApiError::unsupported_media_type(&ct))?;
            let patch = decode(&body, &ct)?;
            let mut st = server.state();
            let existed = st.store.get(&rt.group_resource(), ns, &r.name).is_some();
            // An apply that creates the object is authorized as `create` as well, as in the API
            // server: `patch` alone must not let a client create objects.
            if !existed && patch_type == PatchType::Apply && server.auth.rbac {
                let create = Attributes::Resource {
                    verb: "create".into(),
                    group: r.group.clone(),
                    resource: r.resource.clone(),
                    subresource: r.subresource.clone(),
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                };
                if !rbac::authorize(&st, user, &create) {
                    return Err(ApiError::forbidden(rbac::forbidden_message(user, &create)));
                }
            }
            let patched = st.patch(
                &rt,
                ns,
                &r.name,
                status,
                patch_type,
                &patch,
                &opts,
                &mut warnings,
            )?;
            let code = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(json_response(code, &patched, &warnings))
        }
        "delete" => {
            let options = decode(&body, &content_type(headers))?;
            let options = DeleteOptions::from_body(
                &options,
                query.get("propagationPolicy").map(String::as_str),
                opts.dry_run,
            );
            let mut st = server.state();
            let deleted = st.delete(&rt, ns, &r.name, &options)?;
            let gone = st.store.get(&rt.group_resource(), ns, &r.name).is_none();
            drop(st);
            // The real server answers an immediate delete of a custom resource with a Status
            // (its registry does not return the deleted object), a pending one with the object.
            if gone && rt.crd.is_some() {
                let status = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": r.name, "group": rt.group, "kind": rt.plural,
                                "uid": deleted["metadata"]["uid"]},
                });
                return Ok(json_response(StatusCode::OK, &status, &[]));
            }
            Ok(json_response(StatusCode::OK, &deleted, &[]))
        }
        "deletecollection" => {
            let options = decode(&body, &content_type(headers))?;
            let options = DeleteOptions::from_body(
                &options,
                query.get("propagationPolicy").map(String::as_str),
                opts.dry_run,
            );
            let labels =
                LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?;
            let fields =
                field_selector(&rt, query.get("fieldSelector").map_or("", String::as_str))?;
            let mut st = server.state();
            let page = st.list(
                &rt,
                (!ns.is_empty()).then_some(ns),
                &labels,
                &fields,
                None,
                None,
            )?;
            let names: Vec<(String, String)> = page
                .items
                .iter()
                .map(|item| {
                    let meta = |field: &str| {
                        item["metadata"][field]
                            .as_str()
                            .unwrap_or_default()
                            .to_string()
                    };
                    (meta("namespace"), meta("name"))
                })
                .collect();
            let mut deleted = Vec::new();
            for (item_ns, name) in names {
                deleted.push(st.delete(&rt, &item_ns, &name, &options)?);
            }
            Ok(json_response(
                StatusCode::OK,
                &list_body(&rt, deleted, st.store.current_rv(), None, None),
                &[],
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// A list answer; `items` is serialized as it is, so a page can borrow from the store.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListBody<T> {
    kind: String,
    api_version: String,
    metadata: ListMeta,
    items: T,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    resource_version: String,
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    continue_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remaining_item_count: Option<usize>,
}

fn list_body<T: Serialize>(
    rt: &ResourceType,
    items: T,
    rv: u64,
    continue_token: Option<String>,
    remaining: Option<usize>,
) -> ListBody<T> {
    ListBody {
        kind: format!("{}List", rt.kind),
        api_version: rt.api_version(),
        metadata: ListMeta {
            resource_version: rv.to_string(),
            continue_token,
            remaining_item_count: remaining,
        },
        items,
    }
}

fn list(
    server: &Arc<Server>,
    rt: &ResourceType,
    ns: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> ApiResult<Response> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?;
    let fields = field_selector(rt, query.get("fieldSelector").map_or("", String::as_str))?;
    let limit = match query.get("limit") {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?,
        ),
        None => None,
    };
    // The page borrows from the store: it is serialized before the lock is released.
    let st = server.state();
    let page = st.list(
        rt,
        (!ns.is_empty()).then_some(ns),
        &labels,
        &fields,
        limit,
        query
            .get("continue")
            .map(String::as_str)
            .filter(|c| !c.is_empty()),
    )?;
    let response = match presentation(headers, query) {
        Presentation::Table(include) => {
            let table = table::render(
                rt,
                &page.items,
                page.resource_version,
                page.continue_token.as_deref(),
                include,
            );
            json_response(StatusCode::OK, &table, &[])
        }
        Presentation::Metadata => {
            let mut body = list_body(
                rt,
                page.items
                    .iter()
                    .map(|o| partial_metadata(o))
                    .collect::<Vec<_>>(),
                page.resource_version,
                page.continue_token,
                page.remaining,
            );
            body.kind = "PartialObjectMetadataList".into();
            body.api_version = "meta.k8s.io/v1".into();
            json_response(StatusCode::OK, &body, &[])
        }
        Presentation::Object => {
            let items: Vec<_> = page.items.iter().map(|o| Presented(rt, o)).collect();
            let body = list_body(
                rt,
                items,
                page.resource_version,
                page.continue_token,
                page.remaining,
            );
            json_response(StatusCode::OK, &body, &[])
        }
    };
    Ok(response)
}

fn watch(
    server: &Arc<Server>,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> ApiResult<Response> {
    let mut fields = query.get("fieldSelector").cloned().unwrap_or_default();
    if !name.is_empty() {
        // The legacy `/watch/.../NAME` form pins the name.
        if !fields.is_empty() {
            fields.push(',');
        }
        fields.push_str(&format!("metadata.name={name}"));
    }
    let req = WatchRequest {
        rt: rt.clone(),
        stored_as: rt.group_resource(),
        namespace: (!ns.is_empty()).then(|| ns.to_string()),
        labels: LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?,
        fields: field_selector(rt, &fields)?,
        resource_version: query.get("resourceVersion").cloned(),
        send_initial_events: query.get("sendInitialEvents").is_some_and(|v| v == "true"),
        bookmarks: query
            .get("allowWatchBookmarks")
            .is_some_and(|v| v == "true"),
        timeout: query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .map(Duration::from_secs),
        bookmark_interval: server.bookmark_interval,
        metadata_only: matches!(presentation(headers, query), Presentation::Metadata),
        limits: server.faults.watch_limits(),
        close: server.faults.close_signal(),
    };
    let stream = {
        let st = server.state();
        watch::open(&st, req)?
    };
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview
/// and SelfSubjectReview, answered from the request.
fn answer_review(
    server: &Arc<Server>,
    rt: &ResourceType,
    namespace: &str,
    mut review: Value,
    caller: &UserInfo,
) -> Value {
    review["apiVersion"] = json!(rt.api_version());
    review["kind"] = json!(rt.kind);
    if rt.kind == "SelfSubjectReview" {
        let mut info = json!({"username": caller.name, "groups": caller.groups});
        if !caller.uid.is_empty() {
            info["uid"] = json!(caller.uid);
        }
        if !caller.extra.is_empty() {
            info["extra"] = json!(caller.extra);
        }
        review["status"] = json!({ "userInfo": info });
        return review;
    }
    let subject = if rt.kind == "SelfSubjectAccessReview" {
        caller.clone()
    } else {
        let spec = &review["spec"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_str().map(String::from))
                .collect()
        };
        UserInfo {
            name: spec["user"].as_str().unwrap_or_default().to_string(),
            groups: strings(&spec["groups"]),
            uid: spec["uid"].as_str().unwrap_or_default().to_string(),
            extra: spec["extra"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), strings(v)))
                .collect(),
        }
    };
    let spec = &review["spec"];
    let attrs = if let Some(ra) = spec["resourceAttributes"].as_object() {
        let s = |k: &str| {
            ra.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let ns = if namespace.is_empty() {
            s("namespace")
        } else {
            namespace.to_string()
        };
        Attributes::Resource {
            verb: s("verb"),
            group: s("group"),
            resource: s("resource"),
            subresource: s("subresource"),
            namespace: ns,
            name: s("name"),
        }
    } else {
        let nr = &spec["nonResourceAttributes"];
        Attributes::NonResource {
            verb: nr["verb"].as_str().unwrap_or_default().to_string(),
            path: nr["path"].as_str().unwrap_or_default().to_string(),
        }
    };
    let allowed = !server.auth.rbac || rbac::authorize(&server.state(), &subject, &attrs);
    review["status"] = if allowed {
        json!({"allowed": true, "reason": "allowed by the emulator's RBAC"})
    } else {
        json!({"allowed": false})
    };
    review
}
