//! kubeconfig files pointing at the emulator, for kubectl, `keysmith`
//! processes and kube-rs clients alike.

use base64::Engine;

/// Render a kubeconfig with one cluster, one user (a bearer token) and one
/// context, `keysmith-emulator`, as the current context.
pub fn render(server_url: &str, ca_pem: Option<&str>, token: &str, namespace: &str) -> String {
    let ca = ca_pem
        .map(|pem| {
            format!(
                "    certificate-authority-data: {}\n",
                base64::engine::general_purpose::STANDARD.encode(pem)
            )
        })
        .unwrap_or_default();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: keysmith-emulator
  cluster:
    server: {server_url}
{ca}contexts:
- name: keysmith-emulator
  context:
    cluster: keysmith-emulator
    user: keysmith-emulator
    namespace: {namespace}
current-context: keysmith-emulator
users:
- name: keysmith-emulator
  user:
    token: {token:?}
"
    )
}
