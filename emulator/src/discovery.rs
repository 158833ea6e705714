//! Discovery documents: `/api`, `/apis`, `/apis/GROUP`, the per-version
//! resource lists, and `/version`. Only the legacy (unaggregated) forms are
//! served; clients asking for aggregated discovery fall back to them on the
//! `application/json` content type, as they do with older servers.
//!
//! `/version` and the resource lists use k8s-openapi's types; the group lists
//! and `/api` stay JSON built here, because those types always write
//! `apiVersion`/`kind` where the API server writes none (on `/api`, and on
//! each group of `/apis`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIResource, APIResourceList};
use k8s_openapi::apimachinery::pkg::version::Info;
use serde_json::{Value, json};

use crate::registry::{Registry, ResourceType};

/// `/version`.
pub fn version() -> Value {
    to_value(Info {
        major: "1".into(),
        minor: "32".into(),
        git_version: "v1.32.0-keysmith-emulator".into(),
        git_commit: "0000000000000000000000000000000000000000".into(),
        git_tree_state: "clean".into(),
        build_date: "2026-01-01T00:00:00Z".into(),
        go_version: "go1.23.0".into(),
        compiler: "gc".into(),
        platform: "linux/amd64".into(),
        ..Default::default()
    })
}

fn to_value(document: impl serde::Serialize) -> Value {
    serde_json::to_value(document).expect("discovery documents serialize")
}

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_json(name: &str, versions: &[String], preferred: &str) -> Value {
    json!({
        "name": name,
        "versions": versions.iter().map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v})).collect::<Vec<_>>(),
        "preferredVersion": {"groupVersion": format!("{name}/{preferred}"), "version": preferred},
    })
}

/// The groups served here, then those of `aggregated` (group, version) pairs that APIServices
/// hand to extension API servers.
fn all_groups(
    reg: &Registry,
    aggregated: &[(String, String)],
) -> Vec<(String, Vec<String>, String)> {
    let mut groups = reg.groups();
    for (group, version) in aggregated {
        match groups.iter_mut().find(|(g, _, _)| g == group) {
            Some((_, versions, _)) if !versions.contains(version) => versions.push(version.clone()),
            Some(_) => {}
            None => groups.push((group.clone(), vec![version.clone()], version.clone())),
        }
    }
    groups
}

/// `/apis`.
pub fn group_list(reg: &Registry, aggregated: &[(String, String)]) -> Value {
    let groups: Vec<Value> = all_groups(reg, aggregated)
        .iter()
        .map(|(g, versions, preferred)| group_json(g, versions, preferred))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/GROUP`.
pub fn group(reg: &Registry, aggregated: &[(String, String)], name: &str) -> Option<Value> {
    all_groups(reg, aggregated)
        .into_iter()
        .find(|(g, _, _)| g == name)
        .map(|(g, versions, preferred)| {
            let mut v = group_json(&g, &versions, &preferred);
            v["kind"] = json!("APIGroup");
            v["apiVersion"] = json!("v1");
            v
        })
}

fn resource(rt: &ResourceType) -> APIResource {
    let given = |names: &Vec<String>| Some(names.clone()).filter(|n| !n.is_empty());
    APIResource {
        name: rt.plural.clone(),
        singular_name: rt.singular.clone(),
        namespaced: rt.namespaced,
        kind: rt.kind.clone(),
        verbs: rt.verbs().into_iter().map(String::from).collect(),
        short_names: given(&rt.short_names),
        categories: given(&rt.categories),
        ..Default::default()
    }
}

/// `/api/v1` or `/apis/GROUP/VERSION`.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = reg.in_group_version(group, version);
    if types.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for rt in types {
        resources.push(resource(rt));
        if rt.status_subresource {
            resources.push(APIResource {
                name: format!("{}/status", rt.plural),
                namespaced: rt.namespaced,
                kind: rt.kind.clone(),
                verbs: ["get", "patch", "update"].map(String::from).to_vec(),
                ..Default::default()
            });
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(to_value(APIResourceList {
        group_version,
        resources,
    }))
}
