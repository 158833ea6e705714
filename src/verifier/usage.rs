//! Usage write-back: `status.tokens[].lastUsedAt`, at most once a minute per token.
//!
//! The hot path only does an atomic compare-and-swap
//! ([`UsageMark::claim`](keysmith_core::verifier::usage::UsageMark::claim)) and, once a minute per
//! token, a non-blocking channel send. A background task batches what arrives for a second and
//! writes one patch per ApiKey.
//!
//! The patch is a JSON Patch, guarded by a `test` of the token's hash at its place in status (the
//! slot's entry, its `previous`, or one of its `earlier`), that sets only that entry's
//! `lastUsedAt`, under the field manager `keysmith-verifier`: a use is never written onto
//! another token, also when a rotation moved things meanwhile. A server-side apply would have
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
    /// Where the token is in status when it was indexed.
    pub entry: StatusEntry,
    /// When it was used.
    pub at: Timestamp,
}

/// A token's entry in `status.tokens`, and its hash there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StatusEntry {
    /// Position of the slot in `status.tokens`.
    pub position: usize,
    /// `None`: the slot's current token; `Some(0)`: its `previous`; `Some(n)`: `earlier[n - 1]`.
    pub replaced: Option<usize>,
    /// Hex SHA-256 of the token.
    pub sha256: String,
}

impl StatusEntry {
    /// JSON pointer to `field` of this entry.
    pub(super) fn field(&self, field: &str) -> json_patch::jsonptr::PointerBuf {
        let position = self.position.to_string();
        let mut tokens = vec!["status", "tokens", &position];
        let earlier;
        match self.replaced {
            None => {}
            Some(0) => tokens.push("previous"),
            Some(n) => {
                earlier = (n - 1).to_string();
                tokens.extend(["earlier", &earlier]);
            }
        }
        tokens.push(field);
        json_patch::jsonptr::PointerBuf::from_tokens(tokens)
    }
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
                entry: StatusEntry {
                    position: found.status_position,
                    replaced: found.replaced,
                    sha256: found.hash.to_hex(),
                },
                at: now,
            });
        }
    }
}

/// The JSON Patch that sets the uses of one ApiKey's tokens. Each `lastUsedAt` is guarded by a
/// `test` of the token's hash at that entry, so a status that moved meanwhile (a rotation, a
/// reordering) is never mislabelled: the patch fails as a whole, and the next use writes again.
pub fn usage_patch(uses: &BTreeMap<StatusEntry, Timestamp>) -> json_patch::Patch {
    use json_patch::{AddOperation, PatchOperation, TestOperation};
    let ops = uses
        .iter()
        .flat_map(|(entry, at)| {
            [
                PatchOperation::Test(TestOperation {
                    path: entry.field("sha256"),
                    value: entry.sha256.as_str().into(),
                }),
                PatchOperation::Add(AddOperation {
                    path: entry.field("lastUsedAt"),
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
    let mut pending: BTreeMap<(String, String), BTreeMap<StatusEntry, Timestamp>> = BTreeMap::new();
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            used = rx.recv() => match used {
                Some(u) => {
                    let slots = pending.entry((u.namespace, u.name)).or_default();
                    let at = slots.entry(u.entry).or_insert(u.at);
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
    fn patch_guards_each_token_by_its_hash_and_sets_only_its_last_used_at_in_whole_seconds() {
        let at: Timestamp = "2026-11-23T10:00:00.987654321Z".parse().unwrap();
        let entry = |replaced, sha256: &str| StatusEntry {
            position: 1,
            replaced,
            sha256: sha256.into(),
        };
        let uses = BTreeMap::from([
            (entry(None, "aa"), at),
            (entry(Some(0), "bb"), at),
            (entry(Some(2), "cc"), at),
        ]);
        let patch = serde_json::to_value(usage_patch(&uses)).unwrap();
        assert_eq!(
            patch,
            serde_json::json!([
                {"op": "test", "path": "/status/tokens/1/sha256", "value": "aa"},
                {"op": "add", "path": "/status/tokens/1/lastUsedAt", "value": "2026-11-23T10:00:00Z"},
                {"op": "test", "path": "/status/tokens/1/previous/sha256", "value": "bb"},
                {"op": "add", "path": "/status/tokens/1/previous/lastUsedAt", "value": "2026-11-23T10:00:00Z"},
                {"op": "test", "path": "/status/tokens/1/earlier/1/sha256", "value": "cc"},
                {"op": "add", "path": "/status/tokens/1/earlier/1/lastUsedAt", "value": "2026-11-23T10:00:00Z"}
            ])
        );
    }
}
