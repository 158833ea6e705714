//! Which ApiKeys a process handles (`--namespace`, `--selector`): the one place that turns a
//! scope into API handles and watch settings, and the one start-up check that the scope may be
//! listed, shared by the controller and the verifier.

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use kube::{Client, Resource};

use crate::api::{ApiKey, MANAGED_BY, MANAGED_BY_LABEL};
use crate::cluster::{self, ClusterError};

/// ApiKeys in one namespace or all, optionally only those matching a label selector (sharding).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Only this namespace; `None`: all.
    pub namespace: Option<String>,
    /// Only ApiKeys matching this label selector.
    pub selector: Option<String>,
}

impl Scope {
    /// Everything in `namespace`, unfiltered.
    pub fn namespace(namespace: &str) -> Scope {
        Scope {
            namespace: Some(namespace.to_owned()),
            selector: None,
        }
    }

    /// Objects of kind `K` in the scope's namespace, or in all namespaces.
    pub fn api<K>(&self, client: Client) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }

    /// A watch of the ApiKeys in scope: the selector, if any, filters on the server.
    pub fn watcher_config(&self) -> watcher::Config {
        let config = watcher::Config::default();
        match &self.selector {
            Some(selector) => config.labels(selector),
            None => config,
        }
    }

    /// Check that the ApiKeys in scope may be listed (with the selector the watch will use), so a
    /// missing CRD, a wrong kubeconfig or a missing permission is one clear line at start-up
    /// rather than a retry loop.
    pub async fn check_list(&self, client: Client) -> Result<(), ClusterError> {
        let mut params = ListParams::default().limit(1);
        if let Some(selector) = &self.selector {
            params = params.labels(selector);
        }
        self.api::<ApiKey>(client)
            .list_metadata(&params)
            .await
            .map(drop)
            .map_err(|e| {
                let namespace = self.namespace.as_deref();
                cluster::classify::<ApiKey>(e, "list", namespace, cluster::CHART_RULES)
            })
    }

    /// With `--access-lists`: check that Keysmith's Roles in scope may be listed, so a
    /// controller started with the flag but without the rights that go with it says so at once.
    pub async fn check_access_lists(&self, client: Client) -> Result<(), ClusterError> {
        type Role = k8s_openapi::api::rbac::v1::Role;
        let params = ListParams::default()
            .limit(1)
            .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
        self.api::<Role>(client)
            .list_metadata(&params)
            .await
            .map(drop)
            .map_err(|e| {
                let namespace = self.namespace.as_deref();
                cluster::classify::<Role>(e, "list", namespace, ACCESS_LIST_RULES)
            })
    }
}

/// What grants the controller its rights on Roles and RoleBindings.
const ACCESS_LIST_RULES: &str = "install Keysmith with accessLists.enabled=true (it grants the rules of files/controller-access-rules.yaml), or start the controller without --access-lists";
