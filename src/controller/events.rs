//! The controller's events: events.k8s.io/v1 Events about ApiKeys, as `kubectl describe ak` and
//! `kubectl get events` show them, with exact repeats within six minutes folded into an
//! EventSeries.
//!
//! kube-runtime's `Recorder` does the same but keeps a full clone of every event it published,
//! keyed by another full object reference, for six minutes: about 3 KiB per freshly minted key,
//! most of the controller's memory when a fleet of keys is minted at once. [`Series`] keeps a
//! hash and the event's name per entry instead, and at most [`MAX_SERIES`] entries.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use keysmith_core::api::ApiKey;
use keysmith_core::planner::EventKind;

/// How long a repeat joins the series of the event before it (as client-go and kube-runtime).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// Events remembered for series. An event whose entry was evicted is published anew when it
/// repeats, which only costs an extra line in `kubectl get events`; the bound keeps memory flat
/// however many keys are minted within the window (an entry is under 100 bytes).
pub(crate) const MAX_SERIES: usize = 4096;
/// The action of every event: the controller acts on an ApiKey by reconciling it.
const ACTION: &str = "Reconcile";

/// Publishes events as `controller` (instance `instance`, the pod name, or the controller's).
pub(crate) struct EventWriter {
    client: Client,
    controller: String,
    instance: String,
    series: Mutex<Series>,
}

impl EventWriter {
    pub(crate) fn new(client: Client, controller: &str, instance: Option<String>) -> EventWriter {
        EventWriter {
            client,
            controller: controller.to_owned(),
            instance: instance.unwrap_or_else(|| controller.to_owned()),
            series: Mutex::new(Series::new(MAX_SERIES)),
        }
    }

    /// Publish an event about `key`, or count it into the series of the same event (same key,
    /// type, reason and note) published within the last six minutes.
    pub(crate) async fn publish(
        &self,
        key: &ApiKey,
        type_: EventKind,
        reason: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let namespace = key.namespace().unwrap_or_default();
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let hash = series_hash(
            key.uid().as_deref().unwrap_or_default(),
            type_,
            reason,
            &note,
        );
        let now = Timestamp::now();
        let repeat = self.series().repeat(hash, now);
        if let Some(Repeat { name, count }) = repeat {
            let patch = json!({"series": EventSeries {
                count,
                last_observed_time: MicroTime(now),
            }});
            match events
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                // Gone (the API server's event TTL is shorter than a key's life): start anew.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                other => return other.map(drop),
            }
        }
        let event = self.event(key, &namespace, type_, reason, note, now);
        let name = event.name_any();
        events.create(&PostParams::default(), &event).await?;
        self.series().first(hash, name, now);
        Ok(())
    }

    fn event(
        &self,
        key: &ApiKey,
        namespace: &str,
        type_: EventKind,
        reason: &str,
        note: String,
        now: Timestamp,
    ) -> Event {
        let regarding = key.object_ref(&());
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            action: Some(ACTION.to_owned()),
            reason: Some(reason.to_owned()),
            note: Some(note),
            type_: Some(
                match type_ {
                    EventKind::Normal => "Normal",
                    EventKind::Warning => "Warning",
                }
                .to_owned(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        }
    }

    fn series(&self) -> MutexGuard<'_, Series> {
        // A poisoned cache only costs a repeat its series; keep using it.
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What identifies repeats of one event: the ApiKey (by uid, so a recreated key starts afresh),
/// the type, the reason and the note; the reporter and action are the controller's own.
///
/// The note belongs to the key because a series only counts: the API server refuses to change
/// the note of an events.k8s.io/v1 Event ("field is immutable"), so a series of different notes
/// would show the first occurrence's text with the latest count, e.g. the first rotation's token
/// ids for the third rotation (invariant I6). A different note is a new Event instead: one
/// write, as a series patch would be, and `kubectl describe` lists what each occurrence said.
fn series_hash(uid: &str, type_: EventKind, reason: &str, note: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (uid, type_ == EventKind::Warning, reason, note).hash(&mut hasher);
    hasher.finish()
}

/// The recent events, for folding repeats into series: bounded, oldest evicted first.
#[derive(Debug)]
pub(crate) struct Series {
    entries: HashMap<u64, Entry>,
    max: usize,
}

#[derive(Debug)]
struct Entry {
    /// The published event's name.
    name: String,
    /// Times it happened so far.
    count: i32,
    /// When it last happened.
    last: Timestamp,
}

/// A repeat to publish as a series: the event's name and its count including this one.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Repeat {
    pub(crate) name: String,
    pub(crate) count: i32,
}

impl Series {
    pub(crate) fn new(max: usize) -> Series {
        Series {
            entries: HashMap::new(),
            max,
        }
    }

    /// Count a repeat at `now` of the event `hash` names, if it last happened within the window.
    pub(crate) fn repeat(&mut self, hash: u64, now: Timestamp) -> Option<Repeat> {
        let entry = self.entries.get_mut(&hash)?;
        if !within_window(entry.last, now) {
            self.entries.remove(&hash);
            return None;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        Some(Repeat {
            name: entry.name.clone(),
            count: entry.count,
        })
    }

    /// Remember a newly published event, making room if the cache is full: expired entries go
    /// first, then the least recently seen.
    pub(crate) fn first(&mut self, hash: u64, name: String, now: Timestamp) {
        if self.entries.len() >= self.max && !self.entries.contains_key(&hash) {
            self.entries.retain(|_, e| within_window(e.last, now));
            if self.entries.len() >= self.max {
                let oldest = self.entries.iter().min_by_key(|(_, e)| e.last);
                if let Some(oldest) = oldest.map(|(hash, _)| *hash) {
                    self.entries.remove(&oldest);
                }
            }
        }
        let entry = Entry {
            name,
            count: 1,
            last: now,
        };
        self.entries.insert(hash, entry);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

fn within_window(last: Timestamp, now: Timestamp) -> bool {
    now.duration_since(last) < SERIES_WINDOW
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn repeat(name: &str, count: i32) -> Option<Repeat> {
        Some(Repeat {
            name: name.to_owned(),
            count,
        })
    }

    #[test]
    fn repeats_within_six_minutes_count_into_one_series() {
        let mut series = Series::new(8);
        assert_eq!(series.repeat(1, at(0)), None);
        series.first(1, "site.1".to_owned(), at(0));
        assert_eq!(series.repeat(1, at(60)), repeat("site.1", 2));
        // The window runs from the last repeat, not the first event.
        assert_eq!(series.repeat(1, at(60 + 359)), repeat("site.1", 3));
        // Another event of the same key is its own series.
        assert_eq!(series.repeat(2, at(60 + 359)), None);
    }

    #[test]
    fn a_repeat_after_six_minutes_is_a_new_event() {
        let mut series = Series::new(8);
        series.first(1, "site.1".to_owned(), at(0));
        assert_eq!(series.repeat(1, at(360)), None);
        assert_eq!(series.len(), 0, "the expired entry is dropped");
        series.first(1, "site.2".to_owned(), at(360));
        assert_eq!(series.repeat(1, at(361)), repeat("site.2", 2));
    }

    #[test]
    fn the_cache_never_holds_more_than_its_bound() {
        let mut series = Series::new(3);
        for hash in 0..10 {
            series.first(
                hash,
                format!("key{hash}.1"),
                at(i64::try_from(hash).unwrap()),
            );
            assert!(series.len() <= 3);
        }
        // The three most recent remain; the oldest were evicted first.
        assert_eq!(series.len(), 3);
        assert_eq!(series.repeat(6, at(20)), None);
        assert_eq!(series.repeat(9, at(20)), repeat("key9.1", 2));
    }

    #[test]
    fn a_full_cache_evicts_the_least_recently_seen_and_expired_first() {
        let mut series = Series::new(3);
        series.first(1, "a.1".to_owned(), at(0));
        series.first(2, "b.1".to_owned(), at(1));
        series.first(3, "c.1".to_owned(), at(2));
        // Seen again, the oldest entry becomes the most recent.
        assert_eq!(series.repeat(1, at(3)), repeat("a.1", 2));
        series.first(4, "d.1".to_owned(), at(4));
        assert_eq!(series.repeat(2, at(5)), None, "b was least recently seen");
        assert_eq!(series.repeat(1, at(5)), repeat("a.1", 3));
        // Past the window every old entry expires at once, making room without evicting.
        series.first(5, "e.1".to_owned(), at(400));
        assert_eq!(series.len(), 1);
    }

    #[test]
    fn the_series_key_is_the_apikey_type_reason_and_note() {
        let minted = series_hash("uid-1", EventKind::Normal, "Minted", "token a");
        assert_eq!(
            minted,
            series_hash("uid-1", EventKind::Normal, "Minted", "token a")
        );
        for other in [
            series_hash("uid-2", EventKind::Normal, "Minted", "token a"),
            series_hash("uid-1", EventKind::Warning, "Minted", "token a"),
            series_hash("uid-1", EventKind::Normal, "Rotated", "token a"),
            series_hash("uid-1", EventKind::Normal, "Minted", "token b"),
        ] {
            assert_ne!(minted, other);
        }
    }
}
