//! Fault injection: error answers by verb and resource (409, 429 with
//! Retry-After, 500), seeded rates, latency, and watch streams closed early.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use keysmith_emulator::{Config, Emulator, Target};
use kube::Api;
use kube::api::{ListParams, PostParams, WatchParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

async fn setup(seed: u64) -> (Emulator, Api<ConfigMap>) {
    let emu = Emulator::start(Config {
        fault_seed: seed,
        ..Config::default()
    })
    .await
    .unwrap();
    let api = Api::namespaced(emu.client().await.unwrap(), "default");
    (emu, api)
}

fn code(r: Result<ConfigMap, kube::Error>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(other) => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn error_answers_by_verb_and_resource() {
    let (emu, api) = setup(0).await;
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    for status in [409u16, 500] {
        emu.faults()
            .fail_next(Target::new("get", "configmaps"), status, 1);
        assert_eq!(code(api.get("a").await), status);
        assert_eq!(code(api.get("a").await), 200, "only the next request fails");
    }
    // kube-rs retries a 429 after its Retry-After by itself.
    emu.faults()
        .fail_next(Target::new("get", "configmaps"), 429, 1);
    assert_eq!(code(api.get("a").await), 200);
    let codes: Vec<u16> = emu
        .request_log()
        .filter(|e| e.verb == "get")
        .iter()
        .map(|e| e.code)
        .collect();
    assert_eq!(codes, vec![409, 200, 500, 200, 429, 200]);
    // Other verbs and resources are untouched.
    emu.faults()
        .fail_next(Target::new("update", "configmaps"), 409, 1);
    assert_eq!(code(api.get("a").await), 200);
    assert_eq!(
        code(api.create(&PostParams::default(), &cm("b")).await),
        200
    );
    assert_eq!(emu.faults().injected(), 3);

    // 429 carries Retry-After, as Kubernetes' priority-and-fairness does.
    emu.faults().fail_next(Target::any(), 429, 1);
    // (Read raw, since kube-rs would retry it.)
    let mut conn = tokio::net::TcpStream::connect(emu.addr()).await.unwrap();
    conn.write_all(
        b"GET /api/v1/namespaces/default/configmaps/a HTTP/1.1\r\nHost: emulator\r\nConnection: close\r\n\r\n",
    )
        .await
        .unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 429"), "{raw}");
    assert!(raw.to_lowercase().contains("retry-after: 1\r\n"), "{raw}");
}

#[tokio::test]
async fn rates_are_reproducible_from_the_seed() {
    async fn outcomes(seed: u64) -> Vec<u16> {
        let (emu, api) = setup(seed).await;
        api.create(&PostParams::default(), &cm("a")).await.unwrap();
        emu.faults().error_rate(Target::new("get", "*"), 500, 0.5);
        let mut out = Vec::new();
        for _ in 0..24 {
            out.push(code(api.get("a").await));
        }
        out
    }
    let first = outcomes(42).await;
    assert_eq!(first, outcomes(42).await);
    let failures = first.iter().filter(|c| **c == 500).count();
    assert!(failures > 0 && failures < 24, "{first:?}");
}

#[tokio::test]
async fn latency_delays_matching_requests() {
    let (emu, api) = setup(0).await;
    emu.faults().latency(
        Target::new("list", "configmaps"),
        Duration::from_millis(300),
    );
    let start = Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn watches_close_after_events_or_a_duration() {
    let (emu, api) = setup(0).await;
    for name in ["a", "b", "c"] {
        api.create(&PostParams::default(), &cm(name)).await.unwrap();
    }
    emu.faults().close_watches_after_events(2);
    let events: Vec<_> = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events.len(), 2, "closed after two events");

    emu.faults().clear();
    emu.faults().close_watches_after(Duration::from_millis(100));
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .unwrap()
        .boxed();
    let ended = tokio::time::timeout(Duration::from_secs(20), stream.next()).await;
    assert!(matches!(ended, Ok(None)), "the stream ends by itself");
}
