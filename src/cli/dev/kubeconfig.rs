//! The kubeconfig `keysmith dev` writes for kubectl. It is written only once the emulated API
//! server listens and removed when dev stops, so it never points at a server that is not there;
//! a file at that path that dev did not write is neither overwritten nor removed.

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
    /// Claim `path`: free, or holding a kubeconfig an earlier `keysmith dev` wrote. Anything
    /// else is refused before dev starts, so a mistyped `--kubeconfig ~/.kube/config` loses
    /// nothing.
    pub fn claim(path: &Path) -> Result<DevKubeconfig, String> {
        match std::fs::read_to_string(path) {
            Ok(text) if !is_dev_kubeconfig(&text) => {
                return Err(format!(
                    "{} exists and is not a kubeconfig written by keysmith dev; refusing to \
                     overwrite it: pass --kubeconfig with another path",
                    path.display()
                ));
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("reading {}: {e}", path.display()));
            }
            _ => {}
        }
        Ok(DevKubeconfig {
            path: path.to_owned(),
            written: None,
        })
    }

    /// Write the administrator's kubeconfig of `emu`, which must be listening.
    pub fn write(&mut self, emu: &Emulator) -> Result<(), String> {
        emu.write_kubeconfig(&self.path, &Identity::Admin)
            .map_err(|e| format!("writing {}: {e}", self.path.display()))?;
        self.written = Some(emu.kubeconfig(&Identity::Admin));
        Ok(())
    }

    /// Dev is stopping (or did not start): remove the kubeconfig it wrote, or an earlier dev's
    /// whose server no longer answers. Another running dev's kubeconfig stays.
    pub fn release(self) {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return;
        };
        let ours = self.written.as_deref() == Some(text.as_str());
        if ours || (is_dev_kubeconfig(&text) && !server_answers(&text)) {
            // Best effort: dev is exiting and has nothing better to do about a failure.
            let _ = std::fs::remove_file(&self.path);
        }
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
