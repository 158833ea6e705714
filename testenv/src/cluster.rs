//! One interface over the two test backends: the API emulator and a real control plane. A
//! suite written against [`Cluster`] runs on either, chosen by `KEYSMITH_TEST_CLUSTER`.

use std::path::Path;

use keysmith_emulator::{Config, Emulator, Identity, LogEntry};
use kube::Client;
use serde_json::Value;

use crate::real::{RealCluster, RealError, RealOptions};

/// The environment variable choosing the backend.
pub const BACKEND_VAR: &str = "KEYSMITH_TEST_CLUSTER";

/// Which API server a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Keysmith's in-process API emulator (the default: fast, no binaries needed).
    Emulator,
    /// etcd, kube-apiserver and kube-controller-manager built by `testenv/install`.
    Real,
}

impl Backend {
    /// The backend `KEYSMITH_TEST_CLUSTER` names (`emulator`, the default, or `real`).
    ///
    /// # Panics
    /// On any other value, naming the accepted ones.
    pub fn from_env() -> Backend {
        match std::env::var(BACKEND_VAR).as_deref() {
            Err(_) | Ok("" | "emulator") => Backend::Emulator,
            Ok("real") => Backend::Real,
            Ok(other) => panic!("{BACKEND_VAR}={other}: expected `emulator` or `real`"),
        }
    }
}

/// Why a test cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The emulator.
    #[error("emulator: {0}")]
    Emulator(#[from] keysmith_emulator::Error),
    /// The real control plane.
    #[error("real cluster: {0}")]
    Real(#[from] RealError),
    /// The bundled CRD or chart RBAC did not parse.
    #[error(transparent)]
    Bundle(#[from] keysmith::devcluster::DevClusterError),
    /// An option only a real control plane has, asked of the emulator.
    #[error("the API emulator cannot {0}; run with {BACKEND_VAR}=real")]
    Unsupported(&'static str),
    /// Writing a file.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running test cluster.
pub enum Cluster {
    /// The API emulator.
    Emulator(Emulator),
    /// A real control plane.
    Real(Box<RealCluster>),
}

impl Cluster {
    /// Start a bare cluster of `backend` (the emulator with `config` and RBAC on).
    pub async fn start(backend: Backend, config: Config) -> Result<Cluster, ClusterError> {
        Cluster::start_with(backend, config, &RealOptions::default()).await
    }

    /// Like [`Cluster::start`], a real control plane started with `real`; the emulator refuses
    /// any option it cannot honour (it has no webhook token authenticator).
    pub async fn start_with(
        backend: Backend,
        config: Config,
        real: &RealOptions,
    ) -> Result<Cluster, ClusterError> {
        if backend == Backend::Emulator && real.token_webhook.is_some() {
            return Err(ClusterError::Unsupported(
                "authenticate tokens through a TokenReview webhook",
            ));
        }
        Ok(match backend {
            Backend::Emulator => Cluster::Emulator(
                Emulator::start(Config {
                    rbac: true,
                    ..config
                })
                .await?,
            ),
            Backend::Real => Cluster::Real(Box::new(RealCluster::start_with(real).await?)),
        })
    }

    /// Start `backend` prepared like a cluster with the chart installed: the CRD, the
    /// namespaces, and the chart's ServiceAccounts and roles (`keysmith::devcluster::bootstrap`).
    pub async fn with_chart(backend: Backend, config: Config) -> Result<Cluster, ClusterError> {
        Cluster::with_chart_and(backend, config, &RealOptions::default()).await
    }

    /// Like [`Cluster::with_chart`], started as [`Cluster::start_with`] does.
    pub async fn with_chart_and(
        backend: Backend,
        config: Config,
        real: &RealOptions,
    ) -> Result<Cluster, ClusterError> {
        let cluster = Cluster::start_with(backend, config, real).await?;
        for object in keysmith::devcluster::bootstrap()? {
            cluster.apply_object(&object).await?;
        }
        Ok(cluster)
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Cluster::Emulator(_) => Backend::Emulator,
            Cluster::Real(_) => Backend::Real,
        }
    }

    /// The emulator, for what only it can do (fault injection, compaction).
    pub fn emulator(&self) -> Option<&Emulator> {
        match self {
            Cluster::Emulator(emu) => Some(emu),
            Cluster::Real(_) => None,
        }
    }

    /// The API server's base URL.
    pub fn url(&self) -> String {
        match self {
            Cluster::Emulator(emu) => emu.url(),
            Cluster::Real(real) => real.url().to_owned(),
        }
    }

    /// A kubeconfig document for `identity` (on a real server, a ServiceAccount gets a real
    /// token from the TokenRequest API, a user a client certificate).
    pub async fn kubeconfig(&self, identity: &Identity) -> Result<String, ClusterError> {
        Ok(match self {
            Cluster::Emulator(emu) => emu.kubeconfig(identity),
            Cluster::Real(real) => real.kubeconfig(identity).await?,
        })
    }

    /// Write a kubeconfig for `identity` to `path`, readable by its owner only, atomically (a
    /// process polling for the file never reads half of it).
    pub async fn write_kubeconfig(
        &self,
        path: impl AsRef<Path>,
        identity: &Identity,
    ) -> Result<(), ClusterError> {
        use std::os::unix::fs::PermissionsExt;
        let text = self.kubeconfig(identity).await?;
        let path = path.as_ref();
        let write = |e| ClusterError::Write {
            path: path.display().to_string(),
            source: e,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, text).map_err(write)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(write)?;
        std::fs::rename(&tmp, path).map_err(write)
    }

    /// A kube-rs client authenticated as the administrator.
    pub async fn client(&self) -> Result<Client, ClusterError> {
        self.client_as(&Identity::Admin).await
    }

    /// A kube-rs client authenticated as `identity`.
    pub async fn client_as(&self, identity: &Identity) -> Result<Client, ClusterError> {
        Ok(match self {
            Cluster::Emulator(emu) => emu.client_as(identity).await?,
            Cluster::Real(real) => real.client_as(identity).await?,
        })
    }

    /// Server-side apply every document of a YAML string (a `List` counts as its items) as the
    /// administrator with `force`, in order (a CRD can precede its objects), and return the
    /// stored objects.
    pub async fn apply_yaml(&self, yaml: &str) -> Result<Vec<Value>, ClusterError> {
        let docs: Vec<Value> = serde_saphyr::from_multiple(yaml)
            .map_err(|e| RealError::Fixture(format!("not YAML: {e}")))?;
        let mut out = Vec::new();
        for doc in docs.into_iter().filter(Value::is_object) {
            match doc["items"].as_array() {
                Some(items) if doc["kind"].as_str().is_some_and(|k| k.ends_with("List")) => {
                    for item in items {
                        out.push(self.apply_object(item).await?);
                    }
                }
                _ => out.push(self.apply_object(&doc).await?),
            }
        }
        Ok(out)
    }

    /// Server-side apply one object (see [`Cluster::apply_yaml`]).
    pub async fn apply_object(&self, obj: &Value) -> Result<Value, ClusterError> {
        Ok(match self {
            Cluster::Emulator(emu) => emu.apply_object(obj)?,
            Cluster::Real(real) => real.apply_object(obj).await?,
        })
    }

    /// Read an object (`namespace` is ignored for cluster-scoped kinds).
    ///
    /// # Panics
    /// When the real API server does not answer: a test cannot go on without it.
    pub async fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        match self {
            Cluster::Emulator(emu) => emu.get(api_version, kind, namespace, name),
            Cluster::Real(real) => real
                .get(api_version, kind, namespace, name)
                .await
                .expect("the API server answers"),
        }
    }

    /// Every object of a kind, optionally in one namespace.
    ///
    /// # Panics
    /// When the real API server does not answer.
    pub async fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        match self {
            Cluster::Emulator(emu) => emu.list(api_version, kind, namespace),
            Cluster::Real(real) => real
                .list(api_version, kind, namespace)
                .await
                .expect("the API server answers"),
        }
    }

    /// The newest resourceVersion the server handed out: equal before and after a read means
    /// nothing was written in between.
    ///
    /// # Panics
    /// When the real API server does not answer.
    pub async fn resource_version(&self) -> u64 {
        match self {
            Cluster::Emulator(emu) => emu.resource_version(),
            Cluster::Real(real) => real
                .resource_version()
                .await
                .expect("the API server answers"),
        }
    }

    /// Forget the requests served so far: [`Cluster::requests`] answers from here on.
    pub fn clear_requests(&self) {
        match self {
            Cluster::Emulator(emu) => emu.request_log().clear(),
            Cluster::Real(real) => real.clear_requests(),
        }
    }

    /// The requests the API server served that satisfy `keep`: the emulator's request log, or
    /// the real server's audit log (without the control plane's own traffic).
    pub fn requests(&self, keep: impl Fn(&LogEntry) -> bool) -> Vec<LogEntry> {
        match self {
            Cluster::Emulator(emu) => emu.request_log().filter(keep),
            Cluster::Real(real) => real.requests().into_iter().filter(|e| keep(e)).collect(),
        }
    }
}
