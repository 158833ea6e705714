//! Impersonation (`Impersonate-User`, `-Group`, `-Uid`, `-Extra-KEY` headers), as the API
//! server's impersonation filter does it: the authenticated requester must be allowed the verb
//! `impersonate` on each thing it asks for (`users` or the ServiceAccount's `serviceaccounts`,
//! `groups`, `uids`, `userextras/KEY`), and the request then runs, is authorized and logged as
//! the impersonated user. Without it `kubectl auth can-i --as=...` answered for the requester.

use std::collections::BTreeMap;

use axum::http::HeaderMap;

use crate::error::ApiError;
use crate::rbac::{self, Attributes, UserInfo, service_account_groups};

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";

/// Why a request may not impersonate.
#[derive(Debug, thiserror::Error)]
pub enum ImpersonationError {
    /// Groups, a UID or extras without a user (the API server answers 500 to this).
    #[error("requested impersonation of {0} without impersonating a user")]
    NoUser(&'static str),
    /// A header value is not visible ASCII.
    #[error("impersonation header {0} is not valid text")]
    Unreadable(String),
    /// The requester may not impersonate what it asked for.
    #[error("{0}")]
    Forbidden(String),
}

impl From<ImpersonationError> for ApiError {
    fn from(e: ImpersonationError) -> Self {
        match e {
            ImpersonationError::NoUser(_) => ApiError::internal(e.to_string()),
            ImpersonationError::Unreadable(_) => ApiError::bad_request(e.to_string()),
            ImpersonationError::Forbidden(message) => ApiError::forbidden(message),
        }
    }
}

fn values<'h>(headers: &'h HeaderMap, name: &str) -> Result<Vec<&'h str>, ImpersonationError> {
    headers
        .get_all(name)
        .iter()
        .map(|v| {
            v.to_str()
                .map_err(|_| ImpersonationError::Unreadable(name.to_string()))
        })
        .collect()
}

/// `Impersonate-Extra-KEY` keys are percent-encoded (kubectl escapes what a header name cannot carry).
fn extra_key(header: &str) -> String {
    let raw = header.trim_start_matches(EXTRA_PREFIX);
    form_urlencoded::parse(format!("k={}", raw.replace('+', "%2B")).as_bytes())
        .next()
        .map_or_else(|| raw.to_string(), |(_, k)| k.into_owned())
}

fn attributes(
    resource: &str,
    group: &str,
    subresource: &str,
    namespace: &str,
    name: &str,
) -> Attributes {
    Attributes::Resource {
        verb: "impersonate".into(),
        group: group.into(),
        resource: resource.into(),
        subresource: subresource.into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// The user a request acts as: the requester itself, or whom it may impersonate. `authorize`
/// answers whether the requester may do something (it is only called when a request
/// impersonates, so ordinary requests never wait for the state lock here).
pub fn acting_user(
    requester: UserInfo,
    headers: &HeaderMap,
    authorize: impl Fn(&UserInfo, &Attributes) -> bool,
) -> Result<UserInfo, ImpersonationError> {
    let user = values(headers, USER)?.into_iter().find(|u| !u.is_empty());
    let groups = values(headers, GROUP)?;
    let uid = values(headers, UID)?.into_iter().find(|u| !u.is_empty());
    let mut extras: Vec<(String, &str)> = Vec::new();
    for name in headers
        .keys()
        .filter(|n| n.as_str().starts_with(EXTRA_PREFIX))
    {
        let key = extra_key(name.as_str());
        extras.extend(
            values(headers, name.as_str())?
                .into_iter()
                .map(|v| (key.clone(), v)),
        );
    }
    let Some(user) = user else {
        return match (groups.is_empty(), uid, extras.is_empty()) {
            (true, None, true) => Ok(requester),
            (false, _, _) => Err(ImpersonationError::NoUser("groups")),
            (_, Some(_), _) => Err(ImpersonationError::NoUser("a UID")),
            _ => Err(ImpersonationError::NoUser("user extras")),
        };
    };

    // Every impersonated attribute is authorized separately, in the API server's order.
    let service_account = UserInfo::split_service_account(user);
    let mut checks = vec![match service_account {
        Some((ns, name)) => attributes("serviceaccounts", "", "", ns, name),
        None => attributes("users", "", "", "", user),
    }];
    checks.extend(groups.iter().map(|g| attributes("groups", "", "", "", g)));
    checks.extend(
        extras
            .iter()
            .map(|(k, v)| attributes("userextras", "authentication.k8s.io", k, "", v)),
    );
    checks.extend(uid.map(|u| attributes("uids", "authentication.k8s.io", "", "", u)));
    if let Some(denied) = checks.iter().find(|attrs| !authorize(&requester, attrs)) {
        return Err(ImpersonationError::Forbidden(rbac::forbidden_message(
            &requester, denied,
        )));
    }

    // Named groups are the authority; only without them does a ServiceAccount get its own.
    let mut all_groups: Vec<String> = match service_account {
        Some((ns, _)) if groups.is_empty() => service_account_groups(ns),
        _ => groups.iter().map(|g| g.to_string()).collect(),
    };
    let anonymous = user == "system:anonymous";
    let implied = if anonymous {
        "system:unauthenticated"
    } else {
        "system:authenticated"
    };
    if !all_groups
        .iter()
        .any(|g| g == implied || (!anonymous && g == "system:unauthenticated"))
    {
        all_groups.push(implied.into());
    }
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in extras {
        extra.entry(k).or_default().push(v.to_string());
    }
    Ok(UserInfo {
        name: user.to_string(),
        groups: all_groups,
        uid: uid.unwrap_or_default().to_string(),
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn service_accounts_get_their_groups_unless_groups_are_named() {
        let st = State::new(10);
        let rbac = |u: &UserInfo, a: &Attributes| rbac::authorize(&st, u, a);
        let admin = UserInfo::admin();
        let sa = acting_user(
            admin.clone(),
            &headers(&[(USER, "system:serviceaccount:x:nobody")]),
            rbac,
        )
        .unwrap();
        assert_eq!(
            sa.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:x",
                "system:authenticated"
            ]
        );
        let named = acting_user(
            admin.clone(),
            &headers(&[
                (USER, "alice"),
                (GROUP, "devs"),
                (UID, "u-1"),
                ("impersonate-extra-scopes%2fv1", "read"),
            ]),
            rbac,
        )
        .unwrap();
        assert_eq!(named.groups, ["devs", "system:authenticated"]);
        assert_eq!(named.uid, "u-1");
        assert_eq!(named.extra["scopes/v1"], ["read"]);
        assert!(matches!(
            acting_user(admin, &headers(&[(GROUP, "devs")]), rbac),
            Err(ImpersonationError::NoUser(_))
        ));
    }

    #[test]
    fn requesters_without_the_impersonate_verb_are_forbidden() {
        let st = State::new(10);
        let rbac = |u: &UserInfo, a: &Attributes| rbac::authorize(&st, u, a);
        let bob = UserInfo::user("bob", &[]);
        let err = acting_user(bob, &headers(&[(USER, "alice")]), rbac).unwrap_err();
        assert_eq!(
            err.to_string(),
            "users \"alice\" is forbidden: User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        );
    }
}
