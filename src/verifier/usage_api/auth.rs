//! Who is asking the usage API, and whether Kubernetes RBAC lets them, as an aggregated API
//! server decides it:
//!
//! - A request the API server's aggregator forwards arrives over TLS with the front-proxy client
//!   certificate, verified in the handshake against `requestheader-client-ca-file` of the
//!   ConfigMap `kube-system/extension-apiserver-authentication`; its Common Name must be one of
//!   `requestheader-allowed-names` (any, when the list is empty). The user is then the one the
//!   aggregator names in `X-Remote-User`, `X-Remote-Group` and `X-Remote-Extra-*` (the header
//!   names that ConfigMap lists). Without that certificate these headers are ignored.
//! - Any other caller presents `Authorization: Bearer`, checked with a `TokenReview`.
//!
//! Every request is then authorized with a `SubjectAccessReview` for `get` on
//! `apikeyusages.usage.keysmith.dev` named after the ApiKey in its namespace. Reviews and
//! decisions are cached for [`CACHE_TTL`] (at most [`CACHE_ENTRIES`] of each); a bearer token is
//! cached under its SHA-256 only.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::header::{self, HeaderMap};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;
use sha2::{Digest, Sha256};

use super::object::{GROUP, RESOURCE};

/// How long a TokenReview or SubjectAccessReview answer is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// Most answers cached of each kind.
pub const CACHE_ENTRIES: usize = 4096;
/// Namespace and name of the ConfigMap that says how to trust the aggregator.
pub const AUTHENTICATION_CONFIGMAP: (&str, &str) =
    ("kube-system", "extension-apiserver-authentication");

/// A caller, as the API server knows them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct User {
    /// User name.
    pub name: String,
    /// UID, when known.
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes (scopes and the like), passed on to the SubjectAccessReview.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Why a request is refused: 401 or 403, with a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// Not authenticated (401).
    Unauthenticated(String),
    /// Authenticated but not allowed (403).
    Forbidden(String),
}

/// What `extension-apiserver-authentication` says about the aggregator's requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHeader {
    /// PEM of the CA that signs the front-proxy client certificate.
    pub client_ca: String,
    /// Common Names a front-proxy certificate may have; empty: any signed by the CA.
    pub allowed_names: Vec<String>,
    /// Headers naming the user (first present wins).
    pub username_headers: Vec<String>,
    /// Headers naming groups (all values).
    pub group_headers: Vec<String>,
    /// Prefixes of headers carrying extra attributes.
    pub extra_prefixes: Vec<String>,
}

impl RequestHeader {
    /// Read from the ConfigMap's data; `None` when it configures no request-header
    /// authentication (an API server without aggregation).
    pub fn from_data(data: &BTreeMap<String, String>) -> Option<RequestHeader> {
        let list = |key: &str| -> Vec<String> {
            data.get(key)
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default()
        };
        let client_ca = data.get("requestheader-client-ca-file")?.clone();
        Some(RequestHeader {
            client_ca,
            allowed_names: list("requestheader-allowed-names"),
            username_headers: list("requestheader-username-headers"),
            group_headers: list("requestheader-group-headers"),
            extra_prefixes: list("requestheader-extra-headers-prefix"),
        })
    }

    /// Read the ConfigMap from the cluster.
    pub async fn load(client: kube::Client) -> Result<Option<RequestHeader>, kube::Error> {
        let (namespace, name) = AUTHENTICATION_CONFIGMAP;
        let api: Api<ConfigMap> = Api::namespaced(client, namespace);
        let config = api.get_opt(name).await?;
        Ok(config
            .and_then(|c| c.data)
            .and_then(|data| RequestHeader::from_data(&data)))
    }

    /// The user a request carrying a front-proxy certificate with Common Name `common_name`
    /// names in its headers.
    pub fn user(&self, common_name: &str, headers: &HeaderMap) -> Result<User, Denied> {
        if !self.allowed_names.is_empty() && !self.allowed_names.iter().any(|n| n == common_name) {
            return Err(Denied::Unauthenticated(format!(
                "client certificate {common_name:?} is not one of requestheader-allowed-names"
            )));
        }
        let values = |name: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let name = self
            .username_headers
            .iter()
            .find_map(|h| values(h).into_iter().find(|v| !v.is_empty()))
            .ok_or_else(|| Denied::Unauthenticated("the front proxy named no user".to_owned()))?;
        let groups = self.group_headers.iter().flat_map(|h| values(h)).collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (header, value) in headers {
            let header = header.as_str();
            let Some(key) = self
                .extra_prefixes
                .iter()
                .find_map(|p| strip_prefix_ignore_case(header, p))
            else {
                continue;
            };
            if let Ok(value) = value.to_str() {
                extra
                    .entry(unescape(key))
                    .or_default()
                    .push(value.to_owned());
            }
        }
        Ok(User {
            name,
            uid: String::new(),
            groups,
            extra,
        })
    }
}

fn strip_prefix_ignore_case<'a>(header: &'a str, prefix: &str) -> Option<&'a str> {
    let head = header.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &header[prefix.len()..])
}

/// Extra keys are percent-encoded in header names (`X-Remote-Extra-Acme.com%2Fproject`).
fn unescape(key: &str) -> String {
    let lower = key.to_ascii_lowercase();
    form_urlencoded::parse(format!("k={}", lower.replace('+', "%2B")).as_bytes())
        .next()
        .map_or(lower.clone(), |(_, v)| v.into_owned())
}

/// The Common Name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A small time-bounded cache.
struct Cache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Hash + Eq, V: Clone> Cache<K, V> {
    fn new() -> Self {
        Cache {
            entries: Mutex::default(),
        }
    }

    fn get(&self, key: &K, now: Instant) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| now.duration_since(*at) < CACHE_TTL)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: K, value: V, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_ENTRIES {
            entries.retain(|_, (at, _)| now.duration_since(*at) < CACHE_TTL);
            if entries.len() >= CACHE_ENTRIES {
                // All fresh: a burst of distinct callers; start over rather than grow.
                entries.clear();
            }
        }
        entries.insert(key, (now, value));
    }
}

/// Authentication and authorization against the API server, cached.
pub struct Gate {
    client: kube::Client,
    request_header: Option<RequestHeader>,
    tokens: Cache<[u8; 32], Result<User, Denied>>,
    decisions: Cache<(User, String, String), Result<(), Denied>>,
}

impl Gate {
    /// A gate asking `client`'s API server; `request_header` trusts the aggregator.
    pub fn new(client: kube::Client, request_header: Option<RequestHeader>) -> Gate {
        Gate {
            client,
            request_header,
            tokens: Cache::new(),
            decisions: Cache::new(),
        }
    }

    /// Who sent a request: the front proxy's user when the connection presented its verified
    /// certificate with Common Name `proxy`, else the bearer token's.
    pub async fn authenticate(
        &self,
        proxy: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<User, Denied> {
        if let (Some(common_name), Some(config)) = (proxy, &self.request_header) {
            return config.user(common_name, headers);
        }
        let Some(token) = bearer(headers) else {
            return Err(Denied::Unauthenticated(
                "no credentials: call through the Kubernetes API server (kubectl get --raw, \
                 keysmith usage) or send a bearer token"
                    .into(),
            ));
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(known) = self.tokens.get(&key, Instant::now()) {
            return known;
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Denied::Unauthenticated(format!("TokenReview failed: {e}")))?;
        let status = answer.status.unwrap_or_default();
        let result = match (status.authenticated, status.user) {
            (Some(true), Some(user)) => Ok(User {
                name: user.username.unwrap_or_default(),
                uid: user.uid.unwrap_or_default(),
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default().into_iter().collect(),
            }),
            _ => Err(Denied::Unauthenticated(
                "the bearer token is not valid for this cluster".into(),
            )),
        };
        self.tokens.put(key, result.clone(), Instant::now());
        result
    }

    /// Whether `user` may `get` the usage of ApiKey `namespace`/`name`.
    pub async fn authorize(&self, user: &User, namespace: &str, name: &str) -> Result<(), Denied> {
        let key = (user.clone(), namespace.to_owned(), name.to_owned());
        if let Some(known) = self.decisions.get(&key, Instant::now()) {
            return known;
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: Some(user.uid.clone()).filter(|u| !u.is_empty()),
                groups: Some(user.groups.clone()),
                extra: Some(user.extra.clone().into_iter().collect()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(GROUP.into()),
                    resource: Some(RESOURCE.into()),
                    verb: Some("get".into()),
                    namespace: Some(namespace.into()),
                    name: Some(name.into()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Denied::Forbidden(format!("SubjectAccessReview failed: {e}")))?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        let result = if allowed {
            Ok(())
        } else {
            Err(Denied::Forbidden(forbidden_message(
                &user.name, namespace, name,
            )))
        };
        self.decisions.put(key, result.clone(), Instant::now());
        result
    }
}

/// The message of a 403, in the words kube-apiserver uses, naming the permission to grant.
pub fn forbidden_message(user: &str, namespace: &str, name: &str) -> String {
    format!(
        "apikeyusages.{GROUP} \"{name}\" is forbidden: User \"{user}\" cannot get resource \
         \"{RESOURCE}\" in API group \"{GROUP}\" in the namespace \"{namespace}\""
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn config() -> RequestHeader {
        let data = BTreeMap::from([
            ("requestheader-client-ca-file".into(), "PEM".into()),
            (
                "requestheader-allowed-names".into(),
                r#"["front-proxy-client"]"#.into(),
            ),
            (
                "requestheader-username-headers".into(),
                r#"["X-Remote-User"]"#.into(),
            ),
            (
                "requestheader-group-headers".into(),
                r#"["X-Remote-Group"]"#.into(),
            ),
            (
                "requestheader-extra-headers-prefix".into(),
                r#"["X-Remote-Extra-"]"#.into(),
            ),
        ]);
        RequestHeader::from_data(&data).unwrap()
    }

    #[test]
    fn the_front_proxy_names_the_user_its_groups_and_extras() {
        let mut headers = HeaderMap::new();
        headers.insert("x-remote-user", HeaderValue::from_static("alice"));
        headers.append("x-remote-group", HeaderValue::from_static("devs"));
        headers.append(
            "x-remote-group",
            HeaderValue::from_static("system:authenticated"),
        );
        headers.insert(
            "x-remote-extra-acme.com%2fproject",
            HeaderValue::from_static("p1"),
        );
        let user = config().user("front-proxy-client", &headers).unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["devs", "system:authenticated"]);
        assert_eq!(user.extra["acme.com/project"], ["p1"]);
        // A certificate the ConfigMap does not allow is refused, whatever the headers say.
        assert!(matches!(
            config().user("someone-else", &headers),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            config().user("front-proxy-client", &HeaderMap::new()),
            Err(Denied::Unauthenticated(_))
        ));
    }

    #[test]
    fn no_request_header_configuration_without_its_ca() {
        assert_eq!(RequestHeader::from_data(&BTreeMap::new()), None);
    }

    #[test]
    fn bearer_tokens_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic x"));
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  abc "),
        );
        assert_eq!(bearer(&headers), Some("abc"));
    }

    #[test]
    fn cached_answers_expire_and_the_cache_stays_bounded() {
        let cache: Cache<usize, bool> = Cache::new();
        let t0 = Instant::now();
        cache.put(1, true, t0);
        assert_eq!(cache.get(&1, t0 + CACHE_TTL / 2), Some(true));
        assert_eq!(cache.get(&1, t0 + CACHE_TTL), None);
        for i in 0..CACHE_ENTRIES * 2 {
            cache.put(i, true, t0);
        }
        assert!(cache.entries.lock().unwrap().len() <= CACHE_ENTRIES);
    }

    #[test]
    fn the_common_name_of_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "front-proxy-client");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            common_name(cert.der()).as_deref(),
            Some("front-proxy-client")
        );
        assert_eq!(common_name(b"not a certificate"), None);
    }
}
