//! Access lists (`spec.access`): who may read a key's Secret and its published Secrets. Keysmith
//! keeps one Role (`get` on exactly those Secrets, by `resourceNames`) and one RoleBinding (the
//! subjects), both named [`object_name`] and controlled by the ApiKey.
//!
//! [`plan`] decides from the subjects it is given, so whoever else should read a key (its
//! owner, say) is one more entry in that list. A Role or RoleBinding of that name that the key
//! does not control is never written: the key reports a conflict, and whatever of the pair it
//! does control is deleted, so none of its bindings can point at a Role it does not control.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use crate::api::{
    APIKEY_LABEL, AccessStatus, AccessSubject, ApiKey, MANAGED_BY, MANAGED_BY_LABEL, MAX_EARLIER,
};

use super::conditions::reason;
use super::publish::{MAX_NAME_LEN, kong_secret_name, replaced_suffix};
use super::secret::{Precondition, controls};

/// Suffix of the Role's and the RoleBinding's name: `<apikey>.keysmith-access`. The ApiKey's
/// name is the only part that varies, so two keys never share a name.
pub const ACCESS_SUFFIX: &str = ".keysmith-access";
/// RBAC's API group, of Roles and of User and Group subjects.
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// `User` subjects.
pub const USER: &str = "User";
/// `Group` subjects.
pub const GROUP: &str = "Group";
/// `ServiceAccount` subjects.
pub const SERVICE_ACCOUNT: &str = "ServiceAccount";

/// The name of a key's Role and RoleBinding.
pub fn object_name(apikey: &str) -> String {
    format!("{apikey}{ACCESS_SUFFIX}")
}

/// The subjects `spec.access` lists, in spec order (users, groups, ServiceAccounts, a
/// ServiceAccount's namespace defaulting to the key's), each once.
pub fn listed(key: &ApiKey) -> Vec<AccessSubject> {
    let Some(access) = &key.spec.access else {
        return Vec::new();
    };
    let subject = |kind: &str, name: &str, namespace: Option<String>| AccessSubject {
        kind: kind.to_owned(),
        name: name.to_owned(),
        namespace,
    };
    let users = access.users.iter().map(|u| subject(USER, u, None));
    let groups = access.groups.iter().map(|g| subject(GROUP, g, None));
    let accounts = access.service_accounts.iter().map(|sa| {
        let namespace = sa.namespace.clone().or(key.metadata.namespace.clone());
        subject(SERVICE_ACCOUNT, &sa.name, namespace)
    });
    let mut subjects: Vec<AccessSubject> = Vec::new();
    for s in users.chain(groups).chain(accounts) {
        if !subjects.contains(&s) {
            subjects.push(s);
        }
    }
    subjects
}

/// The Secrets a key's Role covers: its own, then every name its published Secrets can take
/// (the Envoy Gateway Secret; each slot's Kong credential and those of its replaced tokens; the
/// agentgateway Secret), so the Role does not change with each rotation.
pub fn secrets(key: &ApiKey) -> Vec<String> {
    let apikey = key.metadata.name.clone().unwrap_or_default();
    let mut names = vec![key.secret_name()];
    for entry in &key.spec.publish {
        names.extend(entry.envoy_gateway_secret(&apikey));
        names.extend(entry.agentgateway_secret(&apikey));
        if entry.kong.is_some() {
            for slot in &key.spec.tokens {
                let replaced = (0..=MAX_EARLIER).map(|rank| Some(replaced_suffix(rank)));
                let suffixes = std::iter::once(None).chain(replaced);
                names.extend(suffixes.map(|s| kong_secret_name(&apikey, &slot.name, s.as_deref())));
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// The two ways a plan may treat a key's grants: `granted` when the key is planned in full,
/// `withdrawn` when its spec is rejected or its Secret is not its own.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// See [`plan`].
    pub granted: AccessPlan,
    /// See [`withdraw`].
    pub withdrawn: AccessPlan,
}

/// What the controller observed of a key's access objects.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observed<'a> {
    /// The controller was started with `--access-lists` (the chart installs the admission
    /// policy that lets only readers of the Secrets grant reading them).
    pub enabled: bool,
    /// The Role named [`object_name`], if it exists.
    pub role: Option<&'a Role>,
    /// The RoleBinding named [`object_name`], if it exists.
    pub binding: Option<&'a RoleBinding>,
}

/// A Role or RoleBinding of the key's to delete, if still as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessDeletion {
    /// The key's Role.
    Role(String, Precondition),
    /// The key's RoleBinding.
    RoleBinding(String, Precondition),
}

/// What keeping a key's access list writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccessPlan {
    /// The Role to server-side apply; `None`: it is as desired, or none is wanted.
    pub role: Option<Role>,
    /// The RoleBinding to server-side apply, after the Role.
    pub binding: Option<RoleBinding>,
    /// The key's objects to delete before the writes: the RoleBinding first, then the Role.
    pub delete: Vec<AccessDeletion>,
    /// `status.access`: what the key's Role and RoleBinding grant as observed, unless deleted.
    pub status: Option<AccessStatus>,
    /// Why the list is not in effect: a `Ready=False` reason and its message.
    pub problem: Option<(&'static str, String)>,
}

impl AccessPlan {
    /// Whether it writes nothing.
    pub fn is_quiet(&self) -> bool {
        self.role.is_none() && self.binding.is_none() && self.delete.is_empty()
    }
}

/// What keeping `key`'s Secrets readable by exactly `subjects` writes, from what was `observed`.
/// No subjects: the key's Role and RoleBinding are deleted.
pub fn plan(key: &ApiKey, subjects: &[AccessSubject], observed: &Observed<'_>) -> AccessPlan {
    let name = object_name(&key.metadata.name.clone().unwrap_or_default());
    let ours = |meta: &ObjectMeta| controls(key, meta);
    let role = observed.role.filter(|r| ours(&r.metadata));
    let binding = observed.binding.filter(|b| ours(&b.metadata));
    let remove_ours = || {
        let mut delete = Vec::new();
        if let Some(b) = binding {
            delete.push(AccessDeletion::RoleBinding(
                name.clone(),
                precondition(&b.metadata),
            ));
        }
        if let Some(r) = role {
            delete.push(AccessDeletion::Role(
                name.clone(),
                precondition(&r.metadata),
            ));
        }
        delete
    };
    if subjects.is_empty() {
        return AccessPlan {
            delete: remove_ours(),
            ..AccessPlan::default()
        };
    }
    if !observed.enabled {
        // A personal key's owner alone is no list to report: without access lists the owner
        // reads its Secret only through RBAC of their own.
        return AccessPlan {
            problem: key.spec.access.is_some().then(|| (
                reason::ACCESS_LISTS_OFF,
                "spec.access: access lists are off, so nobody was given read access; install Keysmith with accessLists.enabled=true (its admission policy lets only those who may read the Secrets grant reading them)".to_owned(),
            )),
            ..AccessPlan::default()
        };
    }
    let foreign = [
        ("Role", observed.role.is_some() && role.is_none()),
        (
            "RoleBinding",
            observed.binding.is_some() && binding.is_none(),
        ),
    ];
    let taken: Vec<&str> = foreign
        .iter()
        .filter(|(_, f)| *f)
        .map(|(k, _)| *k)
        .collect();
    let problem = if name.len() > MAX_NAME_LEN {
        Some(format!(
            "spec.access: the Role name {name} is longer than {MAX_NAME_LEN} characters; shorten the ApiKey's name"
        ))
    } else if !taken.is_empty() {
        Some(format!(
            "spec.access: {} {name} exists and is not owned by this ApiKey; Keysmith never overwrites it: delete it or rename the ApiKey",
            taken.join(" and ")
        ))
    } else {
        None
    };
    if let Some(message) = problem {
        return AccessPlan {
            delete: remove_ours(),
            problem: Some((reason::ACCESS_CONFLICT, message)),
            ..AccessPlan::default()
        };
    }
    let desired_role = desired_role(key, &name, &secrets(key));
    let desired_binding = desired_binding(key, &name, subjects);
    // A RoleBinding's roleRef cannot change: one of the key's pointing elsewhere is replaced.
    let delete = binding
        .filter(|b| b.role_ref != desired_binding.role_ref)
        .map(|b| AccessDeletion::RoleBinding(name.clone(), precondition(&b.metadata)));
    let binding = binding.filter(|_| delete.is_none());
    AccessPlan {
        role: (!role.is_some_and(|r| matches_role(r, &desired_role))).then_some(desired_role),
        binding: (!binding.is_some_and(|b| matches_binding(b, &desired_binding)))
            .then_some(desired_binding),
        delete: delete.into_iter().collect(),
        status: in_effect(role, binding),
        problem: None,
    }
}

/// `status.access`: what the key's Role and RoleBinding grant as observed, so status never
/// claims a grant before it exists nor hides one until it is gone. The watch of both brings the
/// key back after each write, and that pass reports it.
fn in_effect(role: Option<&Role>, binding: Option<&RoleBinding>) -> Option<AccessStatus> {
    let (role, binding) = (role?, binding?);
    let secrets = role
        .rules
        .iter()
        .flatten()
        .flat_map(|r| r.resource_names.iter().flatten().cloned())
        .collect();
    let subjects = binding
        .subjects
        .iter()
        .flatten()
        .map(|s| AccessSubject {
            kind: s.kind.clone(),
            name: s.name.clone(),
            namespace: s.namespace.clone(),
        })
        .collect();
    Some(AccessStatus {
        role: role.metadata.name.clone().unwrap_or_default(),
        role_binding: binding.metadata.name.clone().unwrap_or_default(),
        secrets,
        subjects,
    })
}

/// What a key that may not be planned in full (a rejected spec, a Secret not its own) still does
/// to its grants: it takes readers away, like `disabled: true` takes effect from a rejected spec.
/// The key's RoleBinding keeps only the subjects still among `subjects`; with none left, the
/// RoleBinding and the Role go. Nothing is added and the Role's Secrets stay as they are.
pub fn withdraw(key: &ApiKey, subjects: &[AccessSubject], observed: &Observed<'_>) -> AccessPlan {
    let ours = |meta: &ObjectMeta| controls(key, meta);
    let role = observed.role.filter(|r| ours(&r.metadata));
    let Some(binding) = observed.binding.filter(|b| ours(&b.metadata)) else {
        return AccessPlan::default();
    };
    let current = binding.subjects.clone().unwrap_or_default();
    let kept: Vec<Subject> = current
        .iter()
        .filter(|s| subjects.iter().any(|x| subject(x) == **s))
        .cloned()
        .collect();
    let name = binding.metadata.name.clone().unwrap_or_default();
    if kept.is_empty() {
        let mut delete = vec![AccessDeletion::RoleBinding(
            name.clone(),
            precondition(&binding.metadata),
        )];
        delete.extend(role.map(|r| AccessDeletion::Role(name, precondition(&r.metadata))));
        return AccessPlan {
            delete,
            ..AccessPlan::default()
        };
    }
    let fewer = kept.len() < current.len();
    AccessPlan {
        binding: fewer.then(|| RoleBinding {
            metadata: metadata(key, &name),
            role_ref: binding.role_ref.clone(),
            subjects: Some(kept),
        }),
        status: in_effect(role, Some(binding)),
        ..AccessPlan::default()
    }
}

fn precondition(meta: &ObjectMeta) -> Precondition {
    Precondition {
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
    }
}

/// Name, namespace, Keysmith's labels and the controller reference of a key's access object.
fn metadata(key: &ApiKey, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: key.metadata.namespace.clone(),
        labels: Some(BTreeMap::from([
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
            (
                APIKEY_LABEL.to_owned(),
                key.metadata.name.clone().unwrap_or_default(),
            ),
        ])),
        owner_references: key.controller_owner_ref(&()).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

fn desired_role(key: &ApiKey, name: &str, secrets: &[String]) -> Role {
    Role {
        metadata: metadata(key, name),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".to_owned()]),
            verbs: vec!["get".to_owned()],
            resource_names: Some(secrets.to_vec()),
            ..PolicyRule::default()
        }]),
    }
}

fn desired_binding(key: &ApiKey, name: &str, subjects: &[AccessSubject]) -> RoleBinding {
    RoleBinding {
        metadata: metadata(key, name),
        role_ref: RoleRef {
            api_group: Some(RBAC_GROUP.to_owned()),
            kind: "Role".to_owned(),
            name: name.to_owned(),
        },
        subjects: Some(subjects.iter().map(subject).collect()),
    }
}

/// The RBAC subject of an access list entry, as the API server stores it (a ServiceAccount has
/// no API group).
fn subject(s: &AccessSubject) -> Subject {
    Subject {
        api_group: (s.kind != SERVICE_ACCOUNT).then(|| RBAC_GROUP.to_owned()),
        kind: s.kind.clone(),
        name: s.name.clone(),
        namespace: s.namespace.clone(),
    }
}

/// Whether Keysmith's labels and the controller reference are on `observed`.
fn matches_meta(observed: &ObjectMeta, desired: &ObjectMeta) -> bool {
    let labels = desired
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| observed.labels.as_ref().and_then(|l| l.get(k)) == Some(v));
    let owner = desired
        .owner_references
        .iter()
        .flatten()
        .all(|o| observed.owner_references.iter().flatten().any(|x| x == o));
    labels && owner
}

fn matches_role(observed: &Role, desired: &Role) -> bool {
    matches_meta(&observed.metadata, &desired.metadata) && observed.rules == desired.rules
}

fn matches_binding(observed: &RoleBinding, desired: &RoleBinding) -> bool {
    matches_meta(&observed.metadata, &desired.metadata) && observed.subjects == desired.subjects
}

#[cfg(test)]
mod tests;
