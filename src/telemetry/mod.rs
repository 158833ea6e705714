//! What every long-running command (`controller`, `verifier`, `run`, `dev`) shares (SPEC 2):
//! `tracing` logs as text or JSON, an HTTP endpoint with `/metrics`, `/healthz` and `/readyz`,
//! and a shutdown future for SIGTERM and Ctrl-C.
//!
//! Each component registers its metrics into one [`Registry`] (prefix `keysmith`) before it is
//! shared, so `keysmith run` serves the controller's and the verifier's metrics on one port;
//! `/metrics` adds the standard `process_*` metrics and answers in the format the scraper asks
//! for (OpenMetrics or the Prometheus text format).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

mod audit_lines;
mod exposition;
mod log_writer;
mod process;

pub use audit_lines::{Line as AuditLine, TARGET as AUDIT_TARGET, write as write_audit_line};
pub use log_writer::{LogGuard, init_tracing, subscriber};

/// Prefix of every Keysmith metric name.
pub const METRICS_PREFIX: &str = "keysmith";
/// Default address of the metrics and health endpoint (the chart's `metrics` port).
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9090";

/// Log line format, `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// A new metrics registry with the `keysmith` prefix, holding `keysmith_build_info{version} 1`.
/// Every command builds its one registry here, so each process exports the build once and
/// dashboards can join any other series on it to tell which release produced them.
pub fn registry() -> Registry {
    let mut registry = Registry::with_prefix(METRICS_PREFIX);
    let build: Family<[(&str, &str); 1], Gauge> = Family::default();
    build
        .get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
        .set(1);
    registry.register(
        "build_info",
        "Always 1; the version of the running keysmith binary",
        build,
    );
    registry
}

/// Readiness shared between a component and `/readyz`. `/healthz` answers 200 while the
/// process serves at all.
#[derive(Debug, Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    /// Mark the component ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether the component said it is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct Endpoints {
    registry: Arc<Registry>,
    /// The `process_*` metrics, unprefixed, so kept apart from the `keysmith` registry.
    process: Arc<Registry>,
    components: Arc<[Health]>,
}

/// The router of `/metrics`, `/healthz` and `/readyz`; `/readyz` answers 200 once every one of
/// `components` is ready (`keysmith run` serves the controller and the verifier on one port).
pub fn router(registry: Arc<Registry>, components: &[Health]) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(Endpoints {
            registry,
            process: Arc::new(process_registry()),
            components: components.into(),
        })
}

fn process_registry() -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(process::ProcessCollector));
    registry
}

async fn metrics(State(endpoints): State<Endpoints>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let format = exposition::Format::negotiate(accept);
    match format.encode(&[&endpoints.registry, &endpoints.process]) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, format.content_type())],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn readyz(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    if endpoints.components.iter().all(Health::is_ready) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serve `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A shutdown notice any number of tasks can wait for.
#[derive(Debug, Clone)]
pub struct Shutdown {
    stopping: watch::Receiver<bool>,
}

/// Fires a [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl ShutdownTrigger {
    /// Tell every waiter to stop.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// A shutdown fired by hand (tests, embedding).
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown { stopping: rx })
    }

    /// A shutdown fired by SIGTERM or Ctrl-C. Must be called inside a Tokio runtime.
    pub fn on_signal() -> Shutdown {
        let (trigger, shutdown) = Shutdown::new();
        tokio::spawn(async move {
            shutdown_signal().await;
            trigger.trigger();
        });
        shutdown
    }

    /// Completes once the shutdown fired (or its trigger is gone).
    pub async fn wait(mut self) {
        // Err: the trigger was dropped, which can only mean the process is ending.
        let _ = self.stopping.wait_for(|stop| *stop).await;
    }
}

/// Completes on SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        // If the handler cannot be installed, only SIGTERM stops the process.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let mut registry = registry();
        let counter: Counter = Counter::default();
        registry.register("demo", "A demo counter", counter.clone());
        counter.inc();
        let (controller, verifier) = (Health::default(), Health::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(Arc::new(registry), &[controller.clone(), verifier.clone()]);
        tokio::spawn(serve(listener, app, std::future::pending()));
        let get = |path: &'static str| http_get(addr, path, None);

        let metrics = get("/metrics").await;
        assert_eq!(metrics.status, 200);
        assert!(
            metrics.body.contains("keysmith_demo_total 1"),
            "{metrics:?}"
        );
        let build = format!(
            "keysmith_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(metrics.body.contains(&build), "{metrics:?}");
        assert_eq!(get("/healthz").await.status, 200);
        assert_eq!(get("/readyz").await.status, 503);
        controller.set_ready(true);
        // Ready only once every component is.
        assert_eq!(get("/readyz").await.status, 503);
        verifier.set_ready(true);
        assert_eq!(get("/readyz").await.status, 200);
    }

    #[tokio::test]
    async fn metrics_answer_in_the_format_asked_for() {
        let mut registry = registry();
        let counter: Counter = Counter::default();
        registry.register("demo", "A demo counter", counter);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            router(Arc::new(registry), &[]),
            std::future::pending(),
        ));

        let mut plain = None;
        for accept in [None, Some("text/plain"), Some("text/plain; version=0.0.4")] {
            let answer = http_get(addr, "/metrics", accept).await;
            assert_eq!(
                answer.content_type, "text/plain; version=0.0.4; charset=utf-8",
                "{accept:?}"
            );
            assert!(
                answer
                    .body
                    .contains("# TYPE keysmith_demo_total counter\nkeysmith_demo_total 0\n"),
                "{answer:?}"
            );
            assert!(!answer.body.contains("# EOF"), "{answer:?}");
            plain = Some(answer.body);
        }

        let accept =
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3";
        let open = http_get(addr, "/metrics", Some(accept)).await;
        assert_eq!(
            open.content_type,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(
            open.body
                .contains("# TYPE keysmith_demo counter\nkeysmith_demo_total 0\n"),
            "{open:?}"
        );
        assert!(open.body.ends_with("# EOF\n"), "{open:?}");

        // The process metrics every Prometheus client exports, unprefixed, in both formats.
        if cfg!(target_os = "linux") {
            for body in [&plain.unwrap(), &open.body] {
                for name in [
                    "process_cpu_seconds_total ",
                    "process_resident_memory_bytes ",
                    "process_virtual_memory_bytes ",
                    "process_open_fds ",
                    "process_max_fds ",
                    "process_start_time_seconds ",
                ] {
                    assert!(body.lines().any(|l| l.starts_with(name)), "{name}: {body}");
                }
            }
        }
    }

    #[derive(Debug)]
    struct Answer {
        status: u16,
        content_type: String,
        body: String,
    }

    /// A minimal HTTP/1.0 GET, so the test needs no HTTP client crate.
    async fn http_get(
        addr: std::net::SocketAddr,
        path: &'static str,
        accept: Option<&str>,
    ) -> Answer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let content_type = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-type")
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_default();
        Answer {
            status: head[9..12].parse().unwrap(),
            content_type,
            body: body.to_owned(),
        }
    }
}
