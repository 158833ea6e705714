//! Shared helpers of the emulator's integration tests.

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

/// A bare GET of `path`, for reading the server's JSON without kube-rs decoding it.
pub fn get(path: &str) -> axum::http::Request<Vec<u8>> {
    axum::http::Request::get(path)
        .body(Vec::new())
        .expect("valid request")
}

#[allow(unused_imports)] // not every test binary polls
pub use keysmith_emulator::eventually;
