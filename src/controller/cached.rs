//! What the controller's ApiKey cache keeps of each key. Reconcile and cleanup read the key
//! fresh, so the cache only triggers and routes reconciles: it needs the metadata (kube's queue
//! and finalizer helper read it) and the owner of a personal key (immutable, so never stale),
//! which decides its owner's first key. A whole [`ApiKey`] takes 1,880 bytes however empty its
//! spec and status are; caching one per key held 13–15 MiB more at 10,000 keys.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use keysmith_core::api::{ApiKey, ApiKeySpec, Owner};

/// An ApiKey as the cache keeps it; deserializes from a whole ApiKey (kube's controller asks
/// for that, though the watch here hands it keys already read).
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "ApiKey")]
pub struct CachedKey {
    /// The key's metadata.
    pub metadata: ObjectMeta,
    /// `spec.owner`.
    pub owner: Option<Owner>,
}

impl From<ApiKey> for CachedKey {
    /// What the cache keeps of `key`.
    fn from(key: ApiKey) -> CachedKey {
        CachedKey {
            metadata: key.metadata,
            owner: key.spec.owner,
        }
    }
}

impl CachedKey {
    /// A key known by its metadata alone (unreadable, or deleted).
    pub fn evicted(metadata: ObjectMeta) -> CachedKey {
        CachedKey {
            metadata,
            owner: None,
        }
    }

    /// An ApiKey with this metadata and owner and nothing else, for what takes a whole key and
    /// reads no more (kube's finalizer helper, [`keysmith_core::personal::first_of_owner`]).
    pub fn stand_in(&self) -> ApiKey {
        ApiKey {
            metadata: self.metadata.clone(),
            spec: ApiKeySpec {
                owner: self.owner.clone(),
                ..ApiKeySpec::default()
            },
            status: None,
        }
    }
}

crate::apikeys::apikey_view_resource!(CachedKey);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_metadata_and_owner_and_stands_in_with_them() {
        let key: ApiKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "site", "namespace": "shop", "uid": "u-1",
                "finalizers": ["keysmith.dev/revoke"]},
            "spec": {"tokens": [{"name": "primary", "prefix": "shop_"}],
                "owner": {"username": "alice"}},
            "status": {"secretName": "site"},
        }))
        .unwrap();
        let cached = CachedKey::from(key.clone());
        let stand_in = cached.stand_in();
        assert_eq!(stand_in.metadata, key.metadata);
        assert_eq!(stand_in.spec.owner, key.spec.owner);
        assert!(stand_in.spec.tokens.is_empty());
        assert_eq!(stand_in.status, None);
        assert!(std::mem::size_of::<CachedKey>() * 3 < std::mem::size_of::<ApiKey>());
    }
}
