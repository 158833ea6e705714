//! GET of one object: as itself, a Table or PartialObjectMetadata.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use crate::error::ApiResult;
use crate::http::{Presentation, ResourceCall, json_response};
use crate::state::{ObjectRef, Presented, State, present};
use crate::table;
use crate::watch::partial_metadata;

impl State {
    /// Read one object.
    pub fn get(&self, r: ObjectRef<'_>) -> ApiResult<Value> {
        r.stored(self)
            .map(|o| present(r.rt, o))
            .ok_or_else(|| r.not_found())
    }
}

/// Answer a GET.
pub fn serve(call: &ResourceCall<'_>) -> ApiResult<Response> {
    let r = call.object();
    // Tables are printed from the stored form, like lists.
    let st = call.server.state();
    let obj = r.stored(&st).ok_or_else(|| r.not_found())?;
    Ok(match call.presentation() {
        Presentation::Table(include) => json_response(
            StatusCode::OK,
            &table::render(r.rt, &[obj], crate::store::rv_of(obj), None, include),
            &[],
        ),
        Presentation::Metadata => json_response(StatusCode::OK, &partial_metadata(obj), &[]),
        Presentation::Object => json_response(StatusCode::OK, &Presented(r.rt, obj), &[]),
    })
}
