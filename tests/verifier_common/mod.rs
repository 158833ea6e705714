//! Shared harness of the verifier's end-to-end tests: the API emulator with RBAC on and the
//! chart's verifier rules, a verifier running as its ServiceAccount, ApiKeys whose status holds
//! the hashes of tokens the test minted (no controller needed), and a minimal HTTP client.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use keysmith::api::{ApiKey, Encoding};
use keysmith::components::{self, Components, VerifierPart};
use keysmith::controller::Scope;
use keysmith::devcluster;
use keysmith::telemetry::{LogFormat, Shutdown, ShutdownTrigger};
use keysmith::token::Token;
use keysmith::verifier::client_ip;
use keysmith_emulator::{Config, Emulator, Identity};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing_subscriber::EnvFilter;

pub const NS: &str = "shop";

/// A running emulator and verifier.
pub struct Harness {
    pub emu: Emulator,
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

/// The development cluster (RBAC on, the CRD, the chart's roles bound) plus namespace [`NS`].
pub async fn emulator() -> Emulator {
    let emu = devcluster::start(Config::default())
        .await
        .expect("emulator starts");
    emu.apply_object(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .expect("namespace applies");
    emu
}

/// Start a verifier (as its ServiceAccount) with `trusted` proxies and wait until it is ready.
pub async fn start(trusted: &[&str]) -> Harness {
    capture_logs();
    let emu = emulator().await;
    let admin = emu.client().await.expect("admin client");
    let client = emu
        .client_as(&verifier_identity())
        .await
        .expect("verifier client");
    let trusted: Vec<String> = trusted.iter().map(|s| s.to_string()).collect();
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let probes = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (api_addr, probes_addr) = (api.local_addr().unwrap(), probes.local_addr().unwrap());
    let components = Components {
        controller: None,
        verifier: Some(VerifierPart {
            client,
            api,
            trusted_proxies: client_ip::parse_trusted(&trusted).unwrap(),
        }),
        scope: Scope::default(),
        metrics: probes,
    };
    components::preflight(&components)
        .await
        .expect("the chart's rules allow listing ApiKeys");
    let (stop, stopped) = Shutdown::new();
    tokio::spawn(async move {
        components::serve(components, stopped)
            .await
            .expect("verifier serves");
    });
    let harness = Harness {
        emu,
        admin,
        api: api_addr,
        probes: probes_addr,
        stop: Some(stop),
    };
    eventually("the verifier to be ready", || async {
        (get(probes_addr, "/readyz").await.status == 200).then_some(())
    })
    .await;
    harness
}

/// Mint a token.
pub fn token(prefix: &str) -> Token {
    Token::generate(prefix, 32, Encoding::Base62).unwrap()
}

/// One status entry for `slot` holding `token` as current.
pub fn status_token(slot: &str, token: &Token) -> Value {
    json!({"name": slot, "id": token.id(), "sha256": token.sha256_hex(), "issuedAt": "2026-01-01T00:00:00Z"})
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

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`, so the body ends at EOF).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], None).await
}

pub use keysmith_emulator::eventually;

#[derive(Clone)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

/// Route every log line of this test process (JSON, as `--log-format json`) into a buffer.
pub fn capture_logs() {
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = Buffer(logs.clone());
        let _ = tracing::subscriber::set_global_default(keysmith::telemetry::subscriber(
            LogFormat::Json,
            EnvFilter::new("info"),
            move || writer.clone(),
        ));
        logs
    });
}

/// Everything logged so far.
pub fn logs() -> String {
    LOGS.get()
        .map(|l| String::from_utf8_lossy(&l.lock().unwrap()).into_owned())
        .unwrap_or_default()
}
