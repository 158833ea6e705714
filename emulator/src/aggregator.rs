//! The aggregation layer, as kube-apiserver runs it with `--enable-aggregator-routing`: an
//! `APIService` (apiregistration.k8s.io/v1) with a `spec.service` hands its group/version to an
//! extension API server. A request there is authenticated and authorized here, as any other
//! (RBAC on the extension's resources, impersonation included), then proxied over TLS to a
//! ready endpoint of the Service (its EndpointSlices), verified against the APIService's
//! `caBundle` under the name `<service>.<namespace>.svc`. The emulator shows its front-proxy
//! client certificate and names the user in `X-Remote-User`, `X-Remote-Group` and
//! `X-Remote-Extra-*`, dropping the caller's credentials; the extension API server finds the CA
//! and header names in `kube-system/extension-apiserver-authentication`, which [`bootstrap`]
//! writes with the roles kube-apiserver bootstraps for reading it and for delegating
//! authentication and authorization.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::{Value, json};
use tokio_rustls::TlsConnector;

use crate::error::{ApiError, ApiResult};
use crate::rbac::UserInfo;
use crate::registry::GroupResource;
use crate::server::Server;
use crate::state::State;
use crate::tls::Certificate;
use crate::verbs::WriteOptions;

/// Where `extension-apiserver-authentication` lives.
const AUTHENTICATION_CONFIGMAP: (&str, &str) =
    ("kube-system", "extension-apiserver-authentication");
/// The request headers that name the user to an extension API server.
const USER_HEADER: &str = "X-Remote-User";
const GROUP_HEADER: &str = "X-Remote-Group";
const EXTRA_PREFIX: &str = "X-Remote-Extra-";

/// The objects kube-apiserver creates at start for extension API servers: the front-proxy
/// configuration they read and the bootstrap roles that let them read it
/// (`extension-apiserver-authentication-reader`) and review their callers
/// (`system:auth-delegator`).
pub fn bootstrap(st: &mut State, front_proxy: &Certificate) {
    let strings = |list: &[&str]| serde_json::to_string(list).expect("a list of strings");
    let (namespace, name) = AUTHENTICATION_CONFIGMAP;
    let objects = [
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {
                "requestheader-client-ca-file": front_proxy.ca_pem,
                "requestheader-allowed-names": strings(&[crate::tls::FRONT_PROXY_CLIENT]),
                "requestheader-username-headers": strings(&[USER_HEADER]),
                "requestheader-group-headers": strings(&[GROUP_HEADER]),
                "requestheader-extra-headers-prefix": strings(&[EXTRA_PREFIX]),
            },
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "extension-apiserver-authentication-reader", "namespace": namespace},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                "resourceNames": [name], "verbs": ["get", "list", "watch"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "system:auth-delegator"},
            "rules": [
                {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
            ],
        }),
    ];
    let opts = WriteOptions {
        manager: "keysmith-emulator".into(),
        ..Default::default()
    };
    for object in objects {
        let (api_version, kind) = (object["apiVersion"].clone(), object["kind"].clone());
        let rt = st
            .registry
            .lookup_kind(
                api_version.as_str().unwrap_or_default(),
                kind.as_str().unwrap_or_default(),
            )
            .cloned()
            .expect("bootstrap kinds are built in");
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        st.create(&rt, &ns, object, &opts)
            .expect("bootstrap objects are valid");
    }
}

/// An APIService's backend: the Service it names and the CA its serving certificate chains to.
#[derive(Debug, Clone)]
pub struct Backend {
    /// `metadata.name` of the APIService (`<version>.<group>`).
    apiservice: String,
    namespace: String,
    service: String,
    port: i64,
    ca_bundle: Option<Vec<u8>>,
}

/// The backend of the APIService serving `group`/`version`, if one hands it to a Service.
pub fn backend(st: &State, group: &str, version: &str) -> Option<Backend> {
    if group.is_empty() {
        return None;
    }
    let name = format!("{version}.{group}");
    let apiservice = st.store.get(
        &GroupResource::new("apiregistration.k8s.io", "apiservices"),
        "",
        &name,
    )?;
    let spec = &apiservice["spec"];
    let service = spec["service"].as_object()?;
    let text = |key: &str| {
        service
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    use base64::Engine as _;
    Some(Backend {
        apiservice: name,
        namespace: text("namespace"),
        service: text("name"),
        port: service.get("port").and_then(Value::as_i64).unwrap_or(443),
        ca_bundle: spec["caBundle"]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok()),
    })
}

/// The groups and versions APIServices hand to Services, for discovery.
pub fn groups(st: &State) -> Vec<(String, String)> {
    st.store
        .list(
            &GroupResource::new("apiregistration.k8s.io", "apiservices"),
            None,
        )
        .filter(|(_, a)| a["spec"]["service"].is_object())
        .filter_map(|(_, a)| {
            let group = a["spec"]["group"].as_str()?;
            let version = a["spec"]["version"].as_str()?;
            Some((group.to_owned(), version.to_owned()))
        })
        .collect()
}

impl Backend {
    /// 503, worded as the aggregator says it.
    fn unavailable(&self, why: impl std::fmt::Display) -> ApiError {
        ApiError::service_unavailable(format!(
            "the APIService {} is not available: {why}",
            self.apiservice
        ))
    }

    /// A ready endpoint of the Service port the APIService names.
    fn endpoint(&self, st: &State) -> Result<SocketAddr, String> {
        let service = st
            .store
            .get(
                &GroupResource::new("", "services"),
                &self.namespace,
                &self.service,
            )
            .ok_or_else(|| format!("service {}/{} not found", self.namespace, self.service))?;
        let port_name = service["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["port"].as_i64() == Some(self.port))
            .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
            .ok_or_else(|| format!("service {} has no port {}", self.service, self.port))?;
        let slices = st
            .store
            .list(
                &GroupResource::new("discovery.k8s.io", "endpointslices"),
                Some(&self.namespace),
            )
            .map(|(_, s)| s)
            .filter(|s| {
                s["metadata"]["labels"]["kubernetes.io/service-name"] == self.service.as_str()
            });
        for slice in slices {
            let port = slice["ports"].as_array().into_iter().flatten().find(|p| {
                p["name"].as_str().unwrap_or_default() == port_name && p["port"].is_i64()
            });
            let ready = slice["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["conditions"]["ready"].as_bool() != Some(false))
                .find_map(|e| e["addresses"][0].as_str()?.parse::<IpAddr>().ok());
            if let (Some(port), Some(ip)) = (port, ready) {
                let port = u16::try_from(port["port"].as_i64().unwrap_or_default())
                    .map_err(|e| e.to_string())?;
                return Ok(SocketAddr::new(ip, port));
            }
        }
        Err(format!(
            "no ready endpoints for service {}/{} port {}",
            self.namespace, self.service, self.port
        ))
    }

    /// TLS to the backend: its certificate checked against the `caBundle`, the front-proxy
    /// certificate shown.
    fn tls(&self, front_proxy: &Certificate) -> Result<ClientConfig, String> {
        let bundle = self
            .ca_bundle
            .as_deref()
            .ok_or("the emulator needs spec.caBundle (insecureSkipTLSVerify is not emulated)")?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(bundle) {
            roots
                .add(cert.map_err(|e| format!("spec.caBundle: {e}"))?)
                .map_err(|e| format!("spec.caBundle: {e}"))?;
        }
        let chain = vec![
            CertificateDer::from_pem_slice(front_proxy.cert_pem.as_bytes())
                .map_err(|e| e.to_string())?,
        ];
        let key = PrivateKeyDer::from_pem_slice(front_proxy.key_pem.as_bytes())
            .map_err(|e| e.to_string())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_root_certificates(roots)
                    .with_client_auth_cert(chain, key)
            })
            .map_err(|e| e.to_string())
    }
}

/// What a proxied request carries.
pub struct Forward<'a> {
    /// The backend.
    pub backend: Backend,
    /// Whom the request acts as, after authentication and impersonation.
    pub user: &'a UserInfo,
    /// Method, path and query as the caller sent them.
    pub method: &'a Method,
    /// The path with its query.
    pub path_and_query: String,
    /// The caller's headers.
    pub headers: &'a HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// Send the request to its backend and stream the answer back; 503 when it cannot be reached.
pub async fn proxy(server: &Server, forward: Forward<'_>) -> ApiResult<Response> {
    let backend = &forward.backend;
    let address = backend
        .endpoint(&server.state())
        .map_err(|why| backend.unavailable(why))?;
    let config = backend
        .tls(&server.front_proxy)
        .map_err(|why| backend.unavailable(why))?;
    let host = format!("{}.{}.svc", backend.service, backend.namespace);
    let server_name =
        ServerName::try_from(host.clone()).map_err(|e| backend.unavailable(e.to_string()))?;
    let reach = |e: &dyn std::fmt::Display| {
        backend.unavailable(format!("error trying to reach service: {address}: {e}"))
    };
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| reach(&e))?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| reach(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| reach(&e))?;
    // Driven apart from the request: a watch streams for as long as the caller reads it.
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(forward.method.clone())
        .uri(&forward.path_and_query)
        .body(Body::from(forward.body))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    *request.headers_mut() = forwarded_headers(forward.headers, forward.user, &host);
    let response = sender.send_request(request).await.map_err(|e| reach(&e))?;
    Ok(response.map(Body::new))
}

/// The caller's headers without its credentials, impersonation or identity headers of its own
/// (an extension API server must believe only the front proxy's), plus the user's.
fn forwarded_headers(headers: &HeaderMap, user: &UserInfo, host: &str) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let lower = name.as_str();
        let dropped = lower == header::AUTHORIZATION.as_str()
            || lower == header::HOST.as_str()
            || lower == header::CONNECTION.as_str()
            || lower.starts_with("impersonate-")
            || lower.starts_with("x-remote-");
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    if let Ok(host) = HeaderValue::from_str(host) {
        out.insert(header::HOST, host);
    }
    let mut add = |name: &str, value: &str| {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            out.append(name, value);
        }
    };
    add(USER_HEADER, &user.name);
    for group in &user.groups {
        add(GROUP_HEADER, group);
    }
    for (key, values) in &user.extra {
        for value in values {
            add(&format!("{EXTRA_PREFIX}{}", escape(key)), value);
        }
    }
    out
}

/// An extra's key in a header name: percent-encoded beyond the characters a header name may
/// carry, as the API server writes it.
fn escape(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_replaces_the_callers_credentials_and_identity_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        headers.insert("impersonate-user", HeaderValue::from_static("root"));
        headers.insert("x-remote-user", HeaderValue::from_static("root"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let mut user = UserInfo::user("alice", &["devs"]);
        user.extra
            .insert("acme.com/project".into(), vec!["p1".into()]);
        let out = forwarded_headers(&headers, &user, "svc.ns.svc");
        assert!(out.get(header::AUTHORIZATION).is_none());
        assert!(out.get("impersonate-user").is_none());
        assert_eq!(out.get_all("x-remote-user").iter().count(), 1);
        assert_eq!(out["x-remote-user"], "alice");
        let groups: Vec<&str> = out
            .get_all("x-remote-group")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(groups, ["devs", "system:authenticated"]);
        assert_eq!(out["x-remote-extra-acme.com%2fproject"], "p1");
        assert_eq!(out[header::ACCEPT], "application/json");
        assert_eq!(out[header::HOST], "svc.ns.svc");
    }
}
