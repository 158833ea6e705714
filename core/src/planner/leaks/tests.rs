//! The planner's answer to leak records: each `leakResponse`, for current and replaced tokens,
//! once only.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;
use serde_json::json;

use super::super::headers::HeaderSecrets;
use super::super::{Observed, Plan, RotateReason, SlotAction, mint_token, plan};
use super::*;
use crate::api::{ApiKey, ApiKeyStatus, ROTATE_ANNOTATION};

const SOURCE: &str = "https://github.com/octo/app/blob/abc/config.yml";

fn t0() -> Timestamp {
    "2026-11-22T10:00:00Z".parse().unwrap()
}

/// An ApiKey with one slot rotated by annotation, an overlap of 1h, published for Envoy Gateway,
/// and `response`.
struct World {
    key: ApiKey,
    secret: Option<Secret>,
    now: Timestamp,
}

impl World {
    fn new(response: Option<&str>) -> World {
        let mut spec = json!({
            "tokens": [{"name": "main"}],
            "rotation": {"overlap": "1h"},
            "publish": [{"envoyGateway": {}}],
        });
        if let Some(response) = response {
            spec["leakResponse"] = json!(response);
        }
        let key = serde_json::from_value(json!({
            "apiVersion": "keysmith.dev/v1alpha1",
            "kind": "ApiKey",
            "metadata": {"name": "site", "namespace": "cms", "uid": "u1", "generation": 1},
            "spec": spec,
        }))
        .unwrap();
        let mut world = World {
            key,
            secret: None,
            now: t0(),
        };
        world.step();
        world
    }

    fn step(&mut self) -> Plan {
        let headers = HeaderSecrets::new();
        let observed = Observed {
            key: &self.key,
            secret: self.secret.as_ref(),
            header_secrets: &headers,
            published: &[],
            personal: Default::default(),
            access: Default::default(),
        };
        let plan = plan(&observed, self.now, &mut mint_token).unwrap();
        if let Some(status) = &plan.status {
            self.key.status = Some(status.clone());
        }
        if let Some(secret) = &plan.secret {
            self.secret = Some(secret.to_secret());
        }
        self.now += SignedDuration::from_mins(1);
        plan
    }

    fn status(&mut self) -> &mut ApiKeyStatus {
        self.key.status.as_mut().unwrap()
    }

    fn token(&mut self) -> &mut TokenStatus {
        &mut self.status().tokens[0]
    }

    /// Rotate by annotation, keeping the current token as `previous` for the overlap.
    fn rotate(&mut self, value: &str) {
        self.key
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(ROTATE_ANNOTATION.into(), value.into());
        self.step();
    }

    /// What the verifier writes for a report.
    fn report(&self) -> Leak {
        Leak {
            reported_at: Time(self.now),
            source: Some(SOURCE.into()),
            handled_at: None,
        }
    }

    fn hashes(&mut self) -> Vec<String> {
        let t = self.token();
        std::iter::once(t.sha256.clone())
            .chain(
                t.previous
                    .iter()
                    .chain(&t.earlier)
                    .map(|p| p.sha256.clone()),
            )
            .collect()
    }
}

/// Whether the plan leaves the key's status and Secret alone (the published Secrets are not
/// stored here, so their plan is not quiet).
fn writes_nothing_to_the_key(plan: &Plan) -> bool {
    plan.status.is_none() && plan.secret.is_none()
}

/// The client ids of the Envoy Gateway Secret the plan publishes.
fn envoy_entries(plan: &Plan) -> Vec<String> {
    let secret = &plan.publication.secrets[0];
    assert_eq!(secret.name, "site-envoy-gateway");
    secret.data.keys().cloned().collect()
}

fn leak_events(plan: &Plan) -> Vec<&str> {
    plan.events
        .iter()
        .filter(|e| e.reason == LEAK_REPORTED)
        .inspect(|e| assert_eq!(e.type_, EventKind::Warning))
        .map(|e| e.note.as_str())
        .collect()
}

#[test]
fn rotate_replaces_a_leaked_current_token_without_an_overlap_and_says_so_once() {
    let mut w = World::new(None);
    let leaked = w.token().clone();
    let report = w.report();
    w.token().leak = Some(report);
    let plan = w.step();
    assert_eq!(
        plan.slots,
        vec![("main".into(), SlotAction::Rotate(RotateReason::Leak))]
    );
    assert_eq!(plan.slots[0].1.mint_label(), Some("leak"));
    let now = w.token().clone();
    assert_ne!(now.sha256, leaked.sha256);
    assert_eq!(now.previous, None, "the leaked token must not verify on");
    assert_eq!(now.leak, None);
    assert!(plan.secret.is_some(), "the new token goes to the Secret");
    let notes = leak_events(&plan);
    assert_eq!(notes.len(), 1);
    assert!(notes[0].contains(&leaked.id) && notes[0].contains(SOURCE));
    assert!(notes[0].contains("rotated at once"));

    let again = w.step();
    assert!(writes_nothing_to_the_key(&again) && leak_events(&again).is_empty());
}

#[test]
fn a_leaked_previous_token_is_dropped_and_the_current_one_kept() {
    for response in [None, Some("revoke")] {
        let mut w = World::new(response);
        w.rotate("1");
        let current = w.token().sha256.clone();
        let previous = w.token().previous.clone().unwrap();
        let report = w.report();
        w.token().previous.as_mut().unwrap().leak = Some(report);
        let plan = w.step();
        assert_eq!(plan.slots, vec![("main".into(), SlotAction::DropPrevious)]);
        assert_eq!(w.token().sha256, current);
        assert_eq!(w.token().previous, None);
        assert!(plan.secret.is_none());
        let notes = leak_events(&plan);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains(&previous.id) && notes[0].contains("stopped verifying"));
    }
}

#[test]
fn revoke_keeps_no_replacement_until_the_next_rotation_which_does_not_keep_the_leaked_token() {
    let mut w = World::new(Some("revoke"));
    let leaked = w.token().clone();
    let report = w.report();
    w.token().leak = Some(report);
    let plan = w.step();
    assert_eq!(plan.slots, vec![("main".into(), SlotAction::Keep)]);
    assert!(plan.secret.is_none());
    let token = w.token().clone();
    assert_eq!(token.sha256, leaked.sha256);
    let handled = token.leak.as_ref().unwrap();
    assert!(handled.handled_at.is_some(), "marked handled");
    assert_eq!(handled.source.as_deref(), Some(SOURCE));
    assert!(refused(token.leak.as_ref(), LeakResponse::Revoke));
    assert_eq!(leak_events(&plan).len(), 1);
    assert_eq!(
        envoy_entries(&plan),
        Vec::<String>::new(),
        "a gateway checking keys itself must refuse it too"
    );

    let again = w.step();
    assert!(writes_nothing_to_the_key(&again) && leak_events(&again).is_empty());

    w.rotate("after-the-leak");
    let token = w.token().clone();
    assert_ne!(token.sha256, leaked.sha256);
    assert_eq!(token.previous, None, "a revoked token is never kept");
    assert_eq!(token.leak, None);
}

#[test]
fn report_only_records_and_the_token_keeps_its_overlap_when_rotated() {
    let mut w = World::new(Some("report"));
    let leaked = w.token().clone();
    let report = w.report();
    w.token().leak = Some(report);
    let plan = w.step();
    assert_eq!(plan.slots, vec![("main".into(), SlotAction::Keep)]);
    assert!(!refused(w.token().leak.as_ref(), LeakResponse::Report));
    assert_eq!(envoy_entries(&plan), ["cms.site.main"]);
    assert!(w.token().leak.as_ref().unwrap().handled_at.is_some());
    let notes = leak_events(&plan);
    assert!(notes.len() == 1 && notes[0].contains("it still verifies"));

    w.rotate("1");
    let previous = w.token().previous.clone().unwrap();
    assert_eq!(previous.sha256, leaked.sha256);
    assert!(previous.leak.is_some(), "the record moves with the token");
}

#[test]
fn a_disabled_key_still_rotates_a_leaked_token() {
    let mut w = World::new(None);
    w.key.spec.disabled = true;
    w.step();
    let leaked = w.token().sha256.clone();
    let report = w.report();
    w.token().leak = Some(report);
    let plan = w.step();
    assert_eq!(
        plan.slots,
        vec![("main".into(), SlotAction::Rotate(RotateReason::Leak))]
    );
    assert_ne!(w.token().sha256, leaked);
}

fn response() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        Just(None),
        Just(Some("rotate")),
        Just(Some("revoke")),
        Just(Some("report"))
    ]
}

proptest! {
    /// Whatever leaked among a slot's tokens (current, previous, earlier), one pass applies the
    /// response: no refused token is left to verify as a replaced one, no leaked token stays
    /// current under `rotate`, every record left is handled, each report gets one event, and the
    /// next pass does nothing.
    #[test]
    fn one_pass_settles_every_report(
        response in response(),
        rotations in 0usize..4,
        leaked in proptest::collection::vec(any::<bool>(), 4),
    ) {
        let mut w = World::new(response);
        for i in 0..rotations {
            w.rotate(&i.to_string());
        }
        let hashes = w.hashes();
        let report = w.report();
        let t = w.token();
        let entries = std::iter::once(&mut t.leak)
            .chain(t.previous.iter_mut().chain(&mut t.earlier).map(|p| &mut p.leak));
        let mut reported = Vec::new();
        for ((leak, hash), on) in entries.zip(&hashes).zip(&leaked) {
            if *on {
                *leak = Some(report.clone());
                reported.push(hash.clone());
            }
        }
        let plan = w.step();
        prop_assert_eq!(leak_events(&plan).len(), reported.len());
        let response = response.map_or(LeakResponse::Rotate, |r| {
            serde_json::from_value(json!(r)).unwrap()
        });
        let t = w.token().clone();
        if response == LeakResponse::Rotate {
            prop_assert!(!reported.contains(&t.sha256));
        }
        prop_assert!(t.leak.as_ref().is_none_or(|l| l.handled_at.is_some()));
        for p in t.previous.iter().chain(&t.earlier) {
            prop_assert!(!refused(p.leak.as_ref(), response));
            prop_assert!(p.leak.as_ref().is_none_or(|l| l.handled_at.is_some()));
            prop_assert_eq!(p.leak.is_some(), reported.contains(&p.sha256));
        }
        let again = w.step();
        prop_assert!(leak_events(&again).is_empty());
        prop_assert!(again.status.is_none());
    }
}

#[test]
fn an_expired_key_rotates_nothing_and_the_event_says_so() {
    let mut w = World::new(None);
    w.key.spec.expires_at = Some(w.now.to_string());
    w.step();
    let leaked = w.token().sha256.clone();
    let report = w.report();
    w.token().leak = Some(report);
    let plan = w.step();
    assert_eq!(plan.slots, vec![("main".into(), SlotAction::Keep)]);
    assert_eq!(w.token().sha256, leaked);
    let notes = leak_events(&plan);
    assert!(
        notes.len() == 1 && notes[0].contains("the key has expired"),
        "{notes:?}"
    );
}
