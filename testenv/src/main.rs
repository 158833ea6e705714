//! `keysmith-testenv up KUBECONFIG_PATH`: a real control plane with Keysmith's CRD and the
//! chart's RBAC, for trying Keysmith on a real API server without a cluster of one's own. Runs
//! until SIGINT or SIGTERM, then stops every process and removes its data.

use std::process::ExitCode;
use std::time::Duration;

use keysmith_emulator::{Config, Identity};
use keysmith_testenv::{Backend, Cluster};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [command, path] = args.as_slice() else {
        eprintln!("usage: keysmith-testenv up KUBECONFIG_PATH");
        return ExitCode::from(2);
    };
    if command != "up" {
        eprintln!("usage: keysmith-testenv up KUBECONFIG_PATH");
        return ExitCode::from(2);
    }
    match up(path).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keysmith-testenv: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn up(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut cluster = Cluster::with_chart(Backend::Real, Config::default()).await?;
    cluster.write_kubeconfig(path, &Identity::Admin).await?;
    let Cluster::Real(real) = &mut cluster else {
        unreachable!("started as Backend::Real");
    };
    println!(
        "testenv: ready at {}, admin kubeconfig {path}, logs in {} (Ctrl-C stops and removes it)",
        real.url(),
        real.dir().display()
    );
    let mut health = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = health.tick() => real.check()?,
        }
    }
    // The kubeconfig would point at a server that no longer exists.
    let _ = std::fs::remove_file(path);
    Ok(())
}
