//! Argo Rollouts as far as Keysmith touches it: the `Rollout` CRD (argoproj.io/v1alpha1),
//! reduced to the fields a restart reads and writes but served like Argo's own (namespaced, a
//! status subresource, `spec.restartAt` a date-time, the pod template an open object). No Argo
//! controller runs: tests read what Keysmith wrote.

/// The CRD.
pub const ROLLOUT_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: rollouts.argoproj.io}
spec:
  group: argoproj.io
  scope: Namespaced
  names: {kind: Rollout, listKind: RolloutList, plural: rollouts, singular: rollout, shortNames: [ro]}
  versions:
    - name: v1alpha1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            apiVersion: {type: string}
            kind: {type: string}
            metadata: {type: object}
            spec:
              type: object
              properties:
                replicas: {type: integer}
                restartAt: {type: string, format: date-time}
                selector: {type: object, x-kubernetes-preserve-unknown-fields: true}
                strategy: {type: object, x-kubernetes-preserve-unknown-fields: true}
                template: {type: object, x-kubernetes-preserve-unknown-fields: true}
                workloadRef:
                  type: object
                  properties:
                    apiVersion: {type: string}
                    kind: {type: string}
                    name: {type: string}
            status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

/// A Rollout `name` in `namespace` whose pods read Secret `secret` through `envFrom`.
pub fn rollout(namespace: &str, name: &str, secret: &str) -> String {
    format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {{name: {name}, namespace: \
         {namespace}}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  strategy: \
         {{canary: {{steps: [{{setWeight: 20}}, {{pause: {{}}}}]}}}}\n  template:\n    \
         metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: {name}, image: \
         {name}, envFrom: [{{secretRef: {{name: {secret}}}}}]}}]}}\n"
    )
}
