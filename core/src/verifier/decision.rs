//! The verification decision of SPEC section 5, as a pure function of an indexed token, the
//! request and the time.
//!
//! Order (the first failing check names the answer):
//! MALFORMED (checked by the index before any hashing) → NOT_FOUND → REVOKED → EXPIRED (the
//! token's `expiresAt`, a previous token's `validUntil`, the key's `expiresAt`) → DISABLED →
//! ENVIRONMENT_MISMATCH → IP_NOT_ALLOWED → HEADER_MISMATCH → FORBIDDEN (grants, only when an
//! action is asked) → VALID.
//!
//! Authentication failures come first so a caller without a working token learns nothing about
//! the key's restrictions or grants.

use std::fmt;
use std::net::IpAddr;

use jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::grants::{self, Context};

use super::key::{ExpectedValue, KeyInfo};

/// The answer to a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// The token is good for this request.
    Valid,
    /// Not a well-formed token (layout or checksum), or none presented.
    Malformed,
    /// Well-formed, but no indexed ApiKey holds it.
    NotFound,
    /// Past the token's expiry, its overlap window or the key's `expiresAt`.
    Expired,
    /// Its ApiKey is being deleted or was deleted, or the token was reported leaked (unless
    /// the key's `leakResponse` is `report`).
    Revoked,
    /// Its ApiKey has `disabled: true`.
    Disabled,
    /// The grants do not allow the requested action.
    Forbidden,
    /// The client address is outside the key's allow-list.
    IpNotAllowed,
    /// A required header is missing or has another value.
    HeaderMismatch,
    /// The request names another environment than the key's.
    EnvironmentMismatch,
}

impl Code {
    /// Every code, for pre-registering metrics.
    pub const ALL: [Code; 10] = [
        Code::Valid,
        Code::Malformed,
        Code::NotFound,
        Code::Expired,
        Code::Revoked,
        Code::Disabled,
        Code::Forbidden,
        Code::IpNotAllowed,
        Code::HeaderMismatch,
        Code::EnvironmentMismatch,
    ];

    /// The wire name, e.g. `NOT_FOUND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Valid => "VALID",
            Code::Malformed => "MALFORMED",
            Code::NotFound => "NOT_FOUND",
            Code::Expired => "EXPIRED",
            Code::Revoked => "REVOKED",
            Code::Disabled => "DISABLED",
            Code::Forbidden => "FORBIDDEN",
            Code::IpNotAllowed => "IP_NOT_ALLOWED",
            Code::HeaderMismatch => "HEADER_MISMATCH",
            Code::EnvironmentMismatch => "ENVIRONMENT_MISMATCH",
        }
    }

    /// Whether the token itself is unusable (HTTP 401 on `/v1/authz`), as opposed to usable but
    /// not for this request (403).
    pub fn is_unauthenticated(self) -> bool {
        matches!(
            self,
            Code::Malformed | Code::NotFound | Code::Expired | Code::Revoked | Code::Disabled
        )
    }

    /// Position in [`Code::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Headers of the request being verified, looked up by lower-case name.
pub trait RequestHeaders: Sync {
    /// The value of header `name` (lower-case), if present.
    fn get(&self, name: &str) -> Option<&[u8]>;

    /// Every value of header `name` (lower-case), in order; sources that hold one value per
    /// name need not override it.
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.get(name).into_iter().collect()
    }
}

/// No headers at all (e.g. a TokenReview, which carries none of the end user's).
pub struct NoHeaders;

impl RequestHeaders for NoHeaders {
    fn get(&self, _: &str) -> Option<&[u8]> {
        None
    }
}

/// One verification request, borrowed from whatever the endpoint parsed.
#[derive(Clone, Copy)]
pub struct VerifyRequest<'a> {
    /// The presented token.
    pub token: &'a str,
    /// Action to authorize; `None`: authenticate only.
    pub action: Option<&'a str>,
    /// Resource the action is on.
    pub resource: Option<&'a str>,
    /// Fields a create/update touches.
    pub fields: &'a [String],
    /// Environment the caller serves; `None`: any.
    pub environment: Option<&'a str>,
    /// Client address; `None`: unknown (fails any allow-list).
    pub ip: Option<IpAddr>,
    /// The request's headers.
    pub headers: &'a dyn RequestHeaders,
    /// Grant condition context.
    pub context: Context<'a>,
}

impl<'a> VerifyRequest<'a> {
    /// A bare token: authenticate it, with nothing to authorize and nothing known of the caller
    /// (what a TokenReview carries). Set the other fields with struct update syntax.
    pub fn token(token: &'a str) -> VerifyRequest<'a> {
        VerifyRequest {
            token,
            action: None,
            resource: None,
            fields: &[],
            environment: None,
            ip: None,
            headers: &NoHeaders,
            context: Context::default(),
        }
    }
}

/// How long an indexed token verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// The slot's current token, until its `expiresAt` (if any).
    Current {
        /// `status.tokens[].expiresAt`.
        expires_at: Option<Timestamp>,
    },
    /// A replaced token during its overlap window.
    Previous {
        /// `status.tokens[].previous.validUntil`.
        valid_until: Timestamp,
    },
}

impl Validity {
    /// When the token stops verifying, taking the key's `expiresAt` into account.
    pub(crate) fn ends_at(self, key: &KeyInfo) -> Option<Timestamp> {
        let own = match self {
            Validity::Current { expires_at } => expires_at,
            Validity::Previous { valid_until } => Some(valid_until),
        };
        match (own, key.expires_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Decide a request for a found, non-revoked token of `key`'s slot `slot`.
pub fn decide(
    key: &KeyInfo,
    slot: usize,
    validity: Validity,
    request: &VerifyRequest<'_>,
    now: Timestamp,
) -> Code {
    if validity.ends_at(key).is_some_and(|end| now >= end) {
        return Code::Expired;
    }
    if key.disabled {
        return Code::Disabled;
    }
    if let Some(env) = request.environment
        && key.environment.as_deref() != Some(env)
    {
        return Code::EnvironmentMismatch;
    }
    if let Some(allowed) = &key.ip_allow_list {
        // An IPv4 client reaching a dual-stack listener shows up as ::ffff:a.b.c.d.
        let inside = request
            .ip
            .map(|ip| ip.to_canonical())
            .is_some_and(|ip| allowed.iter().any(|net| net.contains(&ip)));
        if !inside {
            return Code::IpNotAllowed;
        }
    }
    for rule in &key.required_headers {
        let Some(presented) = request.headers.get(&rule.name) else {
            return Code::HeaderMismatch;
        };
        let ok = match &rule.value {
            ExpectedValue::Literal(expected) => constant_time_eq(expected.as_bytes(), presented),
            ExpectedValue::Sha256(expected) => {
                expected.is_some_and(|e| constant_time_eq(&e, Sha256::digest(presented).as_slice()))
            }
        };
        if !ok {
            return Code::HeaderMismatch;
        }
    }
    let Some(slot) = key.slots.get(slot) else {
        // The index only refers to existing slots; a dangling one cannot authorize anything.
        return Code::Forbidden;
    };
    let asked = grants::Request {
        action: request.action,
        resource: request.resource,
        fields: request.fields,
        context: request.context,
    };
    if slot.grants.evaluate(&asked, &key.identity).is_denied() {
        return Code::Forbidden;
    }
    Code::Valid
}

/// Compare secrets without an early exit, so timing does not reveal how much of a guess was right.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
