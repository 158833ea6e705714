//! The review kinds, answered from the request and never stored:
//! SelfSubjectAccessReview, SubjectAccessReview and LocalSubjectAccessReview
//! (RBAC's answer for a subject), SelfSubjectReview (who the caller is) and TokenReview (who a
//! bearer token belongs to, as the emulator's own authentication decides).

use k8s_openapi::api::authentication::v1::{
    SelfSubjectReviewStatus, TokenReviewStatus, UserInfo as ReviewUser,
};
use k8s_openapi::api::authorization::v1::SubjectAccessReviewStatus;
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::http::ResourceCall;
use crate::rbac::{Attributes, UserInfo};

/// The review posted, with its `status` filled in.
pub fn answer(call: &ResourceCall<'_>) -> ApiResult<Value> {
    let ct = call.content_type();
    let mut review = if ct.contains("protobuf") {
        crate::protobuf::decode_review(call.body())
            .ok_or_else(|| ApiError::unsupported_media_type(&ct))?
    } else {
        call.decode_body()?
    };
    review["apiVersion"] = json!(call.rt.api_version());
    review["kind"] = json!(call.rt.kind);
    review["status"] = match call.rt.kind.as_str() {
        "SelfSubjectReview" => to_value(&who_am_i(call.user)),
        "TokenReview" => to_value(&token(call, &review["spec"])),
        "SelfSubjectAccessReview" => to_value(&access(call, call.user, &review["spec"])),
        _ => to_value(&access(call, &subject(&review["spec"]), &review["spec"])),
    };
    Ok(review)
}

fn to_value(status: &impl Serialize) -> Value {
    serde_json::to_value(status).expect("review statuses serialize")
}

/// SelfSubjectReview: the caller as the server sees it.
fn who_am_i(caller: &UserInfo) -> SelfSubjectReviewStatus {
    SelfSubjectReviewStatus {
        user_info: Some(ReviewUser {
            username: Some(caller.name.clone()),
            groups: Some(caller.groups.clone()),
            uid: Some(caller.uid.clone()).filter(|u| !u.is_empty()),
            extra: Some(caller.extra.clone()).filter(|e| !e.is_empty()),
        }),
    }
}

/// TokenReview: the user a token authenticates as, or the error kube-apiserver gives for a
/// token no authenticator accepts (audiences are not checked).
fn token(call: &ResourceCall<'_>, spec: &Value) -> TokenReviewStatus {
    let token = spec["token"].as_str().filter(|t| !t.is_empty());
    match token.and_then(|t| call.server.auth.authenticate(Some(t))) {
        Some(user) => TokenReviewStatus {
            authenticated: Some(true),
            user: who_am_i(&user).user_info,
            ..Default::default()
        },
        None => TokenReviewStatus {
            user: Some(ReviewUser::default()),
            error: Some("[invalid bearer token, token lookup failed]".into()),
            ..Default::default()
        },
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str().map(String::from))
        .collect()
}

/// The subject a (Local)SubjectAccessReview asks about.
fn subject(spec: &Value) -> UserInfo {
    UserInfo {
        name: spec["user"].as_str().unwrap_or_default().to_string(),
        groups: strings(&spec["groups"]),
        uid: spec["uid"].as_str().unwrap_or_default().to_string(),
        extra: spec["extra"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), strings(v)))
            .collect(),
    }
}

/// Whether RBAC lets `subject` do what the review's spec describes (a namespaced review's
/// namespace comes from its path).
fn access(call: &ResourceCall<'_>, subject: &UserInfo, spec: &Value) -> SubjectAccessReviewStatus {
    let attrs = if let Some(ra) = spec["resourceAttributes"].as_object() {
        let s = |k: &str| {
            ra.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let namespace = match call.request.namespace.as_str() {
            "" => s("namespace"),
            ns => ns.to_string(),
        };
        Attributes::Resource {
            verb: s("verb"),
            group: s("group"),
            resource: s("resource"),
            subresource: s("subresource"),
            namespace,
            name: s("name"),
        }
    } else {
        let nr = &spec["nonResourceAttributes"];
        Attributes::NonResource {
            verb: nr["verb"].as_str().unwrap_or_default().to_string(),
            path: nr["path"].as_str().unwrap_or_default().to_string(),
        }
    };
    let allowed = call.server.permits(subject, &attrs);
    SubjectAccessReviewStatus {
        allowed,
        reason: allowed.then(|| "allowed by the emulator's RBAC".to_string()),
        ..Default::default()
    }
}
