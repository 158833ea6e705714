//! Identities and RBAC authorisation against the Roles, ClusterRoles and
//! bindings stored in the server, with Kubernetes' bootstrap defaults for
//! discovery and self-reviews, and its `403 Forbidden` wording.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::registry::GroupResource;
use crate::state::State;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// `system:serviceaccount:NS:NAME`, a user name, or `system:admin`.
    pub name: String,
    /// Group memberships (always includes `system:authenticated`).
    pub groups: Vec<String>,
    /// UID, empty when the authenticator gives none.
    pub uid: String,
    /// Extra attributes (only impersonation sets them here).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user with extra groups (plus `system:authenticated`).
    pub fn user(name: &str, groups: &[&str]) -> Self {
        let mut g: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
        g.push("system:authenticated".into());
        UserInfo {
            name: name.into(),
            groups: g,
            uid: String::new(),
            extra: BTreeMap::new(),
        }
    }

    /// The identity of a ServiceAccount token.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        let mut groups = service_account_groups(namespace);
        groups.push("system:authenticated".into());
        UserInfo {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups,
            uid: String::new(),
            extra: BTreeMap::new(),
        }
    }

    /// The cluster administrator (`system:masters`, bypasses RBAC).
    pub fn admin() -> Self {
        UserInfo::user("system:admin", &["system:masters"])
    }

    /// The namespace and name of a `system:serviceaccount:NS:NAME` user name.
    pub fn split_service_account(name: &str) -> Option<(&str, &str)> {
        let (ns, sa) = name
            .strip_prefix("system:serviceaccount:")?
            .split_once(':')?;
        (!ns.is_empty() && !sa.is_empty() && !sa.contains(':')).then_some((ns, sa))
    }

    /// Parse a token that names its identity: `system:serviceaccount:NS:NAME`
    /// or `user:NAME[:GROUP,GROUP...]`.
    pub fn from_naming_token(token: &str) -> Option<Self> {
        if token.starts_with("system:serviceaccount:") {
            let (ns, name) = Self::split_service_account(token)?;
            return Some(Self::service_account(ns, name));
        }
        let rest = token.strip_prefix("user:")?;
        let (name, groups) = match rest.split_once(':') {
            Some((n, g)) => (n, g.split(',').filter(|g| !g.is_empty()).collect()),
            None => (rest, Vec::new()),
        };
        (!name.is_empty()).then(|| Self::user(name, &groups))
    }

    fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

/// The groups every ServiceAccount of a namespace is in (besides `system:authenticated`).
pub fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{namespace}"),
    ]
}

/// What a request wants to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributes {
    /// A resource request.
    Resource {
        /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
        verb: String,
        /// API group.
        group: String,
        /// Plural resource.
        resource: String,
        /// Subresource, empty when none.
        subresource: String,
        /// Namespace, empty for cluster scope.
        namespace: String,
        /// Object name, empty for collections.
        name: String,
    },
    /// A non-resource URL (`/version`, `/apis`, ...).
    NonResource {
        /// Lower-case HTTP verb.
        verb: String,
        /// URL path.
        path: String,
    },
}

fn matches(list: &Value, want: &str) -> bool {
    list.as_array()
        .is_some_and(|a| a.iter().any(|v| v == "*" || v == want))
}

fn resource_matches(list: &Value, resource: &str, sub: &str) -> bool {
    let Some(a) = list.as_array() else {
        return false;
    };
    a.iter().filter_map(Value::as_str).any(|r| {
        if r == "*" {
            return true;
        }
        if sub.is_empty() {
            return r == resource;
        }
        r == format!("{resource}/{sub}") || r == format!("*/{sub}") || r == format!("{resource}/*")
    })
}

fn rule_allows(rule: &Value, attrs: &Attributes) -> bool {
    match attrs {
        Attributes::Resource {
            verb,
            group,
            resource,
            subresource,
            name,
            ..
        } => {
            let names_ok = match rule["resourceNames"].as_array() {
                Some(names) if !names.is_empty() => {
                    !name.is_empty() && names.iter().any(|n| n == name.as_str())
                }
                _ => true,
            };
            matches(&rule["verbs"], verb)
                && matches(&rule["apiGroups"], group)
                && resource_matches(&rule["resources"], resource, subresource)
                && names_ok
        }
        Attributes::NonResource { verb, path } => {
            matches(&rule["verbs"], verb)
                && rule["nonResourceURLs"].as_array().is_some_and(|urls| {
                    urls.iter().filter_map(Value::as_str).any(|u| {
                        u == "*"
                            || u == path
                            || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
                    })
                })
        }
    }
}

/// What Kubernetes' bootstrap ClusterRoles (`system:discovery`,
/// `system:basic-user`, `system:public-info-viewer`) grant every
/// authenticated user.
fn bootstrap_allows(attrs: &Attributes) -> bool {
    match attrs {
        Attributes::NonResource { verb, path } => {
            verb == "get"
                && [
                    "/api", "/apis", "/version", "/openapi", "/healthz", "/livez", "/readyz",
                ]
                .iter()
                .any(|p| path == p || path.starts_with(&format!("{p}/")))
        }
        Attributes::Resource {
            verb,
            group,
            resource,
            ..
        } => {
            verb == "create"
                && ((group == "authorization.k8s.io"
                    && matches!(
                        resource.as_str(),
                        "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
                    ))
                    || (group == "authentication.k8s.io" && resource == "selfsubjectreviews"))
        }
    }
}

fn subject_matches(subject: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str() {
        Some("User") => user.name == name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject["namespace"].as_str().unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn role_rules<'s>(st: &'s State, role_ref: &Value, binding_ns: &str) -> Vec<&'s Value> {
    let name = role_ref["name"].as_str().unwrap_or_default();
    let role = match role_ref["kind"].as_str() {
        Some("ClusterRole") => st.store.get(
            &GroupResource::new("rbac.authorization.k8s.io", "clusterroles"),
            "",
            name,
        ),
        _ => st.store.get(
            &GroupResource::new("rbac.authorization.k8s.io", "roles"),
            binding_ns,
            name,
        ),
    };
    role.and_then(|r| r["rules"].as_array())
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// Whether `user` may do `attrs`, by the stored RBAC objects.
pub fn authorize(st: &State, user: &UserInfo, attrs: &Attributes) -> bool {
    if user.is_master() || bootstrap_allows(attrs) {
        return true;
    }
    let rbac = "rbac.authorization.k8s.io";
    let cluster_bindings = st
        .store
        .list(&GroupResource::new(rbac, "clusterrolebindings"), None)
        .map(|(_, b)| (b, ""));
    let namespace = match attrs {
        Attributes::Resource { namespace, .. } => namespace.as_str(),
        Attributes::NonResource { .. } => "",
    };
    let role_bindings = st
        .store
        .list(&GroupResource::new(rbac, "rolebindings"), Some(namespace))
        .filter(|_| !namespace.is_empty())
        .map(|(_, b)| (b, namespace));
    cluster_bindings.chain(role_bindings).any(|(binding, ns)| {
        binding["subjects"]
            .as_array()
            .is_some_and(|subs| subs.iter().any(|s| subject_matches(s, user, ns)))
            && role_rules(st, &binding["roleRef"], ns)
                .into_iter()
                .any(|rule| rule_allows(rule, attrs))
    })
}

/// The 403 message Kubernetes gives for a denied request.
pub fn forbidden_message(user: &UserInfo, attrs: &Attributes) -> String {
    match attrs {
        Attributes::Resource {
            verb,
            group,
            resource,
            subresource,
            namespace,
            name,
        } => {
            let what = crate::error::qualified(group, resource);
            let subject = if name.is_empty() {
                what
            } else {
                format!("{what} \"{name}\"")
            };
            let full = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace \"{namespace}\"")
            };
            format!(
                "{subject} is forbidden: User \"{}\" cannot {verb} resource \"{full}\" in API group \"{group}\" {scope}",
                user.name
            )
        }
        Attributes::NonResource { verb, path } => format!(
            "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
            user.name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naming_tokens_and_messages() {
        let sa = UserInfo::from_naming_token("system:serviceaccount:keysmith:keysmith-controller")
            .unwrap();
        assert!(
            sa.groups
                .contains(&"system:serviceaccounts:keysmith".to_string())
        );
        let attrs = Attributes::Resource {
            verb: "get".into(),
            group: "".into(),
            resource: "secrets".into(),
            subresource: "".into(),
            namespace: "default".into(),
            name: "x".into(),
        };
        assert_eq!(
            forbidden_message(&sa, &attrs),
            "secrets \"x\" is forbidden: User \"system:serviceaccount:keysmith:keysmith-controller\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\""
        );
        let u = UserInfo::from_naming_token("user:alice:devs,ops").unwrap();
        assert_eq!(u.groups, vec!["devs", "ops", "system:authenticated"]);
    }

    #[test]
    fn subresource_and_resource_name_rules() {
        let rule: Value = serde_json::json!({"verbs": ["patch"], "apiGroups": ["keysmith.dev"],
            "resources": ["apikeys/status"], "resourceNames": ["a"]});
        let attrs = |sub: &str, name: &str| Attributes::Resource {
            verb: "patch".into(),
            group: "keysmith.dev".into(),
            resource: "apikeys".into(),
            subresource: sub.into(),
            namespace: "ns".into(),
            name: name.into(),
        };
        assert!(rule_allows(&rule, &attrs("status", "a")));
        assert!(!rule_allows(&rule, &attrs("", "a")));
        assert!(!rule_allows(&rule, &attrs("status", "b")));
    }
}
