//! Garbage collection and deletion completion, as the API server and
//! kube-controller-manager do it together: an object whose deletion was
//! requested disappears once its last finalizer is removed; dependents whose
//! owners (by `ownerReferences[].uid`) are all gone are deleted (background
//! propagation); an owner deleted in the foreground keeps the
//! `foregroundDeletion` finalizer until its blocking dependents are gone; a
//! terminating namespace is emptied, then removed.
//!
//! Unlike Kubernetes, the sweep runs synchronously inside the write that
//! triggers it, so tests observe a settled state right after the call.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use crate::objects::{State, finalizers, now};
use crate::registry::GroupResource;
use crate::store::ObjectKey;

/// The finalizer of foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";

struct Info {
    gr: GroupResource,
    key: ObjectKey,
    uid: String,
    deleting: bool,
    finalizers: Vec<String>,
    /// (owner uid, blockOwnerDeletion)
    owners: Vec<(String, bool)>,
}

fn snapshot(st: &State) -> Vec<Info> {
    st.store
        .all()
        .map(|(gr, key, obj)| Info {
            gr: gr.clone(),
            key: key.clone(),
            uid: obj["metadata"]["uid"].as_str().unwrap_or_default().into(),
            deleting: !obj["metadata"]["deletionTimestamp"].is_null(),
            finalizers: finalizers(obj),
            owners: obj["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    (
                        r["uid"].as_str().unwrap_or_default().to_string(),
                        r["blockOwnerDeletion"].as_bool().unwrap_or(false),
                    )
                })
                .collect(),
        })
        .collect()
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
    if obj["metadata"]["deletionTimestamp"].is_null() {
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
    let dependents: Vec<(GroupResource, ObjectKey, Value)> = st
        .store
        .all()
        .filter(|(_, _, o)| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == owner_uid))
        })
        .map(|(gr, k, o)| (gr.clone(), k.clone(), o.clone()))
        .collect();
    for (gr, _, mut obj) in dependents {
        if let Some(refs) = obj["metadata"]["ownerReferences"].as_array_mut() {
            refs.retain(|r| r["uid"] != owner_uid);
        }
        st.put_raw(&gr, obj);
    }
}

/// Run garbage collection and deletion completion to a fixpoint.
pub fn sweep(st: &mut State) {
    loop {
        let infos = snapshot(st);
        let live: HashSet<&str> = infos.iter().map(|i| i.uid.as_str()).collect();
        let mut dependents: HashMap<&str, Vec<&Info>> = HashMap::new();
        for i in &infos {
            for (owner, _) in &i.owners {
                dependents.entry(owner.as_str()).or_default().push(i);
            }
        }
        let mut actions: Vec<Action> = Vec::new();
        for i in &infos {
            if i.deleting && i.finalizers.is_empty() && !is_namespace(&i.gr) {
                actions.push(Action::Remove(i.gr.clone(), i.key.clone()));
                continue;
            }
            if i.deleting && is_namespace(&i.gr) {
                let ns = &i.key.1;
                let contents: Vec<&Info> = infos
                    .iter()
                    .filter(|o| !is_namespace(&o.gr) && o.key.0 == *ns)
                    .collect();
                if contents.is_empty() {
                    actions.push(Action::Remove(i.gr.clone(), i.key.clone()));
                } else {
                    actions.extend(
                        contents
                            .into_iter()
                            .filter(|o| !o.deleting)
                            .map(|o| Action::Delete(o.gr.clone(), o.key.clone())),
                    );
                }
                continue;
            }
            if i.deleting && i.finalizers.iter().any(|f| f == FOREGROUND) {
                let deps = dependents.get(i.uid.as_str()).cloned().unwrap_or_default();
                actions.extend(
                    deps.iter()
                        .filter(|d| !d.deleting)
                        .map(|d| Action::Delete(d.gr.clone(), d.key.clone())),
                );
                let blocked = deps
                    .iter()
                    .any(|d| d.owners.iter().any(|(uid, block)| *block && *uid == i.uid));
                if !blocked {
                    actions.push(Action::DropFinalizer(
                        i.gr.clone(),
                        i.key.clone(),
                        FOREGROUND,
                    ));
                }
                continue;
            }
            let orphaned = !i.owners.is_empty()
                && i.owners.iter().all(|(uid, _)| !live.contains(uid.as_str()));
            if orphaned && !i.deleting {
                actions.push(Action::Delete(i.gr.clone(), i.key.clone()));
            }
        }
        if actions.is_empty() {
            return;
        }
        for a in actions {
            match a {
                Action::Remove(gr, key) => {
                    st.remove_final(&gr, &key.0, &key.1);
                }
                Action::Delete(gr, key) => begin_delete(st, &gr, &key),
                Action::DropFinalizer(gr, key, f) => drop_finalizer(st, &gr, &key, f),
            }
        }
    }
}

enum Action {
    Remove(GroupResource, ObjectKey),
    Delete(GroupResource, ObjectKey),
    DropFinalizer(GroupResource, ObjectKey, &'static str),
}
