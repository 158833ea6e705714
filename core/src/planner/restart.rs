//! The rollout restarts a rotation asks for, what each writes, and whether it may restart a
//! workload. Keysmith patches workloads with its own rights, so an ApiKey may only restart a
//! workload that reads the key's Secret (and so needs the restart) or that opts in by naming the
//! key in its `keysmith.dev/restart-on` annotation; naming a workload in `restartTargets` is not
//! enough.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use crate::api::{
    ApiKey, RESTART_ON_ANNOTATION, RESTARTED_FOR_ANNOTATION, RestartTarget, TokenStatus,
    WorkloadKind,
};

use super::Planner;

/// A rollout restart, marked with `keysmith.dev/restarted-for`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    /// The workload.
    pub target: RestartTarget,
    /// The sorted ids of the current tokens, joined by `,`: the same value for the same tokens,
    /// so a second patch for one rotation changes nothing and restarts nothing.
    pub restarted_for: String,
    /// When the rotation asked for it: an Argo Rollout restarts the pods created before it.
    pub at: Timestamp,
}

impl Restart {
    /// The JSON merge patch that restarts the target (a merge patch: the workload is its
    /// owner's, and a server-side apply would make Keysmith co-own its fields).
    ///
    /// apps/v1 workloads: the marker on the pod template, whose change rolls their pods. Argo
    /// Rollouts: Argo's own restart, `spec.restartAt`, with the marker on the Rollout itself, in
    /// the same write; a pod template change would start a new revision through every canary or
    /// blue-green step instead of restarting the pods.
    pub fn patch(&self) -> Value {
        let marker = json!({"annotations": {RESTARTED_FOR_ANNOTATION: self.restarted_for}});
        match self.target.kind {
            WorkloadKind::Deployment | WorkloadKind::StatefulSet | WorkloadKind::DaemonSet => {
                json!({"spec": {"template": {"metadata": marker}}})
            }
            WorkloadKind::Rollout => json!({
                "metadata": marker,
                "spec": {"restartAt": self.at.to_string()},
            }),
        }
    }

    /// Whether `workload`, as the API server returns it, already carries this restart's
    /// marker: this rotation restarted it (a resync, a second controller or a restarted one
    /// must not restart it again).
    pub fn done(&self, workload: &Value) -> bool {
        let metadata = match self.target.kind {
            WorkloadKind::Deployment | WorkloadKind::StatefulSet | WorkloadKind::DaemonSet => {
                &workload["spec"]["template"]["metadata"]
            }
            WorkloadKind::Rollout => &workload["metadata"],
        };
        metadata["annotations"][RESTARTED_FOR_ANNOTATION] == self.restarted_for.as_str()
    }
}

/// The pod template of a workload as the API server returns it: its `spec.template` (empty for
/// a Rollout that takes its pods from a Deployment through `workloadRef`, which then restarts
/// only when it opts in).
pub fn template(workload: &Value) -> PodTemplateSpec {
    serde_json::from_value(workload["spec"]["template"].clone()).unwrap_or_default()
}

impl Planner<'_> {
    /// One restart per `spec.secret.restartTargets` entry, marked with the current tokens' ids.
    pub(super) fn restarts(&self, tokens: &[TokenStatus]) -> Vec<Restart> {
        let mut ids: Vec<&str> = tokens.iter().map(|t| t.id.as_str()).collect();
        ids.sort_unstable();
        let restarted_for = ids.join(",");
        let targets = self
            .key
            .spec
            .secret
            .as_ref()
            .map(|s| s.restart_targets.clone())
            .unwrap_or_default();
        targets
            .into_iter()
            .map(|target| Restart {
                target,
                restarted_for: restarted_for.clone(),
                at: self.now,
            })
            .collect()
    }
}

/// Why a workload may or may not be restarted for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    /// The pod template reads the key's Secret.
    ConsumesSecret,
    /// The workload names the key in its `keysmith.dev/restart-on` annotation.
    OptedIn,
    /// Neither: restarting it would act with the controller's rights.
    Refused,
}

/// Decide for a workload (its metadata and pod template) and the key whose rotation would restart it.
pub fn consent(workload: &ObjectMeta, template: &PodTemplateSpec, key: &ApiKey) -> Consent {
    if consumes(template, &key.secret_name()) {
        Consent::ConsumesSecret
    } else if opted_in(workload, key) {
        Consent::OptedIn
    } else {
        Consent::Refused
    }
}

/// Whether the pods mount the Secret (as a volume or a projected volume source) or read it into
/// the environment of a container or an init container.
fn consumes(template: &PodTemplateSpec, secret: &str) -> bool {
    let Some(pod) = &template.spec else {
        return false;
    };
    let mounted = pod.volumes.iter().flatten().any(|v| {
        v.secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some(secret))
            || v.projected.iter().any(|p| {
                p.sources
                    .iter()
                    .flatten()
                    .any(|source| source.secret.as_ref().is_some_and(|s| s.name == secret))
            })
    });
    let mut containers = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten());
    mounted
        || containers.any(|c| {
            let env = c.env.iter().flatten().filter_map(|e| e.value_from.as_ref());
            let env_from = c.env_from.iter().flatten();
            env.filter_map(|from| from.secret_key_ref.as_ref())
                .any(|r| r.name == secret)
                || env_from
                    .filter_map(|from| from.secret_ref.as_ref())
                    .any(|r| r.name == secret)
        })
}

/// Whether the workload's own `keysmith.dev/restart-on` annotation lists the key. The pod
/// template's annotations do not count: the consent is the workload's, not its pods'.
fn opted_in(workload: &ObjectMeta, key: &ApiKey) -> bool {
    let listed = workload
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESTART_ON_ANNOTATION));
    let name = key.metadata.name.as_deref();
    listed.is_some_and(|names| names.split(',').any(|n| Some(n.trim()) == name))
}
