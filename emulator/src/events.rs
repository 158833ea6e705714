//! Events are one resource with two views. The API server stores Events once
//! (as core `v1` Events) and serves them through both `/api/v1` and
//! `events.k8s.io/v1`, converting on every read and write. kube-rs's
//! `Recorder` writes through `events.k8s.io/v1` while `kubectl describe` and
//! `kubectl get events` read core `v1`, so both must see the same objects.
//! The renames are those of Kubernetes' `pkg/apis/events/v1/conversion.go`;
//! the other fields (`metadata`, `eventTime`, `series`, `reportingInstance`,
//! `action`, `reason`, `related`, `type`) have the same name in both.

use serde_json::{Map, Value};

use crate::registry::{ResourceType, Storage};
use crate::selector::FieldSelector;

/// `(events.k8s.io/v1 field, core v1 field)` pairs.
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Which way a conversion goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToCore,
    ToEventsV1,
}

impl Direction {
    /// The name `field` has on the other side, `None` when it is not renamed.
    fn rename(self, field: &str) -> Option<&'static str> {
        RENAMED.iter().find_map(|&(events_v1, core)| match self {
            Direction::ToCore => (field == events_v1).then_some(core),
            Direction::ToEventsV1 => (field == core).then_some(events_v1),
        })
    }

    /// Whether `field` is the other version's name of a renamed field: the source version
    /// does not know it, and keeping it would shadow the converted field.
    fn is_foreign(self, field: &str) -> bool {
        RENAMED.iter().any(|&(events_v1, core)| match self {
            Direction::ToCore => field == core,
            Direction::ToEventsV1 => field == events_v1,
        })
    }

    fn api_version(self) -> &'static str {
        match self {
            Direction::ToCore => "v1",
            Direction::ToEventsV1 => "events.k8s.io/v1",
        }
    }
}

fn convert(obj: &Value, direction: Direction) -> Value {
    let Some(fields) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    for (k, v) in fields {
        match direction.rename(k) {
            Some(renamed) => {
                out.insert(renamed.to_string(), v.clone());
            }
            None if !direction.is_foreign(k) => {
                out.insert(k.clone(), v.clone());
            }
            None => {}
        }
    }
    out.insert("apiVersion".into(), direction.api_version().into());
    out.insert("kind".into(), "Event".into());
    Value::Object(out)
}

/// A stored object as `rt` serves it: stored core Events converted for `events.k8s.io/v1`.
pub fn to_view(rt: &ResourceType, stored: &Value) -> Option<Value> {
    (rt.storage == Storage::CoreEvents).then(|| convert(stored, Direction::ToEventsV1))
}

/// An object written through `rt`, in the form it is stored in.
pub fn to_storage(rt: &ResourceType, obj: Value) -> Value {
    match rt.storage {
        Storage::CoreEvents => convert(&obj, Direction::ToCore),
        Storage::Own => obj,
    }
}

/// A field selector of `rt`'s view over the stored form (`regarding.name` selects on
/// `involvedObject.name`, as the API server's field label conversion does).
pub fn stored_selector(rt: &ResourceType, selector: FieldSelector) -> FieldSelector {
    match rt.storage {
        Storage::CoreEvents => selector.renamed(|path| {
            let (first, rest) = path.split_once('.').unwrap_or((path, ""));
            Direction::ToCore.rename(first).map(|core| {
                if rest.is_empty() {
                    core.to_string()
                } else {
                    format!("{core}.{rest}")
                }
            })
        }),
        Storage::Own => selector,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conversion_round_trips_and_drops_the_other_versions_names() {
        let events_v1 = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "ns"},
            "regarding": {"kind": "Secret", "name": "s"}, "note": "minted",
            "reportingController": "keysmith", "reportingInstance": "pod-1",
            "deprecatedCount": 2, "eventTime": "2026-01-01T00:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2026-01-01T00:00:01.000000Z"},
            "type": "Normal", "reason": "Minted", "action": "Mint",
        });
        let core = convert(&events_v1, Direction::ToCore);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "s");
        assert_eq!(core["message"], "minted");
        assert_eq!(core["reportingComponent"], "keysmith");
        assert_eq!(core["count"], 2);
        assert!(core.get("note").is_none() && core.get("regarding").is_none());
        assert_eq!(convert(&core, Direction::ToEventsV1), events_v1);

        let mut stray = events_v1.clone();
        stray["message"] = json!("not an events.k8s.io/v1 field");
        assert_eq!(convert(&stray, Direction::ToCore)["message"], "minted");
    }
}
