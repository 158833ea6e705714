//! Watch streams: newline-delimited JSON events from a resourceVersion
//! (replayed from the store's history window, `410 Gone` as an ERROR event
//! when the version is too old), the synthetic initial ADDED events of a
//! fresh watch or a `sendInitialEvents` streaming list (closed by the
//! `k8s.io/initial-events-end` bookmark), periodic BOOKMARKs, selector
//! transitions (an object leaving the selector is DELETED for the watcher),
//! `timeoutSeconds`, and the fault limits that close streams early.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use futures::SinkExt;
use futures::channel::mpsc;
use futures::stream::Stream;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::error::{ApiError, ApiResult};
use crate::faults::WatchLimits;
use crate::registry::{GroupResource, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::state::{Presented, State};
use crate::store::{Change, EventType};

/// A parsed watch request.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    /// The kind watched.
    pub rt: ResourceType,
    /// Where its objects are stored (`rt.group_resource()`, computed once: every watcher
    /// sees every change).
    pub stored_as: GroupResource,
    /// Namespace, `None` for all.
    pub namespace: Option<String>,
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
    /// `resourceVersion` parameter.
    pub resource_version: Option<String>,
    /// `sendInitialEvents=true`.
    pub send_initial_events: bool,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
    /// Interval between bookmarks.
    pub bookmark_interval: Duration,
    /// Stream `PartialObjectMetadata` instead of full objects.
    pub metadata_only: bool,
    /// Fault limits.
    pub limits: WatchLimits,
    /// Changes when the test closes every open watch.
    pub close: tokio::sync::watch::Receiver<u64>,
}

impl WatchRequest {
    fn matches(&self, ns: &str, obj: &Value) -> bool {
        self.namespace.as_deref().is_none_or(|want| want == ns)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }

    fn render(&self, kind: &str, obj: &Value) -> Bytes {
        if self.metadata_only {
            event_line(kind, &partial_metadata(obj))
        } else {
            event_line(kind, &Presented(&self.rt, obj))
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let (api_version, kind) = if self.metadata_only {
            (
                "meta.k8s.io/v1".to_string(),
                "PartialObjectMetadata".to_string(),
            )
        } else {
            (self.rt.api_version(), self.rt.kind.clone())
        };
        let mut line = json!({"type": "BOOKMARK", "object": {
            "kind": kind, "apiVersion": api_version, "metadata": meta}})
        .to_string();
        line.push('\n');
        Bytes::from(line)
    }

    /// The event line of a change, reusing the change's serialized object
    /// when another watcher of the same version already produced it.
    fn render_change(&self, kind: &str, change: &Change) -> Bytes {
        if self.metadata_only {
            return self.render(kind, &change.object);
        }
        let api_version = self.rt.api_version();
        let (rendered_for, object) = change.rendered.get_or_init(|| {
            (
                api_version.clone(),
                serde_json::to_string(&Presented(&self.rt, &change.object))
                    .expect("JSON values serialize"),
            )
        });
        if *rendered_for != api_version {
            return self.render(kind, &change.object);
        }
        Bytes::from(format!("{{\"type\":\"{kind}\",\"object\":{object}}}\n"))
    }

    /// The event a watcher sees for a change, after selector transitions.
    fn event_for(&self, change: &Change) -> Option<Bytes> {
        if change.gr != self.stored_as {
            return None;
        }
        let now = self.matches(&change.namespace, &change.object);
        let before = change
            .old
            .as_ref()
            .is_some_and(|o| self.matches(&change.namespace, o));
        let kind = match (change.kind, before, now) {
            (EventType::Modified, false, true) => "ADDED",
            (EventType::Modified, true, false) => "DELETED",
            (_, _, true) => change.kind.as_str(),
            _ => return None,
        };
        Some(self.render_change(kind, change))
    }
}

/// `meta.k8s.io/v1 PartialObjectMetadata` of an object.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
           "metadata": obj["metadata"].clone()})
}

/// One watch event line, serialized straight from `object`.
fn event_line(kind: &str, object: &impl Serialize) -> Bytes {
    #[derive(Serialize)]
    struct Event<'a, T> {
        #[serde(rename = "type")]
        kind: &'a str,
        object: T,
    }
    let mut line = serde_json::to_vec(&Event { kind, object }).expect("JSON values serialize");
    line.push(b'\n');
    Bytes::from(line)
}

fn gone(rv: u64, oldest: u64) -> Bytes {
    let status = ApiError::gone(format!("too old resource version: {rv} ({oldest})")).status();
    let mut line = json!({"type": "ERROR", "object": status}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// Open a watch. Called with the state lock held, so the initial state and
/// the subscription to later changes are one atomic snapshot.
pub fn open(
    st: &State,
    req: WatchRequest,
) -> ApiResult<impl Stream<Item = Result<Bytes, Infallible>> + use<>> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let mut initial: Vec<Bytes> = Vec::new();
    let current = st.store.current_rv();
    let requested = req.resource_version.as_deref().filter(|v| !v.is_empty());
    let from_scratch = req.send_initial_events || matches!(requested, None | Some("0"));
    let (backlog, events, start_rv) = if from_scratch {
        for (key, obj) in st.store.list(&req.stored_as, req.namespace.as_deref()) {
            if req.matches(&key.0, obj) {
                initial.push(req.render("ADDED", obj));
            }
        }
        if req.send_initial_events {
            initial.push(req.bookmark(current, true));
        }
        (Vec::new(), Some(st.store.subscribe()), current)
    } else {
        let rv: u64 = requested.unwrap_or_default().parse().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid resource version: {}",
                requested.unwrap_or_default()
            ))
        })?;
        match st.store.watch_from(rv) {
            Some((backlog, sub)) => (backlog, Some(sub), rv),
            None => {
                initial.push(gone(rv, st.store.compacted_rv()));
                (Vec::new(), None, rv)
            }
        }
    };
    initial.extend(backlog.iter().filter_map(|c| req.event_for(c)));
    let last_seen = backlog.last().map_or(start_rv, |c| c.rv);

    tokio::spawn(pump(req, tx, initial, events, last_seen));
    Ok(rx)
}

async fn pump(
    mut req: WatchRequest,
    mut tx: mpsc::Sender<Result<Bytes, Infallible>>,
    initial: Vec<Bytes>,
    events: Option<tokio::sync::broadcast::Receiver<Arc<Change>>>,
    mut last_seen: u64,
) {
    let limit = req.limits.max_events.unwrap_or(usize::MAX);
    let mut sent = 0usize;
    let far = Duration::from_secs(365 * 24 * 3600);
    let deadline = [req.timeout, req.limits.max_duration]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(far);
    let deadline = tokio::time::Instant::now() + deadline;
    for line in initial {
        if sent >= limit || tx.send(Ok(line)).await.is_err() {
            return;
        }
        sent += 1;
    }
    let Some(mut events) = events else { return };
    let mut ticker = tokio::time::interval(req.bookmark_interval);
    ticker.tick().await;
    loop {
        if sent >= limit {
            return;
        }
        let line = tokio::select! {
            change = events.recv() => match change {
                Ok(change) => {
                    last_seen = last_seen.max(change.rv);
                    match req.event_for(&change) {
                        Some(line) => line,
                        None => continue,
                    }
                }
                // A watcher too slow to keep up is closed, as the API server
                // does; the client re-watches from its last version.
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
            },
            _ = ticker.tick(), if req.bookmarks => req.bookmark(last_seen, false),
            _ = tokio::time::sleep_until(deadline) => return,
            _ = req.close.changed() => return,
        };
        if tx.send(Ok(line)).await.is_err() {
            return;
        }
        sent += 1;
    }
}
