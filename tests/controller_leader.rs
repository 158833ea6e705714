//! Two controller instances against one emulator: one leads, the other takes over when the first
//! stops. Each acts as the controller ServiceAccount under the chart's RBAC.

mod support;

use serde_json::Value;
use support::*;

fn holder(emu: &keysmith_emulator::Emulator) -> Option<String> {
    emu.get(
        "coordination.k8s.io/v1",
        "Lease",
        CONTROLLER_NS,
        "keysmith-controller",
    )
    .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

fn key(name: &str) -> String {
    format!(
        "apiVersion: keysmith.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: {name}, namespace: cms}}\nspec: {{tokens: [{{name: a}}]}}\n"
    )
}

fn minted_by(emu: &keysmith_emulator::Emulator, apikey: &str) -> Option<String> {
    emu.list("events.k8s.io/v1", "Event", Some(NS))
        .into_iter()
        .find(|e: &Value| e["reason"] == "Minted" && e["regarding"]["name"] == apikey)
        .and_then(|e| e["reportingInstance"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_a_takeover_when_it_stops() {
    let emu = cluster().await;
    let clock = keysmith::controller::system_clock();
    let mut instances = Vec::new();
    for identity in ["keysmith-a", "keysmith-b"] {
        let client = emu.client_as(&controller_identity()).await.unwrap();
        let (stop, task) = spawn_elected(client, identity, clock.clone());
        instances.push((identity, stop, task));
    }
    let leader = eventually("a leader", || async { holder(&emu) }).await;

    emu.apply_yaml(&key("first")).unwrap();
    let first = eventually("first key minted", || async { minted_by(&emu, "first") }).await;
    assert_eq!(first, leader, "only the leader reconciles");

    // Stop the leader: it releases the Lease and the other instance takes over.
    let index = instances.iter().position(|(id, ..)| *id == leader).unwrap();
    let (_, stop, task) = instances.remove(index);
    stop.trigger();
    task.await.unwrap();
    let (follower, ..) = instances[0];
    let next = eventually("takeover", || async {
        holder(&emu).filter(|h| h == follower)
    })
    .await;
    assert_eq!(next, follower);

    emu.apply_yaml(&key("second")).unwrap();
    let second = eventually("second key minted", || async { minted_by(&emu, "second") }).await;
    assert_eq!(second, follower);
    let denied = emu.request_log().filter(|e| e.code == 403);
    assert!(denied.is_empty(), "the chart's rules suffice: {denied:?}");

    let (_, stop, task) = instances.remove(0);
    stop.trigger();
    task.await.unwrap();
}
