//! The kubeconfig `keysmith dev` writes for kubectl. It is written only once the emulated API
//! server listens and removed when dev stops, so it never points at a server that is not there;
//! a file at that path that dev did not write is neither overwritten nor removed, and neither is
//! the kubeconfig of another `keysmith dev` that still runs.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use keysmith_emulator::{Emulator, Identity};
use kube::config::Kubeconfig;

/// The name the emulator gives the one cluster, context and user of its kubeconfigs.
const EMULATOR_CONTEXT: &str = "keysmith-emulator";

/// How long a stale kubeconfig's server may take to accept a connection before it counts as
/// gone; it is on this host, so an answer is immediate.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The path dev may write its kubeconfig to, and what it wrote there.
pub struct DevKubeconfig {
    path: PathBuf,
    written: Option<String>,
}

impl DevKubeconfig {
    /// Claim `path`: free, or holding a kubeconfig of an earlier `keysmith dev` that no longer
    /// runs. Anything else is refused before dev starts, so a mistyped
    /// `--kubeconfig ~/.kube/config` loses nothing, and a second dev does not take the file of
    /// one still running (and delete it when it stops).
    pub fn claim(path: &Path) -> Result<DevKubeconfig, String> {
        refuse_taken(path)?;
        Ok(DevKubeconfig {
            path: path.to_owned(),
            written: None,
        })
    }

    /// Write the administrator's kubeconfig of `emu`, which must be listening.
    pub fn write(&mut self, emu: &Emulator) -> Result<(), String> {
        // Again: another dev started since the claim may have written its own by now.
        refuse_taken(&self.path)?;
        emu.write_kubeconfig(&self.path, &Identity::Admin)
            .map_err(|e| format!("writing {}: {e}", self.path.display()))?;
        self.written = Some(emu.kubeconfig(&Identity::Admin));
        Ok(())
    }

    /// Dev is stopping: remove the kubeconfig if it still holds what this dev wrote; whatever
    /// replaced it is someone else's. A dev that did not get to write one removes the stale
    /// kubeconfig it claimed, which points at nothing.
    pub fn release(self) {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return;
        };
        let remove = match &self.written {
            Some(written) => *written == text,
            None => is_dev_kubeconfig(&text) && !server_answers(&text),
        };
        if remove {
            // Best effort: dev is exiting and has nothing better to do about a failure.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Refuse `path` when it holds something dev must not overwrite: a file dev did not write, or
/// the kubeconfig of a `keysmith dev` whose API server still answers.
fn refuse_taken(path: &Path) -> Result<(), String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !is_dev_kubeconfig(&text) => Err(format!(
            "{} exists and is not a kubeconfig written by keysmith dev; refusing to overwrite \
             it: pass --kubeconfig with another path",
            path.display()
        )),
        Ok(text) if server_answers(&text) => Err(format!(
            "another keysmith dev is using {} (its API server answers); stop it, or pass \
             --kubeconfig with another path",
            path.display()
        )),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("reading {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Whether `text` is a kubeconfig as `keysmith dev` writes it: the emulator's one cluster as
/// the current context.
fn is_dev_kubeconfig(text: &str) -> bool {
    Kubeconfig::from_yaml(text).is_ok_and(|kc| {
        kc.current_context.as_deref() == Some(EMULATOR_CONTEXT)
            && kc.clusters.len() == 1
            && kc.clusters[0].name == EMULATOR_CONTEXT
    })
}

/// Whether the server of a dev kubeconfig accepts connections (another `keysmith dev` runs).
fn server_answers(text: &str) -> bool {
    let server = Kubeconfig::from_yaml(text)
        .ok()
        .and_then(|kc| kc.clusters.into_iter().next()?.cluster?.server);
    let Some(authority) = server.as_deref().and_then(|s| s.split("://").nth(1)) else {
        return false;
    };
    let authority = authority.split('/').next().unwrap_or(authority);
    authority
        .to_socket_addrs()
        .into_iter()
        .flatten()
        .any(|addr| TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).is_ok())
}
