//! Watches: kube-rs watchers (list-then-watch and streaming lists) that
//! survive dropped connections and a `410 Gone`, bookmarks, resuming from a
//! resourceVersion, and selector transitions.

use std::time::Duration;

use crate::common::eventually;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use keysmith_emulator::{Config, Emulator, Target};
use kube::api::{PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": name}}),
    )
    .unwrap()
}

/// Run a reflector over ConfigMaps in `default`, returning its reader.
fn reflect(api: Api<ConfigMap>, config: watcher::Config) -> reflector::Store<ConfigMap> {
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, config))
        .default_backoff()
        .applied_objects();
    tokio::spawn(async move {
        // Errors (dropped watches, 410 Gone) are the watcher's to recover from.
        stream.for_each(|_| async {}).await;
    });
    reader
}

async fn names_become(reader: &reflector::Store<ConfigMap>, want: &[&str]) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    eventually(&format!("reflector holds {want:?}"), || async {
        let mut names: Vec<String> = reader.state().iter().map(|c| c.name_any()).collect();
        names.sort();
        (names == want).then_some(())
    })
    .await;
}

/// `relists`: whether the watcher recovers from 410 with a plain list (the
/// list-then-watch strategy) rather than a new streaming watch.
async fn survives_drops_and_gone(config: watcher::Config, relists: bool) {
    let emu = Emulator::start(Config::default()).await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(emu.client().await.unwrap(), "default");
    api.create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let reader = reflect(api.clone(), config);
    names_become(&reader, &["a"]).await;

    // Dropped watches: every watch ends after two events; nothing is lost.
    emu.faults().close_watches_after_events(2);
    emu.faults().close_open_watches();
    for name in ["b", "c", "d", "e"] {
        api.create(&PostParams::default(), &cm(name, json!({})))
            .await
            .unwrap();
    }
    names_become(&reader, &["a", "b", "c", "d", "e"]).await;
    emu.faults().clear();

    // 410 Gone: keep the watcher away while the history it would resume
    // from is compacted; it must relist to recover.
    let lists = || {
        emu.request_log()
            .filter(|e| e.verb == "list" && e.resource == "configmaps")
            .len()
    };
    let lists_before = lists();
    emu.faults().hold(Target::new("watch", "configmaps"));
    emu.faults().hold(Target::new("list", "configmaps"));
    emu.faults().close_open_watches();
    api.delete("a", &Default::default()).await.unwrap();
    api.create(&PostParams::default(), &cm("f", json!({})))
        .await
        .unwrap();
    emu.compact(0);
    emu.faults().release();
    names_become(&reader, &["b", "c", "d", "e", "f"]).await;
    if relists {
        assert!(lists() > lists_before, "410 Gone forced a relist");
    } else {
        assert_eq!(lists(), 0, "streaming lists never list");
    }
}

#[tokio::test]
async fn list_watch_survives_dropped_watches_and_gone() {
    survives_drops_and_gone(watcher::Config::default(), true).await;
}

#[tokio::test]
async fn streaming_list_watch_survives_dropped_watches_and_gone() {
    survives_drops_and_gone(watcher::Config::default().streaming_lists(), false).await;
}

#[tokio::test]
async fn gone_is_a_watch_error_event_and_bookmarks_arrive() {
    let emu = Emulator::start(Config {
        history: 2,
        bookmark_interval: Duration::from_millis(50),
        ..Config::default()
    })
    .await
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(emu.client().await.unwrap(), "default");
    let first = api
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let old_rv = first.resource_version().unwrap();
    for name in ["b", "c", "d"] {
        api.create(&PostParams::default(), &cm(name, json!({})))
            .await
            .unwrap();
    }
    let mut stream = api
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }

    // Resuming from a retained version replays exactly what came after it.
    let rv_c = api.get("c").await.unwrap().resource_version().unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv_c)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(o)) => assert_eq!(o.name_any(), "d"),
        other => panic!("expected d, got {other:?}"),
    }
    // Nothing else changes, so the next event is a bookmark at or after d.
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Bookmark(b)) => {
            let rv: u64 = b.metadata.resource_version.parse().unwrap();
            assert!(rv >= rv_c.parse().unwrap());
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_from_zero_sends_state_then_changes_and_selector_transitions() {
    let emu = Emulator::start(Config::default()).await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(emu.client().await.unwrap(), "default");
    api.create(&PostParams::default(), &cm("in", json!({"team": "a"})))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("out", json!({"team": "b"})))
        .await
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().labels("team=a"), "0")
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(o)) => assert_eq!(o.name_any(), "in"),
        other => panic!("expected in, got {other:?}"),
    }
    let patch =
        |team: &str| kube::api::Patch::Merge(json!({"metadata": {"labels": {"team": team}}}));
    api.patch("in", &Default::default(), &patch("b"))
        .await
        .unwrap();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Deleted(o)) => assert_eq!(o.name_any(), "in", "left the selector"),
        other => panic!("expected a deletion, got {other:?}"),
    }
    api.patch("out", &Default::default(), &patch("a"))
        .await
        .unwrap();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(o)) => assert_eq!(o.name_any(), "out", "entered the selector"),
        other => panic!("expected an addition, got {other:?}"),
    }
}

#[tokio::test]
async fn metadata_only_lists_and_watches() {
    let emu = Emulator::start(Config::default()).await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(emu.client().await.unwrap(), "default");
    api.create(&PostParams::default(), &cm("a", json!({"x": "1"})))
        .await
        .unwrap();
    let list = api
        .list_metadata(&kube::api::ListParams::default())
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].labels()["x"], "1");
    let mut stream = api
        .watch_metadata(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(o)) => assert_eq!(o.name_any(), "a"),
        other => panic!("expected a, got {other:?}"),
    }
}
