//! `keysmith verifier`: serve the verification API from a watch on ApiKeys, with `/metrics`,
//! `/healthz` and `/readyz`, until SIGTERM.

use std::process::ExitCode;

use clap::Args;

use super::args::{ScopeArgs, TelemetryArgs, VerifierApiArgs};
use super::serve_components;
use crate::cluster;
use crate::components::{Components, VerifierPart};
use crate::controller;

/// Arguments of `keysmith verifier`.
#[derive(Args, Debug)]
pub struct VerifierArgs {
    #[command(flatten)]
    api: VerifierApiArgs,
    #[command(flatten)]
    scope: ScopeArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

/// Run `keysmith verifier`; every failure ends in one line on stderr and a non-zero exit.
pub fn run(args: VerifierArgs) -> ExitCode {
    serve_components(
        "verifier",
        &args.telemetry,
        args.api.settings(),
        async move {
            let trusted_proxies = args.api.trusted_proxies()?;
            let tenancy = args.api.tenancy()?;
            let client = cluster::connect().await.map_err(|e| e.to_string())?;
            Ok(Components {
                controller: None,
                verifier: Some(VerifierPart {
                    client,
                    api: super::bind(args.api.listen, "the verification API").await?,
                    trusted_proxies,
                    tenancy,
                    usage: super::bind_usage(args.api.usage_listen).await?,
                    clock: controller::system_clock(),
                }),
                scope: args.scope.scope(),
                metrics: super::bind(args.telemetry.metrics_listen, "metrics").await?,
            })
        },
    )
}
