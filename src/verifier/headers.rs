//! Values of required headers that an ApiKey takes from a Secret
//! (`restrictions.requiredHeaders[].valueFrom.secretKeyRef`).
//!
//! This is the only Secret access the verifier has: `get` by name, and only of Secrets an indexed
//! ApiKey names (the watcher registers them with [`SecretCache::set_refs`]). Values are fetched in
//! the background and refreshed every [`REFRESH`], so a verification never waits for the API
//! server; a value not fetched yet, a missing Secret or a missing key answers HEADER_MISMATCH
//! (fail closed). A Secret that cannot be read for another reason keeps its last known value.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tokio::sync::Notify;

use super::decision::{SecretValues, constant_time_eq};

/// How often referenced Secrets are re-read.
pub const REFRESH: Duration = Duration::from_secs(30);

type SecretName = (String, String);

/// Required-header values, by Secret.
#[derive(Default)]
pub struct SecretCache {
    /// Which Secrets each ApiKey (namespace, name) refers to.
    refs: RwLock<HashMap<SecretName, BTreeSet<String>>>,
    /// Fetched data of each referenced Secret; absent: not fetched yet or missing.
    values: RwLock<HashMap<SecretName, BTreeMap<String, Vec<u8>>>>,
    changed: Notify,
}

impl SecretCache {
    /// Record the Secrets an ApiKey refers to (empty when it is gone); a new one is fetched at once.
    pub fn set_refs(&self, namespace: &str, apikey: &str, secrets: BTreeSet<String>) {
        let mut refs = self.refs.write().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_owned(), apikey.to_owned());
        if refs.get(&key).is_some_and(|old| *old == secrets) {
            return;
        }
        let known = self.values.read().unwrap_or_else(|e| e.into_inner());
        let new = secrets
            .iter()
            .any(|s| !known.contains_key(&(namespace.to_owned(), s.clone())));
        drop(known);
        if secrets.is_empty() {
            refs.remove(&key);
        } else {
            refs.insert(key, secrets);
        }
        if new {
            self.changed.notify_one();
        }
    }

    /// Every Secret some ApiKey refers to.
    fn wanted(&self) -> BTreeSet<SecretName> {
        let refs = self.refs.read().unwrap_or_else(|e| e.into_inner());
        refs.iter()
            .flat_map(|((ns, _), names)| names.iter().map(|n| (ns.clone(), n.clone())))
            .collect()
    }

    /// Store (or forget, with `None`) a Secret's data.
    pub fn store(&self, secret: SecretName, data: Option<BTreeMap<String, Vec<u8>>>) {
        let mut values = self.values.write().unwrap_or_else(|e| e.into_inner());
        match data {
            Some(data) => values.insert(secret, data),
            None => values.remove(&secret),
        };
    }

    /// Keep the referenced Secrets fresh until the task is dropped.
    pub async fn refresh(&self, client: kube::Client) {
        loop {
            let wanted = self.wanted();
            for (namespace, name) in &wanted {
                let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
                match api.get_opt(name).await {
                    Ok(found) => {
                        let data = found.map(|s| {
                            s.data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, v.0))
                                .collect()
                        });
                        self.store((namespace.clone(), name.clone()), data);
                    }
                    Err(err) => {
                        tracing::warn!(%namespace, secret = %name, error = %err,
                            "cannot read a Secret named by requiredHeaders; keeping its last value");
                    }
                }
            }
            self.values
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|k, _| wanted.contains(k));
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(REFRESH) => {}
            }
        }
    }
}

impl SecretValues for SecretCache {
    fn matches(&self, namespace: &str, name: &str, key: &str, presented: &[u8]) -> bool {
        let values = self.values.read().unwrap_or_else(|e| e.into_inner());
        values
            .get(&(namespace.to_owned(), name.to_owned()))
            .and_then(|data| data.get(key))
            .is_some_and(|expected| constant_time_eq(expected, presented))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_fetched_values_of_the_right_namespace() {
        let cache = SecretCache::default();
        cache.set_refs("ns", "k", BTreeSet::from(["s".to_owned()]));
        assert!(!cache.matches("ns", "s", "value", b"v"), "not fetched yet");
        cache.store(
            ("ns".into(), "s".into()),
            Some(BTreeMap::from([("value".into(), b"v".to_vec())])),
        );
        assert!(cache.matches("ns", "s", "value", b"v"));
        assert!(!cache.matches("ns", "s", "value", b"w"));
        assert!(!cache.matches("ns", "s", "other", b"v"));
        assert!(!cache.matches("other", "s", "value", b"v"));
        assert_eq!(cache.wanted(), BTreeSet::from([("ns".into(), "s".into())]));
        cache.set_refs("ns", "k", BTreeSet::new());
        assert!(cache.wanted().is_empty());
        cache.store(("ns".into(), "s".into()), None);
        assert!(!cache.matches("ns", "s", "value", b"v"));
    }
}
