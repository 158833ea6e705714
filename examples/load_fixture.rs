//! Load-benchmark fixture (used by `bench/load.sh` and `bench/openloop.sh`): an API server with
//! RBAC on and the chart's ServiceAccounts and rules, and N ApiKeys whose status holds the hashes
//! of freshly minted tokens. The API emulator, or with `KEYSMITH_TEST_CLUSTER=real` a real
//! kube-apiserver, etcd and kube-controller-manager built by `testenv/install`.
//!
//! `cargo run --release --example load_fixture -- DIR [N]` writes `DIR/kubeconfig` (the verifier
//! ServiceAccount) and `DIR/token` (one valid token), prints `ready`, and serves until stdin
//! closes (a real control plane stops with it) or it is killed.

use std::path::PathBuf;

use futures::{StreamExt, TryStreamExt};
use keysmith::api::{ApiKey, Encoding};
use keysmith::token::Token;
use keysmith_emulator::{Config, Identity};
use keysmith_testenv::{Backend, Cluster};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::AsyncReadExt;

const NAMESPACES: usize = 100;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: load_fixture DIR [N]")?);
    let n: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);

    let cluster = Cluster::with_chart(Backend::from_env(), Config::default()).await?;
    for i in 0..NAMESPACES {
        cluster
            .apply_object(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("tenant-{i}")}}))
            .await?;
    }

    let admin = cluster.client().await?;
    let tokens: Vec<Token> = (0..n)
        .map(|_| Token::generate("cms_dt_", 32, Encoding::Base62))
        .collect::<Result<_, _>>()?;
    futures::stream::iter(tokens.iter().enumerate())
        .map(|(i, token)| create(admin.clone(), i, token))
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;

    std::fs::create_dir_all(&dir)?;
    cluster
        .write_kubeconfig(
            dir.join("kubeconfig"),
            &Identity::service_account("keysmith", "keysmith-verifier"),
        )
        .await?;
    std::fs::write(dir.join("token"), tokens[n / 2].expose_secret())?;
    println!("ready: {n} ApiKeys at {}", cluster.url());

    // Serve until the script closes our stdin (or kills us).
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    Ok(())
}

/// ApiKey `key-<i>` with a CMS grant set and `token` as its current token in status.
async fn create(client: kube::Client, i: usize, token: &Token) -> Result<(), kube::Error> {
    let namespace = format!("tenant-{}", i % NAMESPACES);
    let name = format!("key-{i}");
    let api: Api<ApiKey> = Api::namespaced(client, &namespace);
    let key: ApiKey = serde_json::from_value(json!({
        "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "environment": "production",
            "tokens": [{"name": "delivery", "prefix": "cms_dt_", "metadata": {"content": "published"}}],
            "grants": [
                {"effect": "allow", "actions": ["content.read"], "resources": ["content:*"]},
                {"effect": "deny", "actions": ["*.delete"]}],
        },
    }))
    .map_err(kube::Error::SerdeError)?;
    api.create(&PostParams::default(), &key).await?;
    let status = json!({"status": {"tokens": [{"name": "delivery", "id": token.id(),
        "sha256": token.sha256_hex(), "issuedAt": "2026-11-01T00:00:00Z"}]}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(())
}
