//! Object storage: every object as JSON, one global `resourceVersion`
//! counter, and a bounded history of change events that watches replay from
//! (older versions answer `410 Gone`, like etcd compaction).
//!
//! The store also keeps the indexes garbage collection needs (uid to object,
//! owner uid to dependents) and notes which objects a write made worth the
//! collector's attention, so a sweep costs what the write touched rather than
//! a pass over every stored object.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound::{Excluded, Included, Unbounded};
use std::sync::{Arc, OnceLock};

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
    /// The object serialized as one served version presents it (that
    /// version's `apiVersion`, the JSON), filled by the first watcher to
    /// send the change, so many watchers of a resource serialize it once.
    pub rendered: OnceLock<(String, String)>,
}

/// Retained changes plus a subscription to later ones.
pub type Backlog = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>);

/// (namespace, name) of an object within its resource.
pub type ObjectKey = (String, String);

/// Where an object is stored: its resource and key.
pub type Location = (GroupResource, ObjectKey);

/// All objects plus the change history.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: HashMap<GroupResource, BTreeMap<ObjectKey, Value>>,
    /// uid of every stored object to where it is.
    uids: HashMap<String, Location>,
    /// Owner uid to the objects whose `ownerReferences` name it (whether or
    /// not the owner still exists).
    dependents: HashMap<String, BTreeSet<Location>>,
    /// Objects the garbage collector should look at on its next sweep:
    /// deleting ones, orphaned ones, deleting owners whose dependents
    /// changed, terminating namespaces whose contents shrank.
    gc_pending: BTreeSet<Location>,
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
            uids: HashMap::new(),
            dependents: HashMap::new(),
            gc_pending: BTreeSet::new(),
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
        self.list_after(gr, ns, None)
    }

    /// [`Store::list`] from the first key after `after` (a list page's continue point): a range
    /// of the map, so a page starts where it continues instead of walking the objects before it.
    pub fn list_after<'a>(
        &'a self,
        gr: &GroupResource,
        ns: Option<&'a str>,
        after: Option<&ObjectKey>,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a Value)> + 'a {
        // Keys sort by namespace first, so one namespace is a range, not a scan.
        let lower = match (ns, after) {
            (_, Some(key)) if ns.is_none_or(|ns| key.0.as_str() >= ns) => Excluded(key.clone()),
            (Some(ns), _) => Included((ns.to_owned(), String::new())),
            (None, _) => Unbounded,
        };
        self.objects
            .get(gr)
            .into_iter()
            .flat_map(move |m| m.range((lower.clone(), Unbounded)))
            .take_while(move |((n, _), _)| ns.is_none_or(|ns| n == ns))
    }

    /// Every object in namespace `ns`, of any resource.
    pub fn in_namespace<'a>(
        &'a self,
        ns: &'a str,
    ) -> impl Iterator<Item = (&'a GroupResource, &'a ObjectKey, &'a Value)> + 'a {
        self.objects
            .keys()
            .flat_map(move |gr| self.list(gr, Some(ns)).map(move |(k, v)| (gr, k, v)))
    }

    /// Where the object with this uid is stored, if it exists.
    pub fn locate(&self, uid: &str) -> Option<&Location> {
        self.uids.get(uid)
    }

    /// The stored objects whose `ownerReferences` name `owner_uid`.
    pub fn dependents_of(&self, owner_uid: &str) -> Vec<Location> {
        self.dependents
            .get(owner_uid)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Take the next object the garbage collector should look at.
    pub fn next_gc_pending(&mut self) -> Option<Location> {
        self.gc_pending.pop_first()
    }

    fn is_deleting_at(&self, loc: &Location) -> bool {
        self.get(&loc.0, &loc.1.0, &loc.1.1)
            .is_some_and(|o| !o["metadata"]["deletionTimestamp"].is_null())
    }

    /// Queue the deleting owners among `owner_uids` for the collector (a
    /// foreground deletion may be waiting on the dependent that changed).
    fn note_owners(&mut self, owner_uids: &[String]) {
        for uid in owner_uids {
            if let Some(loc) = self.uids.get(uid)
                && self.is_deleting_at(loc)
            {
                self.gc_pending.insert(loc.clone());
            }
        }
    }

    /// Index a newly stored version of an object (replacing `old`) and queue
    /// what the garbage collector must now look at.
    fn index_put(&mut self, loc: &Location, old: Option<&Value>, new: &Value) {
        let old_owners = old.map(owner_uids).unwrap_or_default();
        let new_owners = owner_uids(new);
        if old_owners != new_owners {
            for uid in &old_owners {
                self.unlink_dependent(uid, loc);
            }
            for uid in &new_owners {
                self.dependents
                    .entry(uid.clone())
                    .or_default()
                    .insert(loc.clone());
            }
        }
        let uid = uid_of(new);
        if !uid.is_empty() {
            self.uids.insert(uid.to_string(), loc.clone());
        }
        let orphaned =
            !new_owners.is_empty() && new_owners.iter().all(|o| !self.uids.contains_key(o));
        if orphaned || !new["metadata"]["deletionTimestamp"].is_null() {
            self.gc_pending.insert(loc.clone());
        }
        self.note_owners(&old_owners);
        self.note_owners(&new_owners);
    }

    /// Drop a removed object from the indexes and queue its dependents (now
    /// perhaps orphaned), its deleting owners and its terminating namespace.
    fn index_remove(&mut self, loc: &Location, obj: &Value) {
        let owners = owner_uids(obj);
        for uid in &owners {
            self.unlink_dependent(uid, loc);
        }
        let uid = uid_of(obj);
        self.uids.remove(uid);
        if let Some(deps) = self.dependents.get(uid) {
            self.gc_pending.extend(deps.iter().cloned());
        }
        self.note_owners(&owners);
        let ns = &loc.1.0;
        if !ns.is_empty() {
            let namespace = (
                GroupResource::new("", "namespaces"),
                (String::new(), ns.clone()),
            );
            if self.is_deleting_at(&namespace) {
                self.gc_pending.insert(namespace);
            }
        }
    }

    fn unlink_dependent(&mut self, owner_uid: &str, loc: &Location) {
        if let Some(deps) = self.dependents.get_mut(owner_uid) {
            deps.remove(loc);
            if deps.is_empty() {
                self.dependents.remove(owner_uid);
            }
        }
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
        let loc = (gr.clone(), (ns.clone(), name));
        let old = self
            .objects
            .entry(gr.clone())
            .or_default()
            .insert(loc.1.clone(), obj);
        self.index_put(&loc, old.as_ref(), &object);
        self.publish(Change {
            rv,
            gr: gr.clone(),
            namespace: ns,
            kind,
            object,
            old: old.map(Arc::new),
            rendered: OnceLock::new(),
        });
    }

    /// Remove an object; the DELETED event carries it with a fresh resourceVersion.
    pub fn remove(&mut self, gr: &GroupResource, ns: &str, name: &str) -> Option<Value> {
        let loc = (gr.clone(), (ns.to_string(), name.to_string()));
        let mut obj = self.objects.get_mut(gr)?.remove(&loc.1)?;
        self.index_remove(&loc, &obj);
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        self.publish(Change {
            rv,
            gr: gr.clone(),
            namespace: ns.to_string(),
            kind: EventType::Deleted,
            object: Arc::new(obj.clone()),
            old: None,
            rendered: OnceLock::new(),
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

fn uid_of(obj: &Value) -> &str {
    obj["metadata"]["uid"].as_str().unwrap_or_default()
}

/// The owner uids named by an object's `ownerReferences`.
pub fn owner_uids(obj: &Value) -> Vec<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str().map(String::from))
        .collect()
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

    #[test]
    fn owner_index_queues_dependents_only_when_their_owner_goes() {
        let gr = GroupResource::new("", "configmaps");
        let mut s = Store::new(10);
        s.put(&gr, obj("owner", 2), EventType::Added);
        let mut dep = obj("dep", 3);
        dep["metadata"]["ownerReferences"] = json!([{"uid": "owner"}]);
        s.put(&gr, dep, EventType::Added);
        let dep_at = (gr.clone(), ("ns".to_string(), "dep".to_string()));
        assert_eq!(s.dependents_of("owner"), vec![dep_at.clone()]);
        assert_eq!(s.next_gc_pending(), None, "its owner is alive");
        s.remove(&gr, "ns", "owner");
        assert_eq!(s.next_gc_pending(), Some(dep_at));
        s.remove(&gr, "ns", "dep");
        assert!(s.dependents_of("owner").is_empty());
        assert!(s.locate("dep").is_none());
    }
}
