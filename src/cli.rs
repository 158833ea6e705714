//! The `keysmith` command line.

use std::future::Future;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod controller;
pub mod rotate;
pub mod status;
pub mod token;
pub mod verifier;

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
    /// Controller and verifier in one process (not built yet).
    Run,
    /// The embedded default: API emulator, controller and verifier with the examples (not built yet).
    Dev,
    /// Rotate an ApiKey's tokens (every slot, or one with --token) in the current cluster.
    Rotate(rotate::RotateArgs),
    /// Show an ApiKey's conditions and tokens in the current cluster.
    Status(status::StatusArgs),
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
        Command::Run => not_built("run"),
        Command::Dev => not_built("dev"),
        Command::Rotate(args) => rotate::run(args),
        Command::Status(args) => status::run(args),
    }
}

/// An entry point whose implementation has not landed: say so instead of pretending to work.
fn not_built(command: &str) -> ExitCode {
    eprintln!("keysmith {command}: not built yet in this version of Keysmith");
    ExitCode::from(2)
}

/// Run a short cluster command to completion; an error is one line on stderr and exit status 1.
fn block_on(command: &str, work: impl Future<Output = Result<(), String>>) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
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
