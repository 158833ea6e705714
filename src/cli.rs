//! The `keysmith` command line.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::components::{self, Components};
use crate::telemetry::Shutdown;

pub(crate) mod args;
pub(crate) mod controller;
#[cfg(feature = "dev")]
pub(crate) mod dev;
#[cfg(not(feature = "dev"))]
#[path = "cli/dev_unavailable.rs"]
pub(crate) mod dev;
pub(crate) mod report_leak;
pub(crate) mod rotate;
pub(crate) mod run;
pub(crate) mod scan_rules;
pub(crate) mod status;
pub(crate) mod token;
pub(crate) mod usage;
pub(crate) mod verifier;
pub(crate) mod wait;

/// Keysmith: API keys as Kubernetes custom resources.
#[derive(Parser, Debug)]
#[command(name = "keysmith", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand of SPEC section 2.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the ApiKey CustomResourceDefinition as YAML.
    Crd,
    /// Mint or inspect a token offline.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Reconcile ApiKey resources: mint, rotate and revoke tokens (leader-elected).
    Controller(controller::ControllerArgs),
    /// Serve the verification API (POST /v1/verify, /v1/authz, TokenReview webhook).
    Verifier(verifier::VerifierArgs),
    /// Controller and verifier in one process (the chart's default for small installs).
    Run(run::RunArgs),
    /// The embedded default: API emulator, controller and verifier with the examples applied.
    Dev(dev::DevArgs),
    /// Rotate an ApiKey's tokens (every slot, or one with --token); --wait returns once the
    /// Secret holds the new ones. A disabled or invalid key is refused unless --when-enabled.
    Rotate(rotate::RotateArgs),
    /// Show an ApiKey's conditions and tokens, or without NAME a table of the namespace's
    /// ApiKeys (-A: of every namespace).
    Status(status::StatusArgs),
    /// Show what the verifiers saw of an ApiKey's tokens: counts by answer code for the last
    /// hour and day and the recent requests (needs `get` on apikeyusages.usage.keysmith.dev, in the
    /// edit role).
    Usage(usage::UsageArgs),
    /// Print secret-scanner rules (gitleaks, or TruffleHog with --format trufflehog) for the
    /// token formats the ApiKeys in scope mint (-n, -A, -l); formats only, never a token.
    ScanRules(scan_rules::ScanRulesArgs),
    /// Report tokens found leaked (read from stdin, one per line) to the verifier's leak-report
    /// endpoint, which applies each key's leakResponse; prints per token whether it was a
    /// Keysmith token, never whose.
    ReportLeak(report_leak::ReportLeakArgs),
}

/// Parse the command line, run it, and turn the outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", crate::crd::apikey_crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Token(command) => token::run(command),
        Command::Controller(args) => controller::run(args),
        Command::Verifier(args) => verifier::run(args),
        Command::Run(args) => run::run(args),
        Command::Dev(args) => dev::run(args),
        Command::Rotate(args) => rotate::run(args),
        Command::Status(args) => status::run(args),
        Command::Usage(args) => usage::run(args),
        Command::ScanRules(args) => scan_rules::run(args),
        Command::ReportLeak(args) => report_leak::run(args),
    }
}

/// Run a command to completion; an error is one line on stderr and exit status 1.
fn block_on(command: &str, work: impl Future<Output = Result<(), String>>) -> ExitCode {
    let outcome = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
        .and_then(|rt| rt.block_on(work));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("keysmith {command}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Run a long-running command: install logging, set up its components with `setup` (connect,
/// bind), check their permissions, then serve them (any verifier with `settings`) until SIGTERM
/// or Ctrl-C.
fn serve_components(
    command: &str,
    telemetry: &args::TelemetryArgs,
    settings: Result<crate::verifier::Settings, String>,
    setup: impl Future<Output = Result<Components, String>>,
) -> ExitCode {
    let _logs = crate::telemetry::init_tracing(telemetry.log_format);
    block_on(command, async {
        let settings = settings?;
        let components = setup.await?;
        components::preflight(&components)
            .await
            .map_err(|e| e.to_string())?;
        components::serve_with(components, settings, Shutdown::on_signal())
            .await
            .map_err(|e| e.to_string())
    })
}

/// Bind a listener; the error names what it was for.
async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} for {what}: {e}"))
}

/// [`bind`] `--usage-listen`, when given.
async fn bind_usage(listen: Option<SocketAddr>) -> Result<Option<TcpListener>, String> {
    match listen {
        Some(addr) => bind(addr, "the usage API").await.map(Some),
        None => Ok(None),
    }
}
