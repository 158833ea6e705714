//! Request parsing: a URL path and method become a [`Route`], a resource
//! path becomes the Kubernetes request attributes (verb, group, version,
//! resource, subresource, namespace, name), and the query string a [`Query`].

use std::collections::HashMap;

use axum::http::Method;

use crate::rbac::Attributes;

/// A request to a resource path, as the API server's RequestInfo describes it.
#[derive(Debug, Clone)]
pub struct ResourceRequest {
    /// Kubernetes verb, "" when the method means nothing on this path.
    pub verb: &'static str,
    /// API group, "" for core.
    pub group: String,
    /// API version.
    pub version: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource, "" when none.
    pub subresource: String,
    /// Namespace, "" when none.
    pub namespace: String,
    /// Object name, "" for collections.
    pub name: String,
}

impl ResourceRequest {
    /// The RBAC attributes of this request, as `verb`.
    pub fn attributes(&self, verb: &str) -> Attributes {
        Attributes::Resource {
            verb: verb.to_string(),
            group: self.group.clone(),
            resource: self.resource.clone(),
            subresource: self.subresource.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// What a path addresses.
pub enum Route {
    /// `/version`.
    Version,
    /// `/healthz`, `/livez`, `/readyz`.
    Health,
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/GROUP`.
    Group(String),
    /// `/api/VERSION` or `/apis/GROUP/VERSION`: group and version.
    Resources(String, String),
    /// `/openapi/v2`.
    OpenApiV2,
    /// `/openapi/v3`.
    OpenApiRoot,
    /// `/openapi/v3/...`: the path below `v3`.
    OpenApiDoc(String),
    /// A resource or object path.
    Resource(ResourceRequest),
    /// Anything else.
    NotFound,
}

/// The query string, decoded.
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    /// Decode `a=b&c=d`.
    pub fn parse(q: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(q.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// One parameter's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Whether a parameter is `true`.
    pub fn is_true(&self, key: &str) -> bool {
        self.get(key) == Some("true")
    }

    /// `watch=true` (or `1`): a GET that streams changes.
    pub fn watch(&self) -> bool {
        matches!(self.get("watch"), Some("true" | "1"))
    }
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

/// Where a request goes.
pub fn route(method: &Method, path: &str, watch: bool) -> Route {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
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
        ["openapi", "v2"] => return Route::OpenApiV2,
        ["openapi", "v3"] => return Route::OpenApiRoot,
        ["openapi", "v3", rest @ ..] => return Route::OpenApiDoc(rest.join("/")),
        _ => return Route::NotFound,
    };
    let (namespace, resource, tail) = match rest {
        ["namespaces", ns, res, tail @ ..] if !matches!(*res, "status" | "finalize") => {
            (ns.to_string(), res.to_string(), tail)
        }
        [res, tail @ ..] => (String::new(), res.to_string(), tail),
        [] => return Route::NotFound,
    };
    if rest.len() > 5 {
        return Route::NotFound;
    }
    let segment = |i: usize| tail.get(i).map(|s| s.to_string()).unwrap_or_default();
    let (name, subresource) = (segment(0), segment(1));
    Route::Resource(ResourceRequest {
        verb: verb_of(method, !name.is_empty(), watch).unwrap_or_default(),
        group,
        version,
        resource,
        subresource,
        namespace,
        name,
    })
}
