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
//! `apikeyusages.usage.keysmith.dev` named after the ApiKey in its namespace. Answers are cached
//! for [`CACHE_TTL`] (a bearer token under its SHA-256 only), and the reviews each caller may
//! cause are limited ([`limits`](super::limits)).

use std::collections::BTreeMap;
use std::net::IpAddr;
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

use super::limits::{Answers, CACHE_ENTRIES, Caller, ReviewLimits, TooManyRequests};
use super::object::{GROUP, RESOURCE};

pub use super::limits::CACHE_TTL;
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

/// Why a request is refused: 401, 403 or 429, with a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// Not authenticated (401).
    Unauthenticated(String),
    /// Authenticated but not allowed (403).
    Forbidden(String),
    /// Not asked: the caller has used up its reviews, or too many are outstanding (429). Says
    /// nothing about the credentials.
    TooManyRequests {
        /// When to try again.
        retry_after: Duration,
    },
}

impl From<TooManyRequests> for Denied {
    fn from(refused: TooManyRequests) -> Denied {
        Denied::TooManyRequests {
            retry_after: refused.retry_after,
        }
    }
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

/// What the gate asks the API server, behind a trait so the limits are tested without one.
pub trait Reviewer: Send + Sync {
    /// The user `token` belongs to (a `TokenReview`); `None` when the API server does not
    /// accept it; `Err` when it could not be asked.
    fn token_review(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<Option<User>, String>> + Send;

    /// Whether `user` may `get` the usage of ApiKey `namespace`/`name` (a
    /// `SubjectAccessReview`); `Err` when it could not be asked.
    fn access_review(
        &self,
        user: &User,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<bool, String>> + Send;
}

impl Reviewer for kube::Client {
    async fn token_review(&self, token: &str) -> Result<Option<User>, String> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| e.to_string())?;
        let status = answer.status.unwrap_or_default();
        Ok(match (status.authenticated, status.user) {
            (Some(true), Some(user)) => Some(User {
                name: user.username.unwrap_or_default(),
                uid: user.uid.unwrap_or_default(),
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default().into_iter().collect(),
            }),
            _ => None,
        })
    }

    async fn access_review(
        &self,
        user: &User,
        namespace: &str,
        name: &str,
    ) -> Result<bool, String> {
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
        let api: Api<SubjectAccessReview> = Api::all(self.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| e.to_string())?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}

/// Authentication and authorization against the API server, cached and limited
/// ([`limits`](super::limits)).
pub struct Gate<R = kube::Client> {
    reviewer: R,
    request_header: Option<RequestHeader>,
    tokens: Answers<[u8; 32], User, Denied>,
    decisions: Answers<(User, String, String), (), Denied>,
    limits: ReviewLimits,
}

impl<R: Reviewer> Gate<R> {
    /// A gate asking `reviewer`'s API server; `request_header` trusts the aggregator.
    pub fn new(reviewer: R, request_header: Option<RequestHeader>) -> Gate<R> {
        Gate {
            reviewer,
            request_header,
            tokens: Answers::new(CACHE_ENTRIES),
            decisions: Answers::new(CACHE_ENTRIES),
            limits: ReviewLimits::default(),
        }
    }

    /// Who sent a request from `peer`: the front proxy's user when the connection presented
    /// its verified certificate with Common Name `proxy`, else the bearer token's, reviewed at
    /// the peer's expense.
    pub async fn authenticate(
        &self,
        proxy: Option<&str>,
        peer: IpAddr,
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
        let _permit = self.limits.admit(Caller::peer(peer)).await?;
        let result = match self.reviewer.token_review(token).await {
            Ok(Some(user)) => Ok(user),
            Ok(None) => Err(Denied::Unauthenticated(
                "the bearer token is not valid for this cluster".into(),
            )),
            Err(e) => return Err(Denied::Unauthenticated(format!("TokenReview failed: {e}"))),
        };
        self.tokens.put(key, result.clone(), Instant::now());
        result
    }

    /// Whether `user` may `get` the usage of ApiKey `namespace`/`name`, reviewed at the user's
    /// expense.
    pub async fn authorize(&self, user: &User, namespace: &str, name: &str) -> Result<(), Denied> {
        let key = (user.clone(), namespace.to_owned(), name.to_owned());
        if let Some(known) = self.decisions.get(&key, Instant::now()) {
            return known;
        }
        let _permit = self.limits.admit(Caller::User(user.name.clone())).await?;
        let result = match self.reviewer.access_review(user, namespace, name).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Denied::Forbidden(forbidden_message(
                &user.name, namespace, name,
            ))),
            Err(e) => {
                return Err(Denied::Forbidden(format!(
                    "SubjectAccessReview failed: {e}"
                )));
            }
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
    use crate::verifier::usage_api::limits::{REVIEW_BURST, REVIEWS_IN_FLIGHT, REVIEWS_PER_SECOND};
    use hyper::header::HeaderValue;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

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

    /// A reviewer that counts what it is asked: the token `good` is user `good`, any other is
    /// refused; only the ApiKey `mine` may be read. With `hold`, each review waits for a permit.
    #[derive(Default)]
    struct Fake {
        token_reviews: AtomicUsize,
        access_reviews: AtomicUsize,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
        hold: Option<tokio::sync::Semaphore>,
    }

    impl Fake {
        async fn review(&self) {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            if let Some(hold) = &self.hold {
                hold.acquire().await.unwrap().forget();
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Reviewer for Fake {
        async fn token_review(&self, token: &str) -> Result<Option<User>, String> {
            self.token_reviews.fetch_add(1, Ordering::SeqCst);
            self.review().await;
            Ok((token == "good").then(|| User {
                name: "good".into(),
                ..User::default()
            }))
        }

        async fn access_review(&self, _: &User, _: &str, name: &str) -> Result<bool, String> {
            self.access_reviews.fetch_add(1, Ordering::SeqCst);
            self.review().await;
            Ok(name == "mine")
        }
    }

    fn bearing(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Bearer {token}");
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    fn ip(last: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + last))
    }

    /// Most reviews one caller may cause in `elapsed`.
    fn bound(elapsed: std::time::Duration) -> usize {
        REVIEW_BURST as usize + (elapsed.as_secs_f64() * f64::from(REVIEWS_PER_SECOND)) as usize
    }

    #[tokio::test]
    async fn bogus_tokens_from_one_peer_cost_a_bounded_number_of_reviews_then_429() {
        let gate = Gate::new(Fake::default(), None);
        let start = Instant::now();
        let mut answers = Vec::new();
        for i in 0..300 {
            answers.push(
                gate.authenticate(None, ip(1), &bearing(&format!("bogus-{i}")))
                    .await,
            );
        }
        let reviews = gate.reviewer.token_reviews.load(Ordering::SeqCst);
        assert!(reviews <= bound(start.elapsed()), "{reviews} TokenReviews");
        let refused = answers
            .iter()
            .filter(|a| matches!(a, Err(Denied::Unauthenticated(_))))
            .count();
        let limited = answers
            .iter()
            .filter(|a| matches!(a, Err(Denied::TooManyRequests { retry_after }) if !retry_after.is_zero()))
            .count();
        assert_eq!((refused, limited), (reviews, 300 - reviews));
        // Another peer is still served, and a token already refused is answered from the cache.
        assert_eq!(
            gate.authenticate(None, ip(2), &bearing("good"))
                .await
                .unwrap()
                .name,
            "good"
        );
        assert!(matches!(
            gate.authenticate(None, ip(2), &bearing("bogus-0")).await,
            Err(Denied::Unauthenticated(_))
        ));
        assert_eq!(
            gate.reviewer.token_reviews.load(Ordering::SeqCst),
            reviews + 1
        );
    }

    #[tokio::test]
    async fn refused_tokens_from_many_peers_never_push_out_an_accepted_one() {
        let gate = Gate::new(Fake::default(), None);
        assert!(
            gate.authenticate(None, ip(0), &bearing("good"))
                .await
                .is_ok()
        );
        for i in 1..=2 * CACHE_ENTRIES as u32 {
            let answer = gate
                .authenticate(None, ip(i), &bearing(&format!("bogus-{i}")))
                .await;
            assert!(matches!(answer, Err(Denied::Unauthenticated(_))));
        }
        let before = gate.reviewer.token_reviews.load(Ordering::SeqCst);
        assert!(
            gate.authenticate(None, ip(0), &bearing("good"))
                .await
                .is_ok()
        );
        assert_eq!(
            gate.reviewer.token_reviews.load(Ordering::SeqCst),
            before,
            "the accepted token is still cached"
        );
    }

    #[tokio::test]
    async fn front_proxy_users_are_charged_one_by_one_not_as_the_proxy_address() {
        let gate = Gate::new(Fake::default(), Some(config()));
        let as_user = |name: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-remote-user", name.parse().unwrap());
            headers
        };
        let proxy = Some("front-proxy-client");
        let start = Instant::now();
        let alice = gate
            .authenticate(proxy, ip(1), &as_user("alice"))
            .await
            .unwrap();
        let mut limited = 0;
        for i in 0..300 {
            let answer = gate.authorize(&alice, "team", &format!("key-{i}")).await;
            limited += usize::from(matches!(answer, Err(Denied::TooManyRequests { .. })));
        }
        let reviews = gate.reviewer.access_reviews.load(Ordering::SeqCst);
        assert!(
            reviews <= bound(start.elapsed()),
            "{reviews} SubjectAccessReviews"
        );
        assert_eq!(limited, 300 - reviews);
        // Bob comes through the same proxy from the same address and is answered.
        let bob = gate
            .authenticate(proxy, ip(1), &as_user("bob"))
            .await
            .unwrap();
        assert_eq!(gate.authorize(&bob, "team", "mine").await, Ok(()));
        assert_eq!(gate.reviewer.token_reviews.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reviews_outstanding_at_once_are_bounded_for_all_peers_together() {
        let gate = Arc::new(Gate::new(
            Fake {
                hold: Some(tokio::sync::Semaphore::new(0)),
                ..Fake::default()
            },
            None,
        ));
        let asking: Vec<_> = (0..50)
            .map(|i| {
                let gate = gate.clone();
                tokio::spawn(async move {
                    gate.authenticate(None, ip(i), &bearing(&format!("bogus-{i}")))
                        .await
                })
            })
            .collect();
        while gate.reviewer.in_flight.load(Ordering::SeqCst) < REVIEWS_IN_FLIGHT {
            tokio::task::yield_now().await;
        }
        gate.reviewer.hold.as_ref().unwrap().add_permits(50);
        for answer in futures::future::join_all(asking).await {
            assert!(matches!(answer.unwrap(), Err(Denied::Unauthenticated(_))));
        }
        assert_eq!(
            gate.reviewer.most_in_flight.load(Ordering::SeqCst),
            REVIEWS_IN_FLIGHT
        );
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
