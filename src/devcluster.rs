//! The embedded development cluster: the Kubernetes API emulator with the ApiKey CRD installed
//! and the Helm chart's RBAC bound to the controller's and the verifier's ServiceAccounts, exactly
//! as `helm install` would grant them. `keysmith dev` runs on it, and so do the end-to-end tests,
//! so a permission missing from the chart fails both.

#[cfg(feature = "dev")]
use keysmith_emulator::{Config, Emulator, Identity};
use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::components::{Components, ControllerPart, VerifierPart};
use crate::controller::Clock;
use crate::controller::leader::LeaderConfig;
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
    /// A seed example does not parse or was refused.
    #[error("examples/{file}: {message}")]
    Example {
        /// Which example.
        file: &'static str,
        /// What went wrong.
        message: String,
    },
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
/// `keysmith dev` runs and what the end-to-end tests start. `identity` names the Lease holder;
/// `usage`, if any, is where the verifier serves the usage API.
pub fn components(
    clients: ChartClients,
    identity: &str,
    clock: Clock,
    api: TcpListener,
    metrics: TcpListener,
    usage: Option<TcpListener>,
) -> Components {
    Components {
        controller: Some(ControllerPart {
            client: clients.controller,
            leader: LeaderConfig::new(SYSTEM_NAMESPACE, identity),
            clock: clock.clone(),
            personal_keys: crate::controller::PersonalKeyPolicy::ACCEPTED,
            // The emulator serves no admission policies, so the guard access lists need is absent.
            access_lists: false,
            concurrency: crate::controller::DEFAULT_CONCURRENCY,
        }),
        verifier: Some(VerifierPart {
            client: clients.verifier,
            api,
            trusted_proxies: Vec::new(),
            // One developer's cluster: every namespace, as an explicit choice.
            tenancy: Tenancy::any(),
            usage,
            clock,
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

/// Apply the seed examples as the administrator, each object as `kubectl apply -f examples/`
/// leaves it (see [`as_kubectl_applies`]).
#[cfg(feature = "dev")]
pub fn apply_examples(emu: &Emulator) -> Result<(), DevClusterError> {
    for (file, yaml) in EXAMPLES {
        let failed = |message: String| DevClusterError::Example { file, message };
        for object in as_kubectl_applies(yaml).map_err(failed)? {
            emu.apply_object(&object)
                .map_err(|e| failed(e.to_string()))?;
        }
    }
    Ok(())
}

/// kubectl's record of what `kubectl apply` last applied, the base of its three-way merge.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The objects of a manifest as `kubectl apply` stores them: each carries the last-applied
/// annotation kubectl would write. A later `kubectl apply -f` of the same file then merges
/// against it (and finds nothing to change) instead of warning that the annotation is missing.
pub fn as_kubectl_applies(yaml: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).map_err(|e| e.to_string())?;
    Ok(docs
        .into_iter()
        .filter(Value::is_object)
        .map(with_last_applied)
        .collect())
}

/// `object` with the annotation kubectl computes: the object without that annotation (and with
/// `annotations: {}` when it has no other, as kubectl leaves it), as Go's `encoding/json`
/// writes it: keys sorted, `<`, `>`, `&`, U+2028 and U+2029 escaped, a newline at the end.
fn with_last_applied(mut object: Value) -> Value {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
        match annotations.as_object_mut() {
            Some(annotations) => drop(annotations.remove(LAST_APPLIED_ANNOTATION)),
            None => *annotations = json!({}),
        }
    }
    // serde_json's maps are sorted by key, as Go sorts a map's keys.
    let mut applied = String::new();
    for c in object.to_string().chars() {
        match c {
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                applied.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => applied.push(c),
        }
    }
    applied.push('\n');
    object["metadata"]["annotations"][LAST_APPLIED_ANNOTATION] = Value::String(applied);
    object
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

/// The verifier's Service, which the usage API's APIService names (`<fullname>-verifier` of a
/// release named `keysmith`).
pub const VERIFIER_SERVICE: &str = "keysmith-verifier";

/// The DNS name the usage API's serving certificate must carry: the aggregator checks it under
/// the Service's name.
pub fn usage_api_host() -> String {
    format!("{VERIFIER_SERVICE}.{SYSTEM_NAMESPACE}.svc")
}

/// What `charts/keysmith/templates/usage-api.yaml` installs with `usage.enabled=true`, for one
/// verifier replica serving the usage API at `endpoint` with a certificate that chains to
/// `ca_pem`: the APIService, the verifier Service and its EndpointSlice (the endpoints the
/// aggregator routes to), the `keysmith-usage-reader` ClusterRole, and the bindings that let
/// the verifier read the front-proxy configuration and review its callers. One replica asks no
/// peers, so the peers' Role and binding are left out.
pub fn usage_api(ca_pem: &str, endpoint: SocketAddr) -> Vec<Value> {
    let verifier = service_account(VERIFIER_SA);
    let ca_bundle = serde_json::to_value(k8s_openapi::ByteString(ca_pem.as_bytes().to_vec()))
        .expect("bytes serialize as base64");
    vec![
        json!({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v1alpha1.usage.keysmith.dev"},
            "spec": {
                "group": "usage.keysmith.dev", "version": "v1alpha1",
                "service": {"name": VERIFIER_SERVICE, "namespace": SYSTEM_NAMESPACE, "port": 443},
                "caBundle": ca_bundle,
                "groupPriorityMinimum": 1000, "versionPriority": 15,
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": VERIFIER_SERVICE, "namespace": SYSTEM_NAMESPACE},
            "spec": {"ports": [{"name": "usage", "port": 443, "targetPort": "usage", "protocol": "TCP"}]},
        }),
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{VERIFIER_SERVICE}-usage"), "namespace": SYSTEM_NAMESPACE,
                "labels": {"kubernetes.io/service-name": VERIFIER_SERVICE},
            },
            "addressType": if endpoint.is_ipv4() { "IPv4" } else { "IPv6" },
            "ports": [{"name": "usage", "port": endpoint.port(), "protocol": "TCP"}],
            "endpoints": [{"addresses": [endpoint.ip().to_string()], "conditions": {"ready": true}}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "keysmith-usage-reader"},
            "rules": [{"apiGroups": ["usage.keysmith.dev"], "resources": ["apikeyusages"], "verbs": ["get"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "keysmith-usage-auth-delegator"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
            "subjects": [verifier.clone()],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "keysmith-usage-authentication-reader", "namespace": "kube-system"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "extension-apiserver-authentication-reader"},
            "subjects": [verifier],
        }),
    ]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_carry_the_last_applied_configuration_kubectl_would_write() {
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: default\n\
                    data:\n  z: \"<a&b>\"\n  a: '1'\n---\napiVersion: v1\nkind: ConfigMap\n\
                    metadata:\n  name: d\n  annotations:\n    keep: x\n    \
                    kubectl.kubernetes.io/last-applied-configuration: stale\n";
        let objects = as_kubectl_applies(yaml).unwrap();
        assert_eq!(objects.len(), 2);
        // Keys sorted, `annotations: {}` for none, HTML characters escaped, a final newline.
        assert_eq!(
            objects[0]["metadata"]["annotations"][LAST_APPLIED_ANNOTATION],
            "{\"apiVersion\":\"v1\",\"data\":{\"a\":\"1\",\"z\":\"\\u003ca\\u0026b\\u003e\"},\
             \"kind\":\"ConfigMap\",\"metadata\":{\"annotations\":{},\"name\":\"c\",\
             \"namespace\":\"default\"}}\n"
        );
        assert_eq!(objects[0]["data"]["z"], "<a&b>");
        // A stale record is replaced, other annotations kept and recorded.
        assert_eq!(objects[1]["metadata"]["annotations"]["keep"], "x");
        assert_eq!(
            objects[1]["metadata"]["annotations"][LAST_APPLIED_ANNOTATION],
            "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"annotations\":\
             {\"keep\":\"x\"},\"name\":\"d\"}}\n"
        );
    }
}
