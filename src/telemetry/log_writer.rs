//! Log lines written to stderr from a background thread.
//!
//! The verifier writes one audit line per request. Through `std::io::stderr` each line is a
//! `write(2)` under the stderr lock on the request's thread, which cost more than the
//! verification itself; here the request's thread only formats the line and hands it over, and a
//! writer thread batches lines into few large writes (`bench/load.sh`: 36k → 60k verifications a
//! second with audit lines). Every long-running command logs through it.

use std::io::{IsTerminal, Write};
use std::sync::mpsc;
use std::time::Duration;

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::LogFormat;
use super::audit_lines::{AuditLines, LineWriter, MakeWriterLines};

/// Install the global `tracing` subscriber (filter from `RUST_LOG`, default `info`), writing to
/// stderr from a background thread. Keep the guard until exit: dropping it flushes.
pub fn init_tracing(format: LogFormat) -> LogGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let (writer, guard) = background_stderr();
    // Colour only for a person at a terminal: a pipe, a file or a log collector gets plain text.
    let ansi = std::io::stderr().is_terminal();
    // Audit lines go to the writer thread as they are built, without a copy.
    let subscriber = styled(format, filter, writer.clone(), writer, ansi);
    // Err only means a subscriber is already installed, which is fine.
    let _ = tracing::subscriber::set_global_default(subscriber);
    guard
}

/// Keysmith's log lines in `format` through `writer`, without colour codes: the verifier's audit
/// lines by [`AuditLines`], everything else by tracing-subscriber's formatter (JSON with the
/// fields at the top level, like the audit lines).
pub fn subscriber<W>(format: LogFormat, filter: EnvFilter, writer: W) -> impl Subscriber
where
    W: for<'w> MakeWriter<'w> + Clone + Send + Sync + 'static,
{
    styled(
        format,
        filter,
        writer.clone(),
        MakeWriterLines(writer),
        false,
    )
}

/// [`subscriber`], audit lines through `audit`, with colour codes in text lines when `ansi`.
fn styled<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    audit: impl LineWriter,
    ansi: bool,
) -> impl Subscriber
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    let lines = match format {
        LogFormat::Json => lines.json().flatten_event(true).boxed(),
        LogFormat::Text => lines.boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .with(AuditLines::new(format, audit))
}

/// `info`, except kube's client logging each failed request at ERROR: that error is also returned
/// to Keysmith, which reports it once, with context.
const DEFAULT_FILTER: &str = "info,kube_client::client::builder=off";

/// Lines waiting for the writer thread; beyond this, logging callers wait (lines are never
/// dropped: the audit trail must be complete).
const LOG_QUEUE: usize = 8_192;

/// How long the writer thread lets lines gather while busy.
const LOG_BATCH: Duration = Duration::from_millis(2);

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
    // Block only when idle. Under load, drain, flush, then nap instead of parking on the
    // channel: a parked receiver makes every sender pay a futex wake-up, which costs as much as
    // the write this thread exists to save.
    while let Ok(message) = rx.recv() {
        handle(message, &mut out);
        loop {
            while let Ok(message) = rx.try_recv() {
                handle(message, &mut out);
            }
            let _ = out.flush();
            std::thread::sleep(LOG_BATCH);
            match rx.try_recv() {
                Ok(message) => handle(message, &mut out),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        }
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

impl LineWriter for BackgroundWriter {
    fn write_line(&self, line: Vec<u8>) {
        let _ = self.tx.send(LogMessage::Line(line));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

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
