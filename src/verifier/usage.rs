//! Usage write-back: `status.tokens[].lastUsedAt`, at most once a minute per token.
//!
//! The hot path only does an atomic compare-and-swap
//! ([`UsageMark::claim`](keysmith_core::verifier::usage::UsageMark::claim)) and, once a minute per
//! token, a non-blocking channel send. A background task batches what arrives for a second and
//! writes one patch per ApiKey.
//!
//! The patch is a JSON Patch, guarded by a `test` of the slot's name at its position, that sets
//! only `lastUsedAt`, under the field manager `keysmith-verifier`. A server-side apply would have
//! to re-state every `lastUsedAt` the verifier ever wrote (an apply that omits a field its manager
//! owns deletes it), and it would re-create a list item the controller had just removed; the
//! guarded patch touches one field and fails harmlessly (422) when the list moved, so it never
//! fights the controller. Usage is best effort: a full channel or a failed patch drops a report.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::sync::mpsc;

use keysmith_core::api::ApiKey;
use keysmith_core::planner::timing::whole_seconds;
use keysmith_core::verifier::index::Found;

/// Field manager of every write the verifier makes.
pub const FIELD_MANAGER: &str = "keysmith-verifier";
/// How long reports are batched before they are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Reports that may wait for the writer; beyond this they are dropped.
pub const QUEUE: usize = 4096;

/// One token used at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    /// ApiKey namespace.
    pub namespace: String,
    /// ApiKey name.
    pub name: String,
    /// Slot name.
    pub slot: String,
    /// Position of the slot in `status.tokens` when it was indexed.
    pub position: usize,
    /// When it was used.
    pub at: Timestamp,
}

/// The hot path's handle: report a successful verification.
#[derive(Clone)]
pub struct UsageReporter {
    tx: mpsc::Sender<Use>,
}

impl UsageReporter {
    /// A reporter and the receiving end for [`write_usage`].
    pub fn channel() -> (UsageReporter, mpsc::Receiver<Use>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (UsageReporter { tx }, rx)
    }

    /// Note a VALID verification of `found`.
    pub fn record(&self, found: &Found, now: Timestamp) {
        if found.usage.claim(now) {
            // Dropped when the writer is behind: usage is informational.
            let _ = self.tx.try_send(Use {
                namespace: found.key.namespace.clone(),
                name: found.key.name.clone(),
                slot: found.slot_name().to_owned(),
                position: found.status_position,
                at: now,
            });
        }
    }
}

/// The JSON Patch that sets the uses of one ApiKey's slots. Each `lastUsedAt` is guarded by a
/// `test` of the slot name at that position, so a status reordered meanwhile is never mislabelled.
pub fn usage_patch(uses: &BTreeMap<(usize, String), Timestamp>) -> json_patch::Patch {
    use json_patch::jsonptr::PointerBuf;
    use json_patch::{AddOperation, PatchOperation, TestOperation};
    let field = |position: usize, name: &str| {
        PointerBuf::from_tokens(["status", "tokens", &position.to_string(), name])
    };
    let ops = uses
        .iter()
        .flat_map(|((position, slot), at)| {
            [
                PatchOperation::Test(TestOperation {
                    path: field(*position, "name"),
                    value: slot.as_str().into(),
                }),
                PatchOperation::Add(AddOperation {
                    path: field(*position, "lastUsedAt"),
                    // Whole seconds, as every time in status (and `metav1.Time`'s own precision).
                    value: whole_seconds(*at).to_string().into(),
                }),
            ]
        })
        .collect();
    json_patch::Patch(ops)
}

/// Write reports from `rx` back to status until the channel closes.
pub async fn write_usage(client: kube::Client, mut rx: mpsc::Receiver<Use>) {
    let mut pending: BTreeMap<(String, String), BTreeMap<(usize, String), Timestamp>> =
        BTreeMap::new();
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            used = rx.recv() => match used {
                Some(u) => {
                    let slots = pending.entry((u.namespace, u.name)).or_default();
                    let at = slots.entry((u.position, u.slot)).or_insert(u.at);
                    *at = (*at).max(u.at);
                }
                None => break,
            },
            _ = tick.tick() => {
                for ((namespace, name), uses) in std::mem::take(&mut pending) {
                    let api: Api<ApiKey> = Api::namespaced(client.clone(), &namespace);
                    let params = PatchParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..PatchParams::default()
                    };
                    let patch = Patch::Json::<()>(usage_patch(&uses));
                    if let Err(err) = api.patch_status(&name, &params, &patch).await {
                        tracing::debug!(%namespace, %name, error = %err, "usage not written");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_guards_each_slot_by_name_and_sets_only_last_used_at_in_whole_seconds() {
        let at: Timestamp = "2026-11-23T10:00:00.987654321Z".parse().unwrap();
        let uses = BTreeMap::from([((1, "delivery".to_owned()), at)]);
        let patch = serde_json::to_value(usage_patch(&uses)).unwrap();
        assert_eq!(
            patch,
            serde_json::json!([
                {"op": "test", "path": "/status/tokens/1/name", "value": "delivery"},
                {"op": "add", "path": "/status/tokens/1/lastUsedAt", "value": "2026-11-23T10:00:00Z"}
            ])
        );
    }
}
