//! Every log line of the test process, as `--log-format json` writes it, captured in memory so a
//! test can assert what was (and was never) logged.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use keysmith::telemetry::LogFormat;
use tracing_subscriber::EnvFilter;

/// A writer appending to a shared buffer.
#[derive(Clone, Default)]
pub struct Buffer(pub Arc<Mutex<Vec<u8>>>);

impl Buffer {
    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static LOGS: OnceLock<Buffer> = OnceLock::new();

/// Route every log line of this test process (JSON, at `level` and above for Keysmith, info
/// for the rest) into a buffer. The first call decides the level.
pub fn capture(level: &str) {
    LOGS.get_or_init(|| {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let _ = tracing::subscriber::set_global_default(keysmith::telemetry::subscriber(
            LogFormat::Json,
            EnvFilter::new(format!("info,keysmith={level}")),
            move || writer.clone(),
        ));
        buffer
    });
}

/// Everything logged so far.
pub fn text() -> String {
    LOGS.get().map(Buffer::text).unwrap_or_default()
}
