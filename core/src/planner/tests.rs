//! Unit and property tests of the planner: every decision, with a simulated API server that
//! stores what a plan writes, and a clock the tests move.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use proptest::prelude::*;
use serde_json::json;

use super::conditions::{DISABLED, EXPIRED, EXPIRING};
use super::requeue::{MAX_REQUEUE, MIN_REQUEUE};
use super::timing::between;
use super::*;
use crate::api::{
    ADOPT_ANNOTATION, APIKEY_LABEL, ApiKey, MANAGED_BY_LABEL, MAX_EARLIER, RESTART_ON_ANNOTATION,
    ROTATE_ANNOTATION, TOKEN_IDS_ANNOTATION,
};
use crate::token::sha256_hex;

const UID: &str = "5b3c8a52-6a39-4f2e-9d1c-0c6f1f5e7a10";

fn t0() -> Timestamp {
    "2026-11-22T10:00:00Z".parse().unwrap()
}

fn key(spec: serde_json::Value) -> ApiKey {
    serde_json::from_value(json!({
        "apiVersion": "keysmith.dev/v1alpha1",
        "kind": "ApiKey",
        "metadata": {
            "name": "site", "namespace": "cms", "uid": UID, "generation": 1,
            "creationTimestamp": "2026-11-22T10:00:00Z",
        },
        "spec": spec,
    }))
    .unwrap()
}

fn two_slots() -> serde_json::Value {
    json!({
        "tokens": [
            {"name": "delivery", "prefix": "cms_dt_", "secretKey": "DELIVERY"},
            {"name": "preview", "prefix": "cms_pt_", "encoding": "hex"},
        ],
    })
}

fn mint(slot: &ValidSlot) -> Result<Token, GenerateError> {
    mint_token(slot)
}

/// The API server as far as the planner is concerned: the ApiKey and its Secret.
struct World {
    key: ApiKey,
    secret: Option<Secret>,
    /// The Secrets required headers read, as the shell would hand them in.
    header_secrets: HeaderSecrets,
    now: Timestamp,
    /// The Secret was edited by hand since the planner last wrote it.
    tampered: bool,
}

impl World {
    fn new(spec: serde_json::Value) -> World {
        World {
            key: key(spec),
            secret: None,
            header_secrets: HeaderSecrets::new(),
            now: t0(),
            tampered: false,
        }
    }

    fn plan(&self) -> Plan {
        let observed = Observed {
            key: &self.key,
            secret: self.secret.as_ref(),
            header_secrets: &self.header_secrets,
            published: &[],
            personal: Default::default(),
            access: Default::default(),
        };
        plan(&observed, self.now, &mut mint).unwrap()
    }

    /// Plan and store what the plan writes, as server-side apply would.
    fn step(&mut self) -> Plan {
        let plan = self.plan();
        if let Some(status) = &plan.status {
            self.key.status = Some(status.clone());
        }
        if let Some(secret) = &plan.secret {
            self.secret = Some(secret.to_secret());
            self.tampered = false;
        }
        plan
    }

    fn advance(&mut self, d: SignedDuration) {
        self.now = self.now.checked_add(d).unwrap();
    }

    fn annotate(&mut self, name: &str, value: &str) {
        self.key
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(name.to_owned(), value.to_owned());
    }

    fn status(&self) -> &ApiKeyStatus {
        self.key.status.as_ref().unwrap()
    }

    fn token(&self, slot: &str) -> &TokenStatus {
        self.status()
            .tokens
            .iter()
            .find(|t| t.name == slot)
            .unwrap()
    }

    fn secret_value(&self, key: &str) -> String {
        let data = self.secret.as_ref().unwrap().data.as_ref().unwrap();
        String::from_utf8(data[key].0.clone()).unwrap()
    }

    fn condition(&self, type_: &str) -> (String, String) {
        let c = conditions::find(&self.status().conditions, type_).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    /// SPEC 4.1's invariant: every token the planner put in the Secret verifies (is current,
    /// or previous within its window, in status). A hand edit is only repaired while the key is
    /// valid and has not ended; after its end nothing verifies anyway.
    fn assert_secret_verifies(&self) {
        let (Some(secret), Some(status)) = (&self.secret, &self.key.status) else {
            return;
        };
        if self.tampered {
            let ended = crate::validation::validate(&self.key.spec)
                .map_or(true, |v| v.expires_at.is_some_and(|end| self.now >= end));
            assert!(ended, "a valid, live key must repair a hand-edited Secret");
            return;
        }
        for (k, v) in secret.data.iter().flatten() {
            let hash = sha256_hex(std::str::from_utf8(&v.0).unwrap());
            let verifies = status.tokens.iter().any(|t| {
                t.sha256 == hash
                    || t.previous
                        .as_ref()
                        .is_some_and(|p| p.sha256 == hash && p.valid_until.0 > self.now)
            });
            assert!(
                verifies,
                "Secret key {k} holds a token status does not know"
            );
        }
    }
}

fn hours(h: i64) -> SignedDuration {
    SignedDuration::from_hours(h)
}

#[test]
fn create_mints_one_token_per_slot_and_a_resync_writes_nothing() {
    let mut w = World::new(two_slots());
    let p = w.step();
    assert_eq!(
        p.slots,
        vec![
            ("delivery".into(), SlotAction::Mint(MintReason::Initial)),
            ("preview".into(), SlotAction::Mint(MintReason::Initial)),
        ]
    );
    let secret = p.secret.as_ref().unwrap();
    assert_eq!(
        secret.data.keys().collect::<Vec<_>>(),
        vec!["DELIVERY", "preview"]
    );
    assert_eq!(secret.labels[MANAGED_BY_LABEL], "keysmith");
    assert_eq!(secret.labels[APIKEY_LABEL], "site");
    assert_eq!(secret.owner.uid, UID);
    assert_eq!(secret.owner.controller, Some(true));
    assert_eq!(secret.type_, "Opaque");
    let delivery = w.secret_value("DELIVERY");
    assert!(delivery.starts_with("cms_dt_"));
    assert_eq!(w.token("delivery").sha256, sha256_hex(&delivery));
    assert_eq!(
        w.token("preview").sha256,
        sha256_hex(&w.secret_value("preview"))
    );
    assert_eq!(
        secret.annotations[TOKEN_IDS_ANNOTATION],
        format!("{},{}", w.token("delivery").id, w.token("preview").id)
    );
    assert_eq!(w.condition(READY), ("True".into(), "Minted".into()));
    assert_eq!(w.status().observed_generation, Some(1));
    assert!(
        p.restarts.is_empty(),
        "the very first mint restarts nothing"
    );
    assert_eq!(p.events.len(), 1);
    assert_eq!(p.events[0].reason, "Minted");
    assert!(!p.events[0].note.contains(&delivery));

    w.advance(SignedDuration::from_mins(5));
    let resync = w.step();
    assert!(resync.is_quiet(), "{resync:?}");
    assert!(resync.events.is_empty());
}

#[test]
fn status_times_have_whole_seconds() {
    let mut w = World::new(json!({"tokens": [{"name": "a"}], "expiresAfter": "90m"}));
    w.now = t0().checked_add(SignedDuration::from_millis(1500)).unwrap();
    w.step();
    assert_eq!(w.token("a").issued_at.0.subsec_nanosecond(), 0);
    assert!(w.plan().is_quiet());
}

#[test]
fn invalid_spec_reports_the_field_once_and_touches_nothing() {
    let mut w = World::new(json!({"tokens": [{"name": "a"}], "rotation": {"every": "soon"}}));
    let p = w.step();
    assert!(p.secret.is_none());
    assert!(p.slots.is_empty());
    assert_eq!(p.requeue_after, None);
    let ready = conditions::find(&w.status().conditions, READY).unwrap();
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(
        ready.message.contains("spec.rotation.every"),
        "{}",
        ready.message
    );
    assert_eq!(p.events.len(), 1);
    assert_eq!(p.events[0].reason, "InvalidSpec");
    let again = w.step();
    assert!(again.is_quiet() && again.events.is_empty());
}

#[test]
fn invalid_spec_keeps_tokens_and_the_secret() {
    let mut w = World::new(two_slots());
    w.step();
    let tokens = w.status().tokens.clone();
    w.key.spec.expires_after = Some("forever".into());
    let p = w.step();
    assert!(p.secret.is_none());
    assert_eq!(w.status().tokens, tokens);
}

/// A Secret someone else created in the key's namespace, holding a key of its own.
fn with_secret_header() -> serde_json::Value {
    json!({
        "tokens": [{"name": "main"}],
        "restrictions": {"requiredHeaders": [
            {"name": "X-Client", "value": "site"},
            {"name": "X-Client-Secret", "valueFrom": {"secretKeyRef": {"name": "client", "key": "value"}}},
        ]},
    })
}

fn header_secret(data: &[(&str, &str)]) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": "client", "namespace": "cms",
            "annotations": {"keysmith.dev/header-source": "other-key, site"}},
        "data": data.iter().map(|(k, v)| (*k, k8s_openapi::ByteString(v.as_bytes().to_vec())))
            .collect::<BTreeMap<_, _>>(),
    }))
    .unwrap()
}

#[test]
fn secret_header_value_is_published_as_a_hash_only_and_a_resync_writes_nothing() {
    let mut w = World::new(with_secret_header());
    w.header_secrets
        .insert("client".into(), header_secret(&[("value", "s3cret")]));
    let p = w.step();
    assert!(p.requeue_after.unwrap() <= HEADER_RECHECK);
    assert_eq!(w.condition(READY), ("True".into(), reason::MINTED.into()));
    let published = &w.status().required_headers;
    assert_eq!(published.len(), 1, "literal values stay in the spec");
    assert_eq!(published[0].name, "X-Client-Secret");
    assert_eq!(published[0].secret_key_ref.name, "client");
    assert_eq!(published[0].secret_key_ref.key, "value");
    assert_eq!(published[0].sha256, sha256_hex("s3cret"));
    let written = serde_json::to_string(&p.status).unwrap() + &format!("{:?}", p.events);
    assert!(!written.contains("s3cret"), "{written}");

    let p = w.step();
    assert!(p.is_quiet(), "{p:?}");
    assert!(p.requeue_after.unwrap() <= HEADER_RECHECK);

    // A changed value is published at the next reconcile, without touching the tokens.
    let token = w.token("main").sha256.clone();
    w.header_secrets
        .insert("client".into(), header_secret(&[("value", "n3w")]));
    let p = w.step();
    assert!(p.secret.is_none());
    assert_eq!(w.status().required_headers[0].sha256, sha256_hex("n3w"));
    assert_eq!(w.token("main").sha256, token);
}

#[test]
fn a_header_secret_that_does_not_name_the_key_publishes_no_hash() {
    // A namespace editor may create ApiKeys without reading Secrets: naming a Secret must not
    // publish the hash of its value unless the Secret lets this key read it.
    let mut w = World::new(with_secret_header());
    let mut secret = header_secret(&[("value", "s3cret")]);
    for names in [None, Some("other-key"), Some("sites")] {
        secret.metadata.annotations =
            names.map(|n| [("keysmith.dev/header-source".to_owned(), n.to_owned())].into());
        w.header_secrets.insert("client".into(), secret.clone());
        w.step();
        assert_eq!(
            w.condition(READY),
            ("False".into(), reason::HEADER_SECRET_MISSING.into()),
            "{names:?}"
        );
        assert!(
            ready_message(&w).contains("annotates it keysmith.dev/header-source=site"),
            "{}",
            ready_message(&w)
        );
        assert!(w.status().required_headers.is_empty(), "{names:?}");
    }
}

#[test]
fn a_missing_header_secret_and_one_that_does_not_name_the_key_read_the_same() {
    // The author may not be able to read Secrets: what Keysmith tells them must not say
    // whether a Secret of that name exists (issue 27, N6).
    let said = |secret: Option<Secret>| {
        let mut w = World::new(with_secret_header());
        w.header_secrets
            .extend(secret.map(|s| ("client".into(), s)));
        let p = w.step();
        // The tokens are minted either way; their ids are random.
        let events: Vec<_> = (p.events.iter())
            .filter(|e| e.reason != reason::MINTED)
            .map(|e| (e.reason, e.note.clone()))
            .collect();
        (w.condition(READY), ready_message(&w), events)
    };
    let mut not_for_us = header_secret(&[("value", "s3cret")]);
    not_for_us.metadata.annotations = None;
    let missing = said(None);
    assert_eq!(missing, said(Some(not_for_us)));
    assert_eq!(
        missing.0,
        ("False".into(), reason::HEADER_SECRET_MISSING.into())
    );
    // Still actionable: it names the header, the Secret and the annotation to add.
    for part in [
        "requiredHeaders[1] (X-Client-Secret)",
        "Secret client",
        "keysmith.dev/header-source=site",
    ] {
        assert!(missing.1.contains(part), "{part}: {}", missing.1);
    }
}

#[test]
fn missing_header_secret_or_key_is_ready_false_and_publishes_no_hash() {
    let mut w = World::new(with_secret_header());
    w.header_secrets
        .insert("client".into(), header_secret(&[("value", "s3cret")]));
    w.step();
    let token = w.token("main").sha256.clone();

    w.header_secrets.clear();
    let p = w.step();
    assert_eq!(
        w.condition(READY),
        ("False".into(), reason::HEADER_SECRET_MISSING.into())
    );
    assert!(
        ready_message(&w).contains("Secret client is missing or does not let this key read it"),
        "{}",
        ready_message(&w)
    );
    assert!(ready_message(&w).contains("requiredHeaders[1] (X-Client-Secret)"));
    assert!(w.status().required_headers.is_empty(), "fail closed");
    assert!(p.secret.is_none(), "the tokens are not the problem");
    assert_eq!(w.token("main").sha256, token);
    assert!(
        w.step().is_quiet(),
        "a resync with the Secret still missing writes nothing"
    );

    w.header_secrets
        .insert("client".into(), header_secret(&[("other", "s3cret")]));
    w.step();
    assert!(ready_message(&w).contains("Secret client has no key value"));
    assert!(w.status().required_headers.is_empty());

    w.header_secrets
        .insert("client".into(), header_secret(&[("value", "s3cret")]));
    w.step();
    assert_eq!(w.condition(READY).0, "True");
    assert_eq!(w.status().required_headers.len(), 1);
}

#[test]
fn only_secrets_named_by_value_from_are_read() {
    let spec: crate::api::ApiKeySpec = serde_json::from_value(with_secret_header()).unwrap();
    assert_eq!(
        headers::referenced(&spec).into_iter().collect::<Vec<_>>(),
        ["client"]
    );
    assert!(headers::referenced(&key(two_slots()).spec).is_empty());
}

#[test]
fn an_invalid_spec_names_no_secret_to_read() {
    // The controller reads what `referenced` names before planning; a spec that fails
    // validation could name a path or a query instead of a Secret (issue 27, N7).
    let with_name = |name: &str| {
        let mut spec = with_secret_header();
        spec["restrictions"]["requiredHeaders"][1]["valueFrom"]["secretKeyRef"]["name"] =
            json!(name);
        spec
    };
    for name in ["../../tenant-b/secrets/x", "x?labelSelector=a", "x/status"] {
        let spec: crate::api::ApiKeySpec = serde_json::from_value(with_name(name)).unwrap();
        assert!(headers::referenced(&spec).is_empty(), "{name}");
    }
    // Invalid elsewhere: still nothing, since nothing else of the spec is acted on either.
    let mut spec = with_secret_header();
    spec["rotation"] = json!({"every": "1d", "overlap": "2d"});
    let spec: crate::api::ApiKeySpec = serde_json::from_value(spec).unwrap();
    assert!(headers::referenced(&spec).is_empty());
}

fn foreign_secret(annotations: &[(&str, &str)], owner: Option<&str>) -> Secret {
    serde_json::from_value(json!({
        "metadata": {
            "name": "site",
            "annotations": annotations.iter().copied().collect::<BTreeMap<_, _>>(),
            "ownerReferences": owner.map(|uid| vec![json!({
                "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey", "name": "other",
                "uid": uid, "controller": true,
            })]),
        },
        "data": {"mine": "c2VjcmV0"},
    }))
    .unwrap()
}

fn adopting(w: &mut World) {
    w.key.spec.secret = Some(crate::api::SecretSpec {
        adopt: true,
        ..Default::default()
    });
}

fn ready_message(w: &World) -> String {
    conditions::find(&w.status().conditions, READY)
        .unwrap()
        .message
        .clone()
}

#[test]
fn unowned_secret_is_a_conflict_unless_adopted() {
    let mut w = World::new(two_slots());
    w.secret = Some(foreign_secret(&[(ADOPT_ANNOTATION, "site")], None));
    let p = w.step();
    assert!(p.secret.is_none());
    assert_eq!(
        w.condition(READY),
        ("False".into(), "SecretConflict".into())
    );
    assert_eq!(p.events[0].reason, "SecretConflict");
    assert_eq!(p.requeue_after, Some(CONFLICT_REQUEUE));
    assert!(ready_message(&w).contains("spec.secret.adopt: true"));

    adopting(&mut w);
    let p = w.step();
    let secret = p.secret.unwrap();
    assert_eq!(secret.owner.uid, UID);
    assert_eq!(w.condition(READY), ("True".into(), "Minted".into()));
}

#[test]
fn adopt_needs_the_secrets_own_opt_in_naming_the_key() {
    // Only someone who may write the Secret can consent; spec.secret.adopt alone is not enough.
    for annotations in [vec![], vec![(ADOPT_ANNOTATION, "another-key")]] {
        let mut w = World::new(two_slots());
        adopting(&mut w);
        w.secret = Some(foreign_secret(&annotations, None));
        let p = w.step();
        assert!(p.secret.is_none(), "{annotations:?}");
        assert_eq!(
            w.condition(READY),
            ("False".into(), "SecretConflict".into())
        );
        let message = ready_message(&w);
        assert!(
            message.contains("annotate it keysmith.dev/adopt=site"),
            "{message}"
        );
        assert_eq!(p.events[0].reason, "SecretConflict");
    }
}

#[test]
fn adopt_refuses_a_secret_another_controller_owns_even_with_the_opt_in() {
    let mut w = World::new(two_slots());
    adopting(&mut w);
    let other = "0d7e6b52-0000-4000-8000-000000000001";
    w.secret = Some(foreign_secret(&[(ADOPT_ANNOTATION, "site")], Some(other)));
    let p = w.step();
    assert!(p.secret.is_none());
    assert_eq!(
        w.condition(READY),
        ("False".into(), "SecretConflict".into())
    );
    let message = ready_message(&w);
    assert!(message.contains("ApiKey other"), "{message}");
}

#[test]
fn revocation_releases_an_adopted_secret_and_deletes_only_its_own() {
    let mut w = World::new(two_slots());
    adopting(&mut w);
    w.secret = Some(foreign_secret(&[(ADOPT_ANNOTATION, "site")], None));
    assert_eq!(
        revocation(&w.key, w.secret.as_ref()),
        Revocation::Leave,
        "not adopted yet"
    );
    w.step();
    let mut adopted = w.secret.clone().unwrap();
    adopted.metadata.annotations = Some(
        [(ADOPT_ANNOTATION.to_owned(), "site".to_owned())]
            .into_iter()
            .collect(),
    );
    adopted.metadata.uid = Some("adopted-uid".to_owned());
    adopted.metadata.resource_version = Some("41".to_owned());
    assert_eq!(
        revocation(&w.key, Some(&adopted)),
        Revocation::Release(Precondition {
            uid: Some("adopted-uid".to_owned()),
            resource_version: Some("41".to_owned()),
        }),
        "released only while it is the Secret observed"
    );

    let mut w = World::new(two_slots());
    w.step();
    let mut own = w.secret.clone().unwrap();
    own.metadata.uid = Some("own-uid".to_owned());
    own.metadata.resource_version = Some("42".to_owned());
    assert_eq!(
        revocation(&w.key, Some(&own)),
        Revocation::Delete(Deletion {
            name: "site".to_owned(),
            observed: Precondition {
                uid: Some("own-uid".to_owned()),
                resource_version: Some("42".to_owned()),
            },
        }),
        "deleted only while it is the Secret observed"
    );
    assert_eq!(revocation(&w.key, None), Revocation::Leave);
    let other = foreign_secret(&[], Some("0d7e6b52-0000-4000-8000-000000000001"));
    assert_eq!(revocation(&w.key, Some(&other)), Revocation::Leave);
}

#[test]
fn the_secret_is_written_only_while_it_is_the_one_observed() {
    let mut w = World::new(two_slots());
    let created = w.step().secret.unwrap();
    assert_eq!(
        created.observed, None,
        "none observed: the write creates it"
    );
    let secret = w.secret.as_mut().unwrap();
    secret.metadata.uid = Some("own-uid".to_owned());
    secret.metadata.resource_version = Some("42".to_owned());
    w.annotate(ROTATE_ANNOTATION, "now");
    let rotated = w.plan().secret.unwrap();
    let observed = Precondition {
        uid: Some("own-uid".to_owned()),
        resource_version: Some("42".to_owned()),
    };
    assert_eq!(rotated.observed.as_ref(), Some(&observed));
    let body = rotated.to_secret();
    assert_eq!(body.metadata.uid, observed.uid, "the apply names the uid");
    assert_eq!(body.metadata.resource_version, observed.resource_version);
}

#[test]
fn edited_secret_is_reminted_and_the_lost_token_overlaps() {
    let mut w = World::new(json!({"tokens": [{"name": "a"}], "rotation": {"overlap": "2h"}}));
    w.step();
    let old = w.token("a").clone();
    w.advance(hours(1));
    w.secret
        .as_mut()
        .unwrap()
        .data
        .as_mut()
        .unwrap()
        .insert("a".into(), ByteString(b"typed by hand".to_vec()));
    let p = w.step();
    assert_eq!(p.slots[0].1, SlotAction::Mint(MintReason::SecretChanged));
    let previous = w.token("a").previous.clone().unwrap();
    assert_eq!(previous.sha256, old.sha256);
    assert_eq!(previous.valid_until.0, w.now.checked_add(hours(2)).unwrap());
    assert_eq!(p.restarts.len(), 0, "no restart targets configured");
    w.assert_secret_verifies();
}

#[test]
fn deleted_secret_is_reminted() {
    let mut w = World::new(two_slots());
    w.step();
    w.secret = None;
    let p = w.step();
    assert!(
        p.slots
            .iter()
            .all(|(_, a)| *a == SlotAction::Mint(MintReason::SecretChanged))
    );
    assert!(p.secret.is_some());
    assert!(
        w.token("delivery").previous.is_some(),
        "default overlap of 1h"
    );
    w.assert_secret_verifies();
}

#[test]
fn crash_between_status_and_secret_keeps_the_held_token_as_previous() {
    let mut w = World::new(json!({"tokens": [{"name": "a"}], "rotation": {"trigger": "1"}}));
    w.step();
    let held = w.token("a").clone();
    w.key.spec.rotation.as_mut().unwrap().trigger = Some("2".into());
    // The status write of the rotation lands, the Secret write does not.
    let rotation = w.plan();
    w.key.status = rotation.status.clone();
    assert_eq!(w.token("a").previous.as_ref().unwrap().sha256, held.sha256);
    let window = w.token("a").previous.clone().unwrap();
    w.advance(SignedDuration::from_mins(1));
    let p = w.step();
    assert_eq!(p.slots[0].1, SlotAction::Mint(MintReason::SecretChanged));
    assert_eq!(w.token("a").previous.as_ref(), Some(&window));
    w.assert_secret_verifies();
}

#[test]
fn trigger_rotates_every_slot_once_with_an_overlap_and_restarts_once() {
    let mut w = World::new(json!({
        "tokens": [{"name": "a"}, {"name": "b"}],
        "expiresAfter": "720h",
        "rotation": {"trigger": "one", "overlap": "1h"},
        "secret": {"restartTargets": [{"kind": "Deployment", "name": "web"}]},
    }));
    w.step();
    let before = w.token("a").clone();
    w.advance(hours(2));
    w.key.spec.rotation.as_mut().unwrap().trigger = Some("two".into());
    let p = w.step();
    assert!(
        p.slots
            .iter()
            .all(|(_, a)| *a == SlotAction::Rotate(RotateReason::Trigger))
    );
    assert_eq!(w.condition(READY), ("True".into(), "Rotated".into()));
    let previous = w.token("a").previous.clone().unwrap();
    assert_eq!(previous.id, before.id);
    assert_eq!(previous.valid_until.0, w.now.checked_add(hours(1)).unwrap());
    assert_eq!(w.token("a").rotation_trigger.as_deref(), Some("two"));
    assert_eq!(p.restarts.len(), 1);
    let mut ids = [w.token("a").id.clone(), w.token("b").id.clone()];
    ids.sort();
    assert_eq!(p.restarts[0].restarted_for, ids.join(","));
    assert_eq!(p.events[0].reason, "Rotated");
    assert!(p.requeue_after.unwrap() <= std::time::Duration::from_secs(3600));

    assert!(w.step().is_quiet(), "one rotation per trigger value");
    // The overlap ends: previous dropped from status, the Secret untouched.
    w.advance(hours(1));
    let p = w.step();
    assert!(p.slots.iter().all(|(_, a)| *a == SlotAction::DropPrevious));
    assert!(p.secret.is_none() && p.restarts.is_empty());
    assert!(w.token("a").previous.is_none());
    assert_eq!(w.condition(READY), ("True".into(), "Rotated".into()));
    assert!(w.step().is_quiet());
}

#[test]
fn annotations_rotate_all_slots_or_one() {
    let mut w = World::new(two_slots());
    w.step();
    w.annotate(ROTATE_ANNOTATION, "r1");
    let p = w.step();
    assert!(
        p.slots
            .iter()
            .all(|(_, a)| *a == SlotAction::Rotate(RotateReason::Annotation))
    );
    assert!(w.step().is_quiet());
    let preview = w.token("preview").clone();
    w.annotate("keysmith.dev/rotate-delivery", "d1");
    let p = w.step();
    assert_eq!(
        p.slots,
        vec![
            (
                "delivery".into(),
                SlotAction::Rotate(RotateReason::Annotation)
            ),
            ("preview".into(), SlotAction::Keep),
        ]
    );
    assert_eq!(w.token("preview").sha256, preview.sha256);
    assert_eq!(sha256_hex(&w.secret_value("preview")), preview.sha256);
    assert!(w.step().is_quiet());
}

#[test]
fn every_interval_rotates_after_the_interval_plus_jitter() {
    let mut w = World::new(
        json!({"tokens": [{"name": "a"}], "rotation": {"every": "24h", "overlap": "1h"}}),
    );
    w.step();
    let due = w.status().next_rotation_at.clone().unwrap().0;
    let jitter = due.duration_since(t0()) - hours(24);
    assert!(
        jitter >= SignedDuration::ZERO && jitter <= hours(1),
        "{jitter}"
    );
    w.now = due.checked_sub(SignedDuration::from_secs(1)).unwrap();
    assert!(w.step().is_quiet());
    w.now = due;
    let p = w.step();
    assert_eq!(p.slots[0].1, SlotAction::Rotate(RotateReason::Schedule));
}

#[test]
fn renew_before_rotates_ahead_of_expiry() {
    let mut w = World::new(json!({
        "tokens": [{"name": "a"}], "expiresAfter": "30d",
        "rotation": {"renewBefore": "10d"},
    }));
    let p = w.step();
    let renew_at = t0().checked_add(hours(20 * 24)).unwrap();
    assert_eq!(w.status().next_rotation_at, Some(Time(renew_at)));
    assert_eq!(p.rotations, vec![("a".to_owned(), renew_at)]);
    w.now = renew_at;
    let p = w.step();
    assert_eq!(p.slots[0].1, SlotAction::Rotate(RotateReason::Renew));
    assert_eq!(
        w.condition(EXPIRING).0,
        "False",
        "renewal planned: no warning"
    );
}

#[test]
fn expiring_then_expired_without_rotation() {
    let mut w = World::new(json!({"tokens": [{"name": "a"}], "expiresAfter": "30d"}));
    let p = w.step();
    assert_eq!(w.condition(EXPIRING).0, "False");
    // The warning window opens a week before expiry; the plan requeues for it.
    let warn = t0().checked_add(hours(23 * 24)).unwrap();
    assert_eq!(p.requeue_after, Some(MAX_REQUEUE));
    w.now = warn.checked_sub(SignedDuration::from_secs(30)).unwrap();
    assert_eq!(
        w.step().requeue_after,
        Some(std::time::Duration::from_secs(30))
    );
    w.now = warn;
    let p = w.step();
    assert_eq!(
        w.condition(EXPIRING),
        ("True".into(), "ExpiryApproaching".into())
    );
    assert_eq!(w.condition(READY).0, "True");
    assert!(p.events.iter().any(|e| e.reason == "Expiring"));
    assert!(
        w.step().events.is_empty(),
        "one Expiring event per transition"
    );
    w.now = t0().checked_add(hours(30 * 24)).unwrap();
    let p = w.step();
    assert_eq!(w.condition(EXPIRED).0, "True");
    assert_eq!(w.condition(READY), ("False".into(), "Expired".into()));
    assert!(p.events.iter().any(|e| e.reason == "Expired"));
    assert!(p.secret.is_none());
    // A new trigger value regenerates it.
    w.key.spec.rotation = Some(crate::api::Rotation {
        trigger: Some("again".into()),
        ..Default::default()
    });
    let p = w.step();
    assert_eq!(p.slots[0].1, SlotAction::Rotate(RotateReason::Trigger));
    assert!(
        w.token("a").previous.is_none(),
        "an expired token gets no overlap"
    );
    assert_eq!(w.condition(READY), ("True".into(), "Rotated".into()));
}

#[test]
fn key_expires_at_ends_everything() {
    let mut w = World::new(json!({
        "tokens": [{"name": "a"}], "expiresAt": "2026-11-24T10:00:00Z",
        "rotation": {"every": "1h", "trigger": "x"},
    }));
    w.step();
    assert_eq!(w.condition(EXPIRING).0, "False");
    w.now = "2026-11-23T10:00:00Z".parse().unwrap();
    w.step();
    assert_eq!(
        w.condition(EXPIRING).0,
        "True",
        "a 2-day key warns a day ahead"
    );
    w.now = "2026-11-24T10:00:00Z".parse().unwrap();
    let p = w.step();
    assert_eq!(w.condition(READY), ("False".into(), "Expired".into()));
    assert!(p.secret.is_none());
    assert_eq!(w.status().next_rotation_at, None);
    assert!(p.rotations.is_empty());
    w.key.spec.rotation.as_mut().unwrap().trigger = Some("y".into());
    let p = w.step();
    assert!(p.slots.iter().all(|(_, a)| *a == SlotAction::Keep));
}

#[test]
fn disabled_suspends_rotation() {
    let mut w = World::new(
        json!({"tokens": [{"name": "a"}], "disabled": true, "rotation": {"every": "1h"}}),
    );
    w.step();
    assert_eq!(w.condition(READY), ("False".into(), "Disabled".into()));
    assert_eq!(w.condition(DISABLED).0, "True");
    w.advance(hours(5));
    let p = w.step();
    assert!(p.is_quiet(), "{p:?}");
    w.key.spec.disabled = false;
    let p = w.step();
    assert_eq!(p.slots[0].1, SlotAction::Rotate(RotateReason::Schedule));
    assert_eq!(w.condition(DISABLED).0, "False");
}

#[test]
fn a_rotation_asked_for_while_disabled_is_reported_pending_until_enabled() {
    let mut w = World::new(json!({"tokens": [{"name": "a"}, {"name": "b"}], "disabled": true}));
    w.step();
    let disabled_message = |w: &World| {
        conditions::find(&w.status().conditions, DISABLED)
            .unwrap()
            .message
            .clone()
    };
    assert_eq!(disabled_message(&w), "spec.disabled is true");

    // The rotate command's annotation for one slot: not performed, but said, in the condition
    // and in an event.
    w.annotate("keysmith.dev/rotate-b", "r1");
    let p = w.step();
    assert!(p.secret.is_none(), "no rotation while disabled");
    let message = disabled_message(&w);
    assert!(
        message.contains("a rotation is pending (keysmith.dev/rotate-b)")
            && message.contains("happens when the key is enabled"),
        "{message}"
    );
    let pending: Vec<_> = p
        .events
        .iter()
        .filter(|e| e.reason == "RotationPending")
        .collect();
    assert_eq!(pending.len(), 1, "{:?}", p.events);
    assert_eq!(pending[0].note, message);
    assert!(w.step().is_quiet(), "a resync while pending writes nothing");

    // A new trigger value joins it.
    w.key.spec.rotation = serde_json::from_value(json!({"trigger": "t1"})).unwrap();
    w.step();
    let message = disabled_message(&w);
    assert!(
        message.contains("(rotation.trigger, keysmith.dev/rotate-b)"),
        "{message}"
    );

    // Enabled: the rotation happens and the condition says nothing more.
    w.key.spec.disabled = false;
    let p = w.step();
    assert!(
        p.slots
            .iter()
            .all(|(_, action)| matches!(action, SlotAction::Rotate(_))),
        "{:?}",
        p.slots
    );
    assert_eq!(disabled_message(&w), "");
}

#[test]
fn last_used_at_stays_with_the_token_it_was_written_for() {
    let mut w = World::new(two_slots());
    w.step();
    let used = Time(t0());
    w.key.status.as_mut().unwrap().tokens[0].last_used_at = Some(used.clone());
    assert!(w.plan().is_quiet(), "the verifier's write needs no answer");
    w.key.spec.rotation = Some(crate::api::Rotation {
        trigger: Some("t".into()),
        ..Default::default()
    });
    w.step();
    let token = w.token("delivery");
    assert_eq!(token.last_used_at, None, "the new token was never used");
    assert_eq!(token.previous.as_ref().unwrap().last_used_at, Some(used));
}

fn rotate_by_annotation(w: &mut World, value: &str) -> Plan {
    w.annotate(ROTATE_ANNOTATION, value);
    w.step()
}

#[test]
fn a_second_rotation_inside_the_overlap_keeps_the_first_replaced_tokens_window() {
    let mut w = World::new(json!({"tokens": [{"name": "a"}], "rotation": {"overlap": "1h"}}));
    w.step();
    let first = w.token("a").clone();
    w.advance(SignedDuration::from_mins(1));
    rotate_by_annotation(&mut w, "1");
    let second = w.token("a").clone();
    let first_until = w.now.checked_add(hours(1)).unwrap();
    w.advance(SignedDuration::from_mins(1));
    let p = rotate_by_annotation(&mut w, "2");
    let a = w.token("a").clone();
    assert_eq!(a.previous.as_ref().unwrap().sha256, second.sha256);
    assert_eq!(a.earlier.len(), 1);
    assert_eq!(a.earlier[0].sha256, first.sha256);
    assert_eq!(
        a.earlier[0].valid_until.0, first_until,
        "its own promise stands"
    );
    assert!(p.events.iter().all(|e| e.reason != OVERLAP_CUT));
    assert!(w.step().is_quiet());

    // Each window ends on its own: the first one a minute before the second.
    w.now = first_until;
    let p = w.step();
    assert_eq!(p.slots[0].1, SlotAction::DropPrevious);
    let a = w.token("a");
    assert_eq!(a.previous.as_ref().unwrap().sha256, second.sha256);
    assert!(a.earlier.is_empty());
    w.advance(SignedDuration::from_mins(1));
    w.step();
    assert!(w.token("a").previous.is_none());
}

#[test]
fn a_shorter_overlap_later_leaves_an_older_window_as_previous() {
    let mut w = World::new(json!({"tokens": [{"name": "a"}], "rotation": {"overlap": "2h"}}));
    w.step();
    let first = w.token("a").clone();
    rotate_by_annotation(&mut w, "1");
    w.key.spec.rotation.as_mut().unwrap().overlap = Some("5m".into());
    w.advance(SignedDuration::from_mins(1));
    rotate_by_annotation(&mut w, "2");
    w.advance(SignedDuration::from_mins(10));
    w.step();
    let a = w.token("a");
    assert_eq!(a.previous.as_ref().unwrap().sha256, first.sha256);
    assert!(a.earlier.is_empty());
}

#[test]
fn rotations_past_the_bound_end_the_oldest_window_with_a_warning() {
    let mut w = World::new(json!({"tokens": [{"name": "a"}], "rotation": {"overlap": "1h"}}));
    w.step();
    let mut replaced = vec![w.token("a").clone()];
    for n in 1..=MAX_EARLIER + 1 {
        w.advance(SignedDuration::from_mins(1));
        let p = rotate_by_annotation(&mut w, &n.to_string());
        assert!(p.events.iter().all(|e| e.reason != OVERLAP_CUT), "{n}");
        replaced.push(w.token("a").clone());
    }
    assert_eq!(w.token("a").earlier.len(), MAX_EARLIER);
    w.advance(SignedDuration::from_mins(1));
    let p = rotate_by_annotation(&mut w, "last");
    let a = w.token("a").clone();
    let kept: Vec<&str> = a
        .previous
        .iter()
        .chain(&a.earlier)
        .map(|p| p.sha256.as_str())
        .collect();
    let newest: Vec<&str> = replaced[1..]
        .iter()
        .rev()
        .map(|t| t.sha256.as_str())
        .collect();
    assert_eq!(kept, newest, "newest first, the oldest one cut");
    let cut = p.events.iter().find(|e| e.reason == OVERLAP_CUT).unwrap();
    assert_eq!(cut.type_, EventKind::Warning);
    assert!(
        cut.before_writes(),
        "announced before the status that makes it"
    );
    assert!(
        p.events
            .iter()
            .filter(|e| e.reason != OVERLAP_CUT)
            .all(|e| !e.before_writes())
    );
    assert!(cut.note.contains(&replaced[0].id), "{}", cut.note);
    assert!(!cut.note.contains(&replaced[1].id), "{}", cut.note);
    assert!(w.step().is_quiet());
}

#[test]
fn removed_slot_is_dropped_from_status_and_secret() {
    let mut w = World::new(two_slots());
    w.step();
    w.key.spec.tokens.truncate(1);
    let p = w.step();
    assert_eq!(p.slots, vec![("delivery".into(), SlotAction::Keep)]);
    let secret = p
        .secret
        .expect("token-ids changed: the Secret is re-applied without the slot");
    assert_eq!(secret.data.keys().collect::<Vec<_>>(), vec!["DELIVERY"]);
    assert_eq!(w.status().tokens.len(), 1);
}

#[test]
fn cron_schedule_in_a_time_zone() {
    let mut w = World::new(json!({
        "tokens": [{"name": "a"}],
        "rotation": {"schedule": "0 3 * * *", "timeZone": "Europe/Berlin", "overlap": "1h"},
    }));
    w.step();
    let due = w.status().next_rotation_at.clone().unwrap().0;
    // 03:00 in Berlin (UTC+1 in November) is 02:00 UTC, the day after 10:00 UTC.
    let run: Timestamp = "2026-11-23T02:00:00Z".parse().unwrap();
    assert!(
        due >= run && due <= run.checked_add(hours(1)).unwrap(),
        "{due}"
    );
}

/// A Deployment's metadata and pod template, from the `spec.template.spec` and the workload's
/// annotations given.
fn workload(
    annotations: serde_json::Value,
    pod: serde_json::Value,
) -> (ObjectMeta, k8s_openapi::api::core::v1::PodTemplateSpec) {
    let meta = serde_json::from_value(json!({"name": "web", "annotations": annotations})).unwrap();
    let template = serde_json::from_value(json!({
        "metadata": {"annotations": {RESTART_ON_ANNOTATION: "site"}},
        "spec": pod,
    }))
    .unwrap();
    (meta, template)
}

fn container(reads: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"name": "app", "image": "app"});
    c.as_object_mut()
        .unwrap()
        .extend(reads.as_object().unwrap().clone());
    c
}

#[test]
fn restart_consent_follows_what_the_pod_template_reads() {
    use restart::{Consent, consent};
    // The key's Secret is `site-tokens`; `site` would be the default and must not be confused.
    let k = key(json!({"tokens": [{"name": "a"}], "secret": {"name": "site-tokens"}}));
    let env_ref = json!({"env": [
        {"name": "PLAIN", "value": "x"},
        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "site-tokens", "key": "a"}}},
    ]});
    let env_from = json!({"envFrom": [
        {"configMapRef": {"name": "site-tokens"}},
        {"secretRef": {"name": "site-tokens"}},
    ]});
    let consuming = [
        json!({"containers": [container(json!({}))],
               "volumes": [{"name": "t", "secret": {"secretName": "site-tokens"}}]}),
        json!({"containers": [container(json!({}))],
               "volumes": [{"name": "t", "projected": {"sources": [
                   {"configMap": {"name": "other"}}, {"secret": {"name": "site-tokens"}}]}}]}),
        json!({"containers": [container(json!({})), container(env_ref.clone())]}),
        json!({"containers": [container(json!({}))], "initContainers": [container(env_ref)]}),
        json!({"containers": [container(env_from.clone())]}),
        json!({"containers": [container(json!({}))], "initContainers": [container(env_from)]}),
    ];
    for pod in consuming {
        let (meta, template) = workload(json!({}), pod.clone());
        assert_eq!(
            consent(&meta, &template, &k),
            Consent::ConsumesSecret,
            "{pod}"
        );
    }
    let elsewhere = [
        json!({"containers": [container(json!({}))]}),
        json!({"containers": [container(json!({}))],
               "volumes": [{"name": "t", "secret": {"secretName": "site"}}]}),
        json!({"containers": [container(json!({}))],
               "volumes": [{"name": "t", "configMap": {"name": "site-tokens"}}]}),
        json!({"containers": [container(json!({}))],
               "volumes": [{"name": "t", "projected": {"sources": [{"configMap": {"name": "site-tokens"}}]}}]}),
        json!({"containers": [container(json!({"env": [{"name": "T", "valueFrom":
            {"configMapKeyRef": {"name": "site-tokens", "key": "a"}}}]}))]}),
        json!({"containers": [container(json!({"env": [{"name": "T", "valueFrom":
            {"secretKeyRef": {"name": "other", "key": "a"}}}]}))]}),
        json!({"containers": [container(json!({"envFrom": [{"secretRef": {"name": "other"}}]}))]}),
    ];
    for pod in elsewhere {
        // The pod template's own annotation is no opt-in: it is copied onto every pod.
        let (meta, template) = workload(json!({}), pod.clone());
        assert_eq!(consent(&meta, &template, &k), Consent::Refused, "{pod}");
        for (annotation, expected) in [
            ("site", Consent::OptedIn),
            ("other, site", Consent::OptedIn),
            ("site,other", Consent::OptedIn),
            ("other", Consent::Refused),
            ("sit", Consent::Refused),
            ("site-tokens", Consent::Refused),
            ("", Consent::Refused),
        ] {
            let (meta, template) =
                workload(json!({RESTART_ON_ANNOTATION: annotation}), pod.clone());
            assert_eq!(
                consent(&meta, &template, &k),
                expected,
                "{annotation:?} {pod}"
            );
        }
    }
    // A template without a pod spec reads nothing.
    let meta = ObjectMeta::default();
    let template = k8s_openapi::api::core::v1::PodTemplateSpec::default();
    assert_eq!(consent(&meta, &template, &k), Consent::Refused);
}

#[test]
fn a_rotation_restarts_an_argo_rollout_through_restart_at_once() {
    use crate::api::{RESTARTED_FOR_ANNOTATION, WorkloadKind};
    use restart::{Consent, consent, template};
    let mut w = World::new(json!({
        "tokens": [{"name": "a"}],
        "rotation": {"trigger": "one"},
        "secret": {"restartTargets": [
            {"kind": "Rollout", "name": "shop"}, {"kind": "Deployment", "name": "web"}]},
    }));
    w.step();
    w.advance(hours(2));
    w.key.spec.rotation.as_mut().unwrap().trigger = Some("two".into());
    let p = w.step();
    let [rollout, deployment] = p.restarts.as_slice() else {
        panic!("two restarts: {:?}", p.restarts);
    };
    assert_eq!(rollout.target.kind, WorkloadKind::Rollout);
    assert_eq!(rollout.at, w.now, "restartAt is the rotation's time");
    let ids = w.token("a").id.clone();

    // Argo's own restart: restartAt, and the marker on the Rollout, not on its pod template
    // (whose change would roll out a new revision through every canary step).
    assert_eq!(
        rollout.patch(),
        json!({
            "metadata": {"annotations": {RESTARTED_FOR_ANNOTATION: ids}},
            "spec": {"restartAt": "2026-11-22T12:00:00Z"},
        })
    );
    assert_eq!(
        deployment.patch(),
        json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_FOR_ANNOTATION: ids}}}}})
    );

    // What the API server returns after the patch counts as done; before it, or for earlier
    // tokens, it does not. A Rollout's pod template marker (written by hand) is not its own.
    let reads_secret = json!({"spec": {"containers": [container(json!({
        "envFrom": [{"secretRef": {"name": "site"}}]}))]}});
    let mut shop = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "shop", "namespace": "cms"},
        "spec": {"restartAt": "2026-01-01T00:00:00Z", "template": reads_secret},
    });
    assert!(!rollout.done(&shop));
    shop["spec"]["template"]["metadata"] = json!({"annotations": {RESTARTED_FOR_ANNOTATION: ids}});
    assert!(!rollout.done(&shop));
    shop["spec"]["template"]["metadata"] = json!({});
    // As the merge patch leaves it.
    let patch = rollout.patch();
    shop["metadata"]["annotations"] = patch["metadata"]["annotations"].clone();
    shop["spec"]["restartAt"] = patch["spec"]["restartAt"].clone();
    assert!(rollout.done(&shop));
    assert!(!deployment.done(&shop));
    let earlier = restart::Restart {
        restarted_for: "old".into(),
        ..rollout.clone()
    };
    assert!(!earlier.done(&shop));

    // The same consent as a Deployment, read from the Rollout's template; a Rollout whose pods
    // come from a Deployment (workloadRef) has no template and restarts only when it opts in.
    let meta: ObjectMeta = serde_json::from_value(shop["metadata"].clone()).unwrap();
    assert_eq!(
        consent(&meta, &template(&shop), &w.key),
        Consent::ConsumesSecret
    );
    let by_ref = json!({"metadata": {"name": "shop"}, "spec": {
        "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop"}}});
    assert_eq!(consent(&meta, &template(&by_ref), &w.key), Consent::Refused);
    let opted: ObjectMeta = serde_json::from_value(
        json!({"name": "shop", "annotations": {RESTART_ON_ANNOTATION: "site"}}),
    )
    .unwrap();
    assert_eq!(
        consent(&opted, &template(&by_ref), &w.key),
        Consent::OptedIn
    );

    assert!(w.step().is_quiet(), "one restart per rotation");
}

fn spec_strategy() -> impl Strategy<Value = serde_json::Value> {
    let lifetime = prop::option::of(prop::sample::select(vec!["2h", "36h", "30d", "400d"]));
    let cadence = prop::sample::select(vec![
        json!(null),
        json!({"every": "1h"}),
        json!({"every": "24h"}),
        json!({"every": "720h"}),
        json!({"schedule": "*/30 * * * *"}),
        json!({"schedule": "0 3 * * MON", "timeZone": "Europe/Berlin"}),
        json!({"schedule": "0 0 1 * *", "timeZone": "America/New_York"}),
    ]);
    let overlap = prop::option::of(prop::sample::select(vec!["0", "5m", "20m", "2h"]));
    let renew = prop::option::of(prop::sample::select(vec!["1h", "10d"]));
    (
        1usize..=3,
        lifetime,
        cadence,
        overlap,
        renew,
        prop::option::of("[a-c]"),
        any::<bool>(),
        prop::option::of(1i64..2000),
    )
        .prop_map(
            |(slots, lifetime, cadence, overlap, renew, trigger, disabled, end_hours)| {
                let mut rotation = cadence.as_object().cloned().unwrap_or_default();
                if let Some(o) = overlap {
                    rotation.insert("overlap".into(), json!(o));
                }
                if let Some(r) = renew {
                    rotation.insert("renewBefore".into(), json!(r));
                }
                if let Some(t) = trigger {
                    rotation.insert("trigger".into(), json!(t));
                }
                let tokens: Vec<_> = (0..slots)
                    .map(|i| json!({"name": format!("s{i}")}))
                    .collect();
                let mut spec =
                    json!({"tokens": tokens, "rotation": rotation, "disabled": disabled});
                if let Some(l) = lifetime {
                    spec["expiresAfter"] = json!(l);
                }
                if let Some(h) = end_hours {
                    spec["expiresAt"] = json!(t0().checked_add(hours(h)).unwrap().to_string());
                }
                spec
            },
        )
}

/// Things that happen to a key between two reconciles.
#[derive(Debug, Clone)]
enum Op {
    Advance(i64),
    Trigger(String),
    Annotate(String),
    AnnotateSlot(String),
    DeleteSecret,
    EditSecret,
    ToggleDisabled,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1i64..(8 * 24 * 3600)).prop_map(Op::Advance),
        1 => "[a-d]".prop_map(Op::Trigger),
        1 => "[a-d]".prop_map(Op::Annotate),
        1 => "[a-d]".prop_map(Op::AnnotateSlot),
        1 => Just(Op::DeleteSecret),
        1 => Just(Op::EditSecret),
        1 => Just(Op::ToggleDisabled),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever happens, the Secret only holds tokens status vouches for, and a reconcile right
    /// after a reconcile writes nothing.
    #[test]
    fn secret_always_verifies_and_resyncs_are_quiet(
        spec in spec_strategy(),
        ops in prop::collection::vec(op_strategy(), 1..24),
    ) {
        let mut w = World::new(spec);
        w.step();
        w.assert_secret_verifies();
        for op in ops {
            match op {
                Op::Advance(secs) => w.advance(SignedDuration::from_secs(secs)),
                Op::Trigger(v) => w.key.spec.rotation.get_or_insert_with(Default::default).trigger = Some(v),
                Op::Annotate(v) => w.annotate(ROTATE_ANNOTATION, &v),
                Op::AnnotateSlot(v) => w.annotate("keysmith.dev/rotate-s0", &v),
                Op::DeleteSecret => w.secret = None,
                Op::EditSecret => if let Some(data) = w.secret.as_mut().and_then(|s| s.data.as_mut()) {
                    data.insert("s0".into(), ByteString(b"edited".to_vec()));
                    w.tampered = true;
                },
                Op::ToggleDisabled => w.key.spec.disabled = !w.key.spec.disabled,
            }
            let p = w.step();
            w.assert_secret_verifies();
            if let Some(requeue) = p.requeue_after {
                prop_assert!(requeue >= MIN_REQUEUE && requeue <= MAX_REQUEUE);
            }
            let again = w.plan();
            prop_assert!(again.is_quiet(), "second reconcile at {} wrote: {:?}", w.now, again);
            prop_assert!(again.events.is_empty(), "second reconcile emitted {:?}", again.events);
        }
    }

    /// A scheduled rotation happens no earlier than the run and no later than its jitter bound.
    #[test]
    fn scheduled_rotations_land_within_the_jitter_bound(
        uid in "[0-9a-f]{8}-[0-9a-f]{4}",
        schedule in prop::sample::select(vec!["*/30 * * * *", "0 3 * * MON", "15 */6 * * *", "0 0 1 * *"]),
        offset in 0i64..(40 * 24 * 3600),
    ) {
        let mut w = World::new(json!({"tokens": [{"name": "a"}], "rotation": {"schedule": schedule, "overlap": "1m"}}));
        w.key.metadata.uid = Some(uid);
        w.advance(SignedDuration::from_secs(offset));
        w.step();
        let issued = w.token("a").issued_at.0;
        let parsed = crate::schedule::Schedule::parse(schedule, None).unwrap();
        let run = parsed.next_after(issued).unwrap();
        let gap = parsed.interval_after(issued).unwrap();
        let bound = timing::jitter(gap, 1.0).max(std::time::Duration::from_secs(1));
        let due = w.status().next_rotation_at.clone().unwrap().0;
        prop_assert!(due >= run && due <= timing::add(run, bound), "run {run}, due {due}");
        w.now = due.checked_sub(SignedDuration::from_secs(1)).unwrap();
        prop_assert!(w.step().is_quiet());
        w.now = due;
        let p = w.step();
        prop_assert_eq!(p.slots[0].1, SlotAction::Rotate(RotateReason::Schedule));
    }

    /// The replaced token stays in status until min(rotation + overlap, its expiry), not a
    /// second longer, and the plan requeues no later than that.
    #[test]
    fn overlap_windows_end_when_they_should(
        overlap_mins in 0u64..600,
        lifetime_hours in prop::option::of(2u64..100),
        age_mins in 0i64..6000,
    ) {
        let mut spec = json!({"tokens": [{"name": "a"}], "rotation": {"overlap": format!("{overlap_mins}m"), "trigger": "1"}});
        if let Some(h) = lifetime_hours {
            spec["expiresAfter"] = json!(format!("{h}h"));
        }
        let mut w = World::new(spec);
        w.step();
        let old = w.token("a").clone();
        w.advance(SignedDuration::from_mins(age_mins));
        w.key.spec.rotation.as_mut().unwrap().trigger = Some("2".into());
        let p = w.step();
        let overlap_end = w.now.checked_add(SignedDuration::from_mins(overlap_mins as i64)).unwrap();
        let end = old.expires_at.as_ref().map_or(overlap_end, |e| overlap_end.min(e.0));
        let expired_before = old.expires_at.as_ref().is_some_and(|e| e.0 <= w.now);
        match w.token("a").previous.clone() {
            None => prop_assert!(overlap_mins == 0 || expired_before || end <= w.now),
            Some(previous) => {
                prop_assert_eq!(previous.valid_until.0, end);
                prop_assert_eq!(previous.sha256, old.sha256);
                prop_assert!(p.requeue_after.unwrap() <= between(w.now, end).max(MIN_REQUEUE));
                w.now = end.checked_sub(SignedDuration::from_secs(1)).unwrap();
                w.step();
                prop_assert!(w.token("a").previous.is_some());
                w.now = end;
                w.step();
                prop_assert!(w.token("a").previous.is_none());
            }
        }
    }
}
