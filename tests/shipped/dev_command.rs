//! `keysmith dev` as a user runs it: the real binary in a child process, kubectl against the
//! kubeconfig it writes (and `kubectl apply -f examples/` on top of dev's own apply), a token from
//! the Secret verified over HTTP, deletion revoking it, plain-text logs into a pipe, and a clean
//! exit on SIGTERM that takes the kubeconfig along. A start that fails leaves no kubeconfig
//! pointing at a server that is not there.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use serde_json::{Value, json};

/// The seven ApiKeys of the five examples.
const EXAMPLE_KEYS: [&str; 7] = [
    "acme-cms",
    "editorial-bot",
    "checkout-api-production",
    "cms-delivery-key",
    "cms-management-key",
    "storefront-web",
    "storefront-mobile",
];

/// The address in `http://ADDR/...` after `marker` in the summary.
fn printed_addr(summary: &str, marker: &str) -> SocketAddr {
    let rest = &summary[summary
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in {summary}"))
        + marker.len()..];
    let addr = &rest[..rest.find('/').unwrap()];
    addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"))
}

/// Kills the child if the test fails before it stops it.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One HTTP/1.1 request on a fresh connection: the status and the body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// POST /v1/verify; the JSON answer.
fn verify(addr: SocketAddr, body: &Value) -> Value {
    let (status, body) = http(addr, "POST", "/v1/verify", &body.to_string());
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// kubectl's record of the last `kubectl apply`, as a jsonpath output.
const LAST_APPLIED_JSONPATH: &str =
    "jsonpath={.metadata.annotations.kubectl\\.kubernetes\\.io/last-applied-configuration}";

/// Collect a pipe's lines in the background.
fn collect(pipe: impl Read + Send + 'static) -> (Arc<Mutex<String>>, thread::JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let reader = thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut out = sink.lock().unwrap();
            out.push_str(&line);
            out.push('\n');
        }
    });
    (text, reader)
}

fn poll<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn keysmith_dev_serves_the_examples_to_kubectl_and_curl_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kc");
    let child = Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .arg("dev")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        // Port 0: the summary must print the ports really bound.
        .args(["--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keysmith dev starts");
    let mut child = Guard(child);
    let (stdout, reader) = collect(child.0.stdout.take().unwrap());
    let (stderr, stderr_reader) = collect(child.0.stderr.take().unwrap());

    // The summary ends with the metrics line.
    poll("the summary on stdout", Duration::from_secs(90), || {
        let out = stdout.lock().unwrap();
        (out.contains("Keysmith dev is running") && out.contains("Metrics: http://")).then_some(())
    });
    let summary = stdout.lock().unwrap().clone();
    let listen = printed_addr(&summary, "curl -s http://");
    let metrics = printed_addr(&summary, "Metrics: http://");
    assert_ne!(listen.port(), 0, "{summary}");
    assert_ne!(metrics.port(), 0, "{summary}");
    assert_eq!(http(metrics, "GET", "/readyz", "").0, 200);
    for name in EXAMPLE_KEYS {
        assert!(
            summary.contains(&format!("default/{name}  Ready=True")),
            "{name} in {summary}"
        );
    }

    // kubectl: the seven ApiKeys, each Ready.
    let table = kubectl(&kubeconfig, &["get", "apikeys", "-A"]);
    let rows: Vec<&str> = table.lines().skip(1).filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 7, "{table}");
    for name in EXAMPLE_KEYS {
        let row = rows
            .iter()
            .find(|r| r.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("{name} missing from\n{table}"));
        assert_eq!(row.split_whitespace().nth(2), Some("True"), "{row}");
    }

    // `kubectl apply -f examples/` over dev's own apply: kubectl finds the record of what was
    // last applied (no warning that it is missing), and that record is byte for byte what
    // kubectl itself writes.
    let last_applied = |name: &str| {
        kubectl(
            &kubeconfig,
            &["get", "apikey", name, "-o", LAST_APPLIED_JSONPATH],
        )
    };
    let dev_applied: Vec<String> = EXAMPLE_KEYS.iter().map(|k| last_applied(k)).collect();
    assert!(
        dev_applied.iter().all(|a| a.starts_with('{')),
        "{dev_applied:?}"
    );
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/");
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["apply", "-f", examples])
        .output()
        .unwrap();
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !warnings.contains("last-applied-configuration"),
        "{warnings}"
    );
    let applied = String::from_utf8_lossy(&out.stdout);
    for name in EXAMPLE_KEYS {
        assert!(
            applied.contains(&format!("apikey.keysmith.dev/{name} ")),
            "{applied}"
        );
        let index = EXAMPLE_KEYS.iter().position(|k| *k == name).unwrap();
        assert_eq!(last_applied(name), dev_applied[index], "{name}");
    }

    // The management token, straight from the Secret, verifies.
    // The controller writes the status (Ready) just before the Secret: poll for the Secret.
    let encoded = poll(
        "the Secret to hold the token",
        Duration::from_secs(30),
        || {
            let out = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["get", "secret", "acme-cms-tokens", "-o"])
                .arg("jsonpath={.data.ACME_CMS_MANAGEMENT_TOKEN}")
                .output()
                .unwrap();
            let encoded = String::from_utf8(out.stdout).unwrap();
            (out.status.success() && !encoded.trim().is_empty()).then_some(encoded)
        },
    );
    // base64 -d, as the example's comment does it.
    let decoded: ByteString = serde_json::from_value(json!(encoded.trim())).unwrap();
    let token = String::from_utf8(decoded.0).unwrap();
    assert!(token.starts_with("acme_sk_"), "{token}");
    // The verifier learns the hash from its own watch: poll until it has.
    let answer = poll("the token to verify", Duration::from_secs(30), || {
        let answer = verify(listen, &json!({"token": token, "action": "content_read"}));
        (answer["code"] == "VALID").then_some(answer)
    });
    assert_eq!(answer["valid"], true, "{answer}");

    // The printed verify command works as pasted, and keeps the token out of every command's
    // arguments (no command substitution: a pipe and shell builtins carry it).
    let command: String = summary
        .split_once("Verify a token (read from the Secret, never printed here):\n")
        .and_then(|(_, rest)| rest.split_once("\n\n"))
        .map(|(command, _)| command.to_owned())
        .expect("the verify command in the summary");
    assert!(!command.contains("$("), "{command}");
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c", &command])
        .output()
        .unwrap();
    assert!(out.status.success(), "{command}: {out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["code"], "VALID", "{answer}");

    // `keysmith usage` as the summary prints it: the verifier's usage API, reached through the
    // emulated API server's aggregator, counts the requests made since.
    let printed = summary
        .split_once(
            "What the verifier saw of the key (the usage API, through the emulated API server):\n",
        )
        .and_then(|(_, rest)| rest.split_once("\n\n"))
        .map(|(command, _)| command.trim().to_owned())
        .expect("the usage command in the summary");
    assert_eq!(
        printed,
        format!(
            "keysmith usage acme-cms -n default --kubeconfig {}",
            kubeconfig.display()
        )
    );
    let usage_args: Vec<&str> = printed.split_whitespace().skip(1).collect();
    let usage = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_keysmith"))
            .args(&usage_args)
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "keysmith usage: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let count = |usage: &Value, code: &str| {
        usage["tokens"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["token"] == "management")
            .map_or(0, |t| t["lastHour"][code].as_u64().unwrap_or(0))
    };
    let before: Value = serde_json::from_str(&usage(&["-o", "json"])).unwrap();
    for _ in 0..2 {
        let answer = verify(listen, &json!({"token": token, "action": "content_read"}));
        assert_eq!(answer["code"], "VALID", "{answer}");
    }
    let answer = verify(listen, &json!({"token": token, "action": "users_delete"}));
    assert_eq!(answer["code"], "FORBIDDEN", "{answer}");
    let after: Value = serde_json::from_str(&usage(&["-o", "json"])).unwrap();
    let (valid, forbidden) = (count(&after, "VALID"), count(&after, "FORBIDDEN"));
    assert_eq!(valid, count(&before, "VALID") + 2, "{after}");
    assert_eq!(forbidden, count(&before, "FORBIDDEN") + 1, "{after}");
    assert_eq!(
        after["replicas"],
        json!([{"name": "keysmith-dev", "answered": true}])
    );
    assert!(!after.to_string().contains(&token), "no token in usage");
    let table = usage(&[]);
    let row = table
        .lines()
        .find(|l| l.starts_with("management "))
        .unwrap_or_else(|| panic!("a row for the management token in\n{table}"));
    assert!(
        row.contains(&format!("FORBIDDEN={forbidden},VALID={valid}")),
        "{table}"
    );
    assert!(table.contains("users_delete"), "{table}");

    // The emulated API server authorizes first, as a real one does: a user without `get` on
    // apikeyusages is refused before the verifier hears of it.
    let mut as_nobody: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
    as_nobody["users"][0]["user"]["as"] = json!("nobody");
    let nobody = dir.path().join("nobody");
    std::fs::write(&nobody, as_nobody.to_string()).unwrap();
    let denied = Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .args(["usage", "acme-cms", "-n", "default", "--kubeconfig"])
        .arg(&nobody)
        .output()
        .unwrap();
    let refusal = String::from_utf8_lossy(&denied.stderr);
    assert!(!denied.status.success(), "{denied:?}");
    assert!(
        refusal.contains("`get` on apikeyusages.usage.keysmith.dev")
            && refusal.contains("User \"nobody\" cannot get resource \"apikeyusages\""),
        "{refusal}"
    );

    // The kubeconfig holds a fresh admin token and only its owner can read it; a token that
    // merely names an identity is refused.
    let mode = std::fs::metadata(&kubeconfig).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "kubeconfig mode {mode:o}");
    let written = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(!written.contains("keysmith-emulator-admin"), "{written}");
    let claimed = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "--token",
            "system:serviceaccount:keysmith:keysmith-controller",
        ])
        .args(["get", "secrets", "-A"])
        .output()
        .unwrap();
    assert!(!claimed.status.success(), "{claimed:?}");
    assert!(
        String::from_utf8_lossy(&claimed.stderr).contains("Unauthorized"),
        "{claimed:?}"
    );

    // describe works against the emulated API.
    let described = kubectl(&kubeconfig, &["describe", "apikey", "acme-cms"]);
    assert!(described.contains("acme-cms"), "{described}");
    assert!(described.contains("Ready"), "{described}");
    // ...with the controller's events, which `kubectl get events` lists too.
    let events = described
        .split_once("\nEvents:\n")
        .map(|(_, events)| events)
        .unwrap_or_else(|| panic!("an Events section in {described}"));
    assert!(
        events.lines().any(|l| {
            l.split_whitespace().take(2).eq(["Normal", "Minted"])
                && l.contains("keysmith-controller")
        }),
        "{described}"
    );
    let events = kubectl(&kubeconfig, &["get", "events"]);
    assert!(
        events
            .lines()
            .any(|l| l.contains("Minted") && l.contains("apikey/acme-cms")),
        "{events}"
    );

    // Deleting the ApiKey revokes its tokens.
    kubectl(&kubeconfig, &["delete", "apikey", "acme-cms"]);
    poll(
        "the deleted key's token to stop verifying",
        Duration::from_secs(30),
        || {
            let code = verify(listen, &json!({"token": token}))["code"].clone();
            (code == "REVOKED" || code == "NOT_FOUND").then_some(())
        },
    );

    // SIGTERM: a clean shutdown.
    let pid = child.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = poll("keysmith dev to exit", Duration::from_secs(30), || {
        child.0.try_wait().unwrap()
    });
    assert!(status.success(), "exit status {status}");
    reader.join().unwrap();
    stderr_reader.join().unwrap();
    // Stopped, dev takes its kubeconfig along: it would point at nothing.
    assert!(!kubeconfig.exists(), "the kubeconfig outlived keysmith dev");

    // Logs into a pipe are plain text: no colour codes.
    let stderr = stderr.lock().unwrap();
    assert!(stderr.contains("verifier serving"), "{stderr}");
    assert!(
        !stderr.contains("\x1b["),
        "colour codes in piped logs:\n{stderr}"
    );

    // The token never reached the terminal: the summary shows masked ids only.
    let stdout = stdout.lock().unwrap();
    assert!(!stdout.contains(&token), "token plaintext on stdout");
    assert!(!stdout.contains(&token[..token.len() - 6]), "{stdout}");
}

/// Run `keysmith dev` expecting it to fail at once; its one-line error.
fn dev_fails(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .arg("dev")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let error = stderr
        .lines()
        .find(|l| l.starts_with("keysmith dev: "))
        .unwrap_or_else(|| panic!("an error line in {stderr}"));
    error.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_leaves_no_kubeconfig_pointing_at_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kc");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let free = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];

    // The verification API's port is in use: an error naming it, and no kubeconfig.
    let error = dev_fails(
        &kubeconfig,
        &["--listen", &taken_addr, "--metrics-listen", "127.0.0.1:0"],
    );
    assert!(
        error.contains(&format!(
            "cannot listen on {taken_addr} for the verification API"
        )),
        "{error}"
    );
    assert!(!kubeconfig.exists());

    // A kubeconfig an earlier dev left behind, its server gone; the emulated API's port is in
    // use this time: the stale kubeconfig goes too.
    let emu = keysmith_emulator::Emulator::start(keysmith_emulator::Config {
        tls: true,
        ..keysmith_emulator::Config::default()
    })
    .await
    .unwrap();
    let live = emu.kubeconfig(&keysmith_emulator::Identity::Admin);
    let url = emu.url();
    let (_, live_port) = url.rsplit_once(':').unwrap();
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stale = live.replace(
        &format!("127.0.0.1:{live_port}"),
        &format!("127.0.0.1:{dead_port}"),
    );
    assert_ne!(stale, live);
    std::fs::write(&kubeconfig, &stale).unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut args = vec!["--api-port", &port];
    args.extend(free);
    let error = dev_fails(&kubeconfig, &args);
    assert!(
        error.contains(&format!(
            "cannot serve the emulated Kubernetes API on 127.0.0.1:{port} (--api-port)"
        )),
        "{error}"
    );
    assert!(
        !kubeconfig.exists(),
        "a kubeconfig pointing at nothing is left"
    );

    // Another dev's kubeconfig whose server answers stays as it is.
    std::fs::write(&kubeconfig, &live).unwrap();
    let _ = dev_fails(&kubeconfig, &args);
    assert_eq!(std::fs::read_to_string(&kubeconfig).unwrap(), live);

    // A file dev did not write is never overwritten, even by a start that would succeed.
    let foreign = "apiVersion: v1\nkind: Config\ncurrent-context: prod\nclusters: []\n";
    std::fs::write(&kubeconfig, foreign).unwrap();
    let error = dev_fails(&kubeconfig, &free);
    assert!(error.contains("refusing to overwrite"), "{error}");
    assert_eq!(std::fs::read_to_string(&kubeconfig).unwrap(), foreign);
}

/// A `keysmith dev` on free ports writing its kubeconfig to `kubeconfig`, once its summary is
/// out.
fn running_dev(kubeconfig: &Path) -> Guard {
    let child = Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .arg("dev")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("keysmith dev starts");
    let mut child = Guard(child);
    let (stdout, _) = collect(child.0.stdout.take().unwrap());
    poll("the summary on stdout", Duration::from_secs(90), || {
        stdout
            .lock()
            .unwrap()
            .contains("Metrics: http://")
            .then_some(())
    });
    child
}

/// SIGTERM `dev` and wait for its clean exit.
fn stop(mut dev: Guard) {
    let pid = dev.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = poll("keysmith dev to exit", Duration::from_secs(30), || {
        dev.0.try_wait().unwrap()
    });
    assert!(status.success(), "exit status {status}");
}

#[test]
fn a_second_dev_on_the_same_kubeconfig_refuses_and_leaves_the_first_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kc");
    let first = running_dev(&kubeconfig);
    let written = std::fs::read_to_string(&kubeconfig).unwrap();

    // A second dev on the same path refuses to start, saying why and what to do, and changes
    // nothing. (It used to start, overwrite the file and delete it when it stopped.)
    let second = Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .arg("dev")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut second = Guard(second);
    let (stderr, reader) = collect(second.0.stderr.take().unwrap());
    let status = poll("the second dev to refuse", Duration::from_secs(30), || {
        second.0.try_wait().unwrap()
    });
    assert!(!status.success());
    reader.join().unwrap();
    let stderr = stderr.lock().unwrap().clone();
    assert!(
        stderr.contains(&format!(
            "keysmith dev: another keysmith dev is using {}",
            kubeconfig.display()
        )) && stderr.contains("pass --kubeconfig with another path"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&kubeconfig).unwrap(), written);

    // The first one stops and takes its file along.
    stop(first);
    assert!(!kubeconfig.exists());

    // Its file left behind (as after a crash) points at nothing: the next dev takes it over.
    std::fs::write(&kubeconfig, &written).unwrap();
    let next = running_dev(&kubeconfig);
    let taken_over = std::fs::read_to_string(&kubeconfig).unwrap();
    assert_ne!(taken_over, written);

    // Replaced meanwhile by someone else, the file is theirs: a stopping dev leaves it.
    std::fs::write(&kubeconfig, &written).unwrap();
    stop(next);
    assert_eq!(std::fs::read_to_string(&kubeconfig).unwrap(), written);
}
