//! The writes of `spec.publish` ([`planner::publish`]): the key's published Secrets (server-side
//! apply, field manager `keysmith`), its entries in a consenting KongConsumer's `credentials`
//! (server-side apply, field manager [`KONG_FIELD_MANAGER`]), and the deletion of published
//! Secrets no longer wanted, in the order that never lets a gateway see a credential name
//! without its Secret: create and update Secrets, then the consumer's list, then delete.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use keysmith_core::api::{APIKEY_LABEL, ApiKey, KONG_CONSUMER_ANNOTATION, PUBLISHED_FOR_LABEL};
use keysmith_core::planner::publish::{self, KongCredentials, Publication};

use super::{Error, apply};

/// Field manager of the KongConsumer `credentials` list. Kong's CRD declares the list without a
/// list type, so it is atomic: whoever applies it owns all of it. Keysmith applies the whole list
/// it read, other writers' entries included, with the consumer's resourceVersion, so a
/// concurrent change fails the write (and is retried) instead of being lost.
pub const KONG_FIELD_MANAGER: &str = "keysmith-kong";

/// KongConsumer, `configuration.konghq.com/v1`.
fn kong_consumers(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: "configuration.konghq.com".into(),
        version: "v1".into(),
        api_version: "configuration.konghq.com/v1".into(),
        kind: "KongConsumer".into(),
        plural: "kongconsumers".into(),
    };
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Which ApiKeys have objects of a kind (published Secrets; with access lists, Roles and
/// RoleBindings), kept from the controller's watch of that kind's metadata. A key that publishes
/// nothing and has nothing published then costs no list of its published Secrets per reconcile
/// (10,000 reads per resync at 10,000 keys). The watch may lag a write: an object it has not
/// reported yet is reported later, and its event reconciles the owning key again, which then
/// reads and cleans up.
pub struct KeyObjects {
    registry: Mutex<Registry>,
    /// The (namespace, ApiKey) an object belongs to; `None` for objects not counted.
    of: fn(&kube::api::ObjectMeta) -> Option<(String, String)>,
}

/// Object names by (namespace, ApiKey). During a relist the entries listed so far
/// build `relisted`, which replaces `current` when the list ends: Secrets deleted while the watch
/// was down are forgotten then, and until then `current` keeps every name it had.
#[derive(Default)]
struct Registry {
    current: HashMap<(String, String), BTreeSet<String>>,
    relisted: Option<HashMap<(String, String), BTreeSet<String>>>,
}

/// The (namespace, ApiKey) a published Secret belongs to; `None` for any other Secret.
fn publisher(meta: &kube::api::ObjectMeta) -> Option<(String, String)> {
    let labels = meta.labels.as_ref()?;
    labels.get(PUBLISHED_FOR_LABEL)?;
    let key = labels.get(APIKEY_LABEL)?;
    Some((meta.namespace.clone().unwrap_or_default(), key.clone()))
}

/// The (namespace, ApiKey) of an object labelled with an ApiKey's name.
fn labelled(meta: &kube::api::ObjectMeta) -> Option<(String, String)> {
    let key = meta.labels.as_ref()?.get(APIKEY_LABEL)?;
    Some((meta.namespace.clone().unwrap_or_default(), key.clone()))
}

fn insert(
    map: &mut HashMap<(String, String), BTreeSet<String>>,
    key: (String, String),
    name: String,
) {
    map.entry(key).or_default().insert(name);
}

impl KeyObjects {
    /// The keys' published Secrets, from the watch of Keysmith's Secrets.
    pub fn published() -> KeyObjects {
        KeyObjects {
            registry: Mutex::default(),
            of: publisher,
        }
    }

    /// Every object labelled with a key's name, from a watch of Keysmith's objects of a kind.
    pub fn labelled() -> KeyObjects {
        KeyObjects {
            registry: Mutex::default(),
            of: labelled,
        }
    }

    /// Take one event of the watch.
    pub fn observe<K: Resource>(&self, event: &watcher::Event<K>) {
        let of = self.of;
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let Registry { current, relisted } = &mut *registry;
        match event {
            watcher::Event::Init => *relisted = Some(HashMap::new()),
            watcher::Event::InitApply(object) | watcher::Event::Apply(object) => {
                let meta = object.meta();
                if let (Some(key), Some(name)) = (of(meta), meta.name.clone()) {
                    if let (watcher::Event::InitApply(_), Some(relisted)) =
                        (event, relisted.as_mut())
                    {
                        insert(relisted, key.clone(), name.clone());
                    }
                    insert(current, key, name);
                }
            }
            watcher::Event::Delete(object) => {
                let meta = object.meta();
                if let (Some(key), Some(name)) = (of(meta), meta.name.as_ref()) {
                    for map in std::iter::once(&mut *current).chain(relisted.as_mut()) {
                        if let Some(names) = map.get_mut(&key) {
                            names.remove(name);
                            if names.is_empty() {
                                map.remove(&key);
                            }
                        }
                    }
                }
            }
            watcher::Event::InitDone => {
                if let Some(relisted) = relisted.take() {
                    *current = relisted;
                }
            }
        }
    }

    /// Whether the watch has reported an object of `key` that still exists.
    pub(super) fn any(&self, key: &ApiKey) -> bool {
        let id = (key.namespace().unwrap_or_default(), key.name_any());
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        registry.current.contains_key(&id)
    }
}

/// The key's published Secrets as they are (labelled with its name and a gateway), for the
/// planner's snapshot. Not read for a key that publishes nothing and, as far as the watch of
/// Keysmith's Secrets knows, has nothing published.
pub async fn observe(
    secrets: &Api<Secret>,
    registry: &KeyObjects,
    key: &ApiKey,
) -> Result<Vec<Secret>, Error> {
    if key.spec.publish.is_empty() && !registry.any(key) {
        return Ok(Vec::new());
    }
    published(secrets, key).await
}

/// The key's published Secrets as they are.
async fn published(secrets: &Api<Secret>, key: &ApiKey) -> Result<Vec<Secret>, Error> {
    let name = key.name_any();
    let selector = format!("{APIKEY_LABEL}={name},{PUBLISHED_FOR_LABEL}");
    let list = secrets
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!(
            "listing published Secrets of ApiKey {name}"
        )))?;
    Ok(list.items)
}

/// Write `publication`, planned from the `observed` published Secrets. A published Secret is
/// the key's alone, so it is written whole: one the key published before is replaced, guarded
/// by the version observed (its data then holds exactly the planned entries, whatever was added
/// by hand); a new one is created, which fails if any Secret of that name exists, and that name
/// is then refused (never overwritten) without a read beforehand.
pub async fn write(
    client: &Client,
    secrets: &Api<Secret>,
    key: &ApiKey,
    mut publication: Publication,
    observed: &[Secret],
) -> Result<(), Error> {
    let namespace = key.namespace().unwrap_or_default();
    for desired in publication.secrets.clone() {
        let current = observed.iter().find(|s| s.name_any() == desired.name);
        match apply::published_secret(secrets, &desired, current).await {
            Ok(()) => {}
            Err(kube::Error::Api(s)) if current.is_none() && s.code == 409 => {
                publication.refuse(&desired.name, publish::not_owned(&desired.name));
            }
            Err(e) => {
                return Err(Error::kube(format!(
                    "writing Secret {namespace}/{}",
                    desired.name
                ))(e));
            }
        }
    }
    for kong in &publication.kong {
        let written = kong_credentials(client, key, kong, |current| kong.merged(current)).await;
        match written {
            // A consumer the key left that is gone or no longer consents holds nothing of it.
            Err(Error::Publish(_)) if kong.withdrawn => {}
            written => written?,
        }
    }
    for old in &publication.delete {
        apply::delete_secret(secrets, old)
            .await
            .map_err(Error::kube(format!(
                "deleting Secret {namespace}/{}",
                old.name
            )))?;
    }
    match publication.conflicts.first() {
        Some(conflict) => Err(Error::Publish(conflict.clone())),
        None => Ok(()),
    }
}

/// Revoke what `key` published: its entries leave the KongConsumer's list, then its published
/// Secrets are deleted. Returns the names of the deleted Secrets.
pub async fn unpublish(client: &Client, key: &ApiKey) -> Result<Vec<String>, Error> {
    let namespace = key.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let observed = published(&secrets, key).await?;
    for kong in publish::kong_parts(key, &observed) {
        match kong_credentials(client, key, &kong, |current| kong.removed(current)).await {
            // The consumer is gone, never consented or may not be read: the Secrets below are
            // what revokes the keys.
            Ok(()) | Err(Error::Publish(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let owned = publish::owned(key, &observed);
    for old in &owned {
        apply::delete_secret(&secrets, old)
            .await
            .map_err(Error::kube(format!(
                "deleting Secret {namespace}/{}",
                old.name
            )))?;
    }
    Ok(owned.into_iter().map(|old| old.name).collect())
}

/// Rewrite the consenting consumer's `credentials` as `update` makes them from the current list;
/// no write when nothing changes.
async fn kong_credentials(
    client: &Client,
    key: &ApiKey,
    kong: &KongCredentials,
    update: impl Fn(&[String]) -> Vec<String>,
) -> Result<(), Error> {
    let namespace = key.namespace().unwrap_or_default();
    let name = key.name_any();
    let consumers = kong_consumers(client, &namespace);
    let what = format!("KongConsumer {namespace}/{}", kong.consumer);
    let consumer = match consumers.get_opt(&kong.consumer).await {
        Ok(consumer) => consumer,
        // No KongConsumer kind at all: Kong's CRDs are not installed.
        Err(kube::Error::Api(s)) if s.is_not_found() => None,
        // Without the chart's Kong rules: an error naming the fix. Revocation skips it, as the
        // credential Secrets are deleted anyway and a consumer naming a missing Secret accepts
        // nothing.
        Err(kube::Error::Api(s)) if s.is_forbidden() => {
            return Err(Error::Publish(format!(
                "spec.publish: the controller may not read {what}; install Keysmith with gateways.kong.enabled=true"
            )));
        }
        Err(e) => return Err(Error::kube(format!("reading {what}"))(e)),
    };
    let Some(consumer) = consumer else {
        return Err(Error::Publish(format!(
            "spec.publish: {what} does not exist; create it with the annotation {KONG_CONSUMER_ANNOTATION}: {name}"
        )));
    };
    if !publish::consents(&consumer.metadata, &name) {
        return Err(Error::Publish(format!(
            "spec.publish: {what} does not consent to hold this key's credentials; have someone who may write it annotate it {KONG_CONSUMER_ANNOTATION}={name}"
        )));
    }
    let current: Vec<String> = consumer
        .data
        .get("credentials")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let wanted = update(&current);
    if wanted == current {
        return Ok(());
    }
    let body = json!({
        "apiVersion": "configuration.konghq.com/v1",
        "kind": "KongConsumer",
        "metadata": {
            "name": kong.consumer,
            "namespace": namespace,
            "resourceVersion": consumer.metadata.resource_version,
        },
        "credentials": wanted,
    });
    consumers
        .patch(
            &kong.consumer,
            &PatchParams::apply(KONG_FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
        .map(drop)
        .map_err(Error::kube(format!("writing the credentials of {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn secret(namespace: &str, name: &str, apikey: &str, published: bool) -> Secret {
        let mut labels =
            std::collections::BTreeMap::from([(APIKEY_LABEL.to_owned(), apikey.to_owned())]);
        if published {
            labels.insert(PUBLISHED_FOR_LABEL.to_owned(), "kong".to_owned());
        }
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        }
    }

    fn key(namespace: &str, name: &str) -> ApiKey {
        let mut key = ApiKey::new(name, Default::default());
        key.metadata.namespace = Some(namespace.to_owned());
        key
    }

    #[test]
    fn the_registry_follows_published_secrets_only() {
        let registry = KeyObjects::published();
        let (site, other) = (key("cms", "site"), key("shop", "site"));
        registry.observe(&watcher::Event::Apply(secret("cms", "site", "site", false)));
        assert!(
            !registry.any(&site),
            "the key's own Secret is not published"
        );
        for name in ["site.delivery.kong", "site-envoy-gateway"] {
            registry.observe(&watcher::Event::Apply(secret("cms", name, "site", true)));
        }
        assert!(registry.any(&site));
        assert!(!registry.any(&other), "namespaces are apart");
        registry.observe(&watcher::Event::Delete(secret(
            "cms",
            "site.delivery.kong",
            "site",
            true,
        )));
        assert!(registry.any(&site), "one published Secret is left");
        registry.observe(&watcher::Event::Delete(secret(
            "cms",
            "site-envoy-gateway",
            "site",
            true,
        )));
        assert!(!registry.any(&site));
    }

    #[test]
    fn a_relist_forgets_what_was_deleted_while_the_watch_was_down_only_when_it_ends() {
        let registry = KeyObjects::published();
        let (site, shop) = (key("cms", "site"), key("cms", "shop"));
        registry.observe(&watcher::Event::Apply(secret(
            "cms",
            "site-envoy-gateway",
            "site",
            true,
        )));
        registry.observe(&watcher::Event::Init::<Secret>);
        registry.observe(&watcher::Event::InitApply(secret(
            "cms",
            "shop-envoy-gateway",
            "shop",
            true,
        )));
        assert!(registry.any(&site), "kept until the list has ended");
        assert!(registry.any(&shop));
        registry.observe(&watcher::Event::InitDone::<Secret>);
        assert!(
            !registry.any(&site),
            "not in the new list: deleted meanwhile"
        );
        assert!(registry.any(&shop));
    }
}
