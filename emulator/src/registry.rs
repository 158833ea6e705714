//! The kinds the server can serve: the built-in resources Keysmith, kubectl
//! and the verifier touch, plus one entry per served version of every
//! CustomResourceDefinition stored in the server (creating a CRD makes its
//! resource servable, deleting it withdraws it, as in Kubernetes).

use std::sync::Arc;

use serde_json::Value;

use crate::cel::Rules;

/// A (group, plural) pair: the storage identity of a resource, shared by all
/// its versions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    /// API group, empty for core.
    pub group: String,
    /// Plural resource name.
    pub resource: String,
}

impl GroupResource {
    /// Build from borrowed parts.
    pub fn new(group: &str, resource: &str) -> Self {
        GroupResource {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }
}

/// One `additionalPrinterColumns` entry of a CRD version.
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean`, `date`.
    pub type_: String,
    /// Optional format hint.
    pub format: String,
    /// Column description.
    pub description: String,
    /// 0 is shown by default; higher only with `-o wide`.
    pub priority: i64,
    /// Simple JSONPath, e.g. `.status.conditions[?(@.type=="Ready")].status`.
    pub json_path: String,
}

/// What a CRD adds to a served kind: schema, printer columns, CRD name.
/// Rebuilt whenever the CRD object is written, which keeps the compiled CEL
/// rules in step with the schema they came from.
#[derive(Debug)]
pub struct CrdInfo {
    /// `metadata.name` of the CustomResourceDefinition.
    pub crd_name: String,
    /// `schema.openAPIV3Schema` of this version, if any.
    pub schema: Option<Value>,
    /// The schema's CEL rules, compiled (present with `schema`).
    pub rules: Option<Rules>,
    /// `additionalPrinterColumns` of this version.
    pub printer_columns: Vec<PrinterColumn>,
}

/// Where a served kind's objects are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Under its own group and plural; its versions differ only in `apiVersion`.
    Own,
    /// As core `v1` Events: the API server stores Events once and serves them through both
    /// `v1` and `events.k8s.io/v1`, converting field by field (see `events.rs`).
    CoreEvents,
}

/// A servable kind at one group/version.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group, empty for core.
    pub group: String,
    /// API version within the group.
    pub version: String,
    /// Plural name used in URLs.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names for kubectl (`ak`, `deploy`, ...).
    pub short_names: Vec<String>,
    /// Categories (`all`, ...).
    pub categories: Vec<String>,
    /// Whether a `/status` subresource exists (spec and status written separately).
    pub status_subresource: bool,
    /// Whether `metadata.generation` is maintained.
    pub has_generation: bool,
    /// Create-only review kinds (SelfSubjectAccessReview, ...): never stored.
    pub virtual_create_only: bool,
    /// Whether this version is the preferred one of its group.
    pub preferred: bool,
    /// Present for kinds defined by a CRD.
    pub crd: Option<Arc<CrdInfo>>,
    /// Where its objects are stored.
    pub storage: Storage,
}

impl ResourceType {
    /// The storage identity, shared by every view of the same objects.
    pub fn group_resource(&self) -> GroupResource {
        match self.storage {
            Storage::Own => GroupResource::new(&self.group, &self.plural),
            Storage::CoreEvents => GroupResource::new("", "events"),
        }
    }

    /// `apiVersion` as written in objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Verbs advertised in discovery.
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.virtual_create_only {
            vec!["create"]
        } else {
            vec![
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }

    /// Whether this kind understands strategic merge patch (built-ins only,
    /// as in Kubernetes, where custom resources answer 415).
    pub fn supports_strategic_merge(&self) -> bool {
        self.crd.is_none()
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    status: bool,
    generation: bool,
}

/// A namespaced built-in kind with no short names, status subresource or generation; the
/// methods below add those, so the table reads one kind a line.
const fn kind(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
) -> Builtin {
    Builtin {
        group,
        version,
        plural,
        kind,
        namespaced: true,
        short_names: &[],
        status: false,
        generation: false,
    }
}

impl Builtin {
    const fn cluster_scoped(mut self) -> Self {
        self.namespaced = false;
        self
    }

    const fn short(mut self, names: &'static [&'static str]) -> Self {
        self.short_names = names;
        self
    }

    /// A `/status` subresource: spec and status are written separately.
    const fn status(mut self) -> Self {
        self.status = true;
        self
    }

    /// `metadata.generation` is maintained.
    const fn generation(mut self) -> Self {
        self.generation = true;
        self
    }
}

const BUILTINS: &[Builtin] = &[
    kind("", "v1", "namespaces", "Namespace")
        .cluster_scoped()
        .short(&["ns"])
        .status(),
    kind("", "v1", "secrets", "Secret"),
    kind("", "v1", "configmaps", "ConfigMap").short(&["cm"]),
    kind("", "v1", "events", "Event").short(&["ev"]),
    kind("", "v1", "serviceaccounts", "ServiceAccount").short(&["sa"]),
    kind("", "v1", "pods", "Pod").short(&["po"]).status(),
    kind("", "v1", "services", "Service")
        .short(&["svc"])
        .status(),
    kind("apps", "v1", "deployments", "Deployment")
        .short(&["deploy"])
        .status()
        .generation(),
    kind("apps", "v1", "statefulsets", "StatefulSet")
        .short(&["sts"])
        .status()
        .generation(),
    kind("apps", "v1", "daemonsets", "DaemonSet")
        .short(&["ds"])
        .status()
        .generation(),
    kind("apps", "v1", "replicasets", "ReplicaSet")
        .short(&["rs"])
        .status()
        .generation(),
    kind("coordination.k8s.io", "v1", "leases", "Lease"),
    kind("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    kind("apiregistration.k8s.io", "v1", "apiservices", "APIService")
        .cluster_scoped()
        .status(),
    kind("events.k8s.io", "v1", "events", "Event").short(&["ev"]),
    kind(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
    )
    .cluster_scoped()
    .short(&["crd", "crds"])
    .status()
    .generation(),
    kind("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
    )
    .cluster_scoped(),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
    )
    .cluster_scoped(),
];

/// Review kinds: POST-only, answered from the request and never stored.
const REVIEWS: &[(&str, &str, &str, bool)] = &[
    (
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
    ),
    (
        "authorization.k8s.io",
        "subjectaccessreviews",
        "SubjectAccessReview",
        false,
    ),
    (
        "authorization.k8s.io",
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        true,
    ),
    (
        "authentication.k8s.io",
        "selfsubjectreviews",
        "SelfSubjectReview",
        false,
    ),
    (
        "authentication.k8s.io",
        "tokenreviews",
        "TokenReview",
        false,
    ),
];

/// Built-in kinds plus CRD-defined kinds.
#[derive(Debug, Clone)]
pub struct Registry {
    builtins: Vec<ResourceType>,
    crd_types: Vec<ResourceType>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// The built-in kinds only.
    pub fn new() -> Self {
        let mut builtins: Vec<ResourceType> = BUILTINS
            .iter()
            .map(|b| ResourceType {
                group: b.group.into(),
                version: b.version.into(),
                plural: b.plural.into(),
                singular: b.kind.to_lowercase(),
                kind: b.kind.into(),
                namespaced: b.namespaced,
                short_names: b.short_names.iter().map(|s| s.to_string()).collect(),
                categories: match b.plural {
                    "pods" | "services" | "deployments" | "statefulsets" | "daemonsets"
                    | "replicasets" => vec!["all".into()],
                    _ => vec![],
                },
                status_subresource: b.status,
                has_generation: b.generation,
                virtual_create_only: false,
                preferred: true,
                crd: None,
                storage: match (b.group, b.plural) {
                    ("events.k8s.io", "events") => Storage::CoreEvents,
                    _ => Storage::Own,
                },
            })
            .collect();
        builtins.extend(
            REVIEWS
                .iter()
                .map(|(group, plural, kind, namespaced)| ResourceType {
                    group: group.to_string(),
                    version: "v1".into(),
                    plural: plural.to_string(),
                    singular: kind.to_lowercase(),
                    kind: kind.to_string(),
                    namespaced: *namespaced,
                    short_names: vec![],
                    categories: vec![],
                    status_subresource: false,
                    has_generation: false,
                    virtual_create_only: true,
                    preferred: true,
                    crd: None,
                    storage: Storage::Own,
                }),
        );
        Registry {
            builtins,
            crd_types: Vec::new(),
        }
    }

    /// Every servable kind.
    pub fn all(&self) -> impl Iterator<Item = &ResourceType> {
        self.builtins.iter().chain(self.crd_types.iter())
    }

    /// Look up a kind by group, version and plural.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.all()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Look up a kind by `apiVersion` and `kind` (for YAML fixtures).
    pub fn lookup_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceType> {
        let (group, version) = split_api_version(api_version);
        self.all()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
    }

    /// Replace the kinds defined by one CRD with those its current object declares.
    pub fn set_crd(&mut self, crd: &Value) {
        let name = crd["metadata"]["name"].as_str().unwrap_or_default();
        self.remove_crd(name);
        self.crd_types.extend(types_from_crd(crd));
    }

    /// Withdraw the kinds of a deleted CRD.
    pub fn remove_crd(&mut self, crd_name: &str) {
        self.crd_types
            .retain(|r| r.crd.as_ref().is_none_or(|c| c.crd_name != crd_name));
    }

    /// Group names with their versions, in registration order, for discovery.
    pub fn groups(&self) -> Vec<(String, Vec<String>, String)> {
        let mut out: Vec<(String, Vec<String>, String)> = Vec::new();
        for r in self.all().filter(|r| !r.group.is_empty()) {
            match out.iter_mut().find(|(g, _, _)| *g == r.group) {
                Some((_, versions, preferred)) => {
                    if !versions.contains(&r.version) {
                        versions.push(r.version.clone());
                    }
                    if r.preferred {
                        *preferred = r.version.clone();
                    }
                }
                None => out.push((r.group.clone(), vec![r.version.clone()], r.version.clone())),
            }
        }
        out
    }

    /// Kinds served at one group/version.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<&ResourceType> {
        self.all()
            .filter(|r| r.group == group && r.version == version)
            .collect()
    }
}

/// Split `group/version` (or a bare core `version`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn types_from_crd(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let crd_name = crd["metadata"]["name"].as_str().unwrap_or_default();
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = names["plural"].as_str().unwrap_or_default();
    let kind = names["kind"].as_str().unwrap_or_default();
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage = versions
        .iter()
        .find(|v| v["storage"].as_bool() == Some(true))
        .and_then(|v| v["name"].as_str())
        .unwrap_or_default()
        .to_string();
    versions
        .iter()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .map(|v| {
            let printer_columns = v["additionalPrinterColumns"]
                .as_array()
                .map(|cols| {
                    cols.iter()
                        .map(|c| PrinterColumn {
                            name: c["name"].as_str().unwrap_or_default().into(),
                            type_: c["type"].as_str().unwrap_or("string").into(),
                            format: c["format"].as_str().unwrap_or_default().into(),
                            description: c["description"].as_str().unwrap_or_default().into(),
                            priority: c["priority"].as_i64().unwrap_or(0),
                            json_path: c["jsonPath"].as_str().unwrap_or_default().into(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let version = v["name"].as_str().unwrap_or_default().to_string();
            let schema = v["schema"]["openAPIV3Schema"]
                .is_object()
                .then(|| v["schema"]["openAPIV3Schema"].clone());
            ResourceType {
                group: group.into(),
                preferred: version == storage,
                version,
                plural: plural.into(),
                singular: names["singular"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| kind.to_lowercase()),
                kind: kind.into(),
                namespaced: spec["scope"].as_str() != Some("Cluster"),
                short_names: strings(&names["shortNames"]),
                categories: strings(&names["categories"]),
                status_subresource: v["subresources"]["status"].is_object(),
                has_generation: true,
                virtual_create_only: false,
                crd: Some(Arc::new(CrdInfo {
                    crd_name: crd_name.into(),
                    rules: schema.as_ref().map(Rules::compile),
                    schema,
                    printer_columns,
                })),
                storage: Storage::Own,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crd_versions_become_servable_and_are_withdrawn() {
        let mut reg = Registry::new();
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [{"name": "v1", "served": true, "storage": true,
                              "subresources": {"status": {}}}]
            }
        });
        reg.set_crd(&crd);
        let t = reg.lookup("example.com", "v1", "widgets").expect("served");
        assert!(t.status_subresource && t.namespaced && t.preferred);
        assert_eq!(t.short_names, vec!["wd"]);
        reg.remove_crd("widgets.example.com");
        assert!(reg.lookup("example.com", "v1", "widgets").is_none());
    }
}
