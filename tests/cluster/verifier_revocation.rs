//! End to end: revocation (delete the ApiKey → the verifier stops accepting its tokens, with the
//! delay measured and printed, not asserted; on a real kube-apiserver, also through its webhook
//! token authenticator), rotation overlap, live spec changes, and the one-line start-up failure
//! without permissions.

use std::time::Instant;

use crate::harness::verifier::{Identity, cluster, start, status_token, token};
use keysmith::scope::Scope;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_revokes_with_and_without_a_finalizer() {
    let h = start(&[]).await;
    let (kept, gone) = (token("ks_"), token("ks_"));
    h.create_key(
        "kept",
        json!({"tokens": [{"name": "main"}]}),
        &["keysmith.dev/revoke"],
        vec![status_token("main", &kept)],
    )
    .await;
    h.create_key(
        "gone",
        json!({"tokens": [{"name": "main"}]}),
        &[],
        vec![status_token("main", &gone)],
    )
    .await;
    h.wait_for_code(kept.expose_secret(), "VALID").await;
    h.wait_for_code(gone.expose_secret(), "VALID").await;

    // With the controller's finalizer the object stays, with a deletionTimestamp.
    let start = Instant::now();
    h.apikeys()
        .delete("kept", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_for_code(kept.expose_secret(), "REVOKED").await;
    let with_finalizer = start.elapsed();
    assert!(
        h.apikeys().get_opt("kept").await.unwrap().is_some(),
        "still there, being deleted"
    );

    // Without one the object goes at once (a Deleted event).
    let start = Instant::now();
    h.apikeys()
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_for_code(gone.expose_secret(), "REVOKED").await;
    let without = start.elapsed();
    println!(
        "revocation delay: {with_finalizer:?} with a finalizer (deletionTimestamp), {without:?} without (Deleted)"
    );

    // The controller removing its finalizer leaves the answer at REVOKED.
    h.apikeys()
        .patch(
            "kept",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    crate::harness::verifier::eventually("the ApiKey to be gone", || async {
        h.apikeys()
            .get_opt("kept")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(h.code(kept.expose_secret()).await, "REVOKED");
    let r = crate::harness::verifier::request(
        h.api,
        "GET",
        "/v1/authz",
        &[("X-API-Key", kept.expose_secret())],
        None,
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_overlap_then_expired_then_not_found() {
    let h = start(&[]).await;
    let (old, new) = (token("ks_"), token("ks_"));
    h.create_key(
        "rot",
        json!({"tokens": [{"name": "main"}]}),
        &[],
        vec![status_token("main", &old)],
    )
    .await;
    h.wait_for_code(old.expose_secret(), "VALID").await;

    // The controller rotates: new current, old as previous until validUntil.
    let valid_until = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2);
    let mut rotated = status_token("main", &new);
    rotated["previous"] =
        json!({"id": old.id(), "sha256": old.sha256_hex(), "validUntil": valid_until.to_string()});
    h.set_status_tokens("rot", vec![rotated]).await;
    h.wait_for_code(new.expose_secret(), "VALID").await;
    let answer = h.verify(json!({"token": old.expose_secret()})).await;
    if jiff::Timestamp::now() < valid_until {
        assert_eq!(
            answer["code"], "VALID",
            "the old token works during the overlap"
        );
    }
    // Past validUntil the old token is EXPIRED, with no event needed.
    h.wait_for_code(old.expose_secret(), "EXPIRED").await;
    assert!(jiff::Timestamp::now() >= valid_until);
    assert_eq!(h.code(new.expose_secret()).await, "VALID");

    // The controller then drops `previous`: the old token is unknown.
    h.set_status_tokens("rot", vec![status_token("main", &new)])
        .await;
    h.wait_for_code(old.expose_secret(), "NOT_FOUND").await;
    assert_eq!(h.code(new.expose_secret()).await, "VALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_changes_apply_without_a_restart() {
    let h = start(&[]).await;
    let t = token("ks_");
    h.create_key(
        "live",
        json!({"tokens": [{"name": "main"}], "environment": "staging"}),
        &[],
        vec![status_token("main", &t)],
    )
    .await;
    h.wait_for_code(t.expose_secret(), "VALID").await;
    let apikeys = h.apikeys();
    let patch = |spec| {
        let apikeys = apikeys.clone();
        async move {
            apikeys
                .patch(
                    "live",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": spec})),
                )
                .await
                .unwrap();
        }
    };
    patch(json!({"disabled": true})).await;
    h.wait_for_code(t.expose_secret(), "DISABLED").await;
    patch(json!({"disabled": false, "expiresAt": "2026-01-01T00:00:00Z"})).await;
    h.wait_for_code(t.expose_secret(), "EXPIRED").await;
    patch(json!({"expiresAt": null})).await;
    h.wait_for_code(t.expose_secret(), "VALID").await;
    let answer = h
        .verify(json!({"token": t.expose_secret(), "environment": "production"}))
        .await;
    assert_eq!(answer["code"], "ENVIRONMENT_MISMATCH");
}

#[tokio::test]
async fn without_permissions_start_up_fails_with_one_clear_line() {
    let cluster = cluster().await;
    let stranger = cluster
        .client_as(&Identity::service_account("keysmith", "nobody"))
        .await
        .unwrap();
    let err = Scope::namespace("shop")
        .check_list(stranger)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("permission denied: cannot list apikeys.keysmith.dev in namespace shop;"),
        "{err}"
    );
    assert!(err.contains("forbidden"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

/// The start-up check lists with the selector the watch will use (the controller's once ignored
/// it), so a selector the API server rejects stops the process at start instead of a watch that
/// retries forever.
#[tokio::test]
async fn a_selector_the_server_rejects_fails_the_start_up_check() {
    let cluster = cluster().await;
    let admin = cluster.client_as(&Identity::Admin).await.unwrap();
    let scope = Scope {
        namespace: Some("shop".into()),
        selector: Some("tier in (".into()),
    };
    let err = scope
        .check_list(admin.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("list apikeys.keysmith.dev: "), "{err}");
    let valid = Scope {
        selector: Some("tier in (web)".into()),
        ..scope
    };
    valid.check_list(admin).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_apikey_is_skipped_counted_and_loses_its_tokens() {
    use crate::harness::verifier::{NS, get, logs, start_on};
    // One key the verifier cannot read is there before it starts (its first list): it still
    // becomes ready.
    let cluster = cluster().await;
    crate::harness::write_unreadable_apikey(&cluster, NS, "broken").await;
    let h = start_on(cluster, &[]).await;
    let (good, flip, fixed) = (token("ks_"), token("ks_"), token("ks_"));
    let spec = json!({"tokens": [{"name": "main"}]});
    h.create_key("good", spec.clone(), &[], vec![status_token("main", &good)])
        .await;
    h.create_key("flip", spec.clone(), &[], vec![status_token("main", &flip)])
        .await;
    h.wait_for_code(good.expose_secret(), "VALID").await;
    h.wait_for_code(flip.expose_secret(), "VALID").await;

    // A key that turns unreadable loses its tokens: what its spec now allows is unknown.
    crate::harness::write_unreadable_apikey(&h.cluster, NS, "flip").await;
    h.wait_for_code(flip.expose_secret(), "REVOKED").await;
    assert_eq!(h.code(good.expose_secret()).await, "VALID");
    let counter = "keysmith_index_unreadable_apikeys_total 2";
    crate::harness::verifier::eventually(counter, || async {
        get(h.probes, "/metrics")
            .await
            .body
            .contains(counter)
            .then_some(())
    })
    .await;
    let text = logs::text();
    assert!(
        text.lines().any(|l| l.contains("WARN")
            && l.contains(r#""namespace":"shop""#)
            && l.contains(r#""name":"broken""#)
            && l.contains("tokens")),
        "{text}"
    );

    // Deleting it keeps its tokens refused; fixing the other brings it in.
    crate::harness::raw_apikeys(&h.admin, NS)
        .delete("flip", &DeleteParams::default())
        .await
        .unwrap();
    crate::harness::write_raw_apikey(&h.admin, NS, "broken", json!({"spec": spec}))
        .await
        .unwrap();
    h.set_status_tokens("broken", vec![status_token("main", &fixed)])
        .await;
    h.wait_for_code(fixed.expose_secret(), "VALID").await;
    assert_eq!(h.code(flip.expose_secret()).await, "REVOKED");
    assert_eq!(h.code(good.expose_secret()).await, "VALID");
    assert!(get(h.probes, "/metrics").await.body.contains(counter));
}

/// What the API server answers `client`: the user it authenticated, or the API error.
async fn who_am_i(
    client: &kube::Client,
) -> Result<k8s_openapi::api::authentication::v1::UserInfo, kube::Error> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let reviews: kube::Api<SelfSubjectReview> = kube::Api::all(client.clone());
    let review = reviews
        .create(&Default::default(), &SelfSubjectReview::default())
        .await?;
    Ok(review.status.and_then(|s| s.user_info).unwrap_or_default())
}

/// Revocation through the Kubernetes API server's webhook token authenticator, on a real
/// kube-apiserver configured as docs/gateways.md says (`--authentication-token-webhook-config-file`
/// naming the verifier's TokenReview endpoint, `--authentication-token-webhook-cache-ttl=0s`): the
/// verifier refuses a deleted key's token at once, while the API server keeps authenticating it
/// from the token cache it keeps in front of every token authenticator (successes for 10 s,
/// whatever the webhook's TTL) without asking the verifier. The delay until the API server
/// refuses is measured and printed (`--nocapture`); only a 30 s bound is asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real kube-apiserver (the emulator has no webhook token authenticator): testenv/test runs it in the real pass"]
async fn api_server_webhook_authentication_ends_within_its_token_cache() {
    use crate::harness::verifier::{NS, get, request, start_listening};
    use crate::harness::{Backend, Config};
    use keysmith::verifier::http::TOKENREVIEW_PATH;
    use keysmith::verifier::tenancy::Tenancy;
    use keysmith_testenv::{Cluster, RealOptions};
    use std::time::Duration;

    crate::harness::needs_real_server("a webhook token authenticator and its token cache");
    // The audience kube-apiserver asks (`--api-audiences` defaults to the issuer).
    const AUDIENCE: &str = "https://kubernetes.default.svc";
    const BOUND: Duration = Duration::from_secs(30);

    // The verifier's port is chosen first: the API server reads the webhook's URL at start.
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let webhook = format!("http://{}{TOKENREVIEW_PATH}", api.local_addr().unwrap());
    let options = RealOptions {
        token_webhook: Some(webhook),
    };
    let cluster = Cluster::with_chart_and(Backend::Real, Config::default(), &options)
        .await
        .expect("the real API server starts with the token webhook");
    cluster
        .apply_object(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .await
        .unwrap();
    // As docs/gateways.md sets it up: the API server's audience accepts the keys of NS.
    let tenancy = Tenancy::parse(NS, &[&format!("{AUDIENCE}={NS}")]).unwrap();
    let h = start_listening(cluster, &[], tenancy, api).await;

    let t = token("ks_");
    h.create_key(
        "login",
        json!({"tokens": [{"name": "main"}]}),
        &[],
        vec![status_token("main", &t)],
    )
    .await;
    h.wait_for_code(t.expose_secret(), "VALID").await;

    // A client of the real API server holding nothing but the key's token.
    let mut kubeconfig =
        kube::config::Kubeconfig::from_yaml(&h.cluster.kubeconfig(&Identity::Admin).await.unwrap())
            .unwrap();
    for user in &mut kubeconfig.auth_infos {
        user.auth_info = Some(serde_json::from_value(json!({"token": t.expose_secret()})).unwrap());
    }
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let as_key = kube::Client::try_from(config).unwrap();

    let user = who_am_i(&as_key)
        .await
        .expect("the API server authenticates the key through the verifier");
    let authenticated = Instant::now();
    assert_eq!(user.username.as_deref(), Some("keysmith:shop:login:main"));
    assert!(
        user.groups
            .iter()
            .flatten()
            .any(|g| g == &format!("keysmith:{NS}")),
        "{user:?}"
    );

    h.apikeys()
        .delete("login", &DeleteParams::default())
        .await
        .unwrap();
    let deleted = Instant::now();

    // The verifier refuses at once, on its own API and as the webhook.
    h.wait_for_code(t.expose_secret(), "REVOKED").await;
    let verifier_delay = deleted.elapsed();
    let review = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": t.expose_secret(), "audiences": [AUDIENCE]},
    });
    let answer = request(
        h.api,
        "POST",
        TOKENREVIEW_PATH,
        &[],
        Some(&review.to_string()),
    )
    .await;
    let answer: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(answer["status"]["authenticated"], false, "{answer}");
    assert_eq!(answer["status"]["error"], "REVOKED", "{answer}");

    // The API server goes on authenticating the token until its cache entry ages out.
    let mut served_from_cache = 0;
    let refused = loop {
        match who_am_i(&as_key).await {
            Ok(user) => {
                assert_eq!(user.username.as_deref(), Some("keysmith:shop:login:main"));
                served_from_cache += 1;
            }
            Err(kube::Error::Api(status)) if status.code == 401 => break Instant::now(),
            Err(e) => panic!("the API server answered neither the user nor 401: {e}"),
        }
        assert!(
            deleted.elapsed() < BOUND,
            "the API server still authenticated the deleted key's token {BOUND:?} after the delete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Every success after the first came from the API server's cache: the verifier said VALID
    // to one review only.
    let metrics = get(h.probes, "/metrics").await.body;
    let valid_reviews = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                r#"keysmith_verify_requests_total{endpoint="tokenreview",code="VALID"} "#,
            )
        })
        .unwrap_or_else(|| panic!("no count of VALID TokenReviews in\n{metrics}"));
    assert_eq!(valid_reviews.trim(), "1", "{metrics}");
    println!(
        "API server webhook revocation: the verifier answered REVOKED {verifier_delay:?} after the \
         delete; kube-apiserver (webhook cache TTL 0s) went on authenticating the token for \
         {:?} after the delete ({:?} after its first authentication; {served_from_cache} \
         requests answered from its token cache without a TokenReview), then answered 401",
        refused - deleted,
        refused - authenticated,
    );
}
