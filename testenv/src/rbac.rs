//! The least-privilege scenario, shared by the suite that runs it under the chart's rule files
//! and the one that runs it under the rendered chart: workloads and an ApiKey that together use
//! every feature needing a permission (mint, rotation restarting every workload kind plus a
//! missing one, a required header read from a Secret, usage write-back, revocation), and what an
//! account was granted and what it used, read from the API server's request log.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

use crate::Cluster;

/// A permission: (verb, API group, resource or resource/subresource).
pub type Permission = (String, String, String);

/// The scenario's ApiKey (and its Secret).
pub const KEY: &str = "everything";

/// A Deployment, a StatefulSet, a DaemonSet and an Argo Rollout (with its CRD) that read the
/// key's Secret (so a rotation may restart them), and the Secret the key's required header is
/// read from.
pub fn workloads(namespace: &str) -> String {
    let workload = |kind: &str, name: &str, extra: &str| {
        format!(
            "apiVersion: apps/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
             spec:\n  {extra}selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    \
             metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: {name}, \
             image: {name}, envFrom: [{{secretRef: {{name: {KEY}}}}}]}}]}}\n"
        )
    };
    [
        workload("Deployment", "web", ""),
        workload("StatefulSet", "db", "serviceName: db\n  "),
        workload("DaemonSet", "agent", ""),
        crate::argo::ROLLOUT_CRD.to_owned(),
        crate::argo::rollout(namespace, "shop", KEY),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: client-secret, namespace: {namespace}, \
             annotations: {{keysmith.dev/header-source: {KEY}}}}}\nstringData: {{value: s3cret}}\n"
        ),
    ]
    .join("---\n")
}

/// The scenario's ApiKey in `namespace`, rotated once per new `trigger`, its tokens published for
/// Envoy Gateway (a Secret created, then replaced on each rotation).
pub fn key(namespace: &str, trigger: &str) -> String {
    format!(
        r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {{name: {KEY}, namespace: {namespace}}}
spec:
  tokens: [{{name: api, prefix: all_}}]
  grants: [{{effect: allow, actions: ["*"]}}]
  rotation: {{trigger: "{trigger}", overlap: 1h}}
  publish: [{{envoyGateway: {{}}}}]
  restrictions:
    requiredHeaders:
      - name: X-Client-Secret
        valueFrom: {{secretKeyRef: {{name: client-secret, key: value}}}}
  secret:
    restartTargets:
      - {{kind: Deployment, name: web}}
      - {{kind: StatefulSet, name: db}}
      - {{kind: DaemonSet, name: agent}}
      - {{kind: Rollout, name: shop}}
      - {{kind: Deployment, name: missing}}
"#
    )
}

/// A second ApiKey whose write fails (it publishes over a Secret it does not own), so the
/// controller reports `Ready=False ApiError`, a condition it patches on its own; and that Secret.
pub fn failing_key(namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: taken, namespace: {namespace}}}\n---\n\
         apiVersion: keysmith.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: blocked, namespace: {namespace}}}\n\
         spec: {{tokens: [{{name: api}}], publish: [{{envoyGateway: {{secretName: taken}}}}]}}\n"
    )
}

/// Whether [`failing_key`] in `namespace` reports `Ready=False ApiError`.
pub async fn failing_key_reported(cluster: &Cluster, namespace: &str) -> Option<()> {
    let key = cluster
        .get("keysmith.dev/v1alpha1", "ApiKey", namespace, "blocked")
        .await?;
    key["status"]["conditions"]
        .as_array()?
        .iter()
        .any(|c| c["type"] == "Ready" && c["reason"] == "ApiError")
        .then_some(())
}

/// The token in the scenario key's Secret.
pub async fn token(cluster: &Cluster, namespace: &str) -> Option<String> {
    let secret: Secret =
        serde_json::from_value(cluster.get("v1", "Secret", namespace, KEY).await?).ok()?;
    String::from_utf8(secret.data?.get("api")?.0.clone()).ok()
}

/// Every permission a list of RBAC rules grants.
pub fn granted(rules: &Value) -> BTreeSet<Permission> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let mut out = BTreeSet::new();
    for rule in rules.as_array().into_iter().flatten() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    out.insert((verb, group.clone(), resource.clone()));
                }
            }
        }
    }
    out
}

/// What `user` did successfully according to the request log, and what it was denied.
pub fn used(cluster: &Cluster, user: &str) -> (BTreeSet<Permission>, Vec<String>) {
    let entries = cluster.requests(|e| e.user == user);
    let ok = entries
        .iter()
        .filter(|e| (200..300).contains(&e.code) && !e.resource.is_empty())
        .flat_map(|e| {
            let resource = if e.subresource.is_empty() {
                e.resource.clone()
            } else {
                format!("{}/{}", e.resource, e.subresource)
            };
            // A server-side apply that created its object (201) was authorized as create too.
            let created = e.verb == "patch" && e.code == 201;
            std::iter::once(e.verb.clone())
                .chain(created.then(|| "create".to_owned()))
                .map(move |verb| (verb, e.group.clone(), resource.clone()))
        })
        .collect();
    let denied = entries
        .iter()
        .filter(|e| e.code == 403)
        .map(|e| format!("{} {}", e.verb, e.path))
        .collect();
    (ok, denied)
}
