//! Every seed example keeps the promises its comments make: each is applied to its own
//! development cluster (the chart's RBAC) with the controller and the verifier running in-process,
//! and the tokens it mints are checked against the verifier over HTTP.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::harness::controller::{condition, ready, secret_value, token};
use crate::harness::verifier::{eventually, request};
use crate::harness::{Cluster, chart_clients};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use keysmith::api::{ApiKey, Encoding};
use keysmith::components;
use keysmith::devcluster::{self, EXAMPLES};
use keysmith::telemetry::{Shutdown, ShutdownTrigger};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

const NS: &str = "default";

/// A development cluster with one example applied, the controller and the verifier.
struct Dev {
    cluster: Cluster,
    admin: kube::Client,
    api: SocketAddr,
    /// The controller's clock (the verifier keeps the wall clock).
    now: Arc<Mutex<Timestamp>>,
    stop: Option<ShutdownTrigger>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.trigger();
        }
    }
}

fn example(file: &str) -> &'static str {
    EXAMPLES
        .iter()
        .find(|(f, _)| *f == file)
        .map(|(_, yaml)| *yaml)
        .unwrap_or_else(|| panic!("no example {file}"))
}

impl Dev {
    async fn start(file: &str) -> Dev {
        let cluster = crate::harness::cluster(NS).await;
        let admin = cluster.client().await.expect("admin client");
        let now = Arc::new(Mutex::new(Timestamp::now()));
        let clock = {
            let now = now.clone();
            Arc::new(move || *now.lock().unwrap())
        };
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_addr = api.local_addr().unwrap();
        let components = devcluster::components(
            chart_clients(&cluster).await,
            "examples-test",
            clock,
            api,
            metrics,
            None,
        );
        components::preflight(&components)
            .await
            .expect("the chart's rules suffice");
        let (stop, shutdown) = Shutdown::new();
        tokio::spawn(async move {
            components::serve(components, shutdown)
                .await
                .expect("components serve");
        });
        cluster
            .apply_yaml(example(file))
            .await
            .expect("the example applies");
        Dev {
            cluster,
            admin,
            api: api_addr,
            now,
            stop: Some(stop),
        }
    }

    async fn apikey(&self, name: &str) -> Option<Value> {
        self.cluster
            .get("keysmith.dev/v1alpha1", "ApiKey", NS, name)
            .await
    }

    fn apikeys(&self) -> Api<ApiKey> {
        Api::namespaced(self.admin.clone(), NS)
    }

    /// Wait until the ApiKey is Ready for its current generation and its Secret holds every
    /// token its status names (the controller writes the status first, then the Secret).
    async fn ready(&self, name: &str) -> Value {
        self.wait_delivered(name, &format!("{name} to be Ready"), |k| {
            ready(k) && k["status"]["observedGeneration"] == k["metadata"]["generation"]
        })
        .await
    }

    /// Whether the key's Secret holds every current token of its status.
    async fn delivered(&self, key: &Value) -> bool {
        let Some(name) = key["status"]["secretName"].as_str() else {
            return false;
        };
        let Some(secret) = self.cluster.get("v1", "Secret", NS, name).await else {
            return false;
        };
        let secret: Secret = serde_json::from_value(secret).unwrap();
        let hashes: Vec<String> = secret
            .data
            .unwrap_or_default()
            .values()
            .map(|v| keysmith::token::sha256_hex(&String::from_utf8_lossy(&v.0)))
            .collect();
        key["status"]["tokens"].as_array().is_some_and(|ts| {
            !ts.is_empty()
                && ts
                    .iter()
                    .all(|t| hashes.iter().any(|h| t["sha256"] == h.as_str()))
        })
    }

    async fn wait_key(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        eventually(what, || async {
            self.apikey(name).await.filter(|k| check(k))
        })
        .await
    }

    /// Like [`Dev::wait_key`], and the key's Secret holds every token its status names.
    async fn wait_delivered(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(what, || async {
            let key = self.apikey(name).await.filter(|k| check(k))?;
            self.delivered(&key).await.then_some(key)
        })
        .await
    }

    /// The decoded value of `key` in Secret `secret`.
    async fn secret_value(&self, secret: &str, key: &str) -> String {
        let secret = self
            .cluster
            .get("v1", "Secret", NS, secret)
            .await
            .unwrap_or_else(|| panic!("Secret {secret}"));
        secret_value(&secret, key).unwrap_or_else(|| panic!("key {key} in {secret}"))
    }

    async fn patch(&self, name: &str, patch: Value) {
        self.apikeys()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("ApiKey patched");
    }

    /// Set the controller's clock and make it reconcile `names` (a harmless annotation change).
    async fn move_clock(&self, to: Timestamp, names: &[&str]) {
        *self.now.lock().unwrap() = to;
        for name in names {
            self.patch(
                name,
                json!({"metadata": {"annotations": {"test.keysmith.dev/clock": to.to_string()}}}),
            )
            .await;
        }
    }

    /// POST /v1/verify; the JSON answer.
    async fn verify(&self, body: Value) -> Value {
        let response = request(self.api, "POST", "/v1/verify", &[], Some(&body.to_string())).await;
        assert_eq!(response.status, 200, "{}", response.body);
        serde_json::from_str(&response.body).unwrap()
    }

    async fn code(&self, body: Value) -> String {
        let answer = self.verify(body).await;
        answer["code"].as_str().unwrap_or_default().to_owned()
    }

    /// Poll until the verifier answers `body` with one of `codes`.
    async fn wait_code(&self, body: Value, codes: &[&str]) {
        eventually(
            &format!("the verifier to answer {codes:?} to {body}"),
            || {
                let body = body.clone();
                async move {
                    codes
                        .contains(&self.code(body).await.as_str())
                        .then_some(())
                }
            },
        )
        .await;
    }
}

fn time(v: &Value) -> Timestamp {
    v.as_str()
        .unwrap_or_else(|| panic!("a timestamp, got {v}"))
        .parse()
        .unwrap()
}

/// The token's public id, prefix, encoding and checksum, and its hash in the status.
fn check_token(key: &Value, slot: &str, value: &str, prefix: &str, encoding: Encoding) {
    let parsed = keysmith::token::validate(value).expect("a well-formed token with its checksum");
    assert_eq!(parsed.prefix(), prefix);
    assert_eq!(parsed.encoding(), encoding);
    assert!(parsed.checksum_valid());
    let status = token(key, slot);
    assert_eq!(status["id"], parsed.id(), "{status}");
    assert_eq!(
        status["sha256"],
        keysmith::token::sha256_hex(value),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cms_three_tokens() {
    let dev = Dev::start("cms-three-tokens.yaml").await;
    let key = dev.ready("acme-cms").await;

    let slots = [
        ("management", "ACME_CMS_MANAGEMENT_TOKEN", "acme_sk_"),
        ("delivery", "ACME_CMS_DELIVERY_TOKEN", "acme_dt_"),
        ("preview", "ACME_CMS_PREVIEW_TOKEN", "acme_pt_"),
    ];
    let secret = dev
        .cluster
        .get("v1", "Secret", NS, "acme-cms-tokens")
        .await
        .unwrap();
    let mut keys: Vec<&str> = secret["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "ACME_CMS_DELIVERY_TOKEN",
            "ACME_CMS_MANAGEMENT_TOKEN",
            "ACME_CMS_PREVIEW_TOKEN"
        ]
    );
    let mut tokens: Vec<String> = Vec::new();
    for (slot, secret_key, prefix) in &slots {
        let value = dev.secret_value("acme-cms-tokens", secret_key).await;
        check_token(&key, slot, &value, prefix, Encoding::Hex);
        tokens.push(value);
    }
    let [management, delivery, preview] = [&tokens[0], &tokens[1], &tokens[2]];
    // The verifier indexes the hashes from its own watch.
    for value in &tokens {
        dev.wait_code(json!({"token": value}), &["VALID"]).await;
    }

    // Management: granted. Delivery and preview: authenticate, allowed nothing.
    let answer = dev
        .verify(json!({"token": management, "action": "content_update", "resource": "content:pages:home"}))
        .await;
    assert_eq!(answer["code"], "VALID", "{answer}");
    assert_eq!(
        dev.code(json!({"token": management, "action": "content_read"}))
            .await,
        "VALID"
    );
    assert_eq!(
        dev.code(json!({"token": delivery, "action": "content_read"}))
            .await,
        "FORBIDDEN"
    );
    let answer = dev.verify(json!({"token": delivery})).await;
    assert_eq!(answer["code"], "VALID", "{answer}");
    assert_eq!(answer["metadata"]["content"], "published", "{answer}");
    let answer = dev.verify(json!({"token": preview})).await;
    assert_eq!(answer["code"], "VALID", "{answer}");
    assert_eq!(answer["metadata"]["content"], "draft", "{answer}");

    // Roll only the delivery token.
    let ids: Vec<Value> = slots
        .iter()
        .map(|(slot, ..)| token(&key, slot)["id"].clone())
        .collect();
    dev.patch(
        "acme-cms",
        json!({"metadata": {"annotations": {"keysmith.dev/rotate-delivery": "1"}}}),
    )
    .await;
    let key = dev
        .wait_delivered("acme-cms", "the delivery token to roll", |k| {
            token(k, "delivery")["id"] != ids[1] && ready(k)
        })
        .await;
    assert_eq!(token(&key, "management")["id"], ids[0]);
    assert_eq!(token(&key, "preview")["id"], ids[2]);
    assert_eq!(
        &dev.secret_value("acme-cms-tokens", "ACME_CMS_MANAGEMENT_TOKEN")
            .await,
        management
    );
    assert_eq!(
        &dev.secret_value("acme-cms-tokens", "ACME_CMS_PREVIEW_TOKEN")
            .await,
        preview
    );
    let new_delivery = eventually("the Secret to hold the new delivery token", || async {
        let value = dev
            .secret_value("acme-cms-tokens", "ACME_CMS_DELIVERY_TOKEN")
            .await;
        (&value != delivery).then_some(value)
    })
    .await;
    check_token(&key, "delivery", &new_delivery, "acme_dt_", Encoding::Hex);
    dev.wait_code(json!({"token": new_delivery}), &["VALID"])
        .await;
    // The overlap of 1h: the replaced token still verifies.
    assert_eq!(dev.code(json!({"token": delivery})).await, "VALID");

    // Deleting the ApiKey revokes all three current tokens.
    dev.apikeys()
        .delete("acme-cms", &DeleteParams::default())
        .await
        .unwrap();
    for value in [management, &new_delivery, preview] {
        dev.wait_code(json!({"token": value}), &["REVOKED", "NOT_FOUND"])
            .await;
    }
    eventually("the ApiKey to be gone", || async {
        dev.apikey("acme-cms").await.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants() {
    let dev = Dev::start("grants.yaml").await;
    let key = dev.ready("editorial-bot").await;
    let tok = dev.secret_value("editorial-bot", "token").await;
    check_token(&key, "token", &tok, "cms_ed_", Encoding::Base62);
    dev.wait_code(json!({"token": tok}), &["VALID"]).await;
    let own = "default/editorial-bot";

    let cases = [
        // Grant 1: read all of site-a.
        (
            json!({"action": "content.read", "resource": "workspace:site-a:content:pages:home"}),
            "VALID",
        ),
        (
            json!({"action": "content.read", "resource": "workspace:site-b:content:pages:home"}),
            "FORBIDDEN",
        ),
        // Deny 4 overrides allow 1.
        (
            json!({"action": "content.read", "resource": "workspace:site-a:content:legal:imprint"}),
            "FORBIDDEN",
        ),
        // Grant 2: own drafts, allowed locales and fields.
        (
            json!({"action": "content.update", "resource": "workspace:site-a:content:posts:42",
                   "fields": ["title", "body"], "context": {"status": "draft", "locale": "de", "owner": own}}),
            "VALID",
        ),
        (
            json!({"action": "content.create", "resource": "workspace:site-a:content:posts:43",
                   "fields": ["tags"], "context": {"status": "draft", "locale": "en", "owner": own}}),
            "VALID",
        ),
        (
            json!({"action": "content.update", "resource": "workspace:site-a:content:posts:42",
                   "fields": ["title"], "context": {"status": "published", "locale": "de", "owner": own}}),
            "FORBIDDEN",
        ),
        (
            json!({"action": "content.update", "resource": "workspace:site-a:content:posts:42",
                   "fields": ["title"], "context": {"status": "draft", "locale": "fr", "owner": own}}),
            "FORBIDDEN",
        ),
        (
            json!({"action": "content.update", "resource": "workspace:site-a:content:posts:42",
                   "fields": ["title"], "context": {"status": "draft", "locale": "de", "owner": "default/someone-else"}}),
            "FORBIDDEN",
        ),
        (
            json!({"action": "content.update", "resource": "workspace:site-a:content:posts:42",
                   "fields": ["author"], "context": {"status": "draft", "locale": "de", "owner": own}}),
            "FORBIDDEN",
        ),
        // Deny 5: never the slug.
        (
            json!({"action": "content.update", "resource": "workspace:site-a:content:posts:42",
                   "fields": ["slug"], "context": {"status": "draft", "locale": "en", "owner": own}}),
            "FORBIDDEN",
        ),
        // Grant 3 and deny 6.
        (
            json!({"action": "content.delete", "resource": "workspace:site-a:content:posts:42",
                   "context": {"status": "draft", "owner": own}}),
            "VALID",
        ),
        (
            json!({"action": "content.delete", "resource": "workspace:site-a:content:posts:42",
                   "context": {"status": "published", "owner": own}}),
            "FORBIDDEN",
        ),
        (
            json!({"action": "content.delete", "resource": "workspace:site-a:content:posts:42",
                   "context": {"owner": own}}),
            "FORBIDDEN",
        ),
        (
            json!({"action": "content.delete", "resource": "workspace:site-a:content:posts:42",
                   "context": {"status": "draft", "owner": "default/someone-else"}}),
            "FORBIDDEN",
        ),
    ];
    for (mut body, code) in cases {
        body["token"] = json!(tok);
        let answer = dev.verify(body.clone()).await;
        assert_eq!(answer["code"], code, "{body} -> {answer}");
    }

    // The same from a gateway: 200 or 403.
    let bearer = format!("Bearer {tok}");
    let allowed = request(
        dev.api,
        "GET",
        "/v1/authz?action=content.read&resource=workspace:site-a:content:pages:home",
        &[("Authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    let denied = request(
        dev.api,
        "GET",
        "/v1/authz?action=content.read&resource=workspace:site-a:content:legal:imprint",
        &[("Authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(denied.status, 403, "{denied:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_token() {
    let dev = Dev::start("project-token.yaml").await;
    let key = dev.ready("checkout-api-production").await;
    let tok = dev
        .secret_value("checkout-api-token", "CHECKOUT_API_TOKEN")
        .await;
    check_token(&key, "server", &tok, "proj_live_", Encoding::Base62);
    // The client secret, as the example file states it.
    let client_secret = example("project-token.yaml")
        .lines()
        .find_map(|l| l.strip_prefix("  value: "))
        .expect("the client secret in the example")
        .trim();
    let body = |change: Value| {
        let mut body = json!({
            "token": tok, "environment": "production", "ip": "10.1.2.3",
            "headers": {"X-Client-Secret": client_secret},
            "action": "orders.create", "resource": "project:checkout:orders",
        });
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body
    };
    assert!(ready(&dev.apikey("checkout-api-production").await.unwrap()));
    assert!(token(&key, "server")["lastUsedAt"].is_null());

    // The verifier resolves the header value from the Secret asynchronously.
    dev.wait_code(body(json!({})), &["VALID"]).await;
    for (change, code) in [
        (json!({"environment": "staging"}), "ENVIRONMENT_MISMATCH"),
        (json!({"ip": "203.0.113.9"}), "IP_NOT_ALLOWED"),
        (json!({"ip": "192.0.2.11"}), "IP_NOT_ALLOWED"),
        (json!({"ip": "192.0.2.10"}), "VALID"),
        (json!({"ip": "2001:db8::7"}), "VALID"),
        (json!({"headers": null}), "HEADER_MISMATCH"),
        (
            json!({"headers": {"X-Client-Secret": "something-else"}}),
            "HEADER_MISMATCH",
        ),
        (json!({"action": "users.delete"}), "FORBIDDEN"),
        (json!({"action": "payments.read"}), "VALID"),
    ] {
        let request = body(change.clone());
        let answer = dev.verify(request.clone()).await;
        assert_eq!(answer["code"], code, "{change} -> {answer}");
    }

    // Usage is written back to the status.
    let key = dev
        .wait_key("checkout-api-production", "lastUsedAt in the status", |k| {
            token(k, "server")["lastUsedAt"].is_string()
        })
        .await;
    let used = time(&token(&key, "server")["lastUsedAt"]);
    assert!(used >= time(&token(&key, "server")["issuedAt"]));

    // disabled: true suspends the key without touching the token.
    dev.patch(
        "checkout-api-production",
        json!({"spec": {"disabled": true}}),
    )
    .await;
    dev.wait_code(body(json!({})), &["DISABLED"]).await;
    assert_eq!(
        dev.secret_value("checkout-api-token", "CHECKOUT_API_TOKEN")
            .await,
        tok
    );
    dev.patch(
        "checkout-api-production",
        json!({"spec": {"disabled": false}}),
    )
    .await;
    dev.wait_code(body(json!({})), &["VALID"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_keys() {
    let dev = Dev::start("expiring-keys.yaml").await;
    let delivery_key = dev.ready("cms-delivery-key").await;
    let management_key = dev.ready("cms-management-key").await;
    for (key, slot, lifetime) in [
        (&delivery_key, "delivery", SignedDuration::from_hours(8760)),
        (
            &management_key,
            "management",
            SignedDuration::from_hours(4380),
        ),
    ] {
        let t = token(key, slot);
        let (issued, expires) = (time(&t["issuedAt"]), time(&t["expiresAt"]));
        assert_eq!(expires.duration_since(issued), lifetime, "{t}");
        assert_eq!(
            condition(key, "Expiring").map(|c| c.0),
            Some("False".into())
        );
    }
    let old_delivery = dev.secret_value("cms-delivery-key", "delivery").await;
    let old_management = dev.secret_value("cms-management-key", "management").await;
    check_token(
        &delivery_key,
        "delivery",
        &old_delivery,
        "acme_dt_",
        Encoding::Base62,
    );
    check_token(
        &management_key,
        "management",
        &old_management,
        "acme_sk_",
        Encoding::Base62,
    );
    dev.wait_code(json!({"token": old_delivery}), &["VALID"])
        .await;
    dev.wait_code(json!({"token": old_management}), &["VALID"])
        .await;

    // Regenerate both by changing rotation.trigger.
    for name in ["cms-delivery-key", "cms-management-key"] {
        dev.patch(
            name,
            json!({"spec": {"rotation": {"trigger": "2027-01-15"}}}),
        )
        .await;
    }
    for (name, slot, old, prefix) in [
        ("cms-delivery-key", "delivery", &old_delivery, "acme_dt_"),
        (
            "cms-management-key",
            "management",
            &old_management,
            "acme_sk_",
        ),
    ] {
        let key = dev
            .wait_delivered(name, &format!("{name} to regenerate"), |k| {
                token(k, slot)["id"] != token_id(old) && ready(k)
            })
            .await;
        let new = eventually("the Secret to hold the new token", || async {
            let value = dev.secret_value(name, slot).await;
            (&value != old).then_some(value)
        })
        .await;
        check_token(&key, slot, &new, prefix, Encoding::Base62);
        // A fresh lifetime from the new issue time.
        let t = token(&key, slot);
        assert!(time(&t["expiresAt"]) > time(&t["issuedAt"]));
        dev.wait_code(json!({"token": new}), &["VALID"]).await;
    }
    assert!(
        token(&dev.apikey("cms-delivery-key").await.unwrap(), "delivery")["previous"].is_object(),
        "the replaced delivery token is in its overlap"
    );
    // Overlap 24h: the old delivery token still verifies. Overlap "0": the old management
    // token no longer does.
    assert_eq!(dev.code(json!({"token": old_delivery})).await, "VALID");
    dev.wait_code(
        json!({"token": old_management}),
        &["REVOKED", "NOT_FOUND", "EXPIRED"],
    )
    .await;

    // A week before the management key's expiry: Expiring (controller clock only).
    let management_key = dev.apikey("cms-management-key").await.unwrap();
    let expires = time(&token(&management_key, "management")["expiresAt"]);
    dev.move_clock(
        expires
            .checked_sub(SignedDuration::from_hours(24 * 3))
            .unwrap(),
        &["cms-management-key", "cms-delivery-key"],
    )
    .await;
    dev.wait_key("cms-management-key", "Expiring=True", |k| {
        condition(k, "Expiring").is_some_and(|c| c.0 == "True")
    })
    .await;
    // The delivery key was reconciled at the moved time too: its replaced token's day of
    // overlap is over and gone from the status. A year-long key is not expiring yet.
    let delivery_key = dev
        .wait_key(
            "cms-delivery-key",
            "the delivery key's overlap to end",
            |k| token(k, "delivery")["previous"].is_null(),
        )
        .await;
    assert_eq!(
        condition(&delivery_key, "Expiring").map(|c| c.0),
        Some("False".into()),
        "the one-year key is not expiring yet"
    );
    eventually("an Expiring event", || async {
        dev.cluster
            .list("events.k8s.io/v1", "Event", Some(NS))
            .await
            .into_iter()
            .find(|e| e["reason"] == "Expiring" && e["regarding"]["name"] == "cms-management-key")
    })
    .await;

    // Past expiry: Expired, not Ready.
    dev.move_clock(
        expires.checked_add(SignedDuration::from_hours(1)).unwrap(),
        &["cms-management-key"],
    )
    .await;
    dev.wait_key("cms-management-key", "Expired=True, Ready=False", |k| {
        condition(k, "Expired").is_some_and(|c| c.0 == "True") && !ready(k)
    })
    .await;
}

/// The public id of a token.
fn token_id(value: &str) -> Value {
    json!(keysmith::token::parse(value).unwrap().id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_delivery() {
    let dev = Dev::start("public-delivery.yaml").await;
    let mut tokens = Vec::new();
    for name in ["storefront-web", "storefront-mobile"] {
        let key = dev.ready(name).await;
        // Each consumer has its own Secret, named after the key.
        let value = dev.secret_value(name, "CMS_PUBLIC_DELIVERY_TOKEN").await;
        dev.wait_code(json!({"token": value}), &["VALID"]).await;
        check_token(&key, "delivery", &value, "cmspub_", Encoding::Base62);
        let issued = time(&token(&key, "delivery")["issuedAt"]);
        let next = time(&key["status"]["nextRotationAt"]);
        // 90 days, delayed by a deterministic jitter of at most an hour.
        let after = next.duration_since(issued);
        let ninety_days = SignedDuration::from_hours(90 * 24);
        assert!(
            after >= ninety_days && after <= ninety_days + SignedDuration::from_hours(1),
            "next rotation {after:?} after issue"
        );

        let answer = dev
            .verify(json!({"token": value, "action": "content.read", "context": {"status": "published"}}))
            .await;
        assert_eq!(answer["code"], "VALID", "{answer}");
        assert_eq!(answer["metadata"]["consumer"], name, "{answer}");
        for body in [
            json!({"token": value, "action": "content.read", "context": {"status": "draft"}}),
            json!({"token": value, "action": "content.update", "context": {"status": "published"}}),
        ] {
            assert_eq!(dev.code(body.clone()).await, "FORBIDDEN", "{body}");
        }
        // From a gateway: authentication answers 200 with the key's name; an action answers
        // 403, because /v1/authz carries no context.status for the published-only grant.
        let gateway = request(dev.api, "GET", "/v1/authz", &[("X-API-Key", &value)], None).await;
        assert_eq!(gateway.status, 200, "{gateway:?}");
        assert_eq!(
            gateway.header("X-Keysmith-Key"),
            Some(format!("default/{name}").as_str())
        );
        let gateway = request(
            dev.api,
            "GET",
            "/v1/authz?action=content.read",
            &[("X-API-Key", &value)],
            None,
        )
        .await;
        assert_eq!(gateway.status, 403, "{gateway:?}");
        tokens.push(value);
    }
    assert_ne!(tokens[0], tokens[1]);

    // Rotating one consumer leaves the other alone.
    let mobile = dev.apikey("storefront-mobile").await.unwrap();
    let web = dev.apikey("storefront-web").await.unwrap();
    dev.patch(
        "storefront-mobile",
        json!({"metadata": {"annotations": {"keysmith.dev/rotate": "1"}}}),
    )
    .await;
    dev.wait_key("storefront-mobile", "storefront-mobile to rotate", |k| {
        token(k, "delivery")["id"] != token(&mobile, "delivery")["id"] && ready(k)
    })
    .await;
    assert_eq!(
        token(&dev.apikey("storefront-web").await.unwrap(), "delivery")["id"],
        token(&web, "delivery")["id"]
    );
    assert_eq!(
        dev.secret_value("storefront-web", "CMS_PUBLIC_DELIVERY_TOKEN")
            .await,
        tokens[0]
    );
    // The replaced mobile token keeps verifying for the overlap.
    assert_eq!(dev.code(json!({"token": tokens[1]})).await, "VALID");
}
