//! Shared helpers of the emulator's integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use keysmith_emulator::{Config, Emulator};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};

pub const CRD: &str = include_str!("../fixtures/gadgets-crd.yaml");
pub const GADGET: &str = include_str!("../fixtures/gadget.yaml");

/// An emulator with the Gadget CRD installed.
pub async fn emulator(config: Config) -> Emulator {
    let emu = Emulator::start(config).await.expect("emulator starts");
    emu.apply_yaml(CRD).expect("CRD applies");
    emu
}

pub fn gadget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Gadget"),
        "gadgets",
    )
}

pub fn gadgets(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &gadget_resource())
}

/// A Gadget object from JSON.
pub fn gadget(name: &str, spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "example.com/v1", "kind": "Gadget",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("valid object")
}

/// Poll `check` until it returns Some, failing after a generous deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
