//! The binary as a kubectl plugin: `kubectl-keysmith` on PATH (a symlink to the keysmith binary)
//! makes `kubectl keysmith status` and `kubectl keysmith rotate` work against the cluster of the
//! current kubeconfig, here a cluster with the chart's RBAC and the controller running.

use std::path::Path;
use std::process::Output;

use crate::harness::controller::{Identity, eventually, ready, token};
use crate::harness::{Backend, Cluster, chart_clients};
use keysmith::components;
use keysmith::controller::system_clock;
use keysmith::devcluster::{self, EXAMPLES};
use keysmith::telemetry::Shutdown;
use keysmith_emulator::Config;
use serde_json::Value;

/// `kubectl keysmith ARGS` with the plugin directory first on PATH.
async fn plugin(bin: &Path, kubeconfig: &Path, args: &[&str]) -> Output {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    tokio::process::Command::new("kubectl")
        .arg("keysmith")
        .args(args)
        .env("PATH", std::env::join_paths(dirs).unwrap())
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .await
        .expect("kubectl runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_keysmith_status_and_rotate() {
    // kubectl sends bearer tokens over TLS only.
    let cluster = Cluster::with_chart(
        Backend::from_env(),
        Config {
            tls: true,
            ..Config::default()
        },
    )
    .await
    .expect("the test cluster starts");
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_keysmith"), bin.join("kubectl-keysmith"))
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    cluster
        .write_kubeconfig(&kubeconfig, &Identity::Admin)
        .await
        .unwrap();

    // kubectl discovers the plugin.
    let plugins = tokio::process::Command::new("kubectl")
        .args(["plugin", "list"])
        .env(
            "PATH",
            std::env::join_paths(
                std::iter::once(bin.clone())
                    .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
            )
            .unwrap(),
        )
        .output()
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&plugins.stdout).contains("kubectl-keysmith"),
        "{plugins:?}"
    );

    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let (api, metrics) = (bind().await.unwrap(), bind().await.unwrap());
    let components = devcluster::components(
        chart_clients(&cluster).await,
        "plugin-test",
        system_clock(),
        api,
        metrics,
        None,
    );
    let (stop, shutdown) = Shutdown::new();
    let running = tokio::spawn(components::serve(components, shutdown));
    let (_, cms) = EXAMPLES
        .iter()
        .find(|(f, _)| *f == "cms-three-tokens.yaml")
        .unwrap();
    cluster.apply_yaml(cms).await.unwrap();
    let get = || cluster.get("keysmith.dev/v1alpha1", "ApiKey", "default", "acme-cms");
    let key = eventually("acme-cms to be Ready", || async {
        get()
            .await
            .filter(|k| ready(k) && k["status"]["tokens"].as_array().map(Vec::len) == Some(3))
    })
    .await;
    let ids = |k: &Value| -> Vec<String> {
        ["management", "delivery", "preview"]
            .iter()
            .map(|slot| token(k, slot)["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let before = ids(&key);

    // status: the key, its conditions and every token id, in the kubeconfig's namespace.
    let status = stdout(&plugin(&bin, &kubeconfig, &["status", "acme-cms"]).await);
    assert!(status.contains("ApiKey default/acme-cms"), "{status}");
    assert!(
        status.contains("Secret:        acme-cms-tokens"),
        "{status}"
    );
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["Ready", "True"])),
        "{status}"
    );
    for (slot, id) in ["management", "delivery", "preview"].iter().zip(&before) {
        assert!(status.contains(&format!("{slot}: {id} issued")), "{status}");
        assert!(id.starts_with("acme_"), "{id}");
    }
    // Ids only: no token value in the output.
    let secret = cluster
        .get("v1", "Secret", "default", "acme-cms-tokens")
        .await
        .unwrap();
    let management =
        crate::harness::controller::secret_value(&secret, "ACME_CMS_MANAGEMENT_TOKEN").unwrap();
    assert!(!status.contains(&management));

    // The flags kubectl's own commands take pass through to the plugin.
    let nowhere = dir.path().join("no-kubeconfig");
    let kubeconfig_flag = kubeconfig.to_str().unwrap();
    let table = stdout(
        &plugin(
            &bin,
            &nowhere,
            &["status", "-A", "--kubeconfig", kubeconfig_flag],
        )
        .await,
    );
    assert!(
        table.lines().any(|l| l
            .split_whitespace()
            .take(3)
            .eq(["default", "acme-cms", "True"])),
        "{table}"
    );

    // rotate one slot and wait: the slot annotation, and once the command returns the Secret
    // holds the slot's new token while the other two are untouched.
    let out = stdout(
        &plugin(
            &bin,
            &kubeconfig,
            &["rotate", "acme-cms", "--token", "preview", "--wait"],
        )
        .await,
    );
    assert!(out.contains("keysmith.dev/rotate-preview="), "{out}");
    let key = get().await.unwrap();
    assert!(
        key["metadata"]["annotations"]["keysmith.dev/rotate-preview"].is_string(),
        "{key}"
    );
    let after_slot = ids(&key);
    assert_ne!(after_slot[2], before[2], "{key}");
    assert_eq!(after_slot[..2], before[..2]);
    assert!(
        out.contains(&format!(
            "preview: new token {} in Secret default/acme-cms-tokens",
            after_slot[2]
        )),
        "{out}"
    );
    let secret = cluster
        .get("v1", "Secret", "default", "acme-cms-tokens")
        .await
        .unwrap();
    let preview =
        crate::harness::controller::secret_value(&secret, "ACME_CMS_PREVIEW_TOKEN").unwrap();
    assert_eq!(
        keysmith::token::sha256_hex(&preview),
        token(&key, "preview")["sha256"].as_str().unwrap()
    );

    // rotate every slot.
    let out = stdout(&plugin(&bin, &kubeconfig, &["rotate", "acme-cms"]).await);
    assert!(out.contains("every slot"), "{out}");
    let key = get().await.unwrap();
    let value = key["metadata"]["annotations"]["keysmith.dev/rotate"]
        .as_str()
        .expect("the rotate annotation")
        .to_owned();
    assert!(
        out.contains(&format!("keysmith.dev/rotate={value}")),
        "{out}"
    );
    let key = eventually("every token to rotate", || async {
        get().await.filter(|k| {
            let now = ids(k);
            ready(k) && now.iter().zip(&after_slot).all(|(a, b)| a != b)
        })
    })
    .await;
    let status = stdout(&plugin(&bin, &kubeconfig, &["status", "acme-cms"]).await);
    for id in ids(&key) {
        assert!(status.contains(&id), "{status}");
    }
    assert!(status.contains("previous"), "{status}");

    // A key that does not exist: a clear error, non-zero exit.
    let missing = plugin(&bin, &kubeconfig, &["status", "no-such-key"]).await;
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not found"),
        "{missing:?}"
    );

    stop.trigger();
    running
        .await
        .unwrap()
        .expect("the controller stops cleanly");
}
