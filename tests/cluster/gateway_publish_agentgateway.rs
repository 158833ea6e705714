//! `spec.publish` for agentgateway end to end: the Secret its `apiKeyAuthentication` reads,
//! golden through the first mint, a rotation with overlap, the end of the overlap, disabling and
//! revocation, holding hashes and client metadata and never a token.

use std::collections::BTreeMap;

use crate::harness::controller::*;
use crate::harness::eventually;
use jiff::SignedDuration;
use keysmith::token::sha256_hex;
use serde_json::{Value, json};

const SECRET: &str = "site-agentgateway";

fn key(trigger: &str, disabled: bool) -> String {
    format!(
        r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {{name: site, namespace: cms}}
spec:
  environment: production
  disabled: {disabled}
  tokens: [{{name: delivery, prefix: cms_dt_}}]
  rotation: {{trigger: "{trigger}", overlap: 1h}}
  publish: [{{agentgateway: {{}}}}]
"#
    )
}

/// The entry agentgateway reads for `token`, published under `client`, byte for byte.
fn entry(client: &str, token: &str) -> String {
    format!(
        r#"{{"keyHash":"sha256:{}","metadata":{{"namespace":"cms","apikey":"site","slot":"delivery","clientId":"{client}","tokenId":"{}","environment":"production"}}}}"#,
        sha256_hex(token),
        &token[.."cms_dt_".len() + 6]
    )
}

/// Wait until the agentgateway Secret holds exactly `expected`; the Secret.
async fn wait_entries(h: &Harness, expected: &[(&str, &str)]) -> Value {
    let expected: BTreeMap<String, String> = expected
        .iter()
        .map(|(client, token)| ((*client).to_owned(), entry(client, token)))
        .collect();
    eventually("the agentgateway Secret's entries", || async {
        let secret = h.secret(SECRET).await?;
        (secret_data(&secret) == expected).then_some(secret)
    })
    .await
}

fn token_value(h_secret: &Value) -> String {
    secret_value(h_secret, "delivery").expect("the key's Secret holds the token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agentgateway_secret_holds_hashes_through_rotation_overlap_disable_and_revocation() {
    let h = Harness::start().await;
    h.apply(&key("one", false)).await;
    h.wait_key("site", "Ready", ready).await;
    h.settle().await;
    let first = token_value(&h.secret("site").await.unwrap());

    // Golden shape: what agentgateway's controller reads, and Keysmith's marks.
    let secret = wait_entries(&h, &[("cms.site.delivery", &first)]).await;
    let apikey = h.apikey("site").await.unwrap();
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(
        secret["metadata"]["labels"],
        json!({"app.kubernetes.io/managed-by": "keysmith", "keysmith.dev/apikey": "site", "keysmith.dev/published-for": "agentgateway"})
    );
    assert_eq!(
        secret["metadata"]["annotations"],
        json!({"keysmith.dev/token-ids": &first[..13]})
    );
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["uid"], &owner["controller"]),
        (&json!("ApiKey"), &apikey["metadata"]["uid"], &json!(true))
    );
    assert_eq!(
        apikey["status"]["tokens"][0]["sha256"],
        sha256_hex(&first),
        "the hash is the one status shows"
    );

    // A healthy resync writes nothing.
    h.assert_resync_writes_nothing().await;

    // Rotation with overlap: the replaced token's hash stays beside the new one.
    h.apply(&key("two", false)).await;
    h.wait_key("site", "rotation", |k| {
        token(k, "delivery")["rotationTrigger"] == "two"
    })
    .await;
    h.settle().await;
    let second = token_value(&h.secret("site").await.unwrap());
    assert_ne!(first, second);
    let secret = wait_entries(
        &h,
        &[
            ("cms.site.delivery", &second),
            ("cms.site.delivery_previous", &first),
        ],
    )
    .await;
    let written = secret.to_string();
    for token in [&first, &second] {
        let random = &token["cms_dt_".len()..];
        assert!(
            !written.contains(random),
            "a token in the agentgateway Secret: {written}"
        );
    }

    // The overlap ends: the replaced token's entry goes.
    h.clock.advance(SignedDuration::from_mins(61));
    h.settle().await;
    wait_entries(&h, &[("cms.site.delivery", &second)]).await;

    // Disabled: no entry at all; enabled again: the current token is back.
    h.apply(&key("two", true)).await;
    wait_entries(&h, &[]).await;
    h.apply(&key("two", false)).await;
    wait_entries(&h, &[("cms.site.delivery", &second)]).await;

    // Revocation deletes the Secret with the key's own.
    kube::Api::<keysmith::api::ApiKey>::namespaced(h.admin.clone(), NS)
        .delete("site", &Default::default())
        .await
        .expect("delete");
    eventually("the agentgateway Secret to be deleted", || async {
        for name in ["site", SECRET] {
            h.secret(name).await.is_none().then_some(())?;
        }
        Some(())
    })
    .await;
}
