//! The `keysmith` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Reconcile ApiKey resources (not built yet).
    Controller,
    /// Serve the verification API (POST /v1/verify, /v1/authz, TokenReview webhook).
    Verifier(verifier::VerifierArgs),
    /// Controller and verifier in one process (not built yet).
    Run,
    /// The embedded default: API emulator, controller and verifier with the examples (not built yet).
    Dev,
    /// Rotate an ApiKey's tokens in the current cluster (not built yet).
    Rotate,
    /// Show an ApiKey's status in the current cluster (not built yet).
    Status,
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
        Command::Controller => not_built("controller"),
        Command::Verifier(args) => verifier::run(args),
        Command::Run => not_built("run"),
        Command::Dev => not_built("dev"),
        Command::Rotate => not_built("rotate"),
        Command::Status => not_built("status"),
    }
}

/// An entry point whose implementation has not landed: say so instead of pretending to work.
fn not_built(command: &str) -> ExitCode {
    eprintln!("keysmith {command}: not built yet in this version of Keysmith");
    ExitCode::from(2)
}
