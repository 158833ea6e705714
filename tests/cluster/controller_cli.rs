//! The `keysmith controller` binary: serves health and metrics, reconciles as the chart's
//! ServiceAccount, stops cleanly on SIGTERM, and fails with one clear line without a cluster or
//! without permissions.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::controller::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.0 GET: (status, body), or None while nothing listens.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

async fn kubeconfig(cluster: &Cluster, identity: &Identity) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    cluster
        .write_kubeconfig(dir.path().join("kubeconfig"), identity)
        .await
        .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_binary_reconciles_serves_health_and_stops_on_sigterm() {
    let cluster = cluster().await;
    let dir = kubeconfig(&cluster, &controller_identity()).await;
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .args(["controller", "--log-format", "json"])
        .arg(format!("--metrics-listen=127.0.0.1:{port}"))
        .env("KUBECONFIG", dir.path().join("kubeconfig"))
        .env("POD_NAME", "keysmith-0")
        .env("POD_NAMESPACE", CONTROLLER_NS)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let (status, _) = eventually("/readyz", || async {
        get(port, "/readyz").await.filter(|(s, _)| *s == 200)
    })
    .await;
    assert_eq!(status, 200);
    assert_eq!(get(port, "/healthz").await.unwrap().0, 200);
    cluster
        .apply_yaml(
            "apiVersion: keysmith.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: site, namespace: cms}\nspec: {tokens: [{name: a}]}\n",
        )
        .await
        .unwrap();
    eventually("minted by the binary", || async {
        cluster.get("v1", "Secret", NS, "site").await.map(drop)
    })
    .await;
    let lease = cluster
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            CONTROLLER_NS,
            "keysmith-controller",
        )
        .await
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "keysmith-0");
    let (_, metrics) = eventually("metrics", || async {
        get(port, "/metrics")
            .await
            .filter(|(_, body)| body.contains("keysmith_tokens_minted_total{reason=\"initial\"} 1"))
    })
    .await;
    assert!(
        metrics.contains("keysmith_reconcile_duration_seconds"),
        "{metrics}"
    );

    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops after SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "JSON logs: {first}"
    );
    // The Lease was released on the way out.
    let lease = cluster
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            CONTROLLER_NS,
            "keysmith-controller",
        )
        .await
        .unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
}

async fn controller_fails(kubeconfig: &std::path::Path) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .args(["controller", "--metrics-listen", "127.0.0.1:0"])
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_binary_fails_with_one_line_without_a_cluster_or_permissions() {
    let cluster = cluster().await;
    let denied = kubeconfig(&cluster, &Identity::user("nobody", &[])).await;
    let stderr = controller_fails(&denied.path().join("kubeconfig")).await;
    assert!(
        stderr.contains("permission denied: cannot list apikeys.keysmith.dev"),
        "{stderr}"
    );

    let unreachable = kubeconfig(&cluster, &Identity::Admin).await;
    let path = unreachable.path().join("kubeconfig");
    let text = std::fs::read_to_string(&path).unwrap();
    let port = free_port();
    let url = cluster.url();
    let (scheme, _) = url.split_once("://").unwrap();
    let (_, old_port) = url.rsplit_once(':').unwrap();
    let moved = text.replace(
        &format!("127.0.0.1:{old_port}"),
        &format!("127.0.0.1:{port}"),
    );
    std::fs::write(&path, moved).unwrap();
    let stderr = controller_fails(&path).await;
    assert!(
        stderr.contains(&format!(
            "cannot reach the Kubernetes API server at {scheme}://127.0.0.1:{port}"
        )),
        "{stderr}"
    );
}
