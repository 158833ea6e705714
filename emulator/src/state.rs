//! The server's mutable state (storage plus the kinds it serves), the reference
//! every verb names an object by, and how a stored object is presented to
//! clients. The verbs themselves live in `verbs/`, one file each.

use rand::RngExt;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::events;
use crate::registry::{GroupResource, Registry, ResourceType};
use crate::store::{EventType, Store};
use crate::verbs::WriteOptions;

/// The server's mutable state: storage plus the kinds it serves.
#[derive(Debug)]
pub struct State {
    /// Objects and history.
    pub store: Store,
    /// Served kinds.
    pub registry: Registry,
}

/// The object a request names: its kind as served, where it lives, and
/// whether the request addresses its `/status` subresource.
#[derive(Debug, Clone, Copy)]
pub struct ObjectRef<'a> {
    /// The kind, at the version the request uses.
    pub rt: &'a ResourceType,
    /// Namespace, "" for cluster-scoped kinds.
    pub namespace: &'a str,
    /// Object name.
    pub name: &'a str,
    /// The request addresses `/status` (a write then changes status only).
    pub status: bool,
}

impl<'a> ObjectRef<'a> {
    /// The main resource of `namespace/name`.
    pub fn new(rt: &'a ResourceType, namespace: &'a str, name: &'a str) -> Self {
        ObjectRef {
            rt,
            namespace,
            name,
            status: false,
        }
    }

    /// The 404 when it does not exist.
    pub fn not_found(&self) -> ApiError {
        ApiError::not_found(&self.rt.group, &self.rt.plural, self.name)
    }

    /// The object as stored, if it exists.
    pub fn stored<'s>(&self, st: &'s State) -> Option<&'s Value> {
        st.store
            .get(&self.rt.group_resource(), self.namespace, self.name)
    }
}

/// `2006-01-02T15:04:05Z`, as Kubernetes writes timestamps.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A fresh `metadata.uid`, shaped like a version-4 UUID.
pub fn new_uid() -> String {
    let n: u128 = rand::rng().random();
    let h = format!("{n:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// A metadata string field, "" when absent.
pub fn meta_str<'v>(obj: &'v Value, field: &str) -> &'v str {
    obj["metadata"][field].as_str().unwrap_or_default()
}

/// The finalizers of an object.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(String::from))
        .collect()
}

/// Whether a kind is CustomResourceDefinition (whose writes change the served kinds).
pub fn is_crd(rt: &ResourceType) -> bool {
    rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions"
}

/// A stored object as a given served version presents it.
pub fn present(rt: &ResourceType, obj: &Value) -> Value {
    serde_json::to_value(Presented(rt, obj)).expect("a JSON value converts to a JSON value")
}

/// A stored object as clients see it, serialized straight from the store (and the one place
/// that decides what they see): listing 10,000 objects spent most of its time copying them first.
pub struct Presented<'a>(pub &'a ResourceType, pub &'a Value);

impl Serialize for Presented<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Presented(rt, stored) = *self;
        let converted = events::to_view(rt, stored);
        let obj = converted.as_ref().unwrap_or(stored);
        let Some(fields) = obj.as_object() else {
            return obj.serialize(serializer);
        };
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("apiVersion", &rt.api_version())?;
        map.serialize_entry("kind", &rt.kind)?;
        for (k, v) in fields {
            if k != "apiVersion" && k != "kind" {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

impl State {
    /// An empty server state with the default namespaces.
    pub fn new(history_limit: usize) -> Self {
        let mut st = State {
            store: Store::new(history_limit),
            registry: Registry::new(),
        };
        let rt = st
            .registry
            .lookup("", "v1", "namespaces")
            .cloned()
            .expect("namespaces are built in");
        let opts = WriteOptions {
            manager: "keysmith-emulator".into(),
            ..Default::default()
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            st.create(&rt, "", body, &opts)
                .expect("default namespaces are valid");
        }
        st
    }

    /// Store a created or replaced object (in the form `rt` serves) under a fresh
    /// resourceVersion from the global counter, in its storage form, keeping the served kinds
    /// in step when it is a CRD; returns what was stored.
    pub fn put_versioned(&mut self, rt: &ResourceType, obj: Value, kind: EventType) -> Value {
        let mut obj = events::to_storage(rt, obj);
        let rv = self.store.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if is_crd(rt) {
            self.registry.set_crd(&obj);
        }
        self.store.put(&rt.group_resource(), obj.clone(), kind);
        obj
    }

    /// Store an object exactly as given (used by the GC for its own edits),
    /// with a fresh resourceVersion.
    pub fn put_raw(&mut self, gr: &GroupResource, mut obj: Value) {
        let rv = self.store.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.store.put(gr, obj, EventType::Modified);
    }

    /// Remove an object for good, withdrawing a CRD's kinds and objects.
    pub fn remove_final(&mut self, gr: &GroupResource, ns: &str, name: &str) -> Option<Value> {
        let obj = self.store.remove(gr, ns, name)?;
        if gr.group == "apiextensions.k8s.io" && gr.resource == "customresourcedefinitions" {
            let group = obj["spec"]["group"].as_str().unwrap_or_default();
            let plural = obj["spec"]["names"]["plural"].as_str().unwrap_or_default();
            let crs = GroupResource::new(group, plural);
            let keys: Vec<(String, String)> = self
                .store
                .list(&crs, None)
                .map(|(k, _)| k.clone())
                .collect();
            for (ns, name) in keys {
                self.store.remove(&crs, &ns, &name);
            }
            self.registry.remove_crd(name);
        }
        Some(obj)
    }
}
