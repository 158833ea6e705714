//! `keysmith rotate NAME [-n NS] [--token SLOT]`: set the rotation annotation, like a kubectl
//! plugin. The controller sees the new value and rotates every slot, or the one slot, once.

use std::process::ExitCode;

use clap::Args;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::api::{ApiKey, ROTATE_ANNOTATION, ROTATE_SLOT_ANNOTATION_PREFIX};
use crate::cluster::{self, ClusterError};

/// Arguments of `keysmith rotate`.
#[derive(Args, Debug)]
pub struct RotateArgs {
    /// ApiKey name.
    name: String,

    /// Namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long, value_name = "NS")]
    namespace: Option<String>,

    /// Rotate only this token slot (default: every slot).
    #[arg(long, value_name = "SLOT")]
    token: Option<String>,
}

/// Run `keysmith rotate`.
pub fn run(args: RotateArgs) -> ExitCode {
    super::block_on("rotate", rotate(args))
}

async fn rotate(args: RotateArgs) -> Result<(), String> {
    let client = cluster::connect().await.map_err(|e| e.to_string())?;
    let namespace = args
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let api: Api<ApiKey> = Api::namespaced(client, &namespace);
    let key = api
        .get_opt(&args.name)
        .await
        .map_err(|e| describe::<ApiKey>(e, "get", &namespace))?
        .ok_or_else(|| format!("ApiKey {namespace}/{} not found", args.name))?;
    let annotation = match &args.token {
        None => ROTATE_ANNOTATION.to_owned(),
        Some(slot) => {
            if !key.spec.tokens.iter().any(|t| &t.name == slot) {
                let slots: Vec<&str> = key.spec.tokens.iter().map(|t| t.name.as_str()).collect();
                return Err(format!(
                    "ApiKey {namespace}/{} has no token slot {slot:?} (slots: {})",
                    args.name,
                    slots.join(", ")
                ));
            }
            format!("{ROTATE_SLOT_ANNOTATION_PREFIX}{slot}")
        }
    };
    // A fresh value every time: the controller rotates once per new value.
    let value = jiff::Timestamp::now().to_string();
    let patch = json!({"metadata": {"annotations": {&annotation: &value}}});
    api.patch(&args.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(|e| describe::<ApiKey>(e, "patch", &namespace))?;
    let what = args
        .token
        .map_or_else(|| "every slot".to_owned(), |slot| format!("slot {slot}"));
    println!(
        "rotation of {what} of ApiKey {namespace}/{} requested ({annotation}={value})",
        args.name
    );
    Ok(())
}

fn describe<K: kube::Resource<DynamicType = ()>>(
    error: kube::Error,
    verb: &str,
    namespace: &str,
) -> String {
    let e: ClusterError = cluster::classify::<K>(error, verb, Some(namespace));
    e.to_string()
}
