//! `keysmith-emulator`: run the Kubernetes API emulator as a process, so the
//! real kubectl and `keysmith` binaries can talk to it.
//!
//! ```text
//! keysmith-emulator [--port N] [--kubeconfig PATH] [--rbac] [--tls] [--history EVENTS] [--apply FILE]...
//! ```

use std::process::ExitCode;

use clap::Parser;
use keysmith_emulator::{Config, Emulator, Identity};

/// Run Keysmith's Kubernetes API emulator until Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "keysmith-emulator")]
struct Args {
    /// Loopback port to listen on (0 picks a free one).
    #[arg(long, value_name = "N", default_value_t = Config::default().port)]
    port: u16,
    /// Write an administrator kubeconfig here once serving.
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<String>,
    /// Enforce RBAC for every identity except the administrator.
    #[arg(long)]
    rbac: bool,
    /// Serve HTTPS with a generated certificate authority.
    #[arg(long)]
    tls: bool,
    /// Watch events retained; older resourceVersions answer 410 Gone.
    #[arg(long, value_name = "EVENTS", default_value_t = Config::default().history)]
    history: usize,
    /// Server-side apply this YAML file at start (repeatable, in order).
    #[arg(long, value_name = "FILE")]
    apply: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    // On a usage error clap prints it with the usage and exits with 2.
    let args = Args::parse();
    let config = Config {
        port: args.port,
        rbac: args.rbac,
        tls: args.tls,
        history: args.history,
        ..Config::default()
    };
    let emu = match Emulator::start(config).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("keysmith-emulator: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    for file in &args.apply {
        let applied = std::fs::read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|y| emu.apply_yaml(&y).map_err(|e| e.to_string()));
        if let Err(e) = applied {
            eprintln!("keysmith-emulator: applying {file}: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(path) = &args.kubeconfig
        && let Err(e) = emu.write_kubeconfig(path, &Identity::Admin)
    {
        eprintln!("keysmith-emulator: writing {path}: {e}");
        return ExitCode::FAILURE;
    }
    println!("keysmith-emulator serving {}", emu.url());
    if tokio::signal::ctrl_c().await.is_err() {
        eprintln!("keysmith-emulator: cannot listen for Ctrl-C");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
