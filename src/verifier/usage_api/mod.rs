//! The usage API: `GET /apis/usage.keysmith.dev/v1alpha1/namespaces/{ns}/apikeyusages/{name}`
//! answers an [`ApiKeyUsage`](object::ApiKeyUsage) with what every verifier replica saw of that
//! ApiKey's tokens, served over HTTPS as a Kubernetes aggregated API (registered by an
//! `APIService`, as metrics-server is), so callers reach it through the API server with their
//! own credentials and RBAC decides who may read it ([`auth`]).
//!
//! The replica the API server picks asks its peers ([`peers`]) for their own activity
//! (`?local=true`) and merges the answers ([`object::merge`]), naming the replicas that did not
//! answer. Discovery documents (`/apis`, the group, the version's resource list) are served to
//! anyone: they name the resource and nothing else.

pub mod auth;
pub mod limits;
pub mod object;
pub mod peers;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use jiff::{SignedDuration, Timestamp};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;

use self::auth::{Denied, Gate, RequestHeader};
use self::object::{API_VERSION, ApiKeyUsage, GROUP, KIND, RESOURCE, VERSION, merge};
use self::peers::PeerSettings;
use super::Verifier;
use super::activity::DEFAULT_MAX_TOKENS;
use super::server::{self, ClientCertificate, Connections, Limits};
use super::tls::{self, TlsFiles};

/// Recent requests shown when the caller names no `since`.
pub const DEFAULT_SINCE: SignedDuration = SignedDuration::from_hours(24);
/// What one client of the usage API may hold: the verification API's defaults, with fewer
/// connections. Its callers are the API servers' aggregators (a handful of addresses, keeping a
/// few connections each) and the other replicas; a newcomer at the caps closes an idle
/// connection of the largest holder, so idle or slow connections, however many, never keep the
/// API server out.
pub const LIMITS: Limits = Limits {
    header_read_timeout: Duration::from_secs(10),
    body_read_timeout: Duration::from_secs(10),
    max_header_bytes: 32 * 1024,
    max_connections: 256,
    max_connections_per_peer: 64,
    write_timeout: Duration::from_secs(10),
    tls_handshake_timeout: Duration::from_secs(5),
};

/// The `--usage-*` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSettings {
    /// Most tokens whose activity is kept (`--usage-max-tokens`).
    pub max_tokens: usize,
    /// Its certificate (`--usage-tls-cert-file`, `--usage-tls-key-file`).
    pub tls: Option<TlsFiles>,
    /// This replica's name in answers (`--usage-replica-name`, the pod name).
    pub replica: String,
    /// How to reach the other replicas; none: this replica answers alone.
    pub peers: Option<PeerSettings>,
}

impl Default for UsageSettings {
    fn default() -> Self {
        UsageSettings {
            max_tokens: DEFAULT_MAX_TOKENS,
            tls: None,
            replica: String::new(),
            peers: None,
        }
    }
}

/// Why the usage API could not start.
#[derive(Debug, thiserror::Error)]
pub enum UsageApiError {
    /// `--usage-listen` without a certificate: the API server only talks HTTPS to it.
    #[error("--usage-listen needs --usage-tls-cert-file and --usage-tls-key-file")]
    NoCertificate,
    /// The certificate did not load.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The front-proxy CA of extension-apiserver-authentication is not a usable CA.
    #[error("requestheader-client-ca-file of kube-system/extension-apiserver-authentication: {0}")]
    ClientCa(String),
    /// Binding or serving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The usage API of one verifier replica.
pub struct UsageApi {
    verifier: Arc<Verifier>,
    client: kube::Client,
    gate: Gate,
    replica: String,
    peers: Option<PeerSettings>,
}

type Answer = Response<Full<Bytes>>;

impl UsageApi {
    /// Answer one request from `peer`; `proxy` is the Common Name of the verified front-proxy
    /// client certificate the connection presented, if any.
    pub async fn handle(
        &self,
        proxy: Option<&str>,
        peer: IpAddr,
        request: Request<Incoming>,
    ) -> Answer {
        let (parts, _) = request.into_parts();
        if parts.method != Method::GET {
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "only get is served",
            );
        }
        let segments: Vec<&str> = parts.uri.path().trim_matches('/').split('/').collect();
        match segments.as_slice() {
            ["apis"] => json(StatusCode::OK, &group_list()),
            ["apis", GROUP] => json(StatusCode::OK, &group()),
            ["apis", GROUP, VERSION] => json(StatusCode::OK, &resource_list()),
            [
                "apis",
                GROUP,
                VERSION,
                "namespaces",
                namespace,
                RESOURCE,
                name,
            ] => {
                let query = Query::parse(parts.uri.query().unwrap_or(""));
                match query {
                    Ok(query) => {
                        self.usage(proxy, peer, &parts.headers, namespace, name, query)
                            .await
                    }
                    Err(message) => status(StatusCode::BAD_REQUEST, "BadRequest", &message),
                }
            }
            _ => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!(
                    "no such path: see /apis/{API_VERSION}/namespaces/<namespace>/{RESOURCE}/<name>"
                ),
            ),
        }
    }

    async fn usage(
        &self,
        proxy: Option<&str>,
        peer: IpAddr,
        headers: &hyper::HeaderMap,
        namespace: &str,
        name: &str,
        query: Query,
    ) -> Answer {
        let checked = async {
            let user = self.gate.authenticate(proxy, peer, headers).await?;
            self.gate.authorize(&user, namespace, name).await
        };
        match checked.await {
            Ok(()) => {}
            Err(Denied::Unauthenticated(message)) => {
                return status(StatusCode::UNAUTHORIZED, "Unauthorized", &message);
            }
            Err(Denied::Forbidden(message)) => {
                return status(StatusCode::FORBIDDEN, "Forbidden", &message);
            }
            Err(Denied::TooManyRequests { retry_after }) => return too_many_requests(retry_after),
        }
        let now = (self.verifier.clock)();
        let since = now.checked_sub(query.since).unwrap_or(Timestamp::MIN);
        let local = || {
            let tokens = self.verifier.activity.of_key(namespace, name, since, now);
            (self.replica.clone(), Ok(tokens))
        };
        let answers = match (&self.peers, query.local) {
            (Some(peers), false) => self.ask_peers(peers, namespace, name, &query, local).await,
            _ => vec![local()],
        };
        let (tokens, replicas) = merge(answers);
        json(
            StatusCode::OK,
            &ApiKeyUsage::new(namespace, name, since, now, tokens, replicas),
        )
    }

    /// Every replica's answer (this one's too, asked like the others); this replica's alone,
    /// with the reason, when the replicas cannot be listed.
    async fn ask_peers(
        &self,
        peers: &PeerSettings,
        namespace: &str,
        name: &str,
        query: &Query,
        local: impl FnOnce() -> (String, Result<Vec<super::activity::TokenActivity>, String>),
    ) -> Vec<(String, Result<Vec<super::activity::TokenActivity>, String>)> {
        let found = match peers.peers(self.client.clone()).await {
            Ok(found) if !found.is_empty() => found,
            Ok(_) => return vec![local()],
            Err(err) => {
                return vec![
                    local(),
                    (
                        "other replicas".into(),
                        Err(format!(
                            "listing the EndpointSlices of {}: {err}",
                            peers.service
                        )),
                    ),
                ];
            }
        };
        let path = format!(
            "/apis/{API_VERSION}/namespaces/{namespace}/{RESOURCE}/{name}?since={}s&local=true",
            query.since.as_secs()
        );
        let asked = found.iter().map(|peer| async {
            let answer = peers.ask(peer, &path).await.map(|usage| usage.tokens);
            (peer.name.clone(), answer)
        });
        futures::future::join_all(asked).await
    }
}

/// The query of a usage request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Query {
    since: SignedDuration,
    local: bool,
}

impl Query {
    fn parse(query: &str) -> Result<Query, String> {
        let mut parsed = Query {
            since: DEFAULT_SINCE,
            local: false,
        };
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "since" => {
                    let since = crate::duration::parse(&value)
                        .map_err(|e| format!("since: {e} (for example 1h or 30m)"))?;
                    parsed.since = SignedDuration::try_from(since)
                        .map_err(|_| "since: too long".to_owned())?;
                }
                "local" => parsed.local = value == "true",
                _ => {}
            }
        }
        Ok(parsed)
    }
}

fn json<T: serde::Serialize>(code: StatusCode, value: &T) -> Answer {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A Kubernetes `Status` failure, which kubectl prints as `Error from server (<reason>)`.
fn status(code: StatusCode, reason: &str, message: &str) -> Answer {
    json(code, &failure(code, reason, message))
}

fn failure(code: StatusCode, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    })
}

/// `429` with `Retry-After` in whole seconds (at least 1), and the same number where
/// client-go reads it in a `Status`.
fn too_many_requests(retry_after: Duration) -> Answer {
    let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let code = StatusCode::TOO_MANY_REQUESTS;
    let message = format!(
        "too many TokenReviews or SubjectAccessReviews asked for this caller: try again in \
         {seconds} s"
    );
    let mut body = failure(code, "TooManyRequests", &message);
    body["details"] = serde_json::json!({"retryAfterSeconds": seconds});
    let mut response = json(code, &body);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

fn group() -> serde_json::Value {
    let version = serde_json::json!({"groupVersion": API_VERSION, "version": VERSION});
    serde_json::json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [version],
        "preferredVersion": version,
    })
}

fn group_list() -> serde_json::Value {
    serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group()]})
}

fn resource_list() -> serde_json::Value {
    serde_json::json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": API_VERSION,
        "resources": [{
            "name": RESOURCE,
            "singularName": "apikeyusage",
            "namespaced": true,
            "kind": KIND,
            "verbs": ["get"],
        }],
    })
}

/// The client-certificate verifier for the front-proxy CA; clients without a certificate are
/// let through to bearer-token authentication.
fn front_proxy_verifier(
    config: &RequestHeader,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, UsageApiError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(config.client_ca.as_bytes()) {
        let cert = cert.map_err(|e| UsageApiError::ClientCa(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| UsageApiError::ClientCa(e.to_string()))?;
    }
    WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| UsageApiError::ClientCa(e.to_string()))
}

/// Serve the usage API of `verifier` on `listener` until `shutdown` completes. The front-proxy
/// CA is read once, here: an API server whose aggregation is not configured leaves only bearer
/// tokens (logged).
pub async fn serve(
    verifier: Arc<Verifier>,
    client: kube::Client,
    settings: UsageSettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), UsageApiError> {
    let files = settings.tls.clone().ok_or(UsageApiError::NoCertificate)?;
    let request_header = match RequestHeader::load(client.clone()).await {
        Ok(found) => found,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read kube-system/extension-apiserver-authentication: \
                the usage API accepts bearer tokens only (grant the verifier the \
                extension-apiserver-authentication-reader Role)");
            None
        }
    };
    let (acceptor, reload): (_, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) =
        match &request_header {
            Some(config) => {
                let clients = front_proxy_verifier(config)?;
                let (acceptor, reload) = tls::acceptor_verifying_clients(files, clients)?;
                (acceptor, Box::pin(reload))
            }
            None => {
                tracing::warn!(
                    "no requestheader-client-ca-file: requests through the API server's \
                     aggregator cannot be authenticated; bearer tokens only"
                );
                let (acceptor, reload) = tls::acceptor(files)?;
                (acceptor, Box::pin(reload))
            }
        };
    tokio::spawn(reload);
    let api = Arc::new(UsageApi {
        gate: Gate::new(client.clone(), request_header),
        verifier,
        client,
        replica: settings.replica,
        peers: settings.peers,
    });
    tracing::info!(listen = ?listener.local_addr().ok(), "usage API serving");
    let handler = move |peer: SocketAddr, request: Request<Incoming>| {
        let api = api.clone();
        async move {
            // The front proxy is named by the certificate its connection presented.
            let proxy = request
                .extensions()
                .get::<ClientCertificate>()
                .and_then(|leaf| auth::common_name(&leaf.0));
            api.handle(proxy.as_deref(), peer.ip(), request).await
        }
    };
    server::serve(
        listener,
        handler,
        LIMITS,
        Some(acceptor),
        Connections::default(),
        shutdown,
    )
    .await?;
    Ok(())
}

/// Where a replica finds its peers: `--usage-service` in the pod's namespace, trusting
/// `--usage-peer-ca-file` and sending `--usage-peer-token-file`.
pub fn peer_settings(
    namespace: Option<String>,
    service: Option<String>,
    ca_file: Option<PathBuf>,
    token_file: PathBuf,
) -> Option<PeerSettings> {
    Some(PeerSettings {
        namespace: namespace?,
        service: service?,
        ca_file: ca_file?,
        token_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_since_and_local() {
        assert_eq!(
            Query::parse("").unwrap(),
            Query {
                since: DEFAULT_SINCE,
                local: false
            }
        );
        assert_eq!(
            Query::parse("since=1h&local=true").unwrap(),
            Query {
                since: SignedDuration::from_hours(1),
                local: true
            }
        );
        assert!(
            Query::parse("since=soon")
                .unwrap_err()
                .starts_with("since:")
        );
    }

    #[test]
    fn a_refused_caller_is_told_when_to_retry_in_a_kubernetes_status() {
        for (owed, seconds) in [
            (Duration::from_millis(200), 1),
            (Duration::from_millis(2500), 3),
        ] {
            let answer = too_many_requests(owed);
            assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(answer.headers()[header::RETRY_AFTER], seconds.to_string());
        }
    }

    #[test]
    fn discovery_names_the_one_resource() {
        assert_eq!(resource_list()["resources"][0]["name"], RESOURCE);
        assert_eq!(
            group_list()["groups"][0]["preferredVersion"]["groupVersion"],
            API_VERSION
        );
    }
}
