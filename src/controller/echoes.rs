//! The watch events that only echo the controller's own writes. A new key's finalizer patch,
//! status write and Secret apply each come back through the watch; the pass that wrote them
//! planned from what they replaced and left nothing to do, so reconciling their echoes read the
//! key and its Secret and wrote nothing (two of a new key's seven requests to the API server).

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The resourceVersions the controller's own writes answered, by object, until their watch
/// events arrive (or the object's next event of another version).
#[derive(Default)]
pub struct OwnWrites(Mutex<HashMap<String, Vec<String>>>);

impl OwnWrites {
    /// Remember the resourceVersion one of our writes answered for `kind`'s object `meta`.
    pub fn wrote(&self, kind: &str, meta: &ObjectMeta) {
        if let Some(version) = &meta.resource_version {
            self.lock()
                .entry(object(kind, meta))
                .or_default()
                .push(version.clone());
        }
    }

    /// Whether a watch event of `kind`'s object `meta` shows the version one of our own writes
    /// answered, and so needs no reconcile. Any other version (someone else's write, a deletion)
    /// is reconciled, and forgets what was remembered for the object: events come in the order
    /// of the writes, so a version remembered before it was either seen or raced ahead of the
    /// write's answer, and forgetting it costs at worst one reconcile.
    pub fn echo(&self, kind: &str, meta: &ObjectMeta) -> bool {
        let mut own = self.lock();
        let object = object(kind, meta);
        let Some(versions) = own.get_mut(&object) else {
            return false;
        };
        match versions
            .iter()
            .position(|v| Some(v) == meta.resource_version.as_ref())
        {
            Some(seen) => {
                versions.drain(..=seen);
                if versions.is_empty() {
                    own.remove(&object);
                }
                true
            }
            None => {
                own.remove(&object);
                false
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn object(kind: &str, meta: &ObjectMeta) -> String {
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let name = meta.name.as_deref().unwrap_or_default();
    format!("{kind} {namespace}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(name: &str, version: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            resource_version: Some(version.into()),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn the_echoes_of_our_writes_are_skipped_in_order_and_once() {
        let own = OwnWrites::default();
        own.wrote("ApiKey", &at("site", "1"));
        own.wrote("ApiKey", &at("site", "2"));
        assert!(own.echo("ApiKey", &at("site", "1")));
        assert!(own.echo("ApiKey", &at("site", "2")));
        assert!(
            !own.echo("ApiKey", &at("site", "2")),
            "an echo is skipped once"
        );
        assert!(own.0.lock().unwrap().is_empty());
    }

    #[test]
    fn another_version_is_reconciled_and_forgets_the_object() {
        let own = OwnWrites::default();
        own.wrote("ApiKey", &at("site", "5"));
        assert!(
            !own.echo("ApiKey", &at("site", "7")),
            "someone else's write"
        );
        assert!(!own.echo("ApiKey", &at("site", "5")), "forgotten");
        assert!(own.0.lock().unwrap().is_empty());
    }

    #[test]
    fn an_echo_before_the_answer_is_reconciled_and_a_later_one_still_skipped() {
        let own = OwnWrites::default();
        assert!(
            !own.echo("ApiKey", &at("site", "3")),
            "came before the write's answer"
        );
        own.wrote("ApiKey", &at("site", "3"));
        own.wrote("ApiKey", &at("site", "4"));
        assert!(
            own.echo("ApiKey", &at("site", "4")),
            "older remembered versions go with it"
        );
        assert!(own.0.lock().unwrap().is_empty());
    }

    #[test]
    fn kinds_and_names_are_kept_apart() {
        let own = OwnWrites::default();
        own.wrote("ApiKey", &at("site", "9"));
        assert!(!own.echo("Secret", &at("site", "9")));
        assert!(!own.echo("ApiKey", &at("other", "9")));
        assert!(own.echo("ApiKey", &at("site", "9")));
    }
}
