//! `keysmith token generate` and `keysmith token inspect`: offline, no cluster needed.

use std::io::{self, BufRead};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::api::{DEFAULT_BYTES, Encoding, PREFIX_PATTERN};
use crate::token::{self, MAX_BYTES, MIN_BYTES, Token};

/// Mint or inspect a token.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Mint one token and print it (and nothing else) on stdout.
    Generate(GenerateArgs),
    /// Say whether a token's checksum holds and show its prefix, id, encoding and SHA-256.
    /// Exits 0 when the checksum holds, 1 when it does not.
    Inspect {
        /// The token; `-` reads it from stdin, which keeps it out of shell history.
        token: String,
    },
}

/// Arguments of `keysmith token generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Token prefix: up to 32 of A-Z, a-z, 0-9 and _, ending with _ (e.g. myorg_dt_).
    #[arg(long, value_name = "P", value_parser = parse_prefix)]
    prefix: String,

    /// Random bytes, 16 to 64.
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_BYTES,
        value_parser = clap::value_parser!(u32).range(i64::from(MIN_BYTES)..=i64::from(MAX_BYTES))
    )]
    bytes: u32,

    /// How the random bytes are written.
    #[arg(long, value_enum, default_value_t)]
    encoding: Encoding,
}

/// Run a `token` subcommand.
pub fn run(command: TokenCommand) -> ExitCode {
    match command {
        TokenCommand::Generate(args) => generate(&args),
        TokenCommand::Inspect { token } => match read_token(token) {
            Ok(token) => inspect(&token),
            Err(err) => {
                eprintln!("error: cannot read the token from stdin: {err}");
                ExitCode::FAILURE
            }
        },
    }
}

fn parse_prefix(prefix: &str) -> Result<String, String> {
    if token::is_valid_prefix(prefix) {
        Ok(prefix.to_owned())
    } else {
        Err(format!(
            "must match {PREFIX_PATTERN}: at most 32 letters, digits and underscores"
        ))
    }
}

fn generate(args: &GenerateArgs) -> ExitCode {
    if !args.prefix.is_empty() && !args.prefix.ends_with('_') {
        // Presented tokens are split after their last `_`, so the id would come out different.
        eprintln!(
            "warning: a prefix should end with _; `token inspect` will read this one differently"
        );
    }
    match Token::generate(&args.prefix, args.bytes, args.encoding) {
        Ok(token) => {
            println!("{}", token.expose_secret());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn read_token(argument: String) -> io::Result<String> {
    if argument != "-" {
        return Ok(argument);
    }
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn inspect(presented: &str) -> ExitCode {
    let parsed = match token::parse(presented) {
        Ok(parsed) => parsed,
        Err(err) => {
            println!("checksum: invalid ({err})");
            return ExitCode::FAILURE;
        }
    };
    let valid = parsed.checksum_valid();
    println!("checksum: {}", if valid { "valid" } else { "invalid" });
    println!("prefix:   {}", parsed.prefix());
    println!("id:       {}", parsed.id());
    println!("encoding: {}", encoding_name(parsed.encoding()));
    println!("sha256:   {}", token::sha256_hex(presented));
    if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn encoding_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Base62 => "base62",
        Encoding::Hex => "hex",
    }
}
