//! `keysmith report-leak`: send tokens found leaked, read from stdin one per line (never from
//! arguments, which shell history and process lists keep), to the verifier's plain leak-report
//! endpoint, and say for each whether it was a Keysmith token. The verifier never says whose.

use std::io::{self, BufRead};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use kube::config::{AuthInfo, Config};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

use crate::verifier::leaks::{MAX_REPORT_TOKENS, PLAIN_PATH};

/// How long the verifier has to answer one batch.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `keysmith report-leak`.
#[derive(Args, Debug)]
pub struct ReportLeakArgs {
    /// The verifier's address, e.g. `https://keysmith-verifier.keysmith.svc:8080`.
    #[arg(long, value_name = "URL")]
    verifier: String,

    /// File holding the report secret (the one the verifier reads from
    /// `--leak-report-token-file`).
    #[arg(long, value_name = "FILE")]
    secret_file: PathBuf,

    /// Where the tokens were found (e.g. a URL): recorded in status and in the `LeakReported`
    /// event.
    #[arg(long, value_name = "TEXT")]
    source: Option<String>,

    /// PEM CA bundle the verifier's certificate chains to, for an `https://` address whose
    /// certificate the system does not trust.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

/// The verifier's answer.
#[derive(Deserialize)]
struct Answer {
    results: Vec<Outcome>,
}

#[derive(Deserialize)]
struct Outcome {
    id: Option<String>,
    keysmith: bool,
}

/// Run `keysmith report-leak`.
pub fn run(args: ReportLeakArgs) -> ExitCode {
    super::block_on("report-leak", async move {
        let tokens = read_tokens(io::stdin().lock())
            .map_err(|e| format!("cannot read tokens from stdin: {e}"))?;
        if tokens.is_empty() {
            return Err("no tokens on stdin: give them one per line".into());
        }
        let client = client(&args)?;
        let mut known = 0;
        for (batch, lines) in tokens.chunks(MAX_REPORT_TOKENS).enumerate() {
            let answer = send(&client, lines, args.source.as_deref()).await?;
            if answer.results.len() != lines.len() {
                return Err("the verifier answered for another number of tokens".into());
            }
            for (i, outcome) in answer.results.iter().enumerate() {
                let line = batch * MAX_REPORT_TOKENS + i + 1;
                println!("{}", describe(line, outcome));
                known += usize::from(outcome.keysmith);
            }
        }
        eprintln!(
            "{known} of {} reported tokens are Keysmith's; their keys' leakResponse applies",
            tokens.len()
        );
        Ok(())
    })
}

/// The non-empty lines of `input`, trimmed.
fn read_tokens(input: impl BufRead) -> io::Result<Vec<String>> {
    let mut tokens = Vec::new();
    for line in input.lines() {
        let line = line?;
        let token = line.trim();
        if !token.is_empty() {
            tokens.push(token.to_owned());
        }
    }
    Ok(tokens)
}

/// One line of output: the token's public id, never the token.
fn describe(line: usize, outcome: &Outcome) -> String {
    match (&outcome.id, outcome.keysmith) {
        (Some(id), true) => format!("line {line}: {id}: a Keysmith token, reported"),
        (Some(id), false) => format!("line {line}: {id}: not a token this verifier knows"),
        (None, _) => format!("line {line}: not a Keysmith token (no valid checksum)"),
    }
}

fn client(args: &ReportLeakArgs) -> Result<kube::Client, String> {
    let url = args
        .verifier
        .parse()
        .map_err(|e| format!("--verifier {}: {e}", args.verifier))?;
    let secret = std::fs::read_to_string(&args.secret_file)
        .map_err(|e| format!("cannot read {}: {e}", args.secret_file.display()))?;
    let mut config = Config::new(url);
    config.connect_timeout = Some(TIMEOUT);
    config.read_timeout = Some(TIMEOUT);
    config.auth_info = AuthInfo {
        token: Some(secret.trim().to_owned().into()),
        ..AuthInfo::default()
    };
    if let Some(ca_file) = &args.ca_file {
        let ca = CertificateDer::pem_file_iter(ca_file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read {}: {e}", ca_file.display()))?;
        config.root_cert = Some(ca.into_iter().map(|c| c.to_vec()).collect());
    }
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

async fn send(
    client: &kube::Client,
    tokens: &[String],
    source: Option<&str>,
) -> Result<Answer, String> {
    let body = serde_json::json!({ "tokens": tokens, "source": source });
    let request = hyper::Request::post(PLAIN_PATH)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(body.to_string().into_bytes().into())
        .map_err(|e| e.to_string())?;
    let response = client
        .send(request)
        .await
        .map_err(|e| format!("cannot reach the verifier: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect_bytes()
        .await
        .map_err(|e| format!("the verifier's answer broke off: {e}"))?;
    if !status.is_success() {
        return Err(refusal(status, &body));
    }
    serde_json::from_slice(&body)
        .map_err(|e| format!("the verifier's answer is not a leak-report answer: {e}"))
}

/// What to tell the user when the verifier did not take a report: its status, its own words,
/// and for the two usual mistakes what to change.
fn refusal(status: hyper::StatusCode, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Refusal {
        error: String,
    }
    let said = serde_json::from_slice::<Refusal>(body)
        .map(|r| r.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).chars().take(200).collect());
    let hint = match status {
        hyper::StatusCode::NOT_FOUND => {
            "; is this the verification API's address, and are plain leak reports on? \
             (the verifier's --leak-report-token-file; chart value leakReports.tokenSecret)"
        }
        hyper::StatusCode::UNAUTHORIZED => {
            "; --secret-file must hold the secret the verifier reads from --leak-report-token-file"
        }
        _ => "",
    };
    format!("the verifier did not take the report ({status}): {said}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_the_non_empty_lines_and_the_output_names_ids_only() {
        let tokens = read_tokens(&b"  ks_a \n\n\tks_b\r\n"[..]).unwrap();
        assert_eq!(tokens, ["ks_a", "ks_b"]);
        let ours = Outcome {
            id: Some("ks_abcdef".into()),
            keysmith: true,
        };
        assert_eq!(
            describe(3, &ours),
            "line 3: ks_abcdef: a Keysmith token, reported"
        );
        let lookalike = Outcome {
            id: None,
            keysmith: false,
        };
        assert!(describe(1, &lookalike).contains("not a Keysmith token"));
    }

    #[test]
    fn a_refusal_says_the_status_the_verifiers_words_and_what_to_change() {
        let off = refusal(
            hyper::StatusCode::NOT_FOUND,
            br#"{"error":"no such endpoint"}"#,
        );
        assert!(
            off.starts_with(
                "the verifier did not take the report (404 Not Found): no such endpoint; "
            ),
            "{off}"
        );
        assert!(off.contains("--leak-report-token-file"), "{off}");
        let wrong = refusal(hyper::StatusCode::UNAUTHORIZED, b"denied");
        assert!(
            wrong.contains("(401 Unauthorized): denied; --secret-file"),
            "{wrong}"
        );
        let other = refusal(
            hyper::StatusCode::PAYLOAD_TOO_LARGE,
            br#"{"error":"at most 100"}"#,
        );
        assert!(
            other.ends_with("(413 Payload Too Large): at most 100"),
            "{other}"
        );
    }
}
