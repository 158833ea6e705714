//! `docs/verifier-api.openapi.yaml` against the real verifier: every documented operation and
//! every response documented for it is produced by a request to a verifier watching the test
//! cluster, and the answer has the documented status, content type, headers and body (required
//! properties present, of the documented types, nothing undocumented). Responses the verifier
//! gives that the document does not list fail too: the set of (path, method, status) driven here
//! must equal the documented set.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crate::harness::github::Github;
use crate::harness::http::exchange;
use crate::harness::verifier::{
    Harness, NS, Response, cluster, request, start_configured, status_token, token,
};
use keysmith::verifier::Settings;
use keysmith::verifier::http::MAX_BODY;
use keysmith::verifier::leaks::{
    GITHUB_PATH, LeakConfig, MAX_REPORT_BODY, PLAIN_PATH, TRUFFLEHOG_PATH,
};
use keysmith::verifier::tenancy::Tenancy;
use serde_json::{Value, json};

const DOCUMENT: &str = include_str!("../../docs/verifier-api.openapi.yaml");
/// The audience the verifier maps to [`NS`] for TokenReviews.
const AUDIENCE: &str = "keysmith";
/// The plain leak reports' secret.
const LEAK_SECRET: &str = "openapi-leak-secret-0123";

/// The OpenAPI document, parsed.
struct Document(Value);

impl Document {
    fn load() -> Document {
        Document(serde_saphyr::from_str(DOCUMENT).expect("the OpenAPI document is YAML"))
    }

    /// `node`, or what its `$ref` points to.
    fn resolve<'a>(&'a self, node: &'a Value) -> &'a Value {
        match node["$ref"].as_str() {
            Some(reference) => {
                let pointer = reference.strip_prefix('#').expect("local references only");
                let target = self.0.pointer(pointer).unwrap_or_else(|| {
                    panic!("{reference} does not resolve in the OpenAPI document")
                });
                self.resolve(target)
            }
            None => node,
        }
    }

    /// Every (path, method, status) the document describes.
    fn operations(&self) -> BTreeSet<(String, String, u16)> {
        let mut found = BTreeSet::new();
        for (path, item) in self.0["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().into_iter().flatten() {
                if method == "parameters" {
                    continue;
                }
                for status in operation["responses"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|r| r.0)
                {
                    let status = status.parse().expect("numeric status codes");
                    found.insert((path.clone(), method.clone(), status));
                }
            }
        }
        found
    }

    fn operation(&self, path: &str, method: &str) -> &Value {
        let operation = &self.0["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        operation
    }
}

/// One request the test made: the documented operation it exercises and the answer it got.
struct Case {
    path: &'static str,
    method: &'static str,
    sent: Option<Value>,
    answer: Response,
}

/// Schema violations of `value` at `at`. Strict (responses): an object with documented
/// properties may hold no others unless `additionalProperties` gives them a schema. Lenient
/// (requests): unknown properties are allowed, as the verifier ignores them.
fn violations(
    doc: &Document,
    schema: &Value,
    value: &Value,
    at: &str,
    strict: bool,
) -> Vec<String> {
    let schema = doc.resolve(schema);
    let mut found = Vec::new();
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let actual = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    // An integer is a number too.
    let documented = |t: &str| types.contains(&t) || (t == "integer" && types.contains(&"number"));
    if !types.is_empty() && !documented(actual) {
        found.push(format!("{at}: a {actual}, documented as {types:?}"));
        return found;
    }
    if let Some(allowed) = schema["enum"].as_array().filter(|_| !value.is_null())
        && !allowed.contains(value)
    {
        found.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if !schema["const"].is_null() && schema["const"] != *value {
        found.push(format!("{at}: {value}, documented as {}", schema["const"]));
    }
    match value {
        Value::Object(object) => {
            let properties = schema["properties"].as_object();
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap_or_default();
                if !object.contains_key(name) {
                    found.push(format!("{at}.{name}: required, missing"));
                }
            }
            for (name, child) in object {
                let path = format!("{at}.{name}");
                match properties.and_then(|p| p.get(name)) {
                    Some(documented) => {
                        found.extend(violations(doc, documented, child, &path, strict))
                    }
                    None if schema["additionalProperties"].is_object() => found.extend(violations(
                        doc,
                        &schema["additionalProperties"],
                        child,
                        &path,
                        strict,
                    )),
                    None if strict || schema["additionalProperties"] == Value::Bool(false) => {
                        found.push(format!("{path}: not documented"))
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                found.extend(violations(
                    doc,
                    &schema["items"],
                    item,
                    &format!("{at}[{i}]"),
                    strict,
                ));
            }
        }
        _ => {}
    }
    found
}

/// Whether `answer` is what the document says `method path` answers with its status.
fn check(doc: &Document, case: &Case) -> Vec<String> {
    let Case {
        path,
        method,
        sent,
        answer,
    } = case;
    let name = format!("{} {path} -> {}", method.to_uppercase(), answer.status);
    let operation = doc.operation(path, method);
    let mut found = Vec::new();
    if let Some(sent) = sent {
        let schema =
            &doc.resolve(&operation["requestBody"])["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{name}: a request body is documented");
        for v in violations(doc, schema, sent, "request", false) {
            found.push(format!(
                "{name}: the test's request breaks the documented schema: {v}"
            ));
        }
    }
    let Some(documented) = operation["responses"].get(answer.status.to_string()) else {
        return vec![format!(
            "{name}: status not documented (body {})",
            answer.body
        )];
    };
    let documented = doc.resolve(documented);
    let content_type = answer.header("content-type");
    match documented["content"].as_object() {
        Some(content) => {
            let (media, body_schema) = content.iter().next().expect("one media type");
            if content_type != Some(media.as_str()) {
                found.push(format!(
                    "{name}: content type {content_type:?}, documented {media}"
                ));
            }
            match serde_json::from_str::<Value>(&answer.body) {
                Ok(body) => found.extend(
                    violations(doc, &body_schema["schema"], &body, "body", true)
                        .into_iter()
                        .map(|v| format!("{name}: {v} in {body}")),
                ),
                Err(e) => found.push(format!("{name}: body is not JSON ({e}): {}", answer.body)),
            }
        }
        None => {
            if content_type.is_some() || !answer.body.is_empty() {
                found.push(format!(
                    "{name}: no body documented, got {content_type:?} {:?}",
                    answer.body
                ));
            }
        }
    }
    let headers = documented["headers"].as_object();
    for (header, spec) in headers.into_iter().flatten() {
        let spec = doc.resolve(spec);
        match answer.header(header) {
            Some(value) => found.extend(
                violations(doc, &spec["schema"], &json!(value), header, true)
                    .into_iter()
                    .map(|v| format!("{name}: header {v}")),
            ),
            None if spec["required"] == Value::Bool(true) => {
                found.push(format!("{name}: documented header {header} missing"))
            }
            None => {}
        }
    }
    // Keysmith's own headers, and the challenge, are part of the contract: each is documented.
    for (header, _) in &answer.headers {
        let ours = header.to_ascii_lowercase().starts_with("x-keysmith-")
            || header.eq_ignore_ascii_case("www-authenticate");
        let listed = headers.is_some_and(|h| h.keys().any(|d| d.eq_ignore_ascii_case(header)));
        if ours && !listed {
            found.push(format!("{name}: header {header} not documented"));
        }
    }
    found
}

/// A request whose body stops after its first byte: the verifier gives up at its body timeout.
async fn stalled_body(addr: SocketAddr, path: &str) -> Response {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: 64\r\n\r\n{{"
    );
    exchange(addr, head.as_bytes()).await
}

async fn post(h: &Harness, path: &str, body: &Value) -> Response {
    request(h.api, "POST", path, &[], Some(&body.to_string())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_verifier() {
    let doc = Document::load();
    let mapping = format!("{AUDIENCE}={NS}");
    let tenancy = Tenancy::parse(NS, &[mapping.as_str()])
        .unwrap()
        .with_personal_audiences(&[AUDIENCE.to_owned()])
        .unwrap();
    let github = Github::new();
    let leaks = LeakConfig::from_github_keys(github.public_keys().as_bytes())
        .unwrap()
        .with_secret(LEAK_SECRET)
        .unwrap();
    let settings = Settings {
        leaks: Some(leaks),
        ..Settings::default()
    };
    let h = start_configured(cluster().await, &[], tenancy, settings).await;
    let api = h.api;
    // The 408s take the verifier's whole body timeout: they run while the rest is asked.
    let stalled = tokio::spawn(async move {
        let mut answers = Vec::new();
        for path in [
            "/v1/verify",
            "/v1/namespaces/{namespaces}/verify",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            GITHUB_PATH,
            PLAIN_PATH,
            TRUFFLEHOG_PATH,
        ] {
            let concrete = path.replace("{namespaces}", "shop");
            answers.push((path, stalled_body(api, &concrete).await));
        }
        answers
    });

    // A key that fills every property of a verdict: environment, expiry, metadata, grants.
    let good = token("shop_");
    let mut slot = status_token("delivery", &good);
    slot["expiresAt"] = json!("2099-01-01T00:00:00Z");
    h.create_key(
        "main",
        json!({"environment": "production",
            "tokens": [{"name": "delivery", "metadata": {"content": "published"}}],
            "grants": [{"effect": "allow", "actions": ["content.read"], "resources": ["content:*"]}]}),
        &[],
        vec![slot],
    )
    .await;
    let good = good.expose_secret().to_owned();
    h.wait_for_code(&good, "VALID").await;
    // A personal key, whose answers add its owner.
    let mine = token("me_");
    h.create_key(
        "mine",
        json!({"tokens": [{"name": "me"}], "owner": {"username": "alice", "groups": ["dev"]}}),
        &[],
        vec![status_token("me", &mine)],
    )
    .await;
    let mine = mine.expose_secret().to_owned();
    h.wait_for_code(&mine, "VALID").await;
    let unknown = token("shop_").expose_secret().to_owned();
    let bearer = format!("Bearer {good}");

    let mut cases = Vec::new();
    let allowed = json!({"token": good, "action": "content.read", "resource": "content:pages:home",
        "environment": "production", "ip": "10.0.0.1",
        "headers": {"X-Trace": "1"}, "context": {"status": "draft", "locale": "en", "owner": "x"}});
    let too_large = json!({"token": "x".repeat(MAX_BODY)});
    for (path, concrete) in [
        ("/v1/verify", "/v1/verify"),
        (
            "/v1/namespaces/{namespaces}/verify",
            "/v1/namespaces/shop/verify",
        ),
    ] {
        for sent in [
            allowed.clone(),
            json!({"token": mine}),
            json!({"token": unknown, "fields": ["title"]}),
            json!({"token": "", "action": null}),
        ] {
            let answer = post(&h, concrete, &sent).await;
            cases.push(Case {
                path,
                method: "post",
                sent: Some(sent),
                answer,
            });
        }
        for bad in [json!({"token": 5}), json!({"action": "content.read"})] {
            cases.push(Case {
                path,
                method: "post",
                sent: None,
                answer: post(&h, concrete, &bad).await,
            });
        }
        cases.push(Case {
            path,
            method: "post",
            sent: None,
            answer: post(&h, concrete, &too_large).await,
        });
    }
    let answer = post(
        &h,
        "/v1/namespaces/Not_A_Namespace/verify",
        &json!({"token": good}),
    )
    .await;
    cases.push(Case {
        path: "/v1/namespaces/{namespaces}/verify",
        method: "post",
        sent: None,
        answer,
    });

    // Gateways: the question in the query on the exact routes, in headers below them.
    let exact = [
        ("/v1/authz", "/v1/authz"),
        (
            "/v1/namespaces/{namespaces}/authz",
            "/v1/namespaces/shop/authz",
        ),
    ];
    let below = [
        ("/v1/authz/{path}", "/v1/authz/client/path?action=ignored"),
        (
            "/v1/namespaces/{namespaces}/authz/{path}",
            "/v1/namespaces/shop/authz/client/path",
        ),
    ];
    for method in ["get", "post"] {
        let verb = method.to_uppercase();
        for (path, concrete) in exact {
            for (query, headers) in [
                (
                    "?action=content.read&resource=content:pages:home&environment=production",
                    vec![("Authorization", bearer.as_str())],
                ),
                ("?action=content.read", vec![("X-API-Key", good.as_str())]),
                ("", vec![("X-API-Key", mine.as_str())]),
                ("", vec![]),
                ("", vec![("X-API-Key", unknown.as_str())]),
                (
                    "?action=users.delete",
                    vec![("Authorization", bearer.as_str())],
                ),
                (
                    "?environment=staging",
                    vec![("Authorization", bearer.as_str())],
                ),
            ] {
                let answer =
                    request(api, &verb, &format!("{concrete}{query}"), &headers, None).await;
                cases.push(Case {
                    path,
                    method,
                    sent: None,
                    answer,
                });
            }
        }
        for (path, concrete) in below {
            for headers in [
                vec![
                    ("Authorization", bearer.as_str()),
                    ("X-Keysmith-Action", "content.read"),
                    ("X-Keysmith-Resource", "content:a"),
                    ("X-Keysmith-Environment", "production"),
                ],
                vec![("X-API-Key", unknown.as_str())],
                vec![
                    ("Authorization", bearer.as_str()),
                    ("X-Keysmith-Action", "users.delete"),
                ],
            ] {
                let answer = request(api, &verb, concrete, &headers, None).await;
                cases.push(Case {
                    path,
                    method,
                    sent: None,
                    answer,
                });
            }
        }
        for (path, concrete) in [
            (
                "/v1/namespaces/{namespaces}/authz",
                "/v1/namespaces/shop,-bad/authz",
            ),
            (
                "/v1/namespaces/{namespaces}/authz/{path}",
                "/v1/namespaces/UPPER/authz/x",
            ),
        ] {
            let answer = request(
                api,
                &verb,
                concrete,
                &[("Authorization", bearer.as_str())],
                None,
            )
            .await;
            cases.push(Case {
                path,
                method,
                sent: None,
                answer,
            });
        }
    }

    // The TokenReview webhook.
    let review = |token: &str, audiences: &[&str]| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token, "audiences": audiences}})
    };
    let path = "/apis/authentication.k8s.io/v1/tokenreviews";
    for sent in [
        review(&good, &[AUDIENCE]),
        review(&mine, &[AUDIENCE]),
        review(&good, &[]),
        review(&unknown, &[]),
        review(&good, &["https://elsewhere.example"]),
    ] {
        let answer = post(&h, path, &sent).await;
        cases.push(Case {
            path,
            method: "post",
            sent: Some(sent),
            answer,
        });
    }
    for bad in [json!({"kind": "SubjectAccessReview"}), json!([1])] {
        cases.push(Case {
            path,
            method: "post",
            sent: None,
            answer: post(&h, path, &bad).await,
        });
    }
    cases.push(Case {
        path,
        method: "post",
        sent: None,
        answer: post(&h, path, &too_large).await,
    });

    // TruffleHog's question about `good`, before the reports below revoke it.
    let leak_bearer = format!("Bearer {LEAK_SECRET}");
    let too_large_question =
        json!({"keysmith-shop_-base62-32": {"token": ["x".repeat(MAX_REPORT_BODY)]}});
    let live = json!({"keysmith-shop_-base62-32": {"token": [good]}});
    let dead = json!({"keysmith-shop_-base62-32": {"token": [unknown]}});
    for (sent, body, authorization) in [
        (Some(&live), &live, Some(leak_bearer.as_str())),
        (Some(&dead), &dead, Some(leak_bearer.as_str())),
        (None, &json!([1]), Some(leak_bearer.as_str())),
        (None, &live, None),
        (None, &too_large_question, Some(leak_bearer.as_str())),
    ] {
        let headers: Vec<(&str, &str)> = authorization
            .map(|a| ("Authorization", a))
            .into_iter()
            .collect();
        let answer = request(
            h.api,
            "POST",
            TRUFFLEHOG_PATH,
            &headers,
            Some(&body.to_string()),
        )
        .await;
        cases.push(Case {
            path: TRUFFLEHOG_PATH,
            method: "post",
            sent: sent.cloned(),
            answer,
        });
    }

    // Leak reports, last: the report of `good` revokes it.
    let report = json!([
        {"token": good, "type": "shop_token", "url": "https://example.com/leak"},
        {"token": unknown, "type": "shop_token", "url": "https://example.com/leak"},
    ]);
    let signed_garbage = json!({"token": good});
    let too_large_report = json!({"tokens": ["x".repeat(MAX_REPORT_BODY)]});
    for (sent, body, signed) in [
        (Some(&report), &report, true),
        (None, &signed_garbage, true),
        (None, &report, false),
        (None, &too_large_report, true),
    ] {
        let body = body.to_string();
        let signature = github.headers(&body);
        let headers: Vec<(&str, &str)> = signature
            .iter()
            .filter(|_| signed)
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let answer = request(h.api, "POST", GITHUB_PATH, &headers, Some(&body)).await;
        cases.push(Case {
            path: GITHUB_PATH,
            method: "post",
            sent: sent.cloned(),
            answer,
        });
    }
    let plain = json!({"tokens": [unknown, "not a token"], "source": null});
    for (sent, body, authorization) in [
        (Some(&plain), &plain, Some(leak_bearer.as_str())),
        (None, &json!([1]), Some(leak_bearer.as_str())),
        (None, &plain, None),
        (None, &too_large_report, Some(leak_bearer.as_str())),
    ] {
        let headers: Vec<(&str, &str)> = authorization
            .map(|a| ("Authorization", a))
            .into_iter()
            .collect();
        let answer = request(h.api, "POST", PLAIN_PATH, &headers, Some(&body.to_string())).await;
        cases.push(Case {
            path: PLAIN_PATH,
            method: "post",
            sent: sent.cloned(),
            answer,
        });
    }

    for (path, answer) in stalled.await.unwrap() {
        cases.push(Case {
            path,
            method: "post",
            sent: None,
            answer,
        });
    }

    // The answers the cases were built to get: a TokenReview that authenticated with its
    // audience, and the verdict with every optional property filled.
    let authenticated = cases
        .iter()
        .find(|c| c.path == path && c.answer.body.contains(r#""audiences":["keysmith"]"#));
    assert!(authenticated.is_some_and(|c| c.answer.body.contains("keysmith.dev/environment")));
    assert!(
        cases
            .iter()
            .any(|c| c.answer.body.contains(r#""username":"alice""#)
                && c.answer.body.contains("keysmith.dev/apikey"))
    );
    assert!(cases.iter().any(|c| {
        c.answer
            .body
            .contains(r#""owner":{"username":"alice","groups":["dev"]}"#)
    }));
    assert!(cases.iter().any(|c| {
        c.answer.body.contains(r#""permissions":["content.read"]"#)
            && c.answer
                .body
                .contains(r#""expiresAt":"2099-01-01T00:00:00Z""#)
    }));

    assert!(cases.iter().any(|c| {
        c.path == GITHUB_PATH
            && c.answer.body.contains("true_positive")
            && c.answer.body.contains("false_positive")
    }));
    assert!(
        cases
            .iter()
            .any(|c| c.path == PLAIN_PATH && c.answer.body.contains(r#""keysmith":false"#))
    );

    let mut problems: Vec<String> = cases.iter().flat_map(|c| check(&doc, c)).collect();
    let driven: BTreeSet<(String, String, u16)> = cases
        .iter()
        .map(|c| (c.path.to_owned(), c.method.to_owned(), c.answer.status))
        .collect();
    for (path, method, status) in doc.operations().difference(&driven) {
        problems.push(format!(
            "documented but never produced: {method} {path} -> {status}"
        ));
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
