//! `keysmith run`: the controller and the verifier in one process (the chart's default for small
//! installs), one metrics endpoint, until SIGTERM.

use std::process::ExitCode;

use clap::Args;

use super::args::{
    AccessArgs, ConcurrencyArgs, LeaderArgs, PersonalKeyArgs, ScopeArgs, TelemetryArgs,
    VerifierApiArgs,
};
use super::serve_components;
use crate::components::{Components, ControllerPart, VerifierPart};
use crate::{cluster, controller};

/// Arguments of `keysmith run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    api: VerifierApiArgs,
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

/// Run `keysmith run`; every failure ends in one line on stderr and a non-zero exit.
pub fn run(args: RunArgs) -> ExitCode {
    serve_components("run", &args.telemetry, args.api.settings(), async move {
        let trusted_proxies = args.api.trusted_proxies()?;
        let tenancy = args.api.tenancy()?;
        let client = cluster::connect().await.map_err(|e| e.to_string())?;
        let leader = args
            .leader
            .config(client.default_namespace(), args.scope.selector.as_deref());
        Ok(Components {
            controller: Some(ControllerPart {
                client: client.clone(),
                leader,
                clock: controller::system_clock(),
                personal_keys: args.personal.policy(),
                access_lists: args.access.access_lists,
                concurrency: args.concurrency.max_concurrent_reconciles,
            }),
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
    })
}
