//! Connecting to the Kubernetes API server, with errors that say in one line what went wrong and
//! what to do (SPEC 2: "exits non-zero with one clear line when it cannot reach the API server or
//! lacks permissions").

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource};

/// Why a command cannot work with the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Neither a kubeconfig nor a pod's ServiceAccount is there to use.
    #[error(
        "no Kubernetes cluster configured: {looked}. Point keysmith at a cluster with \
         KUBECONFIG=PATH (`status` and `rotate` also take --kubeconfig PATH and --context NAME), \
         or run it in a pod, where it uses the pod's ServiceAccount"
    )]
    NotFound {
        /// What was looked for, and why none of it is there.
        looked: String,
    },
    /// A configuration is there but does not load.
    #[error("cannot load the Kubernetes client configuration: {0}")]
    Config(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// `--context` names a context the kubeconfig does not have.
    #[error("the kubeconfig has no context {context:?} (its contexts: {available})")]
    NoContext {
        /// The context asked for.
        context: String,
        /// The kubeconfig's contexts, comma-separated.
        available: String,
    },
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
    #[error("permission denied: cannot {verb} {resource}{scope}; {remedy} ({message})")]
    Forbidden {
        /// The verb.
        verb: String,
        /// `plural.group`.
        resource: String,
        /// ` in namespace NS` or empty.
        scope: String,
        /// What to get granted, for whoever ran the command.
        remedy: String,
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

/// Where a command finds its cluster, as kubectl does: `--kubeconfig` and `--context` when given,
/// else `KUBECONFIG`, else `~/.kube/config`, else the ServiceAccount of the pod it runs in.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// This kubeconfig file instead of `KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// This context of the kubeconfig instead of its current context.
    pub context: Option<String>,
}

impl Source {
    /// The client configuration this source names.
    async fn config(&self) -> Result<Config, ClusterError> {
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| ClusterError::Config(e);
        if self.kubeconfig.is_none() && self.context.is_none() {
            return Config::infer()
                .await
                .map_err(|e| nothing_configured(true).unwrap_or_else(|| failed(e.into())));
        }
        let kubeconfig = match &self.kubeconfig {
            Some(path) if !path.exists() => {
                let message = format!("--kubeconfig {}: no such file", path.display());
                return Err(failed(message.into()));
            }
            Some(path) => Kubeconfig::read_from(path).map_err(|e| failed(e.into()))?,
            // A context of the default kubeconfig: there is no pod to fall back to.
            None => Kubeconfig::read()
                .map_err(|e| nothing_configured(false).unwrap_or_else(|| failed(e.into())))?,
        };
        if let Some(context) = &self.context
            && !kubeconfig.contexts.iter().any(|c| &c.name == context)
        {
            let available: Vec<&str> = kubeconfig
                .contexts
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            return Err(ClusterError::NoContext {
                context: context.clone(),
                available: available.join(", "),
            });
        }
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| failed(e.into()))
    }
}

/// [`ClusterError::NotFound`] when there is nothing to load at all, saying what was looked for;
/// `None` when something is there, whose own load error then says what is wrong with it.
/// `with_pod`: whether a pod's ServiceAccount would do.
fn nothing_configured(with_pod: bool) -> Option<ClusterError> {
    let mut looked = Vec::new();
    let listed: Vec<PathBuf> = std::env::var_os("KUBECONFIG")
        .map(|value| {
            std::env::split_paths(&value)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    if listed.is_empty() {
        // kube reads ~/.kube/config only when KUBECONFIG names no file.
        match std::env::home_dir() {
            Some(home) => {
                let path = home.join(".kube").join("config");
                if path.exists() {
                    return None;
                }
                looked.push(format!(
                    "KUBECONFIG is not set and {} does not exist",
                    path.display()
                ));
            }
            None => looked.push("KUBECONFIG is not set and there is no home directory".into()),
        }
    } else {
        if listed.iter().any(|p| p.exists()) {
            return None;
        }
        let names: Vec<String> = listed.iter().map(|p| p.display().to_string()).collect();
        looked.push(format!(
            "KUBECONFIG names no existing file ({})",
            names.join(", ")
        ));
    }
    if with_pod {
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|h| !h.is_empty()) {
            return None;
        }
        looked.push("KUBERNETES_SERVICE_HOST is not set, so this is not a pod".into());
    }
    Some(ClusterError::NotFound {
        looked: looked.join("; "),
    })
}

/// Whether a client retries answers that say "later" (429, 503, 504).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retries {
    /// kube's server-aware backoff: up to 15 attempts over minutes, honouring `Retry-After`.
    /// Right for components, which outlive an API server's restart.
    Server,
    /// None: the caller sees the first answer. For a command reading an aggregated API, whose
    /// backend being down is a 503 that retrying for minutes would only hide.
    Never,
}

/// A client from the kubeconfig or the pod's ServiceAccount, checked to reach the server.
pub async fn connect() -> Result<Client, ClusterError> {
    connect_to(&Source::default(), Retries::Server).await
}

/// A client from `source`, checked to reach the server.
pub async fn connect_to(source: &Source, retries: Retries) -> Result<Client, ClusterError> {
    let mut config = source.config().await?;
    config.default_retry = retries == Retries::Server;
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| ClusterError::Config(e.into()))?;
    // Ask the server for its version: the cheapest request that proves it answers.
    client
        .apiserver_version()
        .await
        .map_err(|source| ClusterError::Unreachable {
            url: url.trim_end_matches('/').to_owned(),
            source,
        })?;
    Ok(client)
}

/// What a Keysmith component refused by RBAC needs: the chart binds its rules to it.
pub const CHART_RULES: &str = "grant the RBAC rules of the Keysmith chart";

/// A kube error as a [`ClusterError`], naming the resource and `remedy` when RBAC refused.
pub fn classify<K: Resource<DynamicType = ()>>(
    error: kube::Error,
    verb: &str,
    namespace: Option<&str>,
    remedy: &str,
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
            remedy: remedy.to_owned(),
            message: status.message,
        },
        source => ClusterError::Api {
            action: format!("{verb} {resource}"),
            source,
        },
    }
}
