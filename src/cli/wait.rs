//! Waiting for one object to reach a state by watching it, so a command returns as soon as the
//! change lands instead of polling: what `rotate --wait` is built on.

use std::fmt::Debug;
use std::pin::pin;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

/// Why a wait ended without the state.
#[derive(Debug)]
pub enum WaitError<K> {
    /// The deadline passed; the object as last seen (`None`: not seen, or deleted).
    TimedOut(Option<K>),
    /// The API server refused the watch (401 or 403): waiting longer cannot help.
    Refused(kube::Error),
}

/// Watch object `name` of `api` until `check` returns `Some` for it (its value is returned), or
/// `deadline` passes. Transient watch failures are retried with backoff.
pub async fn until<K, T>(
    api: Api<K>,
    name: &str,
    deadline: Instant,
    mut check: impl FnMut(&K) -> Option<T>,
) -> Result<T, WaitError<K>>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut events = pin!(watcher::watch_object(api, name).default_backoff());
    let mut last = None;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Err(_) | Ok(None) => return Err(WaitError::TimedOut(last)),
            Ok(Some(Ok(object))) => {
                if let Some(found) = object.as_ref().and_then(&mut check) {
                    return Ok(found);
                }
                last = object;
            }
            Ok(Some(Err(error))) => {
                if let Some(refused) = refusal(error) {
                    return Err(WaitError::Refused(refused));
                }
            }
        }
    }
}

/// The watcher's error as the API's, when it is a refusal no retry can get past.
fn refusal(error: watcher::Error) -> Option<kube::Error> {
    let status = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status))
        | watcher::Error::WatchError(status) => status,
        _ => return None,
    };
    matches!(status.code, 401 | 403).then(|| kube::Error::Api(status))
}
