//! End to end: every code of SPEC section 5 through `/v1/verify`, `/v1/authz` and the
//! TokenReview webhook, against a verifier that watches the API emulator as its ServiceAccount
//! under the chart's RBAC rules. Also: the response shapes, deny overriding allow, the IP
//! allow-list with and without trusted proxies, a header required from a Secret, usage
//! write-back, metrics, body limits, and an audit log that never holds a token.

use crate::harness::verifier::{
    Harness, NS, eventually, request, start, status_header, status_token, token,
};
use kube::api::DeleteParams;
use serde_json::{Value, json};

/// Keys for every code. Returns the tokens by name.
struct Fixture {
    main: String,
    expired: String,
    disabled: String,
    revoked: String,
    ip: String,
    header: String,
    unknown: String,
}

async fn fixture(h: &Harness) -> Fixture {
    let (main, expired, disabled, revoked, ip, header, unknown) = (
        token("shop_"),
        token("shop_"),
        token("shop_"),
        token("shop_"),
        token("shop_"),
        token("shop_"),
        token("shop_"),
    );
    h.create_key(
        "main",
        json!({"environment": "production",
            "tokens": [{"name": "delivery", "metadata": {"content": "published"}}],
            "grants": [
                {"effect": "allow", "actions": ["content.read", "content.delete"], "resources": ["content:pages:*"]},
                {"effect": "deny", "actions": ["content.delete"], "resources": ["content:pages:home"]}]}),
        &[],
        vec![status_token("delivery", &main)],
    )
    .await;
    let mut expired_status = status_token("main", &expired);
    expired_status["expiresAt"] = json!("2026-01-02T00:00:00Z");
    h.create_key(
        "expired",
        json!({"tokens": [{"name": "main"}]}),
        &[],
        vec![expired_status],
    )
    .await;
    h.create_key(
        "disabled",
        json!({"tokens": [{"name": "main"}], "disabled": true}),
        &[],
        vec![status_token("main", &disabled)],
    )
    .await;
    h.create_key(
        "revoked",
        json!({"tokens": [{"name": "main"}]}),
        &["keysmith.dev/revoke"],
        vec![status_token("main", &revoked)],
    )
    .await;
    h.create_key(
        "ip",
        json!({"tokens": [{"name": "main"}], "restrictions": {"ipAllowList": ["10.0.0.0/8"]}}),
        &[],
        vec![status_token("main", &ip)],
    )
    .await;
    h.create_key(
        "header",
        json!({"tokens": [{"name": "main"}], "restrictions": {"requiredHeaders": [
            {"name": "X-Client-Secret", "valueFrom": {"secretKeyRef": {"name": "site-secret", "key": "value"}}}]}}),
        &[],
        vec![status_token("main", &header)],
    )
    .await;
    h.apikeys()
        .delete("revoked", &DeleteParams::default())
        .await
        .unwrap();
    let f = Fixture {
        main: main.expose_secret().into(),
        expired: expired.expose_secret().into(),
        disabled: disabled.expose_secret().into(),
        revoked: revoked.expose_secret().into(),
        ip: ip.expose_secret().into(),
        header: header.expose_secret().into(),
        unknown: unknown.expose_secret().into(),
    };
    h.wait_for_code(&f.revoked, "REVOKED").await;
    // No hash published yet (the controller has not read the Secret): fail closed.
    h.wait_for_code(&f.header, "HEADER_MISMATCH").await;
    h.set_status_headers(
        "header",
        vec![status_header(
            "X-Client-Secret",
            "site-secret",
            "value",
            "s3cret",
        )],
    )
    .await;
    eventually(
        "the published hash of the required header to be indexed",
        || async {
            let answer = h
                .verify(json!({"token": f.header, "headers": {"x-client-secret": "s3cret"}}))
                .await;
            (answer["code"] == "VALID").then_some(())
        },
    )
    .await;
    f
}

fn malformed(t: &str) -> String {
    // Flip the last checksum character: the checksum no longer holds.
    let mut s = t.to_owned();
    let last = s.pop().unwrap();
    s.push(if last == '0' { '1' } else { '0' });
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_code_through_every_endpoint() {
    let h = start(&[]).await;
    let f = fixture(&h).await;
    let typo = malformed(&f.main);

    // POST /v1/verify
    let cases: Vec<(Value, &str)> = vec![
        (json!({"token": f.main}), "VALID"),
        (json!({"token": typo}), "MALFORMED"),
        (json!({"token": ""}), "MALFORMED"),
        (json!({"token": f.unknown}), "NOT_FOUND"),
        (json!({"token": f.expired}), "EXPIRED"),
        (json!({"token": f.revoked}), "REVOKED"),
        (json!({"token": f.disabled}), "DISABLED"),
        (
            json!({"token": f.main, "action": "users.read", "resource": "users:1"}),
            "FORBIDDEN",
        ),
        (json!({"token": f.ip}), "IP_NOT_ALLOWED"),
        (json!({"token": f.ip, "ip": "10.1.2.3"}), "VALID"),
        (
            json!({"token": f.header, "headers": {"X-Client-Secret": "wrong"}}),
            "HEADER_MISMATCH",
        ),
        (
            json!({"token": f.header, "headers": {"X-Client-Secret": "s3cret"}}),
            "VALID",
        ),
        (
            json!({"token": f.main, "environment": "staging"}),
            "ENVIRONMENT_MISMATCH",
        ),
        (
            json!({"token": f.main, "environment": "production"}),
            "VALID",
        ),
        // Deny overrides allow.
        (
            json!({"token": f.main, "action": "content.delete", "resource": "content:pages:about"}),
            "VALID",
        ),
        (
            json!({"token": f.main, "action": "content.delete", "resource": "content:pages:home"}),
            "FORBIDDEN",
        ),
    ];
    for (body, code) in &cases {
        let answer = h.verify(body.clone()).await;
        assert_eq!(answer["code"], *code, "{body}");
        assert_eq!(answer["valid"], *code == "VALID", "{body}");
    }

    let answer = h
        .verify(json!({"token": f.main, "action": "content.read", "resource": "content:pages:a"}))
        .await;
    assert_eq!(
        answer,
        json!({"valid": true, "code": "VALID",
            "key": {"namespace": NS, "name": "main", "token": "delivery", "id": &f.main[..11]},
            "environment": "production", "expiresAt": null,
            "metadata": {"content": "published"},
            "permissions": ["content.read", "content.delete"]})
    );
    let answer = h.verify(json!({"token": f.disabled})).await;
    assert_eq!(answer["key"]["name"], "disabled");
    assert_eq!(answer["metadata"], json!({}));
    assert!(answer.get("permissions").is_none());
    let answer = h.verify(json!({"token": f.unknown})).await;
    assert_eq!(answer["key"], Value::Null);

    // /v1/authz
    let bearer = |t: &str| format!("Bearer {t}");
    type Case<'a> = (String, Vec<(&'a str, String)>, u16, &'a str);
    let authz: Vec<Case> = vec![
        (
            "/v1/authz".into(),
            vec![("Authorization", bearer(&f.main))],
            200,
            "VALID",
        ),
        (
            "/v1/authz".into(),
            vec![("X-API-Key", f.main.clone())],
            200,
            "VALID",
        ),
        ("/v1/authz".into(), vec![], 401, "MALFORMED"),
        (
            "/v1/authz".into(),
            vec![("Authorization", bearer(&typo))],
            401,
            "MALFORMED",
        ),
        (
            "/v1/authz".into(),
            vec![("Authorization", bearer(&f.unknown))],
            401,
            "NOT_FOUND",
        ),
        (
            "/v1/authz".into(),
            vec![("Authorization", bearer(&f.expired))],
            401,
            "EXPIRED",
        ),
        (
            "/v1/authz".into(),
            vec![("Authorization", bearer(&f.revoked))],
            401,
            "REVOKED",
        ),
        (
            "/v1/authz".into(),
            vec![("Authorization", bearer(&f.disabled))],
            401,
            "DISABLED",
        ),
        (
            "/v1/authz?action=users.read".into(),
            vec![("Authorization", bearer(&f.main))],
            403,
            "FORBIDDEN",
        ),
        (
            "/v1/authz?action=content.delete&resource=content:pages:home".into(),
            vec![("Authorization", bearer(&f.main))],
            403,
            "FORBIDDEN",
        ),
        (
            "/v1/authz?action=content.delete&resource=content:pages:about".into(),
            vec![("Authorization", bearer(&f.main))],
            200,
            "VALID",
        ),
        (
            "/v1/authz".into(),
            vec![("Authorization", bearer(&f.ip))],
            403,
            "IP_NOT_ALLOWED",
        ),
        (
            "/v1/authz".into(),
            vec![("Authorization", bearer(&f.header))],
            403,
            "HEADER_MISMATCH",
        ),
        (
            "/v1/authz".into(),
            vec![
                ("Authorization", bearer(&f.header)),
                ("X-Client-Secret", "s3cret".into()),
            ],
            200,
            "VALID",
        ),
        (
            "/v1/authz?environment=staging".into(),
            vec![("Authorization", bearer(&f.main))],
            403,
            "ENVIRONMENT_MISMATCH",
        ),
        // Envoy: the client's path and query follow /v1/authz/; only X-Keysmith-* headers ask.
        (
            "/v1/authz/api/pages?action=users.read".into(),
            vec![("Authorization", bearer(&f.main))],
            200,
            "VALID",
        ),
        (
            "/v1/authz/api/pages".into(),
            vec![
                ("Authorization", bearer(&f.main)),
                ("X-Keysmith-Action", "users.read".into()),
            ],
            403,
            "FORBIDDEN",
        ),
    ];
    for method in ["GET", "POST"] {
        for (path, headers, status, code) in &authz {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let r = request(h.api, method, path, &headers, None).await;
            assert_eq!(
                (r.status, r.header("x-keysmith-code")),
                (*status, Some(*code)),
                "{method} {path} {headers:?}"
            );
            assert_eq!(
                r.header("www-authenticate"),
                (*status == 401).then_some("Bearer error=\"invalid_token\""),
                "{path}"
            );
        }
    }
    let r = request(
        h.api,
        "GET",
        "/v1/authz",
        &[("Authorization", &bearer(&f.main))],
        None,
    )
    .await;
    assert_eq!(r.header("x-keysmith-key"), Some("shop/main"));
    assert_eq!(r.header("x-keysmith-token"), Some("delivery"));
    assert_eq!(r.header("x-keysmith-environment"), Some("production"));

    // TokenReview: authentication only, no end-user address or headers (fail closed).
    let review = |t: &str| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": t}});
    let tokenreviews: Vec<(&str, Value)> = vec![
        (
            &f.main,
            json!({"authenticated": true, "user": {"username": "keysmith:shop:main:delivery",
            "groups": ["keysmith:shop"], "extra": {"keysmith.dev/environment": ["production"]}}}),
        ),
        (&typo, json!({"authenticated": false, "error": "MALFORMED"})),
        (
            &f.unknown,
            json!({"authenticated": false, "error": "NOT_FOUND"}),
        ),
        (
            &f.expired,
            json!({"authenticated": false, "error": "EXPIRED"}),
        ),
        (
            &f.revoked,
            json!({"authenticated": false, "error": "REVOKED"}),
        ),
        (
            &f.disabled,
            json!({"authenticated": false, "error": "DISABLED"}),
        ),
        (
            &f.ip,
            json!({"authenticated": false, "error": "IP_NOT_ALLOWED"}),
        ),
        (
            &f.header,
            json!({"authenticated": false, "error": "HEADER_MISMATCH"}),
        ),
    ];
    for (t, status) in tokenreviews {
        let r = request(
            h.api,
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            &[],
            Some(&review(t).to_string()),
        )
        .await;
        assert_eq!(r.status, 200);
        let answer: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(answer["kind"], "TokenReview");
        assert_eq!(answer["status"], status, "{}", &t[..11]);
    }
    let with_audiences = json!({"kind": "TokenReview", "spec": {"token": f.main, "audiences": ["https://kubernetes.default.svc"]}});
    let r = request(
        h.api,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        &[],
        Some(&with_audiences.to_string()),
    )
    .await;
    let answer: Value = serde_json::from_str(&r.body).unwrap();
    // No --token-review-audiences: only reviews asking no audience authenticate, never one that
    // asks for an audience this verifier was not told it serves.
    assert_eq!(
        answer["status"],
        json!({"authenticated": false, "error": "no requested audience is accepted"})
    );
    let without_audiences =
        json!({"kind": "TokenReview", "spec": {"token": f.main, "audiences": []}});
    let r = request(
        h.api,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        &[],
        Some(&without_audiences.to_string()),
    )
    .await;
    let answer: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(answer["status"]["authenticated"], true);
    assert_eq!(answer["status"].get("audiences"), None);

    // The audit log: one line per verification, never a token.
    let logs = crate::harness::logs::text();
    let audit: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "keysmith::audit")
        .collect();
    assert!(
        audit.len() >= cases.len() + 2 * authz.len() + 8,
        "{} audit lines",
        audit.len()
    );
    assert!(audit.iter().any(|l| l["code"] == "HEADER_MISMATCH"
        && l["key"] == "shop/header"
        && l["endpoint"] == "authz"));
    for field in [
        "timestamp",
        "key",
        "token_id",
        "code",
        "client",
        "user_agent",
        "action",
        "resource",
    ] {
        assert!(
            audit.iter().all(|l| l.get(field).is_some()),
            "every audit line has {field}"
        );
    }
    for secret in [
        &f.main,
        &f.expired,
        &f.disabled,
        &f.revoked,
        &f.ip,
        &f.header,
        &f.unknown,
        &typo,
    ] {
        assert!(
            !logs.contains(secret.as_str()),
            "a token leaked into the logs"
        );
        assert!(
            !logs.contains(&secret[8..]),
            "part of a token leaked into the logs"
        );
    }
    assert!(
        !logs.contains("s3cret"),
        "a required header's value leaked into the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_allow_list_with_trusted_proxies() {
    let h = start(&["127.0.0.1/32"]).await;
    let t = token("ks_");
    h.create_key(
        "ip",
        json!({"tokens": [{"name": "main"}], "restrictions": {"ipAllowList": ["10.0.0.0/8"]}}),
        &[],
        vec![status_token("main", &t)],
    )
    .await;
    h.wait_for_code(t.expose_secret(), "IP_NOT_ALLOWED").await;
    let auth = format!("Bearer {}", t.expose_secret());
    for (forwarded, status) in [
        (vec![("X-Forwarded-For", "10.1.2.3")], 200),
        // The left-most hop is the client's to forge; the right-most untrusted one counts.
        (vec![("X-Forwarded-For", "10.1.2.3, 203.0.113.5")], 403),
        (vec![("X-Forwarded-For", "203.0.113.5, 10.1.2.3")], 200),
        // A second line (HAProxy's forwardfor) continues the list: its hop is the client.
        (
            vec![
                ("X-Forwarded-For", "10.1.2.3"),
                ("X-Forwarded-For", "203.0.113.5"),
            ],
            403,
        ),
        // A hop that is not an address ends what can be attributed: the client is unknown.
        (vec![("X-Forwarded-For", "10.1.2.3, unknown")], 403),
        (vec![("X-Real-IP", "10.9.9.9")], 200),
        (vec![("X-Real-IP", "203.0.113.5")], 403),
        (vec![], 403),
    ] {
        let mut headers = vec![("Authorization", auth.as_str())];
        headers.extend(forwarded.iter().copied());
        let r = request(h.api, "GET", "/v1/authz", &headers, None).await;
        assert_eq!(r.status, status, "{forwarded:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    let h = start(&[]).await;
    let t = token("ks_");
    h.create_key(
        "ip",
        json!({"tokens": [{"name": "main"}], "restrictions": {"ipAllowList": ["10.0.0.0/8"]}}),
        &[],
        vec![status_token("main", &t)],
    )
    .await;
    h.wait_for_code(t.expose_secret(), "IP_NOT_ALLOWED").await;
    let auth = format!("Bearer {}", t.expose_secret());
    for forwarded in [("X-Forwarded-For", "10.1.2.3"), ("X-Real-IP", "10.1.2.3")] {
        let r = request(
            h.api,
            "GET",
            "/v1/authz",
            &[("Authorization", &auth), forwarded],
            None,
        )
        .await;
        assert_eq!(
            (r.status, r.header("x-keysmith-code")),
            (403, Some("IP_NOT_ALLOWED"))
        );
    }
    h.apikeys()
        .patch(
            "ip",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"spec": {"restrictions": {"ipAllowList": ["127.0.0.0/8"]}}}),
            ),
        )
        .await
        .unwrap();
    eventually("the new allow-list to apply", || async {
        let r = request(h.api, "GET", "/v1/authz", &[("Authorization", &auth)], None).await;
        (r.status == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_written_back_by_the_verifier_field_manager() {
    let h = start(&[]).await;
    let t = token("ks_");
    h.create_key(
        "used",
        json!({"tokens": [{"name": "main"}]}),
        &[],
        vec![status_token("main", &t)],
    )
    .await;
    h.wait_for_code(t.expose_secret(), "VALID").await;
    let status = eventually("lastUsedAt to be written", || async {
        let key = h.apikeys().get("used").await.unwrap();
        let used = key.status.as_ref()?.tokens.first()?.last_used_at.clone()?;
        Some((used, key))
    })
    .await;
    let (_, key) = status;
    let managers: Vec<_> = key
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.iter().any(|m| m == "keysmith-verifier"),
        "{managers:?}"
    );
    // The hashes the controller wrote are untouched.
    assert_eq!(key.status.unwrap().tokens[0].sha256, t.sha256_hex());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_metrics_and_probes() {
    let h = start(&[]).await;
    let r = request(h.api, "POST", "/v1/verify", &[], Some("{not json")).await;
    assert_eq!(r.status, 400);
    let r = request(h.api, "POST", "/v1/verify", &[], Some(r#"{"action":"x"}"#)).await;
    assert_eq!(r.status, 400, "a token is required");
    let huge = json!({"token": "x".repeat(20_000)}).to_string();
    let r = request(h.api, "POST", "/v1/verify", &[], Some(&huge)).await;
    assert_eq!(r.status, 413);
    assert!(r.body.contains("larger than 16384 bytes"), "{}", r.body);
    let r = crate::harness::verifier::get(h.api, "/v1/verify").await;
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    let r = crate::harness::verifier::get(h.api, "/v1/nothing").await;
    assert_eq!(r.status, 404);
    let r = request(
        h.api,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        &[],
        Some("[]"),
    )
    .await;
    assert_eq!(r.status, 400);
    let answer = h.verify(json!({"token": "x".repeat(300)})).await;
    assert_eq!(answer["code"], "MALFORMED");

    assert_eq!(
        crate::harness::verifier::get(h.probes, "/healthz")
            .await
            .status,
        200
    );
    let metrics = crate::harness::verifier::get(h.probes, "/metrics")
        .await
        .body;
    assert!(
        metrics.contains("keysmith_verify_requests_total{code=\"MALFORMED\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keysmith_verify_duration_seconds_count 1"),
        "{metrics}"
    );
    assert!(metrics.contains("keysmith_index_tokens 0"), "{metrics}");
}

#[tokio::test]
async fn readyz_waits_for_the_initial_list() {
    use std::sync::Arc;

    let mut registry = keysmith::telemetry::registry();
    let (usage, _rx) = keysmith::verifier::usage::UsageReporter::channel();
    let verifier = keysmith::verifier::Verifier::new(&Default::default(), usage, &mut registry);
    let app =
        keysmith::telemetry::router(Arc::new(registry), std::slice::from_ref(&verifier.health));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    assert_eq!(
        crate::harness::verifier::get(addr, "/readyz").await.status,
        503
    );
    assert_eq!(
        crate::harness::verifier::get(addr, "/healthz").await.status,
        200
    );
    verifier.health.set_ready(true);
    assert_eq!(
        crate::harness::verifier::get(addr, "/readyz").await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authz_answers_always_set_the_environment_header() {
    let h = start(&[]).await;
    let t = token("ks_");
    h.create_key(
        "anywhere",
        json!({"tokens": [{"name": "main"}]}),
        &[],
        vec![status_token("main", &t)],
    )
    .await;
    h.wait_for_code(t.expose_secret(), "VALID").await;
    let auth = format!("Bearer {}", t.expose_secret());
    // A gateway copying the answer's X-Keysmith-Environment upstream replaces the client's own
    // header only if the answer sets it, empty for a key without an environment.
    let r = request(
        h.api,
        "GET",
        "/v1/authz",
        &[
            ("Authorization", &auth),
            ("X-Keysmith-Environment", "production"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-keysmith-environment"), Some(""));
}
