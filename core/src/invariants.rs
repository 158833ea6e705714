//! What a key promises (SPEC 4.1a), as a pure checker over what an observer saw.
//!
//! An observer (the stateful property tests, or anyone auditing a cluster) takes a [`Snapshot`]
//! after every step: the ApiKey as the API server returns it, its Secret, its published
//! Secrets, its events, and the verifier's answer for every token it ever saw in those Secrets.
//! [`Ledger::observe`] remembers what each snapshot promised (a token's issue, its expiry, the
//! `validUntil` of its overlap window, the uses the verifier confirmed) and returns every way the
//! snapshot breaks a promise made so far, as [`Violation`]s naming the invariant.
//!
//! Status is read as JSON, not as [`crate::api::TokenStatus`], so that both shapes of a slot's
//! replaced tokens are understood: `previous` alone, and `previous` plus `earlier[]` with a
//! `lastUsedAt` of their own, and `servedGeneration` when the status names it.
//!
//! Where the contract leaves room the checker does too: a window interrupted by `disabled` or
//! the key's `expiresAt` may or may not resume, and while the spec is invalid an edit that
//! disables or expires the key may or may not be served. I7 (writes per operation) is counted
//! by the observer; [`check_writes`] only compares.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

use crate::api::{ApiKey, ApiKeySpec, Publish};
use crate::planner::publish::AGENTGATEWAY_HASH_PREFIX;
use crate::planner::timing::whole_seconds;
use crate::token::sha256_hex;
use crate::validation::validate;
use crate::verifier::decision::Code;

/// The promises of SPEC 4.1a.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    /// A token verifies from issue until its promised end, unless deleted, disabled or expired.
    I1,
    /// No token verifies outside its window, after deletion, or while disabled.
    I2,
    /// Secret, status and published Secrets hold exactly the tokens they should.
    I3,
    /// `lastUsedAt` is never before issue and follows a VALID answer for that token.
    I4,
    /// A rejected edit never changes the answer for an existing token.
    I5,
    /// The latest note of an event series describes the latest occurrence.
    I6,
    /// Writes per operation: mint 3, rotation 2, healthy resync 0.
    I7,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One broken promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which promise.
    pub invariant: Invariant,
    /// What differs, with token ids (never tokens).
    pub detail: String,
    /// About a verifier answer: the verifier follows the ApiKey through a watch, so an
    /// observer may ask again before it counts; every other violation is in the objects.
    pub answer: bool,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

/// One event about the key, as `events.k8s.io/v1` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedEvent {
    /// The Event object's name (one per series).
    pub name: String,
    /// `Normal` or `Warning`.
    pub type_: String,
    /// Its reason, e.g. `Rotated`.
    pub reason: String,
    /// Its note: the first occurrence's, unless the writer updates it.
    pub note: String,
    /// Occurrences: `series.count`, 1 without a series.
    pub count: i32,
}

/// What an observer saw at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The time the controller and verifier work at.
    pub now: Timestamp,
    /// The ApiKey as JSON; `None` once it is gone.
    pub key: Option<Value>,
    /// The key's Secret, if it exists.
    pub secret: Option<Secret>,
    /// The key's Envoy Gateway Secret, if the key publishes one and it exists.
    pub published: Option<Secret>,
    /// The key's agentgateway Secret (hashes only), if the key publishes one and it exists.
    pub hashed: Option<Secret>,
    /// Events about the key.
    pub events: Vec<ObservedEvent>,
    /// The verifier's answer at `now` for every token value the observer asked about: every
    /// value in the ledger and in this snapshot's Secrets.
    pub answers: BTreeMap<String, Code>,
}

impl Snapshot {
    /// Every token value this snapshot's Secret and published Secret hold.
    pub fn held_values(&self) -> BTreeSet<String> {
        [&self.secret, &self.published]
            .into_iter()
            .flatten()
            .flat_map(secret_values)
            .collect()
    }
}

/// What the ledger knows of one token, found by its hash in status.
#[derive(Debug, Clone, Default)]
pub struct TokenRecord {
    /// Slot it belongs to.
    pub slot: String,
    /// Public id.
    pub id: String,
    /// Hex SHA-256.
    pub sha256: String,
    /// The token, once a Secret showed it.
    pub value: Option<String>,
    /// `issuedAt` while it was current.
    pub issued_at: Option<Timestamp>,
    /// `expiresAt` while it was current.
    pub expires_at: Option<Timestamp>,
    /// Replaced: the `validUntil` status (or its Rotated event) promised; the time it was seen
    /// gone when it was replaced without a window.
    pub window_until: Option<Timestamp>,
    /// Whether it was current at the last snapshot.
    pub current: bool,
    /// Its window saw the key disabled or expired: it need not resume.
    pub interrupted: bool,
    /// Times (whole seconds) the verifier answered VALID for it.
    pub valid_at: BTreeSet<Timestamp>,
}

/// Everything promised so far about one key, in the order the snapshots showed it.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    tokens: BTreeMap<String, TokenRecord>,
    /// The latest spec the controller could accept, with its generation.
    accepted: Option<(i64, ApiKeySpec)>,
    /// The key was seen deleting or gone.
    deleted: bool,
    /// Event name → (count, note) when last seen.
    events: BTreeMap<String, (i32, String)>,
}

/// One status entry: a slot's current token or one it replaced.
#[derive(Debug, Clone)]
struct Entry {
    slot: String,
    id: String,
    sha256: String,
    current: bool,
    issued_at: Option<Timestamp>,
    expires_at: Option<Timestamp>,
    valid_until: Option<Timestamp>,
    last_used_at: Option<Timestamp>,
}

fn time(v: &Value) -> Option<Timestamp> {
    v.as_str()?.parse().ok()
}

/// Every entry of `status.tokens`: current, `previous`, `earlier[]`.
fn entries(status: &Value) -> Vec<Entry> {
    let mut out = Vec::new();
    for slot in status["tokens"].as_array().into_iter().flatten() {
        let name = slot["name"].as_str().unwrap_or_default().to_owned();
        let entry = |v: &Value, current: bool| Entry {
            slot: name.clone(),
            id: v["id"].as_str().unwrap_or_default().to_owned(),
            sha256: v["sha256"].as_str().unwrap_or_default().to_owned(),
            current,
            issued_at: time(&v["issuedAt"]),
            expires_at: time(&v["expiresAt"]),
            valid_until: time(&v["validUntil"]),
            last_used_at: time(&v["lastUsedAt"]),
        };
        out.push(entry(slot, true));
        if slot["previous"].is_object() {
            out.push(entry(&slot["previous"], false));
        }
        for earlier in slot["earlier"].as_array().into_iter().flatten() {
            out.push(entry(earlier, false));
        }
    }
    out
}

fn secret_values(secret: &Secret) -> impl Iterator<Item = String> + '_ {
    secret
        .data
        .iter()
        .flatten()
        .filter_map(|(_, v)| String::from_utf8(v.0.clone()).ok())
}

/// A Secret's entries whose values are text, by name; none for no Secret.
fn entries_of(secret: Option<&Secret>) -> impl Iterator<Item = (String, String)> + '_ {
    secret
        .and_then(|s| s.data.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
}

fn secret_value(secret: Option<&Secret>, key: &str) -> Option<String> {
    let bytes = secret?.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// Whether a spec takes the key out of service at `now`: `Some(true)` disabled or past its
/// `expiresAt`, `None` when its `expiresAt` does not parse.
fn suspended(spec: &ApiKeySpec, now: Timestamp) -> Option<bool> {
    let expired = match &spec.expires_at {
        Some(at) => at.parse::<Timestamp>().ok()? <= now,
        None => false,
    };
    Some(spec.disabled || expired)
}

/// How the key stands at a snapshot, for the token rules.
struct Standing {
    deleted: bool,
    /// The spec as written accepts, and the served one too: tokens owe their answers.
    in_service: bool,
    /// Both the spec as written and the served one take the key out of service.
    out_of_service: bool,
    /// The spec as written is invalid (the controller rejects it).
    rejected: bool,
}

/// The `(rotated, replaced id, validUntil)` triples a Rotated note names.
fn promised_by_note(note: &str) -> Vec<(String, Option<Timestamp>)> {
    note.split("; ")
        .filter_map(|part| {
            let (_, rest) = part.split_once(" replaces ")?;
            if rest.starts_with("the previous one") {
                return None;
            }
            let (id, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            let until = rest
                .strip_prefix("(valid until ")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|t| t.parse().ok());
            Some((id.to_owned(), until))
        })
        .collect()
}

/// The ids an OverlapCut note says stopped verifying early.
fn cut_by_note(note: &str) -> Vec<String> {
    note.split("; ")
        .filter_map(|part| {
            let (_, rest) = part.split_once("token ")?;
            let (id, rest) = rest.split_once(' ')?;
            rest.starts_with("stopped verifying").then(|| id.to_owned())
        })
        .collect()
}

impl Ledger {
    /// The tokens seen so far, by SHA-256.
    pub fn tokens(&self) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.values()
    }

    /// Every token value seen so far: the observer asks the verifier about each.
    pub fn values(&self) -> BTreeSet<String> {
        self.tokens
            .values()
            .filter_map(|t| t.value.clone())
            .collect()
    }

    /// Remember a VALID answer for `value` at `at` that no snapshot carries (an observer that
    /// asked again while waiting for the verifier to catch up): the verifier may report it as
    /// a use.
    pub fn verified(&mut self, value: &str, at: Timestamp) {
        if let Some(r) = self
            .tokens
            .values_mut()
            .find(|r| r.value.as_deref() == Some(value))
        {
            r.valid_at.insert(whole_seconds(at));
        }
    }

    /// Check `snap` against every promise made so far, then remember what it promises.
    pub fn observe(&mut self, snap: &Snapshot) -> Vec<Violation> {
        let before = self.clone();
        self.record(snap);
        let mut out = Vec::new();
        let key = snap
            .key
            .as_ref()
            .and_then(|k| serde_json::from_value::<ApiKey>(k.clone()).ok());
        let status = snap
            .key
            .as_ref()
            .map_or(Value::Null, |k| k["status"].clone());
        let standing = self.standing(key.as_ref(), snap.now);
        window_changes(&before, &status, &mut out);
        self.answers(snap, &standing, &mut out);
        if let Some(key) = &key
            && !standing.deleted
        {
            self.holdings(key, &status, snap, &mut out);
            self.served_generation(key, &status, &mut out);
        }
        self.usage(&status, &mut out);
        before.event_notes(snap, key.as_ref(), &mut out);
        out
    }

    fn standing(&self, key: Option<&ApiKey>, now: Timestamp) -> Standing {
        let Some(key) = key.filter(|_| !self.deleted) else {
            return Standing {
                deleted: true,
                in_service: false,
                out_of_service: true,
                rejected: false,
            };
        };
        let rejected = validate(&key.spec).is_err();
        let served = self.accepted.as_ref().map(|(_, spec)| spec);
        let written = suspended(&key.spec, now);
        let kept = served.and_then(|s| suspended(s, now));
        Standing {
            deleted: false,
            in_service: written == Some(false) && kept.is_none_or(|s| !s),
            out_of_service: written == Some(true) && kept != Some(false),
            rejected,
        }
    }

    /// Learn what `snap` shows: new tokens and their values, promises of windows, the accepted
    /// spec, the verifier's VALID answers, the events.
    fn record(&mut self, snap: &Snapshot) {
        let key = snap.key.as_ref();
        let deleting = key.is_some_and(|k| !k["metadata"]["deletionTimestamp"].is_null());
        if deleting || (key.is_none() && !self.tokens.is_empty()) {
            self.deleted = true;
        }
        let typed = key.and_then(|k| serde_json::from_value::<ApiKey>(k.clone()).ok());
        if let Some(k) = typed.as_ref().filter(|k| validate(&k.spec).is_ok()) {
            self.accepted = Some((k.metadata.generation.unwrap_or_default(), k.spec.clone()));
        }
        let status = key.map_or(Value::Null, |k| k["status"].clone());
        let shown = entries(&status);
        let held: BTreeMap<String, String> = snap
            .held_values()
            .into_iter()
            .map(|v| (sha256_hex(&v), v))
            .collect();
        for e in &shown {
            let record = self
                .tokens
                .entry(e.sha256.clone())
                .or_insert_with(|| TokenRecord {
                    slot: e.slot.clone(),
                    id: e.id.clone(),
                    sha256: e.sha256.clone(),
                    ..TokenRecord::default()
                });
            if e.current {
                record.issued_at = record.issued_at.or(e.issued_at);
                record.expires_at = record.expires_at.or(e.expires_at);
            } else if record.window_until.is_none() {
                record.window_until = e.valid_until;
            }
        }
        // Rotated events promise windows too, by id.
        for event in snap.events.iter().filter(|e| e.reason == "Rotated") {
            for (id, until) in promised_by_note(&event.note) {
                if let Some(r) = self.tokens.values_mut().find(|r| r.id == id)
                    && r.window_until.is_none()
                    && !r.current
                {
                    r.window_until = until;
                }
            }
        }
        // A window cut because the slot keeps no more replaced tokens ends now, and says so
        // with an OverlapCut event: the only way a promised window may end early.
        let now = whole_seconds(snap.now);
        for event in snap.events.iter().filter(|e| e.reason == "OverlapCut") {
            for id in cut_by_note(&event.note) {
                if let Some(r) = self.tokens.values_mut().find(|r| r.id == id)
                    && r.window_until.is_some_and(|until| until > now)
                {
                    r.window_until = Some(now);
                }
            }
        }
        let suspended_now = typed
            .as_ref()
            .map_or(Some(true), |k| suspended(&k.spec, snap.now));
        let current: BTreeSet<&str> = shown
            .iter()
            .filter(|e| e.current)
            .map(|e| e.sha256.as_str())
            .collect();
        for record in self.tokens.values_mut() {
            if record.value.is_none() {
                record.value = held.get(&record.sha256).cloned();
            }
            let is_current = current.contains(record.sha256.as_str());
            // Replaced with no window at all (overlap 0, or a window lost): it ended by now.
            if record.current && !is_current && record.window_until.is_none() {
                let listed = shown.iter().any(|e| e.sha256 == record.sha256);
                if !listed {
                    record.window_until = Some(whole_seconds(snap.now));
                }
            }
            record.current = is_current;
            if !is_current && suspended_now != Some(false) {
                record.interrupted = true;
            }
            if let Some(value) = &record.value
                && snap.answers.get(value) == Some(&Code::Valid)
            {
                record.valid_at.insert(whole_seconds(snap.now));
            }
        }
        for event in &snap.events {
            self.events
                .insert(event.name.clone(), (event.count, event.note.clone()));
        }
    }

    /// I1, I2, I5: the verifier's answer for every token whose value is known.
    ///
    /// I1: a current token, or a replaced one inside the window it was promised, verifies while
    /// the key is in service and the token not past its own expiry. I2: nothing verifies once
    /// the key is deleted, disabled or expired, nor a token past its window or expiry. I5: the
    /// I1 obligation while the spec as written is rejected.
    fn answers(&self, snap: &Snapshot, standing: &Standing, out: &mut Vec<Violation>) {
        let now = snap.now;
        for r in self.tokens.values() {
            let Some(code) = r.value.as_ref().and_then(|v| snap.answers.get(v)) else {
                continue;
            };
            let valid = *code == Code::Valid;
            let unexpired = r.expires_at.is_none_or(|at| at > now);
            let in_window = r.current || r.window_until.is_some_and(|until| until > now);
            let what = if r.current { "current" } else { "replaced" };
            if valid && standing.deleted {
                out.push(answer_violation(
                    Invariant::I2,
                    format!("token {} verifies after the key was deleted", r.id),
                ));
            } else if valid && standing.out_of_service {
                out.push(answer_violation(
                    Invariant::I2,
                    format!(
                        "token {} verifies while the key is disabled or expired",
                        r.id
                    ),
                ));
            } else if valid && !unexpired {
                out.push(answer_violation(
                    Invariant::I2,
                    format!(
                        "token {} verifies after its expiresAt {}",
                        r.id,
                        r.expires_at.unwrap_or_default()
                    ),
                ));
            } else if valid && !in_window {
                out.push(answer_violation(
                    Invariant::I2,
                    format!(
                        "replaced token {} verifies after its window ended ({})",
                        r.id,
                        r.window_until
                            .map_or("no window".to_owned(), |t| t.to_string())
                    ),
                ));
            }
            let owed =
                standing.in_service && unexpired && (r.current || (in_window && !r.interrupted));
            if owed && !valid {
                let until = r
                    .window_until
                    .filter(|_| !r.current)
                    .map_or(String::new(), |t| format!(" (promised until {t})"));
                let (invariant, why) = if standing.rejected {
                    (Invariant::I5, " while the spec is rejected")
                } else {
                    (Invariant::I1, "")
                };
                out.push(answer_violation(
                    invariant,
                    format!("{what} token {} answers {code}{until}{why}", r.id),
                ));
            }
        }
    }

    /// I3: the Secret holds the current tokens, status the tokens inside a window, the
    /// published Secret those inside a window (and every current one).
    fn holdings(&self, key: &ApiKey, status: &Value, snap: &Snapshot, out: &mut Vec<Violation>) {
        let now = snap.now;
        let Ok(valid) = validate(&key.spec) else {
            return;
        };
        if valid.expires_at.is_some_and(|end| end <= now) {
            // Past the key's end nothing is written: status and Secret stay as they were.
            return;
        }
        let shown = entries(status);
        let conflict = key.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.reason == "SecretConflict")
        });
        for slot in &valid.slots {
            let current = shown.iter().find(|e| e.current && e.slot == slot.name);
            let Some(current) = current else {
                out.push(violation(
                    Invariant::I3,
                    format!("status has no current token for slot {}", slot.name),
                ));
                continue;
            };
            if conflict {
                continue;
            }
            let held = secret_value(snap.secret.as_ref(), &slot.secret_key);
            match held {
                None => out.push(violation(
                    Invariant::I3,
                    format!(
                        "the Secret lacks slot {}'s token {} (key {})",
                        slot.name, current.id, slot.secret_key
                    ),
                )),
                Some(v) if sha256_hex(&v) != current.sha256 => out.push(violation(
                    Invariant::I3,
                    format!(
                        "the Secret's {} is not slot {}'s current token {}",
                        slot.secret_key, slot.name, current.id
                    ),
                )),
                Some(_) => {}
            }
        }
        for e in shown.iter().filter(|e| !e.current) {
            if e.valid_until.is_none_or(|until| until <= now) {
                out.push(violation(
                    Invariant::I3,
                    format!(
                        "status still lists replaced token {} of slot {} after its window ({})",
                        e.id,
                        e.slot,
                        e.valid_until.map_or("none".into(), |t| t.to_string())
                    ),
                ));
            }
        }
        let listed: BTreeSet<&str> = shown.iter().map(|e| e.sha256.as_str()).collect();
        for r in self.tokens.values() {
            let open = !r.current && r.window_until.is_some_and(|until| until > now);
            let unexpired = r.expires_at.is_none_or(|at| at > now);
            if open && unexpired && !listed.contains(r.sha256.as_str()) {
                out.push(violation(
                    Invariant::I3,
                    format!(
                        "replaced token {} of slot {} left status before the end of its window ({})",
                        r.id,
                        r.slot,
                        r.window_until.unwrap_or_default()
                    ),
                ));
            }
        }
        self.published(key, &shown, snap, out);
    }

    fn published(&self, key: &ApiKey, shown: &[Entry], snap: &Snapshot, out: &mut Vec<Violation>) {
        let publishes = |pick: fn(&Publish) -> bool| key.spec.publish.iter().any(pick);
        if publishes(|p| p.envoy_gateway.is_some()) {
            // Envoy Gateway's entries are the tokens themselves.
            let hashes = entries_of(snap.published.as_ref())
                .map(|(entry, value)| (entry, Some(sha256_hex(&value))));
            self.publication("published", hashes.collect(), key, shown, snap.now, out);
        }
        if publishes(|p| p.agentgateway.is_some()) {
            let hashes = entries_of(snap.hashed.as_ref()).map(|(entry, value)| {
                let hash = serde_json::from_str::<Value>(&value).ok().and_then(|v| {
                    let hex = v["keyHash"]
                        .as_str()?
                        .strip_prefix(AGENTGATEWAY_HASH_PREFIX)?;
                    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                        .then(|| hex.to_owned())
                });
                (entry, hash)
            });
            self.publication("agentgateway", hashes.collect(), key, shown, snap.now, out);
        }
    }

    /// I3 for one published Secret, given as entry name to the SHA-256 its value stands for
    /// (`None`: a value that is not in the gateway's shape): every entry is a token inside its
    /// window, and while the key is in service every current token has its entry.
    fn publication(
        &self,
        what: &str,
        hashes: BTreeMap<String, Option<String>>,
        key: &ApiKey,
        shown: &[Entry],
        now: Timestamp,
        out: &mut Vec<Violation>,
    ) {
        let name = key.metadata.name.clone().unwrap_or_default();
        let namespace = key.metadata.namespace.clone().unwrap_or_default();
        let out_of_service = suspended(&key.spec, now) != Some(false);
        let inside = |sha: &str| {
            !out_of_service
                && shown.iter().any(|e| {
                    e.sha256 == sha
                        && (e.current || e.valid_until.is_some_and(|u| u > now))
                        && e.expires_at.is_none_or(|at| at > now)
                })
        };
        for (entry, sha) in &hashes {
            let Some(sha) = sha else {
                out.push(violation(
                    Invariant::I3,
                    format!("{what} entry {entry} is not in the gateway's shape"),
                ));
                continue;
            };
            if !inside(sha) {
                let id = self.tokens.get(sha).map_or("(unknown)", |r| r.id.as_str());
                out.push(violation(
                    Invariant::I3,
                    format!("{what} entry {entry} holds token {id}, which is outside any window"),
                ));
            }
        }
        if out_of_service {
            return;
        }
        for e in shown.iter().filter(|e| e.current) {
            if e.expires_at.is_some_and(|at| at <= now) {
                continue;
            }
            let entry = format!("{namespace}.{name}.{}", e.slot);
            if hashes.get(&entry).cloned().flatten() != Some(e.sha256.clone()) {
                out.push(violation(
                    Invariant::I3,
                    format!(
                        "{what} entry {entry} does not hold slot {}'s current token {}",
                        e.slot, e.id
                    ),
                ));
            }
        }
    }

    /// I5: status names the generation it serves, the last one the controller could accept.
    fn served_generation(&self, key: &ApiKey, status: &Value, out: &mut Vec<Violation>) {
        let Some(served) = status["servedGeneration"].as_i64() else {
            return;
        };
        let observed = status["observedGeneration"].as_i64();
        if observed != key.metadata.generation {
            return;
        }
        if let Some((accepted, _)) = &self.accepted
            && served != *accepted
        {
            out.push(violation(
                Invariant::I5,
                format!("status serves generation {served}; the last accepted is {accepted}"),
            ));
        }
    }

    /// I4: a `lastUsedAt` belongs to a use of that very token: not before its issue, at a
    /// second the verifier answered VALID for it.
    fn usage(&self, status: &Value, out: &mut Vec<Violation>) {
        for e in entries(status) {
            let Some(used) = e.last_used_at else {
                continue;
            };
            let Some(r) = self.tokens.get(&e.sha256) else {
                continue;
            };
            if let Some(issued) = r.issued_at.filter(|issued| used < whole_seconds(*issued)) {
                out.push(violation(
                    Invariant::I4,
                    format!(
                        "token {} shows lastUsedAt {used}, before its issue {issued}",
                        r.id
                    ),
                ));
            } else if r.value.is_some() && !r.valid_at.contains(&used) {
                out.push(violation(
                    Invariant::I4,
                    format!(
                        "token {} shows lastUsedAt {used}, but it answered VALID only at {:?}",
                        r.id, r.valid_at
                    ),
                ));
            }
        }
    }

    /// I6: a series that counted another occurrence says what that occurrence was. Every
    /// Minted and Rotated occurrence names a fresh token, so its note must change; an
    /// InvalidSpec occurrence says what is wrong now.
    fn event_notes(&self, snap: &Snapshot, key: Option<&ApiKey>, out: &mut Vec<Violation>) {
        let invalid_now = key.and_then(|k| {
            let ready = k
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")?;
            (ready.status == "False" && ready.reason == "InvalidSpec")
                .then(|| ready.message.clone())
        });
        for event in &snap.events {
            let seen = self.events.get(&event.name);
            let grew = seen.is_none_or(|(count, _)| event.count > *count);
            if !grew {
                continue;
            }
            match event.reason.as_str() {
                "Minted" | "Rotated" => {
                    if let Some((count, note)) = seen.filter(|(_, note)| *note == event.note) {
                        out.push(violation(
                            Invariant::I6,
                            format!(
                                "{} series {} counts {} occurrences, its note still the one of \
                                 occurrence {count}: {note}",
                                event.reason, event.name, event.count
                            ),
                        ));
                    }
                }
                "InvalidSpec" => {
                    if let Some(message) = invalid_now.as_ref().filter(|m| **m != event.note) {
                        out.push(violation(
                            Invariant::I6,
                            format!(
                                "InvalidSpec series {} (occurrence {}) says {:?}; the spec's \
                                 problem now: {message:?}",
                                event.name, event.count, event.note
                            ),
                        ));
                    }
                }
                _ => {}
            }
        }
    }
}

/// A replaced token's window, once promised, neither grows nor shrinks (I1).
fn window_changes(before: &Ledger, status: &Value, out: &mut Vec<Violation>) {
    for e in entries(status).into_iter().filter(|e| !e.current) {
        let promised = before
            .tokens
            .get(&e.sha256)
            .and_then(|r| r.window_until.filter(|_| !r.current));
        if let (Some(promised), Some(now)) = (promised, e.valid_until)
            && promised != now
        {
            out.push(violation(
                Invariant::I1,
                format!(
                    "replaced token {} was promised a window until {promised}, status now says {now}",
                    e.id
                ),
            ));
        }
    }
}

fn violation(invariant: Invariant, detail: String) -> Violation {
    Violation {
        invariant,
        detail,
        answer: false,
    }
}

fn answer_violation(invariant: Invariant, detail: String) -> Violation {
    Violation {
        answer: true,
        ..violation(invariant, detail)
    }
}

/// What an operation may cost in API writes (I7), the key's own objects only: the ApiKey
/// (finalizer, status) and its Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A new key: finalizer, status, Secret.
    Mint,
    /// A rotation of a healthy key: status, Secret.
    Rotation,
    /// A resync of a healthy, unchanged key.
    Resync,
}

impl Operation {
    /// The writes it takes.
    pub fn writes(self) -> usize {
        match self {
            Operation::Mint => 3,
            Operation::Rotation => 2,
            Operation::Resync => 0,
        }
    }
}

/// I7: `counted` writes for `op`, against its budget; `writes` names them for the report.
pub fn check_writes(op: Operation, counted: &[String]) -> Option<Violation> {
    (counted.len() != op.writes()).then(|| {
        violation(
            Invariant::I7,
            format!(
                "{op:?} took {} writes, not {}: {counted:?}",
                counted.len(),
                op.writes()
            ),
        )
    })
}

#[cfg(test)]
mod tests;
