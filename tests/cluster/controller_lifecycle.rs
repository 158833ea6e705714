//! End to end against the API emulator with RBAC on, the controller acting as its ServiceAccount
//! with the chart's rules: create, resync, delete; hand edits; conflicts; invalid specs.

use crate::harness::controller::*;
use keysmith::token::{Token, sha256_hex};
use serde_json::json;

const TWO_SLOTS: &str = r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: site, namespace: cms}
spec:
  tokens:
    - {name: delivery, prefix: cms_dt_, secretKey: DELIVERY_TOKEN}
    - {name: preview, prefix: cms_pt_, encoding: hex}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_mints_resync_writes_nothing_delete_revokes() {
    let mut h = Harness::start().await;
    h.apply(TWO_SLOTS).await;
    let key = h.wait_key("site", "Ready", ready).await;
    h.settle().await;

    // One key per slot, tokens of the right format, hashes matching status.
    let secret = h.secret("site").await.expect("Secret written");
    let delivery = secret_value(&secret, "DELIVERY_TOKEN").unwrap();
    let preview = secret_value(&secret, "preview").unwrap();
    let delivery_token = Token::try_from(delivery.clone()).expect("checksum holds");
    assert_eq!(delivery_token.prefix(), "cms_dt_");
    assert!(Token::try_from(preview.clone()).is_ok());
    assert!(preview.starts_with("cms_pt_"));
    assert_eq!(secret["data"].as_object().unwrap().len(), 2);
    assert_eq!(token(&key, "delivery")["sha256"], sha256_hex(&delivery));
    assert_eq!(token(&key, "preview")["sha256"], sha256_hex(&preview));
    assert_eq!(token(&key, "delivery")["id"], delivery_token.id());
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "keysmith"
    );
    assert_eq!(secret["metadata"]["labels"]["keysmith.dev/apikey"], "site");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(
        key["metadata"]["finalizers"],
        json!(["keysmith.dev/revoke"])
    );
    assert_eq!(condition(&key, "Ready").unwrap().1, "Minted");
    assert_eq!(key["status"]["observedGeneration"], 1);
    assert_eq!(h.events("Minted").await.len(), 1);

    // A new key costs three writes: finalizer, status, Secret.
    let mint_writes = h.controller_writes();
    println!(
        "API writes per mint: {} ({:?}), plus {} event write(s)",
        mint_writes.len(),
        mint_writes
            .iter()
            .map(|e| format!(
                "{} {}{}",
                e.verb,
                e.resource,
                if e.subresource.is_empty() {
                    String::new()
                } else {
                    format!("/{}", e.subresource)
                }
            ))
            .collect::<Vec<_>>(),
        h.event_writes()
    );
    assert_eq!(mint_writes.len(), 3);

    // A healthy resync writes nothing, and status writes do not wake the controller in a loop.
    h.cluster.clear_requests();
    let before = h.reconciles();
    h.settle().await;
    h.settle().await;
    assert!(h.reconciles() > before);
    println!(
        "API writes per healthy resync: {}",
        h.controller_writes().len()
    );
    assert_eq!(h.controller_writes().len(), 0);
    assert_eq!(h.event_writes(), 0);

    // Metrics.
    let metrics = h.metrics();
    assert!(
        metrics.contains(r#"keysmith_tokens_minted_total{reason="initial"} 2"#),
        "{metrics}"
    );
    for (condition, value) in [("True", 1), ("False", 0), ("Unknown", 0)] {
        let series = format!(
            r#"keysmith_apikey_ready_status{{namespace="{NS}",apikey="site",condition="{condition}"}} {value}"#
        );
        assert!(metrics.contains(&series), "{series}\n{metrics}");
    }
    assert!(
        !metrics.contains("keysmith_token_next_rotation_timestamp_seconds{"),
        "no rotation cadence, no rotation series: {metrics}"
    );

    // Delete = revoke: Secret gone, event, finalizer released (the ApiKey disappears).
    let api: kube::Api<keysmith::api::ApiKey> = kube::Api::namespaced(h.admin.clone(), NS);
    api.delete("site", &Default::default()).await.unwrap();
    eventually("ApiKey gone", || async {
        h.apikey("site").await.is_none().then_some(())
    })
    .await;
    assert!(
        h.secret("site").await.is_none(),
        "revocation deletes the Secret"
    );
    assert_eq!(h.events("Revoked").await.len(), 1);
    assert!(
        !h.metrics().contains("apikey=\"site\""),
        "expiry and ready series forgotten"
    );
    // A pass queued by the Secret's deletion may still see the deleted key; finding its
    // finalizer already removed is no error (the shipped alert fires on this counter).
    let metrics = h.metrics();
    let errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("keysmith_reconcile_errors_total{"))
        .collect();
    assert_eq!(errors.len(), 4, "every reason is exported: {metrics}");
    assert!(errors.iter().all(|l| l.ends_with(" 0")), "{metrics}");
    h.stop().await;
}

/// A new key is minted by the pass that adds its finalizer: every pass begins by reading the
/// key, so a second pass would show as a read of it between the finalizer and the status write.
/// The finalizer comes first, so a crash never leaves a Secret that a deletion would not revoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_is_minted_in_the_pass_that_adds_its_finalizer() {
    let mut h = Harness::start().await;
    h.apply(TWO_SLOTS).await;
    h.wait_key("site", "Ready", ready).await;
    h.settle().await;
    let user = controller_user();
    let requests: Vec<String> = h
        .cluster
        .requests(|e| e.user == user && e.name == "site" && e.resource != "events")
        .iter()
        .map(|e| {
            let write = if e.is_write() { " (write)" } else { "" };
            match e.subresource.as_str() {
                "" => format!("{} {}{write}", e.verb, e.resource),
                sub => format!("{} {}/{sub}{write}", e.verb, e.resource),
            }
        })
        .collect();
    let first = |what: &str| {
        requests
            .iter()
            .position(|r| r.starts_with(what) && r.ends_with("(write)"))
            .unwrap_or_else(|| panic!("no {what} write in {requests:?}"))
    };
    let (finalizer, status, secret) = (
        first("patch apikeys"),
        first("update apikeys/status"),
        first("patch secrets"),
    );
    assert!(
        finalizer < status && status < secret,
        "finalizer, status, Secret in that order: {requests:?}"
    );
    assert!(
        !requests[finalizer..status]
            .iter()
            .any(|r| r.starts_with("get apikeys")),
        "one pass from the finalizer to the Secret: {requests:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_deleted_or_edited_by_hand_is_reminted() {
    let h = Harness::start().await;
    h.apply(TWO_SLOTS).await;
    let key = h.wait_key("site", "Ready", ready).await;
    h.settle().await;
    let first = token(&key, "delivery")["sha256"].clone();

    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(h.admin.clone(), NS);
    secrets.delete("site", &Default::default()).await.unwrap();
    let key = h
        .wait_key("site", "re-mint after delete", |k| {
            token(k, "delivery")["sha256"] != first
        })
        .await;
    assert_eq!(
        token(&key, "delivery")["previous"]["sha256"],
        first,
        "the lost token overlaps: {:#}",
        key["status"]
    );
    let secret = eventually("Secret back", || async { h.secret("site").await }).await;
    assert_eq!(
        sha256_hex(&secret_value(&secret, "DELIVERY_TOKEN").unwrap()),
        token(&key, "delivery")["sha256"].as_str().unwrap()
    );

    let second = token(&key, "preview")["sha256"].clone();
    let patch = json!({"data": {"preview": "ZWRpdGVkIGJ5IGhhbmQ="}});
    secrets
        .patch(
            "site",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await
        .unwrap();
    let key = h
        .wait_key("site", "re-mint after edit", |k| {
            token(k, "preview")["sha256"] != second
        })
        .await;
    let secret = eventually("Secret repaired", || async {
        h.secret("site").await.filter(|s| {
            secret_value(s, "preview").map(|v| sha256_hex(&v))
                == token(&key, "preview")["sha256"].as_str().map(str::to_owned)
        })
    })
    .await;
    assert!(
        secret_value(&secret, "preview")
            .unwrap()
            .starts_with("cms_pt_")
    );
    // Counted once the Secret write has returned to the controller, just after the test sees it.
    let counter = r#"keysmith_tokens_minted_total{reason="secret-changed"}"#;
    eventually(counter, || async {
        h.metrics().contains(counter).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unowned_secret_is_a_conflict_and_stays_untouched_unless_adopted() {
    let h = Harness::start().await;
    h.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: site, namespace: cms}\ndata: {mine: c2VjcmV0}\n",
    ).await;
    let before = h.secret("site").await.unwrap();
    h.apply(TWO_SLOTS).await;
    let key = h
        .wait_key("site", "SecretConflict", |k| {
            condition(k, "Ready").is_some_and(|(_, r)| r == "SecretConflict")
        })
        .await;
    h.settle().await;
    let message = key["status"]["conditions"][0]["message"].as_str().unwrap();
    assert!(message.contains("adopt"), "{message}");
    assert_eq!(
        h.secret("site").await.unwrap(),
        before,
        "the Secret is untouched"
    );
    assert_eq!(h.events("SecretConflict").await.len(), 1);
    assert!(key["status"]["tokens"].is_null());

    // adopt alone is not consent: only someone who may write the Secret can give it.
    h.apply(ADOPTING).await;
    let key = h
        .wait_key("site", "SecretConflict naming the opt-in", |k| {
            k["status"]["conditions"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("keysmith.dev/adopt=site"))
        })
        .await;
    assert_eq!(condition(&key, "Ready").unwrap().1, "SecretConflict");
    h.settle().await;
    assert_eq!(h.secret("site").await.unwrap(), before, "still untouched");

    // With the Secret's opt-in the key takes it over.
    h.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: site, namespace: cms, annotations: {keysmith.dev/adopt: site}}\ndata: {mine: c2VjcmV0}\n",
    )
    .await;
    // The Secret is not labelled as Keysmith's, so its change wakes nothing but a resync.
    h.clock.resync();
    h.wait_key("site", "Ready after adopt", ready).await;
    let secret = eventually("adopted", || async {
        h.secret("site")
            .await
            .filter(|s| s["metadata"]["ownerReferences"].is_array())
    })
    .await;
    assert!(secret_value(&secret, "DELIVERY_TOKEN").is_some());
    h.settle().await;

    // Revocation removes what Keysmith wrote and leaves the Secret with its own keys.
    let api: kube::Api<keysmith::api::ApiKey> = kube::Api::namespaced(h.admin.clone(), NS);
    api.delete("site", &Default::default()).await.unwrap();
    eventually("ApiKey gone", || async {
        h.apikey("site").await.is_none().then_some(())
    })
    .await;
    // Revocation ran before the finalizer let the key go.
    let secret = h.secret("site").await.expect("an adopted Secret survives");
    let keys: Vec<&String> = secret["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["mine"]);
    assert_eq!(secret_value(&secret, "mine").unwrap(), "secret");
    let meta = &secret["metadata"];
    assert!(meta["ownerReferences"].is_null(), "{meta}");
    assert!(
        meta["labels"].get("keysmith.dev/apikey").is_none(),
        "{meta}"
    );
    assert!(
        meta["annotations"].get("keysmith.dev/token-ids").is_none(),
        "{meta}"
    );
    assert_eq!(meta["annotations"]["keysmith.dev/adopt"], "site");
}

const ADOPTING: &str = r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: site, namespace: cms}
spec:
  tokens: [{name: delivery, prefix: cms_dt_, secretKey: DELIVERY_TOKEN}]
  secret: {adopt: true}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_refuses_another_apikeys_secret_even_with_the_opt_in() {
    let h = Harness::start().await;
    h.apply(
        r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: other, namespace: cms}
spec:
  tokens: [{name: a}]
  secret: {name: site}
"#,
    )
    .await;
    h.wait_key("other", "Ready", ready).await;
    h.settle().await;
    // Whoever annotates it, a Secret another ApiKey controls is never taken over.
    h.apply("apiVersion: v1\nkind: Secret\nmetadata: {name: site, namespace: cms, annotations: {keysmith.dev/adopt: site}}\n")
        .await;
    let before = h.secret("site").await.unwrap();
    h.apply(ADOPTING).await;
    let key = h
        .wait_key("site", "SecretConflict", |k| {
            condition(k, "Ready").is_some_and(|(_, r)| r == "SecretConflict")
        })
        .await;
    let message = key["status"]["conditions"][0]["message"].as_str().unwrap();
    assert!(message.contains("ApiKey other"), "{message}");
    h.settle().await;
    assert_eq!(h.secret("site").await.unwrap(), before, "untouched");
    assert!(key["status"]["tokens"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_spec_names_the_field_and_touches_nothing() {
    let h = Harness::start().await;
    // Passes the CRD schema (pattern) but not the 5y lifetime limit the controller checks.
    h.apply(
        r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: site, namespace: cms}
spec:
  tokens: [{name: delivery}]
  expiresAfter: 6000d
"#,
    )
    .await;
    let key = h
        .wait_key("site", "InvalidSpec", |k| {
            condition(k, "Ready").is_some_and(|(_, r)| r == "InvalidSpec")
        })
        .await;
    let message = key["status"]["conditions"][0]["message"].as_str().unwrap();
    assert!(message.contains("spec.expiresAfter"), "{message}");
    h.settle().await;
    assert!(h.secret("site").await.is_none());
    assert_eq!(h.events("InvalidSpec").await.len(), 1);
    // No retry storm: further passes write nothing.
    h.cluster.clear_requests();
    h.settle().await;
    h.settle().await;
    assert_eq!(h.controller_writes().len(), 0);
    assert_eq!(h.events("InvalidSpec").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selector_and_namespace_shard_the_keys() {
    let h = Harness::start_scoped(keysmith::scope::Scope {
        namespace: Some(NS.into()),
        selector: Some("shard=a".into()),
    })
    .await;
    h.apply(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: mine, namespace: cms, labels: {shard: a}}
spec: {tokens: [{name: a}]}
---
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: theirs, namespace: cms, labels: {shard: b}}
spec: {tokens: [{name: a}]}
---
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: elsewhere, namespace: other, labels: {shard: a}}
spec: {tokens: [{name: a}]}
"#,
    )
    .await;
    h.wait_key("mine", "Ready", ready).await;
    h.settle().await;
    assert!(h.apikey("theirs").await.unwrap()["status"].is_null());
    let elsewhere = h
        .cluster
        .get("keysmith.dev/v1alpha1", "ApiKey", "other", "elsewhere")
        .await
        .unwrap();
    assert!(elsewhere["status"].is_null());
    assert!(h.controller_writes().iter().all(|e| e.name == "mine"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_report_api_error_and_recover() {
    let h = Harness::start().await;
    let emu = needs_emulator(&h.cluster, "injected 500s on Secret writes");
    emu.faults()
        .error_rate(keysmith_emulator::Target::new("patch", "secrets"), 500, 1.0);
    h.apply(TWO_SLOTS).await;
    let key = h
        .wait_key("site", "ApiError", |k| {
            condition(k, "Ready").is_some_and(|(_, r)| r == "ApiError")
        })
        .await;
    let message = key["status"]["conditions"][0]["message"].as_str().unwrap();
    assert!(message.contains("writing Secret cms/site"), "{message}");
    emu.faults().clear();
    h.clock.resync();
    h.wait_key("site", "recovered", ready).await;
    let secret = eventually("Secret written", || async { h.secret("site").await }).await;
    let key = h.apikey("site").await.unwrap();
    assert_eq!(
        sha256_hex(&secret_value(&secret, "DELIVERY_TOKEN").unwrap()),
        token(&key, "delivery")["sha256"].as_str().unwrap()
    );
    let metrics = h.metrics();
    let api_errors = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"keysmith_reconcile_errors_total{reason="api"} "#))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        api_errors.is_some_and(|n| n > 0),
        "the failed writes are counted: {metrics}"
    );
}

fn one_slot(name: &str) -> String {
    format!(
        "apiVersion: keysmith.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: {name}, namespace: cms}}\nspec:\n  tokens: [{{name: main}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_apikey_is_skipped_counted_and_still_revoked() {
    crate::harness::logs::capture("info");
    // One key the controller cannot read is there before it starts (its first list), another
    // turns unreadable while it runs.
    let cluster = cluster().await;
    crate::harness::write_unreadable_apikey(&cluster, NS, "broken").await;
    let h = Harness::start_on(cluster, Default::default()).await;
    h.apply(TWO_SLOTS).await;
    h.wait_key("site", "Ready beside an unreadable key", ready)
        .await;
    h.apply(&one_slot("flip")).await;
    h.wait_key("flip", "Ready", ready).await;
    crate::harness::write_unreadable_apikey(&h.cluster, NS, "flip").await;
    let counter = "keysmith_apikeys_unreadable_total 2";
    eventually(counter, || async {
        h.metrics().contains(counter).then_some(())
    })
    .await;
    let logs = crate::harness::logs::text();
    assert!(
        logs.lines().any(|l| l.contains("WARN")
            && l.contains(r#""namespace":"cms""#)
            && l.contains(r#""name":"broken""#)
            && l.contains("tokens")),
        "{logs}"
    );
    // Keys created after the unreadable ones reconcile.
    h.apply(&one_slot("late")).await;
    h.wait_key("late", "Ready", ready).await;

    // Deleting the unreadable key still revokes, from its metadata alone. The API server
    // validates the whole object on any write, so its finalizer cannot be removed while its
    // spec fails the schema: it stays, with a warning saying what to do, until the spec is
    // fixed, and then goes as any key does.
    crate::harness::raw_apikeys(&h.admin, NS)
        .delete("flip", &Default::default())
        .await
        .unwrap();
    eventually("the Secret of the unreadable key deleted", || async {
        h.secret("flip").await.is_none().then_some(())
    })
    .await;
    // The event follows the Secret's deletion.
    eventually("a Revoked event for the unreadable key", || async {
        let revoked = h.events("Revoked").await;
        revoked
            .iter()
            .any(|e| e["regarding"]["name"] == "flip")
            .then_some(())
    })
    .await;
    eventually("the warning on the kept finalizer", || async {
        crate::harness::logs::text()
            .contains("the finalizer stays: the stored ApiKey fails the schema")
            .then_some(())
    })
    .await;
    crate::harness::write_raw_apikey(
        &h.admin,
        NS,
        "flip",
        json!({"spec": {"tokens": [{"name": "main"}]}}),
    )
    .await
    .unwrap();
    eventually("the fixed, deleted ApiKey to be gone", || async {
        h.apikey("flip").await.is_none().then_some(())
    })
    .await;

    // Fixed, it is picked up.
    crate::harness::write_raw_apikey(
        &h.admin,
        NS,
        "broken",
        json!({"spec": {"tokens": [{"name": "main"}]}}),
    )
    .await
    .unwrap();
    h.wait_key("broken", "Ready once fixed", ready).await;
    // Once per version: the two unreadable writes and the deletion's, whatever the relists.
    assert!(
        h.metrics().contains("keysmith_apikeys_unreadable_total 3"),
        "{}",
        h.metrics()
    );
}
