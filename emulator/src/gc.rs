//! Garbage collection and deletion completion, as the API server and
//! kube-controller-manager do it together: an object whose deletion was
//! requested disappears once its last finalizer is removed; dependents whose
//! owners (by `ownerReferences[].uid`) are all gone are deleted (background
//! propagation); an owner deleted in the foreground keeps the
//! `foregroundDeletion` finalizer until its blocking dependents are gone; a
//! terminating namespace is emptied, then removed.
//!
//! Unlike Kubernetes, the sweep runs synchronously inside the write that
//! triggers it, so tests observe a settled state right after the call. It
//! visits only the objects the store queued because a write concerned them
//! (see `Store::next_gc_pending`), with dependents found through the store's
//! owner index, so its cost follows the objects involved, not the store size.

use serde_json::{Value, json};

use crate::registry::GroupResource;
use crate::state::{State, finalizers, now};
use crate::store::{Location, ObjectKey, owner_uids};

/// The finalizer of foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";

fn is_deleting(obj: &Value) -> bool {
    !obj["metadata"]["deletionTimestamp"].is_null()
}

/// Start deleting an object: removed at once without finalizers, otherwise
/// marked with `deletionTimestamp`.
fn begin_delete(st: &mut State, gr: &GroupResource, key: &ObjectKey) {
    let Some(mut obj) = st.store.get(gr, &key.0, &key.1).cloned() else {
        return;
    };
    if finalizers(&obj).is_empty() && !is_namespace(gr) {
        st.remove_final(gr, &key.0, &key.1);
        return;
    }
    if !is_deleting(&obj) {
        obj["metadata"]["deletionTimestamp"] = json!(now());
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        if is_namespace(gr) {
            obj["status"]["phase"] = json!("Terminating");
        }
        st.put_raw(gr, obj);
    }
}

fn is_namespace(gr: &GroupResource) -> bool {
    gr.group.is_empty() && gr.resource == "namespaces"
}

fn drop_finalizer(st: &mut State, gr: &GroupResource, key: &ObjectKey, finalizer: &str) {
    if let Some(mut obj) = st.store.get(gr, &key.0, &key.1).cloned() {
        let rest: Vec<String> = finalizers(&obj)
            .into_iter()
            .filter(|f| f != finalizer)
            .collect();
        obj["metadata"]["finalizers"] = json!(rest);
        st.put_raw(gr, obj);
    }
}

/// Remove owner references to `owner_uid` from every dependent (the
/// `Orphan` propagation policy).
pub fn orphan_dependents(st: &mut State, owner_uid: &str) {
    for (gr, key) in st.store.dependents_of(owner_uid) {
        let Some(mut obj) = st.store.get(&gr, &key.0, &key.1).cloned() else {
            continue;
        };
        if let Some(refs) = obj["metadata"]["ownerReferences"].as_array_mut() {
            refs.retain(|r| r["uid"] != owner_uid);
        }
        st.put_raw(&gr, obj);
    }
}

/// Run garbage collection and deletion completion until nothing the store
/// queued needs more work.
pub fn sweep(st: &mut State) {
    while let Some((gr, key)) = st.store.next_gc_pending() {
        let Some(obj) = st.store.get(&gr, &key.0, &key.1) else {
            continue;
        };
        let deleting = is_deleting(obj);
        let fins = finalizers(obj);
        let uid = obj["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let owners = owner_uids(obj);
        if deleting && is_namespace(&gr) {
            empty_namespace(st, &gr, &key);
        } else if deleting && fins.is_empty() {
            st.remove_final(&gr, &key.0, &key.1);
        } else if deleting && fins.iter().any(|f| f == FOREGROUND) {
            let deps = st.store.dependents_of(&uid);
            for (dgr, dkey) in &deps {
                begin_delete(st, dgr, dkey);
            }
            // Dependents removed at once no longer block; the others are
            // deleting now and requeue this owner when they go.
            let blocked = deps.iter().any(|(dgr, dkey)| {
                st.store.get(dgr, &dkey.0, &dkey.1).is_some_and(|d| {
                    d["metadata"]["ownerReferences"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|r| r["uid"] == uid.as_str() && r["blockOwnerDeletion"] == true)
                })
            });
            if !blocked {
                drop_finalizer(st, &gr, &key, FOREGROUND);
            }
        } else if !deleting
            && !owners.is_empty()
            && owners.iter().all(|o| st.store.locate(o).is_none())
        {
            begin_delete(st, &gr, &key);
        }
    }
}

/// A terminating namespace: delete what it holds; once empty, remove it.
fn empty_namespace(st: &mut State, gr: &GroupResource, key: &ObjectKey) {
    let ns = &key.1;
    let contents: Vec<Location> = st
        .store
        .in_namespace(ns)
        .filter(|(_, _, o)| !is_deleting(o))
        .map(|(g, k, _)| (g.clone(), k.clone()))
        .collect();
    for (cgr, ckey) in &contents {
        begin_delete(st, cgr, ckey);
    }
    if st.store.in_namespace(ns).next().is_none() {
        st.remove_final(gr, &key.0, &key.1);
    }
}
