//! `keysmith scan-rules [-n NS | -A] [-l SELECTOR] [--format gitleaks|trufflehog]`: secret
//! scanner rules for the token formats the ApiKeys in scope mint (SPEC 4.6). It reads specs only:
//! no Secret, token or hash is read or printed.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use kube::ResourceExt;
use kube::api::ListParams;

use super::args::{NamespaceArgs, describe_error};
use crate::api::ApiKey;
use crate::scan_rules::{ScanRules, TokenFormat, Webhook};
use crate::scope::Scope;

/// Which scanner the rules are for.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScannerFormat {
    /// A gitleaks configuration (TOML) that keeps gitleaks' default rules.
    #[default]
    Gitleaks,
    /// A TruffleHog custom-detector file (YAML).
    Trufflehog,
}

/// Arguments of `keysmith scan-rules`.
#[derive(Args, Debug)]
pub struct ScanRulesArgs {
    /// The ApiKeys of every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,

    /// Only ApiKeys whose labels match this selector (e.g. `team=shop`).
    #[arg(short = 'l', long, value_name = "LABELS")]
    selector: Option<String>,

    /// The scanner to write rules for.
    #[arg(long, value_enum, default_value_t)]
    format: ScannerFormat,

    /// With `--format trufflehog`: the webhook TruffleHog posts each candidate to for
    /// verification (https://, or http:// for a test endpoint), e.g. the verifier's
    /// `/v1/leaks/trufflehog-verify`.
    #[arg(long, value_name = "URL")]
    verify_url: Option<String>,

    /// A header TruffleHog sends to `--verify-url`, as `Name: value`; repeat for several.
    #[arg(long, value_name = "HEADER", requires = "verify_url")]
    verify_header: Vec<String>,

    #[command(flatten)]
    at: NamespaceArgs,
}

/// Run `keysmith scan-rules`.
pub fn run(args: ScanRulesArgs) -> ExitCode {
    super::block_on("scan-rules", scan_rules(args))
}

async fn scan_rules(args: ScanRulesArgs) -> Result<(), String> {
    // Checked before connecting: a wrong flag needs no cluster to be reported.
    let webhook = webhook(&args)?;
    let (client, namespace) = args.at.connect().await?;
    let scope = Scope {
        namespace: (!args.all_namespaces).then_some(namespace),
        selector: args.selector.clone(),
    };
    let mut params = ListParams::default();
    if let Some(selector) = &scope.selector {
        params = params.labels(selector);
    }
    let keys = scope
        .api::<ApiKey>(client)
        .list(&params)
        .await
        .map_err(|e| describe_error(e, "list", scope.namespace.as_deref()))?
        .items;
    if keys.is_empty() {
        // On stderr, so stdout stays a valid (rule-less) document for scripts.
        match &scope.namespace {
            Some(ns) => eprintln!("No ApiKeys found in namespace {ns}."),
            None => eprintln!("No ApiKeys found."),
        }
    }
    let (rules, skipped) = rules_of(&keys);
    for line in skipped {
        eprintln!("keysmith scan-rules: {line}");
    }
    print!(
        "{}",
        match args.format {
            ScannerFormat::Gitleaks => rules.gitleaks_toml(),
            ScannerFormat::Trufflehog => rules.trufflehog_yaml(webhook.as_ref()),
        }
    );
    Ok(())
}

fn webhook(args: &ScanRulesArgs) -> Result<Option<Webhook>, String> {
    let Some(url) = &args.verify_url else {
        return Ok(None);
    };
    if args.format != ScannerFormat::Trufflehog {
        return Err(
            "--verify-url is for --format trufflehog: gitleaks does not verify what it finds"
                .to_owned(),
        );
    }
    Webhook::new(url, args.verify_header.clone())
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The formats of every slot of `keys`, and a line for each slot no rule can cover.
fn rules_of(keys: &[ApiKey]) -> (ScanRules, Vec<String>) {
    let mut formats = Vec::new();
    let mut skipped = Vec::new();
    for key in keys {
        for slot in &key.spec.tokens {
            match TokenFormat::of_slot(slot) {
                Ok(format) => formats.push(format),
                Err(e) => skipped.push(format!(
                    "no rule for ApiKey {}/{} slot {}: {e}",
                    key.namespace().unwrap_or_default(),
                    key.name_any(),
                    slot.name
                )),
            }
        }
    }
    (formats.into_iter().collect(), skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, tokens: serde_json::Value) -> ApiKey {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"tokens": tokens},
        }))
        .unwrap()
    }

    #[test]
    fn every_slot_counts_once_and_an_empty_prefix_is_named() {
        let keys = [
            key(
                "web",
                serde_json::json!([{"name": "a"}, {"name": "b", "encoding": "hex"}]),
            ),
            key(
                "batch",
                serde_json::json!([{"name": "a"}, {"name": "bare", "prefix": ""}]),
            ),
        ];
        let (rules, skipped) = rules_of(&keys);
        let ids: Vec<String> = rules.formats().map(TokenFormat::rule_id).collect();
        assert_eq!(ids, ["keysmith-ks_-base62-32", "keysmith-ks_-hex-32"]);
        assert_eq!(skipped.len(), 1);
        assert!(
            skipped[0].starts_with("no rule for ApiKey shop/batch slot bare: the prefix is empty"),
            "{skipped:?}"
        );
    }
}
