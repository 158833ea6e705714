//! The writes of a plan: the status (replaced, guarded by its version) and the Secret
//! (server-side apply) with field manager `keysmith`, the rollout-restart patch, and the Secret's
//! deletion on revocation. Every apply body carries `apiVersion` and `kind`, and the Secret goes
//! into `data`, never `stringData`. Every write or deletion of a Secret the planner saw carries
//! its uid and resourceVersion as observed ([`Precondition`]): one that changed since answers 409
//! ([`raced`]) and is planned again, never overwritten or deleted.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
    Preconditions,
};
use kube::{Api, Client, Resource};
use serde_json::json;

use crate::api::{ApiKey, ApiKeyStatus};
use crate::planner::conditions::{READY, reason};
use crate::planner::restart::{self, Consent};
use crate::planner::{Deletion, DesiredSecret, Precondition, Restart};

/// Field manager of everything the controller writes.
pub const FIELD_MANAGER: &str = "keysmith";
/// Field manager of the `Ready=False ApiError` condition, kept apart so that applying only that
/// condition does not release the controller's ownership of the rest of the status.
pub const ERROR_FIELD_MANAGER: &str = "keysmith-errors";

fn apply_params(manager: &str) -> PatchParams {
    // force: the controller is the authority on these fields (a hand edit is overwritten, and an
    // adopted Secret's keys are taken over).
    PatchParams::apply(manager).force()
}

/// Replace the status of `key` (as read for planning) with `status`, guarded by its
/// resourceVersion: a 409 means something else wrote first, and nothing was written. Answers
/// the key as written.
///
/// A replace rather than a server-side apply, because each `lastUsedAt` belongs to one token:
/// when a rotation replaces a slot's token, the replaced token's use moves to its `previous`
/// entry and the new token starts with none. The verifier writes those fields with its own
/// patches, so an apply by the controller could neither move nor remove them. The planner
/// carries every `lastUsedAt` it read, and the version guard keeps a newer one from being lost.
pub async fn status(
    api: &Api<ApiKey>,
    key: &ApiKey,
    status: &ApiKeyStatus,
) -> kube::Result<ApiKey> {
    let mut object = key.clone();
    // Left out, the server keeps the object's field ownership as it is.
    object.metadata.managed_fields = None;
    object.status = Some(status.clone());
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    let name = key.metadata.name.as_deref().unwrap_or_default();
    api.replace_status(name, &params, &object).await
}

/// Apply `status` as `manager`. The body is the partial object server-side apply takes (no
/// spec, which the status subresource would not own), so it is built here rather than typed.
async fn apply_status(
    api: &Api<ApiKey>,
    name: &str,
    manager: &str,
    status: &ApiKeyStatus,
) -> kube::Result<()> {
    let body = json!({
        "apiVersion": ApiKey::api_version(&()),
        "kind": ApiKey::kind(&()),
        "metadata": {"name": name},
        "status": status,
    });
    api.patch_status(name, &apply_params(manager), &Patch::Apply(body))
        .await
        .map(drop)
}

/// Set `Ready=False` with reason `ApiError` after a failed write.
pub async fn api_error(
    api: &Api<ApiKey>,
    key: &ApiKey,
    message: &str,
    since: jiff::Timestamp,
) -> kube::Result<()> {
    let name = key.metadata.name.as_deref().unwrap_or_default();
    let status = ApiKeyStatus {
        conditions: vec![Condition {
            type_: READY.to_owned(),
            status: "False".to_owned(),
            reason: reason::API_ERROR.to_owned(),
            message: message.to_owned(),
            observed_generation: key.metadata.generation,
            last_transition_time: Time(
                jiff::Timestamp::from_second(since.as_second()).unwrap_or(since),
            ),
        }],
        ..ApiKeyStatus::default()
    };
    apply_status(api, name, ERROR_FIELD_MANAGER, &status).await
}

/// Whether a write failed because its object changed since it was observed (409: a version or uid
/// precondition failed, or the object is gone): nothing was written; plan again.
pub fn raced(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_conflict())
}

/// Apply the Secret: labels, annotations, owner reference, type and one data key per slot. The
/// observed uid and resourceVersion in the body make the apply a conditional update; with none
/// observed it creates the Secret (server-side apply has no create-only form). Answers the Secret
/// as written.
pub async fn secret(api: &Api<Secret>, desired: &DesiredSecret) -> kube::Result<Secret> {
    let secret = desired.to_secret();
    api.patch(
        &desired.name,
        &apply_params(FIELD_MANAGER),
        &Patch::Apply(&secret),
    )
    .await
}

/// Write a published Secret whole: create it when the key has none of that name (`current`),
/// else replace `current` guarded by its resourceVersion. Labels and annotations others added
/// stay; the data becomes exactly the planned entries.
pub async fn published_secret(
    api: &Api<Secret>,
    desired: &DesiredSecret,
    current: Option<&Secret>,
) -> kube::Result<()> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    let mut secret = desired.to_secret();
    let Some(current) = current else {
        return api.create(&params, &secret).await.map(drop);
    };
    let meta = &mut secret.metadata;
    for (mine, theirs) in [
        (&mut meta.labels, &current.metadata.labels),
        (&mut meta.annotations, &current.metadata.annotations),
    ] {
        let mut merged = theirs.clone().unwrap_or_default();
        merged.extend(mine.take().unwrap_or_default());
        *mine = Some(merged);
    }
    api.replace(&desired.name, &params, &secret).await.map(drop)
}

/// Delete the Secret if it is still the one observed; an already deleted Secret is fine.
pub async fn delete_secret(api: &Api<Secret>, deletion: &Deletion) -> kube::Result<()> {
    delete_if_unchanged(api, &deletion.name, &deletion.observed).await
}

/// Delete object `name` if it is still the one `observed`; one already gone is fine.
pub async fn delete_if_unchanged<K>(
    api: &Api<K>,
    name: &str,
    observed: &Precondition,
) -> kube::Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: observed.uid.clone(),
            resource_version: observed.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Release an adopted Secret (revocation): apply it with nothing of Keysmith's, so server-side
/// apply removes every field only Keysmith set (its data keys, labels, annotations and owner
/// reference) and keeps what others wrote. The type stays, as a Secret's type is immutable.
/// Only while `current` is as `observed`.
pub async fn release_secret(
    api: &Api<Secret>,
    current: &Secret,
    observed: &Precondition,
) -> kube::Result<()> {
    let name = current.metadata.name.as_deref().unwrap_or_default();
    let body = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            uid: observed.uid.clone(),
            resource_version: observed.resource_version.clone(),
            ..ObjectMeta::default()
        },
        type_: current.type_.clone(),
        ..Secret::default()
    };
    api.patch(name, &apply_params(FIELD_MANAGER), &Patch::Apply(&body))
        .await
        .map(drop)
}

/// What a restart did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restarted {
    /// The pod template annotation was patched: a rollout starts.
    Yes,
    /// The annotation already had this value: this rotation already restarted it.
    AlreadyDone,
    /// The workload does not exist.
    Missing,
    /// The workload neither reads the key's Secret nor opts in: nothing was patched.
    Refused,
}

/// Restart a workload ([`Restart::patch`]), unless it already carries this restart's marker (a
/// resync or a second controller must not restart twice) or it does not consent to restarts by
/// `key` ([`restart::consent`]). A kind the cluster does not serve (Argo Rollouts not installed)
/// is a missing workload.
pub async fn restart(client: &Client, key: &ApiKey, restart: &Restart) -> kube::Result<Restarted> {
    let kind = restart.target.kind;
    let (group, version) = kind.group_version();
    // The variants are named after their Kubernetes kinds.
    let gvk = GroupVersionKind::gvk(group, version, &format!("{kind:?}"));
    let resource = ApiResource::from_gvk_with_plural(&gvk, kind.plural());
    let namespace = key.metadata.namespace.as_deref().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let workload = match api.get(&restart.target.name).await {
        Ok(workload) => serde_json::to_value(&workload).map_err(kube::Error::SerdeError)?,
        // A kind the API server does not serve answers a bare 404, not a NotFound Status.
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Restarted::Missing),
        Err(e) => return Err(e),
    };
    let metadata: ObjectMeta =
        serde_json::from_value(workload["metadata"].clone()).map_err(kube::Error::SerdeError)?;
    if restart::consent(&metadata, &restart::template(&workload), key) == Consent::Refused {
        return Ok(Restarted::Refused);
    }
    if restart.done(&workload) {
        return Ok(Restarted::AlreadyDone);
    }
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    api.patch(
        &restart.target.name,
        &params,
        &Patch::Merge(restart.patch()),
    )
    .await?;
    Ok(Restarted::Yes)
}
