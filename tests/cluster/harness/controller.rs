//! The controller's side of the harness: a cluster with the chart's RBAC, the controller running
//! in-process as its ServiceAccount with a clock the test moves, and helpers to wait for state and
//! count the API writes it made.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use jiff::{SignedDuration, Timestamp};
use keysmith::components::{self, Components, ControllerPart};
use keysmith::controller::leader::LeaderConfig;
use keysmith::controller::metrics::ControllerMetrics;
use keysmith::controller::{self, Clock, Context};
use keysmith::scope::Scope;
use keysmith::telemetry::{self, Shutdown, ShutdownTrigger};
use keysmith_emulator::LogEntry;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const NS: &str = "cms";
pub use keysmith::devcluster::{
    CONTROLLER_SA, SYSTEM_NAMESPACE as CONTROLLER_NS, controller_identity,
};

/// The user name the request log records for the controller.
pub fn controller_user() -> String {
    format!("system:serviceaccount:{CONTROLLER_NS}:{CONTROLLER_SA}")
}

/// A clock the test moves; moving it also makes the controller reconcile every ApiKey.
#[derive(Clone)]
pub struct TestClock {
    now: Arc<Mutex<Timestamp>>,
    /// The running controller's resync channel (a restarted controller gets a new one).
    resync: Arc<Mutex<mpsc::UnboundedSender<()>>>,
}

impl TestClock {
    pub fn now(&self) -> Timestamp {
        *self.now.lock().unwrap()
    }

    pub fn advance(&self, d: SignedDuration) {
        let mut now = self.now.lock().unwrap();
        *now = now.checked_add(d).unwrap();
        drop(now);
        self.resync();
    }

    pub fn set(&self, t: Timestamp) {
        *self.now.lock().unwrap() = t;
        self.resync();
    }

    /// Reconcile every ApiKey now.
    pub fn resync(&self) {
        let _ = self.resync.lock().unwrap().unbounded_send(());
    }

    pub fn as_clock(&self) -> Clock {
        let now = self.now.clone();
        Arc::new(move || *now.lock().unwrap())
    }
}

/// A cluster with the CRD, namespaces and the chart's RBAC, and (optionally) a controller.
pub struct Harness {
    pub cluster: Cluster,
    pub admin: kube::Client,
    pub clock: TestClock,
    scope: Scope,
    /// The controller acts on `spec.access` (`--access-lists`).
    access_lists: bool,
    registry: Arc<Registry>,
    stop: Option<ShutdownTrigger>,
    task: Option<JoinHandle<()>>,
}

/// A cluster prepared like one with the chart installed, plus namespace [`NS`], without a
/// controller.
pub async fn cluster() -> Cluster {
    super::cluster(NS).await
}

impl Harness {
    /// A cluster and a running controller (no leader election) with a test clock.
    pub async fn start() -> Harness {
        Harness::start_scoped(Scope::default()).await
    }

    /// Like [`Harness::start`], reconciling only the ApiKeys in `scope`.
    pub async fn start_scoped(scope: Scope) -> Harness {
        Harness::start_on(cluster().await, scope).await
    }

    /// Like [`Harness::start_scoped`], on a `cluster` the test prepared first.
    pub async fn start_on(cluster: Cluster, scope: Scope) -> Harness {
        Harness::start_with(cluster, scope, false).await
    }

    /// Like [`Harness::start_on`], the controller acting on `spec.access` if `access_lists`.
    pub async fn start_with(cluster: Cluster, scope: Scope, access_lists: bool) -> Harness {
        let admin = cluster.client().await.expect("admin client");
        let (resync, _) = mpsc::unbounded();
        let clock = TestClock {
            now: Arc::new(Mutex::new(Timestamp::now())),
            resync: Arc::new(Mutex::new(resync)),
        };
        let mut harness = Harness {
            cluster,
            admin,
            clock,
            scope,
            access_lists,
            registry: Arc::default(),
            stop: None,
            task: None,
        };
        harness.start_controller().await;
        harness
    }

    /// Start a controller (again, after [`Harness::stop`] or [`Harness::abort`]), with the same
    /// clock and fresh metrics.
    pub async fn start_controller(&mut self) {
        let (resync, resyncs) = mpsc::unbounded();
        *self.clock.resync.lock().unwrap() = resync;
        let client = self
            .cluster
            .client_as(&controller_identity())
            .await
            .expect("controller client");
        let mut registry = telemetry::registry();
        let metrics = ControllerMetrics::register(&mut registry);
        let ctx = Context::new(
            client,
            metrics,
            self.clock.as_clock(),
            Some("test".into()),
            keysmith::controller::PersonalKeyPolicy::ACCEPTED,
            self.access_lists,
            controller::DEFAULT_CONCURRENCY,
        );
        let (stop, shutdown) = Shutdown::new();
        let scope = self.scope.clone();
        let task = tokio::spawn(async move {
            controller::run(ctx, &scope, shutdown.wait(), Some(resyncs.boxed())).await;
        });
        self.registry = Arc::new(registry);
        self.stop = Some(stop);
        self.task = Some(task);
    }

    /// Whether a controller task is running.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stop the controller and wait for it.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.trigger();
        }
        if let Some(task) = self.task.take() {
            task.await.expect("controller task");
        }
    }

    /// End the controller's task wherever it is, as SIGKILL ends the process: requests in
    /// flight are dropped, nothing is cleaned up.
    pub async fn abort(&mut self) {
        self.stop = None;
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// The metrics text as `/metrics` serves it.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }

    /// Reconciles completed so far.
    pub fn reconciles(&self) -> u64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix("keysmith_reconcile_duration_seconds_count "))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    /// Wait until a full reconcile of every key happened and wrote nothing new: the controller
    /// is at rest.
    pub async fn settle(&self) {
        loop {
            let writes = self.controller_writes().len();
            let before = self.reconciles();
            self.clock.resync();
            eventually("a reconcile pass", || async {
                (self.reconciles() > before).then_some(())
            })
            .await;
            if self.controller_writes().len() == writes {
                return;
            }
        }
    }

    /// A healthy resync writes nothing: from a cleared request log, a settled controller has
    /// written nothing.
    pub async fn assert_resync_writes_nothing(&self) {
        self.cluster.clear_requests();
        self.settle().await;
        let writes = self.controller_writes();
        assert!(writes.is_empty(), "a healthy resync wrote {writes:?}");
    }

    /// Successful writes by the controller since the last [`Cluster::clear_requests`], events
    /// excluded.
    pub fn controller_writes(&self) -> Vec<LogEntry> {
        let user = controller_user();
        self.cluster.requests(|e| {
            e.user == user && e.is_write() && (200..300).contains(&e.code) && e.resource != "events"
        })
    }

    /// Successful event writes by the controller.
    pub fn event_writes(&self) -> usize {
        let user = controller_user();
        self.cluster
            .requests(|e| e.user == user && e.is_write() && e.resource == "events")
            .len()
    }

    pub async fn apply(&self, yaml: &str) {
        self.cluster
            .apply_yaml(yaml)
            .await
            .expect("fixture applies");
    }

    pub async fn apikey(&self, name: &str) -> Option<Value> {
        self.cluster
            .get("keysmith.dev/v1alpha1", "ApiKey", NS, name)
            .await
    }

    pub async fn secret(&self, name: &str) -> Option<Value> {
        self.cluster.get("v1", "Secret", NS, name).await
    }

    /// Wait for the ApiKey to satisfy `check`.
    pub async fn wait_key(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        eventually(what, || async {
            self.apikey(name).await.filter(|k| check(k))
        })
        .await
    }

    /// Events of `reason` on the ApiKey.
    pub async fn events(&self, reason: &str) -> Vec<Value> {
        self.cluster
            .list("events.k8s.io/v1", "Event", Some(NS))
            .await
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .collect()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The status of condition `type_`: (status, reason).
pub fn condition(key: &Value, type_: &str) -> Option<(String, String)> {
    key["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

pub fn ready(key: &Value) -> bool {
    condition(key, "Ready").is_some_and(|(s, _)| s == "True")
}

/// The status entry of a slot.
pub fn token<'a>(key: &'a Value, slot: &str) -> &'a Value {
    key["status"]["tokens"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == slot))
        .unwrap_or(&Value::Null)
}

/// Every entry of a Secret (as JSON) whose value is text, decoded.
pub fn secret_data(secret: &Value) -> std::collections::BTreeMap<String, String> {
    secret["data"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| Some((k.clone(), secret_value(secret, k)?)))
        .collect()
}

/// The decoded value of a Secret key.
pub fn secret_value(secret: &Value, key: &str) -> Option<String> {
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(secret.clone()).expect("a Secret");
    let bytes = secret.data?.remove(key)?;
    String::from_utf8(bytes.0).ok()
}

/// A leader-elected controller instance (for the election test), run as `keysmith controller`
/// runs it, with its `/metrics` endpoint on the address returned.
pub async fn spawn_elected(
    client: kube::Client,
    identity: &str,
    clock: Clock,
) -> (ShutdownTrigger, JoinHandle<()>, SocketAddr) {
    let leader = LeaderConfig {
        lease_duration: Duration::from_secs(2),
        renew_grace: Duration::from_secs(1),
        ..LeaderConfig::new(CONTROLLER_NS, identity)
    };
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = metrics.local_addr().unwrap();
    let components = Components {
        controller: Some(ControllerPart {
            client,
            leader,
            clock,
            personal_keys: keysmith::controller::PersonalKeyPolicy::ACCEPTED,
            access_lists: false,
            concurrency: keysmith::controller::DEFAULT_CONCURRENCY,
        }),
        verifier: None,
        scope: Scope::default(),
        metrics,
    };
    let (stop, shutdown) = Shutdown::new();
    let task = tokio::spawn(async move {
        components::serve(components, shutdown)
            .await
            .expect("the controller runs");
    });
    (stop, task, addr)
}

pub use super::{Cluster, Identity, emulator_only, eventually, needs_emulator, real};
