//! End to end: every code of SPEC section 5 through `/v1/verify`, `/v1/authz` and the
//! TokenReview webhook, against a verifier that watches the API emulator as its ServiceAccount
//! under the chart's RBAC rules. Also: the response shapes, deny overriding allow, the IP
//! allow-list with and without trusted proxies, a header required from a Secret, usage
//! write-back, metrics, body limits, and an audit log that never holds a token.

use crate::harness::verifier::{
    Harness, NS, Response, cluster, eventually, request, start, start_with, status_header,
    status_token, token,
};
use keysmith::api::ApiKey;
use keysmith::token::Token;
use keysmith::verifier::http::TOKENREVIEW_PATH as TOKENREVIEW;
use keysmith::verifier::tenancy::Tenancy;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
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
        // Verifications only: the suites share the process's log, and leak reports write audit
        // lines of their own.
        .filter(|l| l["target"] == "keysmith::audit" && l["message"] == "verification")
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
        metrics
            .contains("keysmith_verify_requests_total{endpoint=\"verify\",code=\"MALFORMED\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keysmith_verify_duration_seconds_count{endpoint=\"verify\"} 1"),
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

/// Create namespace `namespace` and ApiKey `name` in it whose status holds `token`.
async fn tenant_key(h: &Harness, namespace: &str, name: &str, spec: Value, token: &Token) {
    h.cluster
        .apply_object(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        )
        .await
        .expect("namespace applies");
    let key: ApiKey = serde_json::from_value(json!({
        "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": name, "namespace": namespace}, "spec": spec,
    }))
    .unwrap();
    let keys: Api<ApiKey> = Api::namespaced(h.admin.clone(), namespace);
    keys.create(&PostParams::default(), &key).await.unwrap();
    keys.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"tokens": [status_token("main", token)]}})),
    )
    .await
    .unwrap();
}

/// What a gateway learns from an `/v1/authz` answer: status, code and authentication challenge.
fn authz_answer(r: &Response) -> (u16, Option<&str>, Option<&str>, &str) {
    (
        r.status,
        r.header("x-keysmith-code"),
        r.header("www-authenticate"),
        &r.body,
    )
}

/// Tenant isolation: a key that grants itself everything in `tenant-b` is refused on team A's
/// routes exactly like an unknown token, whatever the client appends to the route or forwards in
/// headers; the route of its own team accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_accepted_only_on_routes_naming_its_namespace() {
    let h = start_with(
        cluster().await,
        &[],
        Tenancy::parse(NS, &["team-a-api=tenant-a"]).unwrap(),
    )
    .await;
    let (mine, evil, unknown) = (token("ks_"), token("ks_"), token("ks_"));
    let allow_all = json!([{"effect": "allow", "actions": ["*"], "resources": ["*"]}]);
    tenant_key(
        &h,
        "tenant-a",
        "checkout",
        json!({"tokens": [{"name": "main"}], "grants": [{"effect": "allow", "actions": ["orders.read"]}]}),
        &mine,
    )
    .await;
    tenant_key(
        &h,
        "tenant-b",
        "everything",
        json!({"tokens": [{"name": "main"}], "environment": "production", "grants": allow_all}),
        &evil,
    )
    .await;
    let (mine, evil, unknown) = (
        mine.expose_secret(),
        evil.expose_secret(),
        unknown.expose_secret(),
    );
    let verify_on = |path: &'static str, t: &str| {
        let body = json!({"token": t, "action": "orders.read"}).to_string();
        let api = h.api;
        async move {
            let r = request(api, "POST", path, &[], Some(&body)).await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            serde_json::from_str::<Value>(&r.body).unwrap()
        }
    };
    // Its own team's route accepts it (once the watch has indexed it).
    eventually("tenant-b's key to verify on tenant-b's route", || async {
        let answer = verify_on("/v1/namespaces/tenant-b/verify", evil).await;
        (answer["code"] == "VALID").then_some(())
    })
    .await;
    assert_eq!(
        verify_on("/v1/namespaces/tenant-a/verify", mine).await["code"],
        "VALID"
    );
    assert_eq!(
        verify_on("/v1/namespaces/tenant-a,tenant-b/verify", evil).await["code"],
        "VALID"
    );
    // Team A's /v1/verify route: as unknown, body for body.
    let refused = verify_on("/v1/namespaces/tenant-a/verify", evil).await;
    assert_eq!(
        refused,
        verify_on("/v1/namespaces/tenant-a/verify", unknown).await
    );
    assert_eq!(refused["code"], "NOT_FOUND");
    // The unscoped route accepts only --accept-namespaces (here the harness's own namespace).
    assert_eq!(verify_on("/v1/verify", evil).await, refused);

    let bearer = |t: &str| format!("Bearer {t}");
    let authz = |path: &str, t: &str, extra: &[(&str, &str)]| {
        let auth = bearer(t);
        let mut headers = vec![("Authorization", auth.as_str())];
        headers.extend_from_slice(extra);
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let (api, path) = (h.api, path.to_owned());
        async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            request(api, "GET", &path, &headers, None).await
        }
    };
    let team_a = "/v1/namespaces/tenant-a/authz?action=orders.read";
    let ok = authz(team_a, mine, &[]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-keysmith-key"), Some("tenant-a/checkout"));
    let as_unknown = authz(team_a, unknown, &[]).await;
    assert_eq!(
        authz_answer(&as_unknown),
        (
            401,
            Some("NOT_FOUND"),
            Some("Bearer error=\"invalid_token\""),
            ""
        )
    );
    let forged = [
        (
            "X-Original-URL",
            "https://api.example/v1/namespaces/tenant-b/authz",
        ),
        ("X-Forwarded-Uri", "/v1/namespaces/tenant-b/authz"),
        ("X-Forwarded-Prefix", "/v1/namespaces/tenant-b"),
        ("X-Keysmith-Namespace", "tenant-b"),
    ];
    for (path, extra) in [
        (team_a, &[][..]),
        (team_a, &forged[..]),
        // Envoy appends the client's path and query to team A's path prefix.
        (
            "/v1/namespaces/tenant-a/authz/../namespaces/tenant-b/authz",
            &[][..],
        ),
        (
            "/v1/namespaces/tenant-a/authz/../../tenant-b/authz",
            &[][..],
        ),
        (
            "/v1/namespaces/tenant-a/authz/%2e%2e/%2e%2e/tenant-b/authz",
            &[][..],
        ),
        (
            "/v1/namespaces/tenant-a/authz/api?namespaces=tenant-b",
            &forged[..],
        ),
        // An unscoped Envoy route: the client's path naming a namespace scopes nothing.
        ("/v1/authz/namespaces/tenant-b/authz", &[][..]),
        ("/v1/authz/../namespaces/tenant-b/authz", &[][..]),
        ("/v1/authz?namespaces=tenant-b", &forged[..]),
    ] {
        let r = authz(path, evil, extra).await;
        assert_eq!(
            authz_answer(&r),
            authz_answer(&as_unknown),
            "{path} {extra:?}"
        );
    }
    // Team B's route accepts its key, and not team A's.
    let team_b = "/v1/namespaces/tenant-b/authz/api/orders";
    assert_eq!(authz(team_b, evil, &[]).await.status, 200);
    assert_eq!(
        authz_answer(&authz(team_b, mine, &[]).await),
        authz_answer(&as_unknown)
    );

    // TokenReview: an audience names its namespaces; no audience means --accept-namespaces.
    let review = |t: &str, audiences: &[&str]| {
        let body = json!({"kind": "TokenReview", "spec": {"token": t, "audiences": audiences}});
        let api = h.api;
        async move {
            let r = request(api, "POST", TOKENREVIEW, &[], Some(&body.to_string())).await;
            assert_eq!(r.status, 200, "{}", r.body);
            serde_json::from_str::<Value>(&r.body).unwrap()["status"].clone()
        }
    };
    let not_found = json!({"authenticated": false, "error": "NOT_FOUND"});
    assert_eq!(review(evil, &["team-a-api"]).await, not_found);
    assert_eq!(review(unknown, &["team-a-api"]).await, not_found);
    assert_eq!(review(evil, &[]).await, not_found);
    let accepted = review(mine, &["team-a-api", "other"]).await;
    assert_eq!(accepted["authenticated"], true, "{accepted}");
    assert_eq!(accepted["audiences"], json!(["team-a-api"]));
    assert_eq!(review(mine, &[]).await, not_found);
}

/// GET /metrics from the verifier's metrics port, with `accept` as the scraper's `Accept`.
async fn scrape(h: &Harness, accept: Option<&str>) -> Response {
    let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
    request(h.probes, "GET", "/metrics", &headers, None).await
}

/// The value of the sample `series` (name and labels) in `metrics`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Requests no scope of their route covers are counted by kind of route, never by namespace;
/// throttled answers are counted; the histogram is per endpoint; the process metrics are there;
/// and /metrics answers the Prometheus text format unless asked for OpenMetrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_outside_their_scope_and_throttled_answers() {
    // As on a default install: unscoped routes accept no namespace.
    let h = start_with(cluster().await, &[], Tenancy::default()).await;
    let t = token("ks_");
    h.create_key(
        "site",
        json!({"tokens": [{"name": "main"}]}),
        &[],
        vec![status_token("main", &t)],
    )
    .await;
    let bearer = format!("Bearer {}", t.expose_secret());
    let authz = |path: &str, auth: &str| {
        let (api, path, auth) = (h.api, path.to_owned(), auth.to_owned());
        async move {
            request(api, "GET", &path, &[("Authorization", auth.as_str())], None)
                .await
                .status
        }
    };
    let own_route = &format!("/v1/namespaces/{NS}/authz");
    eventually("the key to be indexed", || async {
        (authz(own_route, &bearer).await == 200).then_some(())
    })
    .await;
    let series = |route: &str| format!("keysmith_verify_unknown_scope_total{{route=\"{route}\"}}");
    let before = scrape(&h, None).await.body;
    for route in ["scoped", "unscoped", "tokenreview", "invalid"] {
        assert_eq!(sample(&before, &series(route)), Some(0.0), "{before}");
    }

    // The key's own token on the unscoped route, and on a route naming another namespace.
    assert_eq!(authz("/v1/authz", &bearer).await, 401);
    assert_eq!(authz("/v1/namespaces/elsewhere/authz", &bearer).await, 401);
    // A route whose namespace is no namespace name.
    assert_eq!(authz("/v1/namespaces/Shop/authz", &bearer).await, 404);
    // A TokenReview for an audience this verifier does not serve.
    let review = json!({"kind": "TokenReview",
        "spec": {"token": t.expose_secret(), "audiences": ["https://elsewhere"]}});
    let r = request(h.api, "POST", TOKENREVIEW, &[], Some(&review.to_string())).await;
    assert_eq!(r.status, 200);
    // An unknown token is no scope problem, and a path outside /v1/namespaces/ no scope.
    let unknown = format!("Bearer {}", token("ks_").expose_secret());
    assert_eq!(authz(own_route, &unknown).await, 401);
    assert_eq!(authz("/v1/nothing", &bearer).await, 404);

    let after = scrape(&h, None).await.body;
    for route in ["scoped", "unscoped", "tokenreview", "invalid"] {
        assert_eq!(
            sample(&after, &series(route)),
            Some(1.0),
            "{route}: {after}"
        );
    }
    assert!(
        !after.contains("elsewhere"),
        "no label holds what a client chose"
    );
    assert!(
        sample(
            &after,
            "keysmith_verify_duration_seconds_count{endpoint=\"authz\"}"
        )
        .is_some_and(|n| n >= 4.0),
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            "keysmith_verify_duration_seconds_count{endpoint=\"tokenreview\"}"
        ),
        Some(0.0),
        "the refused review decided nothing: {after}"
    );

    // Failures from this client until the throttle delays one: the burst is finite, so a bounded
    // run of them reaches it whatever the machine's speed.
    let throttled = r#"keysmith_verify_throttled_total{endpoint="authz"}"#;
    assert_eq!(sample(&after, throttled), Some(0.0), "{after}");
    let mut delayed = false;
    for _ in 0..200 {
        assert_eq!(authz(own_route, &unknown).await, 401);
        if sample(&scrape(&h, None).await.body, throttled).is_some_and(|n| n >= 1.0) {
            delayed = true;
            break;
        }
    }
    assert!(delayed, "200 failures in a row were never throttled");

    // Prometheus text unless OpenMetrics is asked for; the process metrics either way.
    let plain = scrape(&h, Some("text/plain;version=0.0.4")).await;
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        plain
            .body
            .contains("# TYPE keysmith_verify_unknown_scope_total counter"),
        "{}",
        plain.body
    );
    let open = scrape(&h, Some("application/openmetrics-text; version=1.0.0")).await;
    assert_eq!(
        open.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(
        open.body
            .contains("# TYPE keysmith_verify_unknown_scope counter"),
        "{}",
        open.body
    );
    assert!(open.body.ends_with("# EOF\n"), "{}", open.body);
    for body in [&plain.body, &open.body] {
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                sample(body, name).is_some_and(|v| v > 0.0),
                "{name}: {body}"
            );
        }
    }
}
