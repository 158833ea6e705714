//! The API server's audit log as the tests' request log: an independent witness of every request
//! a component made (user, verb, resource, answer), the same facts the emulator's request log
//! records.

use std::path::Path;

use keysmith_emulator::LogEntry;
use serde::Deserialize;

/// Audit every request at `Metadata` level (who did what to which object, never a body, so no
/// Secret data reaches the file) except the control plane's own traffic and health probes (the
/// harness polls `/readyz`, answered 500 until the server is up).
pub const POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: None
    users: ["system:apiserver", "keysmith-testenv:controller-manager"]
  - level: None
    userGroups: ["system:serviceaccounts:kube-system"]
  - level: None
    nonResourceURLs: ["/readyz*", "/livez*", "/healthz*"]
  - level: Metadata
"#;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    stage: String,
    verb: String,
    #[serde(rename = "requestURI")]
    request_uri: String,
    user: User,
    #[serde(default)]
    object_ref: ObjectRef,
    #[serde(default)]
    response_status: ResponseStatus,
}

#[derive(Deserialize)]
struct User {
    username: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    api_group: String,
}

#[derive(Deserialize, Default)]
struct ResponseStatus {
    #[serde(default)]
    code: u16,
}

/// Every completed request recorded in the audit log at `path`, oldest first.
pub fn read(path: &Path) -> std::io::Result<Vec<LogEntry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    // The last line may be half written while the server appends; it is skipped until complete.
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<Event>(line).ok())
        .filter(|e| e.stage == "ResponseComplete")
        .map(|e| LogEntry {
            verb: e.verb,
            group: e.object_ref.api_group,
            resource: e.object_ref.resource,
            subresource: e.object_ref.subresource,
            namespace: e.object_ref.namespace,
            name: e.object_ref.name,
            user: e.user.username,
            code: e.response_status.code,
            path: e.request_uri,
        })
        .collect())
}
