//! A real control plane for tests, the Rust counterpart of controller-runtime's envtest: etcd,
//! kube-apiserver (RBAC, ServiceAccount tokens, an audit log) and kube-controller-manager (garbage
//! collector, namespace, deployment, replicaset and ServiceAccount controllers) on free loopback
//! ports with a temporary data folder. Dropping a [`RealCluster`] stops every process and removes
//! the folder, also when a test panics.

mod audit;
mod objects;
mod pki;

use std::collections::HashMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use keysmith_emulator::{Identity, LogEntry};
use kube::Api;
use kube::api::{ApiResource, GroupVersionKind, ObjectMeta, PostParams};
use kube::discovery::Scope;

use crate::binaries::binary;
use pki::{Authority, Pem};

/// How long the control plane may take to become ready on a loaded 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The controllers of kube-controller-manager that Keysmith's behaviour depends on: owned
/// Secrets are garbage-collected, namespaces are emptied on delete, a patched pod template rolls
/// out a new ReplicaSet, ServiceAccounts exist in every namespace, and ClusterRoles labelled
/// `aggregate-to-edit` (the chart's usage reader) join the built-in roles.
const CONTROLLERS: &str = "garbage-collector-controller,namespace-controller,\
deployment-controller,replicaset-controller,serviceaccount-controller,\
serviceaccount-token-controller,clusterrole-aggregation-controller";

/// The Common Name of the aggregator's front-proxy client certificate, the one name aggregated API
/// servers accept it under (`--requestheader-allowed-names`).
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

/// The administrator's client-certificate identity.
const ADMIN: &str = "keysmith-testenv:admin";
/// kube-controller-manager's identity (left out of the audit log).
const CONTROLLER_MANAGER: &str = "keysmith-testenv:controller-manager";

/// Why the control plane could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum RealError {
    /// Files or processes.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificate generation.
    #[error("generating certificates: {0}")]
    Pki(#[from] rcgen::Error),
    /// A process exited or the server never became ready.
    #[error("{0}")]
    Start(String),
    /// A kube-rs client could not be built or a request failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A generated kubeconfig did not load.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A fixture is not an object of a known kind.
    #[error("fixture: {0}")]
    Fixture(String),
    /// A client certificate can carry one group only.
    #[error("user {0}: a client certificate carries at most one group")]
    Groups(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RealError {
    let context = context.into();
    move |source| RealError::Io { context, source }
}

/// A child process, killed and reaped on drop; its output goes to `<dir>/<name>.log`.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &'static str, dir: &Path, args: &[String]) -> Result<Process, RealError> {
        let log = dir.join(format!("{name}.log"));
        let out = fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(io("duplicating a log handle"))?;
        let child = Command::new(binary(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io(format!("starting {name}")))?;
        Ok(Process { name, child, log })
    }

    /// An error naming the process and the end of its log when it has exited.
    fn check(&mut self) -> Result<(), RealError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(RealError::Start(format!(
                "{} exited ({status}); the end of its log:\n{}",
                self.name,
                tail(&self.log, 30)
            ))),
            Err(e) => Err(io(format!("waiting for {}", self.name))(e)),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether kube-apiserver serves `/debug/pprof`: `KEYSMITH_TESTENV_PROFILING=1`.
fn profiling() -> bool {
    std::env::var_os("KEYSMITH_TESTENV_PROFILING").is_some_and(|v| v == "1")
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// This machine's address on its default route: what an Endpoints or EndpointSlice object may
/// name for a server the API server should call (loopback addresses are refused). Connecting a
/// UDP socket sends nothing; it only picks the route. `None` without a non-loopback route.
pub fn host_ip() -> Option<std::net::IpAddr> {
    ["192.0.2.1:9", "[2001:db8::1]:9"]
        .into_iter()
        .find_map(|target| {
            let bind = if target.starts_with('[') {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            };
            let socket = std::net::UdpSocket::bind(bind).ok()?;
            socket.connect(target).ok()?;
            let ip = socket.local_addr().ok()?.ip();
            (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
        })
}

fn free_port() -> Result<u16, RealError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io("finding a free port"))?
        .port())
}

/// What a test asks of the control plane beyond the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RealOptions {
    /// Authenticate bearer tokens the API server does not know itself through this TokenReview
    /// webhook, as docs/gateways.md configures kube-apiserver for the verifier: a kubeconfig
    /// naming the URL (`http://` on loopback, or `https://` with a certificate the system trusts)
    /// in `--authentication-token-webhook-config-file`, `--authentication-token-webhook-version=v1`
    /// and `--authentication-token-webhook-cache-ttl=0s`. The webhook is first called when a
    /// token arrives, so it may start after the control plane.
    pub token_webhook: Option<String>,
}

/// A running control plane.
pub struct RealCluster {
    url: String,
    authority: Authority,
    admin: Pem,
    audit_log: PathBuf,
    /// How many audit entries [`RealCluster::clear_requests`] set aside.
    requests_seen: Mutex<usize>,
    /// Kinds the fixtures used, resolved through discovery once.
    resources: Mutex<HashMap<GroupVersionKind, (ApiResource, Scope)>>,
    // Declared before `dir` so the processes stop before their folder is removed; the
    // controller manager (last started) stops first.
    processes: Vec<Process>,
    dir: tempfile::TempDir,
}

impl RealCluster {
    /// Start etcd, kube-apiserver and kube-controller-manager and wait until the API server is
    /// ready.
    pub async fn start() -> Result<RealCluster, RealError> {
        RealCluster::start_with(&RealOptions::default()).await
    }

    /// Like [`RealCluster::start`], with `options`.
    pub async fn start_with(options: &RealOptions) -> Result<RealCluster, RealError> {
        // The ports are free when chosen but not held until etcd and kube-apiserver bind them,
        // so a test starting its own server at the same moment can take one first: start again
        // on fresh ports.
        let mut attempts = 3;
        loop {
            match RealCluster::start_once(options).await {
                Err(RealError::Start(log))
                    if attempts > 1 && log.contains("address already in use") =>
                {
                    attempts -= 1;
                }
                started => return started,
            }
        }
    }

    async fn start_once(options: &RealOptions) -> Result<RealCluster, RealError> {
        let dir = tempfile::Builder::new()
            .prefix("keysmith-testenv-")
            .tempdir()
            .map_err(io("creating the data folder"))?;
        let root = dir.path().to_owned();
        let path = |name: &str| root.join(name).to_string_lossy().into_owned();
        let write = |name: &str, content: &str| {
            fs::write(root.join(name), content).map_err(io(format!("writing {name}")))
        };

        let authority = Authority::new()?;
        let serving = authority.serving()?;
        let sa = pki::service_account_keys()?;
        let admin = authority.client(ADMIN, Some("system:masters"))?;
        let manager = authority.client(CONTROLLER_MANAGER, Some("system:masters"))?;
        let front_proxy = Authority::named("keysmith-testenv-front-proxy-ca")?;
        let proxy_client = front_proxy.client(FRONT_PROXY_CLIENT, None)?;
        write("ca.crt", &authority.ca_pem)?;
        write("front-proxy-ca.crt", &front_proxy.ca_pem)?;
        write("front-proxy-client.crt", &proxy_client.cert)?;
        write("front-proxy-client.key", &proxy_client.key)?;
        write("serving.crt", &serving.cert)?;
        write("serving.key", &serving.key)?;
        write("sa.pub", &sa.cert)?;
        write("sa.key", &sa.key)?;
        write("audit-policy.yaml", audit::POLICY)?;

        let (client_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let url = format!("https://127.0.0.1:{api_port}");
        write(
            "controller-manager.kubeconfig",
            &kubeconfig(&url, &authority.ca_pem, &Credentials::Cert(&manager)),
        )?;

        let mut processes = vec![Process::spawn(
            "etcd",
            &root,
            &[
                "--name=default".into(),
                format!("--data-dir={}", path("etcd")),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                // A throwaway store: durability buys nothing and fsync costs the tests time.
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
        )?];
        let mut apiserver_args = vec![
            format!("--etcd-servers={client_url}"),
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // A loopback address cannot back the `kubernetes` Service's endpoints, and no
            // pod here would use them.
            "--endpoint-reconciler-type=none".into(),
            format!("--cert-dir={}", path("apiserver")),
            format!("--tls-cert-file={}", path("serving.crt")),
            format!("--tls-private-key-file={}", path("serving.key")),
            format!("--client-ca-file={}", path("ca.crt")),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", path("sa.pub")),
            format!("--service-account-signing-key-file={}", path("sa.key")),
            format!("--audit-policy-file={}", path("audit-policy.yaml")),
            format!("--audit-log-path={}", path("audit.log")),
            "--audit-log-format=json".into(),
            // The default rotates the file at 100 MB, which a 10,000-key benchmark passes;
            // the harness reads it from the start.
            "--audit-log-maxsize=100000".into(),
            // Go's pprof handlers under /debug/pprof, for the administrator only: off unless a
            // benchmark asks for a profile of the server (docs/testing.md).
            format!("--profiling={}", profiling()),
            // API aggregation, as kubeadm configures it: the aggregator authenticates to
            // aggregated API servers with the front-proxy client certificate and names the
            // user in these headers, and calls the endpoints of their Service directly (no
            // kube-proxy here to route a Service's cluster IP).
            format!(
                "--requestheader-client-ca-file={}",
                path("front-proxy-ca.crt")
            ),
            format!("--requestheader-allowed-names={FRONT_PROXY_CLIENT}"),
            "--requestheader-username-headers=X-Remote-User".into(),
            "--requestheader-group-headers=X-Remote-Group".into(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
            format!(
                "--proxy-client-cert-file={}",
                path("front-proxy-client.crt")
            ),
            format!("--proxy-client-key-file={}", path("front-proxy-client.key")),
            "--enable-aggregator-routing=true".into(),
        ];
        if let Some(url) = &options.token_webhook {
            write("token-webhook.kubeconfig", &webhook_kubeconfig(url))?;
            apiserver_args.extend([
                format!(
                    "--authentication-token-webhook-config-file={}",
                    path("token-webhook.kubeconfig")
                ),
                "--authentication-token-webhook-version=v1".into(),
                "--authentication-token-webhook-cache-ttl=0s".into(),
            ]);
        }
        processes.push(Process::spawn("kube-apiserver", &root, &apiserver_args)?);
        let mut cluster = RealCluster {
            url,
            authority,
            admin,
            audit_log: root.join("audit.log"),
            requests_seen: Mutex::default(),
            resources: Mutex::default(),
            processes,
            dir,
        };
        cluster.wait_ready().await?;
        cluster.processes.push(Process::spawn(
            "kube-controller-manager",
            &root,
            &[
                format!("--kubeconfig={}", path("controller-manager.kubeconfig")),
                format!("--controllers={CONTROLLERS}"),
                format!("--service-account-private-key-file={}", path("sa.key")),
                format!("--root-ca-file={}", path("ca.crt")),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--leader-elect=false".into(),
                // No metrics or health endpoint is needed, so no serving port to collide on.
                "--secure-port=0".into(),
            ],
        )?);
        Ok(cluster)
    }

    async fn wait_ready(&mut self) -> Result<(), RealError> {
        let client = self.admin_client().await?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            for process in &mut self.processes {
                process.check()?;
            }
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| RealError::Start(e.to_string()))?;
            if client.request_text(request).await.is_ok_and(|t| t == "ok") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(RealError::Start(format!(
                    "kube-apiserver was not ready after {}s; the end of its log:\n{}",
                    START_TIMEOUT.as_secs(),
                    tail(&self.dir.path().join("kube-apiserver.log"), 30)
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The API server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The folder holding the data, certificates and each process's log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Fail when a control-plane process has exited.
    pub fn check(&mut self) -> Result<(), RealError> {
        self.processes.iter_mut().try_for_each(Process::check)
    }

    /// A kubeconfig for `identity`: a client certificate for the administrator and users, a
    /// real token from the TokenRequest API for a ServiceAccount (created when missing, as a
    /// chart or a user would).
    pub async fn kubeconfig(&self, identity: &Identity) -> Result<String, RealError> {
        Ok(match identity {
            Identity::Admin => kubeconfig(
                &self.url,
                &self.authority.ca_pem,
                &Credentials::Cert(&self.admin),
            ),
            Identity::User { name, groups } => {
                if groups.len() > 1 {
                    return Err(RealError::Groups(name.clone()));
                }
                let pem = self
                    .authority
                    .client(name, groups.first().map(String::as_str))?;
                kubeconfig(&self.url, &self.authority.ca_pem, &Credentials::Cert(&pem))
            }
            Identity::ServiceAccount { namespace, name } => {
                let token = self.service_account_token(namespace, name).await?;
                kubeconfig(
                    &self.url,
                    &self.authority.ca_pem,
                    &Credentials::Token(&token),
                )
            }
        })
    }

    async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<String, RealError> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.admin_client().await?, namespace);
        if accounts.get_opt(name).await?.is_none() {
            let account = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            };
            match accounts.create(&PostParams::default(), &account).await {
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                other => {
                    other?;
                }
            }
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(6 * 3600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let answer = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await?;
        answer.status.and_then(|s| s.token).ok_or_else(|| {
            RealError::Start(format!(
                "TokenRequest for {namespace}/{name} returned no token"
            ))
        })
    }

    /// A kube-rs client authenticated as the administrator.
    pub async fn admin_client(&self) -> Result<kube::Client, RealError> {
        client(&kubeconfig(
            &self.url,
            &self.authority.ca_pem,
            &Credentials::Cert(&self.admin),
        ))
        .await
    }

    /// A kube-rs client authenticated as `identity`.
    pub async fn client_as(&self, identity: &Identity) -> Result<kube::Client, RealError> {
        client(&self.kubeconfig(identity).await?).await
    }

    /// Every completed request the audit log holds since the last [`RealCluster::clear_requests`]
    /// (the control plane's own excluded).
    pub fn requests(&self) -> Vec<LogEntry> {
        let mut entries = audit::read(&self.audit_log).unwrap_or_default();
        let seen = *self.requests_seen.lock().unwrap_or_else(|e| e.into_inner());
        entries.drain(..seen.min(entries.len()));
        entries
    }

    /// Forget the requests logged so far.
    pub fn clear_requests(&self) {
        let all = audit::read(&self.audit_log).unwrap_or_default().len();
        *self.requests_seen.lock().unwrap_or_else(|e| e.into_inner()) = all;
    }
}

async fn client(kubeconfig: &str) -> Result<kube::Client, RealError> {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}

/// The kubeconfig kube-apiserver reads its TokenReview webhook from: the server only, the API
/// server presenting no credentials of its own.
fn webhook_kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: token-webhook
  cluster:
    server: {url}
users:
- name: kube-apiserver
  user: {{}}
contexts:
- name: token-webhook
  context: {{cluster: token-webhook, user: kube-apiserver}}
current-context: token-webhook
"
    )
}

enum Credentials<'a> {
    Cert(&'a Pem),
    Token(&'a str),
}

/// A kubeconfig document for `url`, default namespace `default`.
fn kubeconfig(url: &str, ca_pem: &str, credentials: &Credentials) -> String {
    let user = match credentials {
        Credentials::Cert(pem) => format!(
            "client-certificate-data: {}\n    client-key-data: {}",
            STANDARD.encode(&pem.cert),
            STANDARD.encode(&pem.key)
        ),
        Credentials::Token(token) => format!("token: {token}"),
    };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: {url}
    certificate-authority-data: {ca}
users:
- name: testenv
  user:
    {user}
contexts:
- name: testenv
  context: {{cluster: testenv, user: testenv, namespace: default}}
current-context: testenv
",
        ca = STANDARD.encode(ca_pem)
    )
}
