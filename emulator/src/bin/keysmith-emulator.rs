//! `keysmith-emulator`: run the Kubernetes API emulator as a process, so the
//! real kubectl and `keysmith` binaries can talk to it.
//!
//! ```text
//! keysmith-emulator [--port N] [--kubeconfig PATH] [--rbac] [--tls] [--apply FILE]...
//! ```

use std::process::ExitCode;

use keysmith_emulator::{Config, Emulator, Identity};

const USAGE: &str = "usage: keysmith-emulator [--port N] [--kubeconfig PATH] [--rbac] [--tls] [--history EVENTS] [--apply FILE]...";

struct Args {
    config: Config,
    kubeconfig: Option<String>,
    apply: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        config: Config::default(),
        kubeconfig: None,
        apply: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--port" => {
                args.config.port = value("--port")?
                    .parse()
                    .map_err(|e| format!("--port: {e}"))?
            }
            "--history" => {
                args.config.history = value("--history")?
                    .parse()
                    .map_err(|e| format!("--history: {e}"))?
            }
            "--kubeconfig" => args.kubeconfig = Some(value("--kubeconfig")?),
            "--apply" => args.apply.push(value("--apply")?),
            "--rbac" => args.config.rbac = true,
            "--tls" => args.config.tls = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let emu = match Emulator::start(args.config).await {
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
