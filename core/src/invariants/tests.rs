//! The checker must catch each invariant broken in a hand-built history, and stay quiet on a
//! history that keeps every promise.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::api::Encoding;
use crate::token::Token;

fn t0() -> Timestamp {
    "2026-11-22T10:00:00Z".parse().unwrap()
}

fn at(minutes: i64) -> Timestamp {
    t0() + SignedDuration::from_mins(minutes)
}

fn token() -> Token {
    Token::generate("inv_", 32, Encoding::Base62).unwrap()
}

fn spec() -> Value {
    json!({
        "tokens": [{"name": "a"}],
        "grants": [{"effect": "allow", "actions": ["content.read"]}],
        "rotation": {"overlap": "1h"},
        "publish": [{"envoyGateway": {}}],
    })
}

fn current(t: &Token, issued: Timestamp) -> Value {
    json!({"name": "a", "id": t.id(), "sha256": t.sha256_hex(), "issuedAt": issued.to_string()})
}

fn replaced(t: &Token, until: Timestamp) -> Value {
    json!({"id": t.id(), "sha256": t.sha256_hex(), "validUntil": until.to_string()})
}

fn apikey(spec: Value, generation: i64, tokens: Vec<Value>, ready: (&str, &str, &str)) -> Value {
    json!({
        "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": "site", "namespace": "cms", "generation": generation},
        "spec": spec,
        "status": {
            "observedGeneration": generation,
            "conditions": [{"type": "Ready", "status": ready.0, "reason": ready.1,
                "message": ready.2, "lastTransitionTime": "2026-11-22T10:00:00Z"}],
            "tokens": tokens,
        },
    })
}

fn ready() -> (&'static str, &'static str, &'static str) {
    ("True", "Minted", "")
}

fn secret(entries: &[(&str, &Token)]) -> Secret {
    Secret {
        data: Some(
            entries
                .iter()
                .map(|(k, t)| {
                    (
                        (*k).to_owned(),
                        ByteString(t.expose_secret().as_bytes().to_vec()),
                    )
                })
                .collect(),
        ),
        ..Secret::default()
    }
}

fn answers(codes: &[(&Token, Code)]) -> BTreeMap<String, Code> {
    codes
        .iter()
        .map(|(t, c)| (t.expose_secret().to_owned(), *c))
        .collect()
}

fn snap(now: Timestamp, key: Value, held: &Token, codes: &[(&Token, Code)]) -> Snapshot {
    Snapshot {
        now,
        key: Some(key),
        secret: Some(secret(&[("a", held)])),
        published: Some(secret(&[("cms.site.a", held)])),
        hashed: None,
        events: Vec::new(),
        answers: answers(codes),
    }
}

fn invariants(violations: &[Violation]) -> Vec<Invariant> {
    let mut found: Vec<Invariant> = violations.iter().map(|v| v.invariant).collect();
    found.dedup();
    found
}

/// Minted at 0, rotated at 10 (window until 70), in between and after the window as promised.
fn history() -> (Ledger, Token, Token) {
    let (x, y) = (token(), token());
    let mut ledger = Ledger::default();
    let minted = apikey(spec(), 1, vec![current(&x, at(0))], ready());
    let v = ledger.observe(&snap(at(0), minted, &x, &[(&x, Code::Valid)]));
    assert_eq!(v, []);
    let mut rotated = current(&y, at(10));
    rotated["previous"] = replaced(&x, at(70));
    let key = apikey(spec(), 1, vec![rotated], ready());
    let mut s = snap(at(10), key, &y, &[(&x, Code::Valid), (&y, Code::Valid)]);
    s.published = Some(secret(&[("cms.site.a", &y), ("cms.site.a.previous", &x)]));
    assert_eq!(ledger.observe(&s), []);
    (ledger, x, y)
}

#[test]
fn a_history_that_keeps_every_promise_passes() {
    let (mut ledger, x, y) = history();
    let key = apikey(spec(), 1, vec![current(&y, at(10))], ready());
    let s = snap(at(71), key, &y, &[(&x, Code::Expired), (&y, Code::Valid)]);
    assert_eq!(ledger.observe(&s), []);
}

#[test]
fn i1_a_replaced_token_cut_inside_its_window() {
    // Defect 1's shape: a second rotation ends the first replaced token's window at once.
    let (mut ledger, x, y) = history();
    let z = token();
    let mut again = current(&z, at(20));
    again["previous"] = replaced(&y, at(80));
    let key = apikey(spec(), 1, vec![again], ready());
    let mut s = snap(
        at(20),
        key,
        &z,
        &[(&x, Code::NotFound), (&y, Code::Valid), (&z, Code::Valid)],
    );
    s.published = Some(secret(&[("cms.site.a", &z), ("cms.site.a.previous", &y)]));
    let v = ledger.observe(&s);
    assert_eq!(invariants(&v), [Invariant::I1, Invariant::I3], "{v:?}");
    assert!(v[0].detail.contains(x.id()), "{v:?}");
}

#[test]
fn i1_a_window_cut_with_an_overlap_cut_event_is_kept_as_announced() {
    let (mut ledger, x, y) = history();
    let z = token();
    let key = apikey(spec(), 1, vec![current(&z, at(20))], ready());
    let mut s = snap(
        at(20),
        key,
        &z,
        &[
            (&x, Code::NotFound),
            (&y, Code::NotFound),
            (&z, Code::Valid),
        ],
    );
    // y was replaced at once (no window), x's window cut and announced.
    let note = format!(
        "slot a: token {} stopped verifying now instead of at {}: a slot keeps at most 4 \
         replaced tokens in their overlap windows, and another rotation came first",
        x.id(),
        at(70)
    );
    s.events = vec![ObservedEvent {
        type_: "Warning".into(),
        ..event("site.2", "OverlapCut", &note, 1)
    }];
    assert_eq!(ledger.observe(&s), []);
    // From now on its window is over: it must not verify again.
    s.now = at(21);
    s.answers = answers(&[(&x, Code::Valid), (&y, Code::NotFound), (&z, Code::Valid)]);
    let v = ledger.observe(&s);
    assert_eq!(invariants(&v), [Invariant::I2], "{v:?}");
}

#[test]
fn i1_a_window_moved_after_it_was_promised() {
    let (mut ledger, x, y) = history();
    let mut stretched = current(&y, at(10));
    stretched["previous"] = replaced(&x, at(200));
    let key = apikey(spec(), 1, vec![stretched], ready());
    let mut s = snap(at(20), key, &y, &[(&x, Code::Valid), (&y, Code::Valid)]);
    s.published = Some(secret(&[("cms.site.a", &y), ("cms.site.a.previous", &x)]));
    let v = ledger.observe(&s);
    assert_eq!(invariants(&v), [Invariant::I1], "{v:?}");
}

#[test]
fn i2_a_replaced_token_verifies_after_its_window() {
    let (mut ledger, x, y) = history();
    let key = apikey(spec(), 1, vec![current(&y, at(10))], ready());
    let s = snap(at(71), key, &y, &[(&x, Code::Valid), (&y, Code::Valid)]);
    let v = ledger.observe(&s);
    assert_eq!(invariants(&v), [Invariant::I2], "{v:?}");
}

#[test]
fn i2_tokens_verify_while_disabled_or_after_deletion() {
    let (mut ledger, x, y) = history();
    let mut disabled = spec();
    disabled["disabled"] = json!(true);
    let mut rotated = current(&y, at(10));
    rotated["previous"] = replaced(&x, at(70));
    let key = apikey(disabled, 2, vec![rotated], ("False", "Disabled", ""));
    let mut s = snap(at(11), key, &y, &[(&x, Code::Disabled), (&y, Code::Valid)]);
    s.published = Some(secret(&[]));
    let v = ledger.observe(&s);
    assert_eq!(invariants(&v), [Invariant::I2], "{v:?}");

    let gone = Snapshot {
        now: at(12),
        key: None,
        secret: None,
        published: None,
        hashed: None,
        events: Vec::new(),
        answers: answers(&[(&x, Code::Revoked), (&y, Code::Valid)]),
    };
    let v = ledger.observe(&gone);
    assert_eq!(invariants(&v), [Invariant::I2], "{v:?}");
    assert!(v[0].detail.contains("deleted"), "{v:?}");
}

#[test]
fn i3_the_secret_status_and_published_secret_hold_exactly_their_tokens() {
    let (mut ledger, x, y) = history();
    let stranger = token();
    // The Secret holds another value than the current token.
    let mut rotated = current(&y, at(10));
    rotated["previous"] = replaced(&x, at(70));
    let key = apikey(spec(), 1, vec![rotated.clone()], ready());
    let mut s = snap(
        at(11),
        key,
        &stranger,
        &[(&x, Code::Valid), (&y, Code::Valid)],
    );
    s.published = Some(secret(&[("cms.site.a", &y), ("cms.site.a.previous", &x)]));
    let v = ledger.observe(&s);
    assert_eq!(invariants(&v), [Invariant::I3], "{v:?}");

    // Status still lists the replaced token after its window; the gateway still gets it.
    let key = apikey(spec(), 1, vec![rotated], ready());
    let mut s = snap(at(71), key, &y, &[(&x, Code::Expired), (&y, Code::Valid)]);
    s.published = Some(secret(&[("cms.site.a", &y), ("cms.site.a.previous", &x)]));
    let v = ledger.observe(&s);
    assert_eq!(invariants(&v), [Invariant::I3], "{v:?}");
    assert_eq!(v.len(), 2, "{v:?}");

    // The gateway lacks the current token.
    let key = apikey(spec(), 1, vec![current(&y, at(10))], ready());
    let mut s = snap(at(72), key, &y, &[(&x, Code::Expired), (&y, Code::Valid)]);
    s.published = Some(secret(&[]));
    let v = ledger.observe(&s);
    assert_eq!(invariants(&v), [Invariant::I3], "{v:?}");
}

/// An agentgateway Secret whose entries hold the hashes of `entries`' tokens.
fn hashed(entries: &[(&str, &Token)]) -> Secret {
    Secret {
        data: Some(
            entries
                .iter()
                .map(|(k, t)| {
                    let value = json!({"keyHash": format!("sha256:{}", t.sha256_hex()),
                        "metadata": {"slot": "a"}});
                    ((*k).to_owned(), ByteString(value.to_string().into_bytes()))
                })
                .collect(),
        ),
        ..Secret::default()
    }
}

#[test]
fn i3_the_agentgateway_secret_holds_the_hashes_of_exactly_the_tokens_inside_a_window() {
    let (x, y) = (token(), token());
    let mut both = spec();
    both["publish"] = json!([{"envoyGateway": {}}, {"agentgateway": {}}]);
    let mut ledger = Ledger::default();
    let key = apikey(both.clone(), 1, vec![current(&x, at(0))], ready());
    let mut s = snap(at(0), key, &x, &[(&x, Code::Valid)]);
    s.hashed = Some(hashed(&[("cms.site.a", &x)]));
    assert_eq!(ledger.observe(&s), []);

    let mut rotated = current(&y, at(10));
    rotated["previous"] = replaced(&x, at(70));
    let key = apikey(both.clone(), 1, vec![rotated], ready());
    let mut s = snap(at(10), key, &y, &[(&x, Code::Valid), (&y, Code::Valid)]);
    s.published = Some(secret(&[("cms.site.a", &y), ("cms.site.a_previous", &x)]));
    s.hashed = Some(hashed(&[("cms.site.a", &y), ("cms.site.a_previous", &x)]));
    assert_eq!(ledger.observe(&s), []);

    // The window is over at 70; agentgateway still takes the replaced token.
    let key = apikey(both.clone(), 1, vec![current(&y, at(10))], ready());
    let mut s = snap(
        at(71),
        key.clone(),
        &y,
        &[(&x, Code::Expired), (&y, Code::Valid)],
    );
    s.hashed = Some(hashed(&[("cms.site.a", &y), ("cms.site.a_previous", &x)]));
    let v = ledger.observe(&s);
    assert_eq!(invariants(&v), [Invariant::I3], "{v:?}");
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].detail
            .starts_with("agentgateway entry cms.site.a_previous holds token"),
        "{v:?}"
    );

    // A token value where its hash belongs: not agentgateway's shape, and no current hash.
    let mut s = snap(at(72), key, &y, &[(&x, Code::Expired), (&y, Code::Valid)]);
    s.hashed = Some(secret(&[("cms.site.a", &y)]));
    let v = ledger.observe(&s);
    assert_eq!(invariants(&v), [Invariant::I3], "{v:?}");
    let details: Vec<&str> = v.iter().map(|v| v.detail.as_str()).collect();
    assert_eq!(
        details,
        [
            "agentgateway entry cms.site.a is not in the gateway's shape",
            &*format!(
                "agentgateway entry cms.site.a does not hold slot a's current token {}",
                y.id()
            ),
        ],
        "{v:?}"
    );
}

#[test]
fn i4_last_used_at_of_another_token_or_without_a_use() {
    // Defect 2's shape: the replaced token's use stays on the slot's entry.
    let (mut ledger, x, y) = history();
    let z = token();
    let mut rotated = current(&z, at(75));
    rotated["previous"] = replaced(&y, at(135));
    rotated["lastUsedAt"] = json!(at(10).to_string());
    let key = apikey(spec(), 1, vec![rotated], ready());
    let mut s = snap(
        at(75),
        key,
        &z,
        &[(&x, Code::Expired), (&y, Code::Valid), (&z, Code::Valid)],
    );
    s.published = Some(secret(&[("cms.site.a", &z), ("cms.site.a.previous", &y)]));
    let v = ledger.observe(&s);
    assert_eq!(invariants(&v), [Invariant::I4], "{v:?}");
    assert!(v[0].detail.contains("before its issue"), "{v:?}");

    // A use recorded at a second the verifier never said VALID for the token.
    let mut ledger = Ledger::default();
    let mut minted = current(&x, at(0));
    minted["lastUsedAt"] = json!(at(5).to_string());
    let key = apikey(spec(), 1, vec![minted], ready());
    let v = ledger.observe(&snap(at(6), key, &x, &[(&x, Code::Valid)]));
    assert_eq!(invariants(&v), [Invariant::I4], "{v:?}");
}

#[test]
fn i5_a_rejected_edit_changes_the_answer() {
    // Defect 3's shape: `rotation.every: 1000w` is rejected, and the token answers FORBIDDEN.
    let (mut ledger, x, y) = history();
    let mut invalid = spec();
    invalid["rotation"]["every"] = json!("1000w");
    let mut rotated = current(&y, at(10));
    rotated["previous"] = replaced(&x, at(70));
    let key = apikey(
        invalid,
        2,
        vec![rotated],
        ("False", "InvalidSpec", "spec.rotation.every: too long"),
    );
    let mut s = snap(
        at(11),
        key.clone(),
        &y,
        &[(&x, Code::Forbidden), (&y, Code::Forbidden)],
    );
    s.published = Some(secret(&[("cms.site.a", &y), ("cms.site.a.previous", &x)]));
    let v = ledger.observe(&s);
    assert_eq!(invariants(&v), [Invariant::I5], "{v:?}");
    assert_eq!(v.len(), 2, "{v:?}");

    // Status says it serves the rejected generation.
    let mut key = key;
    key["status"]["servedGeneration"] = json!(2);
    s.key = Some(key);
    s.answers = answers(&[(&x, Code::Valid), (&y, Code::Valid)]);
    let v = ledger.observe(&s);
    assert_eq!(invariants(&v), [Invariant::I5], "{v:?}");
    assert!(v[0].detail.contains("generation 2"), "{v:?}");
}

fn event(name: &str, reason: &str, note: &str, count: i32) -> ObservedEvent {
    ObservedEvent {
        name: name.into(),
        type_: "Normal".into(),
        reason: reason.into(),
        note: note.into(),
        count,
    }
}

#[test]
fn i6_a_series_whose_note_describes_an_earlier_occurrence() {
    let (mut ledger, x, y) = history();
    let mut rotated = current(&y, at(10));
    rotated["previous"] = replaced(&x, at(70));
    let key = apikey(spec(), 1, vec![rotated], ready());
    let note = format!(
        "slot a (annotation): token {} replaces {} (valid until {})",
        y.id(),
        x.id(),
        at(70)
    );
    let mut s = snap(at(10), key, &y, &[(&x, Code::Valid), (&y, Code::Valid)]);
    s.published = Some(secret(&[("cms.site.a", &y), ("cms.site.a.previous", &x)]));
    s.events = vec![event("site.1", "Rotated", &note, 1)];
    assert_eq!(ledger.observe(&s), []);
    s.events = vec![event("site.1", "Rotated", &note, 2)];
    let v = ledger.observe(&s);
    assert_eq!(invariants(&v), [Invariant::I6], "{v:?}");

    // An InvalidSpec series counting a new problem under the old note.
    let mut invalid = spec();
    invalid["grants"] = json!([{"effect": "allow", "actions": ["content read"]}]);
    let key = apikey(
        invalid,
        3,
        vec![current(&y, at(10))],
        ("False", "InvalidSpec", "new problem"),
    );
    s.key = Some(key);
    s.now = at(80);
    s.answers = answers(&[(&x, Code::Expired), (&y, Code::Valid)]);
    s.published = Some(secret(&[("cms.site.a", &y)]));
    s.events = vec![event("site.2", "InvalidSpec", "old problem", 2)];
    let v = ledger.observe(&s);
    assert_eq!(invariants(&v), [Invariant::I6], "{v:?}");
}

#[test]
fn i6_the_rotated_note_promises_the_same_window_as_status() {
    let (x, y) = (token(), token());
    let mut ledger = Ledger::default();
    let minted = apikey(spec(), 1, vec![current(&x, at(0))], ready());
    assert_eq!(
        ledger.observe(&snap(at(0), minted, &x, &[(&x, Code::Valid)])),
        []
    );
    // The event promised 70; status, once seen, says 65.
    let mut rotated = current(&y, at(10));
    rotated["previous"] = replaced(&x, at(65));
    let note = format!(
        "slot a (trigger): token {} replaces {} (valid until {})",
        y.id(),
        x.id(),
        at(70)
    );
    let key = apikey(spec(), 1, vec![rotated], ready());
    let mut s = snap(at(10), key, &y, &[(&x, Code::Valid), (&y, Code::Valid)]);
    s.published = Some(secret(&[("cms.site.a", &y), ("cms.site.a.previous", &x)]));
    s.events = vec![event("site.1", "Rotated", &note, 1)];
    assert_eq!(
        ledger.observe(&s),
        [],
        "the first sight of status sets the promise"
    );
    let key = s.key.clone();
    s.key = key.map(|mut k| {
        k["status"]["tokens"][0]["previous"]["validUntil"] = json!(at(60).to_string());
        k
    });
    let v = ledger.observe(&s);
    assert_eq!(invariants(&v), [Invariant::I1], "{v:?}");
}

#[test]
fn i7_writes_per_operation() {
    let writes = |n: usize| vec!["patch apikeys status".to_owned(); n];
    assert_eq!(check_writes(Operation::Mint, &writes(3)), None);
    assert_eq!(check_writes(Operation::Rotation, &writes(2)), None);
    assert_eq!(check_writes(Operation::Resync, &writes(0)), None);
    let v = check_writes(Operation::Rotation, &writes(3)).unwrap();
    assert_eq!(v.invariant, Invariant::I7);
    assert!(check_writes(Operation::Resync, &writes(1)).is_some());
}

#[test]
fn rotated_notes_name_the_replaced_ids_and_windows() {
    let note = "slot a (trigger): token ks_aaaaaa replaces ks_bbbbbb (valid until 2026-11-22T11:00:00Z); \
                slot b (trigger): token ks_cccccc replaces the previous one at once";
    assert_eq!(
        promised_by_note(note),
        [(
            "ks_bbbbbb".to_owned(),
            Some("2026-11-22T11:00:00Z".parse().unwrap())
        )]
    );
}

proptest! {
    /// Whatever the window and the time, an answer is flagged exactly when it breaks I1 or I2:
    /// a replaced token must verify inside its window and must not after it.
    #[test]
    fn a_replaced_token_is_judged_by_its_window(
        window in 0i64..600,
        later in 0i64..1200,
        says_valid in any::<bool>(),
    ) {
        let (x, y) = (token(), token());
        let mut ledger = Ledger::default();
        let minted = apikey(spec(), 1, vec![current(&x, at(0))], ready());
        prop_assert_eq!(ledger.observe(&snap(at(0), minted, &x, &[(&x, Code::Valid)])), vec![]);
        let mut rotated = current(&y, at(1));
        if window > 0 {
            rotated["previous"] = replaced(&x, at(1 + window));
        }
        let now = at(1 + later);
        let inside = window > later;
        let key = apikey(spec(), 1, vec![rotated], ready());
        let code = if says_valid { Code::Valid } else { Code::Expired };
        let mut s = snap(now, key, &y, &[(&x, code), (&y, Code::Valid)]);
        s.published = Some(if inside {
            secret(&[("cms.site.a", &y), ("cms.site.a.previous", &x)])
        } else {
            secret(&[("cms.site.a", &y)])
        });
        let v: Vec<Violation> = ledger
            .observe(&s)
            .into_iter()
            .filter(|v| v.invariant != Invariant::I3)
            .collect();
        match (inside, says_valid) {
            (true, true) | (false, false) => prop_assert_eq!(v, vec![]),
            (true, false) => prop_assert_eq!(invariants(&v), vec![Invariant::I1]),
            (false, true) => prop_assert_eq!(invariants(&v), vec![Invariant::I2]),
        }
    }
}
