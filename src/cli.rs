//! The `keysmith` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod token;

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
    }
}
