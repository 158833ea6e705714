//! Argument groups shared by the long-running commands (`controller`, `verifier`, `run`, `dev`),
//! so one flag means the same thing everywhere.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;
use kube::{Api, Client};

use crate::api::ApiKey;
use crate::cluster;
use crate::controller::leader::{LeaderConfig, default_lease_name};
use crate::scope::Scope;
use crate::telemetry::LogFormat;
use crate::verifier::activity::DEFAULT_MAX_TOKENS;
use crate::verifier::client_ip;
use crate::verifier::leaks::LeakConfig;
use crate::verifier::server::{Limits, MIN_HEADER_BYTES};
use crate::verifier::tenancy::Tenancy;
use crate::verifier::tls::TlsFiles;
use crate::verifier::usage_api::{self, UsageSettings};
use crate::verifier::{Settings, TokenMetricsCap};

/// `--namespace` and `--selector`: which ApiKeys this process handles (sharding, SPEC 2).
#[derive(Args, Debug, Clone, Default)]
pub struct ScopeArgs {
    /// Watch ApiKeys in this namespace only (default: all namespaces).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,

    /// Only ApiKeys whose labels match this selector (e.g. `shard=a`).
    #[arg(long, value_name = "LABELS")]
    pub selector: Option<String>,
}

impl ScopeArgs {
    /// As the controller's scope.
    pub fn scope(&self) -> Scope {
        Scope {
            namespace: self.namespace.clone(),
            selector: self.selector.clone(),
        }
    }
}

/// The controller's rules for personal keys (`spec.owner`).
#[derive(Args, Debug, Clone)]
pub struct PersonalKeyArgs {
    /// Mint personal keys (`spec.owner`). Set it only where the chart's personal-key admission
    /// policies are installed (`personalKeys.enabled`): they check that a key's owner is the
    /// user who created it and that only the controller writes its token hashes. Without it a
    /// personal key stays unminted (`Ready=False`, `PersonalKeysDisabled`).
    #[arg(long)]
    pub personal_keys: bool,

    /// Longest a personal key's token lives (1m to 2y, e.g. `90d`, `720h`): a longer or unset
    /// `expiresAfter` of a personal key is capped at it.
    #[arg(long = "personal-key-max-lifetime", value_name = "DURATION", default_value = "90d",
        value_parser = parse_max_lifetime)]
    pub max_lifetime: Duration,
}

impl PersonalKeyArgs {
    /// As the controller's policy.
    pub fn policy(&self) -> crate::controller::PersonalKeyPolicy {
        crate::controller::PersonalKeyPolicy {
            accepted: self.personal_keys,
            max_lifetime: self.max_lifetime,
        }
    }
}

fn parse_max_lifetime(value: &str) -> Result<Duration, String> {
    keysmith_core::personal::parse_max_lifetime(value).map_err(|e| e.to_string())
}

/// `--access-lists`: whether the controller acts on `spec.access`.
#[derive(Args, Debug, Clone, Default)]
pub struct AccessArgs {
    /// Act on `spec.access`: keep a Role and a RoleBinding per key that let the listed users,
    /// groups and ServiceAccounts read its Secrets. Set it only where the chart's admission
    /// policy is installed (`accessLists.enabled=true`), which lets only those who may read a
    /// key's Secrets grant reading them. Without it, a key with `spec.access` reports
    /// `Ready=False`, reason `AccessListsOff`, and nobody is granted anything.
    #[arg(long)]
    pub access_lists: bool,
}

/// `--max-concurrent-reconciles`: how hard the controller drives the API server.
#[derive(Args, Debug, Clone)]
pub struct ConcurrencyArgs {
    /// Keys reconciled at once. Each reconcile is a few API requests one after another, so this
    /// is about how many of the controller's requests the API server serves or has in flight at
    /// a time; lower it to leave more of a small API server to others, raise it when minting a
    /// large fleet is slower than the server's share for the controller allows.
    #[arg(long, value_name = "N", default_value_t = crate::controller::DEFAULT_CONCURRENCY,
        value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_reconciles: u16,
}

/// `--log-format` and `--metrics-listen`.
#[derive(Args, Debug, Clone)]
pub struct TelemetryArgs {
    /// Log format.
    #[arg(long, value_enum, default_value_t)]
    pub log_format: LogFormat,

    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
}

/// The verification API's address and the proxies it believes.
#[derive(Args, Debug, Clone)]
pub struct VerifierApiArgs {
    /// Address of the verification API (`/v1/verify`, `/v1/authz`, TokenReview).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Proxies whose `X-Forwarded-For` / `X-Real-IP` are believed, as CIDRs (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "CIDR,...")]
    pub trusted_proxies: Vec<String>,

    /// Seconds a connection has to send a complete request head, counted from when it waits for
    /// one: also how long an idle keep-alive connection stays open.
    #[arg(long, value_name = "SECONDS", default_value_t = Limits::default().header_read_timeout.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout: u64,

    /// Seconds a request has to send its whole body once its head is in (408 beyond).
    #[arg(long, value_name = "SECONDS", default_value_t = Limits::default().body_read_timeout.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout: u64,

    /// Largest request head in bytes (431 beyond); at least 8192.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_header_bytes as u64,
        value_parser = clap::value_parser!(u64).range(MIN_HEADER_BYTES as u64..))]
    pub max_header_bytes: u64,

    /// Connections open at once to the verification API. At the cap a new connection closes
    /// the longest-idle connection of the address holding the most, or is closed itself when
    /// every one is busy.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections as u64,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,

    /// Connections open at once to the verification API from one client address (an IPv6 /64
    /// counts as one); a new one beyond closes that address's longest-idle connection, or is
    /// closed itself.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections_per_peer as u64,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections_per_peer: u64,

    /// Seconds a client has to read what the verifier writes once a write has to wait for it;
    /// then the connection is closed (a client that never reads its answers).
    #[arg(long, value_name = "SECONDS", default_value_t = Limits::default().write_timeout.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..))]
    pub write_timeout: u64,

    /// Seconds a client has to complete the TLS handshake (with `--tls-cert-file`).
    #[arg(long, value_name = "SECONDS", default_value_t = Limits::default().tls_handshake_timeout.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..))]
    pub tls_handshake_timeout: u64,

    /// Audiences a TokenReview may ask for (comma-separated); a review asking only others is not
    /// authenticated. Default: none, so only reviews that ask no audience authenticate.
    #[arg(long, value_delimiter = ',', value_name = "AUDIENCE,...")]
    pub token_review_audiences: Vec<String>,

    /// Namespaces whose keys the unscoped routes (`/v1/verify`, `/v1/authz`) and TokenReviews
    /// without a mapped audience accept (comma-separated), or '*' for every namespace. Default:
    /// none; routes under `/v1/namespaces/<ns>[,...]/` accept the namespaces they name.
    #[arg(long, value_name = "NS,...|*", default_value = "")]
    pub accept_namespaces: String,

    /// PEM certificate chain to serve the verification API over HTTPS (`tls.crt` of a mounted
    /// `kubernetes.io/tls` Secret); reloaded when it changes. Needs `--tls-key-file`.
    #[arg(long, value_name = "FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of `--tls-cert-file` (`tls.key`).
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// `AUDIENCE=NS,...`: the namespaces whose keys a TokenReview asking that audience accepts
    /// ('*' for every namespace); the audience is then served. Repeat for several audiences.
    #[arg(long, value_name = "AUDIENCE=NS,...")]
    pub token_review_audience_namespaces: Vec<String>,

    /// Audiences of `--token-review-audience-namespaces` (comma-separated) for which a personal
    /// key (`spec.owner`) authenticates as its owner: the API servers asking them trust the
    /// owner's RBAC to its tokens. Default: none, so a personal key answers as any key.
    #[arg(long, value_delimiter = ',', value_name = "AUDIENCE,...")]
    pub token_review_personal_audiences: Vec<String>,

    /// Most tokens whose recent requests and counts are kept for `keysmith usage` (the least
    /// recently used is forgotten beyond); 0 keeps none. Nothing is kept without
    /// `--usage-listen`.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_TOKENS)]
    pub usage_max_tokens: usize,

    /// Most tokens that get per-token series (`keysmith_token_verifications_total`) when their
    /// ApiKey opts in with `keysmith.dev/usage-metrics: "true"`; beyond, their verifications
    /// count in `keysmith_token_verifications_untracked_total`. 0: none.
    #[arg(long, value_name = "N", default_value_t = TokenMetricsCap::default().0)]
    pub token_metrics_max_tokens: usize,

    /// Address of the usage API (HTTPS, the aggregated API `usage.keysmith.dev`); default: not
    /// served. Needs `--usage-tls-cert-file` and `--usage-tls-key-file`.
    #[arg(long, value_name = "ADDR", requires_all = ["usage_tls_cert_file", "usage_tls_key_file"])]
    pub usage_listen: Option<SocketAddr>,

    /// PEM certificate chain of the usage API; reloaded when it changes.
    #[arg(long, value_name = "FILE", requires = "usage_tls_key_file")]
    pub usage_tls_cert_file: Option<PathBuf>,

    /// PEM private key of `--usage-tls-cert-file`.
    #[arg(long, value_name = "FILE", requires = "usage_tls_cert_file")]
    pub usage_tls_key_file: Option<PathBuf>,

    /// Service whose EndpointSlices list the verifier replicas the usage API gathers from
    /// (default: none, each replica answers alone). Needs `--usage-peer-ca-file`.
    #[arg(long, value_name = "NAME", requires = "usage_peer_ca_file")]
    pub usage_service: Option<String>,

    /// Namespace of `--usage-service` (default: the pod's).
    #[arg(long, value_name = "NS", env = "POD_NAMESPACE")]
    pub usage_service_namespace: Option<String>,

    /// PEM CA bundle the replicas' usage API certificates chain to; they are checked under the
    /// name `<usage-service>.<namespace>.svc`.
    #[arg(long, value_name = "FILE")]
    pub usage_peer_ca_file: Option<PathBuf>,

    /// Bearer token this replica shows the others (its ServiceAccount token, re-read as it
    /// rotates).
    #[arg(long, value_name = "FILE", default_value = SERVICE_ACCOUNT_TOKEN)]
    pub usage_peer_token_file: PathBuf,

    /// This replica's name in usage answers (default: the pod name, else the host name).
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    pub usage_replica_name: Option<String>,

    /// GitHub's secret scanning public keys (the JSON GitHub publishes for them): serves
    /// `POST /v1/leaks/github` for reports signed with one of them. Default: not served.
    #[arg(long, value_name = "FILE")]
    pub leak_report_github_keys_file: Option<PathBuf>,

    /// A file holding the secret (16 characters or more) that plain leak reports
    /// (`POST /v1/leaks`, `keysmith report-leak`) send as a bearer token. Default: not served.
    #[arg(long, value_name = "FILE")]
    pub leak_report_token_file: Option<PathBuf>,
}

/// Where a pod's ServiceAccount token is mounted.
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

impl VerifierApiArgs {
    /// `--trusted-proxies` parsed; the error names the flag.
    pub fn trusted_proxies(&self) -> Result<Vec<IpNet>, String> {
        client_ip::parse_trusted(&self.trusted_proxies)
            .map_err(|e| format!("--trusted-proxies: {e}"))
    }

    /// `--accept-namespaces`, `--token-review-audience-namespaces` and
    /// `--token-review-personal-audiences` parsed; the error names the flag.
    pub fn tenancy(&self) -> Result<Tenancy, String> {
        let audiences: Vec<&str> = self
            .token_review_audience_namespaces
            .iter()
            .map(String::as_str)
            .collect();
        Tenancy::parse(&self.accept_namespaces, &audiences)?
            .with_personal_audiences(&self.token_review_personal_audiences)
    }

    /// The verifier's settings from these flags; the error names the file that did not load.
    pub fn settings(&self) -> Result<Settings, String> {
        let leaks = LeakConfig::load(
            self.leak_report_github_keys_file.as_deref(),
            self.leak_report_token_file.as_deref(),
        )
        .map_err(|e| e.to_string())?;
        Ok(Settings {
            leaks,
            limits: Limits {
                header_read_timeout: Duration::from_secs(self.header_read_timeout),
                body_read_timeout: Duration::from_secs(self.body_read_timeout),
                max_header_bytes: usize::try_from(self.max_header_bytes).unwrap_or(usize::MAX),
                max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
                max_connections_per_peer: usize::try_from(self.max_connections_per_peer)
                    .unwrap_or(usize::MAX),
                write_timeout: Duration::from_secs(self.write_timeout),
                tls_handshake_timeout: Duration::from_secs(self.tls_handshake_timeout),
            },
            token_review_audiences: self.token_review_audiences.clone(),
            token_metrics_cap: TokenMetricsCap(self.token_metrics_max_tokens),
            tls: self
                .tls_cert_file
                .clone()
                .zip(self.tls_key_file.clone())
                .map(|(cert, key)| TlsFiles { cert, key }),
            usage: UsageSettings {
                // Kept only while someone can read it.
                max_tokens: if self.usage_listen.is_some() {
                    self.usage_max_tokens
                } else {
                    0
                },
                tls: self
                    .usage_tls_cert_file
                    .clone()
                    .zip(self.usage_tls_key_file.clone())
                    .map(|(cert, key)| TlsFiles { cert, key }),
                replica: self
                    .usage_replica_name
                    .clone()
                    .unwrap_or_else(default_identity),
                peers: usage_api::peer_settings(
                    self.usage_service_namespace.clone(),
                    self.usage_service.clone(),
                    self.usage_peer_ca_file.clone(),
                    self.usage_peer_token_file.clone(),
                ),
            },
        })
    }
}

/// Leader election on a `coordination.k8s.io/v1` Lease.
#[derive(Args, Debug, Clone)]
pub struct LeaderArgs {
    /// Namespace of the leader-election Lease (default: the pod's namespace, else the
    /// kubeconfig context's).
    #[arg(long, value_name = "NS", env = "POD_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader-election Lease (default: keysmith-controller; with --selector,
    /// keysmith-controller-<hash of the selector>, so shards in one namespace never share one).
    #[arg(long, value_name = "NAME")]
    pub lease_name: Option<String>,

    /// This replica's identity in the Lease (default: the pod name, else the host name).
    #[arg(long, value_name = "ID", env = "POD_NAME")]
    pub identity: Option<String>,

    /// Seconds a leader's claim lasts without renewal.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub lease_duration: u64,

    /// Seconds before the end of its claim the leader renews it.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub lease_renew_grace: u64,
}

impl LeaderArgs {
    /// The election settings; `default_namespace` is the client's when no flag or pod says, and
    /// `selector` (`--selector`) names the default Lease.
    pub fn config(&self, default_namespace: &str, selector: Option<&str>) -> LeaderConfig {
        LeaderConfig {
            lease_name: self
                .lease_name
                .clone()
                .unwrap_or_else(|| default_lease_name(selector)),
            namespace: self
                .leader_election_namespace
                .clone()
                .unwrap_or_else(|| default_namespace.to_owned()),
            identity: self.identity.clone().unwrap_or_else(default_identity),
            lease_duration: Duration::from_secs(self.lease_duration),
            renew_grace: Duration::from_secs(self.lease_renew_grace),
        }
    }
}

/// The pod name is the natural identity; outside a pod the host name, else the process id.
fn default_identity() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| format!("keysmith-{}", std::process::id()))
}

/// `--kubeconfig` and `--context`, as kubectl takes them: which cluster `status` and `rotate`
/// talk to.
#[derive(Args, Debug, Clone, Default)]
pub struct ClusterArgs {
    /// Kubeconfig file (default: KUBECONFIG, else ~/.kube/config, else the pod's ServiceAccount).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

/// `[-n NS] [--kubeconfig PATH] [--context NAME]`: a namespace of a cluster.
#[derive(Args, Debug, Clone, Default)]
pub struct NamespaceArgs {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,

    #[command(flatten)]
    pub cluster: ClusterArgs,
}

impl NamespaceArgs {
    /// Connect; the namespace is `-n`, else the context's. Failures are one line.
    pub async fn connect(&self) -> Result<(Client, String), String> {
        self.connect_with(cluster::Retries::Server).await
    }

    /// [`NamespaceArgs::connect`] with a client that retries as `retries` says.
    pub async fn connect_with(
        &self,
        retries: cluster::Retries,
    ) -> Result<(Client, String), String> {
        let source = cluster::Source {
            kubeconfig: self.cluster.kubeconfig.clone(),
            context: self.cluster.context.clone(),
        };
        let client = cluster::connect_to(&source, retries)
            .await
            .map_err(|e| e.to_string())?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        Ok((client, namespace))
    }
}

/// `NAME [-n NS] [--kubeconfig PATH] [--context NAME]`: one ApiKey of a cluster (`rotate`).
#[derive(Args, Debug)]
pub struct ApiKeyRef {
    /// ApiKey name.
    pub name: String,

    #[command(flatten)]
    pub at: NamespaceArgs,
}

/// An ApiKey read from the cluster, with the API it came from.
pub struct FetchedApiKey {
    /// The ApiKey's namespaced API, for follow-up requests.
    pub api: Api<ApiKey>,
    /// Its namespace.
    pub namespace: String,
    /// The object.
    pub key: ApiKey,
}

impl ApiKeyRef {
    /// Connect and read the ApiKey; every failure is one line naming what was refused.
    pub async fn fetch(&self) -> Result<FetchedApiKey, String> {
        let (client, namespace) = self.at.connect().await?;
        fetch(client, namespace, &self.name).await
    }
}

/// Read ApiKey `namespace/name`; a missing key or a refusal is one line.
pub async fn fetch(client: Client, namespace: String, name: &str) -> Result<FetchedApiKey, String> {
    let api: Api<ApiKey> = Api::namespaced(client, &namespace);
    let key = api
        .get_opt(name)
        .await
        .map_err(|e| describe_error(e, "get", Some(&namespace)))?
        .ok_or_else(|| format!("ApiKey {namespace}/{name} not found"))?;
    Ok(FetchedApiKey {
        api,
        namespace,
        key,
    })
}

/// An API error on ApiKeys as one line (permission denied, unreachable, …); `namespace` is
/// `None` for a request across all namespaces.
pub fn describe_error(error: kube::Error, verb: &str, namespace: Option<&str>) -> String {
    cluster::classify::<ApiKey>(error, verb, namespace, &user_role(verb, namespace)).to_string()
}

/// Which of the chart's user ClusterRoles (templates/rbac-users.yaml) grants `verb` on ApiKeys,
/// and how to bind it: the person running the command is not a Keysmith component, so the
/// controller's and verifier's rules are not what they need.
fn user_role(verb: &str, namespace: Option<&str>) -> String {
    let role = match verb {
        "get" | "list" | "watch" => "apikeys-view",
        _ => "apikeys-edit",
    };
    let binding = namespace.map_or_else(
        || "a ClusterRoleBinding".to_owned(),
        |ns| format!("a RoleBinding in namespace {ns}"),
    );
    format!(
        "ask for the ClusterRole keysmith-{role} that the Keysmith chart creates \
         (<release>-{role} under another release name), bound to you by {binding}"
    )
}
