//! Watching ApiKeys one object at a time. A typed watch fails as a whole on a single object it
//! cannot deserialize (written before a schema change, or under another CRD version): the list
//! errors and is retried forever, so no other key is reconciled or verified. The controller and
//! the verifier both watch [`ListedApiKey`]s, whose spec and status stay raw JSON until
//! [`Unreadables::read`] reads them; it reports an unreadable one once per version and hands back
//! only its metadata.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::Stream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::Api;
use kube::runtime::watcher;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde::de::{
    DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess,
    Visitor,
};
use serde_json::value::RawValue;

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

/// An ApiKey as listed or watched: its metadata typed, without `managedFields` (nothing that
/// watches ApiKeys reads them, and with their free-form `fieldsV1` they were a quarter of the
/// verifier's start-up at 100,000 keys), its spec and status raw JSON until
/// [`Unreadables::read`] reads them, so that one unreadable key does not fail the whole list.
#[derive(Debug, Clone, Deserialize)]
pub struct ListedApiKey {
    /// The object's metadata, `managedFields` left out.
    #[serde(deserialize_with = "skip_managed_fields")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<Box<RawValue>>,
    #[serde(default)]
    status: Option<Box<RawValue>>,
}

/// Implement kube's `Resource` for a partial view of an ApiKey (a struct with a `metadata`
/// field): the ApiKey's kind, group, version and plural, and the view's own metadata.
macro_rules! apikey_view_resource {
    ($view:ty) => {
        impl ::kube::Resource for $view {
            type DynamicType = ();
            type Scope = ::k8s_openapi::NamespaceResourceScope;

            fn kind(dt: &()) -> ::std::borrow::Cow<'_, str> {
                <::keysmith_core::api::ApiKey as ::kube::Resource>::kind(dt)
            }
            fn group(dt: &()) -> ::std::borrow::Cow<'_, str> {
                <::keysmith_core::api::ApiKey as ::kube::Resource>::group(dt)
            }
            fn version(dt: &()) -> ::std::borrow::Cow<'_, str> {
                <::keysmith_core::api::ApiKey as ::kube::Resource>::version(dt)
            }
            fn plural(dt: &()) -> ::std::borrow::Cow<'_, str> {
                <::keysmith_core::api::ApiKey as ::kube::Resource>::plural(dt)
            }
            fn meta(&self) -> &::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(
                &mut self,
            ) -> &mut ::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
pub(crate) use apikey_view_resource;

apikey_view_resource!(ListedApiKey);

/// Watch the ApiKeys in `scope`.
pub fn watch(
    client: Client,
    scope: &Scope,
) -> impl Stream<Item = Result<watcher::Event<ListedApiKey>, watcher::Error>> + Send + use<> {
    watcher(api(client, scope), scope.watcher_config())
}

/// The ApiKeys in `scope`, read back whatever their spec holds.
pub fn api(client: Client, scope: &Scope) -> Api<ListedApiKey> {
    scope.api(client)
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
    pub fn read(&self, object: ListedApiKey) -> Watched {
        match typed(object) {
            Ok(apikey) => {
                let mut reported = self.reported();
                // Nearly always empty: then a listed key costs no name to look up.
                if !reported.is_empty() {
                    reported.remove(&id(&apikey.metadata));
                }
                Watched::Readable(apikey)
            }
            Err((metadata, error)) => {
                let version = metadata.resource_version.clone().unwrap_or_default();
                if self
                    .reported()
                    .insert(id(&metadata), version.clone())
                    .as_ref()
                    != Some(&version)
                {
                    self.count.inc();
                    tracing::warn!(namespace = %metadata.namespace.as_deref().unwrap_or_default(),
                        name = %metadata.name.as_deref().unwrap_or_default(), resource_version = %version,
                        error = %error, "ApiKey cannot be read; skipped until it is fixed");
                }
                Watched::Unreadable(metadata)
            }
        }
    }

    /// Forget a deleted ApiKey.
    pub fn deleted(&self, metadata: &ObjectMeta) {
        self.reported().remove(&id(metadata));
    }

    fn reported(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // A poisoned map only decides whether to warn again.
        self.reported.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `namespace/name`, the key of [`Unreadables`]' map.
fn id(metadata: &ObjectMeta) -> String {
    let namespace = metadata.namespace.as_deref().unwrap_or_default();
    let name = metadata.name.as_deref().unwrap_or_default();
    format!("{namespace}/{name}")
}

/// The ApiKey a listed one holds, or its metadata back and the error naming the field
/// (`spec.tokens[0].name: ...`).
fn typed(object: ListedApiKey) -> Result<Box<ApiKey>, (Box<ObjectMeta>, String)> {
    let ListedApiKey {
        metadata,
        spec,
        status,
    } = object;
    let parsed = field("spec", spec).and_then(|spec| Ok((spec, field("status", status)?)));
    match parsed {
        Ok((spec, status)) => Ok(Box::new(ApiKey {
            metadata,
            spec,
            status,
        })),
        Err(error) => Err((Box::new(metadata), error)),
    }
}

/// Deserialize the part `name` of an object (absent reads as `null`), naming the field that
/// failed. Tracking the path slows every parse, so only a failed one is parsed again with it.
fn field<T: DeserializeOwned>(name: &str, raw: Option<Box<RawValue>>) -> Result<T, String> {
    let json = raw.as_deref().map_or("null", RawValue::get);
    serde_json::from_str(json).map_err(|error| {
        let mut deserializer = serde_json::Deserializer::from_str(json);
        match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
            Err(e) if e.path().to_string() != "." => format!("{name}.{}: {}", e.path(), e.inner()),
            _ => format!("{name}: {error}"),
        }
    })
}

/// Deserialize an [`ObjectMeta`] without its `managedFields`, skipped unparsed.
fn skip_managed_fields<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    ObjectMeta::deserialize(Skipping {
        inner: deserializer,
        key: "managedFields",
    })
}

/// A deserializer of a map or struct that leaves out the entry `key`, unparsed.
struct Skipping<D> {
    inner: D,
    key: &'static str,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Skipping<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_map(Skipping {
            inner: visitor,
            key: self.key,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Skipping<V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        self.inner.expecting(formatter)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(Skipping {
            inner: map,
            key: self.key,
        })
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Skipping<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(key) = self.inner.next_key::<String>()? {
            if key != self.key {
                return seed.deserialize(key.into_deserializer()).map(Some);
            }
            self.inner.next_value::<IgnoredAny>()?;
        }
        Ok(None)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.next_value_seed(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// ApiKey `shop/site` at resourceVersion 7 with `data` (spec, status) as the API lists it.
    fn listed(data: Value) -> ListedApiKey {
        let mut object = json!({
            "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "site", "namespace": "shop", "resourceVersion": "7"},
        });
        object
            .as_object_mut()
            .unwrap()
            .extend(data.as_object().unwrap().clone());
        serde_json::from_value(object).unwrap()
    }

    fn unreadables() -> Unreadables {
        Unreadables::register(&mut Registry::default(), "unreadable_apikeys")
    }

    #[test]
    fn reads_as_a_typed_deserialization_would_without_managed_fields() {
        let metadata = json!({
            "name": "site", "namespace": "shop", "resourceVersion": "7", "generation": 3,
            "uid": "u-1", "labels": {"team": "web"}, "annotations": {"a": "b"},
            "finalizers": ["keysmith.dev/revoke"], "creationTimestamp": "2026-01-01T00:00:00Z",
            "deletionTimestamp": "2026-01-02T00:00:00Z", "deletionGracePeriodSeconds": 0,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "u-2"}],
            "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:tokens": {}}}}],
        });
        let mut whole = json!({
            "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey", "metadata": metadata,
            "spec": {"tokens": [{"name": "primary", "prefix": "shop_"}], "environment": "live"},
            "status": {"secretName": "site", "tokens": [{"name": "primary", "id": "shop_a",
                "sha256": "00", "issuedAt": "2026-01-01T00:00:00Z"}]},
        });
        let object: ListedApiKey = serde_json::from_value(whole.clone()).unwrap();
        let Watched::Readable(apikey) = unreadables().read(object) else {
            panic!("readable");
        };
        whole["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        assert_eq!(*apikey, serde_json::from_value::<ApiKey>(whole).unwrap());
        assert_eq!(apikey.metadata.generation, Some(3));
        assert!(apikey.status.is_some());
    }

    #[test]
    fn a_key_without_status_reads_with_none() {
        let data = json!({"spec": {"tokens": [{"name": "primary", "prefix": "shop_"}]}});
        let Watched::Readable(apikey) = unreadables().read(listed(data)) else {
            panic!("readable");
        };
        assert_eq!(apikey.status, None);
        assert_eq!(apikey.spec.tokens[0].name, "primary");
    }

    #[test]
    fn errors_name_the_field_in_spec_or_status() {
        let cases = [
            (
                json!({"spec": {"tokens": "oops"}}),
                "spec.tokens: invalid type",
            ),
            (json!({}), "spec: invalid type: null"),
            (
                json!({"spec": {"tokens": [{"name": "primary", "prefix": "shop_"}]},
                       "status": {"tokens": [{"name": 5}]}}),
                "status.tokens[0].name: invalid type",
            ),
        ];
        for (data, expected) in cases {
            let object = listed(data);
            let metadata = object.metadata.clone();
            let Err((back, error)) = typed(object) else {
                panic!("{expected}: read");
            };
            assert!(error.starts_with(expected), "{error:?} for {expected:?}");
            assert_eq!(*back, metadata);
        }
    }

    #[test]
    fn an_unreadable_key_is_counted_once_per_version_and_again_after_deletion() {
        let unreadables = unreadables();
        let broken = || listed(json!({"spec": {"tokens": "oops"}}));
        let Watched::Unreadable(metadata) = unreadables.read(broken()) else {
            panic!("unreadable");
        };
        assert_eq!(metadata.name.as_deref(), Some("site"));
        unreadables.read(broken());
        assert_eq!(unreadables.count.get(), 1);
        let mut changed = broken();
        changed.metadata.resource_version = Some("8".into());
        unreadables.read(changed);
        assert_eq!(unreadables.count.get(), 2);
        unreadables.deleted(&metadata);
        unreadables.read(broken());
        assert_eq!(unreadables.count.get(), 3);
    }
}
