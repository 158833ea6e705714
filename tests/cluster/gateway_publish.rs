//! `spec.publish` end to end: the Envoy Gateway Secret and the Kong credential Secrets plus the
//! KongConsumer's `credentials`, golden through a rotation with overlap, the end of the overlap
//! and a revocation; the chart's Kong rules suffice and are all used; and an ApiKey cannot make
//! Keysmith write a Secret or a consumer that is not its own.

use std::collections::BTreeMap;

use crate::harness::controller::*;
use crate::harness::eventually;
use jiff::SignedDuration;
use serde_json::{Value, json};

/// KongConsumer as Kong's ingress controller defines it (configuration.konghq.com/v1), reduced
/// to the fields that matter here but of the same shape: `credentials` is a plain list of
/// strings with no list type, so server-side apply treats it as atomic.
const KONG_CONSUMER_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: kongconsumers.configuration.konghq.com}
spec:
  group: configuration.konghq.com
  scope: Namespaced
  names: {kind: KongConsumer, listKind: KongConsumerList, plural: kongconsumers, singular: kongconsumer, shortNames: [kc]}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            apiVersion: {type: string}
            kind: {type: string}
            metadata: {type: object}
            username: {type: string}
            custom_id: {type: string}
            credentials: {type: array, items: {type: string}}
            consumerGroups: {type: array, items: {type: string}}
"#;

const CONSUMERS: &str = r#"
apiVersion: configuration.konghq.com/v1
kind: KongConsumer
metadata:
  name: shop
  namespace: cms
  annotations: {kubernetes.io/ingress.class: kong, keysmith.dev/kong-credentials-from: site}
username: shop
credentials: [hand-made]
---
apiVersion: configuration.konghq.com/v1
kind: KongConsumer
metadata:
  name: payments
  namespace: cms
  annotations: {kubernetes.io/ingress.class: kong}
username: payments
credentials: [payments-key]
"#;

fn key(trigger: &str) -> String {
    format!(
        r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {{name: site, namespace: cms}}
spec:
  tokens: [{{name: delivery, prefix: cms_dt_}}]
  rotation: {{trigger: "{trigger}", overlap: 1h}}
  publish: [{{envoyGateway: {{}}}}, {{kong: {{consumer: shop}}}}]
"#
    )
}

/// A cluster with Kong's consumer kind, the chart's Kong rules granted to the controller (as
/// `gateways.kong.enabled` does), and the two consumers; then the controller.
/// The key published for both gateways, Ready with its first token out: the harness and that
/// token.
async fn published_key() -> (Harness, String) {
    let h = start().await;
    h.apply(&key("one")).await;
    h.wait_key("site", "Ready", ready).await;
    h.settle().await;
    let first = token_value(&h.secret("site").await.unwrap());
    wait_published(&h, &first, None).await;
    (h, first)
}

/// Rotate the published key (trigger `two`) and wait until the gateways' Secrets hold the new
/// token beside `first` (the overlap): the new token.
async fn rotate_published(h: &Harness, first: &str) -> String {
    h.apply(&key("two")).await;
    h.wait_key("site", "rotation", |k| {
        token(k, "delivery")["rotationTrigger"] == "two"
    })
    .await;
    h.settle().await;
    let second = token_value(&h.secret("site").await.unwrap());
    wait_published(h, &second, Some(first)).await;
    second
}

async fn start() -> Harness {
    let cluster = cluster().await;
    let rules: Value = serde_saphyr::from_str(include_str!(
        "../../charts/keysmith/files/controller-kong-rules.yaml"
    ))
    .expect("rules parse");
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "keysmith-controller-kong"}, "rules": rules,
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "keysmith-controller-kong"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "keysmith-controller-kong"},
        "subjects": [{"kind": "ServiceAccount", "name": CONTROLLER_SA, "namespace": CONTROLLER_NS}],
    });
    for object in [role, binding] {
        cluster
            .apply_object(&object)
            .await
            .expect("Kong rules apply");
    }
    cluster
        .apply_yaml(KONG_CONSUMER_CRD)
        .await
        .expect("CRD applies");
    eventually("KongConsumers to be served", || async {
        cluster.apply_yaml(CONSUMERS).await.ok()
    })
    .await;
    Harness::start_on(cluster, Default::default()).await
}

fn credentials(consumer: &Value) -> Vec<String> {
    serde_json::from_value(consumer["credentials"].clone()).unwrap_or_default()
}

async fn consumer(h: &Harness, name: &str) -> Value {
    h.cluster
        .get("configuration.konghq.com/v1", "KongConsumer", NS, name)
        .await
        .expect("the consumer exists")
}

/// Wait for the published Secrets and the consumer to show `delivery` (current) and `previous`.
async fn wait_published(h: &Harness, current: &str, previous: Option<&str>) {
    let mut envoy = BTreeMap::from([("cms.site.delivery".to_owned(), current.to_owned())]);
    let mut listed = vec!["hand-made".to_owned(), "site.delivery.kong".to_owned()];
    if let Some(previous) = previous {
        envoy.insert("cms.site.delivery_previous".to_owned(), previous.to_owned());
        listed.push("site.delivery.kong-previous".to_owned());
    }
    eventually("the published Secrets and the consumer list", || async {
        let gateway = h.secret("site-envoy-gateway").await?;
        (secret_data(&gateway) == envoy).then_some(())?;
        let kong = h.secret("site.delivery.kong").await?;
        (secret_value(&kong, "key")? == current).then_some(())?;
        let kong_previous = h.secret("site.delivery.kong-previous").await;
        match (previous, &kong_previous) {
            (Some(p), Some(s)) => (secret_value(s, "key")? == p).then_some(())?,
            (None, None) => {}
            _ => return None,
        }
        (credentials(&consumer(h, "shop").await) == listed).then_some(())
    })
    .await;
}

fn token_value(secret: &Value) -> String {
    secret_value(secret, "delivery").expect("the key's Secret holds the token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_secrets_follow_rotation_overlap_and_revocation() {
    let (h, first) = published_key().await;

    // Golden shapes: what Envoy Gateway and Kong's ingress controller read.
    let gateway = h.secret("site-envoy-gateway").await.unwrap();
    let apikey = h.apikey("site").await.unwrap();
    assert_eq!(gateway["type"], "Opaque");
    assert_eq!(
        gateway["metadata"]["labels"],
        json!({"app.kubernetes.io/managed-by": "keysmith", "keysmith.dev/apikey": "site", "keysmith.dev/published-for": "envoy-gateway"})
    );
    let owner = &gateway["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["uid"], &owner["controller"]),
        (&json!("ApiKey"), &apikey["metadata"]["uid"], &json!(true))
    );
    let kong = h.secret("site.delivery.kong").await.unwrap();
    assert_eq!(
        kong["metadata"]["labels"]["konghq.com/credential"],
        "key-auth"
    );
    assert_eq!(
        secret_data(&kong),
        BTreeMap::from([("key".to_owned(), first.clone())])
    );
    let shop = consumer(&h, "shop").await;
    let managers: Vec<&str> = shop["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["fieldsV1"]["f:credentials"].is_object())
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(
        managers,
        ["keysmith-kong"],
        "Keysmith applies credentials under its own manager"
    );

    // A healthy resync writes nothing.
    h.assert_resync_writes_nothing().await;

    // Rotation with overlap: the old token stays published beside the new one.
    let second = rotate_published(&h, &first).await;
    assert_ne!(first, second);

    // The overlap ends: only entries change, the old token leaves every gateway Secret.
    h.clock.advance(SignedDuration::from_mins(61));
    h.settle().await;
    wait_published(&h, &second, None).await;

    // Revocation: every published credential goes, the consumer keeps what others listed.
    kube::Api::<keysmith::api::ApiKey>::namespaced(h.admin.clone(), NS)
        .delete("site", &Default::default())
        .await
        .expect("delete");
    eventually("every published Secret to be deleted", || async {
        for name in ["site", "site-envoy-gateway", "site.delivery.kong"] {
            h.secret(name).await.is_none().then_some(())?;
        }
        (credentials(&consumer(&h, "shop").await) == ["hand-made"]).then_some(())
    })
    .await;

    // The chart's Kong rules were enough, and both verbs were used.
    let user = controller_user();
    let kong_requests = h
        .cluster
        .requests(|e| e.user == user && e.resource == "kongconsumers");
    assert!(
        kong_requests.iter().all(|e| e.code != 403),
        "{kong_requests:?}"
    );
    for verb in ["get", "patch"] {
        assert!(
            kong_requests
                .iter()
                .any(|e| e.verb == verb && (200..300).contains(&e.code)),
            "{verb} kongconsumers unused: {kong_requests:?}"
        );
    }
}

/// The controller's `list secrets` requests since the last [`Cluster::clear_requests`]: only
/// publishing reads its published Secrets by list.
fn secret_lists(h: &Harness) -> usize {
    let user = controller_user();
    h.cluster
        .requests(|e| e.user == user && e.verb == "list" && e.resource == "secrets")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_publishing_nothing_costs_no_list_and_withdrawing_publication_cleans_up() {
    let h = start().await;
    // A key that never published: its reconciles read its Secret, and list nothing.
    h.apply(&key("one").replace(
        "  publish: [{envoyGateway: {}}, {kong: {consumer: shop}}]\n",
        "",
    ))
    .await;
    h.wait_key("site", "Ready", ready).await;
    h.settle().await;
    h.cluster.clear_requests();
    h.settle().await;
    assert_eq!(
        secret_lists(&h),
        0,
        "a resync of a key that publishes nothing"
    );

    // Published, then withdrawn: the spec names no gateway, yet what was published goes.
    h.apply(&key("one")).await;
    let first = token_value(&h.secret("site").await.unwrap());
    wait_published(&h, &first, None).await;
    h.apply(&key("one").replace("[{envoyGateway: {}}, {kong: {consumer: shop}}]", "[]"))
        .await;
    eventually("the published Secrets to be withdrawn", || async {
        for name in ["site-envoy-gateway", "site.delivery.kong"] {
            h.secret(name).await.is_none().then_some(())?;
        }
        (credentials(&consumer(&h, "shop").await) == ["hand-made"]).then_some(())
    })
    .await;
    assert_eq!(
        token_value(&h.secret("site").await.unwrap()),
        first,
        "withdrawing publication leaves the key's own Secret alone"
    );
    h.settle().await;
    h.cluster.clear_requests();
    h.settle().await;
    assert_eq!(secret_lists(&h), 0, "once nothing is published any more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apikey_cannot_publish_into_objects_that_are_not_its_own() {
    let h = start().await;
    // Another team's Secret (the one its gateway reads) and its consumer, which does not opt in.
    h.apply(
        r#"
apiVersion: v1
kind: Secret
metadata: {name: payments-keys, namespace: cms}
stringData: {cms.payments.api: their-key}
"#,
    )
    .await;
    h.cluster.clear_requests();
    h.apply(
        r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: intruder, namespace: cms}
spec:
  tokens: [{name: api}]
  publish: [{envoyGateway: {secretName: payments-keys}}, {kong: {consumer: payments}}]
"#,
    )
    .await;
    let refused = h
        .wait_key("intruder", "Ready=False naming spec.publish", |k| {
            k["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| {
                    c["type"] == "Ready"
                        && c["reason"] == "ApiError"
                        && c["message"]
                            .as_str()
                            .is_some_and(|m| m.starts_with("spec.publish"))
                })
        })
        .await;
    println!("{}", refused["status"]["conditions"]);
    // The shop consumer opts in for `site` only.
    h.apply(
        r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: intruder2, namespace: cms}
spec:
  tokens: [{name: api}]
  publish: [{kong: {consumer: shop}}]
"#,
    )
    .await;
    h.wait_key("intruder2", "Ready=False naming the consent", |k| {
        k["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["reason"] == "ApiError"
                    && c["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("keysmith.dev/kong-credentials-from=intruder2"))
            })
    })
    .await;

    let secret = h.secret("payments-keys").await.unwrap();
    assert_eq!(
        secret_data(&secret),
        BTreeMap::from([("cms.payments.api".to_owned(), "their-key".to_owned())])
    );
    assert!(secret["metadata"]["ownerReferences"].is_null());
    assert_eq!(
        credentials(&consumer(&h, "payments").await),
        ["payments-key"]
    );
    assert_eq!(credentials(&consumer(&h, "shop").await), ["hand-made"]);
    // Refused, not written: the only request that named the foreign Secret may be a create,
    // which the API server refuses because the name is taken (that is how the controller finds
    // out, with no read before).
    let user = controller_user();
    let writes = h.cluster.requests(|e| {
        e.user == user
            && e.is_write()
            && (e.resource == "kongconsumers" || e.name == "payments-keys")
            && !(e.verb == "create" && e.code == 409)
    });
    assert!(
        writes.is_empty(),
        "wrote into objects not its own: {writes:?}"
    );
}

/// N10: withdrawing publication lists the key's published Secrets, takes them off the
/// consumer's list and deletes them; one taken over by someone else in between is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_secret_taken_over_before_its_withdrawal_is_not_deleted() {
    use crate::secret_races::{is_the_strangers, take_over};
    use k8s_openapi::api::core::v1::Secret;

    let (h, _) = published_key().await;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(h.admin.clone(), NS);
    let emu = crate::harness::emulator_only(&h.cluster, "holding the deletion until the takeover");
    match emu {
        Some(emu) => {
            emu.faults()
                .hold(keysmith_emulator::Target::new("delete", "secrets"));
            h.cluster.clear_requests();
        }
        // Unheld, the withdrawal could delete the Secrets before the takeover.
        None => {
            for name in ["site-envoy-gateway", "site.delivery.kong"] {
                take_over(&secrets, name).await;
            }
        }
    }
    h.apply(&key("one").replace("[{envoyGateway: {}}, {kong: {consumer: shop}}]", "[]"))
        .await;
    if let Some(emu) = emu {
        // The consumer no longer lists the credential: the deletions come next (held).
        eventually("the credential to leave the consumer's list", || async {
            (credentials(&consumer(&h, "shop").await) == ["hand-made"]).then_some(())
        })
        .await;
        for name in ["site-envoy-gateway", "site.delivery.kong"] {
            take_over(&secrets, name).await;
        }
        emu.faults().release();
        let user = controller_user();
        eventually("the held deletion to be answered", || async {
            let answered = h
                .cluster
                .requests(|e| e.user == user && e.verb == "delete" && e.resource == "secrets");
            (!answered.is_empty()).then_some(())
        })
        .await;
    }
    h.wait_key("site", "Ready", ready).await;
    h.settle().await;
    for name in ["site-envoy-gateway", "site.delivery.kong"] {
        let secret = h.secret(name).await.expect("the taken-over Secret");
        assert!(is_the_strangers(&secret), "{name} changed: {secret}");
    }
}

/// N9 migration: a key that published under the names before (`site-delivery-kong`) gets its
/// credential under the new name, and the gateway never misses it: the new Secret is written,
/// then the consumer lists it instead of the old one, then the old one is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_under_the_old_names_move_without_leaving_the_gateway() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{DeleteParams, Patch, PatchParams, PostParams};

    let (mut h, first) = published_key().await;
    // What an earlier version left: the credential under the old name, listed by the consumer.
    h.stop().await;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(h.admin.clone(), NS);
    let mut old = secrets.get("site.delivery.kong").await.expect("published");
    old.metadata = kube::api::ObjectMeta {
        name: Some("site-delivery-kong".to_owned()),
        namespace: old.metadata.namespace.take(),
        labels: old.metadata.labels.take(),
        annotations: old.metadata.annotations.take(),
        owner_references: old.metadata.owner_references.take(),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &old)
        .await
        .expect("the old credential");
    secrets
        .delete("site.delivery.kong", &DeleteParams::default())
        .await
        .expect("delete the new one");
    let consumers = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        h.admin.clone(),
        NS,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("configuration.konghq.com", "v1", "KongConsumer"),
            "kongconsumers",
        ),
    );
    consumers
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"credentials": ["hand-made", "site-delivery-kong"]})),
        )
        .await
        .expect("the consumer lists the old name");

    h.cluster.clear_requests();
    h.start_controller().await;
    wait_published(&h, &first, None).await;
    eventually("the old credential to be deleted", || async {
        h.secret("site-delivery-kong").await.is_none().then_some(())
    })
    .await;
    let user = controller_user();
    let writes = h
        .cluster
        .requests(|e| e.user == user && e.is_write() && e.code < 300);
    let at = |verb: &str, resource: &str, name: &str| {
        writes
            .iter()
            // A create is logged without a name where the log takes it from the URL.
            .position(|e| {
                e.verb == verb
                    && e.resource == resource
                    && (e.name == name || (verb == "create" && e.name.is_empty()))
            })
            .unwrap_or_else(|| panic!("no {verb} {resource}/{name} in {writes:?}"))
    };
    let written = at("create", "secrets", "site.delivery.kong");
    let listed = at("patch", "kongconsumers", "shop");
    let deleted = at("delete", "secrets", "site-delivery-kong");
    assert!(
        written < listed && listed < deleted,
        "new Secret, then the consumer's list, then the old Secret: {writes:?}"
    );
}

/// N9: under the names before, key `team` with slot `api-main` and key `team-api` with slot
/// `main` both published Kong credentials as `team-api-main-kong`, so whichever came first kept
/// the name and the other was refused (or, with a template label, could squat it). Now each has
/// a name of its own, and neither touches the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_whose_names_and_slots_run_together_publish_to_kong_apart() {
    let h = start().await;
    h.apply(
        r#"
apiVersion: configuration.konghq.com/v1
kind: KongConsumer
metadata:
  name: team
  namespace: cms
  annotations: {kubernetes.io/ingress.class: kong, keysmith.dev/kong-credentials-from: "team,team-api"}
username: team
---
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: team, namespace: cms}
spec:
  tokens: [{name: api-main}]
  publish: [{envoyGateway: {}}, {kong: {consumer: team}}]
---
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: team-api, namespace: cms}
spec:
  tokens: [{name: main}]
  publish: [{envoyGateway: {}}, {kong: {consumer: team}}]
"#,
    )
    .await;
    let mut published = BTreeMap::new();
    for (key, slot) in [("team", "api-main"), ("team-api", "main")] {
        let status = h.wait_key(key, "Ready", ready).await;
        let name = format!("{key}.{slot}.kong");
        let secret = eventually("the credential Secret", || async { h.secret(&name).await }).await;
        let own = h.secret(key).await.expect("the key's own Secret");
        let held = secret_value(&secret, "key").expect("a key-auth credential");
        assert_eq!(
            Some(held.clone()),
            secret_value(&own, slot),
            "{name} holds {key}'s token"
        );
        assert_eq!(
            secret["metadata"]["ownerReferences"][0]["uid"], status["metadata"]["uid"],
            "{name} is {key}'s"
        );
        published.insert(name, held);
    }
    // Both keys apply the consumer's whole list at the version they read: one may have to read
    // it again after the other's write.
    eventually("the consumer to list both", || async {
        let listed: std::collections::BTreeSet<String> = credentials(&consumer(&h, "team").await)
            .into_iter()
            .collect();
        (listed == published.keys().cloned().collect()).then_some(())
    })
    .await;
    for key in ["team", "team-api"] {
        h.wait_key(key, "Ready", ready).await;
    }
    assert!(
        h.secret("team-api-main-kong").await.is_none(),
        "the ambiguous name is not used"
    );
}

/// A Gateway (and its class) of Envoy Gateway in the test namespace.
const GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: eg}
spec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: eg, namespace: cms}
spec:
  gatewayClassName: eg
  listeners: [{name: http, protocol: HTTP, port: 80}]
"#;

/// An HTTPRoute `name` on [`GATEWAY`] to a Service of the same name.
fn route(name: &str) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: cms}}
spec:
  parentRefs: [{{name: eg}}]
  rules: [{{backendRefs: [{{name: {name}, port: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: cms}}
spec: {{clusterIP: 10.0.0.10, ports: [{{port: 8080}}]}}
"#
    )
}

/// A SecurityPolicy whose `apiKeyAuth` reads the Secret Keysmith publishes, as
/// docs/gateways.md shows it, on the route `content`.
const API_KEY_POLICY: &str = r#"
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {name: content-keys, namespace: cms}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: content}]
  apiKeyAuth:
    credentialRefs: [{kind: Secret, name: site-envoy-gateway}]
    extractFrom: [{headers: [x-api-key]}]
    forwardClientIDHeader: x-client-id
    sanitize: true
"#;

/// The Envoy listener configuration Envoy Gateway's own translator makes of `documents` (YAML
/// documents, each starting with a newline) behind [`GATEWAY`].
fn egctl_translate(documents: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("config.yaml");
    std::fs::write(
        &input,
        [GATEWAY]
            .iter()
            .chain(documents)
            .copied()
            .collect::<Vec<_>>()
            .join("---"),
    )
    .unwrap();
    let out = std::process::Command::new(keysmith_testenv::binaries::binary("egctl"))
        .args([
            "x",
            "translate",
            "--from",
            "gateway-api",
            "--to",
            "xds",
            "-t",
            "all",
        ])
        .args(["-o", "json", "-n", NS, "-f"])
        .arg(&input)
        .output()
        .expect("egctl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("egctl prints JSON")
}

/// What Envoy Gateway makes of [`API_KEY_POLICY`] plus `secret`: the api_key_auth filter's
/// credentials (client id to key), and its forwarding settings.
fn translate(secret: &Value) -> (BTreeMap<String, String>, Value) {
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": secret["type"],
        "metadata": {"name": secret["metadata"]["name"], "namespace": NS},
        "data": secret["data"],
    });
    let secret = format!("\n{}\n", serde_json::to_string(&secret).unwrap());
    let config = egctl_translate(&[&route("content"), API_KEY_POLICY, &secret]);
    let mut filters = Vec::new();
    collect_filters(&config, "envoy.filters.http.api_key_auth", &mut filters);
    assert_eq!(filters.len(), 1, "one api_key_auth filter: {config}");
    let auth = &filters[0]["typedConfig"];
    let credentials = auth["credentials"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["client"].as_str().unwrap().to_owned(),
                c["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (credentials, auth["forwarding"].clone())
}

fn collect_filters(value: &Value, name: &str, out: &mut Vec<Value>) {
    match value {
        Value::Object(map) => {
            if map.get("name").and_then(Value::as_str) == Some(name) {
                out.push(value.clone());
            }
            map.values().for_each(|v| collect_filters(v, name, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_filters(v, name, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs egctl, built only on demand (about 20 minutes cold; CI runs it in the gateways job): run `testenv/install egctl`, then `cargo test --test cluster egctl -- --ignored`"]
async fn egctl_translates_the_published_secret_before_and_after_a_rotation() {
    let (h, first) = published_key().await;
    let (credentials, forwarding) = translate(&h.secret("site-envoy-gateway").await.unwrap());
    assert_eq!(
        credentials,
        BTreeMap::from([("cms.site.delivery".to_owned(), first.clone())])
    );
    assert_eq!(
        forwarding,
        json!({"header": "x-client-id", "hideCredentials": true})
    );

    let second = rotate_published(&h, &first).await;
    let (credentials, _) = translate(&h.secret("site-envoy-gateway").await.unwrap());
    assert_eq!(
        credentials,
        BTreeMap::from([
            ("cms.site.delivery".to_owned(), second.clone()),
            ("cms.site.delivery_previous".to_owned(), first),
        ])
    );

    h.clock.advance(SignedDuration::from_mins(61));
    h.settle().await;
    wait_published(&h, &second, None).await;
    let (credentials, _) = translate(&h.secret("site-envoy-gateway").await.unwrap());
    assert_eq!(
        credentials,
        BTreeMap::from([("cms.site.delivery".to_owned(), second)])
    );
}

/// The first YAML block after `heading` in docs/gateways.md.
fn documented_yaml(heading: &str) -> &'static str {
    let doc = include_str!("../../docs/gateways.md");
    let section = &doc[doc
        .find(heading)
        .expect("the heading is in docs/gateways.md")..];
    let block = section.split_once("```yaml\n").expect("a YAML block").1;
    block.split_once("```").expect("the block ends").0
}

#[test]
#[ignore = "needs egctl, built only on demand (about 20 minutes cold; CI runs it in the gateways job): run `testenv/install egctl`, then `cargo test --test cluster egctl -- --ignored`"]
fn egctl_translates_the_documented_ext_auth_policy() {
    let documented = documented_yaml("### Gateway API: Envoy Gateway `SecurityPolicy.extAuth`");
    let verifier = r#"
apiVersion: v1
kind: Service
metadata: {name: keysmith-verifier, namespace: keysmith}
spec: {clusterIP: 10.0.0.20, ports: [{port: 80}]}
"#;
    let config = egctl_translate(&[&route("cms-api"), verifier, &format!("\n{documented}")]);
    let name = "envoy.filters.http.ext_authz/securitypolicy/cms/cms-api-keys";
    let mut filters = Vec::new();
    collect_filters(&config, name, &mut filters);
    assert_eq!(filters.len(), 1, "one ext_authz filter: {config}");
    let authz = &filters[0]["typedConfig"];
    let service = &authz["httpService"];
    assert_eq!(
        service["serverUri"]["uri"],
        "http://keysmith-verifier.keysmith:80/v1/namespaces/cms/authz"
    );
    assert_eq!(service["pathPrefix"], "/v1/namespaces/cms/authz");
    assert_ne!(authz["failureModeAllow"], true, "fails closed: {authz}");
    let exact = |patterns: &Value| -> Vec<String> {
        patterns["patterns"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p["exact"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        exact(&authz["allowedHeaders"]),
        ["x-api-key", "x-forwarded-for", "x-client-secret"]
    );
    assert_eq!(
        exact(&service["authorizationResponse"]["allowedUpstreamHeaders"]),
        [
            "x-keysmith-key",
            "x-keysmith-token",
            "x-keysmith-environment"
        ]
    );
    // The listener carries the filter switched off; the route of the policy switches it on.
    let mut routes = Vec::new();
    collect_filters(
        &config,
        "httproute/cms/cms-api/rule/0/match/0/*",
        &mut routes,
    );
    assert_eq!(routes.len(), 1, "the route: {config}");
    assert!(
        routes[0]["typedPerFilterConfig"][name].is_object(),
        "the route enables the check: {}",
        routes[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_refuses_a_publish_list_the_schema_forbids() {
    let cluster = cluster().await;
    for (publish, message) in [
        (
            "[{}]",
            "set exactly one of envoyGateway, kong and agentgateway",
        ),
        (
            "[{envoyGateway: {}, kong: {consumer: shop}}]",
            "set exactly one of envoyGateway, kong and agentgateway",
        ),
        (
            "[{agentgateway: {}, kong: {consumer: shop}}]",
            "set exactly one of envoyGateway, kong and agentgateway",
        ),
        (
            "[{agentgateway: {}}, {agentgateway: {secretName: other}}]",
            "publish to each gateway kind at most once",
        ),
        (
            "[{agentgateway: {secretName: Not_A_Name}}]",
            "spec.publish[0].agentgateway.secretName",
        ),
        (
            "[{envoyGateway: {}}, {envoyGateway: {secretName: other}}]",
            "publish to each gateway kind at most once",
        ),
        (
            "[{envoyGateway: {secretName: Not_A_Name}}]",
            "spec.publish[0].envoyGateway.secretName",
        ),
        (
            "[{envoyGateway: {}}, {kong: {consumer: a}}, {agentgateway: {}}, {kong: {consumer: b}}]",
            "spec.publish",
        ),
    ] {
        let manifest = format!(
            "apiVersion: keysmith.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: bad, namespace: {NS}}}\n\
             spec: {{tokens: [{{name: a}}], publish: {publish}}}\n"
        );
        let refused = cluster
            .apply_yaml(&manifest)
            .await
            .expect_err(&format!("{publish} is refused"));
        assert!(
            refused.to_string().contains(message),
            "{publish}: {refused}"
        );
    }
}

/// N9: a template cannot make the key's Secret something a gateway reads; the API server refuses
/// the keys Kong and Envoy Gateway read (the controller refuses them too, for a server without
/// CEL), and accepts look-alikes outside those domains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_refuses_template_keys_a_gateway_reads() {
    let cluster = cluster().await;
    let manifest = |template: &str| {
        format!(
            "apiVersion: keysmith.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: bad, namespace: {NS}}}\n\
             spec: {{tokens: [{{name: a}}], secret: {{template: {template}}}}}\n"
        )
    };
    for (template, message) in [
        (
            "{labels: {konghq.com/credential: key-auth}}",
            "label keys under konghq.com/",
        ),
        (
            "{annotations: {configuration.konghq.com/plugins: key-auth}}",
            "annotation keys under konghq.com/",
        ),
        (
            "{labels: {gateway.envoyproxy.io/owning-gateway-name: eg}}",
            "label keys under konghq.com/ and envoyproxy.io/",
        ),
    ] {
        let refused = cluster
            .apply_yaml(&manifest(template))
            .await
            .expect_err(&format!("{template} is refused"));
        assert!(
            refused.to_string().contains(message),
            "{template}: {refused}"
        );
    }
    cluster
        .apply_yaml(&manifest(
            "{labels: {example.com/konghq.com: x, notkonghq.com/credential: x}}",
        ))
        .await
        .expect("look-alikes outside the gateways' domains are accepted");
}
