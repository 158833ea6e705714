//! The verifier's side of the harness: a cluster with the chart's RBAC, a verifier running
//! in-process as its ServiceAccount, and ApiKeys whose status holds the hashes of tokens the test
//! minted (no controller needed).

use std::net::SocketAddr;

use keysmith::api::{ApiKey, Encoding};
use keysmith::components::{self, Components, VerifierPart};
use keysmith::controller::{Clock, system_clock};
use keysmith::devcluster;
use keysmith::scope::Scope;
use keysmith::telemetry::{Shutdown, ShutdownTrigger};
use keysmith::token::Token;
use keysmith::verifier::tenancy::Tenancy;
use keysmith::verifier::{Settings, client_ip};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub use super::http::{Response, get, request};
pub use super::{Cluster, Identity, eventually, logs, real};

pub const NS: &str = "shop";

/// A running cluster and verifier.
pub struct Harness {
    pub cluster: Cluster,
    pub admin: kube::Client,
    pub api: SocketAddr,
    pub probes: SocketAddr,
    stop: Option<ShutdownTrigger>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.trigger();
        }
    }
}

/// The ServiceAccount the verifier runs as.
pub fn verifier_identity() -> Identity {
    devcluster::verifier_identity()
}

/// A cluster prepared like one with the chart installed, plus namespace [`NS`].
pub async fn cluster() -> Cluster {
    super::cluster(NS).await
}

/// Start a verifier (as its ServiceAccount) with `trusted` proxies and wait until it is ready.
pub async fn start(trusted: &[&str]) -> Harness {
    start_on(cluster().await, trusted).await
}

/// Like [`start`], on a `cluster` the test prepared first.
pub async fn start_on(cluster: Cluster, trusted: &[&str]) -> Harness {
    let own = Tenancy::parse(NS, &[]).expect("NS is a namespace name");
    start_with(cluster, trusted, own).await
}

/// Like [`start_on`], the verifier accepting keys as `tenancy` says (the others accept [`NS`] on
/// unscoped routes).
pub async fn start_with(cluster: Cluster, trusted: &[&str], tenancy: Tenancy) -> Harness {
    start_configured(cluster, trusted, tenancy, Settings::default()).await
}

/// Like [`start_with`], with the flags' `settings`.
pub async fn start_configured(
    cluster: Cluster,
    trusted: &[&str],
    tenancy: Tenancy,
    settings: Settings,
) -> Harness {
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_listening_with(cluster, trusted, tenancy, api, settings).await
}

/// Like [`start_with`], the verification API served on `api`, bound before the cluster started
/// (so the API server's TokenReview webhook could name its address).
pub async fn start_listening(
    cluster: Cluster,
    trusted: &[&str],
    tenancy: Tenancy,
    api: TcpListener,
) -> Harness {
    start_listening_with(cluster, trusted, tenancy, api, Settings::default()).await
}

/// Like [`start_listening`], with the flags' `settings`.
async fn start_listening_with(
    cluster: Cluster,
    trusted: &[&str],
    tenancy: Tenancy,
    api: TcpListener,
    settings: Settings,
) -> Harness {
    logs::capture("info");
    let admin = cluster.client().await.expect("admin client");
    let mut spawned = spawn_with(&cluster, trusted, tenancy, api, system_clock(), settings).await;
    Harness {
        cluster,
        admin,
        api: spawned.api,
        probes: spawned.probes,
        stop: spawned.stop.take(),
    }
}

/// A verifier running beside a cluster the caller keeps, until [`Spawned::stop`] or drop.
pub struct Spawned {
    pub api: SocketAddr,
    pub probes: SocketAddr,
    stop: Option<ShutdownTrigger>,
}

impl Spawned {
    /// Shut it down (as SIGTERM does).
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            stop.trigger();
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.trigger();
        }
    }
}

/// Start a verifier (as its ServiceAccount) on `cluster`, deciding at the time `clock` says,
/// and wait until it is ready.
pub async fn spawn(
    cluster: &Cluster,
    trusted: &[&str],
    tenancy: Tenancy,
    api: TcpListener,
    clock: Clock,
) -> Spawned {
    spawn_with(cluster, trusted, tenancy, api, clock, Settings::default()).await
}

/// Like [`spawn`], with the flags' `settings`.
pub async fn spawn_with(
    cluster: &Cluster,
    trusted: &[&str],
    tenancy: Tenancy,
    api: TcpListener,
    clock: Clock,
    settings: Settings,
) -> Spawned {
    let client = cluster
        .client_as(&verifier_identity())
        .await
        .expect("verifier client");
    let trusted: Vec<String> = trusted.iter().map(|s| s.to_string()).collect();
    let probes = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (api_addr, probes_addr) = (api.local_addr().unwrap(), probes.local_addr().unwrap());
    let components = Components {
        controller: None,
        verifier: Some(VerifierPart {
            client,
            api,
            trusted_proxies: client_ip::parse_trusted(&trusted).unwrap(),
            tenancy,
            usage: None,
            clock,
        }),
        scope: Scope::default(),
        metrics: probes,
    };
    components::preflight(&components)
        .await
        .expect("the chart's rules allow listing ApiKeys");
    let (stop, stopped) = Shutdown::new();
    tokio::spawn(async move {
        components::serve_with(components, settings, stopped)
            .await
            .expect("verifier serves");
    });
    eventually("the verifier to be ready", || async {
        (get(probes_addr, "/readyz").await.status == 200).then_some(())
    })
    .await;
    Spawned {
        api: api_addr,
        probes: probes_addr,
        stop: Some(stop),
    }
}

/// Mint a token.
pub fn token(prefix: &str) -> Token {
    Token::generate(prefix, 32, Encoding::Base62).unwrap()
}

/// One status entry for `slot` holding `token` as current.
pub fn status_token(slot: &str, token: &Token) -> Value {
    json!({"name": slot, "id": token.id(), "sha256": token.sha256_hex(), "issuedAt": "2026-01-01T00:00:00Z"})
}

/// One `status.requiredHeaders` entry: the hash the controller publishes of `value`, read from
/// key `key` of Secret `secret` for header `header`.
pub fn status_header(header: &str, secret: &str, key: &str, value: &str) -> Value {
    json!({"name": header, "secretKeyRef": {"name": secret, "key": key},
        "sha256": keysmith::token::sha256_hex(value)})
}

impl Harness {
    pub fn apikeys(&self) -> Api<ApiKey> {
        Api::namespaced(self.admin.clone(), NS)
    }

    /// Create ApiKey `name` with `spec` (and `finalizers`), then write `status_tokens` to its status.
    pub async fn create_key(
        &self,
        name: &str,
        spec: Value,
        finalizers: &[&str],
        status_tokens: Vec<Value>,
    ) {
        let key: ApiKey = serde_json::from_value(json!({
            "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": name, "namespace": NS, "finalizers": finalizers},
            "spec": spec,
        }))
        .unwrap();
        self.apikeys()
            .create(&PostParams::default(), &key)
            .await
            .expect("ApiKey is created");
        self.set_status_tokens(name, status_tokens).await;
    }

    /// Replace the ApiKey's `status.tokens` (what the controller does on mint and rotation).
    pub async fn set_status_tokens(&self, name: &str, tokens: Vec<Value>) {
        self.apikeys()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"tokens": tokens}})),
            )
            .await
            .expect("status is written");
    }

    /// Replace the ApiKey's `status.requiredHeaders` (what the controller does when it reads a
    /// header's Secret).
    pub async fn set_status_headers(&self, name: &str, headers: Vec<Value>) {
        self.apikeys()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"requiredHeaders": headers}})),
            )
            .await
            .expect("status is written");
    }

    /// POST /v1/verify and return the JSON answer (asserting the 200).
    pub async fn verify(&self, body: Value) -> Value {
        let response = request(self.api, "POST", "/v1/verify", &[], Some(&body.to_string())).await;
        assert_eq!(response.status, 200, "{}", response.body);
        serde_json::from_str(&response.body).unwrap()
    }

    /// The code /v1/verify answers for `token` with nothing else asked.
    pub async fn code(&self, token: &str) -> String {
        self.verify(json!({"token": token})).await["code"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Poll until `token` answers `code`.
    pub async fn wait_for_code(&self, token: &str, code: &str) {
        eventually(&format!("the verifier to answer {code}"), || async {
            (self.code(token).await == code).then_some(())
        })
        .await;
    }
}
