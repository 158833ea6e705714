//! Kubernetes-style API errors: every failure the server answers with is a
//! `meta/v1 Status` object carrying the HTTP code, a machine-readable reason
//! and a message worded like the real API server's, because clients (kubectl,
//! kube-rs) branch on `code`/`reason` and tests assert on the message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};
use serde_json::Value;

/// One field-level cause of an `Invalid` error (`details.causes[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, ...
    pub reason: String,
    /// The text after the field path, e.g. `Required value`.
    pub message: String,
    /// The field path, e.g. `spec.tokens[0].bytes`.
    pub field: String,
}

impl Cause {
    /// A cause for `field`, rendered by Kubernetes as `field: message`.
    pub fn new(reason: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Cause {
            reason: reason.to_string(),
            message: message.into(),
            field: field.into(),
        }
    }

    fn to_status_cause(&self) -> StatusCause {
        StatusCause {
            reason: Some(self.reason.clone()),
            message: Some(self.message.clone()),
            field: Some(self.field.clone()),
        }
    }

    fn render(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// An error answer of the API, rendered as a `Status` object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`, `Conflict`, `Invalid`.
    pub reason: &'static str,
    /// Human-readable message, worded like Kubernetes'.
    pub message: String,
    /// `Status.details`, when Kubernetes would fill it (boxed: most errors have none, and
    /// every `ApiResult` carries the error's size).
    pub details: Option<Box<StatusDetails>>,
    /// Seconds for a `Retry-After` header (429 answers).
    pub retry_after: Option<u64>,
}

/// Result of an API operation.
pub type ApiResult<T> = Result<T, ApiError>;

/// `group` and `plural`, with the name: how Kubernetes refers to an object in
/// messages (`secrets "x"`, `apikeys.keysmith.dev "x"`).
pub fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

fn details(group: &str, kind: &str, name: &str) -> StatusDetails {
    let given = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    StatusDetails {
        kind: Some(kind.to_string()),
        name: given(name),
        group: given(group),
        ..Default::default()
    }
}

fn status_causes(causes: &[Cause]) -> Option<Vec<StatusCause>> {
    Some(causes.iter().map(Cause::to_status_cause).collect())
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// 404 for a missing object.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, plural)),
        );
        e.details = Some(Box::new(details(group, plural, name)));
        e
    }

    /// 404 for a path that names no resource.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 409 on create of an existing name.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, plural)),
        );
        e.details = Some(Box::new(details(group, plural, name)));
        e
    }

    /// 409 for a stale `resourceVersion` (optimistic concurrency).
    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(group, plural)
            ),
        );
        e.details = Some(Box::new(details(group, plural, name)));
        e
    }

    /// 409 for a server-side apply field ownership conflict.
    pub fn apply_conflict(message: String, causes: Vec<Cause>) -> Self {
        let mut e = Self::new(409, "Conflict", message);
        e.details = Some(Box::new(StatusDetails {
            causes: status_causes(&causes),
            ..Default::default()
        }));
        e
    }

    /// 422 with field causes, worded `Kind.group "name" is invalid: ...`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let what = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        // The message names each distinct cause once (Go's `ErrorList.ToAggregate`); the
        // causes list keeps them all.
        let mut rendered: Vec<String> = Vec::new();
        for cause in causes.iter().map(Cause::render) {
            if !rendered.contains(&cause) {
                rendered.push(cause);
            }
        }
        let list = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{what} \"{name}\" is invalid: {list}"),
        );
        e.details = Some(Box::new(StatusDetails {
            causes: status_causes(&causes),
            ..details(group, kind, name)
        }));
        e
    }

    /// 422 for a patch that cannot be applied (e.g. a failed JSON patch `test`).
    pub fn invalid_patch(message: impl Into<String>) -> Self {
        let mut e = Self::new(422, "Invalid", message);
        e.details = Some(Box::default());
        e
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 with a free-form message.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 406.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    /// 410 for a `resourceVersion` older than the retained history.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 413 for a request body over the API server's limit (`--max-request-body-bytes`).
    pub fn request_entity_too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 415.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {content_type})"
            ),
        )
    }

    /// 415 for a strategic merge patch of a custom resource, as the real server words it.
    pub fn unsupported_patch_type() -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        )
    }

    /// 429 with `Retry-After`.
    pub fn too_many_requests(retry_after: u64) -> Self {
        let mut e = Self::new(
            429,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        );
        e.retry_after = Some(retry_after);
        e.details = Some(Box::new(StatusDetails {
            retry_after_seconds: i32::try_from(retry_after).ok(),
            ..Default::default()
        }));
        e
    }

    /// 503: an aggregated API's backend cannot answer.
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `meta/v1 Status` body.
    pub fn status(&self) -> Value {
        let status = Status {
            status: Some("Failure".into()),
            message: Some(self.message.clone()),
            reason: Some(self.reason.into()),
            code: Some(i32::from(self.code)),
            details: self.details.as_deref().cloned(),
            ..Default::default()
        };
        serde_json::to_value(status).expect("a Status serializes")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (code, axum::Json(self.status())).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_lists_several_causes_in_brackets() {
        let e = ApiError::invalid(
            "keysmith.dev",
            "ApiKey",
            "k",
            vec![
                Cause::new("FieldValueRequired", "spec.a", "Required value"),
                Cause::new("FieldValueInvalid", "spec.b", "Invalid value: 1: too small"),
            ],
        );
        assert_eq!(
            e.message,
            "ApiKey.keysmith.dev \"k\" is invalid: [spec.a: Required value, spec.b: Invalid value: 1: too small]"
        );
        assert_eq!(e.status()["details"]["causes"][0]["field"], "spec.a");
    }

    #[test]
    fn invalid_names_a_repeated_cause_once_and_lists_it_each_time() {
        let twice = Cause::new("FieldValueTooLong", "metadata.annotations", "Too long");
        let e = ApiError::invalid("", "Secret", "s", vec![twice.clone(), twice]);
        assert_eq!(
            e.message,
            "Secret \"s\" is invalid: metadata.annotations: Too long"
        );
        assert_eq!(
            e.status()["details"]["causes"].as_array().map(Vec::len),
            Some(2)
        );
    }
}
