//! One structured audit line per verification, on the log target `keysmith::audit` (JSON with
//! `--log-format json`; written by [`crate::telemetry::write_audit_line`]): the line's timestamp,
//! endpoint, code, key, slot, token id, client address, end user's address, user agent, action
//! and resource. Never the token: only its
//! public id (prefix plus six characters), and only when the string was a well-formed token.
//!
//! `client` is who sent the request (the TCP peer, or the client a trusted proxy names): the
//! address that is throttled. `end_user` is the address a `/v1/verify` body names, which the
//! caller chooses, so it is logged apart and never taken for the client.

use std::borrow::Cow;
use std::net::IpAddr;

use super::decision::Code;
use super::index::Verdict;

/// Longest caller-supplied value logged.
const MAX_FIELD: usize = 256;

/// The API a verification came through: the audit line's `endpoint` and the `endpoint` label of
/// `keysmith_verify_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/verify` (any scope).
    Verify,
    /// `/v1/authz` and below it (any scope).
    Authz,
    /// The TokenReview webhook.
    TokenReview,
}

impl Endpoint {
    /// Every endpoint, in [`Endpoint::index`] order.
    pub const ALL: [Endpoint; 3] = [Endpoint::Verify, Endpoint::Authz, Endpoint::TokenReview];

    /// The name logged and used as label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Verify => "verify",
            Endpoint::Authz => "authz",
            Endpoint::TokenReview => "tokenreview",
        }
    }

    /// Position in [`Endpoint::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a verification was about, besides the verdict.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Which API was asked.
    pub endpoint: Endpoint,
    /// Client address (after trusted-proxy handling).
    pub client: Option<IpAddr>,
    /// End-user address the caller named (`ip` of a verify body).
    pub end_user: Option<IpAddr>,
    /// `User-Agent` header.
    pub user_agent: Option<&'a str>,
    /// Requested action.
    pub action: Option<&'a str>,
    /// Requested resource.
    pub resource: Option<&'a str>,
}

/// Write the audit line of one verification.
pub fn record(request: &Request<'_>, verdict: &Verdict<'_>) {
    let found = verdict.found.as_ref();
    let code: Code = verdict.code;
    crate::telemetry::write_audit_line("verification", |line| {
        line.str("endpoint", request.endpoint.as_str());
        line.str("code", code.as_str());
        line.str("key", found.map_or("", |f| f.key.identity.as_str()));
        line.str("token", found.map_or("", |f| f.slot_name()));
        line.str("token_id", verdict.token_id.unwrap_or(""));
        line.ip("client", request.client);
        line.ip("end_user", request.end_user);
        line.str("user_agent", &clean(request.user_agent));
        line.str("action", &clean(request.action));
        line.str("resource", &clean(request.resource));
    });
}

/// Caller-supplied text, bounded and without control characters, so one request stays one line
/// in the text format too.
pub(super) fn clean(value: Option<&str>) -> Cow<'_, str> {
    let value = value.unwrap_or("");
    // Short ASCII without control characters, as nearly every value is: nothing to do.
    if value.len() <= MAX_FIELD && value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Cow::Borrowed(value);
    }
    let cut = value
        .char_indices()
        .nth(MAX_FIELD)
        .map_or(value, |(at, _)| &value[..at]);
    if cut.chars().any(char::is_control) || cut.len() < value.len() {
        Cow::Owned(
            cut.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_text_is_one_bounded_line() {
        assert_eq!(clean(Some("curl/8")), "curl/8");
        assert_eq!(clean(Some("a\nb\r")), "a?b?");
        assert_eq!(clean(Some(&"x".repeat(1000))).len(), MAX_FIELD);
        assert_eq!(clean(Some(&"x".repeat(MAX_FIELD))).len(), MAX_FIELD);
        let long = "\u{e9}".repeat(MAX_FIELD + 1);
        assert_eq!(clean(Some(&long)).chars().count(), MAX_FIELD);
        assert_eq!(clean(Some("caf\u{e9}\u{85}\x7f")), "caf\u{e9}??");
        assert_eq!(clean(None), "");
    }
}
