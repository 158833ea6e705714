//! The embedded development cluster: the Kubernetes API emulator with the ApiKey CRD installed
//! and the Helm chart's RBAC bound to the controller's and the verifier's ServiceAccounts, exactly
//! as `helm install` would grant them. `keysmith dev` runs on it, and so do the end-to-end tests,
//! so a permission missing from the chart fails both.

#[cfg(feature = "dev")]
use keysmith_emulator::{Config, Emulator, Identity};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::components::{Components, ControllerPart, VerifierPart};
use crate::controller::leader::LeaderConfig;
use crate::controller::Clock;
use crate::scope::Scope;
use crate::verifier::tenancy::Tenancy;

/// Namespace the chart installs into; home of the ServiceAccounts and the leader Lease.
pub const SYSTEM_NAMESPACE: &str = "keysmith";
/// The controller's ServiceAccount.
pub const CONTROLLER_SA: &str = "keysmith-controller";
/// The verifier's ServiceAccount.
pub const VERIFIER_SA: &str = "keysmith-verifier";

const CRD: &str = include_str!("../crds/apikeys.keysmith.dev.yaml");
const CONTROLLER_RULES: &str = include_str!("../charts/keysmith/files/controller-rules.yaml");
const LEADER_RULES: &str =
    include_str!("../charts/keysmith/files/controller-leader-election-rules.yaml");
const VERIFIER_RULES: &str = include_str!("../charts/keysmith/files/verifier-rules.yaml");

/// The seed examples of SPEC section 9, embedded so `keysmith dev` works from any directory.
pub const EXAMPLES: [(&str, &str); 5] = [
    (
        "cms-three-tokens.yaml",
        include_str!("../examples/cms-three-tokens.yaml"),
    ),
    ("grants.yaml", include_str!("../examples/grants.yaml")),
    (
        "project-token.yaml",
        include_str!("../examples/project-token.yaml"),
    ),
    (
        "expiring-keys.yaml",
        include_str!("../examples/expiring-keys.yaml"),
    ),
    (
        "public-delivery.yaml",
        include_str!("../examples/public-delivery.yaml"),
    ),
];

/// Why the development cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DevClusterError {
    /// The emulator refused to start or an object.
    #[error("Kubernetes API emulator: {0}")]
    #[cfg(feature = "dev")]
    Emulator(#[from] keysmith_emulator::Error),
    /// A bundled manifest (the CRD or a chart RBAC file) does not parse.
    #[error("bundled manifest {file}: {message}")]
    Rules {
        /// Which file.
        file: &'static str,
        /// The parse error.
        message: String,
    },
}

/// The controller's identity in the development cluster.
#[cfg(feature = "dev")]
pub fn controller_identity() -> Identity {
    Identity::service_account(SYSTEM_NAMESPACE, CONTROLLER_SA)
}

/// The verifier's identity in the development cluster.
#[cfg(feature = "dev")]
pub fn verifier_identity() -> Identity {
    Identity::service_account(SYSTEM_NAMESPACE, VERIFIER_SA)
}

/// The controller and the verifier, each with a client acting as its chart ServiceAccount: what
/// `keysmith dev` runs and what the end-to-end tests start. `identity` names the Lease holder.
pub fn components(
    clients: ChartClients,
    identity: &str,
    clock: Clock,
    api: TcpListener,
    metrics: TcpListener,
) -> Components {
    Components {
        controller: Some(ControllerPart {
            client: clients.controller,
            leader: LeaderConfig::new(SYSTEM_NAMESPACE, identity),
            clock,
        }),
        verifier: Some(VerifierPart {
            client: clients.verifier,
            api,
            trusted_proxies: Vec::new(),
            // One developer's cluster: every namespace, as an explicit choice.
            tenancy: Tenancy::any(),
        }),
        scope: Scope::default(),
        metrics,
    }
}

/// Clients authenticated as the chart's two ServiceAccounts.
pub struct ChartClients {
    /// As [`CONTROLLER_SA`].
    pub controller: kube::Client,
    /// As [`VERIFIER_SA`].
    pub verifier: kube::Client,
}

#[cfg(feature = "dev")]
impl ChartClients {
    /// Clients of the emulator acting as the chart's ServiceAccounts.
    pub async fn of(emu: &Emulator) -> Result<ChartClients, DevClusterError> {
        Ok(ChartClients {
            controller: emu.client_as(&controller_identity()).await?,
            verifier: emu.client_as(&verifier_identity()).await?,
        })
    }
}

/// Start the emulator with RBAC enforced and [`bootstrap`] applied. `config.rbac` is forced on.
#[cfg(feature = "dev")]
pub async fn start(config: Config) -> Result<Emulator, DevClusterError> {
    let emu = Emulator::start(Config {
        rbac: true,
        ..config
    })
    .await?;
    for object in bootstrap()? {
        emu.apply_object(&object)?;
    }
    Ok(emu)
}

/// What a cluster with the chart installed holds, in the order to apply it: the CRD, the
/// `default` and `keysmith` namespaces, the two ServiceAccounts and the chart's roles bound to
/// them. Both test backends (and `keysmith dev`) start from this.
pub fn bootstrap() -> Result<Vec<Value>, DevClusterError> {
    let mut objects: Vec<Value> =
        serde_saphyr::from_multiple(CRD).map_err(|e| DevClusterError::Rules {
            file: "crds/apikeys.keysmith.dev.yaml",
            message: e.to_string(),
        })?;
    for namespace in ["default", SYSTEM_NAMESPACE] {
        objects.push(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        );
    }
    objects.extend(bound_cluster_role(
        CONTROLLER_SA,
        rules("controller-rules.yaml", CONTROLLER_RULES)?,
    ));
    objects.extend(bound_cluster_role(
        VERIFIER_SA,
        rules("verifier-rules.yaml", VERIFIER_RULES)?,
    ));
    let leader = format!("{CONTROLLER_SA}-leader-election");
    objects.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": leader, "namespace": SYSTEM_NAMESPACE},
        "rules": rules("controller-leader-election-rules.yaml", LEADER_RULES)?,
    }));
    objects.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": leader, "namespace": SYSTEM_NAMESPACE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": leader},
        "subjects": [service_account(CONTROLLER_SA)],
    }));
    Ok(objects)
}

fn rules(file: &'static str, yaml: &str) -> Result<Value, DevClusterError> {
    serde_saphyr::from_str(yaml).map_err(|e| DevClusterError::Rules {
        file,
        message: e.to_string(),
    })
}

fn service_account(name: &str) -> Value {
    json!({"kind": "ServiceAccount", "name": name, "namespace": SYSTEM_NAMESPACE})
}

fn bound_cluster_role(account: &str, rules: Value) -> [Value; 3] {
    [
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": account, "namespace": SYSTEM_NAMESPACE},
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": account}, "rules": rules,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": account},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": account},
            "subjects": [service_account(account)],
        }),
    ]
}
