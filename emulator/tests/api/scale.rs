//! Scale benchmark for SPEC section 10: 10,000 ApiKeys created, their status
//! written, listed, each given an owned Secret, then deleted with the Secrets
//! garbage-collected, all through a kube-rs client with 32 requests in
//! flight. Ignored by default (it measures, it does not assert timings); run
//!
//! ```text
//! cargo test -p keysmith-emulator --release --test api -- --ignored scale_10k --nocapture
//! ```
//!
//! `KEYSMITH_SCALE_N` overrides the number of keys.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::common::get;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use keysmith_emulator::{Config, Emulator};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, ResourceExt};
use serde_json::json;

const CRD: &str = include_str!("../../../crds/apikeys.keysmith.dev.yaml");
const IN_FLIGHT: usize = 32;

/// Run `op` for 0..n with `IN_FLIGHT` concurrent requests; print and return the elapsed time.
async fn phase<F, Fut>(what: &str, n: usize, op: F) -> Duration
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), kube::Error>>,
{
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(op)
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let took = start.elapsed();
    println!(
        "{what:<28} {n:>6} in {:>8.1} ms  ({:>7.1} µs/op)",
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e6 / n as f64
    );
    took
}

fn timed<T>(what: &str, start: Instant, out: T) -> T {
    println!(
        "{what:<28}        in {:>8.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark; run with --release -- --ignored scale_10k --nocapture"]
async fn scale_10k() {
    let n: usize = std::env::var("KEYSMITH_SCALE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let emu = Emulator::start(Config::default()).await.unwrap();
    emu.apply_yaml(CRD).unwrap();
    let client = emu.client().await.unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keysmith.dev", "v1alpha1", "ApiKey"),
        "apikeys",
    );
    let keys: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let total = Instant::now();

    phase("create ApiKeys", n, |i| {
        let keys = keys.clone();
        async move {
            let key: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
                "metadata": {"name": format!("key-{i:05}"), "labels": {"shard": (i % 10).to_string()}},
                "spec": {"tokens": [{"name": "token"}], "environment": "production"}
            }))
            .expect("valid ApiKey");
            keys.create(&PostParams::default(), &key).await.map(drop)
        }
    })
    .await;

    phase("status writes", n, |i| {
        let keys = keys.clone();
        async move {
            let status = json!({"status": {"observedGeneration": 1, "conditions": [{
                "type": "Ready", "status": "True", "reason": "Minted", "message": "tokens minted",
                "lastTransitionTime": "2025-01-01T00:00:00Z"}]}});
            keys.patch_status(
                &format!("key-{i:05}"),
                &PatchParams::default(),
                &Patch::Merge(status),
            )
            .await
            .map(drop)
        }
    })
    .await;

    // The same list without kube-rs decoding it: what the server costs.
    let start = Instant::now();
    let raw = client
        .request_text(get(
            "/apis/keysmith.dev/v1alpha1/namespaces/default/apikeys",
        ))
        .await
        .unwrap();
    timed("list all ApiKeys (raw JSON)", start, ());
    println!(
        "{:<28} {:>6.1} MiB",
        "  list body",
        raw.len() as f64 / 1048576.0
    );
    let start = Instant::now();
    let listed = keys.list(&ListParams::default()).await.unwrap();
    let listed = timed("list all ApiKeys (typed)", start, listed);
    assert_eq!(listed.items.len(), n);
    let start = Instant::now();
    let shard = keys
        .list(&ListParams::default().labels("shard=3"))
        .await
        .unwrap();
    timed("list shard=3 (selector)", start, ());
    assert_eq!(shard.items.len(), (0..n).filter(|i| i % 10 == 3).count());
    let uids: Vec<String> = {
        let mut items = listed.items;
        items.sort_by_key(|k| k.name_any());
        items.iter().map(|k| k.uid().expect("uid")).collect()
    };

    phase("create owned Secrets", n, |i| {
        let secrets = secrets.clone();
        let uid = uids[i].clone();
        async move {
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {"name": format!("key-{i:05}-tokens"), "ownerReferences": [{
                    "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
                    "name": format!("key-{i:05}"), "uid": uid,
                    "controller": true, "blockOwnerDeletion": true}]},
                "stringData": {"token": "ks_0123456789abcdef"}
            }))
            .expect("valid Secret");
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .map(drop)
        }
    })
    .await;

    phase("delete ApiKeys (GC)", n, |i| {
        let keys = keys.clone();
        async move {
            keys.delete(&format!("key-{i:05}"), &DeleteParams::background())
                .await
                .map(drop)
        }
    })
    .await;

    let left = secrets.list(&ListParams::default()).await.unwrap();
    assert!(
        left.items.is_empty(),
        "{} Secrets survived their owners",
        left.items.len()
    );
    timed("total", total, ());
}
