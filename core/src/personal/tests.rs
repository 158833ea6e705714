//! The rules of personal keys: owner validation, the one minted key per owner, the lifetime cap,
//! and how the planner applies them.

use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::planner::conditions::{READY, reason};
use crate::planner::headers::HeaderSecrets;
use crate::planner::{Observed, PersonalKeys, mint_token, plan};
use crate::validation::validate;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn apikey(name: &str, created: Option<&str>, spec: serde_json::Value) -> ApiKey {
    let mut metadata = json!({"name": name, "namespace": "dev", "uid": "u-1", "generation": 1});
    if let Some(created) = created {
        metadata["creationTimestamp"] = json!(created);
    }
    serde_json::from_value(json!({
        "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
        "metadata": metadata, "spec": spec,
    }))
    .unwrap()
}

fn personal(username: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "tokens": [{"name": "token", "prefix": "me_"}],
        "owner": {"username": username, "groups": ["dev-team"]},
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    spec
}

fn fields(spec: serde_json::Value) -> Vec<String> {
    let key = apikey("k", None, spec);
    match validate(&key.spec) {
        Ok(_) => Vec::new(),
        Err(invalid) => invalid.0.into_iter().map(|e| e.field).collect(),
    }
}

#[test]
fn an_owner_is_a_bounded_non_system_user_with_unique_bounded_groups() {
    assert!(fields(personal("alice", json!({}))).is_empty());
    let owner =
        |owner: serde_json::Value| fields(json!({"tokens": [{"name": "t"}], "owner": owner}));
    assert_eq!(owner(json!({"username": ""})), ["spec.owner.username"]);
    assert_eq!(
        owner(json!({"username": "x".repeat(257)})),
        ["spec.owner.username"]
    );
    assert_eq!(
        owner(json!({"username": "system:serviceaccount:dev:ci"})),
        ["spec.owner.username"]
    );
    assert_eq!(
        owner(json!({"username": "alice", "groups": ["a", "", "system:masters", "a"]})),
        [
            "spec.owner.groups[1]",
            "spec.owner.groups[2]",
            "spec.owner.groups[3]"
        ]
    );
    let many: Vec<String> = (0..33).map(|i| format!("g{i}")).collect();
    assert_eq!(
        owner(json!({"username": "alice", "groups": many})),
        ["spec.owner.groups"]
    );
}

#[test]
fn the_oldest_live_key_of_an_owner_is_the_first() {
    let at =
        |name, created: Option<&str>, user: &str| apikey(name, created, personal(user, json!({})));
    let mut keys = vec![
        at("newer", Some("2026-11-22T10:00:05Z"), "alice"),
        at("b-same-second", Some("2026-11-22T10:00:00Z"), "alice"),
        at("a-same-second", Some("2026-11-22T10:00:00Z"), "alice"),
        at("bobs", Some("2026-11-01T00:00:00Z"), "bob"),
        at("unsaved", None, "alice"),
        apikey(
            "ordinary",
            Some("2026-01-01T00:00:00Z"),
            json!({"tokens": [{"name": "t"}]}),
        ),
    ];
    assert_eq!(first_of_owner(&keys, "alice"), Some("a-same-second"));
    assert_eq!(first_of_owner(&keys, "bob"), Some("bobs"));
    assert_eq!(first_of_owner(&keys, "carol"), None);
    // A key being deleted makes way for the next.
    keys[2].metadata.deletion_timestamp = keys[2].metadata.creation_timestamp.clone();
    assert_eq!(first_of_owner(&keys, "alice"), Some("b-same-second"));
    // The order the cache lists them in does not matter.
    keys.reverse();
    assert_eq!(first_of_owner(&keys, "alice"), Some("b-same-second"));
    let only_new = [at("unsaved", None, "alice")];
    assert_eq!(first_of_owner(&only_new, "alice"), Some("unsaved"));
}

fn lifetimes(spec: serde_json::Value, max: Duration) -> Vec<(Option<Duration>, Option<Duration>)> {
    let key = apikey("k", None, spec);
    let mut valid = validate(&key.spec).unwrap();
    cap_lifetimes(&mut valid, max);
    valid
        .slots
        .iter()
        .map(|s| (s.lifetime, s.renew_before))
        .collect()
}

#[test]
fn lifetimes_are_capped_and_renewal_stays_inside_the_cap() {
    let max = 90 * DAY;
    // No lifetime, no rotation: the cap, run to expiry.
    assert_eq!(
        lifetimes(personal("a", json!({})), max),
        [(Some(max), None)]
    );
    // A shorter lifetime is kept as written, a longer one capped.
    let spec = json!({
        "tokens": [
            {"name": "short", "expiresAfter": "30d"},
            {"name": "long", "expiresAfter": "365d"},
        ],
        "owner": {"username": "a"},
        "rotation": {"every": "30d"},
    });
    assert_eq!(
        lifetimes(spec, max),
        [
            (Some(30 * DAY), Some(10 * DAY)),
            (Some(max), Some(30 * DAY))
        ]
    );
    // A renewBefore the capped lifetime would swallow becomes a third of it.
    let spec = json!({
        "tokens": [{"name": "t"}], "owner": {"username": "a"},
        "expiresAfter": "730d", "rotation": {"renewBefore": "120d"},
    });
    assert_eq!(lifetimes(spec, max), [(Some(max), Some(30 * DAY))]);
}

proptest! {
    /// Whatever lifetimes and rotation a key asks for, no token outlives the cap and a renewal
    /// always falls inside the lifetime.
    #[test]
    fn no_capped_token_outlives_the_cap(
        max_minutes in 1u64..=(2 * 525_600),
        life_minutes in proptest::option::of(1u64..=(5 * 525_600)),
        every_minutes in proptest::option::of(2u64..=(5 * 525_600)),
    ) {
        let max = Duration::from_secs(max_minutes * 60);
        let mut spec = json!({"tokens": [{"name": "t"}], "owner": {"username": "a"}});
        if let Some(life) = life_minutes {
            spec["expiresAfter"] = json!(format!("{life}m"));
        }
        if let Some(every) = every_minutes {
            spec["rotation"] = json!({"every": format!("{every}m")});
        }
        for (lifetime, renew_before) in lifetimes(spec, max) {
            let lifetime = lifetime.expect("every capped slot expires");
            prop_assert!(lifetime <= max);
            prop_assert!(renew_before.is_none_or(|before| before < lifetime));
        }
    }
}

fn plan_at(key: &ApiKey, personal: PersonalKeys<'_>) -> crate::planner::Plan {
    let observed = Observed {
        key,
        secret: None,
        header_secrets: &HeaderSecrets::new(),
        published: &[],
        personal,
        access: Default::default(),
    };
    let now: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
    plan(&observed, now, &mut mint_token).unwrap()
}

fn ready_reason(plan: &crate::planner::Plan) -> String {
    let status = plan.status.as_ref().unwrap();
    let ready = status.conditions.iter().find(|c| c.type_ == READY).unwrap();
    ready.reason.clone()
}

#[test]
fn the_planner_mints_only_the_first_key_of_an_owner_with_capped_tokens() {
    let key = apikey(
        "second",
        Some("2026-11-22T09:00:00Z"),
        personal("alice", json!({"expiresAfter": "365d"})),
    );
    let second = plan_at(
        &key,
        PersonalKeys {
            max_lifetime: 7 * DAY,
            first_of_owner: Some("first"),
            ..PersonalKeys::default()
        },
    );
    assert!(second.secret.is_none());
    assert_eq!(ready_reason(&second), reason::DUPLICATE_PERSONAL_KEY);
    assert!(second.status.as_ref().unwrap().tokens.is_empty());
    assert_eq!(second.events[0].reason, reason::DUPLICATE_PERSONAL_KEY);
    assert_eq!(second.requeue_after, Some(DUPLICATE_RECHECK));
    assert!(second.events[0].note.contains("\"first\""));

    for first_of_owner in [Some("second"), None] {
        let minted = plan_at(
            &key,
            PersonalKeys {
                max_lifetime: 7 * DAY,
                first_of_owner,
                ..PersonalKeys::default()
            },
        );
        assert!(minted.secret.is_some());
        let token = &minted.status.as_ref().unwrap().tokens[0];
        let lived = token
            .expires_at
            .as_ref()
            .unwrap()
            .0
            .duration_since(token.issued_at.0);
        assert_eq!(lived, jiff::SignedDuration::from_hours(7 * 24));
    }
}

#[test]
fn an_ordinary_key_is_neither_capped_nor_counted() {
    let key = apikey(
        "plain",
        None,
        json!({"tokens": [{"name": "t"}], "expiresAfter": "365d"}),
    );
    let planned = plan_at(
        &key,
        PersonalKeys {
            accepted: false,
            max_lifetime: DAY,
            first_of_owner: Some("someone-elses"),
        },
    );
    let token = &planned.status.as_ref().unwrap().tokens[0];
    let lived = token
        .expires_at
        .as_ref()
        .unwrap()
        .0
        .duration_since(token.issued_at.0);
    assert_eq!(lived, jiff::SignedDuration::from_hours(365 * 24));
}

#[test]
fn an_installation_without_personal_keys_mints_none() {
    let key = apikey("mine", None, personal("alice", json!({})));
    let refused = plan_at(
        &key,
        PersonalKeys {
            accepted: false,
            ..PersonalKeys::default()
        },
    );
    assert!(refused.secret.is_none());
    assert_eq!(ready_reason(&refused), reason::PERSONAL_KEYS_DISABLED);
    assert!(refused.status.as_ref().unwrap().tokens.is_empty());
}

#[test]
fn the_max_lifetime_flag_takes_one_minute_to_two_years() {
    assert_eq!(parse_max_lifetime("90d").unwrap(), DEFAULT_MAX_LIFETIME);
    assert_eq!(parse_max_lifetime("1m").unwrap(), Duration::from_secs(60));
    assert_eq!(parse_max_lifetime("17520h").unwrap(), 730 * DAY);
    for bad in ["59s", "17520h1s", "3y", ""] {
        assert!(parse_max_lifetime(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_index_takes_the_owner_from_the_spec_never_from_status() {
    use crate::verifier::key::{GrantInterner, KeyInfo};
    let mut key = apikey("mine", None, personal("alice", json!({})));
    // A served policy naming someone else (status is not checked at admission the way spec is).
    let mut served = serde_json::to_value(&key.spec).unwrap();
    served["owner"] = json!({"username": "mallory", "groups": ["admins"]});
    key.status = Some(
        serde_json::from_value(json!({"servedGeneration": 1, "servedPolicy": served})).unwrap(),
    );
    let (info, _) = KeyInfo::from_apikey(&key, &GrantInterner::default());
    let owner = info.owner.expect("a personal key");
    assert_eq!(&*owner.username, "alice");
    assert_eq!(owner.groups.len(), 1);
    assert_eq!(&*owner.groups[0], "dev-team");

    // An owner no server would admit makes no personal key; an ordinary key has none.
    let system = apikey("sys", None, personal("system:admin", json!({})));
    assert!(
        KeyInfo::from_apikey(&system, &GrantInterner::default())
            .0
            .owner
            .is_none()
    );
    let plain = apikey("plain", None, json!({"tokens": [{"name": "t"}]}));
    assert!(
        KeyInfo::from_apikey(&plain, &GrantInterner::default())
            .0
            .owner
            .is_none()
    );
}
