//! The verification endpoints of SPEC section 5: `POST /v1/verify`, `/v1/authz[/*]` for
//! gateways, and the Kubernetes `TokenReview` webhook.
//!
//! Every endpoint goes through [`Verifier::check`](super::Verifier::check) (decision, metrics,
//! audit, usage, failure throttling); this module only maps HTTP in and out. It answers on hyper
//! directly rather than through a router framework: four routes do not need one, and the
//! framework's per-request boxing, extractor clones and state clones were a measurable share of
//! a verification (`bench/load.sh`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Bytes};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};
use serde::{Deserialize, Serialize};

use keysmith_core::grants::Context;
use keysmith_core::verifier::decision::{Code, RequestHeaders, VerifyRequest};
use keysmith_core::verifier::index::{Found, Verdict};

use crate::text::{json_str, write_rfc3339};

use super::Verifier;
use super::audit;
use super::client_ip::client_ip;
use super::leaks;
use super::tenancy::{self, Endpoint, Namespaces, RouteKind, Tenancy};

/// Largest request body accepted (413 beyond): a verification is a token and a few strings.
pub const MAX_BODY: usize = 16 * 1024;
/// Path of the TokenReview webhook.
pub const TOKENREVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

// Header names the endpoints read and write, parsed at compile time: a name given as a string is
// parsed and validated at every lookup or insert.
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const X_KEYSMITH_ACTION: HeaderName = HeaderName::from_static("x-keysmith-action");
const X_KEYSMITH_RESOURCE: HeaderName = HeaderName::from_static("x-keysmith-resource");
const X_KEYSMITH_ENVIRONMENT: HeaderName = HeaderName::from_static("x-keysmith-environment");
const X_KEYSMITH_CODE: HeaderName = HeaderName::from_static("x-keysmith-code");
const X_KEYSMITH_KEY: HeaderName = HeaderName::from_static("x-keysmith-key");
const X_KEYSMITH_TOKEN: HeaderName = HeaderName::from_static("x-keysmith-token");
const X_KEYSMITH_OWNER: HeaderName = HeaderName::from_static("x-keysmith-owner");

/// The request's HTTP headers as the decision reads them (the core knows no HTTP types).
struct HttpHeaders<'a>(&'a HeaderMap);

impl RequestHeaders for HttpHeaders<'_> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(HeaderValue::as_bytes)
    }

    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.0
            .get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect()
    }
}

/// An answer of the verification API.
pub type Answer = Response<Full<Bytes>>;

/// Answer one request to the verification API; `peer` is the TCP peer, the client address
/// unless it is a trusted proxy.
pub async fn handle<B>(verifier: &Verifier, peer: SocketAddr, mut request: Request<B>) -> Answer
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    // Taken out (a move, no copy) so the scope the path names can be borrowed while the request
    // moves on to its endpoint.
    let uri = std::mem::take(request.uri_mut());
    let path = uri.path();
    let post = request.method() == Method::POST;
    if let Some((format, endpoint)) = leaks::Format::of_path(path)
        .and_then(|format| Some((format, verifier.leaks.as_ref()?)))
        .filter(|(format, endpoint)| endpoint.serves(*format))
    {
        return if post {
            leak_report(verifier, endpoint, format, peer, request).await
        } else {
            method_not_allowed()
        };
    }
    if path == TOKENREVIEW_PATH {
        return if post {
            tokenreview(verifier, peer, request).await
        } else {
            method_not_allowed()
        };
    }
    let Some((endpoint, scope)) = tenancy::route(path) else {
        if path.starts_with("/v1/namespaces/") {
            verifier.metrics.unknown_scope(RouteKind::Invalid);
        }
        return error(
            StatusCode::NOT_FOUND,
            "no such endpoint: see /v1/verify, /v1/authz, /v1/namespaces/<namespace,...>/verify \
             and /authz, and the TokenReview webhook"
                .into(),
        );
    };
    // The route's own scope, else what the verifier's owner chose for unscoped routes.
    let scope = match scope {
        Some(namespaces) => (namespaces, RouteKind::Scoped),
        None => (verifier.tenancy.default.view(), RouteKind::Unscoped),
    };
    match endpoint {
        Endpoint::Verify if post => verify(verifier, peer, scope, request).await,
        Endpoint::Verify => method_not_allowed(),
        Endpoint::Authz => {
            let query = Some(uri.query().unwrap_or(""));
            authz(verifier, peer, scope, query, request).await
        }
        Endpoint::AuthzBelow => authz(verifier, peer, scope, None, request).await,
    }
}

/// A leak report (`/v1/leaks`, `/v1/leaks/github`), when the verifier takes them.
async fn leak_report<B>(
    verifier: &Verifier,
    endpoint: &leaks::LeakEndpoint,
    format: leaks::Format,
    peer: SocketAddr,
    request: Request<B>,
) -> Answer
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let timeout = verifier.limits.body_read_timeout;
    let (headers, body) = match read_body_up_to(request, timeout, leaks::MAX_REPORT_BODY).await {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    let origin = client_ip(peer.ip(), &HttpHeaders(&headers), &verifier.trusted_proxies);
    endpoint
        .handle(verifier, format, origin.client, &headers, &body)
        .await
}

fn answer(status: StatusCode, content_type: Option<&'static str>, body: Bytes) -> Answer {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    response
}

pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Answer {
    let mut body = Vec::with_capacity(128);
    // Serializing these types to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut body, value);
    answer(status, Some("application/json"), body.into())
}

pub(super) fn error(status: StatusCode, message: String) -> Answer {
    json(status, &serde_json::json!({ "error": message }))
}

fn method_not_allowed() -> Answer {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "use POST".into());
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

/// The whole request body, or the answer to give when it is too large (413), broken (400) or not
/// all in within `timeout` (408).
async fn read_body<B>(request: Request<B>, timeout: Duration) -> Result<(HeaderMap, Bytes), Answer>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    read_body_up_to(request, timeout, MAX_BODY).await
}

/// [`read_body`] with a body of at most `limit` bytes.
async fn read_body_up_to<B>(
    request: Request<B>,
    timeout: Duration,
    limit: usize,
) -> Result<(HeaderMap, Bytes), Answer>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {limit} bytes"),
        )
    };
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let Ok(collected) = tokio::time::timeout(timeout, collect(Limited::new(body, limit))).await
    else {
        return Err(error(
            StatusCode::REQUEST_TIMEOUT,
            format!("request body not received within {timeout:?}"),
        ));
    };
    match collected {
        Ok(collected) => Ok((parts.headers, collected)),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(err) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {err}"),
        )),
    }
}

/// The data of `body`. A body that comes in one frame, as a small one does, is taken as it came
/// (http-body-util's `collect` queues every frame, then copies them out); more frames are joined.
async fn collect<B: Body<Data = Bytes>>(body: B) -> Result<Bytes, B::Error> {
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut joined: Option<Vec<u8>> = None;
    while let Some(frame) = body.as_mut().frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers
        };
        match (&mut joined, first.take()) {
            (Some(joined), _) => joined.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(earlier)) => {
                joined = Some([earlier, data].concat());
            }
        }
    }
    Ok(joined.map_or_else(|| first.unwrap_or_default(), Bytes::from))
}

/// The body of `POST /v1/verify`. Unknown fields are ignored; `null` is the same as absent.
/// Strings borrow from the request body unless they hold JSON escapes.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct VerifyBody<'a> {
    /// The presented token.
    #[serde(borrow)]
    pub token: Cow<'a, str>,
    /// Action to authorize.
    #[serde(default, borrow)]
    pub action: Option<Cow<'a, str>>,
    /// Resource the action is on.
    #[serde(default, borrow)]
    pub resource: Option<Cow<'a, str>>,
    /// Fields a create/update touches.
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// Environment the caller serves.
    #[serde(default, borrow)]
    pub environment: Option<Cow<'a, str>>,
    /// End-user address, for callers that verify on someone's behalf.
    #[serde(default)]
    pub ip: Option<IpAddr>,
    /// The end user's headers, for `requiredHeaders`.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Grant condition context.
    #[serde(default, borrow)]
    pub context: Option<BodyContext<'a>>,
}

/// `context` of a verify body.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
pub struct BodyContext<'a> {
    /// Status of the resource (`conditions.status`).
    #[serde(default, borrow)]
    pub status: Option<Cow<'a, str>>,
    /// Locale of the resource (`conditions.locales`).
    #[serde(default, borrow)]
    pub locale: Option<Cow<'a, str>>,
    /// Owner of the resource (`conditions.own`).
    #[serde(default, borrow)]
    pub owner: Option<Cow<'a, str>>,
}

/// Parse a `/v1/verify` body; an error means 400 (so does any byte that is not UTF-8, as JSON
/// text must be). Never panics, whatever the bytes.
pub fn parse_verify_body(body: &[u8]) -> Result<VerifyBody<'_>, serde_json::Error> {
    // One check of the whole body: parsed from bytes, every string is checked again on its own.
    let text = std::str::from_utf8(body).map_err(serde::de::Error::custom)?;
    serde_json::from_str(text)
}

impl VerifyBody<'_> {
    /// The end user's headers given in the body, for `requiredHeaders`.
    pub fn headers(&self) -> BodyHeaders {
        BodyHeaders(
            self.headers
                .iter()
                .flatten()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
        )
    }

    /// The request to decide; `client` is the address used when the body names none (`None`:
    /// unknown).
    pub fn request<'a>(
        &'a self,
        headers: &'a BodyHeaders,
        client: Option<IpAddr>,
    ) -> VerifyRequest<'a> {
        let context = self.context.as_ref();
        VerifyRequest {
            token: &self.token,
            action: self.action.as_deref(),
            resource: self.resource.as_deref(),
            fields: self.fields.as_deref().unwrap_or_default(),
            environment: self.environment.as_deref(),
            ip: self.ip.or(client),
            headers,
            context: Context {
                status: context.and_then(|c| c.status.as_deref()),
                locale: context.and_then(|c| c.locale.as_deref()),
                owner: context.and_then(|c| c.owner.as_deref()),
            },
        }
    }
}

/// Headers given in a verify body, keyed by lower-case name.
pub struct BodyHeaders(Vec<(String, String)>);

impl RequestHeaders for BodyHeaders {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_bytes())
    }
}

/// The answer to `POST /v1/verify`, as JSON: `valid`, `code`, `key` (namespace, name, token,
/// id, and `owner` with `username` and `groups` for a personal key; `null` when no key holds
/// the token), `environment`, `expiresAt` (`null` when none),
/// `metadata` and, when valid, `permissions`. Written field by field: a serde-derived answer
/// escaped every key and value byte by byte (`bench/instructions.sh`).
fn verify_response(verdict: &Verdict<'_>) -> Vec<u8> {
    let found = verdict.found.as_ref();
    let valid = verdict.code == Code::Valid;
    let slot = found
        .and_then(|f| f.key.slots.get(f.slot))
        .filter(|_| valid);
    // Sized for a verify answer, so it is written without growing.
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(if valid {
        b"{\"valid\":true,\"code\":"
    } else {
        b"{\"valid\":false,\"code\":"
    });
    json_str(&mut out, verdict.code.as_str());
    out.extend_from_slice(b",\"key\":");
    match found {
        Some(found) => {
            out.extend_from_slice(b"{\"namespace\":");
            json_str(&mut out, &found.key.namespace);
            out.extend_from_slice(b",\"name\":");
            json_str(&mut out, &found.key.name);
            out.extend_from_slice(b",\"token\":");
            json_str(&mut out, found.slot_name());
            out.extend_from_slice(b",\"id\":");
            json_str(&mut out, &found.id);
            if let Some(owner) = &found.key.owner {
                out.extend_from_slice(b",\"owner\":{\"username\":");
                json_str(&mut out, &owner.username);
                out.extend_from_slice(b",\"groups\":[");
                for (i, group) in owner.groups.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json_str(&mut out, group);
                }
                out.extend_from_slice(b"]}");
            }
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"environment\":");
    match found.and_then(|f| f.key.environment.as_deref()) {
        Some(environment) => json_str(&mut out, environment),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"expiresAt\":");
    match found.and_then(|f| f.expires_at) {
        Some(at) => {
            out.push(b'"');
            write_rfc3339(&mut out, at);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"metadata\":{");
    for (i, (name, value)) in slot
        .map_or(&[][..], |s| s.metadata.entries())
        .iter()
        .enumerate()
    {
        if i > 0 {
            out.push(b',');
        }
        json_str(&mut out, name);
        out.push(b':');
        json_str(&mut out, value);
    }
    out.push(b'}');
    if let Some(slot) = slot {
        out.extend_from_slice(b",\"permissions\":[");
        for (i, permission) in slot.grants.permissions().iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(&mut out, permission);
        }
        out.push(b']');
    }
    out.push(b'}');
    out
}

fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
}

async fn verify<B>(
    verifier: &Verifier,
    peer: SocketAddr,
    (namespaces, route): (Namespaces<'_>, RouteKind),
    request: Request<B>,
) -> Answer
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (headers, body) = match read_body(request, verifier.limits.body_read_timeout).await {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    let body = match parse_verify_body(&body) {
        Ok(body) => body,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body is not a verification request: {err}"),
            );
        }
    };
    let origin = client_ip(peer.ip(), &HttpHeaders(&headers), &verifier.trusted_proxies);
    let body_headers = body.headers();
    let request = body.request(&body_headers, origin.client);
    let audit = audit::Request {
        endpoint: audit::Endpoint::Verify,
        client: Some(origin.nearest),
        end_user: body.ip,
        user_agent: user_agent(&headers),
        action: request.action,
        resource: request.resource,
    };
    let verdict = verifier.check(&request, namespaces, route, &audit).await;
    answer(
        StatusCode::OK,
        Some("application/json"),
        verify_response(&verdict).into(),
    )
}

/// The token of a gateway request: `Authorization: Bearer <token>`, else `X-API-Key`.
/// Empty when neither is there, which verifies as MALFORMED.
fn presented_token(headers: &HeaderMap) -> &str {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    bearer
        .or_else(|| headers.get(X_API_KEY).and_then(|v| v.to_str().ok()))
        .unwrap_or("")
}

#[derive(Default)]
struct Asked<'a> {
    action: Option<Cow<'a, str>>,
    resource: Option<Cow<'a, str>>,
    environment: Option<Cow<'a, str>>,
}

/// What a gateway asks: from the `query` of an `authz` route exactly (ingress-nginx `auth-url`,
/// Traefik `address`), from `X-Keysmith-*` headers below it (`None`: Envoy appends the client's
/// path and query there, so that query is the client's to choose and must not be believed).
fn asked<'a>(query: Option<&'a str>, headers: &'a HeaderMap) -> Asked<'a> {
    if let Some(query) = query {
        let mut asked = Asked::default();
        for (k, v) in query_pairs(query) {
            let slot = match &*k {
                "action" => &mut asked.action,
                "resource" => &mut asked.resource,
                "environment" => &mut asked.environment,
                _ => continue,
            };
            *slot = Some(v);
        }
        asked
    } else {
        let get = |name: HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(Cow::Borrowed)
        };
        Asked {
            action: get(X_KEYSMITH_ACTION),
            resource: get(X_KEYSMITH_RESOURCE),
            environment: get(X_KEYSMITH_ENVIRONMENT),
        }
    }
}

/// The name-value pairs of a form-encoded query, decoded as `form_urlencoded::parse` decodes
/// them; a pair with nothing to decode (no `%`, no `+`), as gateways send them, is borrowed.
fn query_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            // Byte scans: char patterns walk characters, at several times the cost.
            let bytes = pair.as_bytes();
            if bytes.iter().any(|&b| b == b'%' || b == b'+') {
                return form_urlencoded::parse(bytes).next();
            }
            let (name, value) = match bytes.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, ""),
            };
            Some((Cow::Borrowed(name), Cow::Borrowed(value)))
        })
}

async fn authz<B>(
    verifier: &Verifier,
    peer: SocketAddr,
    (namespaces, route): (Namespaces<'_>, RouteKind),
    query: Option<&str>,
    request: Request<B>,
) -> Answer {
    let (parts, _) = request.into_parts();
    let headers = &parts.headers;
    let asked = asked(query, headers);
    let origin = client_ip(peer.ip(), &HttpHeaders(headers), &verifier.trusted_proxies);
    let request = VerifyRequest {
        token: presented_token(headers),
        action: asked.action.as_deref(),
        resource: asked.resource.as_deref(),
        fields: &[],
        environment: asked.environment.as_deref(),
        ip: origin.client,
        headers: &HttpHeaders(headers),
        context: Context::default(),
    };
    let audit = audit::Request {
        endpoint: audit::Endpoint::Authz,
        client: Some(origin.nearest),
        end_user: None,
        user_agent: user_agent(headers),
        action: request.action,
        resource: request.resource,
    };
    let verdict = verifier.check(&request, namespaces, route, &audit).await;
    authz_response(&verdict)
}

fn authz_response(verdict: &Verdict<'_>) -> Answer {
    let code = verdict.code;
    let status = match code {
        Code::Valid => StatusCode::OK,
        c if c.is_unauthenticated() => StatusCode::UNAUTHORIZED,
        _ => StatusCode::FORBIDDEN,
    };
    let mut response = answer(status, None, Bytes::new());
    let headers = response.headers_mut();
    headers.insert(X_KEYSMITH_CODE, HeaderValue::from_static(code.as_str()));
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    if let (Code::Valid, Some(found)) = (code, &verdict.found) {
        let mut set = |name: HeaderName, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        };
        set(X_KEYSMITH_KEY, &found.key.identity);
        set(X_KEYSMITH_TOKEN, found.slot_name());
        // Always set, empty when the key has none: a gateway copying it upstream then replaces
        // any X-Keysmith-Environment the client sent instead of passing it on.
        let environment = found.key.environment.as_deref().unwrap_or("");
        headers.insert(
            X_KEYSMITH_ENVIRONMENT,
            HeaderValue::from_str(environment).unwrap_or(HeaderValue::from_static("")),
        );
        // The same for a personal key's owner: empty for any other key.
        let owner = found.key.owner.as_deref();
        let owner = owner.and_then(|o| HeaderValue::from_str(&o.username).ok());
        headers.insert(
            X_KEYSMITH_OWNER,
            owner.unwrap_or(HeaderValue::from_static("")),
        );
    }
    response
}

#[derive(Deserialize)]
struct TokenReview {
    kind: String,
    #[serde(default)]
    spec: TokenReviewSpec,
}

#[derive(Deserialize, Default)]
struct TokenReviewSpec {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    audiences: Option<Vec<String>>,
}

/// The TokenReview webhook. It carries neither the end user's address nor headers, so keys with
/// an IP allow-list or required headers do not authenticate here (fail closed). Its failures are
/// throttled on the caller like every endpoint's: whoever reaches it can guess tokens through it.
async fn tokenreview<B>(verifier: &Verifier, peer: SocketAddr, request: Request<B>) -> Answer
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (headers, body) = match read_body(request, verifier.limits.body_read_timeout).await {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    let parsed = serde_json::from_slice::<TokenReview>(&body);
    let Some(review) = parsed.ok().filter(|r| r.kind == "TokenReview") else {
        return error(StatusCode::BAD_REQUEST, "body is not a TokenReview".into());
    };
    let requested = review.spec.audiences.as_deref().unwrap_or_default();
    let tenancy = &verifier.tenancy;
    let served = |audience: &String| {
        verifier.token_review_audiences.contains(audience) || tenancy.audience(audience).is_some()
    };
    let Some(audiences) = accepted_audiences(requested, served) else {
        // A token for another audience is not Keysmith's to vouch for, whatever it is.
        verifier.metrics.unknown_scope(RouteKind::TokenReview);
        return tokenreview_answer(refused("no requested audience is accepted"));
    };
    let token = review.spec.token.as_deref().unwrap_or("");
    let request = VerifyRequest::token(token);
    let origin = client_ip(peer.ip(), &HttpHeaders(&headers), &verifier.trusted_proxies);
    let audit = audit::Request {
        endpoint: audit::Endpoint::TokenReview,
        client: Some(origin.nearest),
        end_user: None,
        user_agent: user_agent(&headers),
        action: None,
        resource: None,
    };
    // The API server chooses the audiences, not the token's holder: they name the namespaces.
    let namespaces = tenancy.for_review(&audiences);
    let verdict = verifier
        .check(&request, namespaces.view(), RouteKind::TokenReview, &audit)
        .await;
    let status = match (&verdict.found, verdict.code) {
        (Some(found), Code::Valid) => {
            let (user, audiences) = reviewed_user(found, audiences, tenancy);
            TokenReviewStatus {
                authenticated: Some(true),
                user: Some(user),
                audiences: (!audiences.is_empty())
                    .then(|| audiences.into_iter().map(str::to_owned).collect()),
                error: None,
            }
        }
        (_, code) => refused(code.as_str()),
    };
    tokenreview_answer(status)
}

/// The `extra` entry naming the key a personal key's user came from, for the API server's
/// audit log: `<namespace>/<name>`.
pub const EXTRA_APIKEY: &str = "keysmith.dev/apikey";
/// The `extra` entry with the id of the token presented.
pub const EXTRA_TOKEN_ID: &str = "keysmith.dev/token-id";
/// The `extra` entry with the key's environment.
pub const EXTRA_ENVIRONMENT: &str = "keysmith.dev/environment";

/// The user a valid token authenticates as for the granted `audiences`, and the audiences that
/// answer vouches for. Only the audiences that accept the key's namespace; a personal key is its
/// owner only for the audiences among them that opt in to personal keys
/// (`--token-review-personal-audiences`), and the answer then vouches for those alone, so an
/// API server that did not opt in never takes the owner's name from it. Otherwise the key's own
/// identity, `keysmith:<ns>:<name>:<slot>` in group `keysmith:<ns>`.
fn reviewed_user<'a>(
    found: &Found,
    audiences: Vec<&'a str>,
    tenancy: &Tenancy,
) -> (UserInfo, Vec<&'a str>) {
    let key = &found.key;
    let audiences: Vec<&str> = audiences
        .into_iter()
        .filter(|a| tenancy.of_audience(a).view().accepts(&key.namespace))
        .collect();
    let mut extra = BTreeMap::new();
    if let Some(env) = &key.environment {
        extra.insert(EXTRA_ENVIRONMENT.to_owned(), vec![env.clone()]);
    }
    let personal: Vec<&str> = audiences
        .iter()
        .copied()
        .filter(|a| tenancy.is_personal(a))
        .collect();
    if let Some(owner) = key.owner.as_deref().filter(|_| !personal.is_empty()) {
        extra.insert(EXTRA_APIKEY.to_owned(), vec![key.identity.clone()]);
        extra.insert(EXTRA_TOKEN_ID.to_owned(), vec![found.id.to_string()]);
        let user = UserInfo {
            username: Some(owner.username.to_string()),
            groups: Some(owner.groups.iter().map(ToString::to_string).collect()),
            extra: Some(extra),
            uid: None,
        };
        return (user, personal);
    }
    let user = UserInfo {
        username: Some(format!(
            "keysmith:{}:{}:{}",
            key.namespace,
            key.name,
            found.slot_name()
        )),
        groups: Some(vec![format!("keysmith:{}", key.namespace)]),
        extra: (!extra.is_empty()).then_some(extra),
        uid: None,
    };
    (user, audiences)
}

/// The audiences to grant a review that asks for `requested`: none when it asks none, else those
/// of them this verifier serves (`--token-review-audiences`, `--token-review-audience-namespaces`);
/// `None` when it asks only others.
fn accepted_audiences(requested: &[String], served: impl Fn(&String) -> bool) -> Option<Vec<&str>> {
    let granted: Vec<&str> = requested
        .iter()
        .filter(|audience| served(audience))
        .map(String::as_str)
        .collect();
    (requested.is_empty() || !granted.is_empty()).then_some(granted)
}

/// A review that does not authenticate, and why.
fn refused(error: &str) -> TokenReviewStatus {
    TokenReviewStatus {
        authenticated: Some(false),
        error: Some(error.to_owned()),
        ..TokenReviewStatus::default()
    }
}

/// The answer to a review: only `apiVersion`, `kind` and `status`, which is all the API server
/// reads (a typed `TokenReview` would echo an empty `metadata` and `spec`).
fn tokenreview_answer(status: TokenReviewStatus) -> Answer {
    json(
        StatusCode::OK,
        &serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "status": status,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape() {
        let body = parse_verify_body(
            br#"{"token":"t","action":"a","fields":null,"ip":"10.0.0.1","headers":{"X-A":"1"},"context":{"owner":"ns/k"},"extra":1}"#,
        )
        .unwrap();
        assert_eq!(body.token, "t");
        assert_eq!(body.ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(body.context.unwrap().owner.as_deref(), Some("ns/k"));
        for bad in [
            &b""[..],
            b"[]",
            b"{}",
            br#"{"token":1}"#,
            br#"{"token":"t","ip":"nope"}"#,
            br#"{"token":"t","fields":"x"}"#,
            b"\xff",
            b"{\"token\":\"t\",\"extra\":\"\xff\"}",
        ] {
            assert!(parse_verify_body(bad).is_err(), "{bad:?}");
        }
    }

    /// A body of `chunks` frames of `size` bytes each, with no declared length.
    fn streamed(
        chunks: usize,
        size: usize,
    ) -> Request<
        http_body_util::StreamBody<
            impl futures::Stream<Item = Result<hyper::body::Frame<Bytes>, std::io::Error>>,
        >,
    > {
        let frames =
            (0..chunks).map(move |_| Ok(hyper::body::Frame::data(Bytes::from(vec![b' '; size]))));
        Request::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
    }

    const LONG: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn bodies_are_read_up_to_the_limit_whatever_their_length_claims() {
        let (_, body) = read_body(streamed(4, MAX_BODY / 4), LONG).await.unwrap();
        assert_eq!(body.len(), MAX_BODY);
        let too_large = read_body(streamed(5, MAX_BODY / 4), LONG)
            .await
            .unwrap_err();
        assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // A declared length over the limit is refused before anything is read.
        let mut declared = streamed(1, 1);
        declared
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(MAX_BODY + 1));
        let refused = read_body(declared, LONG).await.unwrap_err();
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn bodies_in_several_frames_are_joined_in_order() {
        for parts in [&[][..], &["{}"], &["{\"to", "ken\":", "\"t\"}"]] {
            let frames = parts
                .iter()
                .map(|p| Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(*p))));
            let request = Request::new(http_body_util::StreamBody::new(futures::stream::iter(
                frames,
            )));
            let (_, body) = read_body(request, LONG).await.unwrap();
            assert_eq!(body, parts.concat());
        }
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_is_refused() {
        use futures::StreamExt;
        let frames = futures::stream::once(async {
            Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from_static(b"{")))
        })
        .chain(futures::stream::pending());
        let request = Request::new(http_body_util::StreamBody::new(frames));
        let read = tokio::time::timeout(
            Duration::from_secs(2),
            read_body(request, Duration::from_millis(100)),
        )
        .await
        .expect("the body read gives up at its timeout");
        assert_eq!(read.unwrap_err().status(), StatusCode::REQUEST_TIMEOUT);
    }

    #[test]
    fn bearer_or_api_key() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_token(&h), "");
        h.insert("x-api-key", HeaderValue::from_static("k1"));
        assert_eq!(presented_token(&h), "k1");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  k2 "),
        );
        assert_eq!(presented_token(&h), "k2");
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic xyz"));
        assert_eq!(presented_token(&h), "k1");
    }

    #[test]
    fn authz_query_only_on_the_exact_path() {
        let mut h = HeaderMap::new();
        h.insert("x-keysmith-action", HeaderValue::from_static("from-header"));
        let a = asked(Some("action=content.read&resource=a%3Ab&x=1"), &h);
        assert_eq!(a.action.as_deref(), Some("content.read"));
        assert_eq!(a.resource.as_deref(), Some("a:b"));
        // Below the route (Envoy), where the query is the client's: only the headers ask.
        let a = asked(None, &h);
        assert_eq!(a.action.as_deref(), Some("from-header"));
        assert_eq!(a.resource, None);
    }

    /// A verdict of `code` for the token of a key with metadata, grants and an expiry.
    fn verdict(code: Code) -> Verdict<'static> {
        verdict_of(code, None)
    }

    /// [`verdict`] for a key with `owner` (`spec.owner`), if any.
    fn verdict_of(code: Code, owner: Option<serde_json::Value>) -> Verdict<'static> {
        let mut apikey = serde_json::json!({
            "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "site", "namespace": "web"},
            "spec": {
                "environment": "production",
                "tokens": [{"name": "delivery", "prefix": "cms_",
                    "metadata": {"content": "published", "note": "say \"hi\"\n"}}],
                "grants": [{"effect": "allow", "actions": ["content.read", "content.list"]}],
            },
        });
        if let Some(owner) = owner {
            apikey["spec"]["owner"] = owner;
        }
        let apikey: keysmith_core::api::ApiKey = serde_json::from_value(apikey).unwrap();
        let (key, _) = super::super::key::KeyInfo::from_apikey(&apikey, &Default::default());
        let found = keysmith_core::verifier::index::Found {
            key: std::sync::Arc::new(key),
            slot: 0,
            status_position: 0,
            replaced: None,
            hash: keysmith_core::verifier::index::TokenHash::of("test"),
            id: "cms_abcdef".into(),
            expires_at: Some("2027-01-02T03:04:05.5Z".parse().unwrap()),
            usage: Default::default(),
            leaked: false,
        };
        Verdict {
            code,
            found: Some(found),
            token_id: Some("cms_abcdef"),
        }
    }

    #[test]
    fn verify_answers_carry_every_field_in_order() {
        let answer = |verdict: &Verdict<'_>| String::from_utf8(verify_response(verdict)).unwrap();
        assert_eq!(
            answer(&verdict(Code::Valid)),
            r#"{"valid":true,"code":"VALID","key":{"namespace":"web","name":"site","token":"delivery","id":"cms_abcdef"},"environment":"production","expiresAt":"2027-01-02T03:04:05.5Z","metadata":{"content":"published","note":"say \"hi\"\n"},"permissions":["content.read","content.list"]}"#
        );
        // Metadata and permissions only for a valid token.
        assert_eq!(
            answer(&verdict(Code::Forbidden)),
            r#"{"valid":false,"code":"FORBIDDEN","key":{"namespace":"web","name":"site","token":"delivery","id":"cms_abcdef"},"environment":"production","expiresAt":"2027-01-02T03:04:05.5Z","metadata":{}}"#
        );
        let not_found = Verdict {
            code: Code::NotFound,
            found: None,
            token_id: Some("cms_abcdef"),
        };
        assert_eq!(
            answer(&not_found),
            r#"{"valid":false,"code":"NOT_FOUND","key":null,"environment":null,"expiresAt":null,"metadata":{}}"#
        );
    }

    fn alice() -> Option<serde_json::Value> {
        Some(serde_json::json!({"username": "alice", "groups": ["dev-team", "on-call"]}))
    }

    #[test]
    fn personal_keys_report_their_owner_in_verify_and_authz_answers() {
        let answer = String::from_utf8(verify_response(&verdict_of(Code::Valid, alice()))).unwrap();
        assert!(
            answer.contains(r#""id":"cms_abcdef","owner":{"username":"alice","groups":["dev-team","on-call"]}},"#),
            "{answer}"
        );
        let authz = authz_response(&verdict_of(Code::Valid, alice()));
        assert_eq!(authz.headers()[X_KEYSMITH_OWNER], "alice");
        // Empty for any other key, so a client's own X-Keysmith-Owner never passes upstream.
        let authz = authz_response(&verdict(Code::Valid));
        assert_eq!(authz.headers()[X_KEYSMITH_OWNER], "");
        let answer = String::from_utf8(verify_response(&verdict(Code::Valid))).unwrap();
        assert!(!answer.contains("owner"), "{answer}");
    }

    /// The API server of `personal` opts in; `shared` does not; both accept namespace `web`,
    /// `elsewhere` accepts another.
    fn tenancy() -> Tenancy {
        Tenancy::parse("", &["personal=web", "shared=web", "elsewhere=other"])
            .unwrap()
            .with_personal_audiences(&["personal".into()])
            .unwrap()
    }

    fn review(
        owner: Option<serde_json::Value>,
        audiences: &[&'static str],
    ) -> (UserInfo, Vec<&'static str>) {
        let verdict = verdict_of(Code::Valid, owner);
        reviewed_user(
            verdict.found.as_ref().unwrap(),
            audiences.to_vec(),
            &tenancy(),
        )
    }

    #[test]
    fn a_personal_key_is_its_owner_only_for_audiences_that_opt_in() {
        let (user, audiences) = review(alice(), &["personal", "shared", "elsewhere"]);
        assert_eq!(user.username.as_deref(), Some("alice"));
        assert_eq!(user.groups.unwrap(), ["dev-team", "on-call"]);
        let extra = user.extra.unwrap();
        assert_eq!(extra[EXTRA_APIKEY], ["web/site"]);
        assert_eq!(extra[EXTRA_TOKEN_ID], ["cms_abcdef"]);
        assert_eq!(extra[EXTRA_ENVIRONMENT], ["production"]);
        // The owner's name is vouched for to the opted-in API server alone.
        assert_eq!(audiences, ["personal"]);

        for asked in [&["shared", "elsewhere"][..], &[]] {
            let (user, _) = review(alice(), asked);
            assert_eq!(user.username.as_deref(), Some("keysmith:web:site:delivery"));
            assert_eq!(user.groups.unwrap(), ["keysmith:web"]);
            assert!(!user.extra.unwrap().contains_key(EXTRA_APIKEY));
        }
        let (_, audiences) = review(alice(), &["shared", "elsewhere"]);
        assert_eq!(audiences, ["shared"]);
    }

    #[test]
    fn an_ordinary_key_answers_as_itself_for_every_audience() {
        for asked in [&["personal"][..], &["shared"], &["personal", "shared"], &[]] {
            let (user, audiences) = review(None, asked);
            assert_eq!(
                user.username.as_deref(),
                Some("keysmith:web:site:delivery"),
                "{asked:?}"
            );
            assert_eq!(user.groups.unwrap(), ["keysmith:web"]);
            assert_eq!(audiences, asked);
        }
    }

    #[test]
    fn only_mapped_audiences_opt_in_to_personal_keys() {
        let mapped = Tenancy::parse("", &["api=web"]).unwrap();
        let err = mapped
            .clone()
            .with_personal_audiences(&["other".into()])
            .unwrap_err();
        assert!(err.contains("--token-review-personal-audiences"), "{err}");
        assert!(err.contains("\"other\""), "{err}");
        let opted = mapped
            .with_personal_audiences(&["api".into(), "api".into()])
            .unwrap();
        assert_eq!(opted.personal, ["api"]);
        assert!(opted.is_personal("api") && !opted.is_personal("other"));
    }

    #[test]
    fn query_pairs_decode_as_form_urlencoded_does() {
        for query in [
            "",
            "action=content.read&resource=content:pages:home",
            "a=1&&b&=c&d=e=f&",
            "act%69on=x+y&resource=%F0%9F%A6%80%zz%ff&+=+",
            "&&x%3Dy=1",
        ] {
            let ours: Vec<_> = query_pairs(query).collect();
            let theirs: Vec<_> = form_urlencoded::parse(query.as_bytes()).collect();
            assert_eq!(ours, theirs, "{query:?}");
        }
    }

    #[test]
    fn only_served_audiences_are_granted() {
        let served = ["keysmith".to_owned(), "https://api.example".to_owned()];
        let asked = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let serves = |a: &String| served.contains(a);
        let none = |_: &String| false;
        assert_eq!(accepted_audiences(&[], serves), Some(vec![]));
        assert_eq!(accepted_audiences(&[], none), Some(vec![]));
        let both = asked(&["https://kubernetes.default.svc", "keysmith"]);
        assert_eq!(accepted_audiences(&both, serves), Some(vec!["keysmith"]));
        let other = asked(&["https://kubernetes.default.svc"]);
        assert_eq!(accepted_audiences(&other, serves), None);
        assert_eq!(accepted_audiences(&other, none), None);
    }

    fn verifier() -> Verifier {
        let (usage, _) = super::super::usage::UsageReporter::channel();
        Verifier::new(
            &super::super::Options::default(),
            usage,
            &mut prometheus_client::registry::Registry::default(),
        )
    }

    fn post(path: &str, body: serde_json::Value) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(Bytes::from(body.to_string())));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = path.parse().unwrap();
        request
    }

    /// How long `n` failed verifications from one peer took.
    async fn time_failures(n: u8, request: impl Fn(u8) -> Request<Full<Bytes>>) -> Duration {
        let verifier = verifier();
        let peer: SocketAddr = "203.0.113.50:40000".parse().unwrap();
        let start = std::time::Instant::now();
        for i in 0..n {
            let answer = handle(&verifier, peer, request(i)).await;
            assert_eq!(answer.status(), StatusCode::OK);
        }
        start.elapsed()
    }

    #[tokio::test]
    async fn failures_are_throttled_on_the_peer_whatever_address_the_body_names() {
        // 20 pass at once; each of the next 3 waits about 0.2 s (the bucket refills meanwhile).
        let took = time_failures(23, |i| {
            post(
                "/v1/verify",
                serde_json::json!({"token": "ks_nope", "ip": format!("198.51.100.{i}")}),
            )
        })
        .await;
        assert!(took >= Duration::from_millis(500), "{took:?}");
    }

    #[tokio::test]
    async fn tokenreview_failures_are_throttled() {
        let took = time_failures(23, |_| {
            post(
                TOKENREVIEW_PATH,
                serde_json::json!({"kind": "TokenReview", "spec": {"token": "ks_nope"}}),
            )
        })
        .await;
        assert!(took >= Duration::from_millis(500), "{took:?}");
    }

    /// A key of namespace `ns` whose grants allow `*` after `patterns` deny patterns, indexed
    /// into `verifier`; returns its token.
    fn index_key_with_patterns(verifier: &Verifier, ns: &str, patterns: usize) -> String {
        let token =
            crate::token::Token::generate("ks_", 32, crate::api::Encoding::Base62).expect("token");
        // Grants of at most 32 patterns each, as validation admits.
        let deny: Vec<String> = (0..patterns).map(|i| format!("*{i:03}x*")).collect();
        let mut grants: Vec<serde_json::Value> = deny
            .chunks(32)
            .map(|actions| serde_json::json!({"effect": "deny", "actions": actions}))
            .collect();
        grants.push(serde_json::json!({"effect": "allow", "actions": ["*"]}));
        let apikey: crate::api::ApiKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "key", "namespace": ns},
            "spec": {"tokens": [{"name": "a"}], "grants": grants},
            "status": {"tokens": [{"name": "a", "id": token.id(), "sha256": token.sha256_hex(),
                "issuedAt": "2026-11-01T00:00:00Z"}]},
        }))
        .expect("ApiKey");
        verifier.index.apply(&apikey, (verifier.clock)());
        token.expose_secret().to_owned()
    }

    /// Issue 27, N3: the most expensive decisions an author's grants allow answer `VALID`, so
    /// the failure throttle never sees them; past its namespace's budget each of them waits,
    /// while another namespace's ordinary decisions are never charged. (A budget of 5 at once,
    /// then 1 a second, each wait at most 10 ms: 15 waits take at least 100 ms together.)
    #[tokio::test]
    async fn costly_decisions_wait_past_their_namespace_budget_and_others_do_not() {
        use super::super::throttle::{Throttle, ThrottleConfig};
        let mut verifier = verifier();
        verifier.costly = Throttle::new(ThrottleConfig {
            burst: 5,
            refill_per_sec: 1,
            max_delay: Duration::from_millis(10),
            max_addresses: 100,
        });
        verifier.tenancy = super::super::tenancy::Tenancy::parse("*", &[]).expect("tenancy");
        let costly = index_key_with_patterns(&verifier, "tenant-b", 127);
        let cheap = index_key_with_patterns(&verifier, "tenant-a", 3);
        let action = "a".repeat(keysmith_core::grants::MAX_ACTION_LEN);
        let peer: SocketAddr = "203.0.113.60:40000".parse().unwrap();
        let run = |token: String| {
            let (verifier, action) = (&verifier, action.clone());
            async move {
                let start = std::time::Instant::now();
                for _ in 0..20 {
                    let body = serde_json::json!({"token": token, "action": action});
                    let answer = handle(verifier, peer, post("/v1/verify", body)).await;
                    let body = answer.into_body().collect().await.unwrap().to_bytes();
                    let code: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(code["code"], "VALID", "{code}");
                }
                start.elapsed()
            }
        };
        run(cheap).await;
        assert_eq!(
            verifier.costly.tracked(),
            0,
            "ordinary decisions are never charged"
        );
        let waited = run(costly).await;
        assert_eq!(verifier.costly.tracked(), 1, "one namespace charged");
        assert!(
            waited >= Duration::from_millis(100),
            "15 costly decisions past a burst of 5 wait 10 ms each: {waited:?}"
        );
    }
}
