//! The leak-report endpoint (SPEC 4.6), off unless configured: `POST /v1/leaks/github` takes
//! GitHub's secret scanning partner format, signed with a key of `--leak-report-github-keys-file`;
//! `POST /v1/leaks` takes a plain report with the bearer secret of `--leak-report-token-file`.
//! `POST /v1/leaks/trufflehog-verify`, with the same secret, is TruffleHog's custom-detector
//! verification webhook: it only answers whether a candidate is a live token, and acts on nothing.
//!
//! For each reported token the index holds, the verifier sets `leak` on the token's entry in
//! status (a JSON Patch guarded by a `test` of the token's hash there, as the usage write-back
//! does); the controller applies the key's `leakResponse`, and the index refuses the token as
//! soon as the record comes back through the watch. Tokens are hashed on arrival and never
//! logged: the answer, the audit line and the metrics name no key, and the answer carries only
//! the token's hash (GitHub) or its public id (plain).
//!
//! A body is at most [`MAX_REPORT_BODY`] bytes and [`MAX_REPORT_TOKENS`] tokens. The digests of
//! the reports received in the last [`REPLAY_WINDOW`] (at most [`MAX_REMEMBERED`]) are kept: a
//! repeat gets the first answer again and changes nothing.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use hyper::StatusCode;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{Patch, PatchParams};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use keysmith_core::api::{ApiKey, Leak, MAX_LEAK_SOURCE_LEN};
use keysmith_core::planner::timing::whole_seconds;
use keysmith_core::verifier::decision::{Code, VerifyRequest};
use keysmith_core::verifier::index::{Found, Index, TokenHash};

use super::Verifier;
use super::http::{Answer, error, json};
use super::usage::{FIELD_MANAGER, StatusEntry};

/// Path of GitHub's secret scanning partner reports.
pub const GITHUB_PATH: &str = "/v1/leaks/github";
/// Path of plain reports (`keysmith report-leak`).
pub const PLAIN_PATH: &str = "/v1/leaks";
/// Path of TruffleHog's verification webhook (`keysmith scan-rules --format trufflehog
/// --verify-url`).
pub const TRUFFLEHOG_PATH: &str = "/v1/leaks/trufflehog-verify";
/// Largest report body (413 beyond).
pub const MAX_REPORT_BODY: usize = 64 * 1024;
/// Most tokens in one report (413 beyond).
pub const MAX_REPORT_TOKENS: usize = 100;
/// How long a report is remembered, so that a repeat changes nothing.
pub const REPLAY_WINDOW: SignedDuration = SignedDuration::from_hours(24);
/// Most reports remembered; the oldest are forgotten first.
pub const MAX_REMEMBERED: usize = 10_000;
/// Shortest bearer secret accepted in `--leak-report-token-file`.
pub const MIN_SECRET_LEN: usize = 16;

const GITHUB_KEY_ID: HeaderName = HeaderName::from_static("github-public-key-identifier");
const GITHUB_SIGNATURE: HeaderName = HeaderName::from_static("github-public-key-signature");

/// The DER header of a P-256 public key's SubjectPublicKeyInfo, before its 65-byte point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Which report format a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// GitHub's secret scanning partner format, signed.
    Github,
    /// `{"tokens": [...], "source"?}` with a bearer secret.
    Plain,
    /// TruffleHog's `{"<detector>": {"<regex name>": ["<match>", ...]}}` with the same secret:
    /// a question, not a report.
    Trufflehog,
}

impl Format {
    /// The format a path names, if it is a leak-report path.
    pub fn of_path(path: &str) -> Option<Format> {
        match path {
            GITHUB_PATH => Some(Format::Github),
            PLAIN_PATH => Some(Format::Plain),
            TRUFFLEHOG_PATH => Some(Format::Trufflehog),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Format::Github => "github",
            Format::Plain => "plain",
            Format::Trufflehog => "trufflehog",
        }
    }
}

/// The formats that report leaks (and act), as against TruffleHog's question.
#[derive(Clone, Copy)]
enum Report {
    Github,
    Plain,
}

/// Why the leak-report configuration did not load.
#[derive(Debug, thiserror::Error)]
pub enum LeakConfigError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The GitHub keys file is not in the shape GitHub publishes them.
    #[error(
        "{path}: {reason}; save the JSON of GitHub's secret scanning public keys endpoint \
         (`{{\"public_keys\": [{{\"key_identifier\", \"key\"}}]}}`, ECDSA P-256 keys in PEM)"
    )]
    GithubKeys {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The bearer secret is too short to resist guessing.
    #[error("{path}: the report secret must be at least {MIN_SECRET_LEN} characters long")]
    WeakSecret {
        /// The file.
        path: PathBuf,
    },
}

/// One of GitHub's signing keys.
#[derive(Clone)]
struct GithubKey {
    id: String,
    /// The uncompressed P-256 point.
    point: Vec<u8>,
}

/// What authenticates reports: GitHub's public keys and the plain reports' secret (as its
/// SHA-256, so the secret itself is not kept).
#[derive(Clone, Default)]
pub struct LeakConfig {
    github: Vec<GithubKey>,
    secret_sha256: Option<[u8; 32]>,
}

impl std::fmt::Debug for LeakConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeakConfig")
            .field(
                "github_keys",
                &self.github.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .field("plain", &self.secret_sha256.is_some())
            .finish()
    }
}

#[derive(Deserialize)]
struct PublishedKeys {
    public_keys: Vec<PublishedKey>,
}

#[derive(Deserialize)]
struct PublishedKey {
    key_identifier: String,
    key: String,
}

impl LeakConfig {
    /// Load `--leak-report-github-keys-file` and `--leak-report-token-file`; `None` when neither
    /// is given (the endpoint is off).
    pub fn load(
        github_keys: Option<&Path>,
        token: Option<&Path>,
    ) -> Result<Option<LeakConfig>, LeakConfigError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| LeakConfigError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let mut config = LeakConfig::default();
        if let Some(path) = github_keys {
            config.github =
                parse_github_keys(&read(path)?).map_err(|reason| LeakConfigError::GithubKeys {
                    path: path.to_owned(),
                    reason,
                })?;
        }
        if let Some(path) = token {
            let secret = String::from_utf8_lossy(&read(path)?).trim().to_owned();
            config = config
                .with_secret(&secret)
                .ok_or_else(|| LeakConfigError::WeakSecret {
                    path: path.to_owned(),
                })?;
        }
        Ok((github_keys.is_some() || token.is_some()).then_some(config))
    }

    /// A configuration from GitHub's public-keys JSON (tests build one with their own key).
    pub fn from_github_keys(json: &[u8]) -> Result<LeakConfig, String> {
        Ok(LeakConfig {
            github: parse_github_keys(json)?,
            secret_sha256: None,
        })
    }

    /// This configuration, also accepting plain reports with `secret`; `None` when it is too
    /// short.
    pub fn with_secret(self, secret: &str) -> Option<LeakConfig> {
        (secret.len() >= MIN_SECRET_LEN).then(|| LeakConfig {
            secret_sha256: Some(Sha256::digest(secret.as_bytes()).into()),
            ..self
        })
    }

    /// Whether `body` carries a valid signature by the GitHub key `key_id`.
    fn github_signed(&self, key_id: &[u8], signature: &[u8], body: &[u8]) -> bool {
        let Some(key) = self.github.iter().find(|k| k.id.as_bytes() == key_id) else {
            return false;
        };
        let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(signature) else {
            return false;
        };
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &key.point)
            .verify(body, &signature)
            .is_ok()
    }

    /// Whether `authorization` is `Bearer <the secret>`.
    /// Whether `format` is served: its credential is configured.
    fn serves(&self, format: Format) -> bool {
        match format {
            Format::Github => !self.github.is_empty(),
            Format::Plain | Format::Trufflehog => self.secret_sha256.is_some(),
        }
    }

    fn bearer(&self, authorization: Option<&[u8]>) -> bool {
        let presented = authorization.and_then(|v| v.strip_prefix(b"Bearer "));
        // Digests are compared, not the secret: how much of them matches tells a caller nothing
        // about the secret.
        match (presented, &self.secret_sha256) {
            (Some(presented), Some(expected)) => Sha256::digest(presented).as_slice() == expected,
            _ => false,
        }
    }
}

fn parse_github_keys(json: &[u8]) -> Result<Vec<GithubKey>, String> {
    let published: PublishedKeys = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    if published.public_keys.is_empty() {
        return Err("no public_keys".into());
    }
    published
        .public_keys
        .into_iter()
        .map(|k| {
            let der = SubjectPublicKeyInfoDer::from_pem_slice(k.key.as_bytes())
                .map_err(|e| format!("key {}: not a PEM public key: {e}", k.key_identifier))?;
            let point = der
                .as_ref()
                .strip_prefix(&P256_SPKI_PREFIX[..])
                .filter(|p| p.len() == 65)
                .ok_or_else(|| format!("key {}: not an ECDSA P-256 key", k.key_identifier))?;
            Ok(GithubKey {
                id: k.key_identifier,
                point: point.to_vec(),
            })
        })
        .collect()
}

/// One match in GitHub's format.
#[derive(Deserialize)]
struct GithubMatch {
    token: String,
    #[serde(rename = "type", default)]
    type_: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

/// GitHub's answer for one match: its hash (never the token) and whether it is one of ours.
#[derive(Serialize)]
struct GithubLabel<'a> {
    token_hash: String,
    token_type: &'a str,
    label: &'static str,
}

/// A plain report.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainReport {
    tokens: Vec<String>,
    #[serde(default)]
    source: Option<String>,
}

/// The plain answer for one token, in report order.
#[derive(Serialize)]
struct PlainResult<'a> {
    /// The token's public id, when it is well-formed.
    id: Option<&'a str>,
    /// Whether it is a token the verifier knows.
    keysmith: bool,
}

/// The remembered reports: their digests and which of their tokens were Keysmith's.
#[derive(Default)]
struct Replays {
    answers: HashMap<[u8; 32], Option<Arc<[bool]>>>,
    order: VecDeque<([u8; 32], Timestamp)>,
}

/// What [`Replays::claim`] found.
enum Claim {
    /// Not seen: the caller acts and then calls [`Replays::answered`].
    First,
    /// Seen and answered.
    Answered(Arc<[bool]>),
    /// Seen and still being processed.
    Pending,
}

impl Replays {
    fn claim(&mut self, digest: [u8; 32], now: Timestamp) -> Claim {
        while let Some(&(old, at)) = self.order.front() {
            if at + REPLAY_WINDOW > now && self.order.len() < MAX_REMEMBERED {
                break;
            }
            self.order.pop_front();
            self.answers.remove(&old);
        }
        match self.answers.get(&digest) {
            Some(Some(known)) => Claim::Answered(known.clone()),
            Some(None) => Claim::Pending,
            None => {
                self.answers.insert(digest, None);
                self.order.push_back((digest, now));
                Claim::First
            }
        }
    }

    fn answered(&mut self, digest: [u8; 32], known: Arc<[bool]>) {
        if let Some(slot) = self.answers.get_mut(&digest) {
            *slot = Some(known);
        }
    }

    /// Forget a claim that was never answered, so the report can be sent again.
    fn abandoned(&mut self, digest: [u8; 32]) {
        if self.answers.get(&digest).is_some_and(Option::is_none) {
            self.answers.remove(&digest);
        }
    }
}

/// A [`Claim::First`] being processed. Dropped unanswered (the client went away and the request
/// was cancelled mid-way), it is forgotten, or a retry would get `409` for the whole window.
struct Processing<'a> {
    replays: &'a Mutex<Replays>,
    digest: [u8; 32],
}

impl Processing<'_> {
    fn answered(self, known: Arc<[bool]>) {
        lock(self.replays).answered(self.digest, known);
    }
}

impl Drop for Processing<'_> {
    fn drop(&mut self) {
        lock(self.replays).abandoned(self.digest);
    }
}

fn lock(replays: &Mutex<Replays>) -> std::sync::MutexGuard<'_, Replays> {
    replays.lock().unwrap_or_else(|e| e.into_inner())
}

/// `keysmith_leak_reports_total{format, outcome}` and `keysmith_leaked_tokens_total{response}`.
struct LeakMetrics {
    reports: Family<[(&'static str, &'static str); 2], Counter>,
    tokens: Family<[(&'static str, &'static str); 1], Counter>,
    candidates: Family<[(&'static str, &'static str); 1], Counter>,
}

/// The endpoint's state: configuration, remembered reports, metrics and the client it writes
/// status with.
pub struct LeakEndpoint {
    config: LeakConfig,
    client: kube::Client,
    replays: Mutex<Replays>,
    metrics: LeakMetrics,
}

/// One reported token, as found.
struct Reported<'a> {
    token: &'a str,
    source: Option<&'a str>,
    found: Option<Found>,
}

impl LeakEndpoint {
    /// Whether this endpoint serves `format`; a format without its credential is not there at
    /// all (404, like any unknown path), rather than refusing every caller.
    pub fn serves(&self, format: Format) -> bool {
        self.config.serves(format)
    }

    /// The endpoint for `config`, writing with `client`; registers its metrics in `registry`.
    pub fn new(config: LeakConfig, client: kube::Client, registry: &mut Registry) -> LeakEndpoint {
        let metrics = LeakMetrics {
            reports: Family::default(),
            tokens: Family::default(),
            candidates: Family::default(),
        };
        registry.register(
            "leak_reports",
            "Leak reports received, by format and outcome (accepted, replayed, unauthenticated, invalid)",
            metrics.reports.clone(),
        );
        registry.register(
            "leaked_tokens",
            "Reported tokens found by hash and recorded as leaked, by the key's leakResponse",
            metrics.tokens.clone(),
        );
        registry.register(
            "trufflehog_candidates",
            "Candidates TruffleHog asked about, by answer (live, not-live)",
            metrics.candidates.clone(),
        );
        LeakEndpoint {
            config,
            client,
            replays: Mutex::default(),
            metrics,
        }
    }

    fn count(&self, format: Format, outcome: &'static str) {
        self.metrics
            .reports
            .get_or_create(&[("format", format.as_str()), ("outcome", outcome)])
            .inc();
    }

    /// Answer one report whose headers and body were read.
    pub async fn handle(
        &self,
        verifier: &Verifier,
        format: Format,
        client: Option<IpAddr>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Answer {
        let report = match format {
            Format::Github => Report::Github,
            Format::Plain => Report::Plain,
            Format::Trufflehog => return self.trufflehog(verifier, client, headers, body).await,
        };
        let authenticated = match report {
            Report::Github => {
                let (Some(id), Some(signature)) =
                    (headers.get(GITHUB_KEY_ID), headers.get(GITHUB_SIGNATURE))
                else {
                    self.count(format, "unauthenticated");
                    return error(
                        StatusCode::UNAUTHORIZED,
                        "send the Github-Public-Key-Identifier and Github-Public-Key-Signature headers"
                            .into(),
                    );
                };
                self.config
                    .github_signed(id.as_bytes(), signature.as_bytes(), body)
            }
            Report::Plain => self.config.bearer(
                headers
                    .get(header::AUTHORIZATION)
                    .map(HeaderValue::as_bytes),
            ),
        };
        if !authenticated {
            self.count(format, "unauthenticated");
            let why = match report {
                Report::Github => "the signature does not verify with a configured GitHub key",
                Report::Plain => BEARER_MISSING,
            };
            return error(StatusCode::UNAUTHORIZED, why.into());
        }
        let parsed = match report {
            Report::Github => serde_json::from_slice::<Vec<GithubMatch>>(body)
                .map(|m| m.into_iter().map(Entry::Github).collect::<Vec<_>>()),
            Report::Plain => serde_json::from_slice::<PlainReport>(body).map(|r| {
                let source = r.source;
                r.tokens
                    .into_iter()
                    .map(|token| Entry::Plain(token, source.clone()))
                    .collect()
            }),
        };
        let entries = match parsed {
            Ok(entries) => entries,
            Err(err) => {
                self.count(format, "invalid");
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not a {} leak report: {err}", format.as_str()),
                );
            }
        };
        if entries.len() > MAX_REPORT_TOKENS {
            self.count(format, "invalid");
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("report at most {MAX_REPORT_TOKENS} tokens at once"),
            );
        }

        let now = (verifier.clock)();
        let mut digest = Sha256::new();
        digest.update(format.as_str().as_bytes());
        digest.update(body);
        let digest: [u8; 32] = digest.finalize().into();
        let claim = lock(&self.replays).claim(digest, now);
        let known: Arc<[bool]> = match claim {
            Claim::Answered(known) => {
                self.count(format, "replayed");
                known
            }
            Claim::Pending => {
                self.count(format, "replayed");
                return error(
                    StatusCode::CONFLICT,
                    "the same report is being processed; send it again in a moment".into(),
                );
            }
            Claim::First => {
                self.count(format, "accepted");
                let processing = Processing {
                    replays: &self.replays,
                    digest,
                };
                let mut known = Vec::with_capacity(entries.len());
                for entry in &entries {
                    let reported = Reported {
                        token: entry.token(),
                        source: entry.source(),
                        found: verifier
                            .index
                            .verify(&VerifyRequest::token(entry.token()), now)
                            .found,
                    };
                    self.record(&verifier.index, format, &reported, client, now)
                        .await;
                    known.push(reported.found.is_some());
                }
                let known: Arc<[bool]> = known.into();
                processing.answered(known.clone());
                known
            }
        };
        answer(report, &entries, &known)
    }

    /// TruffleHog's verification webhook: `200` when a candidate is a token the index holds
    /// that still verifies (whatever its key; the answer names none), else `403`. Nothing is
    /// recorded in status; each candidate gets an audit line and a count, and each request that
    /// does not authenticate and each candidate that is not live costs the caller's address a
    /// failure in the verifier's throttle, as a failed verification does.
    async fn trufflehog(
        &self,
        verifier: &Verifier,
        client: Option<IpAddr>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Answer {
        let format = Format::Trufflehog;
        let authorization = headers.get(header::AUTHORIZATION);
        if !self.config.bearer(authorization.map(HeaderValue::as_bytes)) {
            self.count(format, "unauthenticated");
            throttle(verifier, client).await;
            return error(StatusCode::UNAUTHORIZED, BEARER_MISSING.into());
        }
        let detectors = match serde_json::from_slice::<TrufflehogBody>(body) {
            Ok(detectors) => detectors,
            Err(err) => {
                self.count(format, "invalid");
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the body is not TruffleHog's {{\"<detector>\": {{\"token\": [...]}}}}: {err}"
                    ),
                );
            }
        };
        let candidates: Vec<&str> = detectors
            .values()
            .flat_map(|groups| groups.values().flatten())
            .map(String::as_str)
            .collect();
        if candidates.len() > MAX_REPORT_TOKENS {
            self.count(format, "invalid");
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("ask about at most {MAX_REPORT_TOKENS} candidates at once"),
            );
        }
        self.count(format, "accepted");
        let now = (verifier.clock)();
        let mut any_live = false;
        for candidate in candidates {
            let verdict = verifier.index.verify(&VerifyRequest::token(candidate), now);
            // Live: it would verify where its key's restrictions hold. An allow-list or a
            // required header this question cannot meet does not make a leaked token harmless.
            let live = verdict.found.is_some()
                && !matches!(verdict.code, Code::Expired | Code::Revoked | Code::Disabled);
            let answer = if live { "live" } else { "not-live" };
            self.metrics
                .candidates
                .get_or_create(&[("answer", answer)])
                .inc();
            audit(
                format,
                answer,
                verdict.found.as_ref(),
                verdict.token_id.unwrap_or(""),
                client,
                "",
            );
            if !live {
                throttle(verifier, client).await;
            }
            any_live |= live;
        }
        if any_live {
            json(StatusCode::OK, &serde_json::json!({ "verified": true }))
        } else {
            json(
                StatusCode::FORBIDDEN,
                &serde_json::json!({ "verified": false }),
            )
        }
    }

    /// Record one reported token: the leak in status (when the index knows it and status does
    /// not hold a report for it yet), the metric and the audit line. The ApiKey the write returns
    /// goes into `index` at once, so the token is refused before the watch brings it back.
    async fn record(
        &self,
        index: &Index,
        format: Format,
        reported: &Reported<'_>,
        client: Option<IpAddr>,
        now: Timestamp,
    ) {
        let token_id = public_id(reported.token);
        let outcome = match &reported.found {
            None => "unknown",
            Some(found) if found.leaked => "already-reported",
            Some(found) => match self.write(found, reported.source, now).await {
                Ok(apikey) => {
                    index.apply(&apikey, now);
                    let response = found.key.leak_response.as_str();
                    self.metrics
                        .tokens
                        .get_or_create(&[("response", response)])
                        .inc();
                    "recorded"
                }
                Err(err) => {
                    tracing::warn!(key = %found.key.identity, token_id = %found.id,
                        error = %err, "leak report not recorded in status");
                    "not-recorded"
                }
            },
        };
        audit(
            format,
            outcome,
            reported.found.as_ref(),
            token_id.as_deref().unwrap_or(""),
            client,
            &super::audit::clean(reported.source),
        );
    }

    /// Set `leak` on the token's entry, guarded by its hash there.
    async fn write(
        &self,
        found: &Found,
        source: Option<&str>,
        now: Timestamp,
    ) -> kube::Result<ApiKey> {
        let entry = StatusEntry {
            position: found.status_position,
            replaced: found.replaced,
            sha256: found.hash.to_hex(),
        };
        let leak = Leak {
            reported_at: Time(whole_seconds(now)),
            source: source.map(bounded_source).filter(|s| !s.is_empty()),
            handled_at: None,
        };
        let api: Api<ApiKey> = Api::namespaced(self.client.clone(), &found.key.namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let patch = Patch::Json::<()>(leak_patch(&entry, &leak));
        api.patch_status(&found.key.name, &params, &patch).await
    }
}

/// One audit line about a reported or asked-about token: which key it is (for the operator's
/// log; never in the answer), its public id, never the token.
fn audit(
    format: Format,
    outcome: &str,
    found: Option<&Found>,
    token_id: &str,
    client: Option<IpAddr>,
    source: &str,
) {
    crate::telemetry::write_audit_line("leak report", |line| {
        line.str("format", format.as_str());
        line.str("outcome", outcome);
        line.str("key", found.map_or("", |f| f.key.identity.as_str()));
        line.str("token", found.map_or("", |f| f.slot_name()));
        line.str("token_id", token_id);
        line.ip("client", client);
        line.str("source", source);
    });
}

/// What a caller without the bearer secret is told.
const BEARER_MISSING: &str = "send Authorization: Bearer <the report secret>";

/// TruffleHog's verification body: detector name to regex name to matches.
type TrufflehogBody = HashMap<String, HashMap<String, Vec<String>>>;

/// Delay the answer to `client` by what one more failure costs it in the verifier's throttle.
async fn throttle(verifier: &Verifier, client: Option<IpAddr>) {
    let Some(client) = client else { return };
    let delay = verifier
        .throttle
        .on_failure(client, std::time::Instant::now());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// The JSON Patch that records `leak` on `entry`, which must still hold its token.
pub fn leak_patch(entry: &StatusEntry, leak: &Leak) -> json_patch::Patch {
    use json_patch::{AddOperation, PatchOperation, TestOperation};
    json_patch::Patch(vec![
        PatchOperation::Test(TestOperation {
            path: entry.field("sha256"),
            value: entry.sha256.as_str().into(),
        }),
        PatchOperation::Add(AddOperation {
            path: entry.field("leak"),
            // Serializing a Leak cannot fail.
            value: serde_json::to_value(leak).unwrap_or_default(),
        }),
    ])
}

/// A report's source as status keeps it: without control characters, at most
/// [`MAX_LEAK_SOURCE_LEN`] characters.
fn bounded_source(source: &str) -> String {
    source
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_LEAK_SOURCE_LEN)
        .collect()
}

/// One reported token of either format.
enum Entry {
    Github(GithubMatch),
    Plain(String, Option<String>),
}

impl Entry {
    fn token(&self) -> &str {
        match self {
            Entry::Github(m) => &m.token,
            Entry::Plain(token, _) => token,
        }
    }

    /// The secret type GitHub named (none in a plain report).
    fn type_(&self) -> &str {
        match self {
            Entry::Github(m) => &m.type_,
            Entry::Plain(..) => "",
        }
    }

    /// Where it was found: GitHub's `url` (else its `source`, the kind of place), or the plain
    /// report's `source`.
    fn source(&self) -> Option<&str> {
        match self {
            Entry::Github(m) => m.url.as_deref().or(m.source.as_deref()),
            Entry::Plain(_, source) => source.as_deref(),
        }
    }
}

fn answer(report: Report, entries: &[Entry], known: &[bool]) -> Answer {
    match report {
        Report::Github => {
            let labels: Vec<GithubLabel> = entries
                .iter()
                .zip(known)
                .map(|(entry, &known)| GithubLabel {
                    token_hash: TokenHash::of(entry.token()).to_hex(),
                    token_type: entry.type_(),
                    label: if known {
                        "true_positive"
                    } else {
                        "false_positive"
                    },
                })
                .collect();
            json(StatusCode::OK, &labels)
        }
        Report::Plain => {
            let ids: Vec<Option<String>> = entries.iter().map(|e| public_id(e.token())).collect();
            let results: Vec<PlainResult> = ids
                .iter()
                .zip(known)
                .map(|(id, &keysmith)| PlainResult {
                    id: id.as_deref(),
                    keysmith,
                })
                .collect();
            json(StatusCode::OK, &serde_json::json!({ "results": results }))
        }
    }
}

/// The public id of a well-formed token.
fn public_id(token: &str) -> Option<String> {
    keysmith_core::token::validate(token)
        .ok()
        .map(|t| t.id().to_owned())
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    use super::*;

    /// A P-256 key pair, and GitHub's public-keys JSON naming its public key `id`.
    fn github_key(id: &str) -> (EcdsaKeyPair, String) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let spki = [&P256_SPKI_PREFIX[..], pair.public_key().as_ref()].concat();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(spki)
        );
        let json = serde_json::json!({
            "public_keys": [{"key_identifier": id, "key": pem, "is_current": true}]
        });
        (pair, json.to_string())
    }

    fn sign(pair: &EcdsaKeyPair, body: &[u8]) -> Vec<u8> {
        let signature = pair.sign(&SystemRandom::new(), body).unwrap();
        base64::engine::general_purpose::STANDARD
            .encode(signature.as_ref())
            .into_bytes()
    }

    #[test]
    fn a_github_report_verifies_only_with_its_key_and_its_own_body() {
        let (pair, json) = github_key("k1");
        let config = LeakConfig::from_github_keys(json.as_bytes()).unwrap();
        let body = br#"[{"token":"x","type":"keysmith","url":"https://example.com"}]"#;
        let signature = sign(&pair, body);
        assert!(config.github_signed(b"k1", &signature, body));
        assert!(
            !config.github_signed(b"k2", &signature, body),
            "unknown key id"
        );
        assert!(
            !config.github_signed(b"k1", &signature, b"[]"),
            "another body"
        );
        assert!(!config.github_signed(b"k1", b"not base64!", body));
        let (other, _) = github_key("k1");
        assert!(
            !config.github_signed(b"k1", &sign(&other, body), body),
            "signed by another key"
        );
        assert!(
            !config.bearer(Some(b"Bearer anything")),
            "no plain secret set"
        );
    }

    #[test]
    fn github_keys_must_be_p256_public_keys_in_githubs_shape() {
        assert!(LeakConfig::from_github_keys(b"{}").is_err());
        assert!(LeakConfig::from_github_keys(br#"{"public_keys": []}"#).is_err());
        let (_, json) = github_key("k1");
        let p384 = json.replace(
            "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE",
            "MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE",
        );
        let err = LeakConfig::from_github_keys(p384.as_bytes()).err().unwrap();
        assert!(err.contains("k1"), "{err}");
    }

    #[test]
    fn the_plain_secret_is_a_bearer_token_of_sixteen_characters_or_more() {
        assert!(LeakConfig::default().with_secret("short").is_none());
        let config = LeakConfig::default()
            .with_secret("0123456789abcdef")
            .unwrap();
        assert!(config.bearer(Some(b"Bearer 0123456789abcdef")));
        assert!(!config.bearer(Some(b"Bearer 0123456789abcdeg")));
        assert!(!config.bearer(Some(b"0123456789abcdef")));
        assert!(!config.bearer(None));
        assert!(!config.github_signed(b"k1", b"", b""), "no GitHub key set");
        assert!(!format!("{config:?}").contains("0123"));
    }

    #[test]
    fn config_files_that_do_not_load_name_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let weak = dir.path().join("secret");
        std::fs::write(&weak, "short\n").unwrap();
        let err = LeakConfig::load(None, Some(&weak)).unwrap_err().to_string();
        assert!(
            err.contains("secret") && err.contains("16 characters"),
            "{err}"
        );
        let keys = dir.path().join("keys.json");
        std::fs::write(&keys, "[]").unwrap();
        let err = LeakConfig::load(Some(&keys), None).unwrap_err().to_string();
        assert!(
            err.contains("keys.json") && err.contains("public_keys"),
            "{err}"
        );
        assert!(
            LeakConfig::load(None, None).unwrap().is_none(),
            "off by default"
        );
    }

    #[test]
    fn a_report_is_remembered_for_the_replay_window_and_its_first_answer_given_again() {
        let mut replays = Replays::default();
        let now: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        assert!(matches!(replays.claim([1; 32], now), Claim::First));
        assert!(matches!(replays.claim([1; 32], now), Claim::Pending));
        replays.answered([1; 32], Arc::from([true, false]));
        let Claim::Answered(known) = replays.claim([1; 32], now + SignedDuration::from_hours(1))
        else {
            panic!("a repeat within the window is answered as before");
        };
        assert_eq!(&*known, &[true, false]);
        assert!(matches!(replays.claim([2; 32], now), Claim::First));
        assert!(matches!(
            replays.claim([1; 32], now + REPLAY_WINDOW),
            Claim::First
        ));
    }

    #[test]
    fn a_report_cancelled_mid_way_can_be_sent_again() {
        let replays = Mutex::new(Replays::default());
        let now: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        assert!(matches!(lock(&replays).claim([1; 32], now), Claim::First));
        drop(Processing {
            replays: &replays,
            digest: [1; 32],
        });
        assert!(matches!(lock(&replays).claim([1; 32], now), Claim::First));
        Processing {
            replays: &replays,
            digest: [1; 32],
        }
        .answered(Arc::from([true]));
        assert!(matches!(
            lock(&replays).claim([1; 32], now),
            Claim::Answered(_)
        ));
    }

    #[test]
    fn the_patch_sets_the_leak_only_where_the_token_still_is() {
        let entry = StatusEntry {
            position: 1,
            replaced: Some(0),
            sha256: "aa".into(),
        };
        let leak = Leak {
            reported_at: Time("2026-12-01T00:00:00Z".parse().unwrap()),
            source: Some(bounded_source("https://example.com/x\n")),
            handled_at: None,
        };
        assert_eq!(
            serde_json::to_value(leak_patch(&entry, &leak)).unwrap(),
            serde_json::json!([
                {"op": "test", "path": "/status/tokens/1/previous/sha256", "value": "aa"},
                {"op": "add", "path": "/status/tokens/1/previous/leak",
                 "value": {"reportedAt": "2026-12-01T00:00:00Z", "source": "https://example.com/x"}}
            ])
        );
        assert_eq!(bounded_source(&"x".repeat(5000)).len(), MAX_LEAK_SOURCE_LEN);
    }

    /// Each TruffleHog question that fails, unauthenticated or about a token that is not live,
    /// costs its caller's address a failure in the verifier's throttle.
    #[tokio::test]
    async fn failed_trufflehog_questions_are_charged_to_the_caller() {
        let (usage, _) = super::super::usage::UsageReporter::channel();
        let verifier = Verifier::new(
            &super::super::Options::default(),
            usage,
            &mut Registry::default(),
        );
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let endpoint = LeakEndpoint::new(
            LeakConfig::default()
                .with_secret("trufflehog-secret-0123")
                .unwrap(),
            kube::Client::try_from(config).unwrap(),
            &mut Registry::default(),
        );
        let body = br#"{"keysmith-ks_-base62-32": {"token": ["ks_nope"]}}"#;
        let ask = |headers: HeaderMap, client: &str| {
            let client: IpAddr = client.parse().unwrap();
            let endpoint = &endpoint;
            let verifier = &verifier;
            async move {
                endpoint
                    .handle(verifier, Format::Trufflehog, Some(client), &headers, body)
                    .await
                    .status()
            }
        };
        assert_eq!(
            ask(HeaderMap::new(), "203.0.113.7").await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(verifier.throttle.tracked(), 1);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer trufflehog-secret-0123"),
        );
        assert_eq!(ask(headers, "198.51.100.7").await, StatusCode::FORBIDDEN);
        assert_eq!(verifier.throttle.tracked(), 2);
    }
}
