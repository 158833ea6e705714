//! Load-benchmark fixture (used by `bench/load.sh` and `bench/openloop.sh`): an API server with
//! RBAC on and the chart's ServiceAccounts and rules, and N ApiKeys whose status holds the hashes
//! of freshly minted tokens. The API emulator, or with `KEYSMITH_TEST_CLUSTER=real` a real
//! kube-apiserver, etcd and kube-controller-manager built by `testenv/install`.
//!
//! `cargo run --release --example load_fixture -- DIR [N] [worst]` writes `DIR/kubeconfig` (the
//! verifier ServiceAccount) and `DIR/token` (one valid token), prints `ready`, and serves until
//! stdin closes (a real control plane stops with it) or it is killed. With `worst` (for
//! `bench/tenants.sh`) it also writes `DIR/other-token`, a token of another of the N keys, and
//! `DIR/worst-token`, the token of ApiKey `tenant-0/worst`, whose grants are the most expensive
//! validation admits (`benches/shared/worst_case.rs`).

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

#[path = "../benches/shared/worst_case.rs"]
mod worst_case;

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
    let worst = match args.next().as_deref() {
        None => false,
        Some("worst") if n >= 2 => true,
        Some(other) => {
            return Err(format!(
                "usage: load_fixture DIR [N] [worst], N at least 2 with worst; not {other:?}"
            )
            .into());
        }
    };

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
    if worst {
        std::fs::write(dir.join("other-token"), tokens[n / 2 + 1].expose_secret())?;
        let token = Token::generate("cms_dt_", 32, Encoding::Base62)?;
        let spec = json!({"tokens": [{"name": "delivery", "prefix": "cms_dt_"}],
            "grants": worst_case::pattern_grants()});
        create_key(admin.clone(), "tenant-0", "worst", spec, &token).await?;
        std::fs::write(dir.join("worst-token"), token.expose_secret())?;
    }
    println!("ready: {n} ApiKeys at {}", cluster.url());

    // Serve until the script closes our stdin (or kills us).
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    Ok(())
}

/// ApiKey `key-<i>` with a CMS grant set and `token` as its current token in status.
async fn create(client: kube::Client, i: usize, token: &Token) -> Result<(), kube::Error> {
    let namespace = format!("tenant-{}", i % NAMESPACES);
    let spec = json!({
        "environment": "production",
        "tokens": [{"name": "delivery", "prefix": "cms_dt_", "metadata": {"content": "published"}}],
        "grants": [
            {"effect": "allow", "actions": ["content.read"], "resources": ["content:*"]},
            {"effect": "deny", "actions": ["*.delete"]}],
    });
    create_key(client, &namespace, &format!("key-{i}"), spec, token).await
}

/// ApiKey `namespace`/`name` with `spec`, whose one slot `delivery` holds `token` in status.
async fn create_key(
    client: kube::Client,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
    token: &Token,
) -> Result<(), kube::Error> {
    let api: Api<ApiKey> = Api::namespaced(client, namespace);
    let key: ApiKey = serde_json::from_value(json!({
        "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .map_err(kube::Error::SerdeError)?;
    api.create(&PostParams::default(), &key).await?;
    let status = json!({"status": {"tokens": [{"name": "delivery", "id": token.id(),
        "sha256": token.sha256_hex(), "issuedAt": "2026-11-01T00:00:00Z"}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(())
}
