//! Tenant isolation: which namespaces' keys a route of the verification API accepts.
//!
//! Whoever may write ApiKeys in a namespace chooses their grants and `environment`, so a key's
//! own content cannot say whom it is good for: the caller's owner decides, in configuration a
//! client of the route cannot change. A gateway route names its namespaces in the fixed part of
//! its URL, `/v1/namespaces/<ns>[,<ns>...]/authz` or `/verify`; unscoped routes (`/v1/verify`,
//! `/v1/authz[/…]`) and TokenReviews accept what the verifier's flags say
//! (`--accept-namespaces`, `--token-review-audience-namespaces`), by default no namespace.
//!
//! The scope comes first in the path because gateways append what the client chose after what
//! they were configured with: Envoy's `ext_authz` appends the client's path and query to its
//! `path_prefix`. Under `/v1/authz/` everything is the client's, so a scope there would let a
//! client of an unscoped Envoy route write `/namespaces/<any>/` into its own path; a route whose
//! configured prefix is `/v1/namespaces/tenant-a/authz` can only ever be followed by the
//! client's path. Only the one segment after `/v1/namespaces/` is read, raw: no percent-decoding,
//! no `..` resolution, nothing from the query or headers (ingress-nginx forwards the client's URL
//! in `X-Original-URL`), so nothing a client adds can move it.
//!
//! A key outside the accepted namespaces answers NOT_FOUND, exactly like an unknown token.

use std::fmt;

use super::decision::Code;
use super::index::Verdict;

/// Namespaces whose keys a request accepts, borrowed from configuration or from the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespaces<'a> {
    /// Every namespace (`--accept-namespaces '*'`, an explicit choice).
    Any,
    /// The namespaces of a checked comma-separated list; empty: none.
    Listed(&'a str),
}

impl Namespaces<'_> {
    /// Whether a key in `namespace` is accepted. Allocation-free: it runs on every request.
    pub fn accepts(self, namespace: &str) -> bool {
        match self {
            Namespaces::Any => true,
            Namespaces::Listed(list) => {
                !list.is_empty() && list.split(',').any(|listed| listed == namespace)
            }
        }
    }
}

/// An owned set of namespaces, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Every namespace.
    Any,
    /// A checked comma-separated list of namespaces; empty (the default): none.
    Listed(String),
}

impl Default for Accepted {
    fn default() -> Self {
        Accepted::Listed(String::new())
    }
}

impl Accepted {
    /// Read `*` (every namespace), an empty string (none) or comma-separated namespace names.
    pub fn parse(text: &str) -> Result<Accepted, String> {
        match text {
            "*" => Ok(Accepted::Any),
            "" => Ok(Accepted::default()),
            list => namespace_list(list)
                .map(|list| Accepted::Listed(list.to_owned()))
                .ok_or_else(|| {
                    format!(
                        "{list:?} is not '*' or a comma-separated list of namespace names \
                         (lower-case letters, digits and '-', at most 63 characters)"
                    )
                }),
        }
    }

    /// Borrow it for a request.
    pub fn view(&self) -> Namespaces<'_> {
        match self {
            Accepted::Any => Namespaces::Any,
            Accepted::Listed(list) => Namespaces::Listed(list),
        }
    }

    /// Whether no namespace is accepted.
    pub fn is_none(&self) -> bool {
        matches!(self, Accepted::Listed(list) if list.is_empty())
    }
}

impl fmt::Display for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Accepted::Any => f.write_str("*"),
            Accepted::Listed(list) => f.write_str(list),
        }
    }
}

/// What the verifier's owner configured: the namespaces of unscoped routes and of TokenReview
/// audiences.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenancy {
    /// `--accept-namespaces`: unscoped routes, and TokenReviews asking no mapped audience.
    pub default: Accepted,
    /// `--token-review-audience-namespaces`: the namespaces each audience accepts.
    pub audiences: Vec<(String, Accepted)>,
    /// `--token-review-personal-audiences`: the mapped audiences for which a personal key
    /// authenticates as its owner (elsewhere it answers as any key).
    pub personal: Vec<String>,
}

impl Tenancy {
    /// Every namespace everywhere: for a single-tenant development cluster only.
    pub fn any() -> Tenancy {
        Tenancy {
            default: Accepted::Any,
            audiences: Vec::new(),
            personal: Vec::new(),
        }
    }

    /// Read `--accept-namespaces` and every `--token-review-audience-namespaces AUD=NS,...`.
    pub fn parse(default: &str, audiences: &[&str]) -> Result<Tenancy, String> {
        let default = Accepted::parse(default).map_err(|e| format!("--accept-namespaces: {e}"))?;
        let mut mapped: Vec<(String, Accepted)> = Vec::with_capacity(audiences.len());
        for entry in audiences {
            let flag = "--token-review-audience-namespaces";
            // Namespace names hold no '=', an audience (a URL) may.
            let Some((audience, namespaces)) = entry.rsplit_once('=') else {
                return Err(format!("{flag}: {entry:?} is not AUDIENCE=NAMESPACE,..."));
            };
            if audience.is_empty() {
                return Err(format!("{flag}: {entry:?} names no audience"));
            }
            if mapped.iter().any(|(a, _)| a == audience) {
                return Err(format!("{flag}: audience {audience:?} is given twice"));
            }
            let namespaces = Accepted::parse(namespaces).map_err(|e| format!("{flag}: {e}"))?;
            mapped.push((audience.to_owned(), namespaces));
        }
        Ok(Tenancy {
            default,
            audiences: mapped,
            personal: Vec::new(),
        })
    }

    /// Opt the mapped `audiences` in to personal keys (`--token-review-personal-audiences`).
    /// Only an audience with a namespace mapping of its own may: the opt-in is a decision about
    /// one API server, never a default for every review.
    pub fn with_personal_audiences(mut self, audiences: &[String]) -> Result<Tenancy, String> {
        let flag = "--token-review-personal-audiences";
        for audience in audiences {
            if self.audience(audience).is_none() {
                return Err(format!(
                    "{flag}: {audience:?} has no --token-review-audience-namespaces mapping; map \
                     it to the namespaces whose keys its API server accepts first"
                ));
            }
            if !self.personal.contains(audience) {
                self.personal.push(audience.clone());
            }
        }
        Ok(self)
    }

    /// Whether a personal key authenticates as its owner for `audience`.
    pub fn is_personal(&self, audience: &str) -> bool {
        self.personal.iter().any(|a| a == audience)
    }

    /// The namespaces `audience` accepts, when it has a mapping of its own.
    pub fn audience(&self, audience: &str) -> Option<&Accepted> {
        self.audiences
            .iter()
            .find(|(a, _)| a == audience)
            .map(|(_, namespaces)| namespaces)
    }

    /// The namespaces `audience` accepts: its own mapping, else the default.
    pub fn of_audience(&self, audience: &str) -> &Accepted {
        self.audience(audience).unwrap_or(&self.default)
    }

    /// The namespaces a TokenReview granted `audiences` (none: it asked no audience) accepts:
    /// those of any of them, each audience without a mapping counting as the default.
    pub fn for_review(&self, audiences: &[&str]) -> Accepted {
        if audiences.is_empty() {
            return self.default.clone();
        }
        let sets = audiences.iter().map(|a| self.of_audience(a));
        let mut union: Vec<&str> = Vec::new();
        for set in sets {
            match set {
                Accepted::Any => return Accepted::Any,
                Accepted::Listed(list) => union.extend(list.split(',').filter(|n| !n.is_empty())),
            }
        }
        union.sort_unstable();
        union.dedup();
        Accepted::Listed(union.join(","))
    }
}

/// Whose configuration chose the namespaces a request accepts: the `route` label of
/// `keysmith_verify_unknown_scope_total`. Never the namespaces themselves: a client chooses
/// what it writes into a path, and a label per value would let it grow the metrics unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// `/v1/namespaces/<ns,...>/verify` or `/authz`: the gateway route's own.
    Scoped,
    /// `/v1/verify`, `/v1/authz[/…]`: `--accept-namespaces`.
    Unscoped,
    /// A TokenReview: the mappings of its audiences.
    TokenReview,
    /// A path under `/v1/namespaces/` that is no route (answered 404): a mistyped gateway route.
    Invalid,
}

impl RouteKind {
    /// Every kind, in [`RouteKind::index`] order.
    pub const ALL: [RouteKind; 4] = [
        RouteKind::Scoped,
        RouteKind::Unscoped,
        RouteKind::TokenReview,
        RouteKind::Invalid,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Scoped => "scoped",
            RouteKind::Unscoped => "unscoped",
            RouteKind::TokenReview => "tokenreview",
            RouteKind::Invalid => "invalid",
        }
    }

    /// Position in [`RouteKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// An endpoint of the verification API under `/v1/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST …/verify`.
    Verify,
    /// `…/authz` exactly: the query is the configured URL's (ingress-nginx, Traefik).
    Authz,
    /// `…/authz/<client path>`: Envoy appended the client's path and query, which ask nothing.
    AuthzBelow,
}

/// The endpoint `path` names and the namespaces its route accepts (`None`: unscoped, the
/// verifier's default); `None` for a path that is no endpoint, including a scope segment that is
/// not a list of namespace names (percent-encoded, `..`, empty): that is a configuration error,
/// never something to make sense of.
pub fn route(path: &str) -> Option<(Endpoint, Option<Namespaces<'_>>)> {
    let rest = path.strip_prefix("/v1/")?;
    let (scope, endpoint) = match rest.strip_prefix("namespaces/") {
        Some(scoped) => {
            let (segment, endpoint) = scoped.split_once('/')?;
            (Some(Namespaces::Listed(namespace_list(segment)?)), endpoint)
        }
        None => (None, rest),
    };
    let endpoint = match endpoint {
        "verify" => Endpoint::Verify,
        "authz" => Endpoint::Authz,
        below if below.starts_with("authz/") => Endpoint::AuthzBelow,
        _ => return None,
    };
    Some((endpoint, scope))
}

/// The verdict as a request accepting `namespaces` sees it: a key outside them is not found,
/// with the same answer as an unknown token (its id, which the presented token itself carries,
/// stays for the audit line).
pub fn confine<'a>(verdict: Verdict<'a>, namespaces: Namespaces<'_>) -> Verdict<'a> {
    match &verdict.found {
        Some(found) if !namespaces.accepts(&found.key.namespace) => Verdict {
            code: Code::NotFound,
            found: None,
            token_id: verdict.token_id,
        },
        _ => verdict,
    }
}

/// `list` when it is one or more comma-separated namespace names (RFC 1123 labels).
fn namespace_list(list: &str) -> Option<&str> {
    list.split(',').all(is_namespace).then_some(list)
}

fn is_namespace(name: &str) -> bool {
    let bytes = name.as_bytes();
    let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (1..=63).contains(&bytes.len())
        && bytes.iter().all(inner)
        && edge(bytes.first())
        && edge(bytes.last())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Namespaces<'static> = Namespaces::Listed("tenant-a");

    fn scoped(path: &str) -> Option<(Endpoint, Option<Namespaces<'_>>)> {
        route(path)
    }

    #[test]
    fn unscoped_routes() {
        assert_eq!(route("/v1/verify"), Some((Endpoint::Verify, None)));
        assert_eq!(route("/v1/authz"), Some((Endpoint::Authz, None)));
        assert_eq!(route("/v1/authz/"), Some((Endpoint::AuthzBelow, None)));
        assert_eq!(route("/v1/authz/api/x"), Some((Endpoint::AuthzBelow, None)));
        for other in [
            "/",
            "",
            "/v1",
            "/v1/",
            "/v1/verify/",
            "/v1/verify/x",
            "/v1/authzx",
            "/v1/Authz",
            "/v2/authz",
            "//v1/authz",
            "/v1//authz",
            "v1/authz",
        ] {
            assert_eq!(route(other), None, "{other}");
        }
    }

    #[test]
    fn a_client_path_below_an_unscoped_route_scopes_nothing() {
        // Envoy with path_prefix /v1/authz appends whatever the client asked for.
        for client in [
            "/v1/authz/namespaces/tenant-b/authz",
            "/v1/authz/v1/namespaces/tenant-b/authz",
            "/v1/authz/../namespaces/tenant-b/authz",
            "/v1/authz/%2e%2e/namespaces/tenant-b/authz",
        ] {
            assert_eq!(
                route(client),
                Some((Endpoint::AuthzBelow, None)),
                "{client}"
            );
        }
    }

    #[test]
    fn scoped_routes() {
        assert_eq!(
            scoped("/v1/namespaces/tenant-a/verify"),
            Some((Endpoint::Verify, Some(A)))
        );
        assert_eq!(
            scoped("/v1/namespaces/tenant-a/authz"),
            Some((Endpoint::Authz, Some(A)))
        );
        assert_eq!(
            scoped("/v1/namespaces/tenant-a,b-2,c/authz"),
            Some((Endpoint::Authz, Some(Namespaces::Listed("tenant-a,b-2,c"))))
        );
        // Trailing slash: Envoy's client path "/".
        assert_eq!(
            scoped("/v1/namespaces/tenant-a/authz/"),
            Some((Endpoint::AuthzBelow, Some(A)))
        );
    }

    #[test]
    fn only_the_first_segment_after_namespaces_counts() {
        // Everything after the configured prefix is the client's, whatever it spells.
        for client in [
            "/v1/namespaces/tenant-a/authz/../namespaces/tenant-b/authz",
            "/v1/namespaces/tenant-a/authz/../../tenant-b/authz",
            "/v1/namespaces/tenant-a/authz/%2e%2e/%2e%2e/tenant-b/authz",
            "/v1/namespaces/tenant-a/authz/v1/namespaces/tenant-b/authz",
            "/v1/namespaces/tenant-a/authz//namespaces/tenant-b",
            "/v1/namespaces/tenant-a/authz/x,tenant-b",
        ] {
            assert_eq!(
                scoped(client),
                Some((Endpoint::AuthzBelow, Some(A))),
                "{client}"
            );
        }
    }

    #[test]
    fn a_scope_segment_that_is_not_plain_names_routes_nowhere() {
        for bad in [
            "/v1/namespaces//authz",
            "/v1/namespaces/,/authz",
            "/v1/namespaces/tenant-a,/authz",
            "/v1/namespaces/,tenant-a/authz",
            "/v1/namespaces/tenant-a,,b/authz",
            "/v1/namespaces/../authz",
            "/v1/namespaces/./authz",
            "/v1/namespaces/tenant%2Da/authz",
            "/v1/namespaces/tenant-a%2Ctenant-b/authz",
            "/v1/namespaces/tenant-a%2F..%2Ftenant-b/authz",
            "/v1/namespaces/*/authz",
            "/v1/namespaces/Tenant-A/authz",
            "/v1/namespaces/-a/authz",
            "/v1/namespaces/a-/authz",
            "/v1/namespaces/tenant_a/authz",
            "/v1/namespaces/tenant-a",
            "/v1/namespaces/tenant-a/",
            "/v1/namespaces/tenant-a/verify/",
            "/v1/namespaces/tenant-a/authzx",
            "/v1/namespaces/tenant-a/namespaces/tenant-b/authz",
            "/v1/namespaces/tenant-a*",
            "/v1/namespaces",
            "/v1/namespaces/",
        ] {
            assert_eq!(scoped(bad), None, "{bad}");
        }
        let longest = "a".repeat(63);
        assert!(scoped(&format!("/v1/namespaces/{longest}/authz")).is_some());
        assert_eq!(scoped(&format!("/v1/namespaces/{longest}a/authz")), None);
    }

    #[test]
    fn namespaces_accept_exact_names_only() {
        assert!(A.accepts("tenant-a"));
        for other in ["tenant-b", "tenant", "tenant-a,tenant-b", "", "tenant-a "] {
            assert!(!A.accepts(other), "{other}");
        }
        let several = Namespaces::Listed("a,tenant-b");
        assert!(several.accepts("a") && several.accepts("tenant-b"));
        assert!(!several.accepts("a,tenant-b"));
        assert!(!Namespaces::Listed("").accepts(""));
        assert!(Namespaces::Any.accepts("anything"));
    }

    #[test]
    fn accepted_namespaces_parse() {
        assert_eq!(Accepted::parse("*"), Ok(Accepted::Any));
        assert_eq!(Accepted::parse(""), Ok(Accepted::default()));
        assert!(Accepted::default().is_none());
        assert_eq!(
            Accepted::parse("a,b-c"),
            Ok(Accepted::Listed("a,b-c".into()))
        );
        for bad in ["*,a", "a,*", "a,", " a", "A", "a b", "a/b", "**"] {
            assert!(Accepted::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Accepted::parse("a,b").unwrap().to_string(), "a,b");
    }

    #[test]
    fn tenancy_parses_audiences() {
        let t = Tenancy::parse("shop", &["https://k8s.example/x=y=a,b", "team=*"]).unwrap();
        assert_eq!(t.default, Accepted::Listed("shop".into()));
        assert_eq!(
            t.audience("https://k8s.example/x=y"),
            Some(&Accepted::Listed("a,b".into()))
        );
        assert_eq!(t.audience("team"), Some(&Accepted::Any));
        assert_eq!(t.audience("other"), None);
        for bad in [&["x"][..], &["=a"], &["x=A"], &["x=a", "x=b"]] {
            assert!(Tenancy::parse("", bad).is_err(), "{bad:?}");
        }
        assert!(Tenancy::parse("Shop", &[]).is_err());
        assert_eq!(Tenancy::parse("", &[]), Ok(Tenancy::default()));
        assert!(Tenancy::default().default.is_none());
    }

    #[test]
    fn a_review_accepts_the_namespaces_of_its_granted_audiences() {
        let t = Tenancy::parse("shop", &["a=tenant-a", "b=tenant-b,tenant-a", "all=*"]).unwrap();
        assert_eq!(t.for_review(&[]), Accepted::Listed("shop".into()));
        assert_eq!(t.for_review(&["a"]), Accepted::Listed("tenant-a".into()));
        assert_eq!(
            t.for_review(&["a", "b"]),
            Accepted::Listed("tenant-a,tenant-b".into())
        );
        // An audience served without a mapping of its own counts as the default.
        assert_eq!(
            t.for_review(&["a", "unmapped"]),
            Accepted::Listed("shop,tenant-a".into())
        );
        assert_eq!(t.for_review(&["a", "all"]), Accepted::Any);
        let none = Tenancy::parse("", &["a=tenant-a"]).unwrap();
        assert!(none.for_review(&[]).is_none());
        assert!(none.for_review(&["unmapped"]).is_none());
    }
}
