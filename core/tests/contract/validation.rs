//! Table tests for every rule of spec validation (SPEC section 8).

use std::time::Duration;

use keysmith_core::api::ApiKeySpec;
use keysmith_core::validation::{Cadence, validate};

fn spec(yaml: &str) -> ApiKeySpec {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("test spec does not parse: {e}\n{yaml}"))
}

/// Each case: a spec, the field the error must name, and a fragment of the message.
const INVALID: &[(&str, &str, &str)] = &[
    ("tokens: []", "spec.tokens", "use 1 to 8"),
    (
        "tokens: [{name: a}, {name: b}, {name: c}, {name: d}, {name: e}, {name: f}, {name: g}, {name: h}, {name: i}]",
        "spec.tokens",
        "has 9 slots",
    ),
    (
        "tokens: [{name: Delivery}]",
        "spec.tokens[0].name",
        "not a DNS label",
    ),
    (
        "tokens: [{name: a}, {name: a}]",
        "spec.tokens[1].name",
        "must be unique",
    ),
    (
        "tokens: [{name: abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefgh}]",
        "spec.tokens[0].name",
        "at most 56",
    ),
    (
        "tokens: [{name: a, prefix: my-org_}]",
        "spec.tokens[0].prefix",
        "(no '-')",
    ),
    (
        "tokens: [{name: a, prefix: abcdefghijabcdefghijabcdefghijabc}]",
        "spec.tokens[0].prefix",
        "at most 32",
    ),
    (
        "tokens: [{name: a, prefix: \"ünï_\"}]",
        "spec.tokens[0].prefix",
        "not a valid prefix",
    ),
    (
        "tokens: [{name: a, bytes: 8}]",
        "spec.tokens[0].bytes",
        "use 16 to 64",
    ),
    (
        "tokens: [{name: a, bytes: 65}]",
        "spec.tokens[0].bytes",
        "use 16 to 64",
    ),
    (
        "tokens: [{name: a, secretKey: \"has space\"}]",
        "spec.tokens[0].secretKey",
        "not a valid Secret key",
    ),
    (
        "tokens: [{name: a, secretKey: X}, {name: b, secretKey: X}]",
        "spec.tokens[1].secretKey",
        "another slot",
    ),
    (
        "tokens: [{name: x}, {name: b, secretKey: x}]",
        "spec.tokens[1].secretKey",
        "another slot",
    ),
    (
        "tokens: [{name: a, expiresAfter: 30s}]",
        "spec.tokens[0].expiresAfter",
        "must be between",
    ),
    (
        "tokens: [{name: a}]\nexpiresAfter: 6y",
        "spec.expiresAfter",
        "unknown unit",
    ),
    (
        "tokens: [{name: a}]\nexpiresAfter: 43801h",
        "spec.expiresAfter",
        "must be between",
    ),
    (
        "tokens: [{name: a}]\nexpiresAfter: soon",
        "spec.expiresAfter",
        "soon",
    ),
    (
        "tokens: [{name: a}]\nexpiresAt: next-tuesday",
        "spec.expiresAt",
        "RFC 3339",
    ),
    (
        "tokens: [{name: a}]\nenvironment: Prod_1",
        "spec.environment",
        "not a DNS label",
    ),
    (
        "tokens: [{name: a}]\nrotation: {every: 24h, overlap: 48h}",
        "spec.rotation.overlap",
        "shorter than the rotation interval (1d)",
    ),
    (
        "tokens: [{name: a}]\nrotation: {every: 24h, overlap: 24h}",
        "spec.rotation.overlap",
        "shorter",
    ),
    (
        "tokens: [{name: a}]\nrotation: {every: 1w, overlap: 8d}",
        "spec.rotation.overlap",
        "shorter",
    ),
    (
        "tokens: [{name: a}]\nrotation: {every: 30s}",
        "spec.rotation.every",
        "must be between",
    ),
    (
        "tokens: [{name: a}]\nrotation: {every: 24h, schedule: \"0 3 * * *\"}",
        "spec.rotation",
        "at most one",
    ),
    (
        "tokens: [{name: a}]\nrotation: {every: 24h, timeZone: Europe/Berlin}",
        "spec.rotation.timeZone",
        "only applies",
    ),
    (
        "tokens: [{name: a}]\nrotation: {schedule: \"61 3 * * *\"}",
        "spec.rotation.schedule",
        "",
    ),
    (
        "tokens: [{name: a}]\nrotation: {schedule: \"0 3 * * MON\", timeZone: Mars/Olympus}",
        "spec.rotation.timeZone",
        "Mars/Olympus",
    ),
    (
        "tokens: [{name: a}]\nrotation: {schedule: \"0 3 * * *\", overlap: 25h}",
        "spec.rotation.overlap",
        "shorter",
    ),
    (
        "tokens: [{name: a}]\nexpiresAfter: 24h\nrotation: {renewBefore: 24h}",
        "spec.rotation.renewBefore",
        "shorter than the token lifetime",
    ),
    (
        "tokens: [{name: a, expiresAfter: 1h}]\nexpiresAfter: 90d\nrotation: {renewBefore: 2h}",
        "spec.rotation.renewBefore",
        "slot \"a\"",
    ),
    (
        "tokens: [{name: a}]\nrotation: {renewBefore: 2h}",
        "spec.rotation.renewBefore",
        "without a token lifetime",
    ),
    (
        "tokens: [{name: a}]\nrestrictions: {ipAllowList: [10.0.0.0/33]}",
        "spec.restrictions.ipAllowList[0]",
        "not a CIDR",
    ),
    (
        "tokens: [{name: a}]\nrestrictions: {ipAllowList: [10.0.0.0/8, not-an-ip]}",
        "spec.restrictions.ipAllowList[1]",
        "not a CIDR",
    ),
    (
        "tokens: [{name: a}]\nrestrictions: {requiredHeaders: [{name: X-A}]}",
        "spec.restrictions.requiredHeaders[0]",
        "exactly one of value and valueFrom",
    ),
    (
        "tokens: [{name: a}]\nrestrictions: {requiredHeaders: [{name: X-A, value: v, valueFrom: {secretKeyRef: {name: s, key: k}}}]}",
        "spec.restrictions.requiredHeaders[0]",
        "exactly one",
    ),
    (
        "tokens: [{name: a}]\nrestrictions: {requiredHeaders: [{name: \"X A\", value: v}]}",
        "spec.restrictions.requiredHeaders[0].name",
        "header name",
    ),
    (
        "tokens: [{name: a}]\nrestrictions: {requiredHeaders: [{name: X-A, value: v}, {name: x-a, value: w}]}",
        "spec.restrictions.requiredHeaders[1].name",
        "required twice",
    ),
    (
        "tokens: [{name: a}]\nsecret: {name: Bad_Name}",
        "spec.secret.name",
        "not a valid Secret name",
    ),
    (
        "tokens: [{name: a}]\nsecret: {type: kubernetes.io/tls}",
        "spec.secret.type",
        "use Opaque",
    ),
    (
        "tokens: [{name: a}]\nsecret: {template: {labels: {keysmith.dev/apikey: other}}}",
        "spec.secret.template.labels[keysmith.dev/apikey]",
        "set by Keysmith",
    ),
    (
        "tokens: [{name: a}]\nsecret: {template: {labels: {konghq.com/credential: key-auth}}}",
        "spec.secret.template.labels[konghq.com/credential]",
        "read by a gateway",
    ),
    (
        "tokens: [{name: a}]\nsecret: {template: {annotations: {configuration.konghq.com/plugins: x}}}",
        "spec.secret.template.annotations[configuration.konghq.com/plugins]",
        "read by a gateway",
    ),
    (
        "tokens: [{name: a}]\nsecret: {template: {labels: {gateway.envoyproxy.io/owning-gateway-name: eg}}}",
        "spec.secret.template.labels[gateway.envoyproxy.io/owning-gateway-name]",
        "read by a gateway",
    ),
    (
        "tokens: [{name: a}]\nsecret: {restartTargets: [{kind: Deployment, name: Web_1}]}",
        "spec.secret.restartTargets[0].name",
        "not a valid Deployment name",
    ),
    (
        "tokens: [{name: a}]\ngrants: [{effect: allow, actions: [\"\"]}]",
        "spec.grants[0].actions",
        "",
    ),
    (
        "tokens: [{name: a}]\ngrants: [{effect: allow, actions: [a0,a1,a2,a3,a4,a5,a6,a7,a8,a9,a10,a11,a12,a13,a14,a15,a16,a17,a18,a19,a20,a21,a22,a23,a24,a25,a26,a27,a28,a29,a30,a31,a32,a33,a34,a35,a36,a37,a38,a39,a40,a41,a42,a43,a44,a45,a46,a47,a48,a49,a50,a51,a52,a53,a54,a55,a56,a57,a58,a59,a60,a61,a62,a63,a64]}]",
        "spec.grants[0].actions",
        "has 65 entries; at most 64",
    ),
    (
        "tokens: [{name: a, grants: [{effect: allow, actions: [read], resources: [\"bad pattern\"]}]}]",
        "spec.tokens[0].grants[0].resources",
        "",
    ),
    (
        "tokens: [{name: a}]\naccess: {groups: [\"system:authenticated\"]}",
        "spec.access.groups[0]",
        "stands for everyone",
    ),
    (
        "tokens: [{name: a}]\naccess: {users: [\"system:anonymous\"]}",
        "spec.access.users[0]",
        "stands for everyone",
    ),
    (
        "tokens: [{name: a}]\naccess: {users: [\" alice\"]}",
        "spec.access.users[0]",
        "leading or trailing spaces",
    ),
    (
        "tokens: [{name: a}]\naccess: {users: [\"\"]}",
        "spec.access.users[0]",
        "empty",
    ),
    (
        "tokens: [{name: a}]\naccess: {serviceAccounts: [{name: Deployer}]}",
        "spec.access.serviceAccounts[0].name",
        "not a valid ServiceAccount name",
    ),
    (
        "tokens: [{name: a}]\naccess: {serviceAccounts: [{name: deployer, namespace: ci.prod}]}",
        "spec.access.serviceAccounts[0].namespace",
        "not a DNS label",
    ),
];

#[test]
fn every_invalid_spec_names_its_field() {
    let mut failures = Vec::new();
    for (yaml, field, fragment) in INVALID {
        match validate(&spec(yaml)) {
            Ok(_) => failures.push(format!("accepted: {yaml}")),
            Err(e) => {
                let hit =
                    e.0.iter()
                        .any(|fe| fe.field.starts_with(field) && fe.message.contains(fragment));
                if !hit {
                    failures.push(format!("{yaml}\n  wanted {field}: …{fragment}…\n  got {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn template_keys_near_the_gateway_domains_but_outside_them_are_accepted() {
    for key in [
        "team",
        "example.com/konghq.com",
        "notkonghq.com/credential",
        "konghq.company/credential",
        "envoyproxy.io.example.com/x",
    ] {
        let yaml = format!(
            "tokens: [{{name: a}}]\nsecret: {{template: {{labels: {{{key}: v}}, annotations: {{{key}: v}}}}}}"
        );
        assert!(validate(&spec(&yaml)).is_ok(), "{key}");
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let err = validate(&spec(
        "tokens: [{name: a, prefix: my-org, bytes: 8}]\nrotation: {every: 24h, overlap: 48h}\nrestrictions: {ipAllowList: [nope]}",
    ))
    .unwrap_err();
    let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
    for f in [
        "spec.tokens[0].prefix",
        "spec.tokens[0].bytes",
        "spec.rotation.overlap",
        "spec.restrictions.ipAllowList[0]",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
}

#[test]
fn the_spec_example_is_valid_and_parsed() {
    let valid = validate(&spec(
        r#"
description: "Marketing site, production"
environment: production
tokens:
  - name: delivery
    prefix: myorg_dt_
    bytes: 32
    encoding: base62
    secretKey: ALOKAI_CMS_DELIVERY_TOKEN
    expiresAfter: 8760h
    metadata: { content: published }
  - name: preview
    prefix: myorg_pt_
    secretKey: ALOKAI_CMS_PREVIEW_TOKEN
grants:
  - effect: allow
    actions: ["content.read"]
    resources: ["content:pages:*"]
    fields: ["hero_title"]
    conditions: { status: ["draft"], locales: ["en", "de"], own: true }
expiresAfter: 8760h
expiresAt: "2027-06-30T00:00:00Z"
rotation:
  schedule: "0 3 * * MON"
  timeZone: Europe/Berlin
  renewBefore: 720h
  overlap: 24h
  trigger: "2026-11-22"
restrictions:
  ipAllowList: ["10.0.0.0/8", "2001:db8::/32", "192.168.1.7"]
  requiredHeaders:
    - name: X-Client-Secret
      valueFrom: { secretKeyRef: { name: site-secret, key: value } }
secret:
  name: marketing-site-token
  restartTargets: [{ kind: Deployment, name: marketing-site }]
"#,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(valid.slots.len(), 2);
    assert_eq!(valid.slots[0].secret_key, "ALOKAI_CMS_DELIVERY_TOKEN");
    assert_eq!(valid.slots[1].prefix, "myorg_pt_");
    assert_eq!(valid.slots[1].bytes, 32);
    assert_eq!(
        valid.slots[0].lifetime,
        Some(Duration::from_secs(8760 * 3600))
    );
    assert_eq!(
        valid.slots[0].renew_before,
        Some(Duration::from_secs(720 * 3600))
    );
    assert_eq!(valid.rotation.overlap, Duration::from_secs(24 * 3600));
    assert!(matches!(valid.rotation.cadence, Some(Cadence::Schedule(_))));
    assert_eq!(valid.ip_allow_list.len(), 3);
    assert_eq!(
        valid.expires_at.unwrap().to_string(),
        "2027-06-30T00:00:00Z"
    );
}

#[test]
fn defaults_are_applied() {
    let valid = validate(&spec(
        "tokens: [{name: api}]\nexpiresAfter: 90d\nrotation: {every: 30m}",
    ))
    .unwrap();
    let slot = &valid.slots[0];
    assert_eq!(
        (slot.prefix.as_str(), slot.bytes, slot.secret_key.as_str()),
        ("ks_", 32, "api")
    );
    // renewBefore defaults to a third of the lifetime; overlap to 1h capped at half the interval.
    assert_eq!(slot.renew_before, Some(Duration::from_secs(30 * 86400)));
    assert_eq!(valid.rotation.overlap, Duration::from_secs(15 * 60));
    let no_rotation = validate(&spec("tokens: [{name: api}]")).unwrap();
    assert_eq!(no_rotation.rotation.overlap, Duration::from_secs(3600));
    assert_eq!(no_rotation.slots[0].lifetime, None);
    // A lifetime without any rotation settings runs to expiry: no renewal.
    let expiring = validate(&spec(
        "tokens: [{name: api}]\nexpiresAfter: 8760h\nrotation: {trigger: v1}",
    ))
    .unwrap();
    assert_eq!(
        expiring.slots[0].lifetime,
        Some(Duration::from_secs(8760 * 3600))
    );
    assert_eq!(expiring.slots[0].renew_before, None);
}

#[test]
fn overlap_zero_means_at_once() {
    let valid = validate(&spec(
        "tokens: [{name: a}]\nrotation: {every: 24h, overlap: \"0\"}",
    ))
    .unwrap();
    assert_eq!(valid.rotation.overlap, Duration::ZERO);
}

mod properties {
    use keysmith_core::api::{ApiKeySpec, Restrictions, Rotation, TokenSlot};
    use keysmith_core::validation::{Cadence, validate};
    use proptest::prelude::*;

    fn duration_like() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(prop_oneof![
            "[0-9]{1,4}(ns|us|ms|s|m|h|d|w)",
            "[0-9]{1,3}h[0-9]{1,2}m",
            "0",
            ".{0,12}",
        ])
    }

    prop_compose! {
        fn spec()(
            names in proptest::collection::vec("[a-z][a-z0-9-]{0,8}|.{0,6}", 0..10),
            prefix in proptest::option::of("[A-Za-z0-9_-]{0,40}"),
            bytes in proptest::option::of(0u32..100),
            expires_after in duration_like(),
            every in duration_like(),
            overlap in duration_like(),
            renew_before in duration_like(),
            schedule in proptest::option::of(prop_oneof!["[0-9*/,-]{1,4} [0-9*]{1,2} \\* \\* [A-Z*]{1,3}", ".{0,20}"]),
            cidrs in proptest::collection::vec("[0-9./:a-f]{0,20}", 0..3),
        ) -> ApiKeySpec {
            ApiKeySpec {
                tokens: names.into_iter().map(|name| TokenSlot { name, prefix: prefix.clone(), bytes, ..Default::default() }).collect(),
                expires_after,
                rotation: Some(Rotation { every, schedule, overlap, renew_before, ..Default::default() }),
                restrictions: Some(Restrictions { ip_allow_list: cidrs, ..Default::default() }),
                ..Default::default()
            }
        }
    }

    proptest! {
        /// Whatever the input, validation answers; what it accepts satisfies the cross-field rules.
        #[test]
        fn accepted_specs_satisfy_the_rules(spec in spec()) {
            match validate(&spec) {
                Ok(valid) => {
                    prop_assert!((1..=8).contains(&valid.slots.len()));
                    let interval = valid.rotation.cadence.as_ref().map(|c| match c {
                        Cadence::Every(d) => *d,
                        Cadence::Schedule(s) => s.shortest_interval(),
                    });
                    if let Some(interval) = interval {
                        prop_assert!(valid.rotation.overlap < interval);
                    }
                    for slot in &valid.slots {
                        if let (Some(renew), Some(life)) = (slot.renew_before, slot.lifetime) {
                            prop_assert!(renew < life);
                        }
                    }
                }
                Err(invalid) => {
                    prop_assert!(!invalid.0.is_empty());
                    prop_assert!(invalid.0.iter().all(|e| e.field.starts_with("spec.") && !e.message.is_empty()));
                }
            }
        }
    }
}

/// A spec from JSON, for the bounds too large to write out.
fn json_spec(value: serde_json::Value) -> ApiKeySpec {
    serde_json::from_value(value).expect("a spec")
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("k{i}")).collect()
}

fn map(n: usize, value: &str) -> serde_json::Map<String, serde_json::Value> {
    names(n).into_iter().map(|k| (k, value.into())).collect()
}

#[test]
fn every_list_map_and_string_is_bounded_naming_the_field() {
    use serde_json::json;
    let long = |n: usize| "x".repeat(n);
    let grant = |extra: serde_json::Value| {
        let mut g = json!({"effect": "allow", "actions": ["read"]});
        g.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!([g])
    };
    let cases = [
        (
            json!({"tokens": [{"name": "a", "metadata": map(17, "v")}]}),
            "spec.tokens[0].metadata",
            "has 17 entries; at most 16",
        ),
        (
            json!({"tokens": [{"name": "a"}], "secret": {"template": {"labels": map(33, "v")}}}),
            "spec.secret.template.labels",
            "has 33 entries; at most 32",
        ),
        (
            json!({"tokens": [{"name": "a"}], "secret": {"template": {"annotations": map(33, "v")}}}),
            "spec.secret.template.annotations",
            "has 33 entries; at most 32",
        ),
        (
            json!({"tokens": [{"name": "a"}], "secret": {"template": {"labels": {"team": long(64)}}}}),
            "spec.secret.template.labels[team]",
            "at most 63",
        ),
        (
            json!({"tokens": [{"name": "a"}], "secret": {"template": {"annotations": {"note": long(4097)}}}}),
            "spec.secret.template.annotations[note]",
            "at most 4096",
        ),
        (
            json!({"tokens": [{"name": "a"}], "secret": {"template": {"annotations": {long(318): "v"}}}}),
            "spec.secret.template.annotations",
            "at most 317",
        ),
        (
            json!({"tokens": [{"name": "a"}], "grants": grant(json!({"fields": [long(257)]}))}),
            "spec.grants[0].fields[0]",
            "at most 256",
        ),
        (
            json!({"tokens": [{"name": "a"}], "grants": grant(json!({"fields": [""]}))}),
            "spec.grants[0].fields[0]",
            "empty",
        ),
        (
            json!({"tokens": [{"name": "a"}], "grants": grant(json!({"conditions": {"status": names(65)}}))}),
            "spec.grants[0].conditions.status",
            "has 65 entries; at most 64",
        ),
        (
            json!({"tokens": [{"name": "a"}], "grants": grant(json!({"conditions": {"locales": [long(65)]}}))}),
            "spec.grants[0].conditions.locales[0]",
            "at most 64",
        ),
        (
            json!({"tokens": [{"name": "a", "grants": grant(json!({"conditions": {"status": [long(65)]}}))}]}),
            "spec.tokens[0].grants[0].conditions.status[0]",
            "at most 64",
        ),
        (
            json!({"tokens": [{"name": "a"}], "restrictions": {"ipAllowList": vec!["10.0.0.1"; 257]}}),
            "spec.restrictions.ipAllowList",
            "has 257 entries; at most 256",
        ),
        (
            json!({"tokens": [{"name": "a"}], "restrictions": {"requiredHeaders": names(17).iter().map(|n| json!({"name": n, "value": "v"})).collect::<Vec<_>>()}}),
            "spec.restrictions.requiredHeaders",
            "has 17 entries; at most 16",
        ),
        (
            json!({"tokens": [{"name": "a"}], "restrictions": {"requiredHeaders": [{"name": "X-A", "value": long(4097)}]}}),
            "spec.restrictions.requiredHeaders[0].value",
            "at most 4096",
        ),
        (
            json!({"tokens": [{"name": "a"}], "secret": {"restartTargets": names(17).iter().map(|n| json!({"kind": "Deployment", "name": n})).collect::<Vec<_>>()}}),
            "spec.secret.restartTargets",
            "has 17 entries; at most 16",
        ),
        (
            json!({"tokens": [{"name": "a"}], "rotation": {"trigger": long(254)}}),
            "spec.rotation.trigger",
            "at most 253",
        ),
        (
            json!({"tokens": [{"name": "a"}], "rotation": {"schedule": long(257)}}),
            "spec.rotation.schedule",
            "at most 256",
        ),
        (
            json!({"tokens": [{"name": "a"}], "rotation": {"schedule": "0 3 * * *", "timeZone": long(65)}}),
            "spec.rotation.timeZone",
            "at most 64",
        ),
        (
            json!({"tokens": [{"name": "a"}], "expiresAt": long(65)}),
            "spec.expiresAt",
            "at most 64",
        ),
        (
            json!({"tokens": [{"name": "a"}], "access": {"users": names(33)}}),
            "spec.access.users",
            "has 33 entries; at most 32",
        ),
        (
            json!({"tokens": [{"name": "a"}], "access": {"groups": names(33)}}),
            "spec.access.groups",
            "has 33 entries; at most 32",
        ),
        (
            json!({"tokens": [{"name": "a"}], "access": {"serviceAccounts": names(33).iter().map(|n| json!({"name": n})).collect::<Vec<_>>()}}),
            "spec.access.serviceAccounts",
            "has 33 entries; at most 32",
        ),
        (
            json!({"tokens": [{"name": "a"}], "access": {"groups": [long(257)]}}),
            "spec.access.groups[0]",
            "at most 256",
        ),
        (
            json!({"tokens": [{"name": "a", "expiresAfter": "1s".repeat(33)}]}),
            "spec.tokens[0].expiresAfter",
            "at most 64",
        ),
    ];
    let mut failures = Vec::new();
    for (value, field, fragment) in cases {
        match validate(&json_spec(value)) {
            Ok(_) => failures.push(format!("accepted: {field}")),
            Err(e)
                if !e
                    .0
                    .iter()
                    .any(|fe| fe.field == field && fe.message.contains(fragment)) =>
            {
                let got: Vec<String> =
                    e.0.iter()
                        .map(|fe| fe.to_string().chars().take(160).collect())
                        .collect();
                failures.push(format!("wanted {field}: …{fragment}…\n  got {got:?}"));
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_whole_spec_is_bounded() {
    // Every entry within its own bounds, but 8 slots of 16 entries of 4 KiB are 512 KiB.
    let slots: Vec<_> = (0..8)
        .map(|i| serde_json::json!({"name": format!("s{i}"), "metadata": map(16, &"v".repeat(4096))}))
        .collect();
    let err = validate(&json_spec(serde_json::json!({"tokens": slots}))).unwrap_err();
    assert!(
        err.0
            .iter()
            .any(|fe| fe.field == "spec" && fe.message.contains("at most 262144 bytes")),
        "{err}"
    );
    // Half of that fits.
    let slots: Vec<_> = (0..4)
        .map(|i| serde_json::json!({"name": format!("s{i}"), "metadata": map(15, &"v".repeat(4096))}))
        .collect();
    assert!(validate(&json_spec(serde_json::json!({"tokens": slots}))).is_ok());
}
