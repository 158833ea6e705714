//! `keysmith verifier`: the verification API of SPEC section 5.
//!
//! Pure core: [`key`] (what one ApiKey means to the verifier), [`decision`] (the decision
//! order), [`index`] (hash → token map with tombstones), [`client_ip`] (trusted proxies),
//! [`throttle`] (slowing repeated failures). Shell: [`http`] (the endpoints), [`headers`]
//! (required header values from Secrets), [`usage`] (`lastUsedAt` write-back), [`audit`] (one
//! line per verification), [`metrics`], [`log_writer`] (log lines off the request path), and
//! here the watcher that feeds the index and [`run`], which wires it all with the shared
//! [`crate::telemetry`] (`/metrics`, `/healthz`, `/readyz`) and [`crate::cluster`] errors.

pub mod audit;
pub mod client_ip;
pub mod decision;
pub mod headers;
pub mod http;
pub mod index;
pub mod key;
pub mod log_writer;
pub mod metrics;
pub mod throttle;
pub mod usage;

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use ipnet::IpNet;
use jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::api::ApiKey;
use crate::cluster::{self, ClusterError};
use crate::telemetry::{self, Health};

use self::decision::{Code, VerifyRequest};
use self::headers::SecretCache;
use self::index::{Index, Verdict};
use self::metrics::Metrics;
use self::throttle::{Throttle, ThrottleConfig};
use self::usage::UsageReporter;

/// Why the verifier could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    /// The ApiKeys in scope cannot be listed (unreachable, missing CRD, missing permission).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A listener could not be bound or failed.
    #[error("cannot serve on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What to watch and where to serve.
#[derive(Debug, Clone)]
pub struct Options {
    /// Verification API address.
    pub listen: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz` address.
    pub metrics_listen: SocketAddr,
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Watch one namespace instead of all.
    pub namespace: Option<String>,
    /// Only ApiKeys whose labels match.
    pub selector: Option<String>,
}

/// Everything a request needs, shared by the endpoints and fed by the watcher.
pub struct Verifier {
    /// The token index.
    pub index: Index,
    /// Required-header values from Secrets.
    pub secrets: SecretCache,
    /// Failure throttle.
    pub throttle: Throttle,
    /// `--trusted-proxies`.
    pub trusted_proxies: Vec<IpNet>,
    /// Metrics.
    pub metrics: Metrics,
    /// Usage write-back.
    pub usage: UsageReporter,
    /// Ready once the initial list is indexed (`/readyz`).
    pub health: Health,
}

impl Verifier {
    /// A verifier with an empty index; registers its metrics in `registry`.
    pub fn new(
        trusted_proxies: Vec<IpNet>,
        usage: UsageReporter,
        registry: &mut Registry,
    ) -> Verifier {
        Verifier {
            index: Index::default(),
            secrets: SecretCache::default(),
            throttle: Throttle::new(ThrottleConfig::default()),
            trusted_proxies,
            metrics: Metrics::register(registry),
            usage,
            health: Health::default(),
        }
    }

    /// Decide a request and do what every verification does: count it, audit it, report
    /// usage when VALID, and (when `throttled`) delay a failure from an address that keeps failing.
    pub async fn check<'a>(
        &self,
        request: &VerifyRequest<'a>,
        audit: &audit::Request<'_>,
        throttled: bool,
    ) -> Verdict<'a> {
        let start = Instant::now();
        let now = Timestamp::now();
        let verdict = self.index.verify(request, now, &self.secrets);
        self.metrics.observe(verdict.code, start.elapsed());
        audit::record(now, audit, &verdict);
        match (&verdict.found, verdict.code) {
            (Some(found), Code::Valid) => self.usage.record(found, now),
            _ if throttled => {
                if let Some(client) = audit.client {
                    let delay = self.throttle.on_failure(client, Instant::now());
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                }
            }
            _ => {}
        }
        verdict
    }

    /// Apply one watched ApiKey.
    fn apply(&self, apikey: &ApiKey, warned: &mut HashSet<(String, String, i64)>) {
        let applied = self.index.apply(apikey, Timestamp::now());
        let key = &applied.key;
        let refs: BTreeSet<String> = if apikey.metadata.deletion_timestamp.is_some() {
            BTreeSet::new()
        } else {
            key.secret_refs().map(|(name, _)| name.to_owned()).collect()
        };
        self.secrets.set_refs(&key.namespace, &key.name, refs);
        if let Some(invalid) = applied.invalid {
            let generation = apikey.metadata.generation.unwrap_or_default();
            if warned.insert((key.namespace.clone(), key.name.clone(), generation)) {
                tracing::warn!(namespace = %key.namespace, name = %key.name, error = %invalid,
                    "invalid spec: its tokens authenticate but are granted nothing until it is fixed");
            }
        }
        self.metrics.set_index_tokens(self.index.tokens());
    }

    fn revoke(&self, namespace: &str, name: &str) {
        self.index.revoke(namespace, name, Timestamp::now());
        self.secrets.set_refs(namespace, name, BTreeSet::new());
        self.metrics.set_index_tokens(self.index.tokens());
    }
}

/// The ApiKeys in scope.
fn apikeys(client: kube::Client, namespace: Option<&str>) -> Api<ApiKey> {
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

/// Check that the ApiKeys in scope can be listed, so a missing CRD, a wrong kubeconfig or a
/// missing permission is one clear line at start-up rather than a retry loop.
pub async fn preflight(client: kube::Client, options: &Options) -> Result<(), VerifierError> {
    let mut params = ListParams::default().limit(1);
    if let Some(selector) = &options.selector {
        params = params.labels(selector);
    }
    let namespace = options.namespace.as_deref();
    apikeys(client, namespace)
        .list_metadata(&params)
        .await
        .map(drop)
        .map_err(|e| cluster::classify::<ApiKey>(e, "list", namespace).into())
}

/// Feed the index from a watch on ApiKeys until the stream ends. Sets `ready` once the first
/// complete list is in; on every relist, keys that vanished meanwhile are revoked.
pub async fn watch(client: kube::Client, options: &Options, verifier: Arc<Verifier>) {
    let mut config = watcher::Config::default();
    if let Some(selector) = &options.selector {
        config = config.labels(selector);
    }
    let mut events = watcher(apikeys(client, options.namespace.as_deref()), config)
        .default_backoff()
        .boxed();
    let mut listed = HashSet::new();
    let mut warned = HashSet::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(apikey)) => {
                listed.insert((apikey.namespace().unwrap_or_default(), apikey.name_any()));
                verifier.apply(&apikey, &mut warned);
            }
            Ok(watcher::Event::InitDone) => {
                verifier.index.retain(&listed, Timestamp::now());
                verifier.metrics.set_index_tokens(verifier.index.tokens());
                if !verifier.health.is_ready() {
                    verifier.health.set_ready(true);
                    tracing::info!(tokens = verifier.index.tokens(), "index ready");
                }
            }
            Ok(watcher::Event::Apply(apikey)) => verifier.apply(&apikey, &mut warned),
            Ok(watcher::Event::Delete(apikey)) => {
                verifier.revoke(&apikey.namespace().unwrap_or_default(), &apikey.name_any());
            }
            Err(err) => tracing::warn!(error = %err, "ApiKey watch failed; retrying"),
        }
    }
}

/// Run `keysmith verifier` until `shutdown` completes: check access, bind, [`serve`].
pub async fn run(
    client: kube::Client,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), VerifierError> {
    preflight(client.clone(), &options).await?;
    let api = bind(options.listen).await?;
    let probes = bind(options.metrics_listen).await?;
    serve(client, options, api, probes, shutdown).await
}

/// Serve the verification API on `api` and the probes and metrics on `probes` until `shutdown`
/// completes, with the index fed by a watch on ApiKeys.
pub async fn serve(
    client: kube::Client,
    options: Options,
    api: TcpListener,
    probes: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), VerifierError> {
    let mut registry = telemetry::registry();
    let (usage, usage_rx) = UsageReporter::channel();
    let verifier = Arc::new(Verifier::new(
        options.trusted_proxies.clone(),
        usage,
        &mut registry,
    ));
    let api_addr = api.local_addr().unwrap_or(options.listen);
    tracing::info!(listen = %api_addr, metrics = ?probes.local_addr().ok(), "verifier serving");

    let background = [
        tokio::spawn(usage::write_usage(client.clone(), usage_rx)),
        tokio::spawn({
            let (client, verifier) = (client.clone(), verifier.clone());
            async move { verifier.secrets.refresh(client).await }
        }),
        tokio::spawn({
            let (client, options, verifier) = (client.clone(), options.clone(), verifier.clone());
            async move { watch(client, &options, verifier).await }
        }),
    ];

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let stopped = |mut rx: tokio::sync::watch::Receiver<()>| async move {
        let _ = rx.changed().await;
    };
    let probes_app = telemetry::router(Arc::new(registry), verifier.health.clone());
    let api_server = axum::serve(
        api,
        http::router(verifier.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopped(stop_rx.clone()));
    let probes_server = axum::serve(probes, probes_app).with_graceful_shutdown(stopped(stop_rx));
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(());
    });
    let (a, p) = tokio::join!(api_server, probes_server);
    for task in background {
        task.abort();
    }
    a.and(p).map_err(|source| VerifierError::Listen {
        addr: api_addr,
        source,
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, VerifierError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| VerifierError::Listen { addr, source })
}
