//! Audit lines written straight from their typed fields, without a `tracing` event.
//!
//! The verifier writes one audit line per request. As a `tracing` event, each field was visited
//! through `dyn Value`, addresses went through `fmt`, and every key and value through serde_json's
//! escaper byte by byte: about 7,000 instructions a line, as many as the decision itself
//! (`bench/instructions.sh`). Here the subscriber only says where audit lines go: it carries an
//! [`AuditLines`] layer (format and writer), found by downcasting the current dispatcher, so the
//! lines still follow `RUST_LOG` and whatever subscriber a test or bench installs. [`write`]
//! then builds the line from typed fields, in the shapes of the other lines: JSON with the fields
//! at the top level, or text as `time LEVEL target: message field=value`.

use std::io::Write as _;
use std::net::IpAddr;

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Layer;

use super::LogFormat;
use crate::text::{json_str, plain, quoted, write_rfc3339};

/// The `tracing` target of audit lines, for filtering (`RUST_LOG=keysmith::audit=off`).
pub const TARGET: &str = "keysmith::audit";

/// Where finished lines go.
pub trait LineWriter: Send + Sync + 'static {
    /// Write one whole line (ending in a newline).
    fn write_line(&self, line: Vec<u8>);
}

/// Lines through any `tracing_subscriber` writer: one `make_writer` and `write_all` per line.
pub struct MakeWriterLines<W>(pub W);

impl<W> LineWriter for MakeWriterLines<W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fn write_line(&self, line: Vec<u8>) {
        let _ = self.0.make_writer().write_all(&line);
    }
}

/// The layer that makes a subscriber write audit lines: in `format`, through `writer`. It sees
/// no events; [`write`] finds it in the current subscriber.
pub struct AuditLines {
    format: LogFormat,
    writer: Box<dyn LineWriter>,
}

impl AuditLines {
    /// Lines in `format`, written through `writer`.
    pub fn new(format: LogFormat, writer: impl LineWriter) -> Self {
        AuditLines {
            format,
            writer: Box::new(writer),
        }
    }
}

impl<S: Subscriber> Layer<S> for AuditLines {}

/// Write one audit line, `message` and the fields `fields` adds, when the current subscriber
/// writes audit lines and its filter lets INFO events of [`TARGET`] through.
pub fn write(message: &str, fields: impl FnOnce(&mut Line)) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    let mut fields = Some(fields);
    tracing::dispatcher::get_default(|dispatch| {
        let (Some(lines), Some(fields)) = (dispatch.downcast_ref::<AuditLines>(), fields.take())
        else {
            return;
        };
        let mut line = Line::start(lines.format, message);
        fields(&mut line);
        lines.writer.write_line(line.finish());
    });
}

/// One audit line being written.
pub struct Line {
    format: LogFormat,
    bytes: Vec<u8>,
}

impl Line {
    fn start(format: LogFormat, message: &str) -> Line {
        // Sized for a verifier audit line, so it is written without growing.
        let mut bytes = Vec::with_capacity(384);
        let now = jiff::Timestamp::now();
        match format {
            LogFormat::Json => {
                bytes.extend_from_slice(b"{\"timestamp\":\"");
                write_rfc3339(&mut bytes, now);
                bytes.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":");
                json_str(&mut bytes, message);
            }
            LogFormat::Text => {
                write_rfc3339(&mut bytes, now);
                let _ = write!(bytes, "  INFO {TARGET}: {message}");
            }
        }
        Line { format, bytes }
    }

    /// The text field `name` (a plain identifier): a JSON string, quoted in text.
    pub fn str(&mut self, name: &'static str, value: &str) {
        self.key(name);
        match self.format {
            LogFormat::Json => json_str(&mut self.bytes, value),
            LogFormat::Text if plain(value) => quoted(&mut self.bytes, value),
            LogFormat::Text => {
                let _ = write!(self.bytes, "{value:?}");
            }
        }
    }

    /// The address field `name`, empty when there is none: a JSON string, bare in text.
    pub fn ip(&mut self, name: &'static str, value: Option<IpAddr>) {
        self.key(name);
        let json = self.format == LogFormat::Json;
        if json {
            self.bytes.push(b'"');
        }
        match value {
            Some(IpAddr::V4(v4)) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.bytes.push(b'.');
                    }
                    decimal(&mut self.bytes, octet);
                }
            }
            // Only hex digits and colons (and a dotted IPv4 tail): nothing to escape.
            Some(IpAddr::V6(v6)) => {
                let _ = write!(self.bytes, "{v6}");
            }
            None => {}
        }
        if json {
            self.bytes.push(b'"');
        }
    }

    fn key(&mut self, name: &'static str) {
        debug_assert!(plain(name), "field names are identifiers: {name:?}");
        match self.format {
            LogFormat::Json => {
                self.bytes.extend_from_slice(b",\"");
                self.bytes.extend_from_slice(name.as_bytes());
                self.bytes.extend_from_slice(b"\":");
            }
            LogFormat::Text => {
                self.bytes.push(b' ');
                self.bytes.extend_from_slice(name.as_bytes());
                self.bytes.push(b'=');
            }
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.format == LogFormat::Json {
            self.bytes.extend_from_slice(b",\"target\":\"");
            self.bytes.extend_from_slice(TARGET.as_bytes());
            self.bytes.extend_from_slice(b"\"}");
        }
        self.bytes.push(b'\n');
        self.bytes
    }
}

fn decimal(bytes: &mut Vec<u8>, n: u8) {
    if n >= 100 {
        bytes.push(b'0' + n / 100);
    }
    if n >= 10 {
        bytes.push(b'0' + n / 10 % 10);
    }
    bytes.push(b'0' + n % 10);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::EnvFilter;
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

    const AGENT: &str = "say \"hi\"\n\u{e9}\\";

    /// One audit line written under a subscriber with `filter`.
    fn emit(format: LogFormat, filter: &str) -> String {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new(filter))
            .with(AuditLines::new(
                format,
                MakeWriterLines(move || sink.clone()),
            ));
        tracing::subscriber::with_default(subscriber, || {
            write("verification", |line| {
                line.str("code", "VALID");
                line.ip("client", Some("10.0.0.1".parse().unwrap()));
                line.ip("peer", Some("2001:db8::1".parse().unwrap()));
                line.ip("end_user", None);
                line.str("agent", AGENT);
                line.str("empty", "");
            });
        });
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_lines_carry_every_field_at_the_top_level_escaped_as_serde_json_does() {
        let text = emit(LogFormat::Json, "info");
        let (stamp, rest) = text
            .strip_prefix("{\"timestamp\":\"")
            .and_then(|t| t.split_once('"'))
            .unwrap();
        let stamp: jiff::Timestamp = stamp.parse().unwrap();
        assert!(stamp <= jiff::Timestamp::now());
        let agent = serde_json::to_string(AGENT).unwrap();
        assert_eq!(
            rest,
            format!(
                ",\"level\":\"INFO\",\"message\":\"verification\",\"code\":\"VALID\",\
                 \"client\":\"10.0.0.1\",\"peer\":\"2001:db8::1\",\"end_user\":\"\",\
                 \"agent\":{agent},\"empty\":\"\",\"target\":\"keysmith::audit\"}}\n"
            )
        );
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["agent"], AGENT);
    }

    #[test]
    fn text_lines_are_one_line_with_quoted_strings() {
        let text = emit(LogFormat::Text, "info");
        assert_eq!(text.lines().count(), 1, "{text}");
        let (stamp, rest) = text.split_once(' ').unwrap();
        stamp.parse::<jiff::Timestamp>().unwrap();
        assert_eq!(
            rest,
            format!(
                " INFO keysmith::audit: verification code=\"VALID\" client=10.0.0.1 \
                 peer=2001:db8::1 end_user= agent={AGENT:?} empty=\"\"\n"
            )
        );
    }

    #[test]
    fn the_filter_silences_them() {
        assert_eq!(emit(LogFormat::Json, "info,keysmith::audit=off"), "");
        assert_eq!(emit(LogFormat::Json, "warn"), "");
        assert_ne!(emit(LogFormat::Json, "warn,keysmith::audit=info"), "");
    }

    #[test]
    fn addresses_are_written_as_displayed() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "::ffff:1.2.3.4",
            "::1",
        ] {
            let mut line = Line {
                format: LogFormat::Text,
                bytes: Vec::new(),
            };
            line.ip("ip", Some(ip.parse().unwrap()));
            assert_eq!(String::from_utf8(line.bytes).unwrap(), format!(" ip={ip}"));
        }
    }
}
