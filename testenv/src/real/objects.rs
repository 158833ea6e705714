//! Fixtures on the real API server: server-side apply, get and list of any kind by
//! `apiVersion` and `kind`, resolved through discovery once per kind.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::discovery::{self, Scope};
use serde_json::Value;

use super::{RealCluster, RealError};

/// The field manager fixtures are applied with (force: fixtures win, as on the emulator).
const FIXTURES: &str = "keysmith-testenv-fixtures";

impl RealCluster {
    /// Server-side apply one object as the administrator; a CRD is waited for until established,
    /// so objects of its kind can follow at once.
    pub async fn apply_object(&self, obj: &Value) -> Result<Value, RealError> {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let api = self
            .dynamic(
                obj["apiVersion"].as_str().unwrap_or_default(),
                kind,
                obj["metadata"]["namespace"].as_str().or(Some("default")),
            )
            .await?;
        let applied = api
            .patch(
                name,
                &PatchParams::apply(FIXTURES).force(),
                &Patch::Apply(obj),
            )
            .await?;
        if kind == "CustomResourceDefinition" {
            self.wait_established(name).await?;
        }
        serde_json::to_value(applied).map_err(|e| RealError::Fixture(e.to_string()))
    }

    /// Read an object (`namespace` is ignored for cluster-scoped kinds).
    pub async fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, RealError> {
        let api = self.dynamic(api_version, kind, Some(namespace)).await?;
        let object = api.get_opt(name).await?;
        object
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| RealError::Fixture(e.to_string()))
    }

    /// Every object of a kind, optionally in one namespace.
    pub async fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>, RealError> {
        let api = self.dynamic(api_version, kind, namespace).await?;
        api.list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).map_err(|e| RealError::Fixture(e.to_string())))
            .collect()
    }

    /// The store's current revision: a list's resourceVersion is the newest one handed out.
    pub async fn resource_version(&self) -> Result<u64, RealError> {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> =
            Api::all(self.admin_client().await?);
        let list = namespaces
            .list_metadata(&ListParams::default().limit(1))
            .await?;
        list.metadata
            .resource_version
            .and_then(|rv| rv.parse().ok())
            .ok_or_else(|| RealError::Fixture("a list without a numeric resourceVersion".into()))
    }

    async fn dynamic(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Api<DynamicObject>, RealError> {
        let client = self.admin_client().await?;
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let cached = self
            .resources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&gvk)
            .cloned();
        let (resource, scope) = match cached {
            Some(found) => found,
            None => {
                let (resource, capabilities) = discovery::pinned_kind(&client, &gvk)
                    .await
                    .map_err(|e| RealError::Fixture(format!("{api_version} {kind}: {e}")))?;
                let found = (resource, capabilities.scope);
                self.resources
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(gvk, found.clone());
                found
            }
        };
        Ok(match (scope, namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client, ns, &resource),
            _ => Api::all_with(client, &resource),
        })
    }

    async fn wait_established(&self, name: &str) -> Result<(), RealError> {
        let crds: Api<CustomResourceDefinition> = Api::all(self.admin_client().await?);
        let established = |crd: &CustomResourceDefinition| {
            crd.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        };
        for _ in 0..300 {
            if crds.get_opt(name).await?.as_ref().is_some_and(established) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(RealError::Fixture(format!(
            "CRD {name} was not established within 30 s"
        )))
    }
}
