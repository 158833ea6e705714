//! `keysmith rotate NAME [-n NS] [--token SLOT]`: set the rotation annotation, like a kubectl
//! plugin. The controller sees the new value and rotates every slot, or the one slot, once.

use std::process::ExitCode;

use clap::Args;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::args::{ApiKeyRef, FetchedApiKey, describe_error};
use crate::api::{ROTATE_ANNOTATION, ROTATE_SLOT_ANNOTATION_PREFIX};

/// Arguments of `keysmith rotate`.
#[derive(Args, Debug)]
pub struct RotateArgs {
    #[command(flatten)]
    key: ApiKeyRef,

    /// Rotate only this token slot (default: every slot).
    #[arg(long, value_name = "SLOT")]
    token: Option<String>,
}

/// Run `keysmith rotate`.
pub fn run(args: RotateArgs) -> ExitCode {
    super::block_on("rotate", rotate(args))
}

async fn rotate(args: RotateArgs) -> Result<(), String> {
    let FetchedApiKey {
        api,
        namespace,
        key,
    } = args.key.fetch().await?;
    let name = &args.key.name;
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
    // A fresh value every time: the controller rotates once per new value.
    let value = jiff::Timestamp::now().to_string();
    let patch = json!({"metadata": {"annotations": {&annotation: &value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(|e| describe_error(e, "patch", &namespace))?;
    let what = args
        .token
        .map_or_else(|| "every slot".to_owned(), |slot| format!("slot {slot}"));
    println!("rotation of {what} of ApiKey {namespace}/{name} requested ({annotation}={value})");
    Ok(())
}
