//! One Keysmith process: the controller, the verifier or both (`keysmith run`, `keysmith dev`),
//! sharing one `/metrics`, `/healthz` and `/readyz` endpoint and one shutdown.

use std::sync::Arc;

use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::task::JoinError;

use crate::cluster::ClusterError;
use crate::controller::leader::{LeaderConfig, LeaderError};
use crate::controller::metrics::ControllerMetrics;
use crate::controller::{self, Clock, Context};
use crate::scope::Scope;
use crate::telemetry::{self, Health, Shutdown};
use crate::verifier::tenancy::{Accepted, Tenancy};
use crate::verifier::{self, Running};

/// The controller part of a process.
pub struct ControllerPart {
    /// Client with the controller's permissions.
    pub client: kube::Client,
    /// Leader election; the controller reconciles only while it holds the Lease.
    pub leader: LeaderConfig,
    /// The time source (the wall clock outside tests).
    pub clock: Clock,
    /// `--personal-keys`, `--personal-key-max-lifetime`.
    pub personal_keys: controller::PersonalKeyPolicy,
    /// Act on `spec.access` (`--access-lists`).
    pub access_lists: bool,
    /// Keys reconciled at once (`--max-concurrent-reconciles`).
    pub concurrency: u16,
}

/// The verifier part of a process.
pub struct VerifierPart {
    /// Client with the verifier's permissions.
    pub client: kube::Client,
    /// Where the verification API listens.
    pub api: TcpListener,
    /// Proxies whose forwarded-for headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Which namespaces' keys each route accepts.
    pub tenancy: Tenancy,
    /// Where the usage API listens (`--usage-listen`); none: not served.
    pub usage: Option<TcpListener>,
    /// The time source (the wall clock outside tests).
    pub clock: Clock,
}

/// What one process runs.
pub struct Components {
    /// The controller, if this process reconciles.
    pub controller: Option<ControllerPart>,
    /// The verifier, if this process verifies.
    pub verifier: Option<VerifierPart>,
    /// Which ApiKeys both handle.
    pub scope: Scope,
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub metrics: TcpListener,
}

/// Why a process's parts could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ComponentsError {
    /// A start-up check against the API server failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The controller's task panicked or was cancelled.
    #[error("controller task: {0}")]
    ControllerTask(#[source] JoinError),
    /// Leader election stopped with an error.
    #[error("leader election: {0}")]
    Leader(#[from] LeaderError),
    /// The verifier's task panicked or was cancelled.
    #[error("verifier task: {0}")]
    VerifierTask(#[source] JoinError),
    /// The verification API's listener failed.
    #[error("verification API: {0}")]
    VerificationApi(#[source] std::io::Error),
    /// The usage API could not start or stopped with an error.
    #[error("usage API: {0}")]
    UsageApi(#[from] verifier::usage_api::UsageApiError),
    /// The `/metrics`, `/healthz` and `/readyz` listener failed.
    #[error("metrics endpoint: {0}")]
    Metrics(#[source] std::io::Error),
}

/// Check that each part may list the ApiKeys of its scope (with its selector), so a missing
/// permission is one clear line at start-up rather than a retry loop.
pub async fn preflight(components: &Components) -> Result<(), ComponentsError> {
    let parts = [
        components.controller.as_ref().map(|part| &part.client),
        components.verifier.as_ref().map(|part| &part.client),
    ];
    for client in parts.into_iter().flatten() {
        components.scope.check_list(client.clone()).await?;
    }
    if let Some(part) = components.controller.as_ref().filter(|p| p.access_lists) {
        components
            .scope
            .check_access_lists(part.client.clone())
            .await?;
    }
    Ok(())
}

/// Run every part until `shutdown` fires, the verifier with its default settings; `/readyz` is
/// ready once every part is.
pub async fn serve(components: Components, shutdown: Shutdown) -> Result<(), ComponentsError> {
    serve_with(components, verifier::Settings::default(), shutdown).await
}

/// [`serve`], the verifier with `settings` (its command-line flags).
pub async fn serve_with(
    components: Components,
    settings: verifier::Settings,
    shutdown: Shutdown,
) -> Result<(), ComponentsError> {
    let Components {
        controller,
        verifier,
        scope,
        metrics,
    } = components;
    let mut registry = telemetry::registry();
    let mut ready = Vec::new();

    let controller_task = controller.map(|part| {
        let metrics = ControllerMetrics::register(&mut registry);
        let health = Health::default();
        ready.push(health.clone());
        let ctx = Context::new(
            part.client,
            metrics,
            part.clock,
            Some(part.leader.identity.clone()),
            part.personal_keys,
            part.access_lists,
            part.concurrency,
        );
        // Ready once connected and permitted: a standby replica is as healthy as the leader.
        health.set_ready(true);
        let (scope, stopping) = (scope.clone(), shutdown.clone());
        tokio::spawn(async move {
            controller::run_elected(ctx, scope, &part.leader, stopping.wait()).await
        })
    });
    let mut usage_task = None;
    let verifier_task = verifier.map(|part| {
        let options = verifier::Options {
            settings,
            ..verifier_options(&part, &scope)
        };
        log_tenancy(&part.tenancy);
        let running = Running::start(part.client.clone(), &options, &mut registry);
        ready.push(running.verifier.health.clone());
        if let Some(listener) = part.usage {
            let usage = options.settings.usage.clone();
            let (verifier, client) = (running.verifier.clone(), part.client.clone());
            let stopping = shutdown.clone();
            usage_task = Some(tokio::spawn(async move {
                let served =
                    verifier::usage_api::serve(verifier, client, usage, listener, stopping.wait())
                        .await;
                if let Err(err) = &served {
                    // Said now: the process keeps verifying, and reports it again at exit.
                    tracing::error!(error = %err, "usage API stopped");
                }
                served
            }));
        }
        let (stopping, tls) = (shutdown.clone(), options.settings.tls.clone());
        tokio::spawn(async move { running.serve_api(part.api, tls, stopping.wait()).await })
    });

    let endpoints = telemetry::router(Arc::new(registry), &ready);
    let metrics_result = telemetry::serve(metrics, endpoints, shutdown.wait()).await;
    if let Some(task) = controller_task {
        task.await.map_err(ComponentsError::ControllerTask)??;
    }
    if let Some(task) = verifier_task {
        task.await
            .map_err(ComponentsError::VerifierTask)?
            .map_err(ComponentsError::VerificationApi)?;
    }
    if let Some(task) = usage_task {
        task.await.map_err(ComponentsError::VerifierTask)??;
    }
    metrics_result.map_err(ComponentsError::Metrics)
}

fn verifier_options(part: &VerifierPart, scope: &Scope) -> verifier::Options {
    verifier::Options {
        trusted_proxies: part.trusted_proxies.clone(),
        tenancy: part.tenancy.clone(),
        scope: scope.clone(),
        settings: verifier::Settings::default(),
        clock: part.clock.clone(),
    }
}

/// Say at start-up whose keys unscoped routes accept: accepting none refuses every key there,
/// and accepting every namespace lets any namespace's ApiKey authors pass them.
fn log_tenancy(tenancy: &Tenancy) {
    let default = &tenancy.default;
    if default.is_none() {
        tracing::warn!(
            "unscoped routes (/v1/verify, /v1/authz, TokenReviews without a mapped audience) \
             accept no namespace's keys: call /v1/namespaces/<namespace>/verify or /authz, map \
             TokenReview audiences with --token-review-audience-namespaces, or name namespaces \
             with --accept-namespaces"
        );
    } else if *default == Accepted::Any {
        tracing::warn!(
            "--accept-namespaces '*': unscoped routes accept keys from every namespace, so \
             whoever may create ApiKeys in any namespace can pass them"
        );
    } else {
        tracing::info!(accept_namespaces = %default, "unscoped routes accept these namespaces' keys");
    }
}
