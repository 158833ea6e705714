//! Object storage: every object as JSON, one global `resourceVersion`
//! counter, and a bounded history of change events that watches replay from
//! (older versions answer `410 Gone`, like etcd compaction).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use crate::registry::GroupResource;

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as retained for watches.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resourceVersion the change produced.
    pub rv: u64,
    /// Which resource.
    pub gr: GroupResource,
    /// The object's namespace ("" for cluster-scoped).
    pub namespace: String,
    /// Event type.
    pub kind: EventType,
    /// The object after the change (before removal for `Deleted`).
    pub object: Arc<Value>,
    /// The object before a `Modified` change (selector transitions need it).
    pub old: Option<Arc<Value>>,
}

/// Retained changes plus a subscription to later ones.
pub type Backlog = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>);

/// (namespace, name) of an object within its resource.
pub type ObjectKey = (String, String);

/// All objects plus the change history.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: HashMap<GroupResource, BTreeMap<ObjectKey, Value>>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Highest resourceVersion dropped from the history: watching from a
    /// version below it cannot be answered exactly.
    compacted: u64,
    events: broadcast::Sender<Arc<Change>>,
}

impl Store {
    /// An empty store keeping `history_limit` change events.
    pub fn new(history_limit: usize) -> Self {
        let (events, _) = broadcast::channel(8192);
        Store {
            rv: 1,
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            events,
        }
    }

    /// The current (latest) resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// Allocate the next resourceVersion.
    pub fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Oldest version a watch can start from.
    pub fn compacted_rv(&self) -> u64 {
        self.compacted
    }

    /// Drop all but the newest `keep` history events (tests use this to
    /// provoke `410 Gone`).
    pub fn compact(&mut self, keep: usize) {
        while self.history.len() > keep {
            if let Some(c) = self.history.pop_front() {
                self.compacted = self.compacted.max(c.rv);
            }
        }
        if keep == 0 {
            self.compacted = self.rv;
        }
    }

    /// Read one object.
    pub fn get(&self, gr: &GroupResource, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(gr)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
    }

    /// All objects of a resource, optionally within one namespace, in
    /// (namespace, name) order.
    pub fn list<'a>(
        &'a self,
        gr: &GroupResource,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a Value)> + 'a {
        self.objects
            .get(gr)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(move |((n, _), _)| ns.is_none_or(|want| want == n))
    }

    /// Every stored object with its resource.
    pub fn all(&self) -> impl Iterator<Item = (&GroupResource, &ObjectKey, &Value)> {
        self.objects
            .iter()
            .flat_map(|(gr, m)| m.iter().map(move |(k, v)| (gr, k, v)))
    }

    /// Store an object (already stamped with its new resourceVersion) and
    /// publish the change.
    pub fn put(&mut self, gr: &GroupResource, obj: Value, kind: EventType) {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let rv = rv_of(&obj);
        let object = Arc::new(obj.clone());
        let old = self
            .objects
            .entry(gr.clone())
            .or_default()
            .insert((ns.clone(), name), obj)
            .map(Arc::new);
        self.publish(Change {
            rv,
            gr: gr.clone(),
            namespace: ns,
            kind,
            object,
            old,
        });
    }

    /// Remove an object; the DELETED event carries it with a fresh resourceVersion.
    pub fn remove(&mut self, gr: &GroupResource, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self
            .objects
            .get_mut(gr)?
            .remove(&(ns.to_string(), name.to_string()))?;
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        self.publish(Change {
            rv,
            gr: gr.clone(),
            namespace: ns.to_string(),
            kind: EventType::Deleted,
            object: Arc::new(obj.clone()),
            old: None,
        });
        Some(obj)
    }

    fn publish(&mut self, change: Change) {
        let change = Arc::new(change);
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(c) = self.history.pop_front() {
                self.compacted = c.rv;
            }
        }
        // No receivers is normal (no watch open).
        let _ = self.events.send(change);
    }

    /// Subscribe to future changes and fetch retained changes newer than
    /// `after`, atomically (the caller holds the store lock), so a watch
    /// neither misses nor duplicates an event. `None` when `after` is older
    /// than the retained window.
    pub fn watch_from(&self, after: u64) -> Option<Backlog> {
        if after < self.compacted {
            return None;
        }
        let rx = self.events.subscribe();
        let backlog = self
            .history
            .iter()
            .filter(|c| c.rv > after)
            .cloned()
            .collect();
        Some((backlog, rx))
    }

    /// Subscribe to future changes only.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.events.subscribe()
    }
}

/// The numeric resourceVersion of an object (0 if missing).
pub fn rv_of(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(name: &str, rv: u64) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns", "uid": name, "resourceVersion": rv.to_string()}})
    }

    #[test]
    fn history_window_answers_gone_for_compacted_versions() {
        let gr = GroupResource::new("", "secrets");
        let mut s = Store::new(2);
        for name in ["a", "b", "c"] {
            let rv = s.next_rv();
            s.put(&gr, obj(name, rv), EventType::Added);
        }
        assert!(
            s.watch_from(1).is_none(),
            "rv 2 was dropped from the window"
        );
        let (backlog, _) = s.watch_from(2).expect("within window");
        assert_eq!(backlog.iter().map(|c| c.rv).collect::<Vec<_>>(), vec![3, 4]);
        assert!(s.remove(&gr, "ns", "a").is_some());
    }
}
