//! The rollout restarts a rotation asks for, and whether it may restart a workload. Keysmith patches workloads with its own rights, so
//! an ApiKey may only restart a workload that reads the key's Secret (and so needs the restart)
//! or that opts in by naming the key in its `keysmith.dev/restart-on` annotation; naming a
//! workload in `restartTargets` is not enough.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::{ApiKey, RESTART_ON_ANNOTATION, RestartTarget, TokenStatus};

use super::Planner;

/// A rollout restart: set the pod template annotation `keysmith.dev/restarted-for`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    /// The workload.
    pub target: RestartTarget,
    /// The sorted ids of the current tokens, joined by `,`: the same value for the same tokens,
    /// so a second patch for one rotation changes nothing and restarts nothing.
    pub restarted_for: String,
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
