//! Logs, `/metrics`, `/healthz`, `/readyz` and SIGTERM for `keysmith verifier`.
//!
//! Every long-running command needs these (SPEC section 2); they live here until the shared
//! telemetry module lands, and are meant to move there unchanged.

use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// Install the global `tracing` subscriber (filter from `RUST_LOG`, default `info`), writing to
/// stderr from a background thread. Keep the guard until exit: dropping it flushes.
pub fn init_tracing(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = background_stderr();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}

/// Lines waiting for the writer thread; beyond this, logging callers wait (lines are never
/// dropped: the audit trail must be complete).
const LOG_QUEUE: usize = 65_536;

enum LogMessage {
    Line(Vec<u8>),
    Flush(mpsc::Sender<()>),
}

/// A `MakeWriter` handing each formatted event to a writer thread. The verifier writes one audit
/// line per request; a `write(2)` to stderr per line under the stderr lock cost more than the
/// verification itself, while the thread batches lines into few large writes.
#[derive(Clone)]
pub struct BackgroundWriter {
    tx: mpsc::SyncSender<LogMessage>,
}

/// Flushes the background writer when dropped.
pub struct LogGuard {
    tx: mpsc::SyncSender<LogMessage>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let (ack, done) = mpsc::channel();
        if self.tx.send(LogMessage::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(Duration::from_secs(2));
        }
    }
}

/// A writer to stderr through a background thread, and its flush guard.
pub fn background_stderr() -> (BackgroundWriter, LogGuard) {
    let (tx, rx) = mpsc::sync_channel(LOG_QUEUE);
    std::thread::Builder::new()
        .name("keysmith-log".into())
        .spawn(move || write_lines(rx, std::io::BufWriter::new(std::io::stderr())))
        .map(drop)
        .unwrap_or_else(|err| eprintln!("cannot start the log writer thread: {err}"));
    (BackgroundWriter { tx: tx.clone() }, LogGuard { tx })
}

fn write_lines(rx: mpsc::Receiver<LogMessage>, mut out: impl Write) {
    let handle = |message, out: &mut dyn Write| match message {
        LogMessage::Line(line) => {
            let _ = out.write_all(&line);
        }
        LogMessage::Flush(ack) => {
            let _ = out.flush();
            let _ = ack.send(());
        }
    };
    while let Ok(message) = rx.recv() {
        handle(message, &mut out);
        while let Ok(message) = rx.try_recv() {
            handle(message, &mut out);
        }
        let _ = out.flush();
    }
}

/// One event being formatted; sent to the writer thread when the formatter drops it.
pub struct EventWriter {
    tx: mpsc::SyncSender<LogMessage>,
    line: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            let _ = self
                .tx
                .send(LogMessage::Line(std::mem::take(&mut self.line)));
        }
    }
}

impl<'a> MakeWriter<'a> for BackgroundWriter {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter {
            tx: self.tx.clone(),
            line: Vec::with_capacity(384),
        }
    }
}

/// `/metrics` from `registry`, `/healthz` always 200, `/readyz` 200 once `ready()` holds.
pub fn router(
    registry: Arc<Registry>,
    ready: impl Fn() -> bool + Clone + Send + Sync + 'static,
) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || async move {
                let mut text = String::new();
                match prometheus_client::encoding::text::encode(&mut text, &registry) {
                    Ok(()) => (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response(),
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || async move {
                if ready() {
                    (StatusCode::OK, "ready")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "initial list not indexed yet",
                    )
                }
            }),
        )
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_event_is_written_whole_and_in_order_and_flush_waits() {
        let (tx, rx) = mpsc::sync_channel(4);
        let out = Shared::default();
        let sink = out.clone();
        let thread = std::thread::spawn(move || write_lines(rx, std::io::BufWriter::new(sink)));
        let writer = BackgroundWriter { tx: tx.clone() };
        for i in 0..100 {
            let mut event = writer.make_writer();
            write!(event, "line {i}").unwrap();
            writeln!(event, " end").unwrap();
        }
        drop(LogGuard { tx });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let expected: String = (0..100).map(|i| format!("line {i} end\n")).collect();
        assert_eq!(text, expected);
        drop(writer);
        thread.join().unwrap();
    }
}
