//! Two controller instances against one API server: one leads, the other takes over when the first
//! stops; each says on `/metrics` whether it leads. Each acts as the controller ServiceAccount
//! under the chart's RBAC.

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
