//! `keysmith status NAME [-n NS]`: an ApiKey's conditions and tokens (ids and times only).

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;

use super::args::ApiKeyRef;
use crate::api::ApiKey;

/// Arguments of `keysmith status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    key: ApiKeyRef,
}

/// Run `keysmith status`.
pub fn run(args: StatusArgs) -> ExitCode {
    super::block_on("status", status(args))
}

async fn status(args: StatusArgs) -> Result<(), String> {
    let key = args.key.fetch().await?.key;
    print!("{}", render(&key));
    Ok(())
}

/// The human-readable report.
pub fn render(key: &ApiKey) -> String {
    let mut out = String::new();
    let namespace = key.metadata.namespace.as_deref().unwrap_or_default();
    let name = key.metadata.name.as_deref().unwrap_or_default();
    let _ = writeln!(out, "ApiKey {namespace}/{name}");
    let Some(status) = &key.status else {
        let _ = writeln!(
            out,
            "  not reconciled yet (is the Keysmith controller running?)"
        );
        return out;
    };
    let time = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.map_or_else(|| "-".to_owned(), |t| t.0.to_string())
    };
    let _ = writeln!(
        out,
        "  Secret:        {}",
        status.secret_name.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        out,
        "  Next rotation: {}",
        time(status.next_rotation_at.as_ref())
    );
    let _ = writeln!(out, "  Expires:       {}", time(status.expires_at.as_ref()));
    let _ = writeln!(out, "  Conditions:");
    for c in &status.conditions {
        let _ = write!(out, "    {:<9} {:<5} {}", c.type_, c.status, c.reason);
        if !c.message.is_empty() {
            let _ = write!(out, ": {}", c.message);
        }
        out.push('\n');
    }
    let _ = writeln!(out, "  Tokens:");
    for t in &status.tokens {
        let _ = writeln!(
            out,
            "    {}: {} issued {}, expires {}, last used {}",
            t.name,
            t.id,
            t.issued_at.0,
            time(t.expires_at.as_ref()),
            time(t.last_used_at.as_ref()),
        );
        if let Some(p) = &t.previous {
            let _ = writeln!(
                out,
                "      previous {} valid until {}",
                p.id, p.valid_until.0
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_conditions_and_tokens() {
        let key: ApiKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "site", "namespace": "cms"},
            "spec": {"tokens": [{"name": "delivery"}]},
            "status": {
                "secretName": "site",
                "conditions": [{"type": "Ready", "status": "True", "reason": "Rotated",
                    "message": "1 token(s) current in Secret site", "lastTransitionTime": "2026-11-22T10:00:00Z"}],
                "tokens": [{"name": "delivery", "id": "ks_abcdef", "sha256": "00",
                    "issuedAt": "2026-11-22T10:00:00Z",
                    "previous": {"id": "ks_123456", "sha256": "11", "validUntil": "2026-11-22T11:00:00Z"}}],
            },
        }))
        .unwrap();
        let text = render(&key);
        assert!(text.contains("ApiKey cms/site"));
        assert!(text.contains("Ready     True  Rotated: 1 token(s) current in Secret site"));
        assert!(text.contains("delivery: ks_abcdef issued 2026-11-22T10:00:00Z"));
        assert!(text.contains("previous ks_123456 valid until 2026-11-22T11:00:00Z"));
    }
}
