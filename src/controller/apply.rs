//! The writes of a plan: server-side apply of the status and the Secret with field manager
//! `keysmith`, the rollout-restart patch, and the Secret's deletion on revocation. Every apply
//! body carries `apiVersion` and `kind`, and the Secret goes into `data`, never `stringData`.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde_json::json;

use crate::api::{ApiKey, ApiKeyStatus, RESTARTED_FOR_ANNOTATION, WorkloadKind};
use crate::planner::conditions::{READY, reason};
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

/// Add the `keysmith.dev/revoke` finalizer, guarded by `resourceVersion` so a concurrent change
/// of the list fails with 409 (and is retried) instead of being overwritten.
///
/// kube's `finalizer` helper would add the first finalizer with a JSON patch that `test`s the
/// missing list against `null`; the API server accepts that, the test emulator answers 422.
/// This merge patch is equally safe on both; the helper still does cleanup and removal.
pub async fn add_finalizer(api: &Api<ApiKey>, key: &ApiKey) -> kube::Result<()> {
    let mut finalizers = key.metadata.finalizers.clone().unwrap_or_default();
    finalizers.push(crate::api::FINALIZER.to_owned());
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": key.metadata.resource_version,
    }});
    let name = key.metadata.name.as_deref().unwrap_or_default();
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    api.patch(name, &params, &Patch::Merge(patch))
        .await
        .map(drop)
}

/// Apply the complete status the controller owns (never `lastUsedAt`, which the verifier owns).
///
/// An ended overlap window is first removed with a JSON patch (guarded by a `test` of the slot
/// name): server-side apply would remove the `previous` object once Keysmith stops sending it,
/// but the test emulator only removes its fields and leaves an invalid empty object behind.
pub async fn status(
    api: &Api<ApiKey>,
    name: &str,
    observed: Option<&ApiKeyStatus>,
    status: &ApiKeyStatus,
) -> kube::Result<()> {
    let ended = ended_overlaps(observed, status);
    if !ended.0.is_empty() {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        api.patch_status(name, &params, &Patch::<()>::Json(ended))
            .await?;
    }
    let body = json!({
        "apiVersion": ApiKey::api_version(&()),
        "kind": ApiKey::kind(&()),
        "metadata": {"name": name},
        "status": status,
    });
    api.patch_status(name, &apply_params(FIELD_MANAGER), &Patch::Apply(body))
        .await
        .map(drop)
}

/// JSON patch removing `previous` from the observed tokens whose desired entry has none.
fn ended_overlaps(observed: Option<&ApiKeyStatus>, desired: &ApiKeyStatus) -> json_patch::Patch {
    use json_patch::jsonptr::PointerBuf;
    use json_patch::{PatchOperation, RemoveOperation, TestOperation};
    let mut ops = Vec::new();
    for (i, token) in observed.iter().flat_map(|o| o.tokens.iter().enumerate()) {
        let still = desired
            .tokens
            .iter()
            .find(|t| t.name == token.name)
            .is_some_and(|t| t.previous.is_some());
        if token.previous.is_some() && !still {
            let index = i.to_string();
            ops.push(PatchOperation::Test(TestOperation {
                path: PointerBuf::from_tokens(["status", "tokens", index.as_str(), "name"]),
                value: token.name.clone().into(),
            }));
            ops.push(PatchOperation::Remove(RemoveOperation {
                path: PointerBuf::from_tokens(["status", "tokens", index.as_str(), "previous"]),
            }));
        }
    }
    json_patch::Patch(ops)
}

/// Set `Ready=False` with reason `ApiError` after a failed write.
pub async fn api_error(
    api: &Api<ApiKey>,
    key: &ApiKey,
    message: &str,
    since: jiff::Timestamp,
) -> kube::Result<()> {
    let name = key.metadata.name.as_deref().unwrap_or_default();
    let body = json!({
        "apiVersion": ApiKey::api_version(&()),
        "kind": ApiKey::kind(&()),
        "metadata": {"name": name},
        "status": { "conditions": [{
            "type": READY,
            "status": "False",
            "reason": reason::API_ERROR,
            "message": message,
            "observedGeneration": key.metadata.generation,
            "lastTransitionTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(since.as_second()).unwrap_or(since)
            ),
        }]},
    });
    let name = key.metadata.name.as_deref().unwrap_or_default();
    api.patch_status(
        name,
        &apply_params(ERROR_FIELD_MANAGER),
        &Patch::Apply(body),
    )
    .await
    .map(drop)
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

/// What a restart did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restarted {
    /// The pod template annotation was patched: a rollout starts.
    Yes,
    /// The annotation already had this value: this rotation already restarted it.
    AlreadyDone,
    /// The workload does not exist.
    Missing,
}

/// Restart a workload by setting its pod template annotation, unless it already carries the
/// value (a resync or a second controller must not restart twice).
pub async fn restart(
    client: &Client,
    namespace: &str,
    restart: &Restart,
) -> kube::Result<Restarted> {
    match restart.target.kind {
        WorkloadKind::Deployment => {
            restart_workload::<Deployment>(client, namespace, restart, |d| {
                d.spec.template.metadata.as_ref()?.annotations.clone()
            })
            .await
        }
        WorkloadKind::StatefulSet => {
            restart_workload::<StatefulSet>(client, namespace, restart, |s| {
                s.spec.template.metadata.as_ref()?.annotations.clone()
            })
            .await
        }
        WorkloadKind::DaemonSet => {
            restart_workload::<DaemonSet>(client, namespace, restart, |d| {
                d.spec.template.metadata.as_ref()?.annotations.clone()
            })
            .await
        }
    }
}

async fn restart_workload<K>(
    client: &Client,
    namespace: &str,
    restart: &Restart,
    annotations: impl Fn(&K) -> Option<std::collections::BTreeMap<String, String>>,
) -> kube::Result<Restarted>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let Some(workload) = api.get_opt(&restart.target.name).await? else {
        return Ok(Restarted::Missing);
    };
    let current = annotations(&workload).and_then(|a| a.get(RESTARTED_FOR_ANNOTATION).cloned());
    if current.as_deref() == Some(restart.restarted_for.as_str()) {
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
