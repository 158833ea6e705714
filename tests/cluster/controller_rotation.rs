//! End to end: every rotation trigger, overlap windows, restarts, expiry conditions, and the
//! `keysmith rotate` / `keysmith status` commands, with the controller's clock moved by the test.

use crate::harness::controller::*;
use jiff::{SignedDuration, Timestamp};
use keysmith::token::sha256_hex;
use serde_json::Value;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: cms}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx, envFrom: [{secretRef: {name: site}}]}]}
"#;

fn rotating_key(trigger: &str) -> String {
    format!(
        r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {{name: site, namespace: cms}}
spec:
  tokens: [{{name: delivery, prefix: cms_dt_}}, {{name: preview, prefix: cms_pt_}}]
  expiresAfter: 720h
  rotation: {{trigger: "{trigger}", overlap: 1h}}
  secret: {{restartTargets: [{{kind: Deployment, name: web}}]}}
"#
    )
}

fn id(key: &Value, slot: &str) -> String {
    token(key, slot)["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn time(v: &Value) -> Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

fn writes_of(h: &Harness, resource: &str) -> usize {
    h.controller_writes()
        .iter()
        .filter(|e| e.resource == resource)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_rotates_with_overlap_and_restarts_once() {
    let h = Harness::start().await;
    h.apply(DEPLOYMENT).await;
    h.apply(&rotating_key("one")).await;
    let key = h.wait_key("site", "Ready", ready).await;
    h.settle().await;
    let old_delivery = token(&key, "delivery").clone();
    assert_eq!(
        writes_of(&h, "deployments"),
        0,
        "the first mint restarts nothing"
    );

    h.cluster.clear_requests();
    h.apply(&rotating_key("two")).await;
    let key = h
        .wait_key("site", "rotation by trigger", |k| {
            token(k, "delivery")["rotationTrigger"] == "two"
                && token(k, "preview")["rotationTrigger"] == "two"
        })
        .await;
    h.settle().await;
    let writes = h.controller_writes();
    let names: Vec<String> = writes
        .iter()
        .map(|e| format!("{} {} {}", e.verb, e.resource, e.subresource))
        .collect();
    println!("API writes per rotation: {} ({names:?})", writes.len());
    assert_eq!(
        writes_of(&h, "apikeys") + writes_of(&h, "secrets"),
        2,
        "{names:?}"
    );
    assert_eq!(writes_of(&h, "deployments"), 1, "one restart per rotation");
    assert_eq!(condition(&key, "Ready").unwrap().1, "Rotated");

    // The old token is previous until validUntil; the Secret holds the new one.
    let previous = &token(&key, "delivery")["previous"];
    assert_eq!(previous["sha256"], old_delivery["sha256"]);
    let rotated_at = time(&token(&key, "delivery")["issuedAt"]);
    assert_eq!(
        time(&previous["validUntil"]),
        rotated_at
            .checked_add(SignedDuration::from_hours(1))
            .unwrap()
    );
    let secret = h.secret("site").await.unwrap();
    assert_eq!(
        sha256_hex(&secret_value(&secret, "delivery").unwrap()),
        token(&key, "delivery")["sha256"].as_str().unwrap()
    );

    // The restart annotation names the new token ids, sorted.
    let deployment = h
        .cluster
        .get("apps/v1", "Deployment", NS, "web")
        .await
        .unwrap();
    let mut ids = [id(&key, "delivery"), id(&key, "preview")];
    ids.sort();
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]["keysmith.dev/restarted-for"],
        ids.join(",")
    );
    assert_eq!(h.events("Rotated").await.len(), 1);
    assert_eq!(h.events("RestartTriggered").await.len(), 1);

    // The overlap ends: previous leaves status, the Secret and the workload stay as they are.
    let secret_version = secret["metadata"]["resourceVersion"].clone();
    h.cluster.clear_requests();
    h.clock.advance(SignedDuration::from_mins(61));
    let key = h
        .wait_key("site", "overlap over", |k| {
            token(k, "delivery")["previous"].is_null() && token(k, "preview")["previous"].is_null()
        })
        .await;
    h.settle().await;
    // One status write ends the overlap: status is replaced whole, without `previous`.
    let writes: Vec<String> = h
        .controller_writes()
        .iter()
        .map(|e| format!("{} {} {}", e.verb, e.resource, e.subresource))
        .collect();
    println!("API writes per overlap end: {} ({writes:?})", writes.len());
    assert_eq!(writes, ["update apikeys status"]);
    assert!(
        token(&key, "delivery").get("previous").is_none(),
        "no empty previous left behind: {}",
        token(&key, "delivery")
    );
    assert_eq!(
        h.secret("site").await.unwrap()["metadata"]["resourceVersion"],
        secret_version
    );
    assert_eq!(writes_of(&h, "deployments"), 0, "no second rollout");
    let metrics = h.metrics();
    assert!(
        metrics.contains(r#"keysmith_tokens_minted_total{reason="trigger"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("keysmith_rollout_restarts_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_only_workloads_that_read_the_secret() {
    let h = Harness::start().await;
    // `web` reads the Secret; `bystander` does not and has not opted in.
    h.apply(DEPLOYMENT).await;
    h.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: bystander, namespace: cms}
spec:
  selector: {matchLabels: {app: bystander}}
  template:
    metadata: {labels: {app: bystander}}
    spec: {containers: [{name: app, image: nginx}]}
"#,
    )
    .await;
    let key = |trigger: &str| {
        rotating_key(trigger).replace(
            "restartTargets: [{kind: Deployment, name: web}]",
            "restartTargets: [{kind: Deployment, name: bystander}, {kind: Deployment, name: web}]",
        )
    };
    h.apply(&key("one")).await;
    h.wait_key("site", "Ready", ready).await;
    h.settle().await;
    let template = || async {
        let d = h
            .cluster
            .get("apps/v1", "Deployment", NS, "bystander")
            .await;
        d.unwrap()["spec"]["template"].clone()
    };
    let bystander = template().await;

    h.cluster.clear_requests();
    h.apply(&key("two")).await;
    h.wait_key("site", "rotated", |k| {
        token(k, "delivery")["rotationTrigger"] == "two"
    })
    .await;
    let refused = eventually("RestartRefused event", || async {
        h.events("RestartRefused").await.into_iter().next()
    })
    .await;
    h.settle().await;
    assert_eq!(refused["type"], "Warning");
    let note = refused["note"].as_str().unwrap();
    assert!(
        note.contains("bystander") && note.contains("keysmith.dev/restart-on: site"),
        "{note}"
    );
    let patched: Vec<String> = h
        .controller_writes()
        .iter()
        .filter(|e| e.resource == "deployments")
        .map(|e| e.name.clone())
        .collect();
    assert_eq!(patched, ["web"], "only the consuming Deployment is patched");
    assert_eq!(template().await, bystander, "the bystander is untouched");
    let web = h
        .cluster
        .get("apps/v1", "Deployment", NS, "web")
        .await
        .unwrap();
    assert!(
        web["spec"]["template"]["metadata"]["annotations"]["keysmith.dev/restarted-for"]
            .is_string()
    );

    // The workload's own annotation lets a rotation restart it.
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(h.admin.clone(), NS);
    let opt_in =
        serde_json::json!({"metadata": {"annotations": {"keysmith.dev/restart-on": "site"}}});
    deployments
        .patch(
            "bystander",
            &Default::default(),
            &kube::api::Patch::Merge(opt_in),
        )
        .await
        .unwrap();
    h.apply(&key("three")).await;
    eventually("the opted-in bystander restarted", || async {
        let d = h
            .cluster
            .get("apps/v1", "Deployment", NS, "bystander")
            .await?;
        d["spec"]["template"]["metadata"]["annotations"]["keysmith.dev/restarted-for"]
            .is_string()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_schedule_and_renew_before_rotate_on_time() {
    let h = Harness::start().await;
    h.apply(
        r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: every, namespace: cms}
spec:
  tokens: [{name: a}]
  rotation: {every: 1h, overlap: 5m}
---
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: cron, namespace: cms}
spec:
  tokens: [{name: a}]
  rotation: {schedule: "0 3 * * *", timeZone: Europe/Berlin, overlap: 5m}
---
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: renew, namespace: cms}
spec:
  tokens: [{name: a}]
  expiresAfter: 10h
  rotation: {renewBefore: 2h}
"#,
    )
    .await;
    let mut due = Vec::new();
    for name in ["every", "cron", "renew"] {
        let key = h.wait_key(name, "Ready", ready).await;
        let issued = time(&token(&key, "a")["issuedAt"]);
        let next = time(&key["status"]["nextRotationAt"]);
        due.push((next, name, id(&key, "a"), issued));
    }
    // Jitter bounds: at most 10% of the interval, at most 1h.
    let (every_due, _, _, every_issued) = due[0].clone();
    let jitter = every_due.duration_since(every_issued) - SignedDuration::from_hours(1);
    assert!(
        jitter >= SignedDuration::ZERO && jitter <= SignedDuration::from_mins(6),
        "{jitter}"
    );
    let (cron_due, ..) = due[1].clone();
    let berlin = cron_due.to_zoned(jiff::tz::TimeZone::get("Europe/Berlin").unwrap());
    let run = berlin.with().hour(3).minute(0).second(0).build().unwrap();
    let jitter = cron_due.duration_since(run.timestamp());
    assert!(
        jitter >= SignedDuration::ZERO && jitter <= SignedDuration::from_hours(1),
        "cron runs at 03:00 Berlin time plus at most 1h of jitter: {berlin}"
    );
    let (renew_due, _, _, renew_issued) = due[2].clone();
    assert_eq!(
        renew_due,
        renew_issued
            .checked_add(SignedDuration::from_hours(8))
            .unwrap()
    );

    due.sort();
    for (at, name, old_id, _) in due {
        h.clock
            .set(at.checked_sub(SignedDuration::from_secs(1)).unwrap());
        h.settle().await;
        assert_eq!(
            id(&h.apikey(name).await.unwrap(), "a"),
            old_id,
            "{name} not due yet"
        );
        h.clock.set(at);
        h.wait_key(name, "rotated on time", |k| id(k, "a") != old_id)
            .await;
    }
    // A mint is counted once its Secret is written too, just after the status the wait saw.
    for reason in ["schedule", "renew"] {
        let counter = format!(r#"keysmith_tokens_minted_total{{reason="{reason}"}}"#);
        eventually(&counter, || async {
            h.metrics().contains(&counter).then_some(())
        })
        .await;
    }
}

async fn keysmith(h: &Harness, args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    h.cluster
        .write_kubeconfig(&kubeconfig, &Identity::Admin)
        .await
        .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .args(args)
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_command_rolls_every_slot_or_one() {
    let h = Harness::start().await;
    h.apply(DEPLOYMENT).await;
    h.apply(&rotating_key("one")).await;
    let key = h.wait_key("site", "Ready", ready).await;
    let (d0, p0) = (id(&key, "delivery"), id(&key, "preview"));

    let (ok, out, err) = keysmith(&h, &["rotate", "site", "-n", "cms"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("keysmith.dev/rotate="), "{out}");
    let key = h
        .wait_key("site", "all slots rotated", |k| {
            id(k, "delivery") != d0 && id(k, "preview") != p0
        })
        .await;
    h.settle().await;
    let (d1, p1) = (id(&key, "delivery"), id(&key, "preview"));

    let (ok, _, err) = keysmith(&h, &["rotate", "site", "-n", "cms", "--token", "preview"]).await;
    assert!(ok, "{err}");
    let key = h
        .wait_key("site", "preview rotated", |k| id(k, "preview") != p1)
        .await;
    h.settle().await;
    assert_eq!(
        id(&h.apikey("site").await.unwrap(), "delivery"),
        d1,
        "delivery kept"
    );
    assert!(token(&key, "preview")["rotateSlotAnnotation"].is_string());

    let (ok, _, err) = keysmith(&h, &["rotate", "site", "-n", "cms", "--token", "nope"]).await;
    assert!(!ok);
    assert!(err.contains("no token slot \"nope\""), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");

    let (ok, out, err) = keysmith(&h, &["status", "site", "-n", "cms"]).await;
    assert!(ok, "{err}");
    assert!(out.contains(&id(&key, "preview")), "{out}");
    assert!(out.contains("Ready     True  Rotated"), "{out}");
    let (ok, _, err) = keysmith(&h, &["status", "missing", "-n", "cms"]).await;
    assert!(!ok && err.contains("not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_then_expired_with_a_moving_clock() {
    let h = Harness::start().await;
    h.apply(
        r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: site, namespace: cms}
spec:
  tokens: [{name: a}]
  expiresAfter: 48h
"#,
    )
    .await;
    let key = h.wait_key("site", "Ready", ready).await;
    assert_eq!(condition(&key, "Expiring").unwrap().0, "False");
    h.settle().await;
    let metrics = h.metrics();
    let series =
        r#"keysmith_token_expiry_timestamp_seconds{namespace="cms",apikey="site",token="a"}"#;
    assert!(metrics.contains(series), "{metrics}");

    h.clock.advance(SignedDuration::from_hours(25));
    h.wait_key("site", "Expiring", |k| {
        condition(k, "Expiring").is_some_and(|(s, _)| s == "True")
    })
    .await;
    h.clock.advance(SignedDuration::from_hours(23));
    let key = h
        .wait_key("site", "Expired", |k| {
            condition(k, "Expired").is_some_and(|(s, _)| s == "True")
        })
        .await;
    assert_eq!(
        condition(&key, "Ready").unwrap(),
        ("False".into(), "Expired".into())
    );
    h.settle().await;
    assert_eq!(h.events("Expiring").await.len(), 1);
    assert_eq!(h.events("Expired").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_expires_at_disabled_and_missing_restart_target() {
    let h = Harness::start().await;
    let end = h
        .clock
        .now()
        .checked_add(SignedDuration::from_hours(2))
        .unwrap();
    h.apply(&format!(
        r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {{name: ending, namespace: cms}}
spec:
  tokens: [{{name: a}}]
  expiresAt: "{end}"
---
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {{name: paused, namespace: cms}}
spec:
  tokens: [{{name: a}}]
  disabled: true
  rotation: {{trigger: one}}
  secret: {{restartTargets: [{{kind: StatefulSet, name: ghost}}]}}
"#
    ))
    .await;
    // A two-hour key is inside its warning window from its creation on (the test clock started
    // a moment before the emulator stamped creationTimestamp).
    h.clock.advance(SignedDuration::from_mins(1));
    h.wait_key("ending", "Expiring", |k| {
        condition(k, "Expiring").is_some_and(|(s, _)| s == "True")
    })
    .await;
    let paused = h
        .wait_key("paused", "Disabled", |k| {
            condition(k, "Disabled").is_some_and(|(s, _)| s == "True")
        })
        .await;
    assert_eq!(
        condition(&paused, "Ready").unwrap(),
        ("False".into(), "Disabled".into())
    );
    // A disabled key still has its tokens in the Secret.
    eventually("Secret of the disabled key", || async {
        h.secret("paused").await
    })
    .await;

    h.clock.advance(SignedDuration::from_mins(119));
    let ending = h
        .wait_key("ending", "Expired", |k| {
            condition(k, "Ready").is_some_and(|(_, r)| r == "Expired")
        })
        .await;
    assert!(ending["status"]["nextRotationAt"].is_null());

    // Re-enable with a new trigger: the rotation restarts a workload that does not exist.
    h.apply(
        r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: paused, namespace: cms}
spec:
  tokens: [{name: a}]
  rotation: {trigger: two}
  secret: {restartTargets: [{kind: StatefulSet, name: ghost}]}
"#,
    )
    .await;
    h.wait_key("paused", "rotated", |k| {
        condition(k, "Ready").is_some_and(|(_, r)| r == "Rotated")
    })
    .await;
    let warning = eventually("missing target event", || async {
        h.events("RestartTriggered").await.into_iter().next()
    })
    .await;
    assert_eq!(warning["type"], "Warning");
    assert!(warning["note"].as_str().unwrap().contains("does not exist"));
    h.settle().await;
}

/// [`rotating_key`] restarting Argo Rollout `shop` instead of Deployment `web`.
fn rollout_key(trigger: &str) -> String {
    rotating_key(trigger).replace(
        "{kind: Deployment, name: web}",
        "{kind: Rollout, name: shop}",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_rollouts_restart_through_restart_at_once_per_rotation() {
    use keysmith_testenv::argo;
    let h = Harness::start().await;
    // Without Argo Rollouts installed a Rollout target is missing: a warning, no error loop.
    h.apply(&rollout_key("one")).await;
    h.wait_key("site", "Ready", ready).await;
    h.apply(&rollout_key("two")).await;
    h.wait_key("site", "rotation two", |k| {
        token(k, "delivery")["rotationTrigger"] == "two"
    })
    .await;
    let missing = eventually("the missing Rollout's event", || async {
        h.events("RestartTriggered").await.into_iter().next()
    })
    .await;
    assert_eq!(missing["type"], "Warning");
    let note = missing["note"].as_str().unwrap();
    assert!(note.contains("Rollout cms/shop does not exist"), "{note}");
    h.settle().await;

    // Installed, with a Rollout whose pods read the Secret.
    h.apply(argo::ROLLOUT_CRD).await;
    h.apply(&argo::rollout(NS, "shop", "site")).await;
    let rollout = || async {
        h.cluster
            .get("argoproj.io/v1alpha1", "Rollout", NS, "shop")
            .await
            .expect("the Rollout")
    };
    let before = rollout().await;
    h.cluster.clear_requests();
    h.apply(&rollout_key("three")).await;
    let key = h
        .wait_key("site", "rotation three", |k| {
            token(k, "delivery")["rotationTrigger"] == "three"
        })
        .await;
    h.settle().await;
    assert_eq!(writes_of(&h, "rollouts"), 1, "one restart per rotation");
    let shop = rollout().await;
    let mut ids = [id(&key, "delivery"), id(&key, "preview")];
    ids.sort();
    assert_eq!(
        shop["metadata"]["annotations"]["keysmith.dev/restarted-for"],
        ids.join(",")
    );
    // Argo restarts the pods created before restartAt: the rotation's time.
    assert_eq!(
        time(&shop["spec"]["restartAt"]),
        time(&token(&key, "delivery")["issuedAt"])
    );
    // The pod template is untouched: no new revision to roll through the canary steps.
    assert_eq!(shop["spec"]["template"], before["spec"]["template"]);
    let restarted = h.events("RestartTriggered").await;
    assert!(
        restarted
            .iter()
            .any(|e| e["type"] == "Normal"
                && e["note"].as_str().unwrap().contains("Rollout cms/shop")),
        "{restarted:?}"
    );

    // The overlap ends, resyncs pass: no second restart.
    h.cluster.clear_requests();
    h.clock.advance(SignedDuration::from_mins(61));
    h.wait_key("site", "overlap over", |k| {
        token(k, "delivery")["previous"].is_null()
    })
    .await;
    h.settle().await;
    assert_eq!(writes_of(&h, "rollouts"), 0, "no second restart");
    assert_eq!(
        rollout().await["spec"]["restartAt"],
        shop["spec"]["restartAt"]
    );
    let metrics = h.metrics();
    assert!(
        metrics.contains("keysmith_rollout_restarts_total 1"),
        "{metrics}"
    );
}

/// The note of the event of `reason` that happened last: the one whose series (or, without one,
/// whose single occurrence) was observed latest.
async fn latest_note(h: &Harness, reason: &str) -> Option<String> {
    let observed = |e: &Value| {
        let at = e["series"]["lastObservedTime"]
            .as_str()
            .or_else(|| e["eventTime"].as_str())
            .unwrap_or_default();
        at.parse::<Timestamp>().unwrap()
    };
    let events = h.events(reason).await;
    let latest = events.iter().max_by_key(|e| observed(e))?;
    latest["note"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_event_note_describes_the_latest_occurrence() {
    let h = Harness::start().await;
    let key = |trigger: &str| {
        rotating_key(trigger)
            .replace("overlap: 1h", "overlap: 0s")
            .replace(
                "  secret: {restartTargets: [{kind: Deployment, name: web}]}\n",
                "",
            )
    };
    h.apply(&key("one")).await;
    h.wait_key("site", "Ready", ready).await;
    // Three rotations within the six minutes a series spans.
    for trigger in ["two", "three", "four"] {
        h.apply(&key(trigger)).await;
        let key = h
            .wait_key("site", "rotation by trigger", |k| {
                token(k, "delivery")["rotationTrigger"] == trigger
            })
            .await;
        let current = id(&key, "delivery");
        eventually("the Rotated event of this rotation", || async {
            latest_note(&h, "Rotated")
                .await?
                .contains(&current)
                .then_some(())
        })
        .await;
    }
    // Every Rotated event names the tokens of exactly one rotation.
    let rotated = h.events("Rotated").await;
    assert_eq!(rotated.len(), 3, "{rotated:#?}");

    // Two different invalid specs in a row: the latest InvalidSpec note names the second field.
    h.apply(&key("four").replace("expiresAfter: 720h", "expiresAfter: 6000d"))
        .await;
    h.wait_key("site", "InvalidSpec on expiresAfter", |k| {
        k["status"]["conditions"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.expiresAfter"))
    })
    .await;
    h.apply(&key("four").replace("overlap: 0s", "overlap: 0s, schedule: \"61 * * * *\""))
        .await;
    h.wait_key("site", "InvalidSpec on schedule", |k| {
        k["status"]["conditions"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.rotation.schedule"))
    })
    .await;
    eventually("the InvalidSpec event of the second message", || async {
        let note = latest_note(&h, "InvalidSpec").await?;
        note.contains("spec.rotation.schedule").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_series_end_at_the_keys_expires_at_when_it_comes_first() {
    let h = Harness::start().await;
    let end = h
        .clock
        .now()
        .checked_add(SignedDuration::from_hours(72))
        .unwrap();
    let end = Timestamp::from_second(end.as_second()).unwrap();
    let key = |expires_at: &str| {
        format!(
            r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {{name: boxed, namespace: cms}}
spec:
  tokens: [{{name: plain}}, {{name: long, expiresAfter: 240h}}, {{name: short, expiresAfter: 24h}}]
  {expires_at}
"#
        )
    };
    h.apply(&key(&format!("expiresAt: \"{end}\""))).await;
    let status = h.wait_key("boxed", "Ready", ready).await;
    let series = |name: &str, token: Option<&str>, value: i64| {
        let token = token.map_or_else(String::new, |t| format!(r#",token="{t}""#));
        format!(r#"{name}{{namespace="cms",apikey="boxed"{token}}} {value}"#)
    };
    let own = |slot: &str| time(&token(&status, slot)["expiresAt"]).as_second();
    let expected = [
        // No lifetime of its own, or a longer one: the key's end is when it stops verifying.
        series(
            "keysmith_token_expiry_timestamp_seconds",
            Some("plain"),
            end.as_second(),
        ),
        series(
            "keysmith_token_expiry_timestamp_seconds",
            Some("long"),
            end.as_second(),
        ),
        series(
            "keysmith_token_expiry_timestamp_seconds",
            Some("short"),
            own("short"),
        ),
        series(
            "keysmith_apikey_expiry_timestamp_seconds",
            None,
            end.as_second(),
        ),
    ];
    eventually("the expiry series", || async {
        let metrics = h.metrics();
        expected
            .iter()
            .all(|s| metrics.contains(s.as_str()))
            .then_some(())
    })
    .await;

    // Without spec.expiresAt each token's own expiry is left, and the key's series goes.
    h.apply(&key("")).await;
    let status = h
        .wait_key("boxed", "no key end", |k| {
            k["status"]
                .get("expiresAt")
                .is_some_and(|e| e.as_str() == token(k, "short")["expiresAt"].as_str())
        })
        .await;
    let own = |slot: &str| time(&token(&status, slot)["expiresAt"]).as_second();
    let long = series(
        "keysmith_token_expiry_timestamp_seconds",
        Some("long"),
        own("long"),
    );
    eventually("the series without the key's end", || async {
        let metrics = h.metrics();
        (metrics.contains(&long)
            && !metrics.contains(r#"token="plain""#)
            && !metrics.contains("keysmith_apikey_expiry_timestamp_seconds{"))
        .then_some(())
    })
    .await;
}
