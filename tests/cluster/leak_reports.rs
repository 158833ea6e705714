//! End to end: leak reports to the verifier, in GitHub's signed partner format and the plain
//! format, acted on by the controller (SPEC 4.6), with a signing key generated here; and
//! TruffleHog's verification webhook, which only answers whether a candidate is live.

use keysmith::controller::system_clock;
use keysmith::token::sha256_hex;
use keysmith::verifier::Settings;
use keysmith::verifier::leaks::{
    GITHUB_PATH, LeakConfig, MAX_REPORT_BODY, MAX_REPORT_TOKENS, PLAIN_PATH, TRUFFLEHOG_PATH,
};
use keysmith::verifier::tenancy::Tenancy;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::harness::controller::*;
use crate::harness::eventually;
use crate::harness::github::{Github, KEY_ID};
use crate::harness::verifier::{Spawned, get, request, spawn_with, token as mint};

const SECRET: &str = "report-secret-0123456789";
const LEAK_URL: &str = "https://github.com/octo/app/blob/abc123/.env";
const PASTE_URL: &str = "https://paste.example/xyz";

const KEYS: &str = r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: leaky, namespace: cms}
spec:
  tokens: [{name: api, prefix: lk_}]
  rotation: {overlap: 1h}
---
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: watched, namespace: cms}
spec:
  tokens: [{name: api, prefix: wt_}]
  leakResponse: report
"#;

async fn post(
    verifier: &Spawned,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let response = request(verifier.api, "POST", path, headers, Some(body)).await;
    let value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    (response.status, value)
}

async fn code(verifier: &Spawned, token: &str) -> String {
    let (_, answer) = post(
        verifier,
        "/v1/verify",
        &[],
        &json!({"token": token}).to_string(),
    )
    .await;
    answer["code"].as_str().unwrap_or_default().to_owned()
}

async fn wait_code(verifier: &Spawned, token: &str, expected: &str) {
    eventually(&format!("the verifier to answer {expected}"), || async {
        (code(verifier, token).await == expected).then_some(())
    })
    .await;
}

/// The verifier's metric line starting with `series`, as a number.
async fn metric(verifier: &Spawned, series: &str) -> f64 {
    get(verifier.probes, "/metrics")
        .await
        .body
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The token of slot `api` in the Secret of ApiKey `name`, once it is the one status names (the
/// controller writes status first).
/// A verifier of namespace [`NS`]'s keys that takes leak reports as `config` says.
async fn leak_verifier(cluster: &Cluster, config: LeakConfig) -> Spawned {
    let settings = Settings {
        leaks: Some(config),
        ..Settings::default()
    };
    spawn_with(
        cluster,
        &[],
        Tenancy::parse(NS, &[]).unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        system_clock(),
        settings,
    )
    .await
}

async fn api_token(controller: &Harness, name: &str) -> String {
    eventually("the Secret to hold the current token", || async {
        let key = controller.apikey(name).await?;
        let value = secret_value(&controller.secret(name).await?, "api")?;
        (token(&key, "api")["sha256"] == sha256_hex(&value)).then_some(value)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_tokens_are_rotated_or_recorded_and_the_answers_name_no_key() {
    let controller = Harness::start().await;
    controller.apply(KEYS).await;
    let leaky = controller.wait_key("leaky", "leaky ready", ready).await;
    controller.wait_key("watched", "watched ready", ready).await;
    let leaked = api_token(&controller, "leaky").await;
    let watched = api_token(&controller, "watched").await;

    let github = Github::new();
    let config = LeakConfig::from_github_keys(github.public_keys().as_bytes())
        .unwrap()
        .with_secret(SECRET)
        .unwrap();
    let verifier = leak_verifier(&controller.cluster, config).await;
    wait_code(&verifier, &leaked, "VALID").await;

    // GitHub reports the leaked token, one that is well-formed but nobody's, and a lookalike.
    let stranger = mint("lk_");
    let report = json!([
        {"token": leaked, "type": "keysmith_token", "url": LEAK_URL, "source": "content"},
        {"token": stranger.expose_secret(), "type": "keysmith_token", "url": LEAK_URL, "source": "content"},
        {"token": "lk_not_a_token", "type": "keysmith_token", "url": LEAK_URL, "source": "content"},
    ])
    .to_string();
    let signature = github.sign(&report);
    let signed = [
        ("Github-Public-Key-Identifier", KEY_ID),
        ("Github-Public-Key-Signature", signature.as_str()),
    ];
    let (status, answer) = post(&verifier, GITHUB_PATH, &signed, &report).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!([
            {"token_hash": sha256_hex(&leaked), "token_type": "keysmith_token", "label": "true_positive"},
            {"token_hash": stranger.sha256_hex(), "token_type": "keysmith_token", "label": "false_positive"},
            {"token_hash": sha256_hex("lk_not_a_token"), "token_type": "keysmith_token", "label": "false_positive"},
        ])
    );
    let text = answer.to_string();
    assert!(!text.contains("leaky") && !text.contains(NS) && !text.contains(&leaked));

    // The leaked token stops verifying at once, and the controller replaces it with no overlap.
    wait_code(&verifier, &leaked, "REVOKED").await;
    let rotated = controller
        .wait_key("leaky", "the leaked token replaced", |k| {
            token(k, "api")["sha256"] != token(&leaky, "api")["sha256"]
        })
        .await;
    assert_eq!(token(&rotated, "api").get("previous"), None);
    assert_eq!(token(&rotated, "api").get("leak"), None);
    let fresh = api_token(&controller, "leaky").await;
    assert_ne!(fresh, leaked);
    wait_code(&verifier, &fresh, "VALID").await;
    let events = eventually("the LeakReported event", || async {
        let events = controller.events("LeakReported").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "Warning");
    let note = events[0]["note"].as_str().unwrap();
    assert!(
        note.contains(LEAK_URL) && note.contains("rotated at once"),
        "{note}"
    );
    assert!(!note.contains(&leaked));
    assert_eq!(
        metric(
            &verifier,
            "keysmith_leaked_tokens_total{response=\"rotate\"} "
        )
        .await,
        1.0
    );

    // The same report again gets the same answer and does nothing more.
    let (status, again) = post(&verifier, GITHUB_PATH, &signed, &report).await;
    assert_eq!((status, &again), (200, &answer));
    assert_eq!(
        metric(
            &verifier,
            "keysmith_leak_reports_total{format=\"github\",outcome=\"replayed\"} "
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &verifier,
            "keysmith_leaked_tokens_total{response=\"rotate\"} "
        )
        .await,
        1.0
    );

    // A signature over another body, an unknown key, no signature, and a body over the limit
    // are refused before anything is looked up.
    let fresh_report = json!([{"token": fresh, "type": "keysmith_token"}]).to_string();
    let forged = [
        ("Github-Public-Key-Identifier", KEY_ID),
        ("Github-Public-Key-Signature", signature.as_str()),
    ];
    let (status, _) = post(&verifier, GITHUB_PATH, &forged, &fresh_report).await;
    assert_eq!(status, 401);
    let other_key = [
        ("Github-Public-Key-Identifier", "another"),
        ("Github-Public-Key-Signature", signature.as_str()),
    ];
    let (status, _) = post(&verifier, GITHUB_PATH, &other_key, &report).await;
    assert_eq!(status, 401);
    let (status, _) = post(&verifier, GITHUB_PATH, &[], &report).await;
    assert_eq!(status, 401);
    let oversized = " ".repeat(MAX_REPORT_BODY + 1);
    let big_signature = github.sign(&oversized);
    let big = [
        ("Github-Public-Key-Identifier", KEY_ID),
        ("Github-Public-Key-Signature", big_signature.as_str()),
    ];
    let (status, _) = post(&verifier, GITHUB_PATH, &big, &oversized).await;
    assert_eq!(status, 413);
    let many: Vec<Value> = (0..=MAX_REPORT_TOKENS)
        .map(|_| json!({"token": mint("lk_").expose_secret(), "type": "keysmith_token"}))
        .collect();
    let many = Value::from(many).to_string();
    let many_signature = github.sign(&many);
    let too_many = [
        ("Github-Public-Key-Identifier", KEY_ID),
        ("Github-Public-Key-Signature", many_signature.as_str()),
    ];
    let (status, _) = post(&verifier, GITHUB_PATH, &too_many, &many).await;
    assert_eq!(status, 413);
    let not_a_report = r#"{"token": "x"}"#;
    let not_a_report_signature = github.sign(not_a_report);
    let signed_garbage = [
        ("Github-Public-Key-Identifier", KEY_ID),
        (
            "Github-Public-Key-Signature",
            not_a_report_signature.as_str(),
        ),
    ];
    let (status, _) = post(&verifier, GITHUB_PATH, &signed_garbage, not_a_report).await;
    assert_eq!(status, 400);
    assert_eq!(get(verifier.api, GITHUB_PATH).await.status, 405);
    wait_code(&verifier, &fresh, "VALID").await;

    // A plain report, for a key that only records leaks: its token keeps verifying.
    let plain = json!({"tokens": [watched, "not a token"], "source": PASTE_URL}).to_string();
    let (status, _) = post(
        &verifier,
        PLAIN_PATH,
        &[("Authorization", "Bearer wrong-secret-0123456789")],
        &plain,
    )
    .await;
    assert_eq!(status, 401);
    let bearer = format!("Bearer {SECRET}");
    let (status, answer) = post(
        &verifier,
        PLAIN_PATH,
        &[("Authorization", bearer.as_str())],
        &plain,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let watched_id = keysmith::token::validate(&watched).unwrap().id().to_owned();
    assert_eq!(
        answer,
        json!({"results": [{"id": watched_id, "keysmith": true}, {"id": null, "keysmith": false}]})
    );
    let recorded = controller
        .wait_key("watched", "the report recorded and handled", |k| {
            token(k, "api")["leak"]["handledAt"].is_string()
        })
        .await;
    assert_eq!(token(&recorded, "api")["leak"]["source"], PASTE_URL);
    assert_eq!(code(&verifier, &watched).await, "VALID");
    let events = eventually("the second LeakReported event", || async {
        let events = controller.events("LeakReported").await;
        (events.len() == 2).then_some(events)
    })
    .await;
    assert!(events.iter().any(|e| {
        let note = e["note"].as_str().unwrap_or_default();
        note.contains(PASTE_URL) && note.contains("it still verifies")
    }));
    assert_eq!(
        metric(
            &verifier,
            "keysmith_leaked_tokens_total{response=\"report\"} "
        )
        .await,
        1.0
    );

    // `keysmith report-leak` reads the tokens from stdin and sends a plain report.
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .args([
            "report-leak",
            "--verifier",
            &format!("http://{}", verifier.api),
        ])
        .arg("--secret-file")
        .arg(&secret_file)
        .args(["--source", PASTE_URL])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{fresh}\nlk_lookalike\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh_id = keysmith::token::validate(&fresh).unwrap().id().to_owned();
    assert_eq!(
        stdout,
        format!(
            "line 1: {fresh_id}: a Keysmith token, reported\n\
             line 2: not a Keysmith token (no valid checksum)\n"
        )
    );
    wait_code(&verifier, &fresh, "REVOKED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_credential_the_leak_paths_do_not_exist() {
    let h = crate::harness::verifier::start(&[]).await;
    for path in [GITHUB_PATH, PLAIN_PATH, TRUFFLEHOG_PATH] {
        let r = request(h.api, "POST", path, &[], Some("[]")).await;
        assert_eq!(r.status, 404, "{path}");
    }
    // Each format is there only with its own credential: the GitHub keys serve GitHub's path
    // alone, the plain secret the plain reports and TruffleHog's questions.
    let github = Github::new();
    let only_github = LeakConfig::from_github_keys(github.public_keys().as_bytes()).unwrap();
    let only_secret = LeakConfig::default().with_secret(SECRET).unwrap();
    for (config, served, absent) in [
        (
            only_github,
            vec![GITHUB_PATH],
            vec![PLAIN_PATH, TRUFFLEHOG_PATH],
        ),
        (
            only_secret,
            vec![PLAIN_PATH, TRUFFLEHOG_PATH],
            vec![GITHUB_PATH],
        ),
    ] {
        let verifier = leak_verifier(&h.cluster, config).await;
        for path in served {
            let r = request(verifier.api, "POST", path, &[], Some("[]")).await;
            assert_eq!(r.status, 401, "{path}: {}", r.body);
        }
        for path in absent {
            let r = request(verifier.api, "POST", path, &[], Some("[]")).await;
            assert_eq!(r.status, 404, "{path}: {}", r.body);
        }
    }
}

/// TruffleHog's question for one candidate, as its custom detector sends it.
fn trufflehog_body(candidates: &[&str]) -> String {
    json!({"keysmith-lk_-base62-32": {"token": candidates}}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trufflehog_verification_answers_whether_a_token_is_live_and_acts_on_nothing() {
    let controller = Harness::start().await;
    controller.apply(KEYS).await;
    controller.wait_key("leaky", "leaky ready", ready).await;
    controller.wait_key("watched", "watched ready", ready).await;
    let live = api_token(&controller, "leaky").await;
    let watched = api_token(&controller, "watched").await;

    let config = LeakConfig::default().with_secret(SECRET).unwrap();
    let verifier = leak_verifier(&controller.cluster, config).await;
    wait_code(&verifier, &live, "VALID").await;
    let bearer = format!("Bearer {SECRET}");
    let auth = [("Authorization", bearer.as_str())];

    // Only with the report secret.
    let body = trufflehog_body(&[&live]);
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong-secret-0123456789")],
    ] {
        let (status, _) = post(&verifier, TRUFFLEHOG_PATH, &headers, &body).await;
        assert_eq!(status, 401);
    }

    // A live token: 200, and the answer names no key, namespace or slot.
    let response = request(verifier.api, "POST", TRUFFLEHOG_PATH, &auth, Some(&body)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        serde_json::from_str::<Value>(&response.body).unwrap(),
        json!({"verified": true})
    );
    for name in ["leaky", "cms", "api", "lk_"] {
        assert!(!response.body.contains(name), "{}", response.body);
    }

    // Well-formed but nobody's, a lookalike, and a token of a disabled key: 403.
    let stranger = mint("lk_");
    for candidate in [stranger.expose_secret(), "lk_not_a_token"] {
        let body = trufflehog_body(&[candidate]);
        let (status, answer) = post(&verifier, TRUFFLEHOG_PATH, &auth, &body).await;
        assert_eq!((status, answer), (403, json!({"verified": false})));
    }
    controller
        .apply(&KEYS.replace(
            "leakResponse: report",
            "leakResponse: report\n  disabled: true",
        ))
        .await;
    wait_code(&verifier, &watched, "DISABLED").await;
    let (status, _) = post(
        &verifier,
        TRUFFLEHOG_PATH,
        &auth,
        &trufflehog_body(&[&watched]),
    )
    .await;
    assert_eq!(status, 403);
    // Several candidates: 200 when one of them is live.
    let (status, _) = post(
        &verifier,
        TRUFFLEHOG_PATH,
        &auth,
        &trufflehog_body(&[&watched, &live]),
    )
    .await;
    assert_eq!(status, 200);

    // Bounded like a report, and POST only.
    let many: Vec<&str> = vec!["lk_x"; MAX_REPORT_TOKENS + 1];
    let (status, _) = post(&verifier, TRUFFLEHOG_PATH, &auth, &trufflehog_body(&many)).await;
    assert_eq!(status, 413);
    let huge = trufflehog_body(&["x".repeat(MAX_REPORT_BODY).as_str()]);
    let (status, _) = post(&verifier, TRUFFLEHOG_PATH, &auth, &huge).await;
    assert_eq!(status, 413);
    let (status, _) = post(&verifier, TRUFFLEHOG_PATH, &auth, "[\"token\"]").await;
    assert_eq!(status, 400);
    assert_eq!(get(verifier.api, TRUFFLEHOG_PATH).await.status, 405);

    // Counted, and nothing recorded: the token verifies and its status holds no report.
    let series =
        |answer: &str| format!("keysmith_trufflehog_candidates_total{{answer=\"{answer}\"}} ");
    assert_eq!(metric(&verifier, &series("live")).await, 2.0);
    assert_eq!(metric(&verifier, &series("not-live")).await, 4.0);
    assert_eq!(code(&verifier, &live).await, "VALID");
    let key = controller.apikey("leaky").await.unwrap();
    assert!(token(&key, "api")["leak"].is_null(), "{key}");
}
