//! The reads and writes of `spec.access` ([`planner::access`]): the key's Role and RoleBinding,
//! created when missing (a create fails on any object of that name, so nobody else's is taken
//! over), else server-side applied as field manager `keysmith` guarded by the version observed,
//! and deleted, RoleBinding first, only while still as observed.

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use keysmith_core::api::ApiKey;
use keysmith_core::planner;
use keysmith_core::planner::access::{AccessDeletion, AccessPlan, object_name};

use super::apply::FIELD_MANAGER;
use super::publish::KeyObjects;
use super::{Error, apply};

/// The watches' view of which keys have a Role or a RoleBinding.
pub struct Registries {
    /// Keys with a Role.
    pub roles: KeyObjects,
    /// Keys with a RoleBinding.
    pub bindings: KeyObjects,
}

/// The key's Role and RoleBinding as they are. Not read for a key without readers that, as far
/// as the watches know, has neither.
pub async fn observe(
    client: &Client,
    registries: &Registries,
    key: &ApiKey,
) -> Result<(Option<Role>, Option<RoleBinding>), Error> {
    let known = registries.roles.any(key) || registries.bindings.any(key);
    if planner::readers(key).is_empty() && !known {
        return Ok((None, None));
    }
    let namespace = key.namespace().unwrap_or_default();
    let name = object_name(&key.name_any());
    let roles: Api<Role> = Api::namespaced(client.clone(), &namespace);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &namespace);
    let role = roles
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("reading Role {namespace}/{name}")))?;
    let binding = bindings.get_opt(&name).await.map_err(Error::kube(format!(
        "reading RoleBinding {namespace}/{name}"
    )))?;
    Ok((role, binding))
}

/// Write `plan`, planned from the `role` and `binding` observed: deletions, then the Role, then
/// the RoleBinding.
pub async fn write(
    client: &Client,
    key: &ApiKey,
    plan: &AccessPlan,
    role: Option<&Role>,
    binding: Option<&RoleBinding>,
) -> Result<(), Error> {
    let namespace = key.namespace().unwrap_or_default();
    let roles: Api<Role> = Api::namespaced(client.clone(), &namespace);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &namespace);
    let mut binding_deleted = false;
    for deletion in &plan.delete {
        match deletion {
            AccessDeletion::RoleBinding(name, observed) => {
                binding_deleted = true;
                apply::delete_if_unchanged(&bindings, name, observed)
                    .await
                    .map_err(Error::kube(format!(
                        "deleting RoleBinding {namespace}/{name}"
                    )))?;
            }
            AccessDeletion::Role(name, observed) => {
                apply::delete_if_unchanged(&roles, name, observed)
                    .await
                    .map_err(Error::kube(format!("deleting Role {namespace}/{name}")))?;
            }
        }
    }
    if let Some(desired) = &plan.role {
        put(&roles, desired, role)
            .await
            .map_err(Error::kube(format!(
                "writing Role {namespace}/{}",
                desired.name_any()
            )))?;
    }
    if let Some(desired) = &plan.binding {
        let current = binding.filter(|_| !binding_deleted);
        put(&bindings, desired, current)
            .await
            .map_err(Error::kube(format!(
                "writing RoleBinding {namespace}/{}",
                desired.name_any()
            )))?;
    }
    Ok(())
}

/// Create `desired` when no object of its name was observed, else apply it over `current`
/// (the key's own, as the planner checked) only while it is the version observed.
async fn put<K>(api: &Api<K>, desired: &K, current: Option<&K>) -> kube::Result<()>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = desired.name_any();
    let Some(current) = current else {
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        return api.create(&params, desired).await.map(drop);
    };
    let mut body = desired.clone();
    body.meta_mut().uid = current.meta().uid.clone();
    body.meta_mut().resource_version = current.meta().resource_version.clone();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(drop)
}
