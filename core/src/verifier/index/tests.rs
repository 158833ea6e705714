//! The index and the decision order: every code, rotation overlap, revocation, the last
//! accepted policy and fail-closed indexing of an invalid spec.

use std::collections::HashSet;
use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::*;
use crate::api::{ApiKey, Encoding};
use crate::token::Token;
use crate::verifier::decision::RequestHeaders;

fn now() -> Timestamp {
    "2026-11-23T10:00:00Z".parse().unwrap()
}

fn token(prefix: &str) -> Token {
    Token::generate(prefix, 32, Encoding::Base62).unwrap()
}

/// An ApiKey `ns/name` with `spec` and a status giving each `(slot, token)` as current.
fn apikey(name: &str, spec: Value, tokens: &[(&str, &Token)]) -> ApiKey {
    let status: Vec<Value> = tokens
        .iter()
        .map(|(slot, t)| {
            json!({"name": slot, "id": t.id(), "sha256": t.sha256_hex(), "issuedAt": "2026-11-01T00:00:00Z"})
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": spec,
        "status": {"tokens": status},
    }))
    .unwrap()
}

fn simple_spec() -> Value {
    json!({"tokens": [{"name": "main"}]})
}

struct Headers(Vec<(&'static str, &'static str)>);

impl RequestHeaders for Headers {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    }
}

fn request(token: &str) -> VerifyRequest<'_> {
    VerifyRequest::token(token)
}

fn code(index: &Index, request: &VerifyRequest<'_>) -> Code {
    index.verify(request, now()).code
}

#[test]
fn valid_token_answers_with_its_key_slot_and_id() {
    let index = Index::default();
    let t = token("ks_");
    let applied = index.apply(&apikey("k", simple_spec(), &[("main", &t)]), now());
    assert_eq!((applied.tokens, applied.skipped), (1, 0));
    assert_eq!(index.tokens(), 1);
    let verdict = index.verify(&request(t.expose_secret()), now());
    assert_eq!(verdict.code, Code::Valid);
    let found = verdict.found.unwrap();
    assert_eq!(found.key.identity, "ns/k");
    assert_eq!(found.slot_name(), "main");
    assert_eq!(&*found.id, t.id());
    assert_eq!(verdict.token_id, Some(t.id()));
}

#[test]
fn malformed_before_any_lookup() {
    let index = Index::default();
    let t = token("ks_");
    index.apply(&apikey("k", simple_spec(), &[("main", &t)]), now());
    let mut typo = t.expose_secret().to_owned();
    let last = typo.pop().unwrap();
    typo.push(if last == 'a' { 'b' } else { 'a' });
    for bad in ["", "not a token", &typo, &t.expose_secret()[..20]] {
        let verdict = index.verify(&request(bad), now());
        assert_eq!(verdict.code, Code::Malformed, "{bad:?}");
        assert!(
            verdict.token_id.is_none(),
            "no id is read from a malformed string"
        );
    }
}

#[test]
fn unknown_well_formed_token_is_not_found() {
    let index = Index::default();
    let t = token("ks_");
    let verdict = index.verify(&request(t.expose_secret()), now());
    assert_eq!(verdict.code, Code::NotFound);
    assert_eq!(verdict.token_id, Some(t.id()));
}

#[test]
fn deletion_timestamp_revokes_then_tombstone_expires_to_not_found() {
    let index = Index::default();
    let t = token("ks_");
    let mut key = apikey("k", simple_spec(), &[("main", &t)]);
    index.apply(&key, now());
    key.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    index.apply(&key, now());
    assert_eq!(code(&index, &request(t.expose_secret())), Code::Revoked);
    assert_eq!(index.tokens(), 0);

    // A key first seen while being deleted is revoked too.
    let late = token("ks_");
    let mut deleting = apikey("late", simple_spec(), &[("main", &late)]);
    deleting.metadata.deletion_timestamp = key.metadata.deletion_timestamp.clone();
    assert_eq!(index.apply(&deleting, now()).tokens, 0);
    assert_eq!(code(&index, &request(late.expose_secret())), Code::Revoked);

    // A later revocation prunes tombstones older than the TTL.
    let other = token("ks_");
    index.apply(&apikey("other", simple_spec(), &[("main", &other)]), now());
    index.revoke(
        "ns",
        "other",
        now() + TOMBSTONE_TTL + SignedDuration::from_secs(1),
    );
    assert_eq!(code(&index, &request(t.expose_secret())), Code::NotFound);
    assert_eq!(code(&index, &request(other.expose_secret())), Code::Revoked);
}

#[test]
fn relist_revokes_keys_deleted_while_the_watch_was_down() {
    let index = Index::default();
    let (a, b) = (token("ks_"), token("ks_"));
    index.apply(&apikey("a", simple_spec(), &[("main", &a)]), now());
    index.apply(&apikey("b", simple_spec(), &[("main", &b)]), now());
    index.retain(&HashSet::from([("ns".to_owned(), "a".to_owned())]), now());
    assert_eq!(code(&index, &request(a.expose_secret())), Code::Valid);
    assert_eq!(code(&index, &request(b.expose_secret())), Code::Revoked);
    assert_eq!(index.tokens(), 1);
}

#[test]
fn rotation_overlap_keeps_the_previous_token_until_valid_until() {
    let index = Index::default();
    let (old, new) = (token("ks_"), token("ks_"));
    let mut key = apikey("k", simple_spec(), &[("main", &new)]);
    let valid_until = now() + SignedDuration::from_hours(1);
    key.status.as_mut().unwrap().tokens[0].previous = Some(crate::api::PreviousToken {
        id: old.id().into(),
        sha256: old.sha256_hex(),
        valid_until: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(valid_until),
        last_used_at: None,
        leak: None,
    });
    index.apply(&key, now());
    assert_eq!(index.tokens(), 2);
    let verdict = index.verify(&request(old.expose_secret()), now());
    assert_eq!(verdict.code, Code::Valid);
    assert_eq!(verdict.found.unwrap().expires_at, Some(valid_until));
    assert_eq!(
        index
            .verify(&request(old.expose_secret()), valid_until)
            .code,
        Code::Expired
    );
    assert_eq!(
        index
            .verify(&request(new.expose_secret()), valid_until)
            .code,
        Code::Valid
    );
    // The controller drops `previous` after the window: the old token is simply unknown.
    key.status.as_mut().unwrap().tokens[0].previous = None;
    index.apply(&key, now());
    assert_eq!(index.tokens(), 1);
    assert_eq!(code(&index, &request(old.expose_secret())), Code::NotFound);
}

#[test]
fn token_and_key_expiry() {
    let index = Index::default();
    let (t, u) = (token("ks_"), token("ks_"));
    let mut key = apikey("k", simple_spec(), &[("main", &t)]);
    key.status.as_mut().unwrap().tokens[0].expires_at =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    index.apply(&key, now());
    assert_eq!(code(&index, &request(t.expose_secret())), Code::Expired);

    let spec = json!({"tokens": [{"name": "main"}], "expiresAt": "2026-11-23T09:00:00Z"});
    index.apply(&apikey("u", spec, &[("main", &u)]), now());
    assert_eq!(code(&index, &request(u.expose_secret())), Code::Expired);
}

#[test]
fn disabled_and_environment() {
    let index = Index::default();
    let t = token("ks_");
    let spec = json!({"tokens": [{"name": "main"}], "environment": "production", "disabled": true});
    index.apply(&apikey("k", spec, &[("main", &t)]), now());
    assert_eq!(code(&index, &request(t.expose_secret())), Code::Disabled);

    let spec = json!({"tokens": [{"name": "main"}], "environment": "production"});
    index.apply(&apikey("k", spec, &[("main", &t)]), now());
    let mut req = request(t.expose_secret());
    assert_eq!(code(&index, &req), Code::Valid, "no environment asked: any");
    req.environment = Some("production");
    assert_eq!(code(&index, &req), Code::Valid);
    req.environment = Some("staging");
    assert_eq!(code(&index, &req), Code::EnvironmentMismatch);
}

#[test]
fn ip_allow_list() {
    let index = Index::default();
    let t = token("ks_");
    let spec = json!({"tokens": [{"name": "main"}],
        "restrictions": {"ipAllowList": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]}});
    index.apply(&apikey("k", spec, &[("main", &t)]), now());
    let mut req = request(t.expose_secret());
    assert_eq!(code(&index, &req), Code::IpNotAllowed, "unknown address");
    for (ip, expected) in [
        ("10.1.2.3", Code::Valid),
        ("::ffff:10.1.2.3", Code::Valid),
        ("2001:db8::1", Code::Valid),
        ("192.0.2.7", Code::Valid),
        ("192.0.2.8", Code::IpNotAllowed),
        ("11.0.0.1", Code::IpNotAllowed),
    ] {
        req.ip = Some(ip.parse::<IpAddr>().unwrap());
        assert_eq!(code(&index, &req), expected, "{ip}");
    }
}

#[test]
fn required_headers_literal_and_from_a_secret_by_its_published_hash() {
    let index = Index::default();
    let t = token("ks_");
    let spec = json!({"tokens": [{"name": "main"}], "restrictions": {"requiredHeaders": [
        {"name": "X-Client", "value": "site"},
        {"name": "X-Client-Secret", "valueFrom": {"secretKeyRef": {"name": "site-secret", "key": "value"}}},
    ]}});
    let published = |name: &str, key: &str| {
        json!([{"name": "X-Client-Secret", "secretKeyRef": {"name": name, "key": key},
            "sha256": crate::token::sha256_hex("s3cret")}])
    };
    let mut key = apikey("k", spec, &[("main", &t)]);
    let with_hash = |key: &mut ApiKey, hashes: Value| {
        key.status.as_mut().unwrap().required_headers = serde_json::from_value(hashes).unwrap();
    };
    with_hash(&mut key, published("site-secret", "value"));
    index.apply(&key, now());
    let cases = [
        (vec![], Code::HeaderMismatch),
        (vec![("x-client", "site")], Code::HeaderMismatch),
        (
            vec![("x-client", "site"), ("x-client-secret", "nope")],
            Code::HeaderMismatch,
        ),
        (
            vec![("x-client", "other"), ("x-client-secret", "s3cret")],
            Code::HeaderMismatch,
        ),
        (
            vec![("X-Client", "site"), ("X-Client-Secret", "s3cret")],
            Code::Valid,
        ),
    ];
    for (headers, expected) in cases {
        let headers = Headers(headers);
        let mut req = request(t.expose_secret());
        req.headers = &headers;
        assert_eq!(code(&index, &req), expected, "{:?}", headers.0);
    }
    let headers = Headers(vec![("x-client", "site"), ("x-client-secret", "s3cret")]);
    let mut req = request(t.expose_secret());
    req.headers = &headers;
    // Fail closed: no hash published (Secret missing, or not read yet), or a hash read from
    // another key than the spec names now.
    for hashes in [
        json!([]),
        published("site-secret", "old"),
        published("other", "value"),
    ] {
        with_hash(&mut key, hashes.clone());
        index.apply(&key, now());
        assert_eq!(code(&index, &req), Code::HeaderMismatch, "{hashes}");
    }
}

fn grants_spec() -> Value {
    json!({"tokens": [{"name": "main"}, {"name": "reader", "grants": [
    {"effect": "allow", "actions": ["content.read"]}]}],
    "grants": [
        {"effect": "allow", "actions": ["content.*"], "resources": ["content:pages:*"]},
        {"effect": "deny", "actions": ["content.delete"], "resources": ["content:pages:home"]},
        {"effect": "allow", "actions": ["content.update"], "conditions": {"own": true}},
    ]})
}

#[test]
fn grants_allow_deny_overrides_and_own() {
    let index = Index::default();
    let (main, reader) = (token("ks_"), token("ks_"));
    index.apply(
        &apikey("k", grants_spec(), &[("main", &main), ("reader", &reader)]),
        now(),
    );
    let ask = |t: &Token, action, resource, owner| {
        let mut req = request(t.expose_secret());
        req.action = Some(action);
        req.resource = resource;
        req.context.owner = owner;
        code(&index, &req)
    };
    assert_eq!(
        code(&index, &request(main.expose_secret())),
        Code::Valid,
        "no action: authn only"
    );
    assert_eq!(
        ask(&main, "content.delete", Some("content:pages:about"), None),
        Code::Valid
    );
    assert_eq!(
        ask(&main, "content.delete", Some("content:pages:home"), None),
        Code::Forbidden,
        "deny overrides allow"
    );
    assert_eq!(
        ask(&main, "users.read", Some("content:pages:about"), None),
        Code::Forbidden
    );
    assert_eq!(
        ask(&main, "content.update", Some("posts:1"), Some("ns/k")),
        Code::Valid
    );
    assert_eq!(
        ask(&main, "content.update", Some("posts:1"), Some("ns/x")),
        Code::Forbidden
    );
    // The slot's own grants replace the key's.
    assert_eq!(
        ask(&reader, "content.read", Some("anything"), None),
        Code::Valid
    );
    assert_eq!(
        ask(&reader, "content.delete", Some("content:pages:about"), None),
        Code::Forbidden
    );
}

#[test]
fn invalid_spec_authenticates_only_and_fails_closed() {
    let index = Index::default();
    let t = token("ks_");
    let spec = json!({"tokens": [{"name": "main"}],
        "grants": [{"effect": "allow", "actions": ["*"]}],
        "expiresAfter": "forever",
        "restrictions": {"ipAllowList": ["not-a-cidr", "10.0.0.0/8"]}});
    let applied = index.apply(&apikey("k", spec, &[("main", &t)]), now());
    assert!(applied.invalid.is_some());
    let mut req = request(t.expose_secret());
    req.ip = Some("10.0.0.1".parse().unwrap());
    assert_eq!(code(&index, &req), Code::Valid);
    req.action = Some("content.read");
    assert_eq!(
        code(&index, &req),
        Code::Forbidden,
        "no grants while invalid"
    );
    req.action = None;
    req.ip = Some("192.168.0.1".parse().unwrap());
    assert_eq!(
        code(&index, &req),
        Code::IpNotAllowed,
        "the valid entries still restrict"
    );

    let spec = json!({"tokens": [{"name": "main"}], "expiresAt": "next year"});
    index.apply(&apikey("k", spec, &[("main", &t)]), now());
    assert_eq!(code(&index, &request(t.expose_secret())), Code::Expired);
}

#[test]
fn a_rejected_edit_is_served_from_the_last_accepted_policy() {
    let index = Index::default();
    let t = token("ks_");
    let accepted = json!({"tokens": [{"name": "main", "metadata": {"tier": "gold"}}],
        "environment": "production",
        "grants": [{"effect": "allow", "actions": ["content.read"]}]});
    let mut key = apikey("k", accepted, &[("main", &t)]);
    let status = key.status.as_mut().unwrap();
    status.served_generation = Some(3);
    status.served_policy = Some(crate::served::policy_of(&key.spec));
    // The edit widens the grants and breaks a rotation rule: it is rejected, nothing changes.
    key.spec.grants[0].actions = vec!["*".into()];
    key.spec.rotation = Some(crate::api::Rotation {
        every: Some("1000w".into()),
        ..Default::default()
    });
    let applied = index.apply(&key, now());
    assert!(applied.invalid.is_some(), "the rejection is still reported");
    let ask = |action| {
        let mut req = request(t.expose_secret());
        req.action = Some(action);
        index.verify(&req, now())
    };
    let read = ask("content.read");
    assert_eq!(read.code, Code::Valid, "the accepted grants are served");
    let found = read.found.unwrap();
    assert_eq!(found.key.environment.as_deref(), Some("production"));
    assert_eq!(found.key.slots[0].metadata.entries().len(), 1);
    assert_eq!(
        ask("content.delete").code,
        Code::Forbidden,
        "not the rejected ones"
    );

    // Suspending only takes access away: it applies from a rejected spec too.
    key.spec.disabled = true;
    index.apply(&key, now());
    assert_eq!(ask("content.read").code, Code::Disabled);
}

#[test]
fn every_replaced_token_verifies_until_its_own_window_ends() {
    let index = Index::default();
    let (current, previous, earlier) = (token("ks_"), token("ks_"), token("ks_"));
    let mut key = apikey("k", simple_spec(), &[("main", &current)]);
    let replaced = |t: &Token, hours| crate::api::PreviousToken {
        id: t.id().into(),
        sha256: t.sha256_hex(),
        valid_until: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            now() + SignedDuration::from_hours(hours),
        ),
        last_used_at: None,
        leak: None,
    };
    let status = &mut key.status.as_mut().unwrap().tokens[0];
    status.previous = Some(replaced(&previous, 2));
    status.earlier = vec![replaced(&earlier, 1)];
    index.apply(&key, now());
    assert_eq!(index.tokens(), 3);
    let at = |t: &Token, hours| {
        index
            .verify(
                &request(t.expose_secret()),
                now() + SignedDuration::from_hours(hours),
            )
            .code
    };
    assert_eq!(at(&earlier, 0), Code::Valid);
    assert_eq!(at(&earlier, 1), Code::Expired);
    assert_eq!(at(&previous, 1), Code::Valid);
    assert_eq!(at(&previous, 2), Code::Expired);
    let found = |t: &Token| {
        index
            .verify(&request(t.expose_secret()), now())
            .found
            .unwrap()
    };
    assert_eq!(found(&current).replaced, None);
    assert_eq!(found(&previous).replaced, Some(0));
    assert_eq!(found(&earlier).replaced, Some(1));
    assert_eq!(found(&earlier).hash.to_hex(), earlier.sha256_hex());
}

#[test]
fn status_for_unknown_slots_and_bad_hashes_is_skipped() {
    let index = Index::default();
    let (t, u) = (token("ks_"), token("ks_"));
    let mut key = apikey("k", simple_spec(), &[("main", &t), ("gone", &u)]);
    key.status.as_mut().unwrap().tokens[0].sha256 = "zz".into();
    let applied = index.apply(&key, now());
    assert_eq!((applied.tokens, applied.skipped), (0, 2));
    assert_eq!(code(&index, &request(u.expose_secret())), Code::NotFound);
}

#[test]
fn reapply_replaces_tokens_and_keeps_usage_marks() {
    let index = Index::default();
    let (t, u) = (token("ks_"), token("ks_"));
    index.apply(&apikey("k", simple_spec(), &[("main", &t)]), now());
    let first = index
        .verify(&request(t.expose_secret()), now())
        .found
        .unwrap();
    assert!(first.usage.claim(now()));
    index.apply(&apikey("k", simple_spec(), &[("main", &t)]), now());
    let again = index
        .verify(&request(t.expose_secret()), now())
        .found
        .unwrap();
    assert!(
        !again.usage.claim(now()),
        "re-indexing (our own status write) must not reset it"
    );

    index.apply(&apikey("k", simple_spec(), &[("main", &u)]), now());
    assert_eq!(index.tokens(), 1);
    assert_eq!(code(&index, &request(t.expose_secret())), Code::NotFound);
    assert_eq!(code(&index, &request(u.expose_secret())), Code::Valid);
}

#[test]
fn every_check_precedes_the_next() {
    // One key failing everything at once answers with the earliest check.
    let index = Index::default();
    let t = token("ks_");
    let spec = json!({"tokens": [{"name": "main"}], "environment": "production",
        "expiresAt": "2026-01-01T00:00:00Z", "disabled": true,
        "restrictions": {"ipAllowList": ["10.0.0.0/8"], "requiredHeaders": [{"name": "x", "value": "y"}]}});
    let mut key = apikey("k", spec, &[("main", &t)]);
    let mut req = request(t.expose_secret());
    req.environment = Some("staging");
    req.action = Some("anything");
    let steps = [
        Code::Expired,
        Code::Disabled,
        Code::EnvironmentMismatch,
        Code::IpNotAllowed,
        Code::HeaderMismatch,
        Code::Forbidden,
    ];
    for expected in steps {
        index.apply(&key, now());
        assert_eq!(code(&index, &req), expected);
        let spec = &mut key.spec;
        match expected {
            Code::Expired => spec.expires_at = None,
            Code::Disabled => spec.disabled = false,
            Code::EnvironmentMismatch => req.environment = Some("production"),
            Code::IpNotAllowed => req.ip = Some("10.0.0.1".parse().unwrap()),
            Code::HeaderMismatch => spec.restrictions = None,
            _ => req.action = None,
        }
    }
    index.apply(&key, now());
    assert_eq!(code(&index, &req), Code::Valid);
}

#[test]
fn hex_hashes_round_trip() {
    let t = token("ks_");
    assert_eq!(
        TokenHash::from_hex(&t.sha256_hex()),
        Some(TokenHash::of(t.expose_secret()))
    );
    assert_eq!(
        TokenHash::from_hex(&t.sha256_hex().to_uppercase()),
        Some(TokenHash::of(t.expose_secret()))
    );
    assert_eq!(TokenHash::from_hex("abc"), None);
    assert_eq!(TokenHash::from_hex(&"g".repeat(64)), None);
}

#[test]
fn codes_have_their_wire_names_and_classes() {
    let names: Vec<_> = Code::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        names,
        [
            "VALID",
            "MALFORMED",
            "NOT_FOUND",
            "EXPIRED",
            "REVOKED",
            "DISABLED",
            "FORBIDDEN",
            "IP_NOT_ALLOWED",
            "HEADER_MISMATCH",
            "ENVIRONMENT_MISMATCH"
        ]
    );
    for (i, c) in Code::ALL.iter().enumerate() {
        assert_eq!(c.index(), i);
    }
    let unauthenticated: Vec<_> = Code::ALL
        .iter()
        .filter(|c| c.is_unauthenticated())
        .collect();
    assert_eq!(
        unauthenticated,
        [
            &Code::Malformed,
            &Code::NotFound,
            &Code::Expired,
            &Code::Revoked,
            &Code::Disabled
        ]
    );
}

#[test]
fn identical_grant_sets_are_compiled_once() {
    let index = Index::default();
    let (a, b, c) = (token("ks_"), token("ks_"), token("ks_"));
    let ka = index
        .apply(&apikey("a", grants_spec(), &[("main", &a)]), now())
        .key;
    let kb = index
        .apply(&apikey("b", grants_spec(), &[("main", &b)]), now())
        .key;
    assert!(Arc::ptr_eq(&ka.slots[0].grants, &kb.slots[0].grants));
    assert!(
        !Arc::ptr_eq(&ka.slots[0].grants, &ka.slots[1].grants),
        "the slot's own grants differ"
    );
    let kc = index
        .apply(&apikey("c", simple_spec(), &[("main", &c)]), now())
        .key;
    assert!(!Arc::ptr_eq(&ka.slots[0].grants, &kc.slots[0].grants));
}

#[test]
fn sets_that_differ_in_one_grant_share_the_others() {
    let index = Index::default();
    let (a, b) = (token("ks_"), token("ks_"));
    let spec = |site: &str| {
        let mut spec = grants_spec();
        spec["grants"][0]["resources"] = json!([format!("content:{site}:*")]);
        spec
    };
    let grants = |name, token| {
        let applied = index.apply(&apikey(name, spec(name), &[("main", token)]), now());
        applied.key.slots[0].grants.clone()
    };
    let (ga, gb) = (grants("a", &a), grants("b", &b));
    assert!(!Arc::ptr_eq(&ga, &gb), "the sets differ");
    let shared: Vec<bool> = ga
        .grants()
        .zip(gb.grants())
        .map(|(x, y)| Arc::ptr_eq(x, y))
        .collect();
    // allows (grants 0 and 2), then the deny (grant 1)
    assert_eq!(shared, [false, true, true]);

    // Sharing changes no decision: each key reads its own first grant.
    let mut ask = request(a.expose_secret());
    ask.action = Some("content.read");
    ask.resource = Some("content:a:home");
    assert_eq!(code(&index, &ask), Code::Valid);
    ask.token = b.expose_secret();
    assert_eq!(code(&index, &ask), Code::Forbidden);
}

#[test]
fn a_leak_record_revokes_the_token_unless_the_key_only_reports_leaks() {
    for (response, expected) in [
        (None, Code::Revoked),
        (Some("revoke"), Code::Revoked),
        (Some("report"), Code::Valid),
    ] {
        let index = Index::default();
        let (leaked, other) = (token("ks_"), token("ks_"));
        let mut spec = json!({"tokens": [{"name": "main"}, {"name": "other"}]});
        if let Some(response) = response {
            spec["leakResponse"] = json!(response);
        }
        let mut key = apikey("k", spec, &[("main", &leaked), ("other", &other)]);
        key.status.as_mut().unwrap().tokens[0].leak = Some(crate::api::Leak {
            reported_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()),
            source: None,
            handled_at: None,
        });
        index.apply(&key, now());
        let verdict = index.verify(&request(leaked.expose_secret()), now());
        assert_eq!(verdict.code, expected, "{response:?}");
        assert!(verdict.found.unwrap().leaked);
        let verdict = index.verify(&request(other.expose_secret()), now());
        assert_eq!(verdict.code, Code::Valid);
        assert!(!verdict.found.unwrap().leaked);

        // Once the controller replaced it, a refused token answers REVOKED until its tombstone
        // goes, and a recorded one is simply gone.
        key.status.as_mut().unwrap().tokens.remove(0);
        index.apply(&key, now());
        let gone = index.verify(&request(leaked.expose_secret()), now()).code;
        let expected = if expected == Code::Revoked {
            Code::Revoked
        } else {
            Code::NotFound
        };
        assert_eq!(gone, expected, "{response:?}");
        index.apply(&key, now() + TOMBSTONE_TTL);
        assert_eq!(
            code(&index, &request(leaked.expose_secret())),
            Code::NotFound
        );
    }
}
