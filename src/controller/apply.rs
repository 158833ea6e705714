//! The writes of a plan: server-side apply of the status and the Secret with field manager
//! `keysmith`, the rollout-restart patch, and the Secret's deletion on revocation. Every apply
//! body carries `apiVersion` and `kind`, and the Secret goes into `data`, never `stringData`.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde_json::json;

use crate::api::{ApiKey, ApiKeyStatus, RESTARTED_FOR_ANNOTATION, WorkloadKind};
use crate::planner::conditions::{READY, reason};
use crate::planner::restart::{self, Consent};
use crate::planner::{DesiredSecret, Restart};

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

/// Apply the complete status the controller owns (never `lastUsedAt`, which the verifier owns).
/// A slot whose overlap window ended is applied without `previous`, and server-side apply removes
/// the whole object, as the controller is its only manager.
pub async fn status(api: &Api<ApiKey>, name: &str, status: &ApiKeyStatus) -> kube::Result<()> {
    apply_status(api, name, FIELD_MANAGER, status).await
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

/// Apply the Secret: labels, annotations, owner reference, type and one data key per slot.
pub async fn secret(api: &Api<Secret>, desired: &DesiredSecret) -> kube::Result<()> {
    let secret = desired.to_secret();
    api.patch(
        &desired.name,
        &apply_params(FIELD_MANAGER),
        &Patch::Apply(&secret),
    )
    .await
    .map(drop)
}

/// Delete the Secret (revocation); an already deleted Secret is fine.
pub async fn delete_secret(api: &Api<Secret>, name: &str) -> kube::Result<()> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Release an adopted Secret (revocation): apply it with nothing of Keysmith's, so server-side
/// apply removes every field only Keysmith set (its data keys, labels, annotations and owner
/// reference) and keeps what others wrote. The type stays, as a Secret's type is immutable.
pub async fn release_secret(api: &Api<Secret>, current: &Secret) -> kube::Result<()> {
    let name = current.metadata.name.as_deref().unwrap_or_default();
    let body = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
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

/// Restart a workload by setting its pod template annotation, unless it already carries the
/// value (a resync or a second controller must not restart twice) or it does not consent to
/// restarts by `key` ([`restart::consent`]).
pub async fn restart(client: &Client, key: &ApiKey, restart: &Restart) -> kube::Result<Restarted> {
    match restart.target.kind {
        WorkloadKind::Deployment => {
            restart_workload::<Deployment>(client, key, restart, |d| &d.spec.template).await
        }
        WorkloadKind::StatefulSet => {
            restart_workload::<StatefulSet>(client, key, restart, |s| &s.spec.template).await
        }
        WorkloadKind::DaemonSet => {
            restart_workload::<DaemonSet>(client, key, restart, |d| &d.spec.template).await
        }
    }
}

async fn restart_workload<K>(
    client: &Client,
    key: &ApiKey,
    restart: &Restart,
    template: impl Fn(&K) -> &PodTemplateSpec,
) -> kube::Result<Restarted>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let namespace = key.metadata.namespace.as_deref().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let Some(workload) = api.get_opt(&restart.target.name).await? else {
        return Ok(Restarted::Missing);
    };
    let template = template(&workload);
    if restart::consent(workload.meta(), template, key) == Consent::Refused {
        return Ok(Restarted::Refused);
    }
    let current = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref()?.get(RESTARTED_FOR_ANNOTATION));
    if current == Some(&restart.restarted_for) {
        return Ok(Restarted::AlreadyDone);
    }
    // A merge patch of one annotation: the workload belongs to its owner's manager, and an
    // apply would make Keysmith co-own its template.
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {
        RESTARTED_FOR_ANNOTATION: restart.restarted_for,
    }}}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    api.patch(&restart.target.name, &params, &Patch::Merge(patch))
        .await?;
    Ok(Restarted::Yes)
}
