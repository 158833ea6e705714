//! Crash consistency (SPEC 4.1 step 4): the `keysmith controller` process runs against the
//! API server while a driver keeps rotating a fleet of ApiKeys through their rotation annotations;
//! the test SIGKILLs the process at seeded random moments and restarts it, many times.
//!
//! After every kill, with the controller dead and the cluster state therefore frozen, the state
//! must already be consistent: every token in every Secret verifies through the verifier's index
//! built from the ApiKeys as they are, and no previous token's window was stretched. After the
//! last restart the fleet must converge: no Secret missing, no ApiKey stuck (every rotation
//! request answered), and once every overlap window has ended no token but the current ones
//! verifies.
//!
//! CI size by default; `KEYSMITH_LONG=1` runs the long version (400 keys, 60 kills).
//! `KEYSMITH_CRASH_KEYS`, `KEYSMITH_CRASH_KILLS` and `KEYSMITH_CRASH_SEED` override the size and
//! the seed; the seed is printed so a failure can be replayed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::harness::controller::*;
use jiff::{SignedDuration, Timestamp};
use keysmith::api::{ApiKey, ROTATE_ANNOTATION, ROTATE_SLOT_ANNOTATION_PREFIX};
use keysmith::token::sha256_hex;
use keysmith::verifier::decision::{Code, VerifyRequest};
use keysmith::verifier::index::Index;
use kube::Api;
use kube::api::{Patch, PatchParams};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

/// Overlap of every key. A token a crash left in a Secret as `previous` verifies until the
/// restarted controller's pass reaches its key and publishes the new one, and no longer: windows
/// are never stretched, so the overlap must outlast the outage. Killed every second or two, a
/// controller with hundreds of keys may die again before its pass reaches a key, and the outage
/// then spans several restarts; the kill loop therefore lets the controller finish any
/// rotation a kill interrupted more than [`OVERLAP`]`/3` ago before it kills again (see
/// docs/RELIABILITY.md for what happens without that guard). Production overlaps are hours.
const OVERLAP: SignedDuration = SignedDuration::from_secs(30);

/// Slots of key `i`: one or two, base62 and hex, so per-slot annotations mean something.
fn slots(i: usize) -> &'static [&'static str] {
    if i.is_multiple_of(2) {
        &["a", "b"]
    } else {
        &["a"]
    }
}

fn manifest(i: usize) -> String {
    let tokens: Vec<String> = slots(i)
        .iter()
        .map(|s| {
            let encoding = if *s == "b" { "hex" } else { "base62" };
            format!("{{name: {s}, prefix: crash_{s}_, encoding: {encoding}}}")
        })
        .collect();
    format!(
        "apiVersion: keysmith.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: k{i}, namespace: {NS}}}\n\
         spec:\n  tokens: [{}]\n  rotation: {{overlap: {}s}}\n",
        tokens.join(", "),
        OVERLAP.as_secs()
    )
}

struct Size {
    keys: usize,
    kills: usize,
    seed: u64,
}

impl Size {
    fn from_env() -> Size {
        let long = std::env::var("KEYSMITH_LONG").is_ok_and(|v| v == "1");
        let var = crate::harness::env_number;
        Size {
            keys: var("KEYSMITH_CRASH_KEYS", if long { 400 } else { 120 }) as usize,
            kills: var("KEYSMITH_CRASH_KILLS", if long { 60 } else { 10 }) as usize,
            seed: var("KEYSMITH_CRASH_SEED", 20_261_122),
        }
    }
}

/// The `keysmith controller` child process, restarted after every kill with the same identity
/// (a container restart keeps its pod name), its output appended to one log file.
struct ControllerProcess {
    kubeconfig: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    starts: usize,
}

impl ControllerProcess {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("controller log opens");
        let child = Command::new(env!("CARGO_BIN_EXE_keysmith"))
            .args([
                "controller",
                "--metrics-listen",
                "127.0.0.1:0",
                "--leader-election-namespace",
                CONTROLLER_NS,
                "--identity",
                "crash-test",
                "--lease-duration",
                "2",
                "--lease-renew-grace",
                "1",
            ])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("keysmith controller starts");
        self.child = Some(child);
        self.starts += 1;
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap, so nothing it sent is still in flight
    /// from its side.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let status = child.wait().expect("controller is reaped");
            assert!(
                status.code().is_none(),
                "the controller exited on its own ({status}) before the kill; log:\n{}",
                tail(&self.log)
            );
        }
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn verify(index: &Index, token: &str, now: Timestamp) -> Code {
    let request = VerifyRequest::token(token);
    index.verify(&request, now).code
}

/// The ApiKeys and managed Secrets.
struct Snapshot {
    keys: Vec<Value>,
    /// Secret name → (data key → token).
    secrets: BTreeMap<String, BTreeMap<String, String>>,
}

/// Read the ApiKeys and managed Secrets. `frozen`: the controller is dead, so read until no
/// write happened in between (the emulator may still be finishing a request the killed process
/// sent) to get one instant; with a live controller that could spin forever, and the readers
/// that need no single instant poll anyway.
async fn snapshot(cluster: &Cluster, frozen: bool) -> Snapshot {
    loop {
        let before = cluster.resource_version().await;
        let keys = cluster
            .list("keysmith.dev/v1alpha1", "ApiKey", Some(NS))
            .await;
        let secrets = cluster
            .list("v1", "Secret", Some(NS))
            .await
            .into_iter()
            .filter(|s| s["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "keysmith")
            .map(|s| {
                let name = s["metadata"]["name"].as_str().unwrap().to_owned();
                let data = s["data"]
                    .as_object()
                    .map(|d| {
                        d.keys()
                            .map(|k| (k.clone(), secret_value(&s, k).expect("UTF-8 token")))
                            .collect()
                    })
                    .unwrap_or_default();
                (name, data)
            })
            .collect();
        if !frozen || cluster.resource_version().await == before {
            return Snapshot { keys, secrets };
        }
    }
}

impl Snapshot {
    /// The verifier's index over these ApiKeys.
    fn index(&self, now: Timestamp) -> Index {
        let index = Index::default();
        for key in &self.keys {
            let key: ApiKey = serde_json::from_value(key.clone()).expect("an ApiKey");
            index.apply(&key, now);
        }
        index
    }

    /// Tokens of every Secret, as (Secret, data key, token).
    fn secret_tokens(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.secrets.iter().flat_map(|(name, data)| {
            data.iter()
                .map(move |(k, t)| (name.as_str(), k.as_str(), t.as_str()))
        })
    }
}

/// What the kill-time checks saw, for the summary line.
#[derive(Default)]
struct Seen {
    /// Every token ever read from a Secret, with the Secret it was in.
    tokens: HashMap<String, String>,
    /// Secret tokens that were the `previous` of their slot: the kill landed between the
    /// status write and the Secret write.
    interrupted: HashSet<String>,
    checked: usize,
    /// The longest a kill-interrupted rotation waited for a controller to complete it.
    longest_outage: SignedDuration,
}

/// How long ago the oldest rotation still incomplete was interrupted: a Secret holding its
/// slot's `previous` token, whose window opened `OVERLAP` before its `validUntil`.
async fn oldest_interrupted(cluster: &Cluster) -> SignedDuration {
    let snap = snapshot(cluster, false).await;
    let now = Timestamp::now();
    let mut oldest = SignedDuration::ZERO;
    for key in &snap.keys {
        let Some(held) = snap.secrets.get(key["metadata"]["name"].as_str().unwrap()) else {
            continue;
        };
        for slot in key["status"]["tokens"].as_array().into_iter().flatten() {
            let previous = &slot["previous"];
            let token = slot["name"].as_str().and_then(|n| held.get(n));
            if token.is_some_and(|t| previous["sha256"] == sha256_hex(t).as_str()) {
                let until: Timestamp = previous["validUntil"].as_str().unwrap().parse().unwrap();
                oldest = oldest.max(now.duration_since(until - OVERLAP));
            }
        }
    }
    oldest
}

/// A slot's replaced tokens still inside their windows: `previous`, then `earlier`.
fn replaced(slot: &Value) -> Vec<Value> {
    let earlier = slot["earlier"].as_array().cloned().unwrap_or_default();
    let previous = slot.get("previous").filter(|p| !p.is_null()).cloned();
    previous.into_iter().chain(earlier).collect()
}

/// The invariants that must hold at any instant, even right after a SIGKILL.
async fn check_consistent(cluster: &Cluster, seen: &mut Seen, when: &str) {
    let snap = snapshot(cluster, true).await;
    let now = Timestamp::now();
    let index = snap.index(now);
    let mut broken = Vec::new();
    // Replaced tokens inside a window: each slot's `previous` and `earlier` ones.
    let previous: HashSet<String> = snap
        .keys
        .iter()
        .flat_map(|k| {
            k["status"]["tokens"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|t| replaced(&t))
        .filter_map(|p| p["sha256"].as_str().map(str::to_owned))
        .collect();
    for (secret, data_key, token) in snap.secret_tokens() {
        seen.checked += 1;
        seen.tokens.insert(token.to_owned(), secret.to_owned());
        let code = verify(&index, token, now);
        if code != Code::Valid {
            broken.push(format!("{secret}/{data_key} answers {code:?}"));
        } else if previous.contains(&sha256_hex(token)) {
            seen.interrupted.insert(token.to_owned());
        }
    }
    // A token that left the Secrets verifies only inside the overlap window its replacement
    // opened, no later than the current token's issue: a restart must never stretch a window.
    for key in &snap.keys {
        for slot in key["status"]["tokens"].as_array().into_iter().flatten() {
            let issued: Timestamp = slot["issuedAt"].as_str().unwrap().parse().unwrap();
            for replaced in replaced(slot) {
                let until: Timestamp = replaced["validUntil"].as_str().unwrap().parse().unwrap();
                // Times in status have whole seconds: allow the rounding.
                if until > issued + OVERLAP + SignedDuration::from_secs(1) {
                    broken.push(format!(
                        "{}/{}: replaced token valid until {until}, beyond issuedAt {issued} + overlap",
                        key["metadata"]["name"], slot["name"]
                    ));
                }
            }
        }
    }
    let current: HashSet<&str> = snap.secret_tokens().map(|(_, _, t)| t).collect();
    for (token, secret) in &seen.tokens {
        if !current.contains(token.as_str())
            && verify(&index, token, now) == Code::Valid
            && !previous.contains(&sha256_hex(token))
        {
            broken.push(format!(
                "a token that left {secret} still verifies outside any window"
            ));
        }
    }
    assert!(broken.is_empty(), "{when}: {}", broken.join("\n"));
}

/// Rotation requests the driver made and what each key must end up answering.
struct Driver {
    requests: Arc<AtomicU64>,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// Keep requesting rotations: every ~40 ms (well within what a debug-build controller on two cores
/// sustains, so the backlog stays bounded) a random key gets a new `keysmith.dev/rotate` value
/// (every slot) or a new `keysmith.dev/rotate-a` value (one slot), as `keysmith rotate` would.
fn drive(admin: kube::Client, keys: usize, seed: u64) -> Driver {
    let requests = Arc::new(AtomicU64::new(0));
    let paused = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn({
        let (requests, paused, stop) = (requests.clone(), paused.clone(), stop.clone());
        async move {
            let api: Api<ApiKey> = Api::namespaced(admin, NS);
            let mut rng = StdRng::seed_from_u64(seed);
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(40)).await;
                if paused.load(Ordering::Relaxed) {
                    continue;
                }
                let n = requests.fetch_add(1, Ordering::Relaxed);
                let key = format!("k{}", rng.random_range(0..keys));
                let annotation = if rng.random_bool(0.5) {
                    ROTATE_ANNOTATION.to_owned()
                } else {
                    format!("{ROTATE_SLOT_ANNOTATION_PREFIX}a")
                };
                let patch = json!({"metadata": {"annotations": {annotation: format!("r{n}")}}});
                api.patch(&key, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("rotation annotation is set");
            }
        }
    });
    Driver {
        requests,
        paused,
        stop,
        task,
    }
}

/// Converged: every key Ready with every slot's token in its Secret (hash equal to status),
/// every rotation annotation answered.
async fn converged(cluster: &Cluster, keys: usize) -> Result<(), String> {
    let snap = snapshot(cluster, false).await;
    for i in 0..keys {
        let name = format!("k{i}");
        let key = snap
            .keys
            .iter()
            .find(|k| k["metadata"]["name"] == name.as_str())
            .ok_or(format!("{name} is gone"))?;
        if !ready(key) {
            return Err(format!(
                "{name} is not Ready: {}",
                key["status"]["conditions"]
            ));
        }
        let secret = snap
            .secrets
            .get(&name)
            .ok_or(format!("{name}'s Secret is missing"))?;
        let annotations = &key["metadata"]["annotations"];
        for slot in slots(i) {
            let status = token(key, slot);
            let held = secret
                .get(*slot)
                .ok_or(format!("{name}'s Secret lacks {slot}"))?;
            if status["sha256"].as_str() != Some(&sha256_hex(held)) {
                return Err(format!("{name}/{slot}: the Secret's token is not current"));
            }
            let slot_annotation = format!("{ROTATE_SLOT_ANNOTATION_PREFIX}{slot}");
            for (annotation, field) in [
                (ROTATE_ANNOTATION, "rotateAnnotation"),
                (slot_annotation.as_str(), "rotateSlotAnnotation"),
            ] {
                if annotations[annotation] != status[field] {
                    return Err(format!(
                        "{name}/{slot}: {annotation}={} not answered (status says {})",
                        annotations[annotation], status[field]
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Poll `check` until it holds, failing with its last complaint after `limit`.
async fn until<F: Future<Output = Result<(), String>>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match check().await {
            Ok(()) => return,
            Err(why) if tokio::time::Instant::now() > deadline => {
                panic!("timed out waiting for {what}: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(40)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_never_publishes_a_token_that_does_not_verify() {
    let started = std::time::Instant::now();
    let size = Size::from_env();
    println!(
        "crash test: {} keys, {} kills, seed {} (KEYSMITH_CRASH_SEED replays it)",
        size.keys, size.kills, size.seed
    );
    let cluster = cluster().await;
    let admin = cluster.client().await.expect("admin client");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    cluster
        .write_kubeconfig(&kubeconfig, &controller_identity())
        .await
        .expect("kubeconfig is written");
    let manifests: Vec<String> = (0..size.keys).map(manifest).collect();
    cluster
        .apply_yaml(&manifests.join("---\n"))
        .await
        .expect("the fleet applies");

    let mut controller = ControllerProcess {
        kubeconfig,
        log: dir.path().join("controller.log"),
        child: None,
        starts: 0,
    };
    let driver = drive(admin, size.keys, size.seed);
    let mut rng = StdRng::seed_from_u64(size.seed);
    let mut seen = Seen::default();
    for kill in 1..=size.kills {
        controller.start();
        // Random moments from start-up (lease, initial list) to deep in a rotation burst.
        let alive = Duration::from_millis(rng.random_range(200..3000));
        tokio::time::sleep(alive).await;
        // The guard described at OVERLAP: an interrupted rotation must not outlive its window.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let oldest = oldest_interrupted(&cluster).await;
            seen.longest_outage = seen.longest_outage.max(oldest);
            if oldest < OVERLAP / 3 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for interrupted rotations to complete: one waits since {oldest:?}"
            );
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        driver.paused.store(true, Ordering::Relaxed);
        controller.kill();
        check_consistent(
            &cluster,
            &mut seen,
            &format!("after kill {kill} ({alive:?} alive)"),
        )
        .await;
        driver.paused.store(false, Ordering::Relaxed);
    }

    // The last start: stop rotating, let the fleet converge, then check the end state.
    driver.stop.store(true, Ordering::Relaxed);
    driver.task.await.expect("driver task");
    controller.start();
    until("the fleet to converge", Duration::from_secs(120), || {
        converged(&cluster, size.keys)
    })
    .await;
    check_consistent(&cluster, &mut seen, "after convergence").await;

    // Once every window opened during the run has ended, none of the tokens the Secrets ever
    // held verifies but the current ones. The verifier is asked at that future instant rather
    // than waited for; that the controller then drops `previous` from status is covered with a
    // test clock in controller_rotation.rs.
    let snap = snapshot(&cluster, true).await;
    let after_windows = snap
        .keys
        .iter()
        .flat_map(|k| {
            k["status"]["tokens"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|t| {
            t["previous"]["validUntil"]
                .as_str()?
                .parse::<Timestamp>()
                .ok()
        })
        .max()
        .unwrap_or_else(Timestamp::now)
        + SignedDuration::from_secs(1);
    let index = snap.index(Timestamp::now());
    let current: HashSet<&str> = snap.secret_tokens().map(|(_, _, t)| t).collect();
    for token in seen.tokens.keys() {
        let code = verify(&index, token, after_windows);
        if current.contains(token.as_str()) {
            assert_eq!(code, Code::Valid, "a current token does not verify");
        } else {
            assert!(
                matches!(code, Code::NotFound | Code::Expired),
                "a replaced token answers {code:?} after its window"
            );
        }
    }
    controller.kill();
    println!(
        "crash test: {} starts, {} kills, {} rotation requests, {} Secret tokens checked at kill \
         points ({} distinct tokens held as previous: a kill fell between the status and the Secret \
         write; the longest waited {:?} for completion), {} distinct tokens seen, all consistent, in \
         {:?}",
        controller.starts,
        size.kills,
        driver.requests.load(Ordering::Relaxed),
        seen.checked,
        seen.interrupted.len(),
        seen.longest_outage,
        seen.tokens.len(),
        started.elapsed()
    );
}
