//! Keysmith's Kubernetes API emulator: an in-process HTTP(S) server that
//! speaks the Kubernetes REST protocol for the resources Keysmith, kubectl
//! and the verifier use, with the semantics an operator depends on
//! (resourceVersions and conflicts, watches with bookmarks and `410 Gone`,
//! generation, the status subresource, finalizers, garbage collection,
//! server-side apply with managedFields, CRD schema and CEL validation, RBAC)
//! plus fault injection. It is a development and test tool, not a
//! production server; see the README for what it does not emulate.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keysmith_emulator::Error> {
//! use keysmith_emulator::{Config, Emulator, Identity};
//! let emu = Emulator::start(Config::default()).await?;
//! emu.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n")?;
//! let admin: kube::Client = emu.client().await?;
//! let sa = emu.client_as(&Identity::service_account("demo", "app")).await?;
//! # let _ = (admin, sa);
//! # Ok(()) }
//! ```

mod admission;
mod aggregator;
mod cel;
mod discovery;
pub mod error;
mod events;
mod eventually;
pub mod faults;
mod fields;
mod gc;
mod http;
mod impersonation;
mod kubeconfig;
mod managed;
mod openapi;
mod patch;
mod protobuf;
pub mod rbac;
mod registry;
mod schema;
mod selector;
mod server;
mod state;
mod store;
mod table;
mod tls;
mod verbs;
mod watch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use error::ApiError;
pub use eventually::{EVENTUALLY_TIMEOUT, eventually};
pub use faults::{Faults, Target};
pub use rbac::UserInfo;
pub use server::{LogEntry, RequestLog};
pub use tls::{Certificate, serving_certificate};

use crate::patch::PatchType;
use crate::server::{Auth, Server};
use crate::state::{ObjectRef, State};
use crate::verbs::WriteOptions;

/// Errors of the library API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding or file I/O failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// TLS material could not be built.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The generated kubeconfig could not be loaded by kube-rs.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// kube-rs could not build a client.
    #[error("kube client: {0}")]
    Kube(#[from] kube::Error),
    /// A YAML fixture did not parse.
    #[error("YAML fixture: {0}")]
    Yaml(String),
    /// A fixture names a kind the emulator does not serve (yet: a CRD may be missing).
    #[error("no served kind {kind} in {api_version}")]
    UnknownKind {
        /// `apiVersion` of the document.
        api_version: String,
        /// `kind` of the document.
        kind: String,
    },
    /// The emulator refused a fixture object.
    #[error("{0}")]
    Api(#[from] ApiError),
}

/// How to start an emulator.
#[derive(Debug, Clone)]
pub struct Config {
    /// Loopback port; 0 picks a free one.
    pub port: u16,
    /// Serve HTTPS with a generated certificate instead of HTTP.
    pub tls: bool,
    /// Enforce RBAC for every identity except the administrator.
    pub rbac: bool,
    /// Watch history retained (events); older resourceVersions answer 410.
    pub history: usize,
    /// Interval between BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// Seed of the fault-injection RNG.
    pub fault_seed: u64,
    /// Bearer token of the `system:masters` administrator.
    pub admin_token: String,
    /// Accept bearer tokens that name their identity (`system:serviceaccount:NS:NAME`,
    /// `user:NAME:GROUPS`): convenient in tests, but anyone who reaches the port can then claim
    /// any identity. Off, [`Emulator::token`] hands out a random token per identity instead.
    pub naming_tokens: bool,
    /// Request log entries kept (the oldest are dropped first); the write
    /// counts of `RequestLog::writes` stay exact regardless.
    pub request_log_limit: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 0,
            tls: false,
            rbac: false,
            history: 10_000,
            bookmark_interval: Duration::from_secs(1),
            fault_seed: 0,
            admin_token: "keysmith-emulator-admin".into(),
            naming_tokens: true,
            request_log_limit: 100_000,
        }
    }
}

/// Who a client or kubeconfig authenticates as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// The administrator (`system:masters`, never subject to RBAC).
    Admin,
    /// A user with groups (plus `system:authenticated`).
    User {
        /// User name.
        name: String,
        /// Extra groups.
        groups: Vec<String>,
    },
    /// A ServiceAccount, `system:serviceaccount:NAMESPACE:NAME`.
    ServiceAccount {
        /// Namespace of the ServiceAccount.
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl Identity {
    /// A ServiceAccount identity.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Identity::ServiceAccount {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// A user identity.
    pub fn user(name: &str, groups: &[&str]) -> Self {
        Identity::User {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }
}

/// A fresh bearer token: 32 random bytes, hex-encoded.
pub fn random_token() -> String {
    use rand::RngExt;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A running emulator. Dropping it stops the listener.
#[derive(Debug)]
pub struct Emulator {
    server: Arc<Server>,
    /// Random tokens handed out per identity when naming tokens are off.
    issued: std::sync::Mutex<std::collections::HashMap<Identity, String>>,
    addr: SocketAddr,
    ca_pem: Option<String>,
    admin_token: String,
    task: JoinHandle<()>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Emulator {
    /// Start serving on the loopback interface.
    pub async fn start(config: Config) -> Result<Emulator, Error> {
        let listener = TcpListener::bind(("127.0.0.1", config.port)).await?;
        let addr = listener.local_addr()?;
        let tls = if config.tls {
            Some(tls::generate()?)
        } else {
            None
        };
        let front_proxy = tls::front_proxy()?;
        let mut state = State::new(config.history);
        aggregator::bootstrap(&mut state, &front_proxy);
        let server = Arc::new(Server::new(
            state,
            Faults::new(config.fault_seed),
            Auth {
                admin_token: config.admin_token.clone(),
                rbac: config.rbac,
                naming_tokens: config.naming_tokens,
                tokens: Default::default(),
            },
            config.bookmark_interval,
            addr.to_string(),
            server::RequestLog::new(config.request_log_limit),
            front_proxy,
        ));
        let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
        let router = http::router(server.clone());
        let task = tokio::spawn(server::serve(listener, router, tls));
        Ok(Emulator {
            server,
            issued: Default::default(),
            addr,
            ca_pem,
            admin_token: config.admin_token,
            task,
        })
    }

    /// The base URL (`http://127.0.0.1:PORT` or `https://...`).
    pub fn url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM of the CA that signed the serving certificate (TLS only).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The bearer token that authenticates as `identity`: one that names it, or without
    /// [`Config::naming_tokens`] a random one issued (once) for it.
    pub fn token(&self, identity: &Identity) -> String {
        let naming = match identity {
            Identity::Admin => return self.admin_token.clone(),
            Identity::User { name, groups } => format!("user:{name}:{}", groups.join(",")),
            Identity::ServiceAccount { namespace, name } => {
                format!("system:serviceaccount:{namespace}:{name}")
            }
        };
        if self.server.auth.naming_tokens {
            return naming;
        }
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        issued
            .entry(identity.clone())
            .or_insert_with(|| {
                let token = random_token();
                if let Some(user) = UserInfo::from_naming_token(&naming) {
                    self.add_token(&token, user);
                }
                token
            })
            .clone()
    }

    /// Register an opaque bearer token for an identity.
    pub fn add_token(&self, token: &str, user: UserInfo) {
        self.server
            .auth
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_string(), user);
    }

    /// A kubeconfig document for `identity`, default namespace `default`.
    pub fn kubeconfig(&self, identity: &Identity) -> String {
        kubeconfig::render(
            &self.url(),
            self.ca_pem.as_deref(),
            &self.token(identity),
            "default",
        )
    }

    /// Write a kubeconfig for `identity` to `path`, readable by its owner only
    /// (it holds a bearer token), atomically: a process polling for the file
    /// never reads half of it.
    pub fn write_kubeconfig(
        &self,
        path: impl AsRef<Path>,
        identity: &Identity,
    ) -> Result<(), Error> {
        let path = path.as_ref();
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let _ = std::fs::remove_file(&tmp);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?
            .write_all(self.kubeconfig(identity).as_bytes())?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// A kube-rs client authenticated as the administrator.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        self.client_as(&Identity::Admin).await
    }

    /// A kube-rs client authenticated as `identity`.
    pub async fn client_as(&self, identity: &Identity) -> Result<kube::Client, Error> {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig(identity))?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Server-side apply every document of a (multi-document) YAML string as
    /// the administrator, with field manager `keysmith-emulator-fixtures`
    /// and `force`, in order (so a CRD can precede its objects). Returns the
    /// stored objects.
    pub fn apply_yaml(&self, yaml: &str) -> Result<Vec<Value>, Error> {
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(yaml).map_err(|e| Error::Yaml(e.to_string()))?;
        let mut out = Vec::new();
        for doc in docs.into_iter().filter(|d| d.is_object()) {
            if doc["kind"].as_str().is_some_and(|k| k.ends_with("List"))
                && let Some(items) = doc["items"].as_array()
            {
                for item in items {
                    out.push(self.apply_object(item)?);
                }
                continue;
            }
            out.push(self.apply_object(&doc)?);
        }
        Ok(out)
    }

    /// Server-side apply one object as the administrator (see [`Emulator::apply_yaml`]).
    pub fn apply_object(&self, obj: &Value) -> Result<Value, Error> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let mut st = self.server.state();
        let rt = st
            .registry
            .lookup_kind(&api_version, &kind)
            .cloned()
            .ok_or(Error::UnknownKind { api_version, kind })?;
        let ns = if rt.namespaced {
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let opts = WriteOptions {
            manager: "keysmith-emulator-fixtures".into(),
            force: true,
            ..Default::default()
        };
        let applied = st.patch(
            ObjectRef::new(&rt, &ns, &name),
            PatchType::Apply,
            obj,
            &opts,
        )?;
        Ok(applied.object)
    }

    /// Read a stored object (`namespace` is ignored for cluster-scoped kinds).
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let st = self.server.state();
        let rt = st.registry.lookup_kind(api_version, kind)?.clone();
        let ns = if rt.namespaced { namespace } else { "" };
        st.get(ObjectRef::new(&rt, ns, name)).ok()
    }

    /// Every stored object of a kind, optionally in one namespace.
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let st = self.server.state();
        let Some(rt) = st.registry.lookup_kind(api_version, kind).cloned() else {
            return Vec::new();
        };
        st.store
            .list(&rt.group_resource(), namespace)
            .map(|(_, o)| state::present(&rt, o))
            .collect()
    }

    /// The latest resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.server.state().store.current_rv()
    }

    /// Drop all but the newest `keep` events from the watch history, so a
    /// watch or continue token from before answers `410 Gone`.
    pub fn compact(&self, keep: usize) {
        self.server.state().store.compact(keep);
    }

    /// Whether RBAC would allow `identity` to `verb` a resource (what
    /// `kubectl auth can-i` asks).
    pub fn can(
        &self,
        identity: &Identity,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: &str,
    ) -> bool {
        let Some(user) = self.server.auth.authenticate(Some(&self.token(identity))) else {
            return false;
        };
        let attrs = rbac::Attributes::Resource {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: String::new(),
            namespace: namespace.into(),
            name: String::new(),
        };
        self.server.permits(&user, &attrs)
    }

    /// The fault-injection settings.
    pub fn faults(&self) -> &Faults {
        &self.server.faults
    }

    /// The request log.
    pub fn request_log(&self) -> &RequestLog {
        &self.server.log
    }
}
