//! `keysmith usage NAME [-n NS] [--since 1h] [--follow] [-o json]`: what the verifier replicas
//! saw of an ApiKey's tokens (counts by answer code for the last hour and day, recent requests),
//! read from the aggregated API `usage.keysmith.dev` through the API server, so the caller's own
//! RBAC decides (`get` on `apikeyusages`, which the chart adds to the `edit` and `admin` roles).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::args::NamespaceArgs;
use crate::cluster::Retries;
use crate::verifier::activity::{Counts, RecentRequest};
use crate::verifier::usage_api::object::{API_VERSION, ApiKeyUsage, GROUP, RESOURCE};

/// How often `--follow` asks again.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// Output format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The `ApiKeyUsage` object as JSON.
    Json,
}

/// Arguments of `keysmith usage`.
#[derive(Args, Debug)]
pub struct UsageArgs {
    /// ApiKey name.
    name: String,

    /// Show requests from this long ago (e.g. 30m, 1h; counts always cover the last hour and
    /// day).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    since: String,

    /// Keep asking every 2 seconds and print new requests as they come.
    #[arg(short = 'f', long)]
    follow: bool,

    /// Output format: a table by default.
    #[arg(short = 'o', long, value_enum)]
    output: Option<Output>,

    #[command(flatten)]
    at: NamespaceArgs,
}

/// Run `keysmith usage`.
pub fn run(args: UsageArgs) -> ExitCode {
    super::block_on("usage", usage(args))
}

async fn usage(args: UsageArgs) -> Result<(), String> {
    crate::duration::parse(&args.since).map_err(|e| format!("--since: {e}"))?;
    // A usage API whose backend is down answers 503 at once; kube's retries would turn that
    // into minutes of silence before the same message.
    let (client, namespace) = args.at.connect_with(Retries::Never).await?;
    let path = format!(
        "/apis/{API_VERSION}/namespaces/{namespace}/{RESOURCE}/{}?since={}",
        args.name, args.since
    );
    let fetch = || async {
        let request = hyper::Request::get(&path)
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        client
            .request::<ApiKeyUsage>(request)
            .await
            .map_err(|e| explain(e, &namespace, &args.name))
    };
    let first = fetch().await?;
    match args.output {
        Some(Output::Json) => println!(
            "{}",
            serde_json::to_string_pretty(&first).map_err(|e| e.to_string())?
        ),
        None => print!("{}", render(&first)),
    }
    if !args.follow {
        return Ok(());
    }
    let mut seen: HashSet<String> = requests(&first).map(|(_, r)| identity(r)).collect();
    let mut failing = None;
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        // Following outlives a replica's restart: say what failed, once, and keep polling.
        let next = match fetch().await {
            Ok(next) => {
                failing = None;
                next
            }
            Err(err) => {
                if failing.as_ref() != Some(&err) {
                    eprintln!("{err} (still polling; Ctrl-C stops)");
                    failing = Some(err);
                }
                continue;
            }
        };
        let mut fresh: Vec<(&str, &RecentRequest)> = requests(&next)
            .filter(|(_, r)| seen.insert(identity(r)))
            .collect();
        fresh.sort_by_key(|(_, r)| r.time);
        for (token, request) in fresh {
            match args.output {
                Some(Output::Json) => println!(
                    "{}",
                    serde_json::json!({"token": token, "request": request})
                ),
                None => print!("{}", request_lines(&[(token, request)], false)),
            }
        }
    }
}

fn requests(usage: &ApiKeyUsage) -> impl Iterator<Item = (&str, &RecentRequest)> {
    usage
        .tokens
        .iter()
        .flat_map(|t| t.recent.iter().map(move |r| (t.token.as_str(), r)))
}

/// What tells two requests apart across polls.
fn identity(request: &RecentRequest) -> String {
    serde_json::to_string(request).unwrap_or_default()
}

/// The error of the usage API in a line that says what to do.
fn explain(err: kube::Error, namespace: &str, name: &str) -> String {
    match &err {
        kube::Error::Api(status) if status.code == 403 => format!(
            "forbidden: reading the usage of ApiKey {namespace}/{name} needs `get` on \
             {RESOURCE}.{GROUP} in namespace {namespace} (the edit and admin roles include it \
             through the keysmith-usage-reader ClusterRole): {}",
            status.message
        ),
        kube::Error::Api(status) if status.code == 401 => {
            format!(
                "the usage API did not accept your credentials: {}",
                status.message
            )
        }
        kube::Error::Api(status) if status.code == 404 || status.code == 503 => format!(
            "the usage API ({API_VERSION}) is not available in this cluster ({}): install the \
             chart with usage.enabled=true and check `kubectl get apiservice v1alpha1.{GROUP}`",
            status.message
        ),
        _ => format!("reading the usage of ApiKey {namespace}/{name}: {err}"),
    }
}

fn counts(counts: &Counts) -> String {
    if counts.is_empty() {
        return "-".into();
    }
    counts
        .iter()
        .map(|(code, n)| format!("{code}={n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Rows aligned like `kubectl get`.
fn aligned(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}   ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

fn or_dash(value: &str) -> String {
    if value.is_empty() {
        "-".into()
    } else {
        value.into()
    }
}

fn request_lines(requests: &[(&str, &RecentRequest)], header: bool) -> String {
    let rows: Vec<Vec<String>> = requests
        .iter()
        .map(|(token, r)| {
            vec![
                shown(r.time),
                or_dash(&r.replica),
                (*token).to_owned(),
                r.code.clone(),
                r.endpoint.clone(),
                r.client.map_or("-".into(), |ip| ip.to_string()),
                r.end_user.map_or("-".into(), |ip| ip.to_string()),
                or_dash(&r.user_agent),
                or_dash(&r.action),
                or_dash(&r.resource),
            ]
        })
        .collect();
    let table = aligned(
        &[
            "TIME",
            "REPLICA",
            "TOKEN",
            "CODE",
            "ENDPOINT",
            "CLIENT",
            "END USER",
            "USER AGENT",
            "ACTION",
            "RESOURCE",
        ],
        &rows,
    );
    if header {
        table
    } else {
        table.lines().skip(1).map(|l| format!("{l}\n")).collect()
    }
}

/// A time as the tables show it: whole seconds, like every time in an ApiKey's status (the JSON
/// output keeps the verifier's precision).
fn shown(at: jiff::Timestamp) -> String {
    keysmith_core::planner::timing::whole_seconds(at).to_string()
}

/// The table `keysmith usage` prints: counts per token, the recent requests newest first, and
/// which replicas answered.
pub fn render(usage: &ApiKeyUsage) -> String {
    let rows: Vec<Vec<String>> = usage
        .tokens
        .iter()
        .map(|t| {
            vec![
                t.token.clone(),
                t.id.clone(),
                t.last_used_at.map_or("-".into(), shown),
                counts(&t.last_hour),
                counts(&t.last_day),
            ]
        })
        .collect();
    let mut out = String::new();
    if rows.is_empty() {
        let _ = writeln!(
            out,
            "No verifications of ApiKey {}/{} seen by the verifiers.",
            usage.metadata.namespace, usage.metadata.name
        );
    } else {
        out += &aligned(
            &["TOKEN", "ID", "LAST USED", "LAST HOUR", "LAST DAY"],
            &rows,
        );
    }
    let mut recent: Vec<(&str, &RecentRequest)> = requests(usage).collect();
    recent.sort_by_key(|(_, r)| std::cmp::Reverse(r.time));
    if !recent.is_empty() {
        let _ = writeln!(out, "\nRequests since {}:", shown(usage.since));
        out += &request_lines(&recent, true);
    }
    let replicas: Vec<String> = usage
        .replicas
        .iter()
        .map(|r| match &r.error {
            None => r.name.clone(),
            Some(error) => format!("{} (no answer: {error})", r.name),
        })
        .collect();
    let _ = writeln!(out, "\nReplicas: {}", replicas.join(", "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verifier::activity::TokenActivity;
    use crate::verifier::usage_api::object::ReplicaAnswer;

    #[test]
    fn times_in_the_table_have_whole_seconds() {
        assert_eq!(
            shown("2026-11-26T09:59:00.123456789Z".parse().unwrap()),
            "2026-11-26T09:59:00Z"
        );
    }

    #[test]
    fn the_table_shows_counts_requests_and_replicas() {
        let at = |s: &str| s.parse().unwrap();
        let usage = ApiKeyUsage::new(
            "team",
            "billing",
            at("2026-11-26T09:00:00.516635275Z"),
            at("2026-11-26T10:00:00Z"),
            vec![TokenActivity {
                token: "primary".into(),
                id: "ks_abcdef".into(),
                last_used_at: Some(at("2026-11-26T09:59:00Z")),
                last_hour: Counts::from([("VALID".into(), 2), ("FORBIDDEN".into(), 1)]),
                last_day: Counts::from([("VALID".into(), 5)]),
                recent: vec![RecentRequest {
                    time: at("2026-11-26T09:59:00Z"),
                    code: "VALID".into(),
                    endpoint: "authz".into(),
                    client: Some("203.0.113.7".parse().unwrap()),
                    end_user: None,
                    user_agent: "curl/8".into(),
                    action: "content.read".into(),
                    resource: String::new(),
                    replica: "verifier-a".into(),
                }],
            }],
            vec![
                ReplicaAnswer {
                    name: "verifier-a".into(),
                    answered: true,
                    error: None,
                },
                ReplicaAnswer {
                    name: "verifier-b".into(),
                    answered: false,
                    error: Some("timed out".into()),
                },
            ],
        );
        let text = render(&usage);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "TOKEN     ID          LAST USED              LAST HOUR             LAST DAY"
        );
        assert_eq!(
            lines[1],
            "primary   ks_abcdef   2026-11-26T09:59:00Z   FORBIDDEN=1,VALID=2   VALID=5"
        );
        assert_eq!(lines[3], "Requests since 2026-11-26T09:00:00Z:");
        assert!(lines[4].starts_with("TIME"));
        assert!(lines[5].contains("verifier-a   primary   VALID   authz      203.0.113.7   -"));
        assert!(lines[5].contains("curl/8") && lines[5].contains("content.read"));
        assert_eq!(
            lines[7],
            "Replicas: verifier-a, verifier-b (no answer: timed out)"
        );
    }

    #[test]
    fn an_unused_key_says_so() {
        let at = "2026-11-26T10:00:00Z".parse().unwrap();
        let usage = ApiKeyUsage::new("team", "billing", at, at, vec![], vec![]);
        assert!(render(&usage).starts_with("No verifications of ApiKey team/billing"));
    }
}
