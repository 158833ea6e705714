//! WATCH: the query parameters of a watch become a [`WatchRequest`]; the
//! stream itself is `watch.rs`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;

use crate::error::ApiResult;
use crate::http::{Presentation, ResourceCall};
use crate::watch::{self, WatchRequest};

/// Answer a WATCH with a stream of newline-delimited events.
pub fn serve(call: &ResourceCall<'_>) -> ApiResult<Response> {
    let mut fields = call.param("fieldSelector").unwrap_or_default().to_string();
    let name = &call.request.name;
    if !name.is_empty() {
        // The legacy `/watch/.../NAME` form pins the name.
        if !fields.is_empty() {
            fields.push(',');
        }
        fields.push_str(&format!("metadata.name={name}"));
    }
    let server = call.server;
    let req = WatchRequest {
        rt: call.rt.clone(),
        stored_as: call.rt.group_resource(),
        namespace: call.namespace_filter().map(String::from),
        labels: call.labels()?,
        fields: call.field_selector(&fields)?,
        resource_version: call.param("resourceVersion").map(String::from),
        send_initial_events: call.flag("sendInitialEvents"),
        bookmarks: call.flag("allowWatchBookmarks"),
        timeout: call
            .param("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .map(Duration::from_secs),
        bookmark_interval: server.bookmark_interval,
        metadata_only: matches!(call.presentation(), Presentation::Metadata),
        limits: server.faults.watch_limits(),
        close: server.faults.close_signal(),
    };
    let stream = {
        let st = server.state();
        watch::open(&st, req)?
    };
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
