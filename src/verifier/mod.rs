//! `keysmith verifier`: the verification API of SPEC section 5.
//!
//! From the core crate (`keysmith_core::verifier`, re-exported here): [`key`] (what one ApiKey
//! means to the verifier), [`decision`] (the decision order), [`index`] (hash → token map with
//! tombstones). Pure, but the server's alone: [`client_ip`] (trusted proxies),
//! [`throttle`] (slowing repeated failures), [`tenancy`] (which namespaces a route accepts).
//! Shell: [`http`] (the endpoints), [`server`] and [`tls`] (connections, HTTPS), [`usage`]
//! (`lastUsedAt` write-back), [`audit`] (one line per verification), [`metrics`], [`activity`]
//! and [`token_metrics`] (per-token usage, served to key owners by [`usage_api`]), and
//! here the watcher that feeds the index and [`run`], which wires it all with the shared
//! [`crate::telemetry`] (`/metrics`, `/healthz`, `/readyz`) and [`crate::cluster`] errors.

pub mod activity;
pub mod audit;
pub mod client_ip;
pub mod http;
pub mod leaks;
pub(crate) mod lean;
pub(crate) mod metrics;
pub(crate) mod server;
pub(crate) mod slots;
pub mod tenancy;
pub(crate) mod throttle;
pub mod tls;
pub(crate) mod token_metrics;
pub mod usage;
pub mod usage_api;
pub(crate) mod write_deadline;

pub use keysmith_core::verifier::{decision, index, key};

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipnet::IpNet;
use keysmith_core::api::ApiKey;
use keysmith_core::verifier::decision::{Code, VerifyRequest};
use keysmith_core::verifier::index::{Index, Verdict};
use kube::ResourceExt;
use kube::runtime::{WatchStreamExt, watcher};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::apikeys::{ListedApiKey, Watched};
use crate::controller::{Clock, system_clock};
use crate::scope::Scope;
use crate::telemetry::Health;

use self::activity::Activity;
use self::metrics::Metrics;
use self::tenancy::{Namespaces, RouteKind, Tenancy};
use self::throttle::{Throttle, ThrottleConfig};
use self::token_metrics::TokenMetrics;
pub use self::token_metrics::TokenMetricsCap;
use self::usage::UsageReporter;

/// What to watch, whom to believe and how much a client may hold.
#[derive(Clone)]
pub struct Options {
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Which ApiKeys to watch.
    pub scope: Scope,
    /// Which namespaces' keys each route accepts.
    pub tenancy: Tenancy,
    /// What the command line tunes.
    pub settings: Settings,
    /// The time tokens are checked at (the wall clock outside tests, which move their own).
    pub clock: Clock,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            trusted_proxies: Vec::new(),
            scope: Scope::default(),
            tenancy: Tenancy::default(),
            settings: Settings::default(),
            clock: system_clock(),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("trusted_proxies", &self.trusted_proxies)
            .field("scope", &self.scope)
            .field("tenancy", &self.tenancy)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The verifier's flags beyond scope and proxies.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Timeouts and caps of the verification API's connections.
    pub limits: server::Limits,
    /// Audiences a TokenReview may ask for (`--token-review-audiences`); none: only reviews that
    /// ask no audience authenticate.
    pub token_review_audiences: Vec<String>,
    /// Serve HTTPS with this certificate (`--tls-cert-file`, `--tls-key-file`); none: HTTP.
    pub tls: Option<tls::TlsFiles>,
    /// Per-token activity and the usage API (`--usage-*`).
    pub usage: usage_api::UsageSettings,
    /// Most tokens with per-token series (`--token-metrics-max-tokens`).
    pub token_metrics_cap: TokenMetricsCap,
    /// Who may report leaks (`--leak-report-*`); none: the leak-report endpoint is off.
    pub leaks: Option<leaks::LeakConfig>,
}

/// Pattern work of one decision ([`keysmith_core::grants::CompiledGrants::work_bound`]) above which it counts against
/// its namespace's [`COSTLY_BUDGET`]. Ordinary grants stay far below (the examples' keys under
/// 1,000); the most expensive spec validation admits, asked the longest action, reaches about
/// 37,000, and costs some 37 µs against 1 µs for an ordinary decision.
pub const COSTLY_WORK: usize = 4096;

/// Costly decisions one namespace may have: a burst, then a rate; past it each answer waits (at
/// most a second) before it is sent, so one tenant's most expensive grants, which answer `VALID`
/// and never meet the failure throttle, cannot take the verifier's CPU from the others: 500 a
/// second of the costliest is under 2% of one core.
pub const COSTLY_BUDGET: ThrottleConfig = ThrottleConfig {
    burst: 200,
    refill_per_sec: 500,
    max_delay: Duration::from_secs(1),
    max_addresses: 100_000,
};

/// Everything a request needs, shared by the endpoints and fed by the watcher.
pub struct Verifier {
    /// The token index.
    pub index: Index,
    /// Failure throttle.
    pub throttle: Throttle,
    /// Budget of costly decisions per namespace (see [`COSTLY_WORK`]).
    pub costly: Throttle<Box<str>>,
    /// `--trusted-proxies`.
    pub trusted_proxies: Vec<IpNet>,
    /// Timeouts and caps of connections.
    pub limits: server::Limits,
    /// `--token-review-audiences`.
    pub token_review_audiences: Vec<String>,
    /// Which namespaces' keys each route accepts.
    pub tenancy: Tenancy,
    /// Metrics.
    pub metrics: Metrics,
    /// Usage write-back.
    pub usage: UsageReporter,
    /// Recent requests and counts per token, for the usage API.
    pub activity: Activity,
    /// Per-token series of the keys that opt in.
    pub token_metrics: TokenMetrics,
    /// Ready once the initial list is indexed (`/readyz`).
    pub health: Health,
    /// The time source of every decision.
    pub(crate) clock: Clock,
    /// The leak-report endpoint, when configured.
    pub leaks: Option<leaks::LeakEndpoint>,
}

impl Verifier {
    /// A verifier with an empty index; registers its metrics in `registry`.
    pub fn new(options: &Options, usage: UsageReporter, registry: &mut Registry) -> Verifier {
        Verifier {
            index: Index::default(),
            throttle: Throttle::new(ThrottleConfig::default()),
            costly: Throttle::new(COSTLY_BUDGET),
            trusted_proxies: options.trusted_proxies.clone(),
            limits: options.settings.limits,
            token_review_audiences: options.settings.token_review_audiences.clone(),
            tenancy: options.tenancy.clone(),
            metrics: Metrics::register(registry),
            usage,
            activity: Activity::new(options.settings.usage.max_tokens),
            token_metrics: TokenMetrics::register(registry, options.settings.token_metrics_cap),
            health: Health::default(),
            clock: options.clock.clone(),
            leaks: None,
        }
    }

    /// Decide a request for a route (of kind `route`) accepting `namespaces` and do what every
    /// verification does: count it, audit it, report usage when VALID, and delay a failure from
    /// a client (`audit.client`) that keeps failing.
    pub async fn check<'a>(
        &self,
        request: &VerifyRequest<'a>,
        namespaces: Namespaces<'_>,
        route: RouteKind,
        audit: &audit::Request<'_>,
    ) -> Verdict<'a> {
        let start = Instant::now();
        let now = (self.clock)();
        let unconfined = self.index.verify(request, now);
        // Without an action no grant is read (authentication only), so nothing is costly.
        let costly = unconfined.found.as_ref().filter(|found| {
            let len = |part: Option<&str>| part.map_or(0, str::len);
            request.action.is_some()
                && found.key.slots.get(found.slot).is_some_and(|slot| {
                    slot.grants
                        .work_bound(len(request.action), len(request.resource))
                        > COSTLY_WORK
                })
        });
        let costly: Option<Box<str>> = costly.map(|found| found.key.namespace.as_str().into());
        let known = unconfined.found.is_some();
        let verdict = tenancy::confine(unconfined, namespaces);
        self.metrics
            .observe(audit.endpoint, verdict.code, start.elapsed());
        if known && verdict.found.is_none() {
            // A key this verifier holds, outside the route's namespaces: a gateway route naming
            // the wrong namespace, or an unscoped route whose namespaces were never configured.
            self.metrics.unknown_scope(route);
        }
        audit::record(audit, &verdict);
        if let Some(found) = &verdict.found {
            self.activity.record(found, verdict.code, audit, now);
            self.token_metrics.record(found, verdict.code);
        }
        if let Some(namespace) = costly {
            let delay = self.costly.charge(namespace, Instant::now());
            if !delay.is_zero() {
                self.metrics.throttled(audit.endpoint);
                tokio::time::sleep(delay).await;
            }
        }
        match (&verdict.found, verdict.code) {
            (Some(found), Code::Valid) => self.usage.record(found, now),
            _ => {
                if let Some(client) = audit.client {
                    let delay = self.throttle.on_failure(client, Instant::now());
                    if !delay.is_zero() {
                        self.metrics.throttled(audit.endpoint);
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
        verdict
    }

    /// Apply one watched ApiKey.
    fn apply(&self, apikey: &ApiKey, warned: &mut HashSet<(String, String, i64)>) {
        let applied = self.index.apply(apikey, (self.clock)());
        self.token_metrics.apply(apikey);
        let key = &applied.key;
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
        self.index.revoke(namespace, name, (self.clock)());
        self.token_metrics.forget(namespace, name);
        self.metrics.set_index_tokens(self.index.tokens());
    }
}

/// Listed ApiKeys between two hand-backs of freed memory (two list pages).
const RELEASE_EVERY: usize = 1_000;

/// Watch events in flight between the watch and the index: more than a list page (500), so
/// that the index takes one page while the watch fetches and parses the next, on another thread.
const WATCH_QUEUE: usize = 1_024;

type WatchEvent = Result<watcher::Event<ListedApiKey>, watcher::Error>;

/// Watch the ApiKeys in scope and queue every event for [`feed_index`], until the index is gone.
async fn fetch(client: kube::Client, scope: Scope, queue: mpsc::Sender<WatchEvent>) {
    let mut events = crate::apikeys::watch(client, &scope)
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        if queue.send(event).await.is_err() {
            return;
        }
    }
}

/// Feed the index from the queued watch events until the queue ends. Sets `ready` once the
/// first complete list is in; on every relist, keys that vanished meanwhile are revoked.
async fn feed_index(mut events: mpsc::Receiver<WatchEvent>, verifier: Arc<Verifier>) {
    let unreadable = &verifier.metrics.unreadable;
    let mut listed = HashSet::new();
    let mut warned = HashSet::new();
    while let Some(event) = events.recv().await {
        match event {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(object)) => {
                // Left out of `listed`, an unreadable key loses its tokens at InitDone.
                let Watched::Readable(apikey) = unreadable.read(object) else {
                    continue;
                };
                listed.insert((apikey.namespace().unwrap_or_default(), apikey.name_any()));
                verifier.apply(&apikey, &mut warned);
                // Listing thousands of keys is a burst of garbage (pages, parsed objects): hand
                // it back as the list goes, or the peak grows with the fleet.
                if listed.len() % RELEASE_EVERY == 0 {
                    crate::allocator::release_freed_memory();
                }
            }
            Ok(watcher::Event::InitDone) => {
                verifier.token_metrics.retain(&listed);
                verifier
                    .index
                    .retain(&std::mem::take(&mut listed), (verifier.clock)());
                crate::allocator::release_freed_memory();
                verifier.metrics.set_index_tokens(verifier.index.tokens());
                if !verifier.health.is_ready() {
                    verifier.health.set_ready(true);
                    tracing::info!(tokens = verifier.index.tokens(), "index ready");
                }
            }
            Ok(watcher::Event::Apply(object)) => match unreadable.read(object) {
                Watched::Readable(apikey) => verifier.apply(&apikey, &mut warned),
                // What its spec now allows is unknown: refuse its tokens until it is fixed.
                Watched::Unreadable(meta) => verifier.revoke(
                    meta.namespace.as_deref().unwrap_or_default(),
                    meta.name.as_deref().unwrap_or_default(),
                ),
            },
            // Metadata is all a deletion needs, readable or not.
            Ok(watcher::Event::Delete(object)) => {
                unreadable.deleted(&object.metadata);
                verifier.revoke(&object.namespace().unwrap_or_default(), &object.name_any());
            }
            Err(err) => tracing::warn!(error = %err, "ApiKey watch failed; retrying"),
        }
    }
}

/// A verifier whose index is fed by a watch on ApiKeys, with its usage write-back running; the
/// tasks stop when it is dropped.
pub struct Running {
    /// The verifier the endpoints answer from.
    pub verifier: Arc<Verifier>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Start the watch and the background tasks; registers the metrics in `registry`.
    pub fn start(client: kube::Client, options: &Options, registry: &mut Registry) -> Running {
        let (usage, usage_rx) = UsageReporter::channel();
        let mut verifier = Verifier::new(options, usage, registry);
        verifier.leaks = options
            .settings
            .leaks
            .clone()
            .map(|config| leaks::LeakEndpoint::new(config, client.clone(), registry));
        let verifier = Arc::new(verifier);
        let (queue, events) = mpsc::channel(WATCH_QUEUE);
        let tasks = vec![
            tokio::spawn(usage::write_usage(client.clone(), usage_rx)),
            tokio::spawn(fetch(client, options.scope.clone(), queue)),
            tokio::spawn(feed_index(events, verifier.clone())),
        ];
        Running { verifier, tasks }
    }

    /// Serve the verification API on `api` (HTTPS when `tls` names a certificate, reloaded when
    /// it changes) until `shutdown` completes.
    pub async fn serve_api(
        &self,
        api: TcpListener,
        tls: Option<tls::TlsFiles>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let acceptor = match tls {
            Some(files) => {
                let (acceptor, reload) = tls::acceptor(files).map_err(std::io::Error::other)?;
                // Ends with the runtime, as the server does.
                tokio::spawn(reload);
                Some(acceptor)
            }
            None => None,
        };
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        tracing::info!(listen = ?api.local_addr().ok(), scheme, "verifier serving");
        let verifier = self.verifier.clone();
        let handler = move |peer, request| {
            let verifier = verifier.clone();
            async move { http::handle(&verifier, peer, request).await }
        };
        let verifier = self.verifier.clone();
        let lean =
            move |peer, request: hyper::Request<http_body_util::Full<hyper::body::Bytes>>| {
                let verifier = verifier.clone();
                async move { http::handle(&verifier, peer, request).await }
            };
        server::serve_with(
            api,
            handler,
            Some(lean),
            self.verifier.limits,
            acceptor,
            self.verifier.metrics.connections.clone(),
            shutdown,
        )
        .await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
