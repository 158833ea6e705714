//! `keysmith controller`: connect, check permissions, serve `/metrics` `/healthz` `/readyz`, and
//! reconcile while this replica holds the leader Lease, until SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use kube::Api;

use crate::api::ApiKey;
use crate::cluster;
use crate::controller::leader::{DEFAULT_LEASE_NAME, LeaderConfig};
use crate::controller::metrics::ControllerMetrics;
use crate::controller::{self, Context, Scope};
use crate::telemetry::{self, DEFAULT_METRICS_ADDR, Health, LogFormat, Shutdown};

/// Arguments of `keysmith controller`.
#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// Reconcile ApiKeys in this namespace only (default: all namespaces).
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,

    /// Reconcile only ApiKeys whose labels match this selector (e.g. `shard=a`).
    #[arg(long, value_name = "LABELS")]
    selector: Option<String>,

    /// Log format.
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,

    /// Address of the `/metrics`, `/healthz` and `/readyz` endpoint.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_METRICS_ADDR)]
    metrics_addr: SocketAddr,

    /// Namespace of the leader-election Lease (default: the pod's namespace).
    #[arg(long, value_name = "NS", env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,

    /// Name of the leader-election Lease.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_LEASE_NAME)]
    lease_name: String,

    /// This replica's identity in the Lease (default: the pod name, else the host name).
    #[arg(long, value_name = "ID", env = "POD_NAME")]
    identity: Option<String>,

    /// Seconds a leader's claim lasts without renewal.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    lease_duration: u64,

    /// Seconds before the end of its claim the leader renews it.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    lease_renew_grace: u64,
}

/// Run `keysmith controller`; every failure ends in one line on stderr and a non-zero exit.
pub fn run(args: ControllerArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keysmith controller: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("keysmith controller: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ControllerArgs) -> Result<(), String> {
    let client = cluster::connect().await.map_err(|e| e.to_string())?;
    let keys: Api<ApiKey> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    cluster::check_list(&keys, args.namespace.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    // Logging starts after the start-up checks, so that a failed check is exactly one line
    // (the client library would log its own copy of a connection error).
    telemetry::init_tracing(args.log_format);

    let mut registry = telemetry::registry();
    let metrics = ControllerMetrics::register(&mut registry);
    let health = Health::default();
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|e| format!("cannot listen on {} for metrics: {e}", args.metrics_addr))?;
    let shutdown = Shutdown::on_signal();
    let server = tokio::spawn(telemetry::serve(
        listener,
        telemetry::router(Arc::new(registry), health.clone()),
        shutdown.clone().wait(),
    ));

    let identity = args.identity.unwrap_or_else(default_identity);
    let leader = LeaderConfig {
        lease_name: args.lease_name,
        namespace: args
            .leader_election_namespace
            .unwrap_or_else(|| client.default_namespace().to_owned()),
        identity: identity.clone(),
        lease_duration: Duration::from_secs(args.lease_duration),
        renew_grace: Duration::from_secs(args.lease_renew_grace),
    };
    let scope = Scope {
        namespace: args.namespace,
        selector: args.selector,
    };
    let ctx = Context::new(client, metrics, controller::system_clock(), Some(identity));
    // Ready once connected and permitted: a standby replica is as healthy as the leader.
    health.set_ready(true);
    let elected = controller::run_elected(ctx, scope, &leader, shutdown.wait()).await;
    health.set_ready(false);
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics server failed"),
        Err(e) => tracing::warn!(error = %e, "metrics server task failed"),
    }
    elected.map_err(|e| e.to_string())
}

/// The pod name is the natural identity; outside a pod the host name, else the process id.
fn default_identity() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| format!("keysmith-{}", std::process::id()))
}
