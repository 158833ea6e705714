//! Bad input (SPEC 8): hostile manifests through the API emulator's schema validation and the
//! controller's own validation, and hostile HTTP to the verifier. Every case must end in a clear
//! client error naming what is wrong, never a panic or a 5xx, and nothing written.

use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::verifier::{Cluster, NS, Response, eventually, start, status_token, token};
use keysmith::api::ApiKeySpec;
use keysmith::validation::validate;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw HTTP/1.1 exchange on a fresh connection. The server may answer (and close) before it
/// has read everything, so a failed write is not an error: the answer is what counts. `None`
/// when the connection closed without an answer.
async fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> Option<Response> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.split();
    let write = async {
        if writer.write_all(head.as_bytes()).await.is_ok() {
            let _ = writer.write_all(body).await;
        }
    };
    let mut raw = Vec::new();
    let read = reader.read_to_end(&mut raw);
    let (_, read) = tokio::join!(write, read);
    if read.is_err() && raw.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(Response {
        status,
        headers: Vec::new(),
        body: body.to_owned(),
    })
}

fn post_head(addr: SocketAddr, path: &str, extra: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\n{extra}Content-Length: {length}\r\n\r\n"
    )
}

// ---------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------

/// An ApiKey named `name` with `spec`, as JSON text (in the verifier harness's namespace; the
/// controller harness moves it to its own).
fn apikey(name: &str, spec: Value) -> String {
    json!({
        "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    })
    .to_string()
}

fn slot(extra: Value) -> Value {
    let mut slot = json!({"name": "a"});
    slot.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    slot
}

/// `[[[[…]]]]`, `depth` deep, as text (a `Value` that deep would overflow the stack to build).
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// What the CRD schema does with a hostile manifest.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Schema {
    /// 4xx naming the field; nothing stored.
    Rejects,
    /// Stored: the schema has no rule for it (CEL cannot compare `d`/`w` durations, a structural
    /// schema cannot bound map keys); the controller's validation must catch it.
    Accepts,
    /// Rejected by a structural bound (`maxItems`) that every API server enforces; the
    /// controller does not repeat it.
    RejectsAlone,
}

/// Hostile manifests: (case, body, the field the answer must name, what the schema does).
fn hostile_manifests() -> Vec<(&'static str, String, &'static str, Schema)> {
    let huge = "x".repeat(1 << 20);
    let many_slots: Vec<Value> = (0..5000)
        .map(|i| json!({"name": format!("s{i}")}))
        .collect();
    let many_grants: Vec<Value> = (0..5000)
        .map(|_| json!({"effect": "allow", "actions": ["read"], "resources": ["*"]}))
        .collect();
    let many_actions: Vec<String> = (0..5000).map(|i| format!("a{i}")).collect();
    let mut cases = vec![
        (
            "1 MiB description",
            apikey(
                "h1",
                json!({"description": huge, "tokens": [slot(json!({}))]}),
            ),
            "spec.description",
            Schema::Rejects,
        ),
        (
            "1 MiB prefix",
            apikey("h2", json!({"tokens": [slot(json!({"prefix": huge}))]})),
            "spec.tokens[0].prefix",
            Schema::Rejects,
        ),
        (
            "1 MiB slot name",
            apikey("h3", json!({"tokens": [{"name": huge}]})),
            "spec.tokens[0].name",
            Schema::Rejects,
        ),
        (
            "1 MiB metadata value",
            apikey(
                "h4",
                json!({"tokens": [slot(json!({"metadata": {"k": huge}}))]}),
            ),
            "spec.tokens[0].metadata",
            Schema::Rejects,
        ),
        (
            "300-character metadata key",
            apikey(
                "h4k",
                json!({"tokens": [slot(json!({"metadata": {"k".repeat(300): "v"}}))]}),
            ),
            "spec.tokens[0].metadata",
            // The CRD bounds map keys with a CEL rule now, so the API server refuses it too.
            Schema::Rejects,
        ),
        (
            "5,000 slots",
            apikey("h5", json!({"tokens": many_slots})),
            "spec.tokens",
            Schema::Rejects,
        ),
        (
            "5,000 grants",
            apikey(
                "h6",
                json!({"tokens": [slot(json!({}))], "grants": many_grants}),
            ),
            "spec.grants",
            Schema::Rejects,
        ),
        (
            "5,000 actions in one grant",
            apikey(
                "h7",
                json!({"tokens": [slot(json!({}))],
                       "grants": [{"effect": "allow", "actions": many_actions, "resources": ["*"]}]}),
            ),
            "spec.grants[0].actions",
            Schema::RejectsAlone,
        ),
        (
            "tokens is a string",
            apikey("w1", json!({"tokens": "delivery"})),
            "spec.tokens",
            Schema::Rejects,
        ),
        (
            "bytes is a string",
            apikey("w2", json!({"tokens": [slot(json!({"bytes": "32"}))]})),
            "spec.tokens[0].bytes",
            Schema::Rejects,
        ),
        (
            "bytes is a fraction",
            apikey("w3", json!({"tokens": [slot(json!({"bytes": 32.5}))]})),
            "spec.tokens[0].bytes",
            Schema::Rejects,
        ),
        (
            "bytes beyond i64",
            apikey("w4", json!({"tokens": [slot(json!({"bytes": 1e300}))]})),
            "spec.tokens[0].bytes",
            Schema::Rejects,
        ),
        (
            "disabled is a string",
            apikey(
                "w5",
                json!({"tokens": [slot(json!({}))], "disabled": "yes"}),
            ),
            "spec.disabled",
            Schema::Rejects,
        ),
        (
            "grants is an object",
            apikey(
                "w6",
                json!({"tokens": [slot(json!({}))], "grants": {"effect": "allow"}}),
            ),
            "spec.grants",
            Schema::Rejects,
        ),
        (
            "metadata value is a number",
            apikey(
                "w7",
                json!({"tokens": [slot(json!({"metadata": {"k": 5}}))]}),
            ),
            "spec.tokens[0].metadata",
            Schema::Rejects,
        ),
        (
            "expiresAfter is a number",
            apikey(
                "w8",
                json!({"tokens": [slot(json!({}))], "expiresAfter": 3600}),
            ),
            "spec.expiresAfter",
            Schema::Rejects,
        ),
        (
            "ipAllowList is a string",
            apikey(
                "w9",
                json!({"tokens": [slot(json!({}))], "restrictions": {"ipAllowList": "10.0.0.0/8"}}),
            ),
            "spec.restrictions.ipAllowList",
            Schema::Rejects,
        ),
        (
            "tokens is null",
            apikey("w10", json!({"tokens": null})),
            "spec.tokens",
            Schema::Rejects,
        ),
        (
            "encoding outside the enum",
            apikey(
                "w11",
                json!({"tokens": [slot(json!({"encoding": "base64"}))]}),
            ),
            "spec.tokens[0].encoding",
            Schema::Rejects,
        ),
        (
            "metadata nested 100 deep",
            apikey(
                "n1",
                json!({"tokens": [slot(json!({"metadata": {"k": serde_json::from_str::<Value>(&nested(100)).unwrap()}}))]}),
            ),
            "spec.tokens[0].metadata",
            Schema::Rejects,
        ),
    ];
    for (i, prefix) in [
        "ключ_",
        "🔑_",
        "ks\u{200b}_",
        "ks_\u{202e}",
        "ＫＳ_",
        "e\u{301}_",
        "ks_\0",
    ]
    .into_iter()
    .enumerate()
    {
        cases.push((
            "unicode prefix",
            apikey(
                &format!("u{i}"),
                json!({"tokens": [slot(json!({"prefix": prefix}))]}),
            ),
            "spec.tokens[0].prefix",
            Schema::Rejects,
        ));
    }
    // A Secret reference is a name, never a path or a query: the controller reads it
    // (issue 27, N7).
    let header = |name: &str, key: &str| {
        json!({"tokens": [slot(json!({}))], "restrictions": {"requiredHeaders": [
            {"name": "X-Client-Secret", "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}]}})
    };
    let name_field = "spec.restrictions.requiredHeaders[0].valueFrom.secretKeyRef.name";
    let key_field = "spec.restrictions.requiredHeaders[0].valueFrom.secretKeyRef.key";
    for (i, (name, key, field)) in [
        ("../../tenant-b/secrets/x", "value", name_field),
        ("x?labelSelector=a", "value", name_field),
        ("X", "value", name_field),
        (&*"x".repeat(254), "value", name_field),
        ("site-secret", "a/b", key_field),
        ("site-secret", "", key_field),
    ]
    .into_iter()
    .enumerate()
    {
        cases.push((
            "secretKeyRef that is not a Secret name and key",
            apikey(&format!("r{i}"), header(name, key)),
            field,
            Schema::Rejects,
        ));
    }
    // Rules CEL cannot check and the controller must.
    for (name, spec, field) in [
        (
            "c1",
            json!({"tokens": [slot(json!({}))], "rotation": {"every": "1d", "overlap": "2d"}}),
            "spec.rotation.overlap",
        ),
        (
            "c2",
            json!({"tokens": [slot(json!({}))], "expiresAfter": "2d", "rotation": {"renewBefore": "3d"}}),
            "spec.rotation.renewBefore",
        ),
        (
            "c3",
            json!({"tokens": [slot(json!({}))], "rotation": {"schedule": "61 * * * *"}}),
            "spec.rotation.schedule",
        ),
        (
            "c4",
            json!({"tokens": [slot(json!({}))], "rotation": {"schedule": "0 3 * * *", "timeZone": "Mars/Olympus"}}),
            "spec.rotation.timeZone",
        ),
        (
            // Names a Secret that exists and lets this key read it: an invalid spec still
            // reads none (see the test below).
            "c5",
            json!({"tokens": [slot(json!({}))], "rotation": {"every": "1d", "overlap": "2d"},
                   "restrictions": {"requiredHeaders": [{"name": "X-Client-Secret",
                       "valueFrom": {"secretKeyRef": {"name": "site-secret", "key": "value"}}}]}}),
            "spec.rotation.overlap",
        ),
    ] {
        cases.push((
            "a rule only the controller checks",
            apikey(name, spec),
            field,
            Schema::Accepts,
        ));
    }
    cases
}

/// POST a raw body to the ApiKey collection as the administrator.
async fn create_raw(cluster: &Cluster, body: &[u8]) -> Option<Response> {
    use http_body_util::BodyExt;
    let path = format!("/apis/keysmith.dev/v1alpha1/namespaces/{NS}/apikeys");
    let request = hyper::Request::post(path)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(body.to_vec()))
        .unwrap();
    let client = cluster.client().await.expect("admin client");
    let answer = client.send(request).await.ok()?;
    let status = answer.status().as_u16();
    let body = answer.into_body().collect().await.ok()?.to_bytes();
    Some(Response {
        status,
        headers: Vec::new(),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_manifests_are_rejected_with_the_field_named_and_nothing_stored() {
    let cluster = crate::harness::verifier::cluster().await;
    let mut failures = Vec::new();
    let mut cases = hostile_manifests();
    // Deeper than any JSON parser should recurse: only as text.
    let deep = format!(
        r#"{{"apiVersion":"keysmith.dev/v1alpha1","kind":"ApiKey","metadata":{{"name":"n2","namespace":"{NS}"}},"spec":{{"tokens":[{{"name":"a","metadata":{{"k":{}}}}}]}}}}"#,
        nested(100_000)
    );
    cases.push(("JSON nested 100,000 deep", deep, "", Schema::Rejects));
    cases.push(("not JSON", "{\"apiVersion\": ".into(), "", Schema::Rejects));
    for (case, body, field, schema) in &cases {
        let answer = create_raw(&cluster, body.as_bytes()).await;
        match answer {
            Some(r) if *schema == Schema::Accepts && r.status == 201 => {}
            Some(r)
                if *schema != Schema::Accepts
                    && (400..500).contains(&r.status)
                    && r.body.contains(field) => {}
            Some(r) => failures.push(format!(
                "{case}: {} naming {field:?}? {}",
                r.status,
                &r.body[..r.body.len().min(300)]
            )),
            None => failures.push(format!("{case}: connection closed without an answer")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let accepted = cases.iter().filter(|c| c.3 == Schema::Accepts).count();
    assert_eq!(
        cluster
            .list("keysmith.dev/v1alpha1", "ApiKey", Some(NS))
            .await
            .len(),
        accepted,
        "nothing rejected is stored"
    );
    let server_errors = cluster.requests(|e| e.code >= 500);
    assert!(server_errors.is_empty(), "server errors: {server_errors:?}");
}

#[test]
fn the_controller_names_the_field_of_every_hostile_spec_it_can_read() {
    // An API server without the schema would hand these to the controller: a spec that does not
    // even deserialize is dropped by the watcher with a decode error; the rest must fail
    // validation naming the field, without panicking.
    let mut failures = Vec::new();
    let mut validated = 0;
    for (case, body, field, schema) in hostile_manifests() {
        if schema == Schema::RejectsAlone {
            continue;
        }
        let object: Value = serde_json::from_str(&body).unwrap();
        let Ok(spec) = serde_json::from_value::<ApiKeySpec>(object["spec"].clone()) else {
            continue;
        };
        validated += 1;
        match validate(&spec) {
            Ok(_) => failures.push(format!("{case}: accepted")),
            Err(e) if !e.0.iter().any(|fe| fe.field.starts_with(field)) => {
                failures.push(format!("{case}: wanted {field}, got {e}"));
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        validated >= 10,
        "only {validated} hostile specs deserialized"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specs_only_the_controller_can_judge_end_in_invalid_spec_without_a_secret_or_a_loop() {
    let h = crate::harness::controller::Harness::start().await;
    h.cluster
        .apply_object(&json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "site-secret", "namespace": crate::harness::controller::NS,
                "annotations": {"keysmith.dev/header-source": "c5"}},
            "stringData": {"value": "s3cret"}}))
        .await
        .expect("header Secret applies");
    let mut cases: Vec<(String, &str)> = Vec::new();
    for (_, body, field, schema) in hostile_manifests() {
        if schema != Schema::Accepts {
            continue;
        }
        let mut object: Value = serde_json::from_str(&body).unwrap();
        object["metadata"]["namespace"] = json!(crate::harness::controller::NS);
        h.cluster
            .apply_object(&object)
            .await
            .expect("the schema accepts it");
        cases.push((
            object["metadata"]["name"].as_str().unwrap().to_owned(),
            field,
        ));
    }
    for (name, field) in &cases {
        let key = h
            .wait_key(name, "InvalidSpec", |k| {
                crate::harness::controller::condition(k, "Ready")
                    .is_some_and(|(status, reason)| status == "False" && reason == "InvalidSpec")
            })
            .await;
        let message = key["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .and_then(|c| c["message"].as_str())
            .unwrap_or_default();
        assert!(message.contains(field), "{name}: {message:?} names {field}");
        assert!(
            message.len() < 2048,
            "{name}: the message does not echo a huge value"
        );
        assert!(
            h.secret(name).await.is_none(),
            "{name}: no Secret for an invalid spec"
        );
    }
    h.settle().await;
    let writes = h.controller_writes();
    assert!(
        writes.iter().all(|e| e.resource == "apikeys"),
        "only the ApiKeys' finalizer and status are written: {writes:?}"
    );
    assert!(writes.len() <= 2 * cases.len(), "{writes:?}");
    // What an invalid spec names is not read: it may be anything the schema let through.
    let controller = crate::harness::controller::controller_user();
    let header_reads = h
        .cluster
        .requests(|e| e.user == controller && e.resource == "secrets" && e.name == "site-secret");
    assert!(header_reads.is_empty(), "{header_reads:?}");
    // settle() resynced every key and saw no write: no retry storm either.
    assert_eq!(
        h.metrics()
            .lines()
            .filter(|l| l.starts_with("keysmith_tokens_minted_total"))
            .count(),
        0,
        "nothing minted"
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP to the verifier
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http_gets_client_errors_and_the_verifier_keeps_serving() {
    let h = start(&[]).await;
    let good = token("shop_");
    h.create_key(
        "good",
        json!({"tokens": [{"name": "a", "prefix": "shop_"}]}),
        &[],
        vec![status_token("a", &good)],
    )
    .await;
    h.wait_for_code(good.expose_secret(), "VALID").await;
    let api = h.api;
    let mut failures = Vec::new();

    // Bodies that are not a verification request: 400, or 413 past the size limit.
    let invalid_utf8: &[u8] = b"{\"token\": \"\xff\xfe\"}";
    let bodies: Vec<(&str, Vec<u8>, u16)> = vec![
        ("empty", Vec::new(), 400),
        ("truncated", b"{\"token\": ".to_vec(), 400),
        ("null", b"null".to_vec(), 400),
        ("array", b"[]".to_vec(), 400),
        ("string", b"\"token\"".to_vec(), 400),
        ("token is a number", b"{\"token\": 5}".to_vec(), 400),
        ("token is null", b"{\"token\": null}".to_vec(), 400),
        (
            "fields is a string",
            b"{\"token\": \"x\", \"fields\": \"title\"}".to_vec(),
            400,
        ),
        ("invalid UTF-8", invalid_utf8.to_vec(), 400),
        ("lone surrogate", b"{\"token\": \"\\ud800\"}".to_vec(), 400),
        ("huge number", b"{\"token\": 1e400}".to_vec(), 400),
        // Under the 16 KiB limit, deeper than serde_json's recursion limit of 128.
        ("nested 4,000 deep", nested(4_000).into_bytes(), 400),
        (
            "token nested in arrays",
            format!("{{\"token\": {}}}", nested(4_000)).into_bytes(),
            400,
        ),
        ("1 MiB body", vec![b' '; 1 << 20], 413),
        ("64 MiB body", vec![b' '; 64 << 20], 413),
    ];
    for (case, body, want) in &bodies {
        for path in ["/v1/verify", "/apis/authentication.k8s.io/v1/tokenreviews"] {
            let head = post_head(api, path, "", body.len());
            match exchange(api, &head, body).await {
                Some(r) if r.status == *want => {}
                other => failures.push(format!(
                    "{path} {case}: wanted {want}, got {:?}",
                    other.map(|r| (r.status, r.body))
                )),
            }
        }
    }

    // A body far beyond the limit announced by chunks, with no length up front.
    let chunk = format!("{:x}\r\n{}\r\n", 1 << 16, " ".repeat(1 << 16));
    let chunked = format!("{}0\r\n\r\n", chunk.repeat(64));
    let head = format!(
        "POST /v1/verify HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    match exchange(api, &head, chunked.as_bytes()).await {
        Some(r) if r.status == 413 => {}
        other => failures.push(format!("4 MiB chunked body: {:?}", other.map(|r| r.status))),
    }

    // Header floods: hyper refuses them before any handler runs (431), or drops the connection.
    let flood: String = (0..10_000).map(|i| format!("X-Flood-{i}: v\r\n")).collect();
    let big_header = format!("X-Big: {}\r\n", "v".repeat(1 << 20));
    let bearer_flood = format!("Authorization: Bearer {}\r\n", "x".repeat(1 << 20));
    for (case, extra) in [
        ("10,000 headers", flood.as_str()),
        ("a 1 MiB header", big_header.as_str()),
        ("a 1 MiB bearer token", bearer_flood.as_str()),
    ] {
        for (method, path) in [("POST", "/v1/verify"), ("GET", "/v1/authz")] {
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n{extra}Content-Length: 2\r\n\r\n"
            );
            match exchange(api, &head, b"{}").await {
                None => {}
                Some(r) if (400..500).contains(&r.status) => {}
                Some(r) => failures.push(format!("{method} {path} {case}: {}", r.status)),
            }
        }
    }

    // Slowloris: connections that trickle their headers or their body must not keep anyone
    // else waiting.
    let mut slow = Vec::new();
    for i in 0..64 {
        let mut stream = TcpStream::connect(api).await.unwrap();
        let head = if i % 2 == 0 {
            format!("POST /v1/verify HTTP/1.1\r\nHost: {api}\r\n")
        } else {
            post_head(api, "/v1/verify", "", 1000)
        };
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push(tokio::spawn(async move {
            // One byte every 200 ms: a header line or a body that never completes.
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let byte: &[u8] = if i % 2 == 0 { b"X" } else { b" " };
                if stream.write_all(byte).await.is_err() {
                    return;
                }
            }
        }));
    }
    for _ in 0..20 {
        let answer = h.verify(json!({"token": good.expose_secret()})).await;
        assert_eq!(answer["code"], "VALID", "served while slow clients trickle");
    }
    for task in slow {
        task.abort();
    }

    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Still healthy and still right after all of it; and none of it wrote anything.
    assert_eq!(
        crate::harness::verifier::get(h.probes, "/healthz")
            .await
            .status,
        200
    );
    eventually("the verifier to answer", || async {
        (h.code(good.expose_secret()).await == "VALID").then_some(())
    })
    .await;
    // The only write the verifier may make is the usage report of the one valid token.
    let verifier_user = "system:serviceaccount:keysmith:keysmith-verifier";
    let writes = h
        .cluster
        .requests(|e| e.user == verifier_user && e.is_write() && e.name != "good");
    assert!(writes.is_empty(), "hostile requests wrote {writes:?}");
}

#[tokio::test]
async fn a_caller_naming_other_addresses_is_still_throttled_and_audited_as_itself() {
    let h = start(&[]).await;
    let started = std::time::Instant::now();
    for i in 0..23 {
        let end_user = format!("198.51.100.{}", 100 + i);
        let answer = h
            .verify(json!({"token": "shop_nope", "ip": end_user}))
            .await;
        assert_eq!(answer["code"], "MALFORMED");
    }
    // 20 failures at once, then about 0.2 s each: the peer is throttled, not the body's `ip`,
    // which any caller sets.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(500), "{took:?}");
    let logs = crate::harness::logs::text();
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["target"] == "keysmith::audit" && l["end_user"] == "198.51.100.122")
        .expect("an audit line with the body's address as end_user");
    assert_eq!(line["client"], "127.0.0.1");
}
