//! Connecting to the Kubernetes API server, with errors that say in one line what went wrong and
//! what to do (SPEC 2: "exits non-zero with one clear line when it cannot reach the API server or
//! lacks permissions").

use kube::api::ListParams;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// Why a command cannot work with the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No kubeconfig and not in a pod.
    #[error("cannot load a Kubernetes client configuration (set KUBECONFIG or run in a pod): {0}")]
    Config(#[source] kube::Error),
    /// The API server did not answer.
    #[error("cannot reach the Kubernetes API server at {url}: {source}")]
    Unreachable {
        /// Server URL from the configuration.
        url: String,
        /// What failed.
        #[source]
        source: kube::Error,
    },
    /// RBAC denied a request this command needs.
    #[error(
        "permission denied: cannot {verb} {resource}{scope}; grant the RBAC rules of the Keysmith chart ({message})"
    )]
    Forbidden {
        /// The verb.
        verb: String,
        /// `plural.group`.
        resource: String,
        /// ` in namespace NS` or empty.
        scope: String,
        /// The API server's message.
        message: String,
    },
    /// Any other API error.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
}

/// A client from the kubeconfig or the in-cluster environment, checked to reach the server.
pub async fn connect() -> Result<Client, ClusterError> {
    let client = Client::try_default().await.map_err(ClusterError::Config)?;
    check_reachable(&client).await?;
    Ok(client)
}

/// Ask the server for its version: the cheapest request that proves it answers.
pub async fn check_reachable(client: &Client) -> Result<(), ClusterError> {
    client
        .apiserver_version()
        .await
        .map(drop)
        .map_err(|source| ClusterError::Unreachable {
            url: server_url(),
            source,
        })
}

/// The server URL of the current kubeconfig context, for messages.
fn server_url() -> String {
    kube::config::Kubeconfig::read()
        .ok()
        .and_then(|kc| {
            let context = kc.current_context.clone()?;
            let cluster = kc
                .contexts
                .iter()
                .find(|c| c.name == context)?
                .context
                .as_ref()?
                .cluster
                .clone();
            kc.clusters
                .iter()
                .find(|c| c.name == cluster)?
                .cluster
                .as_ref()?
                .server
                .clone()
        })
        .or_else(|| {
            let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
            let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
            Some(format!("https://{host}:{port}"))
        })
        .unwrap_or_else(|| "(unknown server)".to_owned())
}

/// Check that `api` may be listed, turning a 403 into a message naming the resource.
pub async fn check_list<K>(api: &Api<K>, namespace: Option<&str>) -> Result<(), ClusterError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    api.list_metadata(&ListParams::default().limit(1))
        .await
        .map(drop)
        .map_err(|e| classify::<K>(e, "list", namespace))
}

/// A kube error as a [`ClusterError`], naming the resource when RBAC refused.
pub fn classify<K: Resource<DynamicType = ()>>(
    error: kube::Error,
    verb: &str,
    namespace: Option<&str>,
) -> ClusterError {
    let resource = match K::group(&()).as_ref() {
        "" => K::plural(&()).into_owned(),
        group => format!("{}.{group}", K::plural(&())),
    };
    match error {
        kube::Error::Api(status) if status.is_forbidden() => ClusterError::Forbidden {
            verb: verb.to_owned(),
            resource,
            scope: namespace.map_or_else(String::new, |ns| format!(" in namespace {ns}")),
            message: status.message,
        },
        source => ClusterError::Api {
            action: format!("{verb} {resource}"),
            source,
        },
    }
}
