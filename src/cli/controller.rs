//! `keysmith controller`: reconcile ApiKeys while this replica holds the leader Lease, with
//! `/metrics`, `/healthz` and `/readyz`, until SIGTERM.

use std::process::ExitCode;

use clap::Args;

use super::args::{
    AccessArgs, ConcurrencyArgs, LeaderArgs, PersonalKeyArgs, ScopeArgs, TelemetryArgs,
};
use super::serve_components;
use crate::components::{Components, ControllerPart};
use crate::{cluster, controller};

/// Arguments of `keysmith controller`.
#[derive(Args, Debug)]
pub struct ControllerArgs {
    #[command(flatten)]
    scope: ScopeArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(flatten)]
    leader: LeaderArgs,
    #[command(flatten)]
    personal: PersonalKeyArgs,
    #[command(flatten)]
    access: AccessArgs,
    #[command(flatten)]
    concurrency: ConcurrencyArgs,
}

/// Run `keysmith controller`; every failure ends in one line on stderr and a non-zero exit.
pub fn run(args: ControllerArgs) -> ExitCode {
    serve_components(
        "controller",
        &args.telemetry,
        Ok(Default::default()),
        async move {
            let client = cluster::connect().await.map_err(|e| e.to_string())?;
            let leader = args
                .leader
                .config(client.default_namespace(), args.scope.selector.as_deref());
            Ok(Components {
                controller: Some(ControllerPart {
                    client,
                    leader,
                    clock: controller::system_clock(),
                    personal_keys: args.personal.policy(),
                    access_lists: args.access.access_lists,
                    concurrency: args.concurrency.max_concurrent_reconciles,
                }),
                verifier: None,
                scope: args.scope.scope(),
                metrics: super::bind(args.telemetry.metrics_listen, "metrics").await?,
            })
        },
    )
}
