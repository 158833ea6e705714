//! Content negotiation: decoding request bodies (JSON, YAML, the protobuf
//! subset clients send), choosing how objects are presented (as themselves,
//! a Table, or PartialObjectMetadata), and JSON answers with warnings.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::http::route::Query;
use crate::table::IncludeObject;

/// A JSON answer, with each warning as a `Warning: 299` header.
pub fn json_response(code: StatusCode, body: &impl Serialize, warnings: &[String]) -> Response {
    let mut resp = (code, axum::Json(body)).into_response();
    for w in warnings {
        let text = format!("299 - {}", Value::String(w.clone()));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// The request's `Content-Type`, JSON when absent.
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string()
}

/// Decode a JSON, YAML or protobuf body; an empty body is an empty object.
pub fn decode(body: &Bytes, ct: &str) -> ApiResult<Value> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    if ct.contains("protobuf") {
        return crate::protobuf::decode_object(body)
            .ok_or_else(|| ApiError::unsupported_media_type(ct));
    }
    if ct.contains("cbor") {
        return Err(ApiError::unsupported_media_type(ct));
    }
    serde_json::from_slice(body).or_else(|json_err| {
        if ct.contains("yaml") {
            serde_saphyr::from_slice::<Value>(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
        } else {
            Err(ApiError::bad_request(format!(
                "couldn't get version/kind; json parse error: {json_err}"
            )))
        }
    })
}

/// How the client asked to see objects.
pub enum Presentation {
    /// As they are.
    Object,
    /// As a `meta.k8s.io/v1 Table` (what kubectl prints).
    Table(IncludeObject),
    /// As `PartialObjectMetadata`.
    Metadata,
}

/// The presentation the `Accept` header asks for.
pub fn presentation(headers: &HeaderMap, query: &Query) -> Presentation {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // The first acceptable media type wins, as in content negotiation.
    let first = accept
        .split(',')
        .find(|m| m.contains("json") || m.contains("*/*"))
        .unwrap_or_default();
    if first.contains("as=Table") {
        let include = match query.get("includeObject") {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        };
        Presentation::Table(include)
    } else if first.contains("as=PartialObjectMetadata") {
        Presentation::Metadata
    } else {
        Presentation::Object
    }
}
