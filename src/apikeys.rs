//! Watching ApiKeys one object at a time. A typed watch fails as a whole on a single object it
//! cannot deserialize (written before a schema change, or under another CRD version): the list
//! errors and is retried forever, so no other key is reconciled or verified. The controller and
//! the verifier both watch untyped objects and read each with [`Unreadables::read`], which
//! reports an unreadable one once per version and hands back only its metadata.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::Stream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::api::ApiKey;
use crate::scope::Scope;

/// A watched ApiKey, read.
#[derive(Debug)]
pub enum Watched {
    /// Deserialized.
    Readable(Box<ApiKey>),
    /// Not deserializable: only its metadata is known.
    Unreadable(Box<ObjectMeta>),
}

/// Watch the ApiKeys in `scope`, as untyped objects.
pub fn watch(
    client: Client,
    scope: &Scope,
) -> impl Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>> + Send + use<> {
    watcher(api(client, scope), scope.watcher_config())
}

/// The ApiKeys in `scope` as untyped objects, which read back whatever their spec holds.
pub fn api(client: Client, scope: &Scope) -> Api<DynamicObject> {
    scope.dynamic_api(client, &ApiResource::erase::<ApiKey>(&()))
}

/// The unreadable ApiKeys reported so far, by `namespace/name` with the resourceVersion
/// reported, and the count of reports (`<name>_total`).
#[derive(Clone)]
pub struct Unreadables {
    reported: Arc<Mutex<HashMap<String, String>>>,
    count: Counter,
}

impl Unreadables {
    /// Register the counter as `name` in `registry`.
    pub fn register(registry: &mut Registry, name: &str) -> Unreadables {
        let count = Counter::default();
        registry.register(
            name,
            "ApiKey versions that could not be deserialized and were skipped",
            count.clone(),
        );
        Unreadables {
            reported: Arc::default(),
            count,
        }
    }

    /// Read a listed or changed ApiKey. An unreadable one is logged and counted once per
    /// version (a relist sees it again), naming the field.
    pub fn read(&self, object: DynamicObject) -> Watched {
        let id = format!(
            "{}/{}",
            object.namespace().unwrap_or_default(),
            object.name_any()
        );
        let version = object.resource_version().unwrap_or_default();
        let metadata = object.metadata.clone();
        let parsed = serde_json::to_value(object).and_then(|value| {
            serde_path_to_error::deserialize(value).map_err(|e| {
                // Name the field (`spec.tokens`) with serde's reason.
                serde::de::Error::custom(format!("{}: {}", e.path(), e.inner()))
            })
        });
        match parsed {
            Ok(apikey) => {
                self.reported().remove(&id);
                Watched::Readable(Box::new(apikey))
            }
            Err(error) => {
                if self.reported().insert(id, version.clone()).as_ref() != Some(&version) {
                    self.count.inc();
                    tracing::warn!(namespace = %metadata.namespace.as_deref().unwrap_or_default(),
                        name = %metadata.name.as_deref().unwrap_or_default(), resource_version = %version,
                        error = %error, "ApiKey cannot be read; skipped until it is fixed");
                }
                Watched::Unreadable(Box::new(metadata))
            }
        }
    }

    /// Forget a deleted ApiKey.
    pub fn deleted(&self, metadata: &ObjectMeta) {
        let namespace = metadata.namespace.as_deref().unwrap_or_default();
        let name = metadata.name.as_deref().unwrap_or_default();
        self.reported().remove(&format!("{namespace}/{name}"));
    }

    fn reported(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // A poisoned map only decides whether to warn again.
        self.reported.lock().unwrap_or_else(|e| e.into_inner())
    }
}
