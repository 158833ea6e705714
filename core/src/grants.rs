//! The grant evaluator of SPEC section 6, as pure functions.
//!
//! Grants are compiled once, when the verifier indexes an `ApiKey`
//! ([`CompiledGrants::compile`]), and evaluated on every request
//! ([`CompiledGrants::evaluate`]) without allocating.
//!
//! # Semantics
//!
//! * **No action, no question.** A request without an action asks for authentication only: the
//!   decision is [`Decision::NotAsked`] and the verifier answers on the token alone.
//! * **Allow unless denied.** With an action, the request is allowed iff at least one `allow`
//!   grant matches and no `deny` grant matches. A key without grants is denied every action.
//! * **A grant matches** when one of its action patterns matches the action, its resource
//!   patterns match the resource, its `fields` accept the requested fields and all of its
//!   conditions hold.
//! * **Patterns** (actions and resources): `*` matches any run of characters, possibly empty and
//!   including the `:` and `.` separators; every other character is literal. So
//!   `content:pages:*` matches `content:pages:a:b` and `content.*` matches `content.read`.
//!   Parsing rejects empty patterns, whitespace and control characters, patterns longer
//!   than [`MAX_PATTERN_LEN`] characters and patterns with more than [`MAX_WILDCARDS`] stars.
//! * **Resources.** Unset: any resource, or none. Set: the request's resource must match one of
//!   the patterns; a request without a resource matches only a pattern that matches everything
//!   (`*`), so naming resources cannot be dodged by leaving the resource out.
//! * **Fields.** On `allow`, every requested field must be listed (a request without fields
//!   passes). On `deny`, the grant applies when any requested field is listed (so a request
//!   without fields escapes a field deny: it touches none of them).
//! * **Conditions** (`status` and `locales` membership, `own`). On `allow`, a condition holds
//!   only when the request supplies the value and it is listed; `own: true` holds when
//!   `context.owner` is the key's identity `<namespace>/<name>`. On `deny`, a value the request
//!   does not supply counts as matching: a deny fails closed and cannot be dodged by omitting
//!   context. `own: false` or unset imposes nothing.
//!
//! * **Bounded requests.** An action longer than [`MAX_ACTION_LEN`] bytes, a resource longer
//!   than [`MAX_RESOURCE_LEN`], more than [`MAX_REQUEST_FIELDS`] fields, a field longer than
//!   [`MAX_FIELD_LEN`] or a context value longer than [`MAX_CONTEXT_LEN`] is denied
//!   ([`DenyReason::TooLarge`]) before any grant is looked at: with the spec-side totals that
//!   validation enforces ([`MAX_PATTERNS`], [`MAX_PATTERN_BYTES`], [`MAX_FIELD_ENTRIES`]) this bounds the work of one
//!   evaluation whatever the key's author and the caller write (docs/security.md states the bound).
//!
//! Strings are compared exactly (case-sensitive, no normalisation).

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use thiserror::Error;

use crate::api::{Effect, Grant, GrantConditions};

/// Longest action or resource pattern, in characters.
pub const MAX_PATTERN_LEN: usize = 256;

/// Most stars in one pattern. Matching is linear whatever the count; the cap keeps the constant
/// (one substring search per star) small.
pub const MAX_WILDCARDS: usize = 16;

/// Most action and resource patterns in one list of grants (a slot's effective grants), all
/// grants together: each may scan the whole action or resource once per request.
pub const MAX_PATTERNS: usize = 128;

/// Most bytes of action and resource patterns in one list of grants, all grants together.
pub const MAX_PATTERN_BYTES: usize = 4 * 1024;

/// Longest action a request may ask for, in bytes; longer ones are denied.
pub const MAX_ACTION_LEN: usize = 128;

/// Longest resource a request may name, in bytes; longer ones are denied.
pub const MAX_RESOURCE_LEN: usize = 128;

/// Most fields a request may name; more are denied.
pub const MAX_REQUEST_FIELDS: usize = 32;

/// Longest field a request may name, in bytes; longer is denied (so a deny on a longer listed
/// field still holds: the request is refused either way).
pub const MAX_FIELD_LEN: usize = 128;

/// Most `fields` entries in one list of grants, all grants together: each requested field is
/// looked up in every grant's list that a request reaches.
pub const MAX_FIELD_ENTRIES: usize = 256;

/// Longest `context.status`, `context.locale` or `context.owner`, in bytes; longer is denied.
pub const MAX_CONTEXT_LEN: usize = 256;

/// Why a pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PatternError {
    /// The pattern is the empty string.
    #[error("pattern is empty")]
    Empty,
    /// The pattern has more than [`MAX_PATTERN_LEN`] characters.
    #[error("pattern has {len} characters, more than the {MAX_PATTERN_LEN} allowed")]
    TooLong {
        /// Length of the pattern in characters.
        len: usize,
    },
    /// The pattern has more than [`MAX_WILDCARDS`] stars.
    #[error("pattern has {count} '*', more than the {MAX_WILDCARDS} allowed")]
    TooManyWildcards {
        /// Number of stars in the pattern.
        count: usize,
    },
    /// The pattern holds a whitespace or control character.
    #[error(
        "pattern contains {ch:?} at byte {at}: whitespace and control characters are not allowed"
    )]
    InvalidChar {
        /// The offending character.
        ch: char,
        /// Its byte offset in the pattern.
        at: usize,
    },
}

/// An action or resource pattern: `*` matches any run of characters, the rest is literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    source: Box<str>,
    matcher: Matcher,
}

/// How a pattern is matched, chosen at parse time so the common shapes skip the general loop.
/// Offsets are byte offsets into [`Pattern::source`], which saves copying the literal parts; they
/// fit in a `u16` because a pattern has at most [`MAX_PATTERN_LEN`] characters of at most four
/// bytes, which keeps a pattern at 24 bytes beside its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Matcher {
    /// Only stars: matches everything.
    Any,
    /// No star: the input must equal the source.
    Exact,
    /// `lit*`: the input must start with `source[..end]`.
    Prefix { end: u16 },
    /// `*lit`: the input must end with `source[start..]`.
    Suffix { start: u16 },
    /// `head*mid*...*tail`: anchored head and tail, then the literals between the stars of
    /// `source[head_end..tail_start]` in order.
    Glob { head_end: u16, tail_start: u16 },
}

impl Pattern {
    /// Parses a pattern, rejecting empty, over-long and whitespace- or control-bearing ones.
    pub fn parse(source: &str) -> Result<Self, PatternError> {
        validate(source)?;
        Ok(Self {
            source: source.into(),
            matcher: Matcher::for_source(source),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches every string (it is made of stars only).
    pub(crate) fn matches_everything(&self) -> bool {
        matches!(self.matcher, Matcher::Any)
    }

    /// Whether `input` matches the pattern. Linear: stars never backtrack, and each literal is
    /// found by `str::find` (two-way search, linear in haystack plus needle), so the work is
    /// O(`input.len()` + pattern length).
    pub fn matches(&self, input: &str) -> bool {
        #[cfg(test)]
        steps::charge_match(input.len() + self.source.len());
        let src = &*self.source;
        match self.matcher {
            Matcher::Any => true,
            Matcher::Exact => input == src,
            Matcher::Prefix { end } => input.starts_with(&src[..usize::from(end)]),
            Matcher::Suffix { start } => input.ends_with(&src[usize::from(start)..]),
            Matcher::Glob {
                head_end,
                tail_start,
            } => {
                let (head_end, tail_start) = (usize::from(head_end), usize::from(tail_start));
                glob_matches(
                    input,
                    &src[..head_end],
                    &src[head_end..tail_start],
                    &src[tail_start..],
                )
            }
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn validate(source: &str) -> Result<(), PatternError> {
    if source.is_empty() {
        return Err(PatternError::Empty);
    }
    let len = source.chars().count();
    if len > MAX_PATTERN_LEN {
        return Err(PatternError::TooLong { len });
    }
    let count = source.bytes().filter(|&b| b == b'*').count();
    if count > MAX_WILDCARDS {
        return Err(PatternError::TooManyWildcards { count });
    }
    match source
        .char_indices()
        .find(|(_, c)| c.is_whitespace() || c.is_control())
    {
        Some((at, ch)) => Err(PatternError::InvalidChar { ch, at }),
        None => Ok(()),
    }
}

impl Matcher {
    /// The matcher of a [`validate`]d source.
    fn for_source(source: &str) -> Self {
        // `*` is ASCII, so byte offsets of stars are always char boundaries.
        let (Some(first), Some(last)) = (source.find('*'), source.rfind('*')) else {
            return Self::Exact;
        };
        let one_run = source[first..=last].bytes().all(|b| b == b'*');
        // A validated source has at most 4 * MAX_PATTERN_LEN bytes.
        let offset = |at: usize| u16::try_from(at).expect("pattern length is validated");
        match (one_run, first == 0, last + 1 == source.len()) {
            (true, true, true) => Self::Any,
            (true, false, true) => Self::Prefix { end: offset(first) },
            (true, true, false) => Self::Suffix {
                start: offset(last + 1),
            },
            _ => Self::Glob {
                head_end: offset(first),
                tail_start: offset(last + 1),
            },
        }
    }
}

/// Greedy glob match, `inner` being the source from its first star to its last. Taking each
/// middle literal at its leftmost occurrence is optimal: a later occurrence only leaves less room
/// for the literals after it, so no backtracking is needed.
fn glob_matches(input: &str, head: &str, inner: &str, tail: &str) -> bool {
    // Strip head then tail from what remains, so the two can never overlap (`a*a` vs `a`).
    let Some(rest) = input.strip_prefix(head) else {
        return false;
    };
    let Some(mut rest) = rest.strip_suffix(tail) else {
        return false;
    };
    // Consecutive stars collapse: empty pieces between them constrain nothing.
    for literal in inner.split('*').filter(|piece| !piece.is_empty()) {
        match rest.find(literal) {
            Some(at) => rest = &rest[at + literal.len()..],
            None => return false,
        }
    }
    true
}

/// Which list of a grant a rejected pattern came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternList {
    /// `actions`.
    Actions,
    /// `resources`.
    Resources,
}

impl fmt::Display for PatternList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Actions => "actions",
            Self::Resources => "resources",
        })
    }
}

/// A bad pattern in a list of grants, located so validation can name the field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}: {error}", self.path())]
pub struct GrantError {
    /// Index of the grant in the list given to [`CompiledGrants::compile`].
    pub grant: usize,
    /// The list holding the pattern.
    pub list: PatternList,
    /// Index of the pattern in that list.
    pub index: usize,
    /// What is wrong with it.
    pub error: PatternError,
}

impl GrantError {
    /// Field path relative to the grants list, e.g. `[2].resources[0]`; prepend `spec.grants`
    /// or `spec.tokens[i].grants`.
    pub fn path(&self) -> String {
        format!("[{}].{}[{}]", self.grant, self.list, self.index)
    }
}

/// Why an action was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The deny grant at this index matched.
    DeniedBy(usize),
    /// The key has grants, but no allow grant matched.
    NoMatchingAllow,
    /// The key has no grants: it authenticates but is allowed nothing.
    NoGrants,
    /// A request value is over its limit, so no grant was evaluated.
    TooLarge(RequestPart),
}

/// The part of a request over its limit (see the `MAX_*` constants of this module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestPart {
    /// `action`, over [`MAX_ACTION_LEN`] bytes.
    Action,
    /// `resource`, over [`MAX_RESOURCE_LEN`] bytes.
    Resource,
    /// `fields`: more than [`MAX_REQUEST_FIELDS`], or one over [`MAX_FIELD_LEN`] bytes.
    Fields,
    /// A `context` value over [`MAX_CONTEXT_LEN`] bytes.
    Context,
}

impl fmt::Display for RequestPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Action => "action",
            Self::Resource => "resource",
            Self::Fields => "fields",
            Self::Context => "context",
        })
    }
}

impl Request<'_> {
    /// The first part of the request over its limit, if any.
    fn oversized(&self) -> Option<RequestPart> {
        let context = &self.context;
        if self.action.is_some_and(|a| a.len() > MAX_ACTION_LEN) {
            Some(RequestPart::Action)
        } else if self.resource.is_some_and(|r| r.len() > MAX_RESOURCE_LEN) {
            Some(RequestPart::Resource)
        } else if self.fields.len() > MAX_REQUEST_FIELDS
            || self.fields.iter().any(|f| f.len() > MAX_FIELD_LEN)
        {
            Some(RequestPart::Fields)
        } else if [context.status, context.locale, context.owner]
            .iter()
            .flatten()
            .any(|v| v.len() > MAX_CONTEXT_LEN)
        {
            Some(RequestPart::Context)
        } else {
            None
        }
    }
}

/// The outcome of evaluating a request, with the reason, for the verifier's answer and audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The request named no action: only authentication was asked.
    NotAsked,
    /// The allow grant at this index matched and no deny did.
    Allowed {
        /// Index of the first matching allow grant.
        grant: usize,
    },
    /// The action is refused (`FORBIDDEN`).
    Denied(DenyReason),
}

impl Decision {
    /// Whether the verifier must answer `FORBIDDEN`.
    pub(crate) fn is_denied(&self) -> bool {
        matches!(self, Self::Denied(_))
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAsked => f.write_str("no action asked"),
            Self::Allowed { grant } => write!(f, "allowed by grant {grant}"),
            Self::Denied(DenyReason::DeniedBy(grant)) => write!(f, "denied by grant {grant}"),
            Self::Denied(DenyReason::NoMatchingAllow) => f.write_str("no allow grant matches"),
            Self::Denied(DenyReason::NoGrants) => f.write_str("key has no grants"),
            Self::Denied(DenyReason::TooLarge(part)) => {
                write!(f, "request {part} over its size limit")
            }
        }
    }
}

/// The request context grant conditions look at (`context` in the verify body).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Context<'a> {
    /// `context.status`, e.g. `draft`.
    pub status: Option<&'a str>,
    /// `context.locale`, e.g. `en`.
    pub locale: Option<&'a str>,
    /// `context.owner`: the identity owning the item, compared with the key's identity.
    pub owner: Option<&'a str>,
}

/// What a request asks to do, borrowed from the verify body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Request<'a> {
    /// The action, e.g. `content.read`; `None` asks for authentication only.
    pub action: Option<&'a str>,
    /// The resource, e.g. `content:pages:home`.
    pub resource: Option<&'a str>,
    /// Fields a create or update touches.
    pub fields: &'a [String],
    /// Context for conditions.
    pub context: Context<'a>,
}

/// A sorted set of literals: binary search keeps 256-entry field lists cheap.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct StrSet(Box<[Box<str>]>);

impl StrSet {
    fn new(items: &[String]) -> Self {
        let mut items: Vec<Box<str>> = items.iter().map(|s| s.as_str().into()).collect();
        items.sort_unstable();
        items.dedup();
        Self(items.into())
    }

    fn contains(&self, item: &str) -> bool {
        // A binary search: at most log2(len) + 1 comparisons, each bounded by the item.
        #[cfg(test)]
        steps::charge_lookup(
            (usize::BITS - self.0.len().leading_zeros()) as usize * (item.len() + 1),
        );
        self.0.binary_search_by(|x| (**x).cmp(item)).is_ok()
    }
}

/// One grant of a [`CompiledGrants`], ready to evaluate. Opaque; public so that equal grants of
/// different sets can be one shared copy ([`CompiledGrants::share_grants`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompiledGrant {
    /// Position in the source list, reported in decisions (validation allows 64 grants).
    index: u32,
    actions: Box<[Pattern]>,
    resources: Option<Box<[Pattern]>>,
    /// Boxed because most grants have none: 8 bytes instead of 56 in every grant.
    narrowing: Option<Box<Narrowing>>,
}

/// What narrows a grant beyond its actions and resources: `fields` and `conditions`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Narrowing {
    fields: Option<StrSet>,
    status: Option<StrSet>,
    locales: Option<StrSet>,
    own: bool,
}

impl CompiledGrant {
    fn compile(index: usize, grant: &Grant) -> Result<Self, GrantError> {
        let position = u32::try_from(index).expect("fewer than 2^32 grants");
        let parse_list = |list: PatternList, patterns: &[String]| {
            patterns
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    Pattern::parse(p).map_err(|error| GrantError {
                        grant: index,
                        list,
                        index: i,
                        error,
                    })
                })
                .collect::<Result<Box<[Pattern]>, _>>()
        };
        let conditions = grant.conditions.as_ref();
        let set = |pick: fn(&GrantConditions) -> Option<&Vec<String>>| {
            conditions.and_then(pick).map(|v| StrSet::new(v))
        };
        let narrowing = Narrowing {
            fields: grant.fields.as_deref().map(StrSet::new),
            status: set(|c| c.status.as_ref()),
            locales: set(|c| c.locales.as_ref()),
            own: conditions.and_then(|c| c.own).unwrap_or(false),
        };
        let narrows = narrowing.fields.is_some()
            || narrowing.status.is_some()
            || narrowing.locales.is_some()
            || narrowing.own;
        Ok(Self {
            index: position,
            actions: parse_list(PatternList::Actions, &grant.actions)?,
            resources: grant
                .resources
                .as_deref()
                .map(|r| parse_list(PatternList::Resources, r))
                .transpose()?,
            narrowing: narrows.then(|| Box::new(narrowing)),
        })
    }

    /// Whether the grant covers the request. A deny fails closed: a condition value the request
    /// leaves out counts as matching, and the requested fields need only overlap the list.
    fn matches(&self, action: &str, request: &Request<'_>, identity: &str, deny: bool) -> bool {
        self.actions.iter().any(|p| p.matches(action))
            && self.resource_matches(request.resource)
            && self
                .narrowing
                .as_deref()
                .is_none_or(|n| n.matches(request, identity, deny))
    }

    fn resource_matches(&self, resource: Option<&str>) -> bool {
        let Some(patterns) = &self.resources else {
            return true;
        };
        match resource {
            Some(r) => patterns.iter().any(|p| p.matches(r)),
            None => patterns.iter().any(Pattern::matches_everything),
        }
    }
}

impl Narrowing {
    fn matches(&self, request: &Request<'_>, identity: &str, deny: bool) -> bool {
        let context = &request.context;
        self.fields_match(request.fields, deny)
            && condition(self.status.as_ref(), context.status, deny)
            && condition(self.locales.as_ref(), context.locale, deny)
            && (!self.own || context.owner.map_or(deny, |owner| owns(owner, identity)))
    }

    fn fields_match(&self, requested: &[String], deny: bool) -> bool {
        let Some(listed) = &self.fields else {
            return true;
        };
        if deny {
            requested.iter().any(|f| listed.contains(f))
        } else {
            requested.iter().all(|f| listed.contains(f))
        }
    }
}

/// Whether `owner` is the key's identity: one comparison, bounded by the shorter string.
fn owns(owner: &str, identity: &str) -> bool {
    #[cfg(test)]
    steps::charge_lookup(owner.len().min(identity.len()) + 1);
    owner == identity
}

/// A membership condition: unset holds; a missing value holds only for a deny (fail closed).
fn condition(set: Option<&StrSet>, value: Option<&str>, deny: bool) -> bool {
    set.is_none_or(|set| value.map_or(deny, |v| set.contains(v)))
}

/// The grants of one token slot, compiled for evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct CompiledGrants {
    // Split by effect so a request scans each kind once and stops at the first match. Each
    // grant is behind an `Arc` so sets that differ in one grant can share the others.
    allows: Box<[Arc<CompiledGrant>]>,
    denies: Box<[Arc<CompiledGrant>]>,
    permissions: Box<[Box<str>]>,
    /// Action and resource patterns of every grant, and their bytes: what [`work_bound`]
    /// (Self::work_bound) counts.
    patterns: (u32, u32),
}

impl CompiledGrants {
    /// Compiles a slot's effective grants (its own, else `spec.grants`). Decisions name grants
    /// by their index in `grants`.
    pub fn compile(grants: &[Grant]) -> Result<Self, GrantError> {
        let mut allows = Vec::new();
        let mut denies = Vec::new();
        for (index, grant) in grants.iter().enumerate() {
            let compiled = CompiledGrant::compile(index, grant)?;
            match grant.effect {
                Effect::Allow => allows.push(Arc::new(compiled)),
                Effect::Deny => denies.push(Arc::new(compiled)),
            }
        }
        let mut seen = HashSet::new();
        let permissions = allows
            .iter()
            .flat_map(|g| g.actions.iter().map(Pattern::as_str))
            .filter(|action| seen.insert(*action))
            .map(Box::from)
            .collect();
        let patterns = allows
            .iter()
            .chain(&denies)
            .flat_map(|g| g.actions.iter().chain(g.resources.iter().flatten()))
            .fold((0u32, 0u32), |(count, bytes), p| {
                (count + 1, bytes.saturating_add(p.as_str().len() as u32))
            });
        Ok(Self {
            allows: allows.into(),
            denies: denies.into(),
            permissions,
            patterns,
        })
    }

    /// An upper bound of the bytes one evaluation of a request with these `action` and
    /// `resource` lengths compares in patterns (each pattern tried once against the longer of
    /// them, plus the patterns themselves): the term that grows with an author's patterns.
    /// Zero for a request refused on its size, which no grant sees.
    pub fn work_bound(&self, action_len: usize, resource_len: usize) -> usize {
        if action_len > MAX_ACTION_LEN || resource_len > MAX_RESOURCE_LEN {
            return 0;
        }
        let (count, bytes) = self.patterns;
        count as usize * action_len.max(resource_len) + bytes as usize
    }

    /// Decides a request for the key whose identity is `identity` (`<namespace>/<name>`, what
    /// `own` compares `context.owner` with). Allocation-free.
    pub fn evaluate(&self, request: &Request<'_>, identity: &str) -> Decision {
        let Some(action) = request.action else {
            return Decision::NotAsked;
        };
        // Before any grant: whatever the grants, an oversized request costs one length check.
        if let Some(part) = request.oversized() {
            return Decision::Denied(DenyReason::TooLarge(part));
        }
        if self.allows.is_empty() && self.denies.is_empty() {
            return Decision::Denied(DenyReason::NoGrants);
        }
        if let Some(deny) = self
            .denies
            .iter()
            .find(|g| g.matches(action, request, identity, true))
        {
            return Decision::Denied(DenyReason::DeniedBy(deny.index as usize));
        }
        match self
            .allows
            .iter()
            .find(|g| g.matches(action, request, identity, false))
        {
            Some(allow) => Decision::Allowed {
                grant: allow.index as usize,
            },
            None => Decision::Denied(DenyReason::NoMatchingAllow),
        }
    }

    /// The verifier's `permissions` field: the allow grants' action patterns as written, without
    /// duplicates, in grant order. A summary only: resources, fields, conditions and denies
    /// narrow it, and [`evaluate`](Self::evaluate) is the authority.
    pub fn permissions(&self) -> &[Box<str>] {
        &self.permissions
    }

    /// Every grant, allows first: what a test of sharing compares.
    #[cfg(test)]
    pub(crate) fn grants(&self) -> impl Iterator<Item = &Arc<CompiledGrant>> {
        self.allows.iter().chain(&self.denies)
    }

    /// The same set with each grant replaced by `shared(grant)`, which must return an equal
    /// grant: how an interner makes equal grants of different sets one copy.
    pub fn share_grants(
        self,
        mut shared: impl FnMut(Arc<CompiledGrant>) -> Arc<CompiledGrant>,
    ) -> Self {
        let mut share =
            |list: Box<[Arc<CompiledGrant>]>| list.into_iter().map(&mut shared).collect();
        Self {
            allows: share(self.allows),
            denies: share(self.denies),
            permissions: self.permissions,
            patterns: self.patterns,
        }
    }
}

/// Instrumentation for tests: each match or lookup charges its worst-case work (bytes compared),
/// so a test can check the documented bound without timing anything.
#[cfg(test)]
pub(crate) mod steps {
    use std::cell::Cell;

    thread_local!(static STEPS: Cell<Work> = const { Cell::new(Work { matching: 0, lookups: 0 }) });

    /// Work charged on one thread.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct Work {
        /// By pattern matches.
        pub(crate) matching: usize,
        /// By field and condition lookups and the `own` comparison.
        pub(crate) lookups: usize,
    }

    impl Work {
        pub(crate) fn total(self) -> usize {
            self.matching + self.lookups
        }
    }

    pub(super) fn charge_match(work: usize) {
        STEPS.with(|s| {
            s.set(Work {
                matching: s.get().matching + work,
                ..s.get()
            })
        });
    }

    pub(super) fn charge_lookup(work: usize) {
        STEPS.with(|s| {
            s.set(Work {
                lookups: s.get().lookups + work,
                ..s.get()
            })
        });
    }

    /// Work charged on this thread by `f`.
    pub(crate) fn count(f: impl FnOnce()) -> Work {
        let before = STEPS.with(Cell::get);
        f();
        let after = STEPS.with(Cell::get);
        Work {
            matching: after.matching - before.matching,
            lookups: after.lookups - before.lookups,
        }
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
