//! `keysmith rotate NAME [-n NS] [--token SLOT] [--wait [--timeout D] | --when-enabled]`: set the
//! rotation annotation, like a kubectl plugin. The controller sees the new value and rotates every
//! slot, or the one slot, once; with `--wait` the command returns when the new tokens are in the
//! Secret.
//!
//! A key that cannot rotate now (disabled, or its spec invalid) is refused up front, unless
//! `--when-enabled` asks for the rotation to be queued: otherwise the request would sit
//! unanswered and happen, unannounced, whenever the key is enabled or fixed.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::time::Instant;

use super::args::{ApiKeyRef, FetchedApiKey, describe_error};
use super::wait::{self, WaitError};
use crate::api::{ApiKey, ROTATE_ANNOTATION, ROTATE_SLOT_ANNOTATION_PREFIX, TokenStatus};
use crate::cluster;
use crate::duration;
use crate::token::sha256_hex_bytes;

/// Arguments of `keysmith rotate`.
#[derive(Args, Debug)]
pub struct RotateArgs {
    #[command(flatten)]
    key: ApiKeyRef,

    /// Rotate only this token slot (default: every slot).
    #[arg(long, value_name = "SLOT")]
    token: Option<String>,

    /// Return only once the Secret holds the new tokens (watching the ApiKey and the Secret).
    /// Fails at once if the key is disabled or its spec invalid, or turns so while waiting.
    #[arg(long, conflicts_with = "when_enabled")]
    wait: bool,

    /// Request the rotation even though the key is disabled or its spec invalid: it stays
    /// queued and happens when the key is enabled and its spec valid again.
    #[arg(long)]
    when_enabled: bool,

    /// How long `--wait` waits before failing, e.g. `30s` or `5m`.
    #[arg(long, value_name = "DURATION", default_value = "2m", requires = "wait",
        value_parser = |s: &str| duration::parse(s).map_err(|e| e.to_string()))]
    timeout: Duration,
}

/// Run `keysmith rotate`.
pub fn run(args: RotateArgs) -> ExitCode {
    super::block_on("rotate", rotate(args))
}

/// One rotation request: which annotation got which value, for which slots.
struct Request {
    /// `keysmith.dev/rotate` or `keysmith.dev/rotate-<slot>`.
    annotation: String,
    /// The value set: a token answers the request once it records this value.
    value: String,
    /// The slot asked for, or `None` for every slot.
    slot: Option<String>,
}

impl Request {
    /// What was asked, for messages.
    fn what(&self) -> String {
        self.slot
            .as_ref()
            .map_or_else(|| "every slot".to_owned(), |slot| format!("slot {slot}"))
    }

    /// The current tokens of the slots asked for, once each was minted in answer to this
    /// request; `None` while any is not.
    fn answered(&self, key: &ApiKey) -> Option<Vec<TokenStatus>> {
        let tokens = &key.status.as_ref()?.tokens;
        key.spec
            .tokens
            .iter()
            .filter(|slot| self.slot.as_ref().is_none_or(|s| *s == slot.name))
            .map(|slot| {
                let token = tokens.iter().find(|t| t.name == slot.name)?;
                let answered = match self.slot {
                    None => &token.rotate_annotation,
                    Some(_) => &token.rotate_slot_annotation,
                };
                (answered.as_ref() == Some(&self.value)).then(|| token.clone())
            })
            .collect()
    }
}

/// Why `key` cannot rotate now, with what to do about it: it is disabled, or the controller
/// found its current spec invalid. `None` when it can.
fn blocked(key: &ApiKey, namespace: &str, name: &str) -> Option<String> {
    if key.spec.disabled {
        return Some(format!(
            "ApiKey {namespace}/{name} is disabled (spec.disabled is true)"
        ));
    }
    let generation = key.metadata.generation;
    let ready = key
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    // A condition about an older generation may be about a spec already fixed.
    (ready.reason == "InvalidSpec"
        && ready.status == "False"
        && (ready.observed_generation.is_none() || ready.observed_generation == generation))
        .then(|| {
            format!(
                "ApiKey {namespace}/{name} cannot rotate: its spec is invalid ({})",
                ready.message
            )
        })
}

/// What to do about a key [`blocked`] refuses.
fn remedy(key: &ApiKey) -> &'static str {
    if key.spec.disabled {
        "set spec.disabled to false first"
    } else {
        "fix the field the message names first"
    }
}

async fn rotate(args: RotateArgs) -> Result<(), String> {
    let fetched = args.key.fetch().await?;
    let (namespace, key) = (&fetched.namespace, &fetched.key);
    let name = &args.key.name;
    let blocked_now = blocked(key, namespace, name);
    if let Some(why) = &blocked_now
        && !args.when_enabled
    {
        return Err(format!(
            "{why}; nothing requested: {}, or pass --when-enabled to queue the rotation for \
             when the key is enabled and valid",
            remedy(key)
        ));
    }
    let annotation = match &args.token {
        None => ROTATE_ANNOTATION.to_owned(),
        Some(slot) => {
            if !key.spec.tokens.iter().any(|t| &t.name == slot) {
                let slots: Vec<&str> = key.spec.tokens.iter().map(|t| t.name.as_str()).collect();
                return Err(format!(
                    "ApiKey {namespace}/{name} has no token slot {slot:?} (slots: {})",
                    slots.join(", ")
                ));
            }
            format!("{ROTATE_SLOT_ANNOTATION_PREFIX}{slot}")
        }
    };
    let request = Request {
        annotation,
        // A fresh value every time: the controller rotates once per new value.
        value: jiff::Timestamp::now().to_string(),
        slot: args.token.clone(),
    };
    let patch = json!({"metadata": {"annotations": {&request.annotation: &request.value}}});
    fetched
        .api
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(|e| describe_error(e, "patch", Some(namespace)))?;
    println!(
        "rotation of {} of ApiKey {namespace}/{name} requested ({}={})",
        request.what(),
        request.annotation,
        request.value
    );
    if let Some(why) = blocked_now {
        println!("{why}: the rotation happens when the key is enabled and valid");
    }
    if args.wait {
        let (secret, tokens) = wait_for_secret(&fetched, name, &request, args.timeout).await?;
        for token in tokens {
            println!(
                "{}: new token {} in Secret {namespace}/{secret}",
                token.name, token.id
            );
        }
    }
    Ok(())
}

/// Wait until the controller minted the tokens `request` asks for and the Secret holds them
/// (the controller writes status just before the Secret); the Secret's name and the new tokens.
async fn wait_for_secret(
    fetched: &FetchedApiKey,
    name: &str,
    request: &Request,
    timeout: Duration,
) -> Result<(String, Vec<TokenStatus>), String> {
    let namespace = &fetched.namespace;
    let deadline = Instant::now() + timeout;
    let after = duration::format(timeout);
    let answer = wait::until(fetched.api.clone(), name, deadline, |key: &ApiKey| {
        if let Some(tokens) = request.answered(key) {
            return Some(Ok((key.clone(), tokens)));
        }
        // Stop as soon as the key cannot answer: waiting out the timeout would tell nothing.
        blocked(key, namespace, name).map(|why| {
            let why = why.replace(" is disabled (", " was disabled while waiting (");
            Err(format!(
                "{why}; the rotation stays requested and happens when the key is enabled and \
                 valid: {}",
                remedy(key)
            ))
        })
    })
    .await
    .map_err(|e| match e {
        WaitError::TimedOut(last) => format!(
            "timed out after {after} waiting for the controller to rotate {} of ApiKey \
             {namespace}/{name}: {}. The rotation stays requested; the controller performs it \
             when it can",
            request.what(),
            last.as_ref()
                .map_or_else(|| "the ApiKey is gone".to_owned(), readiness)
        ),
        WaitError::Refused(e) => format!(
            "rotation requested, but --wait cannot watch the ApiKey: {}",
            describe_error(e, "watch", Some(namespace))
        ),
    })?;
    let (key, tokens) = answer?;
    let secret = key
        .status
        .as_ref()
        .and_then(|s| s.secret_name.clone())
        .unwrap_or_else(|| key.secret_name());
    let expected: Vec<(&str, &str)> = tokens
        .iter()
        .filter_map(|token| {
            let slot = key.spec.tokens.iter().find(|s| s.name == token.name)?;
            Some((slot.secret_key(), token.sha256.as_str()))
        })
        .collect();
    let secrets = kube::Api::<Secret>::namespaced(fetched.api.clone().into_client(), namespace);
    // Compared by hash: the token values never leave this closure.
    wait::until(secrets, &secret, deadline, |s: &Secret| {
        let data = s.data.as_ref()?;
        expected
            .iter()
            .all(|(data_key, sha)| {
                data.get(*data_key)
                    .is_some_and(|v| sha256_hex_bytes(&v.0) == *sha)
            })
            .then_some(())
    })
    .await
    .map_err(|e| match e {
        WaitError::TimedOut(_) => format!(
            "timed out after {after} waiting for Secret {namespace}/{secret} to hold the new \
             token(s) {} that ApiKey {namespace}/{name} reports",
            tokens
                .iter()
                .map(|t| t.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        WaitError::Refused(e) => format!(
            "rotated, but --wait cannot watch Secret {namespace}/{secret}: {}",
            cluster::classify::<Secret>(
                e,
                "watch",
                Some(namespace),
                "ask for list and watch on Secrets there (the built-in edit role has them)"
            )
        ),
    })?;
    Ok((secret, tokens))
}

/// The key's Ready condition in words, for a timeout message.
fn readiness(key: &ApiKey) -> String {
    let Some(status) = &key.status else {
        return "it has no status: no controller has reconciled it (is the Keysmith controller \
                running?)"
            .to_owned();
    };
    match status.conditions.iter().find(|c| c.type_ == "Ready") {
        Some(c) if c.message.is_empty() => format!("Ready is {} ({})", c.status, c.reason),
        Some(c) => format!("Ready is {} ({}: {})", c.status, c.reason, c.message),
        None => "it has no Ready condition yet".to_owned(),
    }
}
