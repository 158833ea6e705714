//! Publishing for gateways: the Envoy Gateway Secret, the Kong credentials and the agentgateway
//! hashes through creation, rotation with overlap, the end of the overlap, disabling, expiry,
//! leaks and conflicts, with a simulated API server that stores what the plans write.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::api::{ApiKeySpec, KONG_CONSUMER_ANNOTATION, Leak};
use crate::planner::headers::HeaderSecrets;
use crate::planner::{Observed, mint_token, plan};
use crate::validation::validate;

const UID: &str = "0f6a0c1e-3c55-4c8e-9b7e-2d6a41f1c0aa";

fn t0() -> Timestamp {
    "2026-11-22T10:00:00Z".parse().unwrap()
}

fn hours(h: i64) -> SignedDuration {
    SignedDuration::from_hours(h)
}

fn publishing(publish: serde_json::Value) -> serde_json::Value {
    json!({
        "tokens": [{"name": "delivery", "prefix": "cms_dt_"}, {"name": "preview", "prefix": "cms_pt_"}],
        "rotation": {"overlap": "2h"},
        "publish": publish,
    })
}

/// The API server as far as planning and publishing are concerned.
struct World {
    key: ApiKey,
    secret: Option<Secret>,
    /// Every Secret besides the key's own, by name (published ones and others').
    others: BTreeMap<String, Secret>,
    /// The KongConsumer's `credentials`.
    consumer: Vec<String>,
    now: Timestamp,
}

impl World {
    fn new(spec: serde_json::Value) -> World {
        let key = serde_json::from_value(json!({
            "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "site", "namespace": "cms", "uid": UID, "generation": 1},
            "spec": spec,
        }))
        .unwrap();
        World {
            key,
            secret: None,
            others: BTreeMap::new(),
            consumer: vec!["hand-made".to_owned()],
            now: t0(),
        }
    }

    /// What the controller would plan and publish now, stored nowhere.
    fn plan_and_publication(&self) -> (Plan, Publication) {
        let plan = self.plan();
        let publication = plan.publication.clone();
        (plan, publication)
    }

    /// What one reconcile would plan now: everything the key's namespace holds is observed.
    fn plan(&self) -> Plan {
        let published: Vec<Secret> = self.others.values().cloned().collect();
        let observed = Observed {
            key: &self.key,
            secret: self.secret.as_ref(),
            header_secrets: &HeaderSecrets::new(),
            published: &published,
            personal: Default::default(),
            access: Default::default(),
        };
        plan(&observed, self.now, &mut mint_token).unwrap()
    }

    /// Plan, publish, and store what both write, as the controller would; the publication.
    fn step(&mut self) -> Publication {
        let (plan, publication) = self.plan_and_publication();
        if let Some(status) = &plan.status {
            self.key.status = Some(status.clone());
        }
        if let Some(secret) = &plan.secret {
            self.secret = Some(secret.to_secret());
        }
        for desired in &publication.secrets {
            self.others
                .insert(desired.name.clone(), desired.to_secret());
        }
        // One consumer list stands for every consumer: tests publish to one at a time.
        for kong in &publication.kong {
            self.consumer = kong.merged(&self.consumer);
        }
        for old in &publication.delete {
            self.others.remove(&old.name);
        }
        publication
    }

    /// Step until nothing is published any more; that last publication must write nothing.
    fn settle(&mut self) {
        self.step();
        let quiet = self.step();
        assert!(
            quiet.secrets.is_empty() && quiet.delete.is_empty(),
            "{quiet:?}"
        );
    }

    fn entries(&self, name: &str) -> BTreeMap<String, String> {
        self.others[name]
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), String::from_utf8(v.0.clone()).unwrap()))
            .collect()
    }

    fn current(&self, key: &str) -> String {
        let data = self.secret.as_ref().unwrap().data.as_ref().unwrap();
        String::from_utf8(data[key].0.clone()).unwrap()
    }

    fn names(&self) -> BTreeSet<String> {
        self.others.keys().cloned().collect()
    }

    fn rotate(&mut self, trigger: &str) {
        self.key.spec.rotation.get_or_insert_default().trigger = Some(trigger.to_owned());
    }
}

#[test]
fn envoy_gateway_gets_one_entry_per_token_and_the_previous_one_for_the_overlap() {
    let mut w = World::new(publishing(json!([{"envoyGateway": {}}])));
    w.settle();
    let secret = &w.others["site-envoy-gateway"];
    let labels = secret.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[PUBLISHED_FOR_LABEL], PUBLISHED_FOR_ENVOY_GATEWAY);
    assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.uid.as_str(), owner.controller), (UID, Some(true)));
    let first = (w.current("delivery"), w.current("preview"));
    assert_eq!(
        w.entries("site-envoy-gateway"),
        BTreeMap::from([
            ("cms.site.delivery".to_owned(), first.0.clone()),
            ("cms.site.preview".to_owned(), first.1.clone()),
        ])
    );

    w.rotate("one");
    w.advance_and_settle(hours(0));
    let second = (w.current("delivery"), w.current("preview"));
    assert_ne!(first.0, second.0);
    assert_eq!(
        w.entries("site-envoy-gateway"),
        BTreeMap::from([
            ("cms.site.delivery".to_owned(), second.0.clone()),
            ("cms.site.delivery_previous".to_owned(), first.0.clone()),
            ("cms.site.preview".to_owned(), second.1.clone()),
            ("cms.site.preview_previous".to_owned(), first.1.clone()),
        ])
    );
    // Still inside the window, then past it: only the previous entries go.
    w.advance_and_settle(hours(1));
    assert_eq!(w.entries("site-envoy-gateway").len(), 4);
    w.advance_and_settle(hours(1));
    assert_eq!(
        w.entries("site-envoy-gateway"),
        BTreeMap::from([
            ("cms.site.delivery".to_owned(), second.0),
            ("cms.site.preview".to_owned(), second.1),
        ])
    );
    assert_eq!(w.names(), BTreeSet::from(["site-envoy-gateway".to_owned()]));
}

impl World {
    fn advance_and_settle(&mut self, d: SignedDuration) {
        self.now = self.now.checked_add(d).unwrap();
        self.settle();
    }
}

#[test]
fn rotations_inside_the_overlap_keep_every_replaced_token_published_until_its_own_end() {
    let mut w = World::new(publishing(
        json!([{"envoyGateway": {}}, {"kong": {"consumer": "c"}}]),
    ));
    w.key.metadata.annotations = None;
    w.settle();
    let first = w.current("delivery");
    w.rotate("one");
    w.advance_and_settle(hours(0));
    let second = w.current("delivery");
    w.now = w.now.checked_add(SignedDuration::from_mins(30)).unwrap();
    w.rotate("two");
    w.settle();
    let entries = w.entries("site-envoy-gateway");
    assert_eq!(entries["cms.site.delivery"], w.current("delivery"));
    assert_eq!(entries["cms.site.delivery_previous"], second);
    assert_eq!(entries["cms.site.delivery_previous-2"], first);
    // The first window ends 2h after the first rotation, the second 30 minutes later.
    w.advance_and_settle(SignedDuration::from_mins(90));
    let entries = w.entries("site-envoy-gateway");
    assert_eq!(entries["cms.site.delivery_previous"], second);
    assert!(!entries.contains_key("cms.site.delivery_previous-2"));
    w.advance_and_settle(SignedDuration::from_mins(30));
    assert!(
        !w.entries("site-envoy-gateway")
            .contains_key("cms.site.delivery_previous")
    );
}

#[test]
fn a_crash_after_the_rotation_keeps_the_previous_token_published_from_the_gateway_secret() {
    let mut w = World::new(publishing(json!([{"envoyGateway": {"secretName": "gw"}}])));
    w.settle();
    let old = w.current("delivery");
    w.rotate("one");
    // The status and the key's Secret were written, the publication was lost.
    let plan = w.plan();
    w.key.status = plan.status.clone();
    w.secret = plan.secret.as_ref().map(DesiredSecret::to_secret);
    w.settle();
    assert_eq!(w.entries("gw")["cms.site.delivery_previous"], old);
    assert_eq!(w.entries("gw")["cms.site.delivery"], w.current("delivery"));
}

#[test]
fn kong_gets_a_credential_secret_per_token_and_the_consumer_list_follows() {
    let mut w = World::new(publishing(json!([{"kong": {"consumer": "shop"}}])));
    w.settle();
    let delivery = &w.others["site.delivery.kong"];
    let labels = delivery.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[KONG_CREDENTIAL_LABEL], KONG_KEY_AUTH);
    assert_eq!(labels[PUBLISHED_FOR_LABEL], PUBLISHED_FOR_KONG);
    assert_eq!(
        w.entries("site.delivery.kong"),
        BTreeMap::from([(KONG_KEY_FIELD.to_owned(), w.current("delivery"))])
    );
    assert_eq!(
        w.consumer,
        ["hand-made", "site.delivery.kong", "site.preview.kong"]
    );

    let old = w.current("delivery");
    w.rotate("one");
    w.advance_and_settle(hours(0));
    assert_eq!(
        w.entries("site.delivery.kong-previous")[KONG_KEY_FIELD],
        old
    );
    assert_eq!(
        w.entries("site.delivery.kong")[KONG_KEY_FIELD],
        w.current("delivery")
    );
    assert_eq!(
        w.consumer,
        [
            "hand-made",
            "site.delivery.kong",
            "site.delivery.kong-previous",
            "site.preview.kong",
            "site.preview.kong-previous",
        ]
    );
    w.advance_and_settle(hours(2));
    assert_eq!(
        w.names(),
        BTreeSet::from([
            "site.delivery.kong".to_owned(),
            "site.preview.kong".to_owned()
        ])
    );
    assert_eq!(
        w.consumer,
        ["hand-made", "site.delivery.kong", "site.preview.kong"]
    );
}

#[test]
fn disabled_or_expired_keys_publish_nothing_and_revocation_removes_everything() {
    let spec = publishing(json!([{"envoyGateway": {}}, {"kong": {"consumer": "shop"}}]));
    let mut w = World::new(spec);
    w.settle();
    assert_eq!(w.names().len(), 3);
    w.key.spec.disabled = true;
    w.settle();
    assert_eq!(w.names(), BTreeSet::from(["site-envoy-gateway".to_owned()]));
    assert!(w.entries("site-envoy-gateway").is_empty());
    assert_eq!(w.consumer, ["hand-made"]);

    w.key.spec.disabled = false;
    w.settle();
    assert_eq!(w.names().len(), 3);
    w.key.spec.expires_at = Some("2026-11-23T00:00:00Z".to_owned());
    w.advance_and_settle(hours(24));
    assert!(w.entries("site-envoy-gateway").is_empty());
    assert_eq!(w.consumer, ["hand-made"]);

    // Revocation: every published Secret of the key goes, and its consumer entries.
    w.key.spec.expires_at = None;
    w.settle();
    let observed: Vec<Secret> = w.others.values().cloned().collect();
    assert_eq!(owned(&w.key, &observed).len(), 3);
    let [kong] = &kong_parts(&w.key, &observed)[..] else {
        panic!("one consumer")
    };
    assert_eq!(kong.removed(&w.consumer), ["hand-made"]);
}

#[test]
fn removing_a_gateway_from_the_spec_deletes_what_was_published_for_it() {
    let mut w = World::new(publishing(
        json!([{"envoyGateway": {}}, {"kong": {"consumer": "shop"}}]),
    ));
    w.settle();
    w.key.spec.publish.retain(|p| p.kong.is_some());
    w.settle();
    assert_eq!(
        w.names(),
        BTreeSet::from([
            "site.delivery.kong".to_owned(),
            "site.preview.kong".to_owned()
        ])
    );
    w.key.spec.publish.clear();
    w.settle();
    assert!(w.names().is_empty());
    assert_eq!(
        w.consumer,
        ["hand-made"],
        "the withdrawn consumer's entries go"
    );
}

#[test]
fn moving_to_another_consumer_takes_the_entries_out_of_the_first() {
    let mut w = World::new(publishing(json!([{"kong": {"consumer": "shop"}}])));
    w.settle();
    assert_eq!(
        w.others["site.delivery.kong"]
            .metadata
            .annotations
            .as_ref()
            .unwrap()[KONG_CONSUMER_OF_SECRET_ANNOTATION],
        "shop"
    );
    w.key.spec.publish = serde_json::from_value(json!([{"kong": {"consumer": "outlet"}}])).unwrap();
    let (_, publication) = w.plan_and_publication();
    let parts: Vec<(&str, bool, &[String])> = publication
        .kong
        .iter()
        .map(|k| (k.consumer.as_str(), k.withdrawn, k.wanted.as_slice()))
        .collect();
    let wanted = [
        "site.delivery.kong".to_owned(),
        "site.preview.kong".to_owned(),
    ];
    assert_eq!(
        parts,
        [("outlet", false, &wanted[..]), ("shop", true, &[][..])]
    );
    let shop = &publication.kong[1];
    assert_eq!(shop.merged(&w.consumer), ["hand-made"]);
    let relabelled: Vec<&str> = publication
        .secrets
        .iter()
        .map(|d| d.annotations[KONG_CONSUMER_OF_SECRET_ANNOTATION].as_str())
        .collect();
    assert_eq!(
        relabelled,
        ["outlet", "outlet"],
        "the Secrets now record the new consumer"
    );
}

#[test]
fn credentials_published_under_the_old_names_move_to_the_new_ones_before_they_are_deleted() {
    let mut w = World::new(publishing(
        json!([{"envoyGateway": {}}, {"kong": {"consumer": "shop"}}]),
    ));
    w.rotate("one");
    w.settle();
    w.rotate("two");
    w.step();
    // What the names before N9 left: `<apikey>-<slot>-kong[-previous]` and `.previous` ids.
    let renamed: Vec<(String, String)> = w
        .names()
        .into_iter()
        .filter(|n| n.contains(".kong"))
        .map(|n| (n.clone(), n.replacen('.', "-", 2)))
        .collect();
    for (new, old) in &renamed {
        let mut secret = w.others.remove(new).unwrap();
        secret.metadata.name = Some(old.clone());
        secret.metadata.uid = Some(format!("uid-of-{old}"));
        secret.metadata.resource_version = Some("7".to_owned());
        w.others.insert(old.clone(), secret);
    }
    w.consumer = std::iter::once("hand-made".to_owned())
        .chain(renamed.iter().map(|(_, old)| old.clone()))
        .collect();
    let envoy = w.others.get_mut("site-envoy-gateway").unwrap();
    let data = envoy.data.take().unwrap();
    envoy.data = Some(
        data.into_iter()
            .map(|(id, v)| (id.replace("_previous", ".previous"), v))
            .collect(),
    );
    let held: BTreeMap<String, String> = renamed
        .iter()
        .map(|(new, old)| (new.clone(), w.entries(old)[KONG_KEY_FIELD].clone()))
        .collect();

    let publication = w.step();
    let deleted: BTreeMap<String, Precondition> = publication
        .delete
        .iter()
        .map(|d| (d.name.clone(), d.observed.clone()))
        .collect();
    let olds: BTreeSet<&String> = renamed.iter().map(|(_, old)| old).collect();
    assert_eq!(deleted.keys().collect::<BTreeSet<_>>(), olds);
    for (name, observed) in &deleted {
        assert_eq!(
            observed.uid.as_deref(),
            Some(format!("uid-of-{name}").as_str())
        );
    }
    for (new, token) in &held {
        assert!(
            publication.secrets.iter().any(|d| &d.name == new),
            "{new} is written in the same pass, before the old name is deleted"
        );
        assert_eq!(
            &w.entries(new)[KONG_KEY_FIELD],
            token,
            "{new} holds the same token"
        );
    }
    let listed: Vec<String> = std::iter::once("hand-made".to_owned())
        .chain(held.keys().cloned())
        .collect();
    assert_eq!(w.consumer, listed, "the consumer lists the new names only");
    assert!(
        w.entries("site-envoy-gateway")
            .keys()
            .all(|id| !id.contains(".previous")),
        "the replaced tokens' client ids are the new ones"
    );
    w.settle();
}

#[test]
fn a_credential_whose_new_name_is_taken_stays_under_its_old_name() {
    let mut w = World::new(publishing(json!([{"kong": {"consumer": "shop"}}])));
    w.settle();
    // Published under the names before N9, and someone took the new name of one of them.
    for slot in ["delivery", "preview"] {
        let mut secret = w.others.remove(&format!("site.{slot}.kong")).unwrap();
        secret.metadata.name = Some(format!("site-{slot}-kong"));
        w.others.insert(format!("site-{slot}-kong"), secret);
    }
    w.consumer = vec![
        "hand-made".to_owned(),
        "site-delivery-kong".to_owned(),
        "site-preview-kong".to_owned(),
    ];
    w.others.insert(
        "site.delivery.kong".to_owned(),
        foreign("site.delivery.kong"),
    );
    let token = w.entries("site-delivery-kong")[KONG_KEY_FIELD].clone();

    let publication = w.step();
    assert!(publication.conflicts[0].contains("site.delivery.kong"));
    assert!(
        publication
            .delete
            .iter()
            .all(|d| d.name != "site-delivery-kong"),
        "the old credential stays: {:?}",
        publication.delete
    );
    assert_eq!(w.entries("site-delivery-kong")[KONG_KEY_FIELD], token);
    assert_eq!(
        w.others["site.delivery.kong"],
        foreign("site.delivery.kong")
    );
    assert_eq!(
        w.consumer,
        ["hand-made", "site-delivery-kong", "site.preview.kong"],
        "the consumer keeps listing it, and the slot that could move has moved"
    );
    assert!(!w.others.contains_key("site-preview-kong"));

    // Once the name is free, the credential moves.
    w.others.remove("site.delivery.kong");
    w.settle();
    assert_eq!(w.entries("site.delivery.kong")[KONG_KEY_FIELD], token);
    assert!(!w.others.contains_key("site-delivery-kong"));
    assert_eq!(
        w.consumer,
        ["hand-made", "site.delivery.kong", "site.preview.kong"]
    );
}

#[test]
fn the_template_reaches_the_key_own_secret_only() {
    let mut spec = publishing(json!([{"envoyGateway": {}}, {"kong": {"consumer": "shop"}}]));
    spec["secret"] = json!({"template": {"labels": {"team": "a"}, "annotations": {"note": "b"}}});
    let mut w = World::new(spec);
    w.settle();
    let own = w.secret.as_ref().unwrap().metadata.clone();
    assert_eq!(own.labels.unwrap()["team"], "a");
    assert_eq!(own.annotations.unwrap()["note"], "b");
    for (name, published) in &w.others {
        let meta = &published.metadata;
        let keys: Vec<&String> = meta
            .labels
            .iter()
            .flatten()
            .chain(meta.annotations.iter().flatten())
            .map(|(k, _)| k)
            .collect();
        assert!(
            keys.iter().all(|k| *k != "team" && *k != "note"),
            "{name}: {keys:?}"
        );
    }
}

fn foreign(name: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("cms".to_owned()),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    }
}

#[test]
fn a_name_taken_by_a_secret_the_key_does_not_own_is_a_conflict_and_stays_untouched() {
    let mut w = World::new(publishing(
        json!([{"envoyGateway": {"secretName": "team-b-keys"}}, {"kong": {"consumer": "shop"}}]),
    ));
    w.others
        .insert("team-b-keys".to_owned(), foreign("team-b-keys"));
    w.others
        .insert("site.preview.kong".to_owned(), foreign("site.preview.kong"));
    let publication = w.step();
    assert_eq!(
        publication.conflicts.len(),
        2,
        "{:?}",
        publication.conflicts
    );
    assert!(publication.conflicts[0].contains("team-b-keys"));
    assert!(
        publication
            .conflicts
            .iter()
            .all(|c| c.starts_with("spec.publish"))
    );
    let written: Vec<&str> = publication
        .secrets
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(written, ["site.delivery.kong"]);
    assert_eq!(w.others["team-b-keys"], foreign("team-b-keys"));
    // The consumer never lists a credential of someone else's under this key.
    assert_eq!(w.consumer, ["hand-made", "site.delivery.kong"]);
}

#[test]
fn the_key_own_secret_name_is_never_published_over() {
    // The envoy Secret's name defaults from the ApiKey's name; here it meets the key's Secret.
    let mut w = World::new(json!({
        "tokens": [{"name": "delivery"}],
        "secret": {"name": "site-envoy-gateway"},
        "publish": [{"envoyGateway": {}}],
    }));
    let publication = w.step();
    assert!(publication.secrets.is_empty());
    assert!(publication.conflicts[0].contains("already the key's own Secret"));
}

#[test]
fn an_invalid_spec_publishes_and_deletes_nothing() {
    let mut w = World::new(publishing(json!([{"envoyGateway": {}}])));
    w.settle();
    w.key.spec.tokens[0].bytes = Some(1);
    let publication = w.step();
    assert!(publication.secrets.is_empty() && publication.delete.is_empty());
    assert!(publication.kong.is_empty());
}

#[test]
fn a_consumer_consents_only_by_naming_the_key() {
    let meta = |value: &str| ObjectMeta {
        annotations: Some(BTreeMap::from([(
            KONG_CONSUMER_ANNOTATION.to_owned(),
            value.to_owned(),
        )])),
        ..ObjectMeta::default()
    };
    assert!(consents(&meta("site"), "site"));
    assert!(consents(&meta("other, site"), "site"));
    assert!(!consents(&meta("sites,other"), "site"));
    assert!(!consents(&ObjectMeta::default(), "site"));
}

fn errors(publish: serde_json::Value, secret: serde_json::Value) -> Vec<String> {
    let spec: ApiKeySpec = serde_json::from_value(json!({
        "tokens": [{"name": "delivery"}], "secret": secret, "publish": publish,
    }))
    .unwrap();
    match validate(&spec) {
        Ok(_) => Vec::new(),
        Err(invalid) => invalid.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn publish_entries_are_validated_naming_the_field() {
    assert!(
        errors(
            json!([{"envoyGateway": {}}, {"kong": {"consumer": "shop"}}]),
            json!({})
        )
        .is_empty()
    );
    let cases = [
        (
            json!([{}]),
            "spec.publish[0]: set exactly one of envoyGateway, kong and agentgateway",
        ),
        (
            json!([{"envoyGateway": {}, "kong": {"consumer": "shop"}}]),
            "spec.publish[0]: set exactly one",
        ),
        (
            json!([{"envoyGateway": {}}, {"envoyGateway": {"secretName": "b"}}]),
            "spec.publish[1].envoyGateway: publishes to Envoy Gateway a second time",
        ),
        (
            json!([{"kong": {"consumer": "a"}}, {"kong": {"consumer": "b"}}]),
            "spec.publish[1].kong: publishes to Kong a second time",
        ),
        (
            json!([{"envoyGateway": {"secretName": "Not_A_Name"}}]),
            "spec.publish[0].envoyGateway.secretName: \"Not_A_Name\" is not a valid Secret name",
        ),
        (
            json!([{"envoyGateway": {"secretName": "tokens"}}]),
            "spec.publish[0].envoyGateway.secretName: \"tokens\" is the key's own Secret",
        ),
        (
            json!([{"agentgateway": {}}, {"agentgateway": {"secretName": "b"}}]),
            "spec.publish[1].agentgateway: publishes to agentgateway a second time",
        ),
        (
            json!([{"agentgateway": {}, "envoyGateway": {}}]),
            "spec.publish[0]: set exactly one",
        ),
        (
            json!([{"agentgateway": {"secretName": "tokens"}}]),
            "spec.publish[0].agentgateway.secretName: \"tokens\" is the key's own Secret",
        ),
        (
            json!([{"agentgateway": {"secretName": "-no"}}]),
            "spec.publish[0].agentgateway.secretName: \"-no\" is not a valid Secret name",
        ),
        (
            json!([{"kong": {"consumer": "a/b"}}]),
            "spec.publish[0].kong.consumer: \"a/b\" is not a valid KongConsumer name",
        ),
    ];
    for (publish, expected) in cases {
        let found = errors(publish.clone(), json!({"name": "tokens"}));
        assert!(
            found.iter().any(|e| e.starts_with(expected)),
            "{publish}: {found:?}"
        );
    }
    let all = json!([{"envoyGateway": {}}, {"kong": {"consumer": "a"}}, {"agentgateway": {}}]);
    assert!(errors(all, json!({})).is_empty());
    let four = json!([{"envoyGateway": {}}, {"kong": {"consumer": "a"}}, {"agentgateway": {}}, {"envoyGateway": {"secretName": "c"}}]);
    assert!(
        errors(four, json!({}))
            .iter()
            .any(|e| e.starts_with("spec.publish: has 4 entries"))
    );
}

#[derive(Debug, Clone)]
enum Op {
    Advance(i64),
    Rotate,
    Toggle,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0i64..180).prop_map(Op::Advance),
        Just(Op::Rotate),
        Just(Op::Toggle),
    ]
}

proptest! {
    /// Whatever happens, the agentgateway Secret holds the hashes of exactly the tokens the
    /// key's status says verify now: each current token of an enabled key, and each replaced
    /// token inside its window. The Envoy Gateway Secret and the Kong credentials hold the same
    /// tokens, unless the key was disabled since their rotation: disabling removes every
    /// published value, and a replaced token's value is kept nowhere else, so its overlap ends
    /// at those gateways.
    #[test]
    fn published_tokens_are_exactly_the_verifying_ones(ops in prop::collection::vec(op(), 1..24)) {
        let mut w = World::new(publishing(json!([{"envoyGateway": {}}, {"kong": {"consumer": "shop"}}, {"agentgateway": {}}])));
        w.settle();
        let mut lost = BTreeSet::new();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Advance(minutes) => w.now = w.now.checked_add(SignedDuration::from_mins(minutes)).unwrap(),
                Op::Rotate => w.rotate(&i.to_string()),
                Op::Toggle => {
                    w.key.spec.disabled = !w.key.spec.disabled;
                    let status = w.key.status.clone().unwrap();
                    lost.extend(status.tokens.iter().flat_map(|t| t.previous.iter().chain(&t.earlier)).map(|p| p.sha256.clone()));
                }
            }
            w.settle();
            let status = w.key.status.clone().unwrap();
            let mut verifying = BTreeSet::new();
            if !w.key.spec.disabled {
                for t in &status.tokens {
                    verifying.insert(t.sha256.clone());
                    for p in t.previous.iter().chain(&t.earlier).filter(|p| p.valid_until.0 > w.now) {
                        verifying.insert(p.sha256.clone());
                    }
                }
            }
            // agentgateway's hashes come from status, so they follow the verifier exactly.
            let hashed: BTreeSet<String> = w.hashes("site-agentgateway").into_values().collect();
            prop_assert_eq!(&hashed, &verifying);
            let verifying: BTreeSet<String> = verifying.difference(&lost).cloned().collect();
            let envoy: BTreeSet<String> = w.entries("site-envoy-gateway").values().map(|v| sha256_hex(v)).collect();
            prop_assert_eq!(&envoy, &verifying);
            let kong: BTreeSet<String> = w.others.iter()
                .filter(|(n, _)| n.contains(".kong"))
                .map(|(n, _)| sha256_hex(&w.entries(n)[KONG_KEY_FIELD]))
                .collect();
            prop_assert_eq!(&kong, &verifying);
            let listed: BTreeSet<&str> = w.consumer.iter().map(String::as_str).filter(|c| *c != "hand-made").collect();
            let credentials: BTreeSet<&str> = w.others.keys().map(String::as_str).filter(|n| n.contains(".kong")).collect();
            prop_assert_eq!(listed, credentials);
        }
    }
}

fn suffix() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(PREVIOUS_SUFFIX.to_owned())),
        (2..=4u8).prop_map(|n| Some(format!("{PREVIOUS_SUFFIX}-{n}"))),
    ]
}

proptest! {
    /// N9: no two (key, slot, token) share a Kong credential name or an Envoy Gateway client id,
    /// whatever names the ApiKeys and slots have (DNS subdomains and DNS labels, drawn from the
    /// few characters that make collisions likely).
    #[test]
    fn published_names_and_ids_tell_every_key_slot_and_token_apart(
        a in ("[a-z]([a-z.-]{0,6}[a-z])?", "[a-z]([a-z-]{0,6}[a-z])?", suffix()),
        b in ("[a-z]([a-z.-]{0,6}[a-z])?", "[a-z]([a-z-]{0,6}[a-z])?", suffix()),
    ) {
        prop_assume!(a != b);
        let kong = |(key, slot, suffix): &(String, String, Option<String>)| {
            kong_secret_name(key, slot, suffix.as_deref())
        };
        let envoy = |(key, slot, suffix): &(String, String, Option<String>)| {
            envoy_client_id("cms", key, slot, suffix.as_deref())
        };
        prop_assert_ne!(kong(&a), kong(&b));
        prop_assert_ne!(envoy(&a), envoy(&b));
    }
}

#[test]
fn the_names_of_the_issue_are_apart() {
    assert_ne!(
        kong_secret_name("team", "api-main", None),
        kong_secret_name("team-api", "main", None)
    );
    assert_ne!(
        envoy_client_id("cms", "a.b", "previous", None),
        envoy_client_id("cms", "a", "b", Some(PREVIOUS_SUFFIX))
    );
}

impl World {
    /// The agentgateway Secret's entries as (entry, hex SHA-256 of `keyHash`), checking each
    /// is the JSON agentgateway reads and nothing else.
    fn hashes(&self, name: &str) -> BTreeMap<String, String> {
        self.entries(name)
            .into_iter()
            .map(|(entry, value)| {
                let value: serde_json::Value = serde_json::from_str(&value).unwrap();
                let object = value.as_object().unwrap();
                assert_eq!(
                    object.keys().collect::<Vec<_>>(),
                    ["keyHash", "metadata"],
                    "{value}"
                );
                let hash = value["keyHash"].as_str().unwrap();
                let hex = hash.strip_prefix(AGENTGATEWAY_HASH_PREFIX).unwrap();
                assert!(
                    hex.len() == 64
                        && hex
                            .bytes()
                            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                );
                (entry, hex.to_owned())
            })
            .collect()
    }
}

#[test]
fn agentgateway_gets_hashes_and_metadata_only_through_rotation_and_overlap() {
    let mut spec = publishing(json!([{"agentgateway": {}}]));
    spec["environment"] = json!("production");
    let mut w = World::new(spec);
    w.settle();
    let secret = &w.others["site-agentgateway"];
    let labels = secret.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[PUBLISHED_FOR_LABEL], PUBLISHED_FOR_AGENTGATEWAY);
    assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
    assert_eq!(labels[APIKEY_LABEL], "site");
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.uid.as_str(), owner.controller), (UID, Some(true)));
    let first = (w.current("delivery"), w.current("preview"));
    let delivery: serde_json::Value =
        serde_json::from_str(&w.entries("site-agentgateway")["cms.site.delivery"]).unwrap();
    assert_eq!(
        delivery,
        json!({
            "keyHash": format!("sha256:{}", sha256_hex(&first.0)),
            "metadata": {
                "namespace": "cms", "apikey": "site", "slot": "delivery",
                "clientId": "cms.site.delivery", "tokenId": &first.0[..13],
                "environment": "production",
            },
        })
    );
    assert_eq!(
        w.hashes("site-agentgateway"),
        BTreeMap::from([
            ("cms.site.delivery".to_owned(), sha256_hex(&first.0)),
            ("cms.site.preview".to_owned(), sha256_hex(&first.1)),
        ])
    );

    w.rotate("one");
    w.advance_and_settle(hours(0));
    let second = (w.current("delivery"), w.current("preview"));
    assert_eq!(
        w.hashes("site-agentgateway"),
        BTreeMap::from([
            ("cms.site.delivery".to_owned(), sha256_hex(&second.0)),
            (
                "cms.site.delivery_previous".to_owned(),
                sha256_hex(&first.0)
            ),
            ("cms.site.preview".to_owned(), sha256_hex(&second.1)),
            ("cms.site.preview_previous".to_owned(), sha256_hex(&first.1)),
        ])
    );
    let ids = &w.others["site-agentgateway"]
        .metadata
        .annotations
        .as_ref()
        .unwrap()[TOKEN_IDS_ANNOTATION];
    assert_eq!(ids.split(',').count(), 4);
    // No token, nor its random part, is anywhere in the Secret.
    let written = serde_json::to_string(&w.others["site-agentgateway"]).unwrap();
    for token in [&first.0, &first.1, &second.0, &second.1] {
        assert!(!written.contains(&token[13..]), "{written}");
    }
    w.advance_and_settle(hours(2));
    assert_eq!(
        w.hashes("site-agentgateway"),
        BTreeMap::from([
            ("cms.site.delivery".to_owned(), sha256_hex(&second.0)),
            ("cms.site.preview".to_owned(), sha256_hex(&second.1)),
        ])
    );
    assert_eq!(w.names(), BTreeSet::from(["site-agentgateway".to_owned()]));
}

#[test]
fn agentgateway_needs_no_token_value_and_keeps_the_overlap_through_a_disable() {
    let mut w = World::new(publishing(json!([{"agentgateway": {}}])));
    w.settle();
    w.rotate("one");
    w.settle();
    assert_eq!(w.hashes("site-agentgateway").len(), 4);
    // Disabled: every entry goes; enabled inside the window, the replaced tokens come back, as
    // their hashes are in status (the verifier honours them too).
    w.key.spec.disabled = true;
    w.settle();
    assert!(w.entries("site-agentgateway").is_empty());
    w.key.spec.disabled = false;
    w.settle();
    assert_eq!(w.hashes("site-agentgateway").len(), 4);
    // Status alone is enough: with neither the key's Secret nor any published one observed,
    // the same entries are planned.
    let plan = w.plan();
    assert!(plan.secret.is_none());
    let blind = publication(&w.key, &plan, None, &[], w.now);
    assert_eq!(blind.secrets[0].hashed.len(), 4);
    let written = &w.others["site-agentgateway"];
    assert_eq!(blind.secrets[0].to_secret().data, written.data);

    w.key.spec.expires_at = Some("2026-11-23T00:00:00Z".to_owned());
    w.advance_and_settle(hours(24));
    assert!(w.entries("site-agentgateway").is_empty());
    w.key.spec.expires_at = None;
    w.settle();
    let observed: Vec<Secret> = w.others.values().cloned().collect();
    assert_eq!(owned(&w.key, &observed)[0].name, "site-agentgateway");
}

#[test]
fn a_leaked_token_leaves_the_agentgateway_secret() {
    for response in ["rotate", "revoke"] {
        let mut spec = publishing(json!([{"agentgateway": {}}]));
        spec["leakResponse"] = json!(response);
        let mut w = World::new(spec);
        w.settle();
        let leaked = sha256_hex(&w.current("delivery"));
        let status = w.key.status.as_mut().unwrap();
        status.tokens[0].leak = Some(Leak {
            reported_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(w.now),
            source: None,
            handled_at: None,
        });
        w.settle();
        let hashes = w.hashes("site-agentgateway");
        assert!(
            !hashes.values().any(|h| *h == leaked),
            "{response}: {hashes:?}"
        );
        assert!(hashes.contains_key("cms.site.preview"), "{response}");
    }
}
