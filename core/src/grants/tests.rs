//! Table tests: every rule of the module docs and every grant example of SPEC sections 3 and 9.

use serde_json::json;

use super::*;

/// Identity of the key under test, what `own` compares `context.owner` with.
const KEY: &str = "cms/marketing-site";

fn grants(value: serde_json::Value) -> Vec<Grant> {
    serde_json::from_value(value).expect("grants deserialize")
}

fn compile(value: serde_json::Value) -> CompiledGrants {
    CompiledGrants::compile(&grants(value)).expect("grants compile")
}

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A request written compactly in a decision table; setters take `"x"` or `None`.
#[derive(Clone, Copy, Default)]
struct Ask {
    action: Option<&'static str>,
    resource: Option<&'static str>,
    fields: &'static [&'static str],
    status: Option<&'static str>,
    locale: Option<&'static str>,
    owner: Option<&'static str>,
}

/// A request for `action`.
fn ask(action: impl Into<Option<&'static str>>) -> Ask {
    Ask {
        action: action.into(),
        ..Ask::default()
    }
}

impl Ask {
    fn on(self, resource: impl Into<Option<&'static str>>) -> Self {
        let resource = resource.into();
        Self { resource, ..self }
    }
    fn fields(self, fields: &'static [&'static str]) -> Self {
        Self { fields, ..self }
    }
    fn status(self, status: impl Into<Option<&'static str>>) -> Self {
        let status = status.into();
        Self { status, ..self }
    }
    fn locale(self, locale: impl Into<Option<&'static str>>) -> Self {
        let locale = locale.into();
        Self { locale, ..self }
    }
    fn owner(self, owner: impl Into<Option<&'static str>>) -> Self {
        let owner = owner.into();
        Self { owner, ..self }
    }
}

/// Evaluates each `(name, request, expected decision)` row.
fn check(compiled: &CompiledGrants, rows: &[(&str, Ask, Decision)]) {
    for (name, ask, expected) in rows {
        let fields = owned(ask.fields);
        let request = Request {
            action: ask.action,
            resource: ask.resource,
            fields: &fields,
            context: Context {
                status: ask.status,
                locale: ask.locale,
                owner: ask.owner,
            },
        };
        assert_eq!(compiled.evaluate(&request, KEY), *expected, "{name}");
    }
}

const ALLOWED_0: Decision = Decision::Allowed { grant: 0 };
const NO_ALLOW: Decision = Decision::Denied(DenyReason::NoMatchingAllow);

// ---- patterns ----

#[test]
fn pattern_parse_rejects_bad_patterns() {
    let too_long = "a".repeat(MAX_PATTERN_LEN + 1);
    let cases: &[(&str, PatternError)] = &[
        ("", PatternError::Empty),
        (&too_long, PatternError::TooLong { len: 257 }),
        (" content", PatternError::InvalidChar { ch: ' ', at: 0 }),
        (
            "content.read ",
            PatternError::InvalidChar { ch: ' ', at: 12 },
        ),
        ("a\tb", PatternError::InvalidChar { ch: '\t', at: 1 }),
        ("a\nb", PatternError::InvalidChar { ch: '\n', at: 1 }),
        ("a\u{7}", PatternError::InvalidChar { ch: '\u{7}', at: 1 }),
        (
            &"a*".repeat(MAX_WILDCARDS + 1),
            PatternError::TooManyWildcards { count: 17 },
        ),
        (
            "é\u{a0}",
            PatternError::InvalidChar {
                ch: '\u{a0}',
                at: 2,
            },
        ),
    ];
    for (source, error) in cases {
        assert_eq!(Pattern::parse(source), Err(error.clone()), "{source:?}");
    }
}

#[test]
fn pattern_parse_accepts_good_patterns() {
    // The limit counts characters, like the CRD's maxLength, not UTF-8 bytes.
    let longest = "é".repeat(MAX_PATTERN_LEN);
    for source in [
        "*",
        "**",
        "content.read",
        "content:pages:*",
        "*:read",
        "é*ü",
        &longest,
    ] {
        let pattern = Pattern::parse(source).expect(source);
        assert_eq!(pattern.as_str(), source);
        assert_eq!(pattern.to_string(), source);
    }
}

#[test]
fn pattern_shapes_take_fast_paths() {
    let glob = |head_end, tail_start| Matcher::Glob {
        head_end,
        tail_start,
    };
    let cases = [
        ("*", Matcher::Any),
        ("***", Matcher::Any),
        ("content.read", Matcher::Exact),
        ("content:*", Matcher::Prefix { end: 8 }),
        ("content:**", Matcher::Prefix { end: 8 }),
        ("*:read", Matcher::Suffix { start: 1 }),
        ("a*b", glob(1, 2)),
        ("a**b", glob(1, 3)),
        ("*a*", glob(0, 3)),
        ("a*b**c*d", glob(1, 7)),
    ];
    for (source, matcher) in cases {
        assert_eq!(
            Pattern::parse(source).unwrap().matcher,
            matcher,
            "{source:?}"
        );
    }
}

#[test]
fn pattern_matching() {
    let cases = [
        // `*` alone matches everything, the empty string included.
        ("*", "", true),
        ("*", "anything:at.all", true),
        ("**", "", true),
        // Literals match exactly.
        ("content.read", "content.read", true),
        ("content.read", "content.reads", false),
        ("content.read", "Content.read", false),
        // `*` crosses `:` and `.` and may be empty.
        ("content:pages:*", "content:pages:home", true),
        ("content:pages:*", "content:pages:a:b", true),
        ("content:pages:*", "content:pages:", true),
        ("content:pages:*", "content:pages", false),
        ("content:pages:*", "content:posts:1", false),
        ("content.*", "content.read", true),
        ("content.*", "content", false),
        (
            "workspace:site-a:content:*",
            "workspace:site-a:content:posts:1",
            true,
        ),
        (
            "workspace:site-a:content:*",
            "workspace:site-b:content:posts:1",
            false,
        ),
        ("*:read", "users:read", true),
        ("*:read", "users:reader", false),
        ("*:pages:*", "content:pages:home", true),
        ("*:pages:*", "content:posts:home", false),
        ("workspace:*:content:*", "workspace:a:b:content:c", true),
        ("workspace:*:content:*", "workspace:a:contents", false),
        // Head and tail may not share characters.
        ("a*a", "a", false),
        ("a*a", "aa", true),
        ("ab*ba", "aba", false),
        // Middle literals must appear in order, without overlapping.
        ("a*b*c", "a-c-b-c", true),
        ("a*b*c", "a-c-b", false),
        ("*aa*aa*", "aaa", false),
        ("*aa*aa*", "aaaa", true),
        // Non-ASCII is literal too.
        ("é*ü", "é-ü", true),
        ("é*ü", "e-ü", false),
    ];
    for (pattern, input, expected) in cases {
        let parsed = Pattern::parse(pattern).unwrap();
        assert_eq!(parsed.matches(input), expected, "{pattern:?} vs {input:?}");
    }
}

// ---- compilation ----

#[test]
fn compile_locates_bad_patterns() {
    let list = grants(json!([
        { "effect": "allow", "actions": ["content.read"] },
        { "effect": "deny", "actions": ["*"], "resources": ["content:*", "bad pattern"] },
    ]));
    let error = CompiledGrants::compile(&list).unwrap_err();
    assert_eq!(
        error,
        GrantError {
            grant: 1,
            list: PatternList::Resources,
            index: 1,
            error: PatternError::InvalidChar { ch: ' ', at: 3 },
        }
    );
    assert_eq!(error.path(), "[1].resources[1]");
    assert_eq!(
        error.to_string(),
        "[1].resources[1]: pattern contains ' ' at byte 3: whitespace and control characters are not allowed"
    );

    let empty_action = grants(json!([{ "effect": "allow", "actions": ["a", ""] }]));
    let error = CompiledGrants::compile(&empty_action).unwrap_err();
    assert_eq!(error.path(), "[0].actions[1]");
    assert_eq!(error.error, PatternError::Empty);
}

#[test]
fn permissions_list_allow_actions_once_in_order() {
    let compiled = compile(json!([
        { "effect": "allow", "actions": ["content.read", "content.update"] },
        { "effect": "deny", "actions": ["content.delete"] },
        { "effect": "allow", "actions": ["users.read", "content.read"], "resources": ["users:*"] },
    ]));
    let permissions: Vec<&str> = compiled.permissions().iter().map(|p| &**p).collect();
    assert_eq!(
        permissions,
        ["content.read", "content.update", "users.read"]
    );
    assert!(CompiledGrants::default().permissions().is_empty());
}

#[test]
fn decision_display_for_audit() {
    let cases = [
        (Decision::NotAsked, "no action asked", false),
        (Decision::Allowed { grant: 2 }, "allowed by grant 2", false),
        (
            Decision::Denied(DenyReason::DeniedBy(1)),
            "denied by grant 1",
            true,
        ),
        (NO_ALLOW, "no allow grant matches", true),
        (
            Decision::Denied(DenyReason::NoGrants),
            "key has no grants",
            true,
        ),
        (
            Decision::Denied(DenyReason::TooLarge(RequestPart::Fields)),
            "request fields over its size limit",
            true,
        ),
    ];
    for (decision, text, denied) in cases {
        assert_eq!(decision.to_string(), text);
        assert_eq!(decision.is_denied(), denied, "{text}");
    }
}

// ---- evaluation rules ----

const DENY_1: Decision = Decision::Denied(DenyReason::DeniedBy(1));

fn denied_by(grant: usize) -> Decision {
    Decision::Denied(DenyReason::DeniedBy(grant))
}

#[test]
fn no_action_is_not_asked_whatever_the_grants() {
    let rows = [(
        "authentication only",
        ask(None).on("content:pages:home"),
        Decision::NotAsked,
    )];
    check(&CompiledGrants::default(), &rows);
    check(
        &compile(json!([{ "effect": "deny", "actions": ["*"] }])),
        &rows,
    );
}

#[test]
fn no_grants_deny_every_action() {
    let compiled = CompiledGrants::compile(&[]).unwrap();
    let no_grants = Decision::Denied(DenyReason::NoGrants);
    check(&compiled, &[("any action", ask("content.read"), no_grants)]);
}

#[test]
fn allow_needs_a_matching_action() {
    let compiled = compile(json!([{ "effect": "allow", "actions": ["content.read", "users.*"] }]));
    check(
        &compiled,
        &[
            ("first action", ask("content.read"), ALLOWED_0),
            ("pattern action", ask("users.update"), ALLOWED_0),
            ("other action", ask("content.delete"), NO_ALLOW),
            ("empty action", ask(""), NO_ALLOW),
        ],
    );
}

#[test]
fn deny_overrides_allow_and_decisions_name_source_indices() {
    let compiled = compile(json!([
        { "effect": "deny", "actions": ["content.delete"] },
        { "effect": "allow", "actions": ["content.read"] },
        { "effect": "allow", "actions": ["content.*"] },
        { "effect": "deny", "actions": ["*"], "resources": ["secret:*"] },
    ]));
    check(
        &compiled,
        &[
            (
                "first allow wins",
                ask("content.read"),
                Decision::Allowed { grant: 1 },
            ),
            (
                "second allow",
                ask("content.update"),
                Decision::Allowed { grant: 2 },
            ),
            ("deny beats allow", ask("content.delete"), denied_by(0)),
            (
                "resource deny",
                ask("content.read").on("secret:db"),
                denied_by(3),
            ),
        ],
    );
}

#[test]
fn unset_resources_match_any_resource_or_none() {
    let compiled = compile(json!([{ "effect": "allow", "actions": ["read"] }]));
    check(
        &compiled,
        &[
            ("no resource", ask("read"), ALLOWED_0),
            ("a resource", ask("read").on("x:y"), ALLOWED_0),
        ],
    );
}

#[test]
fn set_resources_need_a_resource_unless_star() {
    let named = compile(json!([
        { "effect": "allow", "actions": ["read"], "resources": ["content:*", "users:1"] },
    ]));
    check(
        &named,
        &[
            ("prefix", ask("read").on("content:a"), ALLOWED_0),
            ("literal", ask("read").on("users:1"), ALLOWED_0),
            ("other", ask("read").on("users:2"), NO_ALLOW),
            ("missing", ask("read"), NO_ALLOW),
        ],
    );
    let star = compile(json!([
        { "effect": "allow", "actions": ["read"], "resources": ["users:1", "*"] },
    ]));
    check(&star, &[("missing, star", ask("read"), ALLOWED_0)]);
    let deny = compile(json!([
        { "effect": "allow", "actions": ["read"] },
        { "effect": "deny", "actions": ["read"], "resources": ["secret:*"] },
    ]));
    check(&deny, &[("missing, deny", ask("read"), ALLOWED_0)]);
}

#[test]
fn allow_fields_must_cover_every_requested_field() {
    let compiled = compile(json!([
        { "effect": "allow", "actions": ["update"], "fields": ["hero_title", "body"] },
    ]));
    let update = ask("update");
    check(
        &compiled,
        &[
            ("no fields", update, ALLOWED_0),
            ("one listed", update.fields(&["body"]), ALLOWED_0),
            (
                "all listed",
                update.fields(&["hero_title", "body"]),
                ALLOWED_0,
            ),
            (
                "one unlisted",
                update.fields(&["hero_title", "slug"]),
                NO_ALLOW,
            ),
        ],
    );
}

#[test]
fn deny_fields_apply_when_any_requested_field_is_listed() {
    let compiled = compile(json!([
        { "effect": "allow", "actions": ["update"] },
        { "effect": "deny", "actions": ["update"], "fields": ["slug"] },
    ]));
    let update = ask("update");
    check(
        &compiled,
        &[
            ("no fields", update, ALLOWED_0),
            ("unlisted", update.fields(&["body"]), ALLOWED_0),
            ("listed", update.fields(&["slug"]), DENY_1),
            ("one of them", update.fields(&["body", "slug"]), DENY_1),
        ],
    );
}

#[test]
fn allow_conditions_need_the_value_supplied_and_listed() {
    let compiled = compile(json!([{
        "effect": "allow",
        "actions": ["read"],
        "conditions": { "status": ["draft"], "locales": ["en", "de"] },
    }]));
    let ok = ask("read").status("draft").locale("de");
    check(
        &compiled,
        &[
            ("both hold", ok, ALLOWED_0),
            ("status missing", ok.status(None), NO_ALLOW),
            ("status unlisted", ok.status("published"), NO_ALLOW),
            ("locale missing", ok.locale(None), NO_ALLOW),
            ("locale unlisted", ok.locale("fr"), NO_ALLOW),
            ("case matters", ok.locale("EN"), NO_ALLOW),
        ],
    );
}

#[test]
fn allow_own_needs_the_key_as_owner() {
    let compiled = compile(json!([
        { "effect": "allow", "actions": ["update"], "conditions": { "own": true } },
    ]));
    let ok = ask("update").owner(KEY);
    check(
        &compiled,
        &[
            ("own item", ok, ALLOWED_0),
            ("someone else's", ok.owner("cms/other"), NO_ALLOW),
            ("no owner", ok.owner(None), NO_ALLOW),
        ],
    );
}

#[test]
fn own_false_imposes_nothing() {
    let compiled = compile(json!([
        { "effect": "allow", "actions": ["update"], "conditions": { "own": false } },
    ]));
    check(
        &compiled,
        &[
            ("no owner", ask("update"), ALLOWED_0),
            ("other owner", ask("update").owner("x/y"), ALLOWED_0),
        ],
    );
}

#[test]
fn deny_conditions_fail_closed_on_missing_context() {
    let compiled = compile(json!([
        { "effect": "allow", "actions": ["*"] },
        { "effect": "deny", "actions": ["publish"], "conditions": { "status": ["archived"] } },
        { "effect": "deny", "actions": ["translate"], "conditions": { "locales": ["ja"] } },
        { "effect": "deny", "actions": ["delete"], "conditions": { "own": true } },
    ]));
    let (publish, translate, delete) = (ask("publish"), ask("translate"), ask("delete"));
    check(
        &compiled,
        &[
            ("status listed", publish.status("archived"), DENY_1),
            ("status missing", publish, DENY_1),
            ("status unlisted", publish.status("draft"), ALLOWED_0),
            ("locale listed", translate.locale("ja"), denied_by(2)),
            ("locale missing", translate, denied_by(2)),
            ("locale unlisted", translate.locale("en"), ALLOWED_0),
            ("own item", delete.owner(KEY), denied_by(3)),
            ("owner missing", delete, denied_by(3)),
            ("other owner", delete.owner("cms/x"), ALLOWED_0),
        ],
    );
}

// ---- SPEC examples ----

/// SPEC section 3: the grant in the resource example, every part of it at once.
#[test]
fn spec_section_3_grant() {
    let compiled = compile(json!([{
        "effect": "allow",
        "actions": ["content.read"],
        "resources": ["content:pages:*"],
        "fields": ["hero_title"],
        "conditions": { "status": ["draft"], "locales": ["en", "de"], "own": true },
    }]));
    let ok = ask("content.read")
        .on("content:pages:home")
        .fields(&["hero_title"])
        .status("draft")
        .locale("en")
        .owner(KEY);
    check(
        &compiled,
        &[
            ("everything holds", ok, ALLOWED_0),
            ("nested page", ok.on("content:pages:a:b"), ALLOWED_0),
            ("no fields", ok.fields(&[]), ALLOWED_0),
            ("de", ok.locale("de"), ALLOWED_0),
            ("posts", ok.on("content:posts:1"), NO_ALLOW),
            ("no resource", ok.on(None), NO_ALLOW),
            ("other field", ok.fields(&["hero_title", "body"]), NO_ALLOW),
            ("published", ok.status("published"), NO_ALLOW),
            ("fr", ok.locale("fr"), NO_ALLOW),
            ("not own", ok.owner("cms/other"), NO_ALLOW),
            (
                "update",
                Ask {
                    action: Some("content.update"),
                    ..ok
                },
                NO_ALLOW,
            ),
        ],
    );
}

/// SPEC section 9, `cms-three-tokens`: grants only on the management slot.
#[test]
fn spec_cms_three_tokens() {
    let actions = [
        "content_read",
        "content_update",
        "content_delete",
        "users_read",
        "users_update",
    ];
    let management = compile(json!([{ "effect": "allow", "actions": actions }]));
    for action in actions {
        check(&management, &[(action, ask(action), ALLOWED_0)]);
    }
    check(
        &management,
        &[
            ("users_delete", ask("users_delete"), NO_ALLOW),
            ("dotted spelling", ask("content.read"), NO_ALLOW),
        ],
    );
    let permissions: Vec<&str> = management.permissions().iter().map(|p| &**p).collect();
    assert_eq!(permissions, actions);

    // Delivery and preview carry no grants: they authenticate, and are allowed no action.
    let delivery = CompiledGrants::compile(&[]).unwrap();
    check(
        &delivery,
        &[
            ("authenticate", ask(None), Decision::NotAsked),
            (
                "read",
                ask("content_read"),
                Decision::Denied(DenyReason::NoGrants),
            ),
        ],
    );
}

/// SPEC section 9, `grants.yaml`: workspace-prefixed resources, fields for create/update,
/// `own`, `status`, `locales`, and denies overriding allows.
#[test]
fn spec_grants_example() {
    let compiled = compile(json!([
        {
            "effect": "allow",
            "actions": ["content.read"],
            "resources": ["workspace:site-a:content:*"],
        },
        {
            "effect": "allow",
            "actions": ["content.create", "content.update"],
            "resources": ["workspace:site-a:content:pages:*"],
            "fields": ["hero_title", "body"],
            "conditions": { "status": ["draft"], "locales": ["en", "de"], "own": true },
        },
        {
            "effect": "deny",
            "actions": ["content.*"],
            "resources": ["workspace:site-a:content:legal:*"],
        },
        { "effect": "deny", "actions": ["content.update"], "fields": ["slug"] },
    ]));
    let read = ask("content.read");
    let update = ask("content.update")
        .on("workspace:site-a:content:pages:home")
        .fields(&["hero_title"])
        .status("draft")
        .locale("de")
        .owner(KEY);
    let allowed_1 = Decision::Allowed { grant: 1 };
    let legal = "workspace:site-a:content:legal:terms";
    check(
        &compiled,
        &[
            (
                "read a post",
                read.on("workspace:site-a:content:posts:1"),
                ALLOWED_0,
            ),
            (
                "other workspace",
                read.on("workspace:site-b:content:posts:1"),
                NO_ALLOW,
            ),
            ("legal read", read.on(legal), denied_by(2)),
            ("update own draft hero", update, allowed_1),
            (
                "create",
                Ask {
                    action: Some("content.create"),
                    ..update
                },
                allowed_1,
            ),
            (
                "two fields",
                update.fields(&["hero_title", "body"]),
                allowed_1,
            ),
            (
                "unlisted field",
                update.fields(&["hero_title", "author"]),
                NO_ALLOW,
            ),
            (
                "denied field",
                update.fields(&["hero_title", "slug"]),
                denied_by(3),
            ),
            ("published", update.status("published"), NO_ALLOW),
            ("fr", update.locale("fr"), NO_ALLOW),
            ("someone else's", update.owner("cms/editor"), NO_ALLOW),
            ("legal update", update.on(legal), denied_by(2)),
            (
                "delete",
                Ask {
                    action: Some("content.delete"),
                    ..update
                },
                NO_ALLOW,
            ),
        ],
    );
}

/// SPEC section 9, `public-delivery`: a `cmspub_` key reads published content and nothing else.
#[test]
fn spec_public_delivery_read_only_published() {
    let compiled = compile(json!([{
        "effect": "allow",
        "actions": ["content.read"],
        "resources": ["content:*"],
        "conditions": { "status": ["published"] },
    }]));
    let read = ask("content.read")
        .on("content:pages:home")
        .status("published");
    check(
        &compiled,
        &[
            ("published page", read, ALLOWED_0),
            ("published post", read.on("content:posts:42"), ALLOWED_0),
            ("draft", read.status("draft"), NO_ALLOW),
            ("status left out", read.status(None), NO_ALLOW),
            (
                "update",
                Ask {
                    action: Some("content.update"),
                    ..read
                },
                NO_ALLOW,
            ),
            ("users", read.on("users:1"), NO_ALLOW),
            (
                "authenticate only",
                Ask {
                    action: None,
                    ..read
                },
                Decision::NotAsked,
            ),
        ],
    );
}

// ---- bounded work (issue 27, N3) ----

fn spec_with(grants: serde_json::Value) -> crate::api::ApiKeySpec {
    serde_json::from_value(json!({ "tokens": [{ "name": "main", "grants": grants }] }))
        .expect("spec deserializes")
}

/// The errors validation reports for `spec.tokens[0].grants`, as `field: message` lines.
fn grant_errors(grants: serde_json::Value) -> Vec<String> {
    match crate::validation::validate(&spec_with(grants)) {
        Ok(_) => Vec::new(),
        Err(invalid) => invalid.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_issue_27_spec_is_refused_naming_the_grants() {
    // 960 deny patterns `*a…ab*` and `allow *`: 250 KB, under the 256 KiB spec cap.
    let mut list: Vec<serde_json::Value> = (0..15)
        .map(|i| {
            let actions: Vec<String> = (0..64)
                .map(|j| format!("*{}b{i}.{j}*", "a".repeat(240)))
                .collect();
            json!({ "effect": "deny", "actions": actions })
        })
        .collect();
    list.push(json!({ "effect": "allow", "actions": ["*"] }));
    let errors = grant_errors(json!(list));
    let named = |what: &str| {
        errors
            .iter()
            .any(|e| e.starts_with("spec.tokens[0].grants: ") && e.contains(what))
    };
    assert!(named("961 action and resource patterns"), "{errors:?}");
    assert!(named("at most 4096 allowed"), "{errors:?}");
}

#[test]
fn each_spec_cap_is_enforced_naming_the_field() {
    let allow = |actions: Vec<String>| json!([{ "effect": "allow", "actions": actions }]);
    let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("a{i}")).collect();
    let long: Vec<String> = (0..20)
        .map(|i| format!("{i:03}{}", "a".repeat(250)))
        .collect();
    let fields: Vec<serde_json::Value> = (0..5)
        .map(|i| {
            let listed: Vec<String> = (0..60).map(|j| format!("f{i}.{j}")).collect();
            json!({ "effect": "deny", "actions": ["*"], "fields": listed })
        })
        .collect();
    // At the pattern limit: admitted.
    let at_limit =
        json!([{ "effect": "allow", "actions": &many[..64], "resources": &many[64..128] }]);
    assert_eq!(grant_errors(at_limit), Vec::<String>::new());
    let cases = [
        (
            json!([
                { "effect": "allow", "actions": &many[..64], "resources": &many[64..128] },
                { "effect": "deny", "actions": ["x"] },
            ]),
            "spec.tokens[0].grants",
            "has 129 action and resource patterns in all its grants; at most 128 allowed",
        ),
        (
            allow(long),
            "spec.tokens[0].grants",
            "has 5060 bytes of action and resource patterns in all its grants; at most 4096",
        ),
        (
            json!(fields),
            "spec.tokens[0].grants",
            "has 300 fields entries in all its grants; at most 256 allowed",
        ),
        (
            allow(vec!["a*".repeat(MAX_WILDCARDS + 1)]),
            "spec.tokens[0].grants[0].actions[0]",
            "pattern has 17 '*', more than the 16 allowed",
        ),
    ];
    for (grants, field, message) in cases {
        let errors = grant_errors(grants);
        let expected = format!("{field}: {message}");
        assert!(
            errors.iter().any(|e| e.starts_with(&expected)),
            "{expected:?} not in {errors:?}"
        );
    }
}

#[test]
fn oversized_requests_are_denied_before_any_grant() {
    let compiled = compile(json!([{ "effect": "allow", "actions": ["*"] }]));
    let at_limit = |n: usize| "a".repeat(n);
    let over = |n: usize| "a".repeat(n + 1);
    let (action, resource) = (over(MAX_ACTION_LEN), over(MAX_RESOURCE_LEN));
    let (field, context) = (over(MAX_FIELD_LEN), over(MAX_CONTEXT_LEN));
    let too_many: Vec<String> = (0..=MAX_REQUEST_FIELDS).map(|i| i.to_string()).collect();
    let one_long = vec![field.clone()];
    let base = Request {
        action: Some("read"),
        ..Request::default()
    };
    let too_large = |part| Decision::Denied(DenyReason::TooLarge(part));
    let cases = [
        (
            Request {
                action: Some(&action),
                ..base
            },
            too_large(RequestPart::Action),
        ),
        (
            Request {
                resource: Some(&resource),
                ..base
            },
            too_large(RequestPart::Resource),
        ),
        (
            Request {
                fields: &too_many,
                ..base
            },
            too_large(RequestPart::Fields),
        ),
        (
            Request {
                fields: &one_long,
                ..base
            },
            too_large(RequestPart::Fields),
        ),
        (
            Request {
                context: Context {
                    status: Some(&context),
                    ..Context::default()
                },
                ..base
            },
            too_large(RequestPart::Context),
        ),
        (
            Request {
                context: Context {
                    owner: Some(&context),
                    ..Context::default()
                },
                ..base
            },
            too_large(RequestPart::Context),
        ),
    ];
    for (request, decision) in cases {
        assert_eq!(compiled.evaluate(&request, KEY), decision, "{request:?}");
        // Refused on length alone: no pattern was matched.
        assert_eq!(
            steps::count(|| {
                compiled.evaluate(&request, KEY);
            })
            .total(),
            0
        );
    }
    // At each limit, `allow *` still allows.
    let (action, resource) = (at_limit(MAX_ACTION_LEN), at_limit(MAX_RESOURCE_LEN));
    let fields: Vec<String> = (0..MAX_REQUEST_FIELDS)
        .map(|_| at_limit(MAX_FIELD_LEN))
        .collect();
    let context = at_limit(MAX_CONTEXT_LEN);
    let request = Request {
        action: Some(&action),
        resource: Some(&resource),
        fields: &fields,
        context: Context {
            status: Some(&context),
            locale: Some(&context),
            owner: Some(&context),
        },
    };
    assert_eq!(compiled.evaluate(&request, KEY), ALLOWED_0);
    // Without an action nothing is evaluated, so nothing is refused for size.
    let request = Request {
        action: None,
        resource: Some(&resource),
        ..request
    };
    assert_eq!(compiled.evaluate(&request, KEY), Decision::NotAsked);
}

#[test]
fn the_worst_admitted_spec_stays_under_the_work_bound() {
    // The benchmark's shape: deny patterns that scan the whole action and fail at its end,
    // as many and as long as validation admits, then `allow *`.
    let per_pattern = MAX_PATTERN_BYTES / MAX_PATTERNS;
    let mut list: Vec<serde_json::Value> = (0..63)
        .map(|i| {
            let actions: Vec<String> = (i * 127 / 63..(i + 1) * 127 / 63)
                .map(|j| {
                    let tail = format!("b{j}*");
                    format!("*{}{tail}", "a".repeat(per_pattern - 1 - tail.len()))
                })
                .collect();
            json!({ "effect": "deny", "actions": actions })
        })
        .collect();
    list.push(json!({ "effect": "allow", "actions": ["*"] }));
    let valid = crate::validation::validate(&spec_with(json!(list))).expect("admitted");
    let compiled = &valid.slots[0].grants;
    let action = "a".repeat(MAX_ACTION_LEN);
    let request = Request {
        action: Some(&action),
        ..Request::default()
    };
    let mut decision = None;
    let work = steps::count(|| decision = Some(compiled.evaluate(&request, KEY)));
    assert_eq!(decision, Some(Decision::Allowed { grant: 63 }));
    // Every deny pattern scanned the whole action: the bound is reached, not just respected.
    assert!(work.matching >= 127 * MAX_ACTION_LEN, "{work:?}");
    assert!(work.matching <= super::proptests::MATCH_BOUND, "{work:?}");
    assert!(work.total() <= super::proptests::WORK_BOUND, "{work:?}");
}
