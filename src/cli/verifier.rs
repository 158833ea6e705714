//! `keysmith verifier`: serve the verification API from a watch on ApiKeys.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;

use crate::cluster;
use crate::telemetry::{LogFormat, Shutdown};
use crate::verifier::{self, Options, client_ip, log_writer};

/// Arguments of `keysmith verifier`.
#[derive(Args, Debug)]
pub struct VerifierArgs {
    /// Address of the verification API (/v1/verify, /v1/authz, TokenReview).
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9090")]
    metrics_listen: SocketAddr,
    /// Proxies whose X-Forwarded-For / X-Real-IP are believed, as CIDRs (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "CIDR,...")]
    trusted_proxies: Vec<String>,
    /// Watch one namespace instead of all.
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// Only ApiKeys whose labels match this selector (e.g. shard=a).
    #[arg(long, value_name = "LABELS")]
    selector: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,
}

/// Run the verifier until SIGTERM; exit non-zero with one line when it cannot start.
pub fn run(args: VerifierArgs) -> ExitCode {
    let trusted_proxies = match client_ip::parse_trusted(&args.trusted_proxies) {
        Ok(trusted) => trusted,
        Err(err) => {
            eprintln!("keysmith verifier: --trusted-proxies: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("keysmith verifier: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let _logs = log_writer::init_tracing(args.log_format);
    let options = Options {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        trusted_proxies,
        namespace: args.namespace,
        selector: args.selector,
    };
    runtime.block_on(async {
        let client = match cluster::connect().await {
            Ok(client) => client,
            Err(err) => {
                eprintln!("keysmith verifier: {err}");
                return ExitCode::FAILURE;
            }
        };
        match verifier::run(client, options, Shutdown::on_signal().wait()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("keysmith verifier: {err}");
                ExitCode::FAILURE
            }
        }
    })
}
