//! `kubectl get ak` through the real kubectl: the CRD's printer columns show why a key is not
//! ready (`REASON`), and `-o wide` adds the `Ready` condition's message, for keys the controller
//! reconciled.

use crate::harness::controller::{Harness, NS};
use crate::harness::{Backend, Cluster, Config, Identity};
use serde_json::json;

async fn kubectl_get(kubeconfig: &std::path::Path, wide: bool) -> String {
    let mut args = vec!["get", "ak", "-n", NS];
    if wide {
        args.extend(["-o", "wide"]);
    }
    let out = tokio::process::Command::new("kubectl")
        .args(&args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The cells of the row of `name` under the header `column`, reading the columns by the
/// header's positions (kubectl pads every column to its widest cell).
fn cell(table: &str, name: &str, column: &str) -> String {
    let mut lines = table.lines();
    let header = lines.next().expect("a header");
    let start = header
        .find(column)
        .unwrap_or_else(|| panic!("no {column} column in {table}"));
    let end = header[start..]
        .find(|c: char| c.is_whitespace())
        .and_then(|i| {
            header[start + i..]
                .find(|c: char| !c.is_whitespace())
                .map(|j| start + i + j)
        });
    let row = lines
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in {table}"));
    let cell = match end {
        Some(end) => row.get(start..end.min(row.len())),
        None => row.get(start..),
    };
    cell.unwrap_or_default().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_shows_why_a_key_is_not_ready() {
    // kubectl sends bearer tokens over TLS only.
    let config = Config {
        tls: true,
        ..Config::default()
    };
    let cluster = Cluster::with_chart(Backend::from_env(), config)
        .await
        .expect("the test cluster starts");
    cluster
        .apply_object(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .await
        .expect("namespace applies");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    cluster
        .write_kubeconfig(&kubeconfig, &Identity::Admin)
        .await
        .unwrap();
    let h = Harness::start_on(cluster, Default::default()).await;
    // 100000h is a duration the schema accepts and the controller refuses (over 5 years).
    h.apply(&format!(
        "apiVersion: keysmith.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: good, namespace: {NS}}}\n\
         spec: {{tokens: [{{name: main}}]}}\n---\n\
         apiVersion: keysmith.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: broken, namespace: {NS}}}\n\
         spec: {{tokens: [{{name: main}}], expiresAfter: 100000h}}\n"
    ))
    .await;
    let ready = |reason: &'static str| {
        move |k: &serde_json::Value| {
            k["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["reason"] == reason)
        }
    };
    h.wait_key("good", "good to be minted", ready("Minted"))
        .await;
    let broken = h
        .wait_key("broken", "broken to be refused", ready("InvalidSpec"))
        .await;
    let message = broken["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["message"].as_str())
        .unwrap()
        .to_owned();
    assert!(message.contains("expiresAfter"), "{message}");

    let table = kubectl_get(&kubeconfig, false).await;
    assert!(
        !table.contains("MESSAGE"),
        "the message waits for -o wide: {table}"
    );
    assert_eq!(cell(&table, "broken", "READY"), "False", "{table}");
    assert_eq!(cell(&table, "broken", "REASON"), "InvalidSpec", "{table}");
    assert_eq!(cell(&table, "good", "READY"), "True", "{table}");
    assert_eq!(cell(&table, "good", "REASON"), "Minted", "{table}");

    let wide = kubectl_get(&kubeconfig, true).await;
    assert_eq!(cell(&wide, "broken", "MESSAGE"), message, "{wide}");
}
