use proptest::prelude::*;

use super::*;
use crate::api::{
    Access, ApiKeySpec, EnvoyGatewayPublish, KongPublish, Publish, ServiceAccountRef, TokenSlot,
};
use crate::planner::conditions::{self, READY};
use crate::planner::headers::HeaderSecrets;
use crate::planner::{self, mint_token};

fn key(name: &str, access: Option<Access>) -> ApiKey {
    let mut key = ApiKey::new(
        name,
        ApiKeySpec {
            tokens: vec![TokenSlot {
                name: "delivery".into(),
                ..TokenSlot::default()
            }],
            access,
            ..ApiKeySpec::default()
        },
    );
    key.metadata.namespace = Some("cms".into());
    key.metadata.uid = Some(format!("uid-{name}"));
    key
}

fn alice_and_deployer() -> Access {
    Access {
        users: vec!["alice@example.com".into()],
        groups: vec!["payments-devs".into()],
        service_accounts: vec![ServiceAccountRef {
            name: "deployer".into(),
            namespace: Some("ci".into()),
        }],
    }
}

fn on<'a>(role: Option<&'a Role>, binding: Option<&'a RoleBinding>) -> Observed<'a> {
    Observed {
        enabled: true,
        role,
        binding,
    }
}

/// The objects a plan writes, as the API server then holds them.
fn stored(plan: &AccessPlan) -> (Role, RoleBinding) {
    let mut role = plan.role.clone().expect("a Role");
    let mut binding = plan.binding.clone().expect("a RoleBinding");
    for meta in [&mut role.metadata, &mut binding.metadata] {
        meta.uid = Some("stored".into());
        meta.resource_version = Some("1".into());
    }
    (role, binding)
}

#[test]
fn the_role_reads_exactly_the_keys_secrets_and_the_binding_names_the_subjects() {
    let key = key("site", Some(alice_and_deployer()));
    let subjects = listed(&key);
    let plan = plan(&key, &subjects, &on(None, None));
    let role = plan.role.expect("a Role");
    assert_eq!(role.metadata.name.as_deref(), Some("site.keysmith-access"));
    assert_eq!(role.metadata.namespace.as_deref(), Some("cms"));
    let owner = &role.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        ("uid-site", Some(true))
    );
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].verbs, ["get"]);
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["secrets".to_owned()][..])
    );
    assert_eq!(
        rules[0].resource_names.as_deref(),
        Some(&["site".to_owned()][..])
    );
    let binding = plan.binding.expect("a RoleBinding");
    assert_eq!(binding.role_ref.name, "site.keysmith-access");
    let subjects: Vec<(String, String, Option<String>)> = binding
        .subjects
        .unwrap()
        .into_iter()
        .map(|s| (s.kind, s.name, s.namespace))
        .collect();
    assert_eq!(
        subjects,
        [
            ("User".into(), "alice@example.com".into(), None),
            ("Group".into(), "payments-devs".into(), None),
            (
                "ServiceAccount".into(),
                "deployer".into(),
                Some("ci".into())
            ),
        ]
    );
    assert!(plan.problem.is_none());
    assert_eq!(
        plan.status, None,
        "nothing is granted until the Role and binding exist"
    );
}

#[test]
fn status_reports_what_the_keys_role_and_binding_grant_as_observed() {
    let key = key("site", Some(alice_and_deployer()));
    let subjects = listed(&key);
    let (role, binding) = stored(&plan(&key, &subjects, &on(None, None)));
    let plan = plan(&key, &subjects, &on(Some(&role), Some(&binding)));
    let status = plan.status.expect("status.access");
    assert_eq!(status.role, "site.keysmith-access");
    assert_eq!(status.role_binding, "site.keysmith-access");
    assert_eq!(status.secrets, ["site"]);
    assert_eq!(status.subjects, subjects);
}

#[test]
fn subjects_are_listed_once_and_a_service_account_defaults_to_the_keys_namespace() {
    let key = key(
        "site",
        Some(Access {
            users: vec!["bob".into(), "bob".into()],
            groups: vec!["bob".into()],
            service_accounts: vec![ServiceAccountRef {
                name: "app".into(),
                namespace: None,
            }],
        }),
    );
    let subjects = listed(&key);
    let kinds: Vec<(&str, &str, Option<&str>)> = subjects
        .iter()
        .map(|s| (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("User", "bob", None),
            ("Group", "bob", None),
            ("ServiceAccount", "app", Some("cms")),
        ]
    );
}

#[test]
fn the_role_covers_every_name_a_published_secret_can_take() {
    let mut key = key("site", None);
    key.spec.secret = Some(crate::api::SecretSpec {
        name: Some("site-token".into()),
        ..Default::default()
    });
    key.spec.publish = vec![
        Publish {
            envoy_gateway: Some(EnvoyGatewayPublish::default()),
            ..Default::default()
        },
        Publish {
            kong: Some(KongPublish {
                consumer: "shop".into(),
            }),
            ..Default::default()
        },
        Publish {
            agentgateway: Some(Default::default()),
            ..Default::default()
        },
    ];
    assert_eq!(
        secrets(&key),
        [
            "site-token",
            "site-envoy-gateway",
            "site.delivery.kong",
            "site.delivery.kong-previous",
            "site.delivery.kong-previous-2",
            "site.delivery.kong-previous-3",
            "site.delivery.kong-previous-4",
            "site-agentgateway",
        ]
    );
}

#[test]
fn what_is_in_place_is_not_written_again() {
    let key = key("site", Some(alice_and_deployer()));
    let subjects = listed(&key);
    let first = plan(&key, &subjects, &on(None, None));
    let (role, binding) = stored(&first);
    let again = plan(&key, &subjects, &on(Some(&role), Some(&binding)));
    assert!(again.is_quiet(), "{again:?}");
    assert!(again.status.is_some(), "and reported in effect");
}

#[test]
fn a_removed_name_changes_only_the_binding() {
    let key_before = key("site", Some(alice_and_deployer()));
    let first = plan(&key_before, &listed(&key_before), &on(None, None));
    let (role, binding) = stored(&first);
    let mut fewer = alice_and_deployer();
    fewer.users.clear();
    let key_after = key("site", Some(fewer));
    let next = plan(
        &key_after,
        &listed(&key_after),
        &on(Some(&role), Some(&binding)),
    );
    assert!(next.role.is_none());
    let subjects = next.binding.expect("the binding changes").subjects.unwrap();
    assert!(subjects.iter().all(|s| s.name != "alice@example.com"));
    let status = next.status.expect("status.access");
    assert_eq!(
        status.subjects.len(),
        3,
        "alice reads it until the binding changes"
    );
}

#[test]
fn an_emptied_or_removed_list_deletes_the_keys_role_and_binding_binding_first() {
    let with = key("site", Some(alice_and_deployer()));
    let (role, binding) = stored(&plan(&with, &listed(&with), &on(None, None)));
    for access in [None, Some(Access::default())] {
        let without = key("site", access);
        let next = plan(
            &without,
            &listed(&without),
            &on(Some(&role), Some(&binding)),
        );
        let deleted: Vec<&str> = next
            .delete
            .iter()
            .map(|d| match d {
                AccessDeletion::RoleBinding(name, _) => {
                    assert_eq!(name, "site.keysmith-access");
                    "RoleBinding"
                }
                AccessDeletion::Role(..) => "Role",
            })
            .collect();
        assert_eq!(deleted, ["RoleBinding", "Role"]);
        assert!(next.role.is_none() && next.binding.is_none() && next.status.is_none());
    }
}

#[test]
fn a_role_or_binding_of_that_name_not_the_keys_is_a_conflict_and_never_written() {
    let key = key("site", Some(alice_and_deployer()));
    let subjects = listed(&key);
    let (mut theirs, ours) = stored(&plan(&key, &subjects, &on(None, None)));
    theirs.metadata.owner_references = None;
    let next = plan(&key, &subjects, &on(Some(&theirs), Some(&ours)));
    let (why, message) = next.problem.clone().expect("a conflict");
    assert_eq!(why, reason::ACCESS_CONFLICT);
    assert!(
        message.starts_with("spec.access: Role site.keysmith-access exists"),
        "{message}"
    );
    assert!(next.role.is_none() && next.binding.is_none() && next.status.is_none());
    // The key's binding would grant whatever the other Role grants: it goes.
    assert!(matches!(
        next.delete.as_slice(),
        [AccessDeletion::RoleBinding(..)]
    ));
}

#[test]
fn a_binding_of_the_keys_pointing_at_another_role_is_replaced() {
    let key = key("site", Some(alice_and_deployer()));
    let subjects = listed(&key);
    let (role, mut binding) = stored(&plan(&key, &subjects, &on(None, None)));
    binding.role_ref.name = "other".into();
    let next = plan(&key, &subjects, &on(Some(&role), Some(&binding)));
    assert!(matches!(
        next.delete.as_slice(),
        [AccessDeletion::RoleBinding(..)]
    ));
    assert_eq!(next.binding.unwrap().role_ref.name, "site.keysmith-access");
}

/// The whole plan of `key` with no Secret yet and `access` as the Role and RoleBinding observed.
fn plan_of(key: &ApiKey, access: Observed<'_>) -> planner::Plan {
    let observed = planner::Observed {
        key,
        secret: None,
        header_secrets: &HeaderSecrets::new(),
        published: &[],
        personal: Default::default(),
        access,
    };
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    planner::plan(&observed, now, &mut mint_token).unwrap()
}

#[test]
fn without_access_lists_on_nothing_is_granted_and_ready_says_what_to_set() {
    let key = key("site", Some(alice_and_deployer()));
    let plan = plan_of(&key, Observed::default());
    assert!(plan.access.is_quiet());
    let status = plan.status.expect("status");
    assert!(status.access.is_none());
    let ready = conditions::find(&status.conditions, READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", reason::ACCESS_LISTS_OFF)
    );
    assert!(
        ready.message.contains("accessLists.enabled=true"),
        "{}",
        ready.message
    );
    assert!(plan.secret.is_some(), "the tokens are minted all the same");
    let warned: Vec<_> = plan
        .events
        .iter()
        .filter(|e| e.reason == reason::ACCESS_LISTS_OFF)
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", plan.events);
    assert_eq!(warned[0].note, ready.message);

    // Said once: the next pass, from that status, has nothing new to say.
    let mut reconciled = key.clone();
    reconciled.status = Some(status);
    let again = plan_of(&reconciled, Observed::default());
    assert!(
        again
            .events
            .iter()
            .all(|e| e.reason != reason::ACCESS_LISTS_OFF),
        "{:?}",
        again.events
    );
}

#[test]
fn with_access_lists_on_the_plan_grants_and_status_shows_it() {
    let key = key("site", Some(alice_and_deployer()));
    let plan = plan_of(&key, on(None, None));
    assert!(plan.access.role.is_some() && plan.access.binding.is_some());
    let status = plan.status.expect("status");
    assert!(status.access.is_none(), "granted once the writes are seen");
    assert!(conditions::is_true(&status.conditions, READY));
}

proptest! {
    /// Names tell keys apart: two ApiKey names (DNS subdomains) never share a Role.
    #[test]
    fn object_names_are_unambiguous(
        a in "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?){0,3}",
        b in "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?){0,3}",
    ) {
        prop_assert_eq!(object_name(&a) == object_name(&b), a == b);
    }
}

/// A rejected spec still takes readers away (only that), like `disabled: true` does.
#[test]
fn a_rejected_spec_only_takes_readers_away() {
    let valid = key("site", Some(alice_and_deployer()));
    let (role, binding) = stored(&plan(&valid, &listed(&valid), &on(None, None)));
    let rejected = |access: Access| {
        let mut key = key("site", Some(access));
        key.spec.expires_after = Some("1000w".into());
        key
    };
    let planned = |key: &ApiKey| plan_of(key, on(Some(&role), Some(&binding)));

    let mut fewer = alice_and_deployer();
    fewer.users.clear();
    let plan = planned(&rejected(fewer));
    let status = plan.status.expect("Ready=False InvalidSpec");
    assert_eq!(
        conditions::find(&status.conditions, READY).unwrap().reason,
        conditions::reason::INVALID_SPEC
    );
    let kept = plan.access.binding.expect("alice leaves").subjects.unwrap();
    assert_eq!(kept.len(), 2);
    assert!(kept.iter().all(|s| s.name != "alice@example.com"));
    assert!(plan.access.role.is_none() && plan.access.delete.is_empty());
    assert_eq!(
        status.access.expect("still in effect").subjects.len(),
        3,
        "until the binding changes"
    );

    let mut more = alice_and_deployer();
    more.users.push("mallory".into());
    let plan = planned(&rejected(more));
    assert!(plan.access.is_quiet(), "nobody is added: {:?}", plan.access);

    let plan = planned(&rejected(Access::default()));
    assert_eq!(plan.access.delete.len(), 2, "nobody left: both go");
    assert!(plan.status.expect("status").access.is_none());
}

#[test]
fn a_name_too_long_for_the_role_is_reported_not_written() {
    let long = [
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(50),
    ]
    .join(".");
    let key = key(&long, Some(alice_and_deployer()));
    let plan = plan(&key, &listed(&key), &on(None, None));
    let (why, message) = plan.problem.expect("a problem");
    assert_eq!(why, reason::ACCESS_CONFLICT);
    assert!(message.contains("shorten the ApiKey's name"), "{message}");
    assert!(plan.role.is_none() && plan.binding.is_none());
}
