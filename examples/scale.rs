//! Scale benchmark, run by `bench/scale.sh`: an API server with the chart's RBAC (the emulator in
//! this process, or with `--cluster real` a real kube-apiserver, etcd and kube-controller-manager
//! built by `testenv/install`), the release `keysmith controller` and `keysmith verifier` as child
//! processes under their ServiceAccounts, and N ApiKeys applied at once. It prints:
//!
//! - time from the first apply to every key `Ready`, and the controller's API writes (and reads)
//!   per key, from the emulator's request log or the real server's audit log;
//! - on the real server, the same writes witnessed by the server's own `apiserver_request_total`
//!   (per new key, per rotation, per healthy resync: a restarted controller reconciling every
//!   key), and the ceiling: the rate at which a plain client creates as many Secrets on the same
//!   server, with the controller's write rate while minting as a share of it;
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
//! With `--server-profile DIR` (real server only; `bench/scale.sh` then starts kube-apiserver with
//! `/debug/pprof` on) it saves the server's CPU profiles: `DIR/mint.pprof`, 30 s from 10 s after
//! the controller took the Lease, and `DIR/ceiling.pprof`, 5 s of the plain client's creates
//! (`go tool pprof -top DIR/mint.pprof`).
//!
//! With `--verifier-only` the controller is not run: each key is applied with a token already
//! minted into its status (as `examples/load_fixture.rs` does), and only the verifier is measured,
//! beside the API server's own time to list the fleet (a plain client fetching the same pages of
//! 500, bodies not decoded).
//!
//! `scale [--cluster emulator|real] [--keys N] [--schedule CRON] [--revocations M] [--distinct-grants]
//! [--verifier-only] [--server-profile DIR] [--keysmith PATH]`

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use keysmith::api::{ApiKey, Encoding};
use keysmith::token::Token;
use keysmith::verifier::index::Index;
use keysmith_emulator::{Config, Identity};
use keysmith_testenv::{Backend, Cluster};
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "../benches/support/counting_alloc.rs"]
mod counting_alloc;

const NAMESPACES: usize = 100;
/// Requests in flight while applying the fleet or creating the plain client's Secrets.
const CONCURRENCY: usize = 16;
const SYSTEM_NS: &str = "keysmith";
/// Kernel clock ticks per second in `/proc/PID/stat` (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

struct Args {
    backend: Backend,
    keys: usize,
    schedule: Option<String>,
    revocations: usize,
    /// Every key gets grants of its own (no grant set shared in the verifier's index).
    distinct_grants: bool,
    /// Keys applied with their tokens minted, no controller: the verifier phase alone.
    verifier_only: bool,
    /// Where to save the real server's CPU profiles of minting and of the ceiling.
    server_profile: Option<PathBuf>,
    keysmith: PathBuf,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        backend: Backend::Emulator,
        keys: 10_000,
        schedule: None,
        revocations: 200,
        distinct_grants: false,
        verifier_only: false,
        server_profile: None,
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
            "--cluster" => {
                args.backend = match value()?.as_str() {
                    "emulator" => Backend::Emulator,
                    "real" => Backend::Real,
                    other => return Err(format!("--cluster {other}: emulator or real")),
                }
            }
            "--keys" => args.keys = value()?.parse().map_err(|e| format!("--keys: {e}"))?,
            "--schedule" => args.schedule = Some(value()?),
            "--revocations" => {
                args.revocations = value()?
                    .parse()
                    .map_err(|e| format!("--revocations: {e}"))?
            }
            "--distinct-grants" => args.distinct_grants = true,
            "--verifier-only" => args.verifier_only = true,
            "--server-profile" => args.server_profile = Some(PathBuf::from(value()?)),
            "--keysmith" => args.keysmith = PathBuf::from(value()?),
            _ => {
                return Err(format!(
                    "unknown argument {flag}; usage: scale [--keys N] [--schedule CRON] \
                     [--revocations M] [--distinct-grants] [--verifier-only] [--server-profile DIR] \
                     [--keysmith PATH]"
                ));
            }
        }
    }
    if let Some(dir) = &args.server_profile {
        if args.backend != Backend::Real || args.verifier_only {
            return Err(
                "--server-profile profiles a real kube-apiserver while the controller mints: add \
                 --cluster real, without --verifier-only"
                    .into(),
            );
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("--server-profile {}: {e}", dir.display()))?;
    }
    Ok(args)
}

fn sa(name: &str) -> Identity {
    Identity::service_account(SYSTEM_NS, name)
}

fn sa_user(name: &str) -> String {
    format!("system:serviceaccount:{SYSTEM_NS}:{name}")
}

/// A cluster with the chart installed (on the emulator, keeping every request of the run: writes
/// and reads per key are counted from its log) and the tenant namespaces.
async fn cluster(backend: Backend, keys: usize) -> Result<Cluster, Box<dyn std::error::Error>> {
    let config = Config {
        request_log_limit: 40 * keys + 100_000,
        // Each watch event keeps a whole object (a few KiB parsed): four per key would hold
        // 12 GiB at 100,000 keys. The watches stay connected, so the history serves no resume.
        history: (keys * 4).min(40_000),
        ..Config::default()
    };
    let cluster = Cluster::with_chart(backend, config).await?;
    for i in 0..NAMESPACES {
        cluster
            .apply_object(&json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": format!("tenant-{i}")}}))
            .await?;
    }
    Ok(cluster)
}

fn apikey(i: usize, schedule: Option<&str>, distinct_grants: bool) -> Value {
    let resource = if distinct_grants {
        format!("content:site-{i}:*")
    } else {
        "content:*".to_owned()
    };
    let mut spec = json!({
        "environment": "production",
        "tokens": [{"name": "delivery", "prefix": "cms_dt_", "metadata": {"content": "published"}}],
        "grants": [{"effect": "allow", "actions": ["content.read"], "resources": [resource]}],
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

/// Apply keys `0..n` as [`apikey`] does, each with a token of its own minted into its status, as
/// the controller would have: the tokens, by key.
async fn apply_minted(
    cluster: &Cluster,
    n: usize,
    distinct_grants: bool,
) -> Result<Vec<Token>, Box<dyn std::error::Error>> {
    let admin = cluster.client().await?;
    let tokens: Vec<Token> = (0..n)
        .map(|_| Token::generate("cms_dt_", 32, Encoding::Base62))
        .collect::<Result<_, _>>()?;
    futures::stream::iter(tokens.iter().enumerate())
        .map(|(i, token)| {
            let admin = admin.clone();
            async move {
                let key = apikey(i, None, distinct_grants);
                cluster.apply_object(&key).await?;
                let status = json!({"status": {"tokens": [{"name": "delivery", "id": token.id(),
                    "sha256": token.sha256_hex(), "issuedAt": Timestamp::now().to_string()}]}});
                let namespace = key["metadata"]["namespace"].as_str().unwrap_or_default();
                let name = key["metadata"]["name"].as_str().unwrap_or_default();
                Api::<ApiKey>::namespaced(admin, namespace)
                    .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
                    .await?;
                Ok::<_, Box<dyn std::error::Error>>(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(tokens)
}

/// The API server's own time to list every ApiKey, as a plain client in pages of 500 (the
/// watcher's page size), the bodies read but not decoded beyond each page's continue token.
async fn server_list(cluster: &Cluster) -> Result<String, Box<dyn std::error::Error>> {
    #[derive(serde::Deserialize)]
    struct Page {
        metadata: kube::api::ListMeta,
    }
    let admin = cluster.client().await?;
    let start = Instant::now();
    let (mut pages, mut bytes) = (0, 0);
    let mut next = String::new();
    loop {
        let uri = format!("/apis/keysmith.dev/v1alpha1/apikeys?limit=500&continue={next}");
        let body = admin
            .request_text(hyper::Request::get(uri).body(Vec::new())?)
            .await?;
        pages += 1;
        bytes += body.len();
        let page: Page = serde_json::from_str(&body)?;
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => next = c,
            None => break,
        }
    }
    Ok(format!(
        "API server, plain list of every ApiKey: {pages} pages of 500, {:.1} MB, in {:.2} s",
        bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    ))
}

/// A `keysmith` child process with its output in `log`.
fn spawn(
    keysmith: &Path,
    args: &[&str],
    kubeconfig: &Path,
    log: &Path,
) -> std::io::Result<Process> {
    let log = std::fs::File::create(log)?;
    Command::new(keysmith)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map(Process)
}

/// A child process stopped when dropped, so that a benchmark ending in an error leaves no
/// controller or verifier running against a server that is gone.
struct Process(Child);

impl Process {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

/// Controller requests since the last `clear_requests` by kind: (verb resource[/sub] → count),
/// successful ones only.
fn requests_of(cluster: &Cluster, user: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in cluster.requests(|e| e.user == user) {
        if (200..300).contains(&e.code) && e.verb != "watch" {
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

/// Writes about keys: events are best effort and Lease renewals follow the clock, not the keys.
fn is_write_kind(kind: &str) -> bool {
    let verb = kind.split(' ').next().unwrap_or_default();
    matches!(verb, "create" | "update" | "patch" | "delete")
        && !kind.ends_with(" events")
        && !kind.ends_with(" leases")
}

/// Print the requests and return the writes among them.
fn print_requests(label: &str, requests: &BTreeMap<String, usize>, per: usize) -> usize {
    let writes: usize = requests
        .iter()
        .filter(|(k, _)| is_write_kind(k))
        .map(|(_, n)| n)
        .sum();
    println!(
        "{label}: {writes} API writes ({:.2} per key), events and Lease renewals excluded; by \
         request: {}",
        writes as f64 / per as f64,
        requests
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    writes
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
    let cluster = cluster(args.backend, n).await?;
    let dir = tempfile::tempdir()?;
    let controller_kubeconfig = dir.path().join("controller.kubeconfig");
    let verifier_kubeconfig = dir.path().join("verifier.kubeconfig");
    cluster
        .write_kubeconfig(&controller_kubeconfig, &sa("keysmith-controller"))
        .await?;
    cluster
        .write_kubeconfig(&verifier_kubeconfig, &sa("keysmith-verifier"))
        .await?;

    if args.verifier_only {
        let start = Instant::now();
        let tokens = apply_minted(&cluster, n, args.distinct_grants).await?;
        println!(
            "apply {n} keys with a minted token each: {:.2} s (no controller)",
            start.elapsed().as_secs_f64()
        );
        let dir_path = dir.path();
        drop(
            verifier(
                &args,
                &cluster,
                &verifier_kubeconfig,
                dir_path,
                Some(&tokens),
            )
            .await?,
        );
        return Ok(());
    }

    let controller_metrics = free_port();
    let start_controller = || {
        spawn(
            &args.keysmith,
            &[
                "controller",
                "--metrics-listen",
                &controller_metrics.to_string(),
                "--leader-election-namespace",
                SYSTEM_NS,
                "--identity",
                "scale",
            ],
            &controller_kubeconfig,
            &dir.path().join("controller.log"),
        )
    };
    // Apply every key with no controller running, then start it and time it until all are
    // Ready: its write rate is then its own, not the rate the keys arrived at.
    let controller_user = sa_user("keysmith-controller");
    let server_before = server_writes(&cluster).await?;
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let cluster = &cluster;
            let key = apikey(i, args.schedule.as_deref(), args.distinct_grants);
            async move { cluster.apply_object(&key).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let applied = start.elapsed();
    cluster.clear_requests();
    let cpu_before = server_cpu(&cluster).await?;
    let controller = start_controller()?;
    let lease_deadline = Instant::now() + Duration::from_secs(60);
    while cluster
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            SYSTEM_NS,
            "keysmith-controller",
        )
        .await
        .is_none()
    {
        if Instant::now() > lease_deadline {
            return Err("the controller did not take the Lease within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leading = Instant::now();
    let mint_profile = match &args.server_profile {
        Some(dir) => Some(server_profile(&cluster, 10, 30, dir.join("mint.pprof")).await?),
        None => None,
    };
    wait_ready(&cluster, n, &controller_user).await?;
    let minting = leading.elapsed();
    println!(
        "apply {n} keys: {:.2} s; all Ready {:.2} s after the controller took the Lease \
         ({:.0} keys/s); apply to Ready {:.2} s{}",
        applied.as_secs_f64(),
        minting.as_secs_f64(),
        n as f64 / minting.as_secs_f64(),
        start.elapsed().as_secs_f64(),
        server_cpu_since(&cluster, cpu_before, n, "key").await?
    );
    let minted = requests_of(&cluster, &controller_user);
    let mint_writes = print_requests("controller, mint", &minted, n);
    // The fleet's own applies are writes to apikeys too: one per key.
    print_server_writes(&cluster, "mint", &server_before, n, n).await?;
    if let Some(profile) = mint_profile {
        profile.await??;
    }
    let (cpu, peak, rss) = usage(controller.id());
    println!("controller process: {cpu:.2} CPU s so far, peak RSS {peak:.1} MiB, RSS {rss:.1} MiB");

    // A healthy resync: a restarted controller reconciles every key from its initial list.
    drop(controller);
    cluster.clear_requests();
    let server_before = server_writes(&cluster).await?;
    let controller = start_controller()?;
    let resync_deadline = Instant::now() + Duration::from_secs(600);
    while reconciles(controller_metrics).await < n as u64 {
        if Instant::now() > resync_deadline {
            return Err("the restarted controller did not reconcile every key in 10 min".into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    print_requests(
        "controller, resync after a restart",
        &requests_of(&cluster, &controller_user),
        n,
    );
    print_server_writes(&cluster, "resync", &server_before, n, 0).await?;
    let (cpu, peak, rss) = usage(controller.id());
    println!(
        "restarted controller after the resync: {cpu:.2} CPU s, peak RSS {peak:.1} MiB, RSS \
         {rss:.1} MiB"
    );

    let ceiling_profile = match &args.server_profile {
        Some(dir) => Some(server_profile(&cluster, 0, 5, dir.join("ceiling.pprof")).await?),
        None => None,
    };
    ceiling(&cluster, n, mint_writes, minting).await?;
    if let Some(profile) = ceiling_profile {
        profile.await??;
    }

    if let Some(schedule) = &args.schedule {
        rotations(&cluster, n, schedule, Timestamp::now(), &controller_user).await?;
        let (cpu, peak, rss) = usage(controller.id());
        println!(
            "controller process after the rotations: {cpu:.2} CPU s, peak RSS {peak:.1} MiB, \
             RSS {rss:.1} MiB"
        );
    }

    let verifier = verifier(&args, &cluster, &verifier_kubeconfig, dir.path(), None).await?;

    let (cpu, peak, rss) = usage(controller.id());
    println!(
        "controller process at the end: {cpu:.2} CPU s, peak RSS {peak:.1} MiB, RSS {rss:.1} MiB"
    );
    drop((controller, verifier));
    Ok(())
}

/// The verifier phase: the API server's own time to list the fleet, then `keysmith verifier`
/// from start to `/readyz` (list + index, CPU, memory), the index alone in this process, and
/// the revocation delay (tokens read from the keys' Secrets, or given). The verifier keeps
/// running until the returned process is dropped.
async fn verifier(
    args: &Args,
    cluster: &Cluster,
    kubeconfig: &Path,
    dir: &Path,
    tokens: Option<&[Token]>,
) -> Result<Process, Box<dyn std::error::Error>> {
    println!("{}", server_list(cluster).await?);
    let (api, probes) = (free_port(), free_port());
    // On the emulator this process serves the list: its CPU is the API server's share.
    let (server_cpu_before, _, _) = usage(std::process::id());
    let verifier_start = Instant::now();
    let verifier = spawn(
        &args.keysmith,
        &[
            "verifier",
            "--listen",
            &api.to_string(),
            "--metrics-listen",
            &probes.to_string(),
            // Unscoped /v1/verify accepts no namespace by default (tenant isolation); the
            // benchmark's keys live in many namespaces.
            "--accept-namespaces",
            "*",
        ],
        kubeconfig,
        &dir.join("verifier.log"),
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
    let (server_cpu, _, _) = usage(std::process::id());
    let indexed = metric(probes, "keysmith_index_tokens ")
        .await
        .unwrap_or_default();
    let (vcpu, vpeak, vrss) = usage(verifier.id());
    println!(
        "verifier process: /readyz {:.0} ms after start ({indexed} tokens indexed), \
         {vcpu:.2} CPU s, RSS {vrss:.1} MiB (peak {vpeak:.1} MiB)",
        verifier_ready.as_secs_f64() * 1e3
    );
    if cluster.backend() == Backend::Emulator {
        println!(
            "emulator (this process) meanwhile: {:.2} CPU s",
            server_cpu - server_cpu_before
        );
    }

    // The index alone, in this process, from the same ApiKeys.
    let keys: Vec<ApiKey> = cluster
        .list("keysmith.dev/v1alpha1", "ApiKey", None)
        .await
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

    revocations(cluster, args.keys, args.revocations, api, tokens).await?;

    Ok(verifier)
}

/// Poll until every ApiKey is Ready. A list of the fleet is real work taken from the controller
/// on the same CPUs (seconds at 100,000 keys, and as much memory again in this process), so
/// the fleet is listed only once every key has had a status written by the controller (counted
/// in the API server's request log), and then less often the larger the fleet.
async fn wait_ready(
    cluster: &Cluster,
    n: usize,
    controller_user: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let per_10k = u32::try_from(n.div_ceil(10_000)).unwrap_or(u32::MAX).max(1);
    let poll = per_10k
        * match cluster.backend() {
            Backend::Emulator => Duration::from_millis(250),
            Backend::Real => Duration::from_secs(1),
        };
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        tokio::time::sleep(poll).await;
        let status_written: HashSet<(String, String)> = cluster
            .requests(|e| {
                e.user == controller_user
                    && e.resource == "apikeys"
                    && e.subresource == "status"
                    && e.is_write()
                    && (200..300).contains(&e.code)
            })
            .into_iter()
            .map(|e| (e.namespace, e.name))
            .collect();
        let ready = if status_written.len() < n {
            0
        } else {
            cluster
                .list("keysmith.dev/v1alpha1", "ApiKey", None)
                .await
                .iter()
                .filter(|k| is_ready(k))
                .count()
        };
        if ready == n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} of {n} keys have a status and {ready} are Ready after 60 min",
                status_written.len()
            )
            .into());
        }
    }
}

/// A sample's value from a component's `/metrics` (`name` includes any labels and the space).
async fn metric(addr: SocketAddr, name: &str) -> Option<String> {
    let (_, body) = http(addr, "GET", "/metrics", "").await?;
    body.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_owned())
}

/// Reconciles the controller has finished.
async fn reconciles(addr: SocketAddr) -> u64 {
    metric(addr, "keysmith_reconcile_duration_seconds_count ")
        .await
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Successful writes to ApiKeys and Secrets the real API server counted in its own
/// `apiserver_request_total`, by `VERB resource[/sub]` (None on the emulator, which has no such
/// metric): an independent witness of the controller's writes.
async fn server_writes(
    cluster: &Cluster,
) -> Result<Option<BTreeMap<String, f64>>, Box<dyn std::error::Error>> {
    let Some(text) = server_metrics(cluster).await? else {
        return Ok(None);
    };
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((labels, value)) = line
            .strip_prefix("apiserver_request_total{")
            .and_then(|l| l.rsplit_once("} "))
        else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split("\",")
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let (verb, resource, sub) = (label("verb"), label("resource"), label("subresource"));
        // The server labels creates and updates by their HTTP method (`POST`, `PUT`), server-side
        // apply as `APPLY`.
        let write = matches!(verb.as_str(), "APPLY" | "POST" | "PATCH" | "PUT" | "DELETE");
        if write && label("code").starts_with('2') && ["apikeys", "secrets"].contains(&&*resource) {
            let kind = if sub.is_empty() {
                format!("{verb} {resource}")
            } else {
                format!("{verb} {resource}/{sub}")
            };
            *out.entry(kind).or_default() += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    Ok(Some(out))
}

/// The real API server's own `/metrics` (None on the emulator).
async fn server_metrics(cluster: &Cluster) -> Result<Option<String>, Box<dyn std::error::Error>> {
    if cluster.backend() != Backend::Real {
        return Ok(None);
    }
    let request = hyper::Request::get("/metrics").body(Vec::new())?;
    Ok(Some(cluster.client().await?.request_text(request).await?))
}

/// The real API server's CPU seconds so far (None on the emulator, which runs in this process):
/// on 2 CPUs shared with the controller, the server's CPU per request is what bounds the rates.
async fn server_cpu(cluster: &Cluster) -> Result<Option<f64>, Box<dyn std::error::Error>> {
    Ok(server_metrics(cluster).await?.and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
            .and_then(|v| v.trim().parse().ok())
    }))
}

/// The server's CPU between `before` and now, per item of `n`, as a phrase to print.
async fn server_cpu_since(
    cluster: &Cluster,
    before: Option<f64>,
    n: usize,
    per: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    Ok(match (before, server_cpu(cluster).await?) {
        (Some(before), Some(after)) => format!(
            "; kube-apiserver {:.1} CPU s, {:.2} ms per {per}",
            after - before,
            (after - before) * 1000.0 / n as f64
        ),
        _ => String::new(),
    })
}

/// The server's count of writes since `before`, less `own` writes the benchmark made itself,
/// per key.
async fn print_server_writes(
    cluster: &Cluster,
    phase: &str,
    before: &Option<BTreeMap<String, f64>>,
    n: usize,
    own: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let (Some(before), Some(after)) = (before, server_writes(cluster).await?) else {
        return Ok(());
    };
    let delta: BTreeMap<&String, f64> = after
        .iter()
        .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let total = (delta.values().sum::<f64>() - own as f64) as i64;
    println!(
        "apiserver_request_total, {phase}: {total} writes to ApiKeys and Secrets besides the \
         benchmark's own {own} ({:.2} per key); by request: {}",
        total as f64 / n as f64,
        delta
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

type Profile = tokio::task::JoinHandle<Result<(), String>>;

/// After `delay` seconds, take the real server's CPU profile for `seconds` into `path`, in the
/// background: Go's pprof format, which names the server's functions although its binary is
/// stripped.
async fn server_profile(
    cluster: &Cluster,
    delay: u64,
    seconds: u64,
    path: PathBuf,
) -> Result<Profile, Box<dyn std::error::Error>> {
    let admin = cluster.client().await?;
    Ok(tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(delay)).await;
        let uri = format!("/debug/pprof/profile?seconds={seconds}");
        let request = hyper::Request::get(uri)
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        futures::AsyncReadExt::read_to_end(
            &mut admin.request_stream(request).await.map_err(|e| {
                format!("{e} (is kube-apiserver started with KEYSMITH_TESTENV_PROFILING=1?)")
            })?,
            &mut body,
        )
        .await
        .map_err(|e| e.to_string())?;
        std::fs::write(&path, body).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("kube-apiserver CPU profile: {}", path.display());
        Ok(())
    }))
}

/// The plain-client ceiling: create `n` Secrets with [`CONCURRENCY`] requests in flight and
/// compare the controller's write rate while minting with that rate. The client acts as the
/// controller's ServiceAccount: a real server's priority and fairness gives an administrator
/// (exempt) more room than a ServiceAccount, so anything else would not be the same server.
async fn ceiling(
    cluster: &Cluster,
    n: usize,
    controller_writes: usize,
    minting: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let client = cluster.client_as(&sa("keysmith-controller")).await?;
    let cpu_before = server_cpu(cluster).await?;
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let secrets: Api<Secret> =
                Api::namespaced(client.clone(), &format!("tenant-{}", i % NAMESPACES));
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(format!("plain-{i}")),
                    ..ObjectMeta::default()
                },
                string_data: Some([("delivery".to_owned(), format!("value-{i}"))].into()),
                ..Secret::default()
            };
            async move { secrets.create(&PostParams::default(), &secret).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let plain = n as f64 / start.elapsed().as_secs_f64();
    let cpu = server_cpu_since(cluster, cpu_before, n, "Secret").await?;
    let controller = controller_writes as f64 / minting.as_secs_f64();
    println!(
        "ceiling: a plain client created {n} Secrets at {plain:.0} writes/s ({CONCURRENCY} in \
         flight{cpu}); the controller wrote {controller:.0} writes/s while minting: {:.2} of \
         the ceiling",
        controller / plain
    );
    Ok(())
}

/// Wait for the first scheduled rotation of every key (a token issued after `minted_by`, when
/// every key was Ready) and report how they spread.
async fn rotations(
    cluster: &Cluster,
    n: usize,
    schedule: &str,
    minted_by: Timestamp,
    controller_user: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    cluster.clear_requests();
    let server_before = server_writes(cluster).await?;
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut rotated: Vec<Timestamp> = Vec::new();
    while rotated.len() < n {
        if Instant::now() > deadline {
            return Err(format!("only {} of {n} keys rotated in 15 min", rotated.len()).into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        rotated = cluster
            .list("keysmith.dev/v1alpha1", "ApiKey", None)
            .await
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
        &requests_of(cluster, controller_user),
        n,
    );
    print_server_writes(cluster, "one rotation each", &server_before, n, 0).await?;
    Ok(())
}

/// Delete a sample of keys one at a time and time how long each token keeps verifying.
async fn revocations(
    cluster: &Cluster,
    n: usize,
    sample: usize,
    api: SocketAddr,
    tokens: Option<&[Token]>,
) -> Result<(), Box<dyn std::error::Error>> {
    let admin = cluster.client().await?;
    let mut delays = Vec::new();
    let step = (n / sample.max(1)).max(1);
    for i in (0..n).step_by(step).take(sample) {
        let (name, ns) = (format!("key-{i}"), format!("tenant-{}", i % NAMESPACES));
        let token = match tokens {
            Some(tokens) => tokens[i].expose_secret().to_owned(),
            None => {
                let secret = cluster
                    .get("v1", "Secret", &ns, &name)
                    .await
                    .ok_or(format!("Secret {ns}/{name} is missing"))?;
                let secret: Secret = serde_json::from_value(secret)?;
                secret
                    .data
                    .and_then(|mut d| d.remove("delivery"))
                    .and_then(|v| String::from_utf8(v.0).ok())
                    .ok_or("the Secret holds no token")?
            }
        };
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
