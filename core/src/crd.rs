//! The `apikeys.keysmith.dev` CustomResourceDefinition, generated from the Rust types in [`crate::api`].

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::ApiKey;

/// The CRD as Kubernetes should receive it.
pub fn apikey_crd() -> CustomResourceDefinition {
    ApiKey::crd()
}

/// The CRD as YAML, exactly as committed under `crds/`.
pub fn apikey_crd_yaml() -> String {
    serde_saphyr::to_string(&apikey_crd()).expect("a CRD always serializes to YAML")
}
