//! Stateful property tests of SPEC 4.1a: random operation sequences on one ApiKey, with the
//! in-process controller and verifier on the test clock; after every step the controller
//! settles, the test observes the key, its Secret, its published Secrets, its events and the
//! verifier's answer for every token it ever saw, and [`Ledger::observe`] checks every promise
//! made so far. I7 (writes per operation) is counted here from the API server's request log.
//!
//! One cluster, controller and verifier serve every sequence (a fresh key name each), so the
//! budget is spent on steps. Budgets: `KEYSMITH_PROPS_CASES` sequences of `KEYSMITH_PROPS_STEPS`
//! steps (default 200 × 30 on the emulator, 8 × 30 on the real API server), seed
//! `KEYSMITH_PROPS_SEED` (printed, so a run can be replayed), at most `KEYSMITH_PROPS_SHRINK`
//! replays to shrink a failure to a minimal op list, printed ready to paste into a regression
//! test like the ones at the end of this file.
//!
//! The verifier's index follows the ApiKey through a watch, and the controller repairs a Secret
//! once its own watch shows the edit, so a check whose only violations are answers (I1, I2, I5)
//! or Secret contents (I3) is repeated until it passes or [`CATCH_UP`] has gone by (the last
//! attempt is the one reported); status, usage and events (I4, I6) fail the step at once, as
//! the controller is at rest by then and a correct one never shows them wrong even briefly.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::controller::*;
use crate::harness::http::request;
use crate::harness::verifier::{Spawned, spawn as spawn_verifier};
use crate::harness::{env_number, raw_apikeys, real};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use keysmith::api::{Encoding, ROTATE_ANNOTATION, ROTATE_SLOT_ANNOTATION_PREFIX};
use keysmith::token::{Token, sha256_hex};
use keysmith::verifier::decision::Code;
use keysmith::verifier::tenancy::Tenancy;
use keysmith_core::invariants::{
    Invariant, Ledger, ObservedEvent, Operation, Snapshot, Violation, check_writes,
};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use proptest::prelude::*;
use proptest::test_runner::{
    Config as ProptestConfig, RngAlgorithm, TestError, TestRng, TestRunner,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// How long the verifier may take to follow a step before a failed check counts.
const CATCH_UP: Duration = Duration::from_secs(5);
/// Reconcile passes a step may take to come to rest; one that still writes after this many
/// breaks I7 (a healthy resync writes nothing).
const SETTLE_PASSES: usize = 8;

/// The two slots of every key: base62 and hex, so per-slot rotation means something.
const SLOTS: [&str; 2] = ["a", "b"];

/// One operation on the key or its surroundings.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Valid edit: `rotation.overlap`.
    SetOverlap(&'static str),
    /// Valid edit: `rotation.every` (none: no interval); fixes an invalid `every`.
    SetEvery(Option<&'static str>),
    /// Valid edit: `expiresAfter`.
    SetExpiresAfter(Option<&'static str>),
    /// Valid edit: one of the grant sets that all allow the probe request; fixes a bad grant.
    SetGrants(usize),
    /// Invalid edit the schema admits: `rotation.every: "1000w"` (over 5y).
    InvalidEvery,
    /// Invalid edit the schema admits: a grant action with a space.
    InvalidGrant,
    /// A new `rotation.trigger` value.
    Trigger,
    /// A new `keysmith.dev/rotate` value.
    RotateAll,
    /// A new `keysmith.dev/rotate-<slot>` value.
    RotateSlot(usize),
    /// `spec.disabled`.
    Disable(bool),
    /// `spec.expiresAt` this many seconds from now (negative: past), or removed.
    ExpiresAt(Option<i64>),
    /// Delete the key's Secret.
    DeleteSecret,
    /// Write a token Keysmith never minted into a slot's Secret key.
    TamperSecret(usize),
    /// Delete the Envoy Gateway and agentgateway Secrets.
    DeletePublished,
    /// Overwrite slot a's current entry in the Envoy Gateway and agentgateway Secrets (a token
    /// Keysmith never minted, and its hash).
    TamperPublished,
    /// Stop the controller gracefully and start it again.
    RestartController,
    /// Request a rotation, then end the controller's task this many milliseconds later (the
    /// SIGKILL analogue) and start a new one.
    AbortController(u64),
    /// Stop the verifier and start a new one (an empty index, listed afresh).
    RestartVerifier,
    /// Move the test clock this many seconds.
    Step(i64),
    /// A minute later, verify the slot's token from the Secret and wait (bounded) for the
    /// verifier to write its use back.
    Verify(usize),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

fn op() -> impl Strategy<Value = Op> {
    let seconds = prop_oneof![
        1i64..60,
        60i64..3_600,
        3_600i64..86_400,
        86_400i64..30 * 86_400,
        30 * 86_400i64..200 * 86_400,
    ];
    prop_oneof![
        2 => prop::sample::select(vec!["0", "10m", "1h", "6h"]).prop_map(Op::SetOverlap),
        2 => prop::option::of(prop::sample::select(vec!["1d", "7d", "30d"])).prop_map(Op::SetEvery),
        1 => prop::option::of(prop::sample::select(vec!["2d", "90d", "400d"]))
            .prop_map(Op::SetExpiresAfter),
        1 => (0..GRANTS.len()).prop_map(Op::SetGrants),
        1 => Just(Op::InvalidEvery),
        1 => Just(Op::InvalidGrant),
        2 => Just(Op::Trigger),
        3 => Just(Op::RotateAll),
        3 => (0..SLOTS.len()).prop_map(Op::RotateSlot),
        2 => any::<bool>().prop_map(Op::Disable),
        1 => prop::option::of(prop::sample::select(vec![-3_600i64, 600, 2 * 86_400, 60 * 86_400]))
            .prop_map(Op::ExpiresAt),
        1 => Just(Op::DeleteSecret),
        1 => (0..SLOTS.len()).prop_map(Op::TamperSecret),
        1 => Just(Op::DeletePublished),
        1 => Just(Op::TamperPublished),
        1 => Just(Op::RestartController),
        1 => (0u64..40).prop_map(Op::AbortController),
        1 => Just(Op::RestartVerifier),
        4 => seconds.prop_map(Op::Step),
        2 => (0..SLOTS.len()).prop_map(Op::Verify),
    ]
}

/// `steps` ops, each with a flag that is always true when generated. Shrinking turns flags
/// false first, one by one, which drops their ops (a tuple shrinks its first part first), so a
/// failure shrinks to the few ops that matter while every generated sequence keeps its full
/// length; then the ops left shrink themselves.
fn sequence(steps: usize) -> impl Strategy<Value = (Vec<bool>, Vec<Op>)> {
    (
        prop::collection::vec(prop::bool::weighted(1.0), steps),
        prop::collection::vec(op(), steps),
    )
}

fn kept((keep, ops): (Vec<bool>, Vec<Op>)) -> Vec<Op> {
    ops.into_iter()
        .zip(keep)
        .filter_map(|(op, keep)| keep.then_some(op))
        .collect()
}

/// Grant sets that all allow the probe request (`content.read` on `content:pages:1`).
const GRANTS: [&str; 3] = [
    r#"[{"effect": "allow", "actions": ["content.read"], "resources": ["content:*"]}]"#,
    r#"[{"effect": "allow", "actions": ["content.*"], "resources": ["content:pages:*"]},
        {"effect": "deny", "actions": ["content.delete"]}]"#,
    r#"[{"effect": "allow", "actions": ["*"]}, {"effect": "deny", "actions": ["users.*"]}]"#,
];

/// What the test asks the verifier for every token: an action its grants allow, so a key
/// indexed fail closed (no grants) shows as FORBIDDEN.
fn probe(token: &str) -> Value {
    json!({"token": token, "action": "content.read", "resource": "content:pages:1"})
}

/// The spec the test has written, and what the ops change.
#[derive(Debug, Clone)]
struct Model {
    name: String,
    every: Option<&'static str>,
    overlap: &'static str,
    expires_after: Option<&'static str>,
    grants: usize,
    invalid_every: bool,
    invalid_grant: bool,
    disabled: bool,
    expires_at: Option<Timestamp>,
    trigger: u32,
    rotations: u32,
}

impl Model {
    fn new(name: String) -> Model {
        Model {
            name,
            every: Some("30d"),
            overlap: "1h",
            expires_after: Some("90d"),
            grants: 0,
            invalid_every: false,
            invalid_grant: false,
            disabled: false,
            expires_at: None,
            trigger: 0,
            rotations: 0,
        }
    }

    fn spec(&self) -> Value {
        let grants: Value = if self.invalid_grant {
            json!([{"effect": "allow", "actions": ["content read"]}])
        } else {
            serde_json::from_str(GRANTS[self.grants]).unwrap()
        };
        let every = if self.invalid_every {
            Some("1000w")
        } else {
            self.every
        };
        json!({
            "tokens": [
                {"name": "a", "prefix": "lp_a_"},
                {"name": "b", "prefix": "lp_b_", "encoding": "hex"},
            ],
            "grants": grants,
            "expiresAfter": self.expires_after,
            "expiresAt": self.expires_at.map(|t| t.to_string()),
            "disabled": self.disabled,
            "rotation": {"every": every, "overlap": self.overlap, "trigger": format!("t{}", self.trigger)},
            "publish": [{"envoyGateway": {}}, {"agentgateway": {}}],
        })
    }

    fn published(&self) -> String {
        format!("{}-envoy-gateway", self.name)
    }

    fn hashed(&self) -> String {
        format!("{}-agentgateway", self.name)
    }
}

/// The cluster, controller and verifier every sequence shares.
struct World {
    // Declared first, so it stops before the cluster goes away with the harness.
    verifier: Option<Spawned>,
    h: Harness,
    api: std::net::SocketAddr,
    /// Per op kind: steps run and their wall time (op, settle, check), for the summary.
    timing: std::collections::BTreeMap<String, (u32, Duration)>,
}

/// Why a sequence failed, and at which step.
#[derive(Debug)]
struct Failure {
    step: usize,
    op: String,
    violations: Vec<Violation>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "after step {} ({}):", self.step, self.op)?;
        for v in &self.violations {
            write!(f, "\n  {v}")?;
        }
        Ok(())
    }
}

fn code(name: &str) -> Code {
    Code::ALL
        .into_iter()
        .find(|c| c.as_str() == name)
        .unwrap_or_else(|| panic!("unknown code {name}"))
}

impl World {
    async fn start() -> World {
        let h = Harness::start().await;
        let mut world = World {
            h,
            verifier: None,
            api: "127.0.0.1:0".parse().unwrap(),
            timing: Default::default(),
        };
        world.start_verifier().await;
        world
    }

    async fn start_verifier(&mut self) {
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tenancy = Tenancy::parse(NS, &[]).expect("a namespace name");
        let clock = self.h.clock.as_clock();
        // The test is the trusted proxy of its asks, see [`World::answer`].
        let trusted = ["127.0.0.1"];
        let spawned = spawn_verifier(&self.h.cluster, &trusted, tenancy, api, clock).await;
        self.api = spawned.api;
        self.verifier = Some(spawned);
    }

    /// A sequence that panicked may have left a part stopped.
    async fn ensure_running(&mut self) {
        if !self.h.is_running() {
            self.h.start_controller().await;
        }
        if self.verifier.is_none() {
            self.start_verifier().await;
        }
    }

    /// The verifier's answer to the probe request for `token`. The verifier slows a client
    /// that keeps failing, and every check asks about replaced and revoked tokens on purpose:
    /// each ask comes from its own (forwarded) address in the benchmarking range 198.18.0.0/15,
    /// so no answer waits on the throttle.
    async fn answer(&self, token: &str) -> Code {
        let n = ASKS.fetch_add(1, Ordering::Relaxed);
        let client = format!(
            "198.{}.{}.{}",
            18 + (n >> 16) % 2,
            (n >> 8) & 0xff,
            n & 0xff
        );
        let body = probe(token).to_string();
        let headers = [("X-Forwarded-For", client.as_str())];
        let response = request(self.api, "POST", "/v1/verify", &headers, Some(&body)).await;
        assert_eq!(response.status, 200, "{}", response.body);
        let answer: Value = serde_json::from_str(&response.body).unwrap();
        code(answer["code"].as_str().unwrap())
    }

    /// The writes to the key and its own Secret since the last `clear_requests`.
    fn key_writes(&self, m: &Model) -> Vec<String> {
        self.h
            .controller_writes()
            .iter()
            .filter(|e| e.name == m.name && (e.resource == "apikeys" || e.resource == "secrets"))
            .map(|e| format!("{} {} {}", e.verb, e.resource, e.subresource))
            .collect()
    }

    /// Resync until a pass writes nothing; I7 if none does within [`SETTLE_PASSES`].
    async fn settle(&self) -> Result<(), Vec<Violation>> {
        for _ in 0..SETTLE_PASSES {
            let writes = self.h.controller_writes().len();
            let before = self.h.reconciles();
            self.h.clock.resync();
            eventually("a reconcile pass", || async {
                (self.h.reconciles() > before).then_some(())
            })
            .await;
            if self.h.controller_writes().len() == writes {
                return Ok(());
            }
        }
        let writes: Vec<String> = self
            .h
            .controller_writes()
            .iter()
            .rev()
            .take(5)
            .map(|e| format!("{} {} {} {}", e.verb, e.resource, e.subresource, e.name))
            .collect();
        let v = check_writes(Operation::Resync, &writes).expect("writes were counted");
        Err(vec![v])
    }

    async fn observe(&self, m: &Model, ledger: &Ledger) -> Snapshot {
        let now = self.h.clock.now();
        let key = self.h.apikey(&m.name).await;
        let secret = self.h.secret(&m.name).await.map(typed);
        let published = self.h.secret(&m.published()).await.map(typed);
        let hashed = self.h.secret(&m.hashed()).await.map(typed);
        let events = self
            .h
            .cluster
            .list("events.k8s.io/v1", "Event", Some(NS))
            .await
            .into_iter()
            .filter(|e| e["regarding"]["name"] == m.name.as_str())
            .map(|e| ObservedEvent {
                name: e["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                type_: e["type"].as_str().unwrap_or_default().to_owned(),
                reason: e["reason"].as_str().unwrap_or_default().to_owned(),
                note: e["note"].as_str().unwrap_or_default().to_owned(),
                count: e["series"]["count"].as_i64().map_or(1, |c| c as i32),
            })
            .collect();
        let mut snap = Snapshot {
            now,
            key,
            secret,
            published,
            hashed,
            events,
            answers: Default::default(),
        };
        let values: BTreeSet<String> = ledger
            .values()
            .into_iter()
            .chain(snap.held_values())
            .collect();
        // Asked side by side: a long sequence knows dozens of tokens.
        let codes = futures::future::join_all(values.iter().map(|v| self.answer(v))).await;
        snap.answers = values.into_iter().zip(codes).collect();
        snap
    }

    /// Observe and check, again while the verifier catches up.
    async fn check(&self, m: &Model, ledger: &mut Ledger) -> Result<(), Vec<Violation>> {
        let deadline = Instant::now() + CATCH_UP;
        let mut valid = Vec::new();
        loop {
            let snap = self.observe(m, ledger).await;
            valid.extend(
                snap.answers
                    .iter()
                    .filter(|(_, c)| **c == Code::Valid)
                    .map(|(v, _)| (v.clone(), snap.now)),
            );
            let mut attempt = ledger.clone();
            let violations = attempt.observe(&snap);
            // Answers follow the ApiKey through the verifier's watch, and the controller
            // repairs a Secret once its own watch shows the change: both may lag a settled
            // pass. Status, usage and events are final by then.
            let lagging = violations
                .iter()
                .all(|v| v.answer || v.invariant == Invariant::I3);
            if violations.is_empty() || !lagging || Instant::now() > deadline {
                *ledger = attempt;
                for (value, at) in &valid {
                    ledger.verified(value, *at);
                }
                return if violations.is_empty() {
                    Ok(())
                } else {
                    Err(violations)
                };
            }
            self.h.clock.resync();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Write the model's spec and wait until the controller has seen it: a settled pass of a
    /// controller whose cache still holds the old spec would prove nothing.
    async fn write_spec(&self, m: &Model) {
        let patch = json!({"spec": m.spec()});
        let written = raw_apikeys(&self.h.admin, NS)
            .patch(&m.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("the spec is written");
        let generation = written.metadata.generation.unwrap_or_default();
        self.h
            .wait_key(&m.name, "the controller to observe the edit", |k| {
                k["status"]["observedGeneration"].as_i64() >= Some(generation)
            })
            .await;
    }

    /// Wait until every slot in `slots` answered `value` in its status `field`: the rotation
    /// a healthy key owes a new trigger or annotation value.
    async fn wait_rotated(&self, m: &Model, slots: &[&str], field: &str, value: &str) {
        self.h
            .wait_key(&m.name, "the rotation to be answered", |k| {
                slots.iter().all(|slot| token(k, slot)[field] == value)
            })
            .await;
    }

    async fn annotate(&self, m: &mut Model, annotation: String) {
        m.rotations += 1;
        let patch = json!({"metadata": {"annotations": {annotation: format!("r{}", m.rotations)}}});
        raw_apikeys(&self.h.admin, NS)
            .patch(&m.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("the annotation is written");
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.h.admin.clone(), NS)
    }

    /// Carry out `op`; whether it is a rotation of a key that was healthy (I7: two writes).
    async fn apply(&mut self, m: &mut Model, op: &Op) -> bool {
        let healthy = self.healthy(m).await;
        match op {
            Op::SetOverlap(o) => m.overlap = o,
            Op::SetEvery(e) => {
                m.every = *e;
                m.invalid_every = false;
            }
            Op::SetExpiresAfter(e) => m.expires_after = *e,
            Op::SetGrants(g) => {
                m.grants = *g;
                m.invalid_grant = false;
            }
            Op::InvalidEvery => m.invalid_every = true,
            Op::InvalidGrant => m.invalid_grant = true,
            Op::Trigger => m.trigger += 1,
            Op::Disable(d) => m.disabled = *d,
            Op::ExpiresAt(offset) => {
                m.expires_at = offset.map(|s| {
                    let at = self.h.clock.now() + SignedDuration::from_secs(s);
                    Timestamp::from_second(at.as_second()).unwrap()
                })
            }
            Op::RotateAll => {
                self.annotate(m, ROTATE_ANNOTATION.to_owned()).await;
                if healthy {
                    let value = format!("r{}", m.rotations);
                    self.wait_rotated(m, &SLOTS, "rotateAnnotation", &value)
                        .await;
                }
                return healthy;
            }
            Op::RotateSlot(slot) => {
                let annotation = format!("{ROTATE_SLOT_ANNOTATION_PREFIX}{}", SLOTS[*slot]);
                self.annotate(m, annotation).await;
                if healthy {
                    let value = format!("r{}", m.rotations);
                    let slot = [SLOTS[*slot]];
                    self.wait_rotated(m, &slot, "rotateSlotAnnotation", &value)
                        .await;
                }
                return healthy;
            }
            Op::DeleteSecret => {
                let _ = self
                    .secrets()
                    .delete(&m.name, &DeleteParams::default())
                    .await;
                return false;
            }
            Op::TamperSecret(slot) => {
                let foreign = Token::generate("lp_a_", 32, Encoding::Base62).unwrap();
                let patch = json!({"data": {SLOTS[*slot]: base64(foreign.expose_secret())}});
                let _ = self
                    .secrets()
                    .patch(&m.name, &PatchParams::default(), &Patch::Merge(patch))
                    .await;
                return false;
            }
            Op::DeletePublished => {
                for name in [m.published(), m.hashed()] {
                    let _ = self.secrets().delete(&name, &DeleteParams::default()).await;
                }
                return false;
            }
            Op::TamperPublished => {
                let foreign = Token::generate("lp_a_", 32, Encoding::Base62).unwrap();
                let entry = format!("{NS}.{}.a", m.name);
                let planted = json!({"keyHash": format!("sha256:{}", foreign.sha256_hex())});
                for (name, value) in [
                    (m.published(), foreign.expose_secret().to_owned()),
                    (m.hashed(), planted.to_string()),
                ] {
                    let patch = json!({"data": {&entry: base64(&value)}});
                    let _ = self
                        .secrets()
                        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                        .await;
                }
                return false;
            }
            Op::RestartController => {
                self.h.stop().await;
                self.h.start_controller().await;
                return false;
            }
            Op::AbortController(after_ms) => {
                self.annotate(m, ROTATE_ANNOTATION.to_owned()).await;
                tokio::time::sleep(Duration::from_millis(*after_ms)).await;
                self.h.abort().await;
                self.h.start_controller().await;
                return false;
            }
            Op::RestartVerifier => {
                if let Some(verifier) = self.verifier.take() {
                    verifier.stop();
                }
                self.start_verifier().await;
                return false;
            }
            Op::Step(seconds) => {
                self.h.clock.advance(SignedDuration::from_secs(*seconds));
                return false;
            }
            Op::Verify(slot) => {
                self.verify(m, *slot).await;
                return false;
            }
        }
        self.write_spec(m).await;
        // A trigger change on a healthy key is a rotation too.
        let rotation = *op == Op::Trigger && healthy;
        if rotation {
            let value = format!("t{}", m.trigger);
            self.wait_rotated(m, &SLOTS, "rotationTrigger", &value)
                .await;
        }
        rotation
    }

    /// Ready, valid, enabled and unexpired: a rotation costs exactly two writes.
    async fn healthy(&self, m: &Model) -> bool {
        let Some(key) = self.h.apikey(&m.name).await else {
            return false;
        };
        let unexpired = m.expires_at.is_none_or(|at| at > self.h.clock.now());
        ready(&key) && unexpired && !m.disabled && !m.invalid_every && !m.invalid_grant
    }

    async fn verify(&self, m: &Model, slot: usize) {
        self.h.clock.advance(SignedDuration::from_secs(61));
        self.settle().await.ok();
        let Some(secret) = self.h.secret(&m.name).await else {
            return;
        };
        let Some(token) = secret_value(&secret, SLOTS[slot]) else {
            return;
        };
        if self.answer(&token).await != Code::Valid {
            return;
        }
        // Usage is best effort (at most once a minute, dropped when the writer is behind): give
        // the write-back its flush interval and a margin, no more.
        let sha = sha256_hex(&token);
        let now = self.h.clock.now();
        let at = Timestamp::from_second(now.as_second()).unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let key = self.h.apikey(&m.name).await.unwrap_or_default();
            let used = key["status"]["tokens"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["sha256"] == sha.as_str() && t["lastUsedAt"] == at.as_str());
            if used {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Delete the key and wait for the controller to revoke it (its finalizer gone).
    async fn delete_key(&self, m: &Model) {
        let api = raw_apikeys(&self.h.admin, NS);
        let _ = api.delete(&m.name, &DeleteParams::default()).await;
        eventually("the key to be revoked and gone", || async {
            self.h.apikey(&m.name).await.is_none().then_some(())
        })
        .await;
    }

    /// Remove the events a sequence left, so listing them stays cheap.
    async fn clean_up(&self, m: &Model) {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.h.admin.clone(), NS);
        for e in self
            .h
            .cluster
            .list("events.k8s.io/v1", "Event", Some(NS))
            .await
            .into_iter()
            .filter(|e| e["regarding"]["name"] == m.name.as_str())
        {
            if let Some(name) = e["metadata"]["name"].as_str() {
                let _ = events.delete(name, &DeleteParams::default()).await;
            }
        }
    }

    /// Create a key, then run `ops` on it, checking every promise after each step.
    async fn run(&mut self, name: String, ops: &[Op]) -> Result<(), Failure> {
        self.ensure_running().await;
        let mut m = Model::new(name);
        let result = self.run_ops(&mut m, ops).await;
        self.delete_key(&m).await;
        self.clean_up(&m).await;
        result
    }

    async fn run_ops(&mut self, m: &mut Model, ops: &[Op]) -> Result<(), Failure> {
        let fail = |step: usize, op: &str, violations| Failure {
            step,
            op: op.to_owned(),
            violations,
        };
        let mut ledger = Ledger::default();
        self.h.cluster.clear_requests();
        let key = json!({
            "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": m.name, "namespace": NS},
            "spec": m.spec(),
        });
        self.h
            .cluster
            .apply_object(&key)
            .await
            .expect("the key applies");
        self.h.wait_key(&m.name, "Ready", ready).await;
        self.settle().await.map_err(|v| fail(0, "create", v))?;
        if let Some(v) = check_writes(Operation::Mint, &self.key_writes(m)) {
            return Err(fail(0, "create", vec![v]));
        }
        self.check(m, &mut ledger)
            .await
            .map_err(|v| fail(0, "create", v))?;
        for (i, op) in ops.iter().enumerate() {
            let step = i + 1;
            let label = op.to_string();
            let started = Instant::now();
            self.h.cluster.clear_requests();
            let rotation = self.apply(m, op).await;
            self.settle().await.map_err(|v| fail(step, &label, v))?;
            if rotation && let Some(v) = check_writes(Operation::Rotation, &self.key_writes(m)) {
                return Err(fail(step, &label, vec![v]));
            }
            self.check(m, &mut ledger)
                .await
                .map_err(|v| fail(step, &label, v))?;
            let kind = label.split('(').next().unwrap_or_default().to_owned();
            let entry = self.timing.entry(kind).or_default();
            *entry = (entry.0 + 1, entry.1 + started.elapsed());
        }
        // Every sequence ends in revocation: nothing it minted verifies any more.
        let step = ops.len() + 1;
        self.delete_key(m).await;
        self.check(m, &mut ledger)
            .await
            .map_err(|v| fail(step, "delete the key", v))
    }
}

/// A Secret `data` value, as the API carries it.
fn base64(value: &str) -> Value {
    serde_json::to_value(k8s_openapi::ByteString(value.as_bytes().to_vec())).unwrap()
}

fn typed(secret: Value) -> Secret {
    serde_json::from_value(secret).expect("a Secret")
}

static KEYS: AtomicUsize = AtomicUsize::new(0);
static ASKS: AtomicUsize = AtomicUsize::new(0);

fn fresh_name(prefix: &str) -> String {
    format!("{prefix}-{}", KEYS.fetch_add(1, Ordering::Relaxed))
}

/// Replay a fixed op list (a regression test, or the every-kind walk).
async fn replay(prefix: &str, ops: &[Op]) {
    let mut world = World::start().await;
    if let Err(failure) = world.run(fresh_name(prefix), ops).await {
        panic!("{failure}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_lifecycles_keep_every_promise() {
    let cases = env_number("KEYSMITH_PROPS_CASES", if real() { 8 } else { 200 }) as u32;
    let steps = env_number("KEYSMITH_PROPS_STEPS", 30) as usize;
    let seed = env_number("KEYSMITH_PROPS_SEED", 20_261_206);
    let shrink = env_number("KEYSMITH_PROPS_SHRINK", 64) as u32;
    let backend = if real() {
        "real API server"
    } else {
        "emulator"
    };
    println!(
        "lifecycle properties on the {backend}: {cases} sequences of {steps} steps, seed {seed} \
         (KEYSMITH_PROPS_SEED replays it), at most {shrink} shrink replays"
    );
    let started = Instant::now();
    let world = Mutex::new(World::start().await);
    let handle = tokio::runtime::Handle::current();
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = ProptestConfig {
        cases,
        max_shrink_iters: shrink,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let sequences = AtomicUsize::new(0);
    let outcome = tokio::task::block_in_place(|| {
        runner.run(&sequence(steps), |ops| {
            sequences.fetch_add(1, Ordering::Relaxed);
            let ops = kept(ops);
            let mut world = world.lock().unwrap_or_else(|e| e.into_inner());
            handle
                .block_on(world.run(fresh_name("prop"), &ops))
                .map_err(|failure| TestCaseError::fail(failure.to_string()))
        })
    });
    let elapsed = started.elapsed();
    println!(
        "lifecycle properties on the {backend}: {} sequences run (shrinking included) in {elapsed:?}",
        sequences.load(Ordering::Relaxed)
    );
    let world = world.into_inner().unwrap_or_else(|e| e.into_inner());
    for (kind, (steps, time)) in &world.timing {
        println!(
            "  {kind}: {steps} steps, {:?} each",
            *time / (*steps).max(1)
        );
    }
    match outcome {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => {
            let ops = kept(ops);
            panic!("a sequence broke a promise (seed {seed}); minimal op list:\n{ops:?}\n{reason}")
        }
        Err(TestError::Abort(reason)) => panic!("aborted: {reason}"),
    }
}

/// Every op kind at least once, in an order that keeps the key alive until the end: the
/// smaller budget's guarantee on the real API server, and a quick walk on the emulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_kind_keeps_every_promise() {
    let started = Instant::now();
    replay(
        "every-kind",
        &[
            Op::Verify(0),
            Op::SetOverlap("6h"),
            Op::SetEvery(Some("7d")),
            Op::SetExpiresAfter(Some("400d")),
            Op::SetGrants(1),
            Op::Trigger,
            Op::RotateSlot(1),
            Op::Step(600),
            Op::DeleteSecret,
            Op::TamperSecret(1),
            Op::DeletePublished,
            Op::TamperPublished,
            Op::RestartController,
            Op::AbortController(5),
            Op::RestartVerifier,
            Op::Disable(true),
            Op::Step(60),
            Op::Disable(false),
            Op::ExpiresAt(Some(600)),
            Op::Step(3_600),
            Op::ExpiresAt(None),
            Op::Step(8 * 86_400),
            Op::InvalidGrant,
            Op::SetGrants(2),
            Op::InvalidEvery,
            Op::SetEvery(None),
            Op::RotateAll,
            Op::Verify(1),
            Op::Step(60),
        ],
    )
    .await;
    println!("every operation kind: {:?}", started.elapsed());
}

// Regression tests: every failing sequence found while building this suite, shrunk, replayed.
// Those marked "defect N" fail on this branch until that defect is fixed on main.

/// Defect 1: a second rotation inside an overlap window ends the first replaced token's window
/// at once (I1, I3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_1_a_second_rotation_keeps_the_first_window() {
    replay("d1", &[Op::RotateSlot(0), Op::RotateSlot(0)]).await;
}

/// Defect 2: after a rotation `lastUsedAt` stays on the slot's entry, so the new token shows
/// the replaced token's use (I4). The use is written back before the rotation, and the
/// rotation comes within the minute in which the checks' own uses are not written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_2_last_used_at_stays_with_its_token() {
    replay("d2", &[Op::Verify(0), Op::Step(30), Op::RotateSlot(0)]).await;
}

/// Defect 3: an edit the controller rejects (`rotation.every: "1000w"`) makes every existing
/// token answer FORBIDDEN (I5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_3_a_rejected_every_keeps_the_accepted_policy() {
    replay("d3-every", &[Op::InvalidEvery]).await;
}

/// Defect 3, through a grant the controller rejects (an action with a space) (I5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_3_a_rejected_grant_keeps_the_accepted_policy() {
    replay("d3-grant", &[Op::InvalidGrant]).await;
}

/// Defect 4: a second Rotated event within six minutes counts into the first one's series
/// without changing its note, which still names the first rotation's tokens (I6). The clock
/// step ends the first overlap window, so defect 1 stays out of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_4_a_rotated_series_names_the_latest_rotation() {
    replay("d4", &[Op::RotateAll, Op::Step(7_200), Op::RotateAll]).await;
}

/// Defect 5: an entry written by hand into the Envoy Gateway Secret of a disabled key is never
/// removed, and every resync writes the Secret again (I7, I3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_5_a_tampered_published_secret_of_a_disabled_key_is_cleaned_once() {
    replay("d5", &[Op::Disable(true), Op::TamperPublished]).await;
}

/// Defect 4, for InvalidSpec: a second problem within six minutes counts into the first
/// problem's series under the first problem's note (I6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_4_an_invalid_spec_series_names_the_latest_problem() {
    replay("d4-invalid", &[Op::InvalidEvery, Op::InvalidGrant]).await;
}

/// Found once by the random run: an Envoy Gateway entry written by hand while the spec was
/// invalid was still there after the spec was fixed (I3). Not reproduced since the checks wait
/// for the controller to observe each edit and give a Secret repair time to follow its watch, so
/// most likely a stale-cache race of the harness; kept as a regression test. Fails at step 1 on
/// defect 3 until that is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_secret_tampered_while_invalid_is_repaired_once_fixed() {
    replay(
        "invalid-tamper",
        &[Op::InvalidGrant, Op::TamperPublished, Op::SetGrants(0)],
    )
    .await;
}

/// Found by the random run as I7 (a rotation request answered with no write): the checks
/// settled on a controller restarted after an abort whose cache did not yet hold the request.
/// A harness race, gone since the checks wait for each request to be answered; kept as a
/// regression test. Fails at step 2 on defect 1 (the abort's own rotation comes inside the
/// trigger's window) until that is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_request_after_an_abort_is_answered() {
    replay(
        "abort-rotate",
        &[Op::Trigger, Op::AbortController(1), Op::RotateSlot(1)],
    )
    .await;
}

/// Defect 7: with a slot's four replaced tokens kept, a rotation whose controller is aborted
/// right after it ends the oldest window without the OverlapCut event that must announce it
/// (I1, I3): the cut is in status, the event died with the controller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_7_an_overlap_cut_is_announced_even_across_an_abort() {
    replay(
        "d7",
        &[
            Op::RotateAll,
            Op::RotateAll,
            Op::RotateAll,
            Op::RotateSlot(0),
            Op::Step(42),
            Op::AbortController(7),
        ],
    )
    .await;
}

/// The same cut without the abort: announced by its OverlapCut event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_replaced_token_cuts_the_oldest_window_with_an_event() {
    replay(
        "cut",
        &[
            Op::RotateAll,
            Op::RotateAll,
            Op::RotateAll,
            Op::RotateSlot(0),
            Op::Step(42),
            Op::RotateAll,
        ],
    )
    .await;
}
