//! Property tests: the matcher against a reference, robustness on arbitrary strings, and the
//! monotonicity that makes allow/deny composition safe.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::*;

const KEY: &str = "cms/site";

/// Obviously-correct glob matcher, exponential but fine on short inputs.
fn reference(pattern: &[char], input: &[char]) -> bool {
    match pattern.split_first() {
        None => input.is_empty(),
        Some(('*', rest)) => (0..=input.len()).any(|skip| reference(rest, &input[skip..])),
        Some((c, rest)) => input.first() == Some(c) && reference(rest, &input[1..]),
    }
}

/// Patterns over a small alphabet, so stars, repeats and separators collide often.
fn small_pattern() -> impl Strategy<Value = String> {
    "[ab:*]{1,5}"
}

fn effect() -> impl Strategy<Value = Effect> {
    prop_oneof![Just(Effect::Allow), Just(Effect::Deny)]
}

fn grant() -> impl Strategy<Value = Grant> {
    let conditions = (
        option::of(vec("draft|published", 0..3)),
        option::of(vec("en|de", 0..3)),
        option::of(any::<bool>()),
    )
        .prop_map(|(status, locales, own)| GrantConditions {
            status,
            locales,
            own,
        });
    grant_of(
        vec(small_pattern(), 1..3),
        option::of(vec(small_pattern(), 1..3)),
        option::of(vec("f[12]", 0..3)),
        option::of(conditions),
    )
}

/// A grant of either effect from strategies for its parts.
fn grant_of(
    actions: impl Strategy<Value = Vec<String>>,
    resources: impl Strategy<Value = Option<Vec<String>>>,
    fields: impl Strategy<Value = Option<Vec<String>>>,
    conditions: impl Strategy<Value = Option<GrantConditions>>,
) -> impl Strategy<Value = Grant> {
    (effect(), actions, resources, fields, conditions).prop_map(
        |(effect, actions, resources, fields, conditions)| Grant {
            effect,
            actions,
            resources,
            fields,
            conditions,
        },
    )
}

/// An owned request, borrowed as a [`Request`] for evaluation.
#[derive(Debug, Clone)]
struct Owned {
    action: Option<String>,
    resource: Option<String>,
    fields: Vec<String>,
    status: Option<String>,
    locale: Option<String>,
    owner: Option<String>,
}

impl Owned {
    fn request(&self) -> Request<'_> {
        Request {
            action: self.action.as_deref(),
            resource: self.resource.as_deref(),
            fields: &self.fields,
            context: Context {
                status: self.status.as_deref(),
                locale: self.locale.as_deref(),
                owner: self.owner.as_deref(),
            },
        }
    }
}

fn request_from(strings: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = Owned> {
    (
        option::of(strings.clone()),
        option::of(strings.clone()),
        vec(strings.clone(), 0..3),
        option::of(strings.clone()),
        option::of(strings.clone()),
        option::of(prop_oneof![Just(KEY.to_string()), strings]),
    )
        .prop_map(|(action, resource, fields, status, locale, owner)| Owned {
            action,
            resource,
            fields,
            status,
            locale,
            owner,
        })
}

/// Requests over the same small vocabulary as [`grant`], so grants often apply.
fn small_request() -> impl Strategy<Value = Owned> {
    request_from("[ab:]{0,4}|f[12]|draft|published|en|de")
}

fn evaluate(grants: &[Grant], request: &Owned) -> Decision {
    CompiledGrants::compile(grants)
        .expect("small patterns are valid")
        .evaluate(&request.request(), KEY)
}

/// `grants` with `extra` inserted at `at` (modulo the length, so any position can come up).
fn with(grants: &[Grant], extra: Grant, at: usize) -> Vec<Grant> {
    let mut grants = grants.to_vec();
    grants.insert(at % (grants.len() + 1), extra);
    grants
}

/// The pattern term of the bound of docs/security.md, in the units [`steps`] charges (bytes
/// compared): every pattern scans its input once.
pub(crate) const MATCH_BOUND: usize = MAX_PATTERNS * {
    // `Ord::max` is not const.
    if MAX_ACTION_LEN > MAX_RESOURCE_LEN {
        MAX_ACTION_LEN
    } else {
        MAX_RESOURCE_LEN
    }
} + MAX_PATTERN_BYTES;

/// The whole bound: every reached grant (64 at most) also looks each requested field up in its
/// list, looks `status` and `locale` up in its condition lists (64 entries: at most 7
/// comparisons each) and compares `owner` once. A binary search over `s` entries takes at most
/// log2(s) + 1 <= s comparisons, so the field lists of all grants take at most
/// `MAX_FIELD_ENTRIES` per requested field.
pub(crate) const WORK_BOUND: usize = MATCH_BOUND
    + MAX_REQUEST_FIELDS * MAX_FIELD_ENTRIES * (MAX_FIELD_LEN + 1)
    + 64 * (2 * 7 + 1) * (MAX_CONTEXT_LEN + 1);

/// Patterns made to fail late against runs of `a`: a `b` near the end and stars anywhere; now
/// and then `*`, which matches everything and ends the scan of its list.
fn adversarial_pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        19 => "\\*?a{0,30}(\\*a{0,8}){0,5}b\\*?",
        1 => Just("*".to_string()),
    ]
}

fn adversarial_grant() -> impl Strategy<Value = Grant> {
    let conditions =
        (option::of(vec("a{1,64}", 1..64)), any::<bool>()).prop_map(|(set, own)| GrantConditions {
            status: set.clone(),
            locales: set,
            own: Some(own),
        });
    grant_of(
        vec(adversarial_pattern(), 1..8),
        option::of(vec(adversarial_pattern(), 1..8)),
        option::of(vec("a{0,127}b?", 1..24)),
        option::of(conditions),
    )
}

/// Requests over the grants' alphabet, each part within its limit or far beyond it.
fn adversarial_request() -> impl Strategy<Value = Owned> {
    // Without the limits, a dozen patterns scanning such an action would already exceed the
    // pattern term of the bound.
    let value = |within: &'static str, beyond: &'static str| prop_oneof![3 => within, 1 => beyond];
    let input = value("a{0,127}b?", "a{0,2000}b?");
    let context = value("a{0,256}", "a{0,2000}");
    let fields = prop_oneof![
        3 => vec("a{0,127}b?", 0..=32),
        1 => vec("a{0,300}b?", 0..100),
    ];
    (
        input.clone(),
        option::of(input),
        fields,
        option::of(context.clone()),
        option::of(context.clone()),
        option::of(context),
    )
        .prop_map(|(action, resource, fields, status, locale, owner)| Owned {
            action: Some(action),
            resource,
            fields,
            status,
            locale,
            owner,
        })
}

/// What validation makes of a spec holding `grants`, as the verifier would compile it.
fn admitted(grants: &[Grant]) -> Option<CompiledGrants> {
    let spec = serde_json::json!({ "tokens": [{ "name": "main" }], "grants": grants });
    let spec = serde_json::from_value(spec).expect("generated spec deserializes");
    let valid = crate::validation::validate(&spec).ok()?;
    Some(valid.slots[0].grants.clone())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn evaluation_work_stays_under_the_documented_bound(
        grants in vec(adversarial_grant(), 1..=16),
        request in adversarial_request(),
    ) {
        // Specs validation refuses are never evaluated: the verifier keeps the last accepted one.
        // Rejecting them (rather than passing) makes proptest fail if few specs are admitted.
        let compiled = admitted(&grants);
        prop_assume!(compiled.is_some());
        let compiled = compiled.expect("assumed");
        let work = steps::count(|| {
            compiled.evaluate(&request.request(), KEY);
        });
        prop_assert!(work.matching <= MATCH_BOUND, "{work:?} > {MATCH_BOUND}");
        // The verifier's per-namespace budget of costly decisions relies on this estimate.
        let asked = request.request();
        let len = |part: Option<&str>| part.map_or(0, str::len);
        let estimate = compiled.work_bound(len(asked.action), len(asked.resource));
        prop_assert!(work.matching <= estimate, "{work:?} > estimate {estimate}");
        prop_assert!(work.total() <= WORK_BOUND, "{work:?} > {WORK_BOUND}");
    }
}

proptest! {
    #[test]
    fn matcher_agrees_with_reference(pattern in small_pattern(), input in "[ab:*]{0,8}") {
        let chars = |s: &str| s.chars().collect::<Vec<_>>();
        let parsed = Pattern::parse(&pattern).unwrap();
        prop_assert_eq!(parsed.matches(&input), reference(&chars(&pattern), &chars(&input)));
    }

    #[test]
    fn parse_and_match_never_panic(pattern in any::<String>(), input in any::<String>()) {
        match Pattern::parse(&pattern) {
            Ok(parsed) => {
                // What parse accepts it keeps verbatim, and a pattern matches itself when its
                // stars are read as literal characters.
                prop_assert_eq!(parsed.as_str(), pattern.as_str());
                prop_assert!(parsed.matches(&pattern));
                parsed.matches(&input);
            }
            Err(PatternError::Empty) => prop_assert!(pattern.is_empty()),
            Err(PatternError::TooLong { len }) => prop_assert!(len > MAX_PATTERN_LEN),
            Err(PatternError::TooManyWildcards { count }) => prop_assert!(count > MAX_WILDCARDS),
            Err(PatternError::InvalidChar { ch, at }) => {
                prop_assert_eq!(pattern[at..].chars().next(), Some(ch));
            }
        }
    }

    #[test]
    fn evaluation_never_panics_on_arbitrary_strings(
        effect in effect(),
        actions in vec(any::<String>(), 1..3),
        resources in option::of(vec(any::<String>(), 1..3)),
        fields in option::of(vec(any::<String>(), 0..3)),
        request in request_from(any::<String>()),
    ) {
        let grant = Grant { effect, actions, resources, fields, conditions: None };
        if let Ok(compiled) = CompiledGrants::compile(&[grant]) {
            compiled.evaluate(&request.request(), KEY);
        }
    }

    #[test]
    fn deny_everything_always_wins(
        grants in vec(grant(), 0..5),
        at in any::<usize>(),
        request in small_request(),
    ) {
        let deny_all = Grant { effect: Effect::Deny, actions: vec!["*".into()], ..Grant::default() };
        let decision = evaluate(&with(&grants, deny_all, at), &request);
        if request.action.is_some() {
            prop_assert!(matches!(decision, Decision::Denied(DenyReason::DeniedBy(_))), "{decision:?}");
        } else {
            prop_assert_eq!(decision, Decision::NotAsked);
        }
    }

    #[test]
    fn adding_an_allow_never_denies_what_was_allowed(
        grants in vec(grant(), 0..5),
        extra in grant(),
        at in any::<usize>(),
        request in small_request(),
    ) {
        let extra = Grant { effect: Effect::Allow, ..extra };
        let before = evaluate(&grants, &request);
        let after = evaluate(&with(&grants, extra, at), &request);
        prop_assert!(before.is_denied() || !after.is_denied(), "{before:?} became {after:?}");
    }

    #[test]
    fn adding_a_deny_never_allows_what_was_denied(
        grants in vec(grant(), 0..5),
        extra in grant(),
        at in any::<usize>(),
        request in small_request(),
    ) {
        let extra = Grant { effect: Effect::Deny, ..extra };
        let before = evaluate(&grants, &request);
        let after = evaluate(&with(&grants, extra, at), &request);
        prop_assert!(!before.is_denied() || after.is_denied(), "{before:?} became {after:?}");
    }
}
