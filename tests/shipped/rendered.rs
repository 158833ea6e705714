//! What the chart tests share: where the chart is, the release they render and install, and how
//! they read the rendered objects.

use serde_json::Value;

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/keysmith");
pub const RELEASE: &str = "keysmith";
/// The release namespace: home of the ServiceAccounts and the leader Lease.
pub const NAMESPACE: &str = "keysmith";

/// The string at JSON `pointer` in `value`; panics naming it when there is none.
pub fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} is not a string in {value}"))
}

/// The rendered objects of `kind`.
pub fn of_kind<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    objects.iter().filter(move |o| o["kind"] == kind)
}
