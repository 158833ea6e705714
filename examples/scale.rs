//! Scale benchmark (SPEC section 10), run by `bench/scale.sh`: the API emulator (in this process,
//! RBAC on, the chart's rules), the release `keysmith controller` and `keysmith verifier` as child
//! processes under their ServiceAccounts, and N ApiKeys applied at once. It prints:
//!
//! - time from the first apply to every key `Ready`, and the controller's API writes (and reads)
//!   per key, from the emulator's request log;
//! - the controller's CPU seconds and peak resident memory (from `/proc`);
//! - `keysmith verifier`: time from start to `/readyz` (list + index of every key) and its
//!   resident memory; the index alone built in this process from the same ApiKeys, with its
//!   build time and the bytes it keeps per token (counting allocator);
//! - revocation delay: for a sample of keys, from the delete request to the first `/v1/verify`
//!   request that no longer answers `VALID` for its token, as percentiles;
//! - with `--schedule CRON`: every key shares that rotation schedule; after the first tick it
//!   reports how the rotations spread over the seconds after it (the UID jitter), and the writes
//!   per rotation.
//!
//! `scale [--keys N] [--schedule CRON] [--revocations M] [--keysmith PATH]`

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use jiff::Timestamp;
use keysmith::api::ApiKey;
use keysmith::verifier::index::Index;
use keysmith_emulator::{Config, Emulator, Identity, LogEntry};
use kube::Api;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "../benches/support/counting_alloc.rs"]
mod counting_alloc;

const CRD: &str = include_str!("../crds/apikeys.keysmith.dev.yaml");
const CONTROLLER_RULES: &str = include_str!("../charts/keysmith/files/controller-rules.yaml");
const LEADER_RULES: &str =
    include_str!("../charts/keysmith/files/controller-leader-election-rules.yaml");
const VERIFIER_RULES: &str = include_str!("../charts/keysmith/files/verifier-rules.yaml");
const NAMESPACES: usize = 100;
const SYSTEM_NS: &str = "keysmith";
/// Kernel clock ticks per second in `/proc/PID/stat` (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

struct Args {
    keys: usize,
    schedule: Option<String>,
    revocations: usize,
    keysmith: PathBuf,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        keys: 10_000,
        schedule: None,
        revocations: 200,
        // Next to this example: target/release/examples/scale → target/release/keysmith.
        keysmith: std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .and_then(Path::parent)
            .map(|dir| dir.join("keysmith"))
            .ok_or("cannot locate the keysmith binary; pass --keysmith")?,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--keys" => args.keys = value()?.parse().map_err(|e| format!("--keys: {e}"))?,
            "--schedule" => args.schedule = Some(value()?),
            "--revocations" => {
                args.revocations = value()?
                    .parse()
                    .map_err(|e| format!("--revocations: {e}"))?
            }
            "--keysmith" => args.keysmith = PathBuf::from(value()?),
            _ => {
                return Err(format!(
                    "unknown argument {flag}; usage: scale [--keys N] [--schedule CRON] \
                     [--revocations M] [--keysmith PATH]"
                ));
            }
        }
    }
    Ok(args)
}

fn sa(name: &str) -> Identity {
    Identity::service_account(SYSTEM_NS, name)
}

fn sa_user(name: &str) -> String {
    format!("system:serviceaccount:{SYSTEM_NS}:{name}")
}

/// The emulator prepared like a cluster with the chart installed.
async fn cluster(keys: usize) -> Result<Emulator, Box<dyn std::error::Error>> {
    let emu = Emulator::start(Config {
        rbac: true,
        // Keep every request of the run: writes and reads per key are counted from the log.
        request_log_limit: 40 * keys + 100_000,
        history: keys * 4,
        ..Config::default()
    })
    .await?;
    emu.apply_yaml(CRD)?;
    for ns in (0..NAMESPACES)
        .map(|i| format!("tenant-{i}"))
        .chain([SYSTEM_NS.to_owned()])
    {
        emu.apply_object(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )?;
    }
    for (name, rules, namespace) in [
        ("keysmith-controller", CONTROLLER_RULES, None),
        ("keysmith-verifier", VERIFIER_RULES, None),
        ("keysmith-controller", LEADER_RULES, Some(SYSTEM_NS)),
    ] {
        let rules: Value = serde_saphyr::from_str(rules)?;
        let (role, binding) = match namespace {
            None => ("ClusterRole", "ClusterRoleBinding"),
            Some(_) => ("Role", "RoleBinding"),
        };
        let metadata = json!({"name": name, "namespace": namespace});
        emu.apply_object(
            &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": role,
            "metadata": metadata, "rules": rules}),
        )?;
        emu.apply_object(
            &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": binding,
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role, "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": SYSTEM_NS}]}),
        )?;
    }
    Ok(emu)
}

fn apikey(i: usize, schedule: Option<&str>) -> Value {
    let mut spec = json!({
        "environment": "production",
        "tokens": [{"name": "delivery", "prefix": "cms_dt_", "metadata": {"content": "published"}}],
        "grants": [{"effect": "allow", "actions": ["content.read"], "resources": ["content:*"]}],
        "expiresAfter": "8760h",
    });
    if let Some(schedule) = schedule {
        spec["rotation"] = json!({"schedule": schedule, "overlap": "10s"});
    }
    json!({
        "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": format!("key-{i}"), "namespace": format!("tenant-{}", i % NAMESPACES)},
        "spec": spec,
    })
}

/// A `keysmith` child process with its output in `log`.
fn spawn(keysmith: &Path, args: &[&str], kubeconfig: &Path, log: &Path) -> std::io::Result<Child> {
    let log = std::fs::File::create(log)?;
    Command::new(keysmith)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
}

/// (CPU seconds, peak RSS MiB, current RSS MiB) of a process.
fn usage(pid: u32) -> (f64, f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(11) + ticks(12)) / TICKS;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (cpu, kib("VmHWM:"), kib("VmRSS:"))
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address")
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

async fn verify_code(addr: SocketAddr, token: &str) -> String {
    let body = json!({"token": token}).to_string();
    match http(addr, "POST", "/v1/verify", &body).await {
        Some((200, body)) => serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
            .unwrap_or_default(),
        other => format!("{other:?}"),
    }
}

fn is_ready(key: &Value) -> bool {
    key["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Controller requests by kind: (verb resource[/sub] → count), successful ones only.
fn requests_of(emu: &Emulator, user: &str, since: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let entries: Vec<LogEntry> = emu.request_log().entries();
    for e in entries.iter().skip(since) {
        if e.user == user && (200..300).contains(&e.code) && e.verb != "watch" {
            let resource = if e.subresource.is_empty() {
                e.resource.clone()
            } else {
                format!("{}/{}", e.resource, e.subresource)
            };
            *out.entry(format!("{} {resource}", e.verb)).or_default() += 1;
        }
    }
    out
}

fn is_write_kind(kind: &str) -> bool {
    let verb = kind.split(' ').next().unwrap_or_default();
    matches!(verb, "create" | "update" | "patch" | "delete") && !kind.ends_with(" events")
}

fn print_requests(label: &str, requests: &BTreeMap<String, usize>, per: usize) {
    let writes: usize = requests
        .iter()
        .filter(|(k, _)| is_write_kind(k))
        .map(|(_, n)| n)
        .sum();
    println!(
        "{label}: {writes} API writes ({:.2} per key), events excluded; by request: {}",
        writes as f64 / per as f64,
        requests
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let n = args.keys;
    println!(
        "scale: {n} ApiKeys in {NAMESPACES} namespaces{}",
        args.schedule
            .as_deref()
            .map(|s| format!(", one shared rotation schedule {s:?}"))
            .unwrap_or_default()
    );
    let emu = cluster(n).await?;
    let dir = tempfile::tempdir()?;
    let controller_kubeconfig = dir.path().join("controller.kubeconfig");
    let verifier_kubeconfig = dir.path().join("verifier.kubeconfig");
    emu.write_kubeconfig(&controller_kubeconfig, &sa("keysmith-controller"))?;
    emu.write_kubeconfig(&verifier_kubeconfig, &sa("keysmith-verifier"))?;

    let controller_metrics = free_port().to_string();
    let mut controller = spawn(
        &args.keysmith,
        &[
            "controller",
            "--metrics-listen",
            &controller_metrics,
            "--leader-election-namespace",
            SYSTEM_NS,
            "--identity",
            "scale",
        ],
        &controller_kubeconfig,
        &dir.path().join("controller.log"),
    )?;
    // Leader before the clock starts: the Lease is written once the controller holds it.
    let lease_deadline = Instant::now() + Duration::from_secs(60);
    while emu
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            SYSTEM_NS,
            "keysmith-controller",
        )
        .is_none()
    {
        if Instant::now() > lease_deadline {
            return Err("the controller did not take the Lease within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Apply every key and wait for all of them to be Ready.
    let controller_user = sa_user("keysmith-controller");
    let log_start = emu.request_log().entries().len();
    let start = Instant::now();
    for i in 0..n {
        emu.apply_object(&apikey(i, args.schedule.as_deref()))?;
    }
    let applied = start.elapsed();
    let ready_deadline = Instant::now() + Duration::from_secs(1800);
    let mut ready = 0;
    while ready < n {
        if Instant::now() > ready_deadline {
            return Err(format!("only {ready} of {n} keys Ready after 30 min").into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        ready = emu
            .list("keysmith.dev/v1alpha1", "ApiKey", None)
            .iter()
            .filter(|k| is_ready(k))
            .count();
    }
    let to_ready = start.elapsed();
    println!(
        "apply {n} keys: {:.2} s; all Ready {:.2} s after the first apply ({:.0} keys/s)",
        applied.as_secs_f64(),
        to_ready.as_secs_f64(),
        n as f64 / to_ready.as_secs_f64()
    );
    let minted = requests_of(&emu, &controller_user, log_start);
    print_requests("controller, mint", &minted, n);
    let (cpu, peak, rss) = usage(controller.id());
    println!("controller process: {cpu:.2} CPU s so far, peak RSS {peak:.1} MiB, RSS {rss:.1} MiB");

    if let Some(schedule) = &args.schedule {
        rotations(&emu, n, schedule, Timestamp::now(), &controller_user).await?;
        let (cpu, peak, rss) = usage(controller.id());
        println!(
            "controller process after the rotations: {cpu:.2} CPU s, peak RSS {peak:.1} MiB, \
             RSS {rss:.1} MiB"
        );
    }

    // The verifier process: list + index, memory.
    let (api, probes) = (free_port(), free_port());
    let verifier_start = Instant::now();
    let mut verifier = spawn(
        &args.keysmith,
        &[
            "verifier",
            "--listen",
            &api.to_string(),
            "--metrics-listen",
            &probes.to_string(),
        ],
        &verifier_kubeconfig,
        &dir.path().join("verifier.log"),
    )?;
    loop {
        if http(probes, "GET", "/readyz", "").await.map(|r| r.0) == Some(200) {
            break;
        }
        if verifier_start.elapsed() > Duration::from_secs(300) {
            return Err("the verifier was not ready within 5 min".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let verifier_ready = verifier_start.elapsed();
    let indexed = http(probes, "GET", "/metrics", "")
        .await
        .and_then(|(_, body)| {
            body.lines()
                .find_map(|l| l.strip_prefix("keysmith_index_tokens "))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    let (vcpu, vpeak, vrss) = usage(verifier.id());
    println!(
        "verifier process: /readyz {:.0} ms after start ({indexed} tokens indexed), \
         {vcpu:.2} CPU s, RSS {vrss:.1} MiB (peak {vpeak:.1} MiB)",
        verifier_ready.as_secs_f64() * 1e3
    );

    // The index alone, in this process, from the same ApiKeys.
    let keys: Vec<ApiKey> = emu
        .list("keysmith.dev/v1alpha1", "ApiKey", None)
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()?;
    let before = counting_alloc::live_bytes();
    let index_start = Instant::now();
    let index = Index::default();
    let now = Timestamp::now();
    for key in &keys {
        index.apply(key, now);
    }
    let built = index_start.elapsed();
    let bytes = counting_alloc::live_bytes() - before;
    println!(
        "index (in process): {} ApiKeys, {} tokens in {:.1} ms, {} bytes per token",
        keys.len(),
        index.tokens(),
        built.as_secs_f64() * 1e3,
        bytes / index.tokens().max(1) as isize
    );
    drop(index);
    drop(keys);

    revocations(&emu, n, args.revocations, api).await?;

    let (cpu, peak, rss) = usage(controller.id());
    println!(
        "controller process at the end: {cpu:.2} CPU s, peak RSS {peak:.1} MiB, RSS {rss:.1} MiB"
    );
    for child in [&mut controller, &mut verifier] {
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok(())
}

/// Wait for the first scheduled rotation of every key (a token issued after `minted_by`, when
/// every key was Ready) and report how they spread.
async fn rotations(
    emu: &Emulator,
    n: usize,
    schedule: &str,
    minted_by: Timestamp,
    controller_user: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let log_start = emu.request_log().entries().len();
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut rotated: Vec<Timestamp> = Vec::new();
    while rotated.len() < n {
        if Instant::now() > deadline {
            return Err(format!("only {} of {n} keys rotated in 15 min", rotated.len()).into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        rotated = emu
            .list("keysmith.dev/v1alpha1", "ApiKey", None)
            .iter()
            .filter_map(|k| k["status"]["tokens"][0]["issuedAt"].as_str()?.parse().ok())
            .filter(|issued: &Timestamp| *issued > minted_by)
            .collect();
    }
    // The schedule's tick a rotation answered: the whole minute at or before it, as long as the
    // spread stays under a minute (jitter is at most 10% of the interval).
    let mut by_second: BTreeMap<i64, usize> = BTreeMap::new();
    let mut ticks: BTreeMap<i64, usize> = BTreeMap::new();
    for t in &rotated {
        let secs = t.as_second();
        *by_second.entry(secs % 60).or_default() += 1;
        *ticks.entry(secs - secs % 60).or_default() += 1;
    }
    let busiest = by_second.values().max().copied().unwrap_or(0);
    println!(
        "rotations on {schedule:?}: {n} keys rotated at {} distinct seconds past their tick \
         (ticks: {}); busiest second {busiest} rotations ({:.1}% of the keys); per second past \
         the tick: {}",
        by_second.len(),
        ticks.len(),
        busiest as f64 * 100.0 / n as f64,
        by_second
            .iter()
            .map(|(s, c)| format!("+{s}s={c}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    print_requests(
        "controller, one rotation each",
        &requests_of(emu, controller_user, log_start),
        n,
    );
    Ok(())
}

/// Delete a sample of keys one at a time and time how long each token keeps verifying.
async fn revocations(
    emu: &Emulator,
    n: usize,
    sample: usize,
    api: SocketAddr,
) -> Result<(), Box<dyn std::error::Error>> {
    let admin = emu.client().await?;
    let mut delays = Vec::new();
    let step = (n / sample.max(1)).max(1);
    for i in (0..n).step_by(step).take(sample) {
        let (name, ns) = (format!("key-{i}"), format!("tenant-{}", i % NAMESPACES));
        let secret = emu
            .get("v1", "Secret", &ns, &name)
            .ok_or(format!("Secret {ns}/{name} is missing"))?;
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(secret)?;
        let token = secret
            .data
            .and_then(|mut d| d.remove("delivery"))
            .and_then(|v| String::from_utf8(v.0).ok())
            .ok_or("the Secret holds no token")?;
        let code = verify_code(api, &token).await;
        if code != "VALID" {
            return Err(format!("{ns}/{name} answers {code} before its deletion").into());
        }
        let api_keys: Api<ApiKey> = Api::namespaced(admin.clone(), &ns);
        let start = Instant::now();
        api_keys.delete(&name, &Default::default()).await?;
        // The delay ends when the first non-VALID answer was asked for: the verifier slows
        // failures from an address that keeps failing (this one, after a few revocations), and
        // that deliberate delay is not revocation delay.
        let revoked_by = loop {
            let asked = start.elapsed();
            let code = verify_code(api, &token).await;
            if code == "REVOKED" || code == "NOT_FOUND" {
                break asked;
            }
            if asked > Duration::from_secs(30) {
                return Err(format!("{ns}/{name} still answers {code} 30 s after deletion").into());
            }
        };
        delays.push(revoked_by);
    }
    delays.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "revocation, delete to REVOKED/NOT_FOUND, {} keys: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, \
         max {:.1} ms",
        delays.len(),
        ms(percentile(&delays, 0.50)),
        ms(percentile(&delays, 0.90)),
        ms(percentile(&delays, 0.99)),
        ms(*delays.last().unwrap_or(&Duration::ZERO)),
    );
    Ok(())
}
