//! Audit lines written straight from the event's fields.
//!
//! The verifier writes one audit line per request. tracing-subscriber's formatter collects a JSON
//! event's fields into a map of owned values, formats its own timestamp and re-checks every
//! fragment as UTF-8: several microseconds a line, more than the verification itself
//! (`bench/load.sh`). This layer takes the events of one target (the audit target) and writes
//! each field as it is visited, in the same shapes as the other lines: JSON with the fields at the
//! top level, or text as `time LEVEL target: message field=value`.

use std::fmt::{Debug, Write as _};
use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};

use super::LogFormat;

/// The `tracing` target of audit lines, for filtering (`RUST_LOG=keysmith::audit=off`): events on
/// it are written by [`AuditLines`] and by no other layer.
pub const TARGET: &str = "keysmith::audit";

/// A layer writing the events of `target` as audit lines through `writer`. Filter it to that
/// target (and the fmt layer away from it) so each event is written once.
pub struct AuditLines<W> {
    format: LogFormat,
    writer: W,
}

impl<W> AuditLines<W> {
    /// Lines in `format`, written through `writer`.
    pub fn new(format: LogFormat, writer: W) -> Self {
        AuditLines { format, writer }
    }
}

impl<S, W> Layer<S> for AuditLines<W>
where
    S: Subscriber,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = Vec::with_capacity(384);
        let now = jiff::Timestamp::now();
        match self.format {
            LogFormat::Json => {
                let _ = write!(
                    line,
                    "{{\"timestamp\":\"{now}\",\"level\":\"{}\"",
                    meta.level()
                );
                event.record(&mut JsonFields {
                    line: &mut line,
                    scratch: String::new(),
                });
                line.extend_from_slice(b",\"target\":");
                json_string(&mut line, meta.target());
                line.extend_from_slice(b"}\n");
            }
            LogFormat::Text => {
                let _ = write!(line, "{now} {:>5} {}:", meta.level(), meta.target());
                event.record(&mut TextFields(&mut line));
                line.push(b'\n');
            }
        }
        let _ = self.writer.make_writer().write_all(&line);
    }
}

/// Appends `value` as a JSON string.
fn json_string(line: &mut Vec<u8>, value: &str) {
    // Writing to a Vec cannot fail, and a str always serializes.
    let _ = serde_json::to_writer(&mut *line, value);
}

struct JsonFields<'a> {
    line: &'a mut Vec<u8>,
    /// Reused for values that are only `Debug`/`Display`.
    scratch: String,
}

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) {
        self.line.push(b',');
        json_string(self.line, field.name());
        self.line.push(b':');
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        json_string(self.line, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.scratch.clear();
        let _ = write!(self.scratch, "{value:?}");
        self.key(field);
        json_string(self.line, &self.scratch);
    }
}

struct TextFields<'a>(&'a mut Vec<u8>);

impl Visit for TextFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        let _ = if field.name() == "message" {
            write!(self.0, " {value:?}")
        } else {
            write!(self.0, " {}={value:?}", field.name())
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn emit(format: LogFormat) -> String {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber =
            tracing_subscriber::registry().with(AuditLines::new(format, move || sink.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "keysmith::audit", code = "VALID", n = 3_u64, ok = true,
                client = %"10.0.0.1", agent = "say \"hi\"\n", "verification");
        });
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_lines_carry_every_field_at_the_top_level() {
        let text = emit(LogFormat::Json);
        assert_eq!(text.lines().count(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], "keysmith::audit");
        assert_eq!(line["message"], "verification");
        assert_eq!(line["code"], "VALID");
        assert_eq!(line["n"], 3);
        assert_eq!(line["ok"], true);
        assert_eq!(line["client"], "10.0.0.1");
        assert_eq!(line["agent"], "say \"hi\"\n");
        let stamp: jiff::Timestamp = line["timestamp"].as_str().unwrap().parse().unwrap();
        assert!(stamp <= jiff::Timestamp::now());
    }

    #[test]
    fn text_lines_are_one_line_with_quoted_strings() {
        let text = emit(LogFormat::Text);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.trim_end().ends_with(
                " INFO keysmith::audit: verification code=\"VALID\" n=3 ok=true \
                 client=10.0.0.1 agent=\"say \\\"hi\\\"\\n\""
            ),
            "{text}"
        );
    }
}
