//! The writes of `spec.publish` ([`planner::publish`]): the key's published Secrets (server-side
//! apply, field manager `keysmith`), its entries in a consenting KongConsumer's `credentials`
//! (server-side apply, field manager [`KONG_FIELD_MANAGER`]), and the deletion of published
//! Secrets no longer wanted, in the order that never lets a gateway see a credential name
//! without its Secret: create and update Secrets, then the consumer's list, then delete.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use keysmith_core::api::{APIKEY_LABEL, ApiKey, KONG_CONSUMER_ANNOTATION, PUBLISHED_FOR_LABEL};
use keysmith_core::planner::Plan;
use keysmith_core::planner::publish::{self, KongCredentials};

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

/// The key's published Secrets as they are (labelled with its name and a gateway).
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

/// Publish `key`'s tokens as `plan` leaves them; `secret` is the key's Secret as read before.
pub async fn publish(
    client: &Client,
    secrets: &Api<Secret>,
    key: &ApiKey,
    plan: &Plan,
    secret: Option<&Secret>,
    now: Timestamp,
) -> Result<(), Error> {
    let namespace = key.namespace().unwrap_or_default();
    let mut observed = published(secrets, key).await?;
    if key.spec.publish.is_empty() && observed.is_empty() {
        return Ok(());
    }
    let mut publication = publish::publication(key, plan, secret, &observed, now);
    // A name the key has not published under yet may be taken by a Secret without Keysmith's
    // labels: read those, so the planner sees them and refuses rather than overwriting.
    let mut found_other = false;
    for desired in &publication.secrets {
        if observed.iter().any(|s| s.name_any() == desired.name) {
            continue;
        }
        let existing = secrets
            .get_opt(&desired.name)
            .await
            .map_err(Error::kube(format!(
                "reading Secret {namespace}/{}",
                desired.name
            )))?;
        found_other |= existing.is_some();
        observed.extend(existing);
    }
    if found_other {
        publication = publish::publication(key, plan, secret, &observed, now);
    }
    for desired in &publication.secrets {
        apply::secret(secrets, desired)
            .await
            .map_err(Error::kube(format!(
                "writing Secret {namespace}/{}",
                desired.name
            )))?;
    }
    if let Some(kong) = &publication.kong {
        kong_credentials(client, key, kong, |current| kong.merged(current)).await?;
    }
    for name in &publication.delete {
        apply::delete_secret(secrets, name)
            .await
            .map_err(Error::kube(format!("deleting Secret {namespace}/{name}")))?;
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
    if let Some(kong) = publish::kong_part(key, &observed) {
        match kong_credentials(client, key, &kong, |current| kong.removed(current)).await {
            // The consumer is gone, never consented or may not be read: the Secrets below are
            // what revokes the keys.
            Ok(()) | Err(Error::Publish(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let owned = publish::owned(key, &observed);
    for name in &owned {
        apply::delete_secret(&secrets, name)
            .await
            .map_err(Error::kube(format!("deleting Secret {namespace}/{name}")))?;
    }
    Ok(owned)
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
