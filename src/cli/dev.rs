//! `keysmith dev`: the embedded default. The Kubernetes API emulator with the CRD and the chart's
//! RBAC, the controller and the verifier in one process, the seed examples applied; prints what was
//! minted (masked) and a ready-to-paste `curl`, and runs until Ctrl-C. The verifier serves the
//! usage API behind the emulator's aggregator, as the chart installs it with `usage.enabled`, so
//! `keysmith usage` works against dev as against a cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use crate::api::{ApiKey, TokenStatus};
use crate::components;
use crate::controller;
use crate::devcluster;
use crate::telemetry::{self, LogFormat, Shutdown};
use crate::verifier::{self, usage_api::UsageSettings};

mod kubeconfig;
mod usage_tls;

use kubeconfig::DevKubeconfig;
use usage_tls::UsageTls;

/// Arguments of `keysmith dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Where to write the kubeconfig for kubectl (once the emulated API server listens; removed
    /// when dev stops).
    #[arg(long, default_value = "keysmith-dev.kubeconfig")]
    kubeconfig: PathBuf,
    /// Address of the verification API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:9090")]
    metrics_listen: SocketAddr,
    /// Port of the emulated Kubernetes API (HTTPS on 127.0.0.1); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    api_port: u16,
    /// Log format (logs go to stderr; the summary to stdout).
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,
}

/// How long to wait for every example to be reconciled before printing what there is.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Run `keysmith dev` until Ctrl-C or SIGTERM.
pub fn run(args: DevArgs) -> ExitCode {
    let _logs = telemetry::init_tracing(args.log_format);
    super::block_on("dev", dev(args))
}

async fn dev(args: DevArgs) -> Result<(), String> {
    let mut kubeconfig = DevKubeconfig::claim(&args.kubeconfig)?;
    let outcome = serve(&args, &mut kubeconfig).await;
    // Whether dev stopped or never started, no kubeconfig is left pointing at it.
    kubeconfig.release();
    outcome
}

/// Start everything, print the summary and serve until Ctrl-C or SIGTERM.
async fn serve(args: &DevArgs, kubeconfig: &mut DevKubeconfig) -> Result<(), String> {
    // Every port first: a port in use fails the start before anything is written.
    let api = super::bind(args.listen, "the verification API").await?;
    let metrics = super::bind(args.metrics_listen, "metrics").await?;
    // Any free port: only the emulated aggregator calls it, as a Service's endpoint.
    let usage = super::bind(SocketAddr::from(([127, 0, 0, 1], 0)), "the usage API").await?;
    let usage_endpoint = usage.local_addr().map_err(|e| e.to_string())?;
    // Print where they really listen: a port of 0 picks a free one.
    let listening = Listening {
        api: api.local_addr().unwrap_or(args.listen),
        metrics: metrics.local_addr().unwrap_or(args.metrics_listen),
    };
    let config = keysmith_emulator::Config {
        port: args.api_port,
        // kubectl only sends bearer tokens over TLS.
        tls: true,
        // Any local process can reach the port: a fresh admin token per run, and no tokens
        // that name the identity they claim.
        admin_token: keysmith_emulator::random_token(),
        naming_tokens: false,
        ..keysmith_emulator::Config::default()
    };
    let emu = devcluster::start(config).await.map_err(|e| {
        format!(
            "cannot serve the emulated Kubernetes API on 127.0.0.1:{} (--api-port): {e}",
            args.api_port
        )
    })?;
    // Before the verifier starts: it reads the aggregator's configuration once, at start.
    let certificate = keysmith_emulator::serving_certificate(&[&devcluster::usage_api_host()])
        .map_err(|e| format!("the usage API's certificate: {e}"))?;
    let (_usage_tls, usage_files) = UsageTls::write(&certificate)?;
    for object in devcluster::usage_api(&certificate.ca_pem, usage_endpoint) {
        emu.apply_object(&object).map_err(|e| e.to_string())?;
    }
    let clients = devcluster::ChartClients::of(&emu)
        .await
        .map_err(|e| e.to_string())?;
    let components = devcluster::components(
        clients,
        "keysmith-dev",
        controller::system_clock(),
        api,
        metrics,
        Some(usage),
    );
    let settings = verifier::Settings {
        usage: UsageSettings {
            tls: Some(usage_files),
            replica: "keysmith-dev".into(),
            ..UsageSettings::default()
        },
        ..verifier::Settings::default()
    };
    let shutdown = Shutdown::on_signal();
    let running = tokio::spawn(components::serve_with(
        components,
        settings,
        shutdown.clone(),
    ));
    // The emulated API server listens: kubectl may be pointed at it now.
    kubeconfig.write(&emu)?;

    devcluster::apply_examples(&emu).map_err(|e| e.to_string())?;
    let admin = emu.client().await.map_err(|e| e.to_string())?;
    let keys = settle(&admin).await;
    print_summary(&admin, &keys, args, &listening).await;

    running
        .await
        .map_err(|e| format!("stopping: {e}"))?
        .map_err(|e| e.to_string())
}

/// Wait until every ApiKey's status describes its current generation and, when Ready, its Secret
/// holds a token for every slot (status is written just before the Secret), or the timeout passes.
async fn settle(admin: &kube::Client) -> Vec<ApiKey> {
    let api: Api<ApiKey> = Api::all(admin.clone());
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        let keys = api
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let mut settled = !keys.is_empty();
        for key in &keys {
            settled = settled
                && key.status.as_ref().and_then(|s| s.observed_generation)
                    == key.metadata.generation
                && secret_holds_every_slot(admin, key).await;
        }
        if settled || tokio::time::Instant::now() >= deadline {
            return keys;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn secret_holds_every_slot(admin: &kube::Client, key: &ApiKey) -> bool {
    let secrets = Api::<Secret>::namespaced(admin.clone(), &key.namespace().unwrap_or_default());
    let data = secrets
        .get_opt(&key.secret_name())
        .await
        .ok()
        .flatten()
        .and_then(|s| s.data);
    data.is_some_and(|d| {
        key.spec
            .tokens
            .iter()
            .all(|slot| d.contains_key(slot.secret_key()))
    })
}

/// The addresses the verification API and the metrics endpoint are bound to.
struct Listening {
    api: SocketAddr,
    metrics: SocketAddr,
}

async fn print_summary(
    admin: &kube::Client,
    keys: &[ApiKey],
    args: &DevArgs,
    listening: &Listening,
) {
    let kubeconfig = args.kubeconfig.display();
    println!("\nKeysmith dev is running. The API server is emulated; kubectl works against it:");
    println!("  export KUBECONFIG={kubeconfig}");
    println!("  kubectl get apikeys -A\n");
    let mut sample = None;
    for key in keys {
        let namespace = key.namespace().unwrap_or_default();
        let ready = ready_condition(key);
        println!("{namespace}/{}  Ready={ready}", key.name_any());
        let secret_name = key.secret_name();
        let secret = Api::<Secret>::namespaced(admin.clone(), &namespace)
            .get_opt(&secret_name)
            .await
            .ok()
            .flatten();
        for slot in &key.spec.tokens {
            let status = key
                .status
                .as_ref()
                .and_then(|s| s.tokens.iter().find(|t| t.name == slot.name));
            let held = secret
                .as_ref()
                .and_then(|s| s.data.as_ref())
                .is_some_and(|d| d.contains_key(slot.secret_key()));
            println!(
                "  secret {secret_name} key {:<28} {}",
                slot.secret_key(),
                masked(status, held)
            );
            if held && sample.is_none() {
                sample = Some((
                    namespace.clone(),
                    key.name_any(),
                    secret_name.clone(),
                    slot.secret_key().to_owned(),
                ));
            }
        }
    }
    if let Some((namespace, apikey, secret, key)) = sample {
        // The token travels through a pipe and shell builtins (read, printf), never through a
        // command's arguments, where any local user could read it in the process list.
        println!("\nVerify a token (read from the Secret, never printed here):");
        println!(
            "  kubectl --kubeconfig {kubeconfig} -n {namespace} get secret {secret} -o jsonpath='{{.data.{key}}}' | base64 -d \\\n    | {{ read -r t; printf '{{\"token\":\"%s\"}}' \"$t\"; }} \\\n    | curl -s http://{listen}/v1/verify -H 'content-type: application/json' --data-binary @-",
            listen = listening.api,
            key = key.replace('.', "\\."),
        );
        println!(
            "\nWhat the verifier saw of the key (the usage API, through the emulated API server):"
        );
        println!("  keysmith usage {apikey} -n {namespace} --kubeconfig {kubeconfig}");
    }
    println!(
        "\nMetrics: http://{}/metrics   Stop with Ctrl-C.",
        listening.metrics
    );
}

fn ready_condition(key: &ApiKey) -> String {
    key.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| format!("{} ({})", c.status, c.reason))
        .unwrap_or_else(|| "Unknown".to_owned())
}

/// What a slot holds, by public id: the token itself never reaches the terminal.
fn masked(status: Option<&TokenStatus>, held: bool) -> String {
    match (status, held) {
        (Some(t), true) => format!(
            "{}… (sha256 {}…)",
            t.id,
            &t.sha256[..12.min(t.sha256.len())]
        ),
        (Some(t), false) => format!("{}… (not in the Secret yet)", t.id),
        (None, _) => "not minted".to_owned(),
    }
}
