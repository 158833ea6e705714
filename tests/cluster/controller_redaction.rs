//! No token plaintext in logs, events, status or metrics, through a mint, a failed Secret write
//! and a rotation, with every log line of the process captured at debug level.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::harness::controller::*;
use keysmith_emulator::Target;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

const KEY: &str = r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: site, namespace: cms}
spec:
  tokens: [{name: delivery, prefix: cms_dt_}]
  rotation: {trigger: one}
"#;

// One thread: every task (controller, kube client, emulator) logs into the captured subscriber.
#[tokio::test(flavor = "current_thread")]
async fn no_token_plaintext_in_logs_events_status_or_metrics() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::start().await;
    h.apply(KEY).await;
    h.wait_key("site", "Ready", ready).await;
    h.settle().await;
    let first = secret_value(&h.secret("site").await.unwrap(), "delivery").unwrap();

    // A failing Secret write (after the status write) is logged and retried.
    let emu = emulator_only(&h.cluster, "the failed Secret write of the redaction test");
    if let Some(emu) = emu {
        emu.faults()
            .fail_next(Target::new("patch", "secrets"), 500, 1);
    }
    h.apply(&KEY.replace("trigger: one", "trigger: two")).await;
    let rotated = eventually("rotation lands", || async {
        h.secret("site")
            .await
            .and_then(|s| secret_value(&s, "delivery"))
            .filter(|v| *v != first)
    })
    .await;
    h.wait_key("site", "Ready after the retry", ready).await;
    h.settle().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    if emu.is_some() {
        assert!(logs.contains("reconcile failed"), "the failure is logged");
        let line = logs
            .lines()
            .find(|l| l.contains("reconcile failed"))
            .unwrap();
        assert!(
            line.contains("WARN") && line.contains("category=\"api\""),
            "a failed reconcile is a warning carrying its metric category: {line}"
        );
    }
    let events =
        serde_json::to_string(&h.cluster.list("events.k8s.io/v1", "Event", Some(NS)).await)
            .unwrap();
    let status = h.apikey("site").await.unwrap()["status"].to_string();
    let metrics = h.metrics();
    for token in [&first, &rotated] {
        let random = token.trim_start_matches("cms_dt_");
        for (place, text) in [
            ("logs", &logs),
            ("events", &events),
            ("status", &status),
            ("metrics", &metrics),
        ] {
            assert!(!text.contains(random), "token material in {place}");
        }
    }
}
