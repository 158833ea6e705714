//! Two controller instances against one API server: one leads, the other takes over when the first
//! stops; each says on `/metrics` whether it leads; two shards in one namespace lead one Lease
//! each. Each acts as the controller ServiceAccount under the chart's RBAC.

use std::net::SocketAddr;

use crate::harness::controller::*;
use crate::harness::http::get;
use serde_json::Value;

const LEADER_SERIES: &str = r#"keysmith_controller_leader{lease="keysmith-controller"}"#;

/// The value of `series` (name and labels) on the `/metrics` of the controller at `addr`.
async fn sample(addr: SocketAddr, series: &str) -> Option<String> {
    get(addr, "/metrics")
        .await
        .body
        .lines()
        .find_map(|l| Some(l.strip_prefix(series)?.strip_prefix(' ')?.to_owned()))
}

/// Wait until the controller at `addr` says it leads (`"1"`) or not (`"0"`).
async fn wait_leading(addr: SocketAddr, value: &str) {
    eventually(&format!("{LEADER_SERIES} {value}"), || async {
        (sample(addr, LEADER_SERIES).await.as_deref() == Some(value)).then_some(())
    })
    .await;
}

async fn holder(cluster: &Cluster) -> Option<String> {
    cluster
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            CONTROLLER_NS,
            "keysmith-controller",
        )
        .await
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

fn key(name: &str) -> String {
    format!(
        "apiVersion: keysmith.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: {name}, namespace: cms}}\nspec: {{tokens: [{{name: a}}]}}\n"
    )
}

async fn minted_by(cluster: &Cluster, apikey: &str) -> Option<String> {
    cluster
        .list("events.k8s.io/v1", "Event", Some(NS))
        .await
        .into_iter()
        .find(|e: &Value| e["reason"] == "Minted" && e["regarding"]["name"] == apikey)
        .and_then(|e| e["reportingInstance"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_a_takeover_when_it_stops() {
    let cluster = cluster().await;
    let clock = keysmith::controller::system_clock();
    let mut instances = Vec::new();
    for identity in ["keysmith-a", "keysmith-b"] {
        let client = cluster.client_as(&controller_identity()).await.unwrap();
        let (stop, task, metrics) = spawn_elected(client, identity, clock.clone()).await;
        instances.push((identity, stop, task, metrics));
    }
    let leader = eventually("a leader", || async { holder(&cluster).await }).await;
    for (identity, .., metrics) in &instances {
        wait_leading(*metrics, if *identity == leader { "1" } else { "0" }).await;
        // Every reason is exported from the start, at 0, on the standby too.
        for reason in ["api", "mint", "publish", "finalizer"] {
            let series = format!(r#"keysmith_reconcile_errors_total{{reason="{reason}"}}"#);
            assert_eq!(sample(*metrics, &series).await.as_deref(), Some("0"));
        }
        for series in ["process_cpu_seconds_total", "process_start_time_seconds"] {
            assert!(sample(*metrics, series).await.is_some(), "{series}");
        }
    }

    cluster.apply_yaml(&key("first")).await.unwrap();
    let first = eventually("first key minted", || async {
        minted_by(&cluster, "first").await
    })
    .await;
    assert_eq!(first, leader, "only the leader reconciles");

    // Stop the leader: it releases the Lease and the other instance takes over.
    let index = instances.iter().position(|(id, ..)| *id == leader).unwrap();
    let (_, stop, task, _) = instances.remove(index);
    stop.trigger();
    task.await.unwrap();
    let (follower, .., follower_metrics) = instances[0];
    let next = eventually("takeover", || async {
        holder(&cluster).await.filter(|h| h == follower)
    })
    .await;
    assert_eq!(next, follower);
    wait_leading(follower_metrics, "1").await;

    cluster.apply_yaml(&key("second")).await.unwrap();
    let second = eventually("second key minted", || async {
        minted_by(&cluster, "second").await
    })
    .await;
    assert_eq!(second, follower);
    let denied = cluster.requests(|e| e.code == 403);
    assert!(denied.is_empty(), "the chart's rules suffice: {denied:?}");

    let (_, stop, task, _) = instances.remove(0);
    stop.trigger();
    task.await.unwrap();
}

/// Two `keysmith controller` shards in one namespace, as the chart runs them with two
/// selectors and no lease name: each elects itself on a Lease of its own and reconciles its
/// keys (with one Lease between them, one shard would wait forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_in_one_namespace_both_reconcile() {
    let cluster = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    cluster
        .write_kubeconfig(&kubeconfig, &controller_identity())
        .await
        .unwrap();
    let shard = |name: &str| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_keysmith"))
            .args(["controller", "--selector", &format!("shard={name}")])
            .arg(format!("--metrics-listen=127.0.0.1:{port}"))
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAME", format!("keysmith-{name}"))
            .env("POD_NAMESPACE", CONTROLLER_NS)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let _a = shard("a");
    let _b = shard("b");
    for name in ["a", "b"] {
        cluster
            .apply_yaml(&format!(
                "apiVersion: keysmith.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: key-{name}, namespace: cms, labels: {{shard: {name}}}}}\nspec: {{tokens: [{{name: a}}]}}\n"
            ))
            .await
            .unwrap();
    }
    for name in ["a", "b"] {
        let by = eventually(&format!("key-{name} minted"), || async {
            minted_by(&cluster, &format!("key-{name}")).await
        })
        .await;
        assert_eq!(by, format!("keysmith-{name}"), "each shard mints its own");
    }
    let leases: Vec<String> = cluster
        .list("coordination.k8s.io/v1", "Lease", Some(CONTROLLER_NS))
        .await
        .iter()
        .filter_map(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
        .collect();
    for name in ["a", "b"] {
        assert!(
            leases.contains(&format!("keysmith-{name}")),
            "a Lease held by each shard: {leases:?}"
        );
    }
}
