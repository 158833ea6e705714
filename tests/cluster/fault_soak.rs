//! Fault soak (SPEC 4.1, 7): the emulator answers a few percent of the controller's requests with
//! 409, 429 or 500, adds latency to every request and closes every watch stream every few
//! seconds, while ApiKeys are created, rotated (by trigger and by annotation) and deleted.
//!
//! Everything must converge; the controller may mint again only where a failed write forces it
//! (a token whose Secret write failed is never published, so the next pass mints a fresh one),
//! its writes stay within what the retries explain, it does not hot-loop, and once the faults
//! stop a resync writes nothing.
//!
//! CI size by default; `KEYSMITH_LONG=1` soaks 200 keys through three rounds of changes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::harness::controller::*;
use keysmith::api::ApiKey;
use keysmith::token::sha256_hex;
use keysmith_emulator::Target;
use kube::Api;

fn slots(i: usize) -> &'static [&'static str] {
    if i.is_multiple_of(3) {
        &["a", "b"]
    } else {
        &["a"]
    }
}

/// Key `s<i>` with its rotation trigger and optional `keysmith.dev/rotate` annotation.
fn manifest(i: usize, trigger: &str, annotation: Option<&str>) -> String {
    let tokens: Vec<String> = slots(i)
        .iter()
        .map(|s| format!("{{name: {s}, prefix: soak_{s}_}}"))
        .collect();
    let annotations = annotation
        .map(|a| format!(", annotations: {{keysmith.dev/rotate: \"{a}\"}}"))
        .unwrap_or_default();
    format!(
        "apiVersion: keysmith.dev/v1alpha1\nkind: ApiKey\n\
         metadata: {{name: s{i}, namespace: {NS}{annotations}}}\n\
         spec:\n  tokens: [{}]\n  rotation: {{trigger: \"{trigger}\", overlap: 1h}}\n",
        tokens.join(", ")
    )
}

/// What each key should look like: its trigger and annotation, or deleted.
#[derive(Clone)]
enum Want {
    Live {
        trigger: String,
        annotation: Option<String>,
    },
    Deleted,
}

/// Realistic rates: a few percent of the controller's reads and writes fail, every request is a
/// little slow, and no watch stream lives longer than three seconds. Conflicts go to the status
/// writes only: on a real API server a 409 on the finalizer patch means a newer version exists,
/// and the controller waits for its watch event rather than retrying, an event an injected
/// conflict never sends.
fn inject_faults(emu: &keysmith_emulator::Emulator) {
    let faults = emu.faults();
    faults.seed(7);
    faults.error_rate(Target::new("*", "apikeys/status"), 409, 0.05);
    faults.error_rate(Target::new("*", "apikeys"), 429, 0.02);
    faults.error_rate(Target::new("patch", "secrets"), 500, 0.05);
    faults.error_rate(Target::new("get", "secrets"), 500, 0.02);
    faults.error_rate(Target::new("delete", "secrets"), 500, 0.05);
    faults.latency(Target::any(), Duration::from_millis(5));
    faults.close_watches_after(Duration::from_secs(3));
    // The limit applies to streams opened from now on: end the controller's current ones.
    faults.close_open_watches();
}

/// Converged: every live key Ready, its Secret holding its current tokens, its trigger and
/// annotation answered; every deleted key and its Secret gone.
async fn converged(h: &Harness, want: &BTreeMap<usize, Want>) -> Result<(), String> {
    for (i, want) in want {
        let name = format!("s{i}");
        let (key, secret) = (h.apikey(&name).await, h.secret(&name).await);
        let Want::Live {
            trigger,
            annotation,
        } = want
        else {
            if key.is_some() || secret.is_some() {
                return Err(format!("{name} or its Secret is still there"));
            }
            continue;
        };
        let key = key.ok_or(format!("{name} is gone"))?;
        if !ready(&key) {
            return Err(format!("{name} is not Ready"));
        }
        let secret = secret.ok_or(format!("{name}'s Secret is missing"))?;
        for slot in slots(*i) {
            let status = token(&key, slot);
            let held = secret_value(&secret, slot).ok_or(format!("{name} lacks {slot}"))?;
            if status["sha256"].as_str() != Some(&sha256_hex(&held)) {
                return Err(format!("{name}/{slot}: the Secret's token is not current"));
            }
            if status["rotationTrigger"].as_str() != Some(trigger)
                || status["rotateAnnotation"].as_str() != annotation.as_deref()
            {
                return Err(format!("{name}/{slot}: rotation not answered yet"));
            }
        }
    }
    Ok(())
}

async fn wait_converged(h: &Harness, want: &BTreeMap<usize, Want>, phase: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match converged(h, want).await {
            Ok(()) => return,
            Err(why) if Instant::now() > deadline => panic!("{phase} did not converge: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A metric family's total over its labels.
fn metric_sum(h: &Harness, name: &str) -> u64 {
    h.metrics()
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Delete as a user would: `kubectl delete` retries a 429 or a 500 too.
async fn delete(h: &Harness, name: &str) {
    let api: Api<ApiKey> = Api::namespaced(h.admin.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match api.delete(name, &Default::default()).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 404 => return,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "delete retried");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("deleting {name}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_latency_and_dropped_watches_converge_without_extra_mints_or_hot_loops() {
    let started = Instant::now();
    let long = std::env::var("KEYSMITH_LONG").is_ok_and(|v| v == "1");
    let (keys, rounds) = if long { (200, 3) } else { (36, 1) };
    let h = Harness::start().await;
    // The real API server injects no faults: there the soak is the same churn without them.
    if let Some(emu) = h.cluster.emulator() {
        inject_faults(emu);
    }

    let mut want: BTreeMap<usize, Want> = BTreeMap::new();
    let mut needed_mints = 0;
    for i in 0..keys {
        h.apply(&manifest(i, "t0", None)).await;
        needed_mints += slots(i).len();
        want.insert(
            i,
            Want::Live {
                trigger: "t0".into(),
                annotation: None,
            },
        );
    }
    wait_converged(&h, &want, "creation").await;

    // Each round: a third of the live keys rotate by trigger, a third by annotation, and a
    // few are deleted.
    for round in 1..=rounds {
        let live: Vec<usize> = want
            .iter()
            .filter(|(_, w)| matches!(w, Want::Live { .. }))
            .map(|(i, _)| *i)
            .collect();
        for (n, i) in live.into_iter().enumerate() {
            let Some(Want::Live {
                trigger,
                annotation,
            }) = want.get(&i).cloned()
            else {
                continue;
            };
            let change = match n % 6 {
                0 | 1 => Want::Live {
                    trigger: format!("t{round}"),
                    annotation,
                },
                2 | 3 => Want::Live {
                    trigger,
                    annotation: Some(format!("a{round}")),
                },
                4 => Want::Deleted,
                _ => continue,
            };
            match &change {
                Want::Live {
                    trigger,
                    annotation,
                } => {
                    h.apply(&manifest(i, trigger, annotation.as_deref())).await;
                    needed_mints += slots(i).len();
                }
                Want::Deleted => delete(&h, &format!("s{i}")).await,
            }
            want.insert(i, change);
        }
        wait_converged(&h, &want, &format!("round {round}")).await;
    }

    // What the faults cost, read before they stop.
    let user = controller_user();
    let failed_writes = h
        .cluster
        .requests(|e| e.user == user && e.is_write() && [409, 429, 500].contains(&e.code))
        .len();
    let failed_reads = h
        .cluster
        .requests(|e| e.user == user && !e.is_write() && [409, 429, 500].contains(&e.code))
        .len();
    let writes = h.controller_writes().len();
    let mints = metric_sum(&h, "keysmith_tokens_minted_total");
    let reconciles = h.reconciles();
    let errors = metric_sum(&h, "keysmith_reconcile_errors_total");
    let watches = h
        .cluster
        .requests(|e| e.user == user && e.verb == "watch")
        .len();
    let injected = h
        .cluster
        .emulator()
        .map_or(0, |emu| emu.faults().injected());
    println!(
        "fault soak: {keys} keys, {rounds} round(s): {} injected faults ({failed_writes} on \
         controller writes, {failed_reads} on its reads), {watches} watch (re)connections; \
         {mints} mints for {needed_mints} needed; {writes} successful controller writes; \
         {reconciles} reconciles, {errors} failed; converged in {:?}",
        injected,
        started.elapsed()
    );

    // A failed write can cost one fresh token per slot of its key (at most two here); nothing
    // else may mint twice.
    assert!(
        mints <= needed_mints as u64 + 2 * failed_writes as u64,
        "{mints} mints for {needed_mints} needed and {failed_writes} failed writes"
    );
    // No hot loop: reconciles stay within a small multiple of the work plus the retries.
    let work = (needed_mints + keys) as u64;
    assert!(
        reconciles <= 10 * work + 5 * (failed_writes + failed_reads) as u64,
        "{reconciles} reconciles for {work} units of work: a hot loop"
    );

    // Faults off: the fleet is at rest, and a full resync writes nothing.
    if let Some(emu) = h.cluster.emulator() {
        emu.faults().clear();
    }
    h.settle().await;
    let live = want
        .values()
        .filter(|w| matches!(w, Want::Live { .. }))
        .count() as u64;
    let before = h.controller_writes().len();
    let reconciles_before = h.reconciles();
    h.clock.resync();
    eventually("a full resync", || async {
        (h.reconciles() >= reconciles_before + live).then_some(())
    })
    .await;
    assert_eq!(
        h.controller_writes().len(),
        before,
        "a resync of healthy keys writes nothing"
    );
    converged(&h, &want)
        .await
        .expect("still converged after the faults");
}
