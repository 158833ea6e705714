//! `keysmith status NAME [-n NS]`: an ApiKey's conditions and tokens (ids and times only);
//! without a NAME, a table of the namespace's ApiKeys, or with `-A` of every namespace's.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::args::{NamespaceArgs, describe_error, fetch};
use crate::api::ApiKey;

/// Arguments of `keysmith status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// ApiKey name; without it, a table of the namespace's ApiKeys.
    name: Option<String>,

    /// A table of the ApiKeys of every namespace.
    #[arg(short = 'A', long, conflicts_with_all = ["name", "namespace"])]
    all_namespaces: bool,

    #[command(flatten)]
    at: NamespaceArgs,
}

/// Run `keysmith status`.
pub fn run(args: StatusArgs) -> ExitCode {
    super::block_on("status", status(args))
}

async fn status(args: StatusArgs) -> Result<(), String> {
    let (client, namespace) = args.at.connect().await?;
    if let Some(name) = &args.name {
        print!("{}", render(&fetch(client, namespace, name).await?.key));
        return Ok(());
    }
    let (api, scope) = if args.all_namespaces {
        (Api::<ApiKey>::all(client), None)
    } else {
        (
            Api::namespaced(client, &namespace),
            Some(namespace.as_str()),
        )
    };
    let mut keys = api
        .list(&ListParams::default())
        .await
        .map_err(|e| describe_error(e, "list", scope))?
        .items;
    if keys.is_empty() {
        // On stderr, as kubectl says it: stdout stays a (here empty) table for scripts.
        match scope {
            Some(ns) => eprintln!("No ApiKeys found in namespace {ns}."),
            None => eprintln!("No ApiKeys found."),
        }
        return Ok(());
    }
    keys.sort_by_key(|k| (k.namespace(), k.name_any()));
    print!("{}", table(&keys, args.all_namespaces));
    Ok(())
}

/// A time as status writes it, `-` when unset.
fn time(t: Option<&Time>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| t.0.to_string())
}

/// One line per key, aligned like `kubectl get`: whether it is ready and why, how many slots
/// hold a token, and when it next rotates and first expires.
pub fn table(keys: &[ApiKey], with_namespace: bool) -> String {
    let header = [
        "NAMESPACE",
        "NAME",
        "READY",
        "REASON",
        "TOKENS",
        "NEXT ROTATION",
        "EXPIRES",
    ];
    let skip = usize::from(!with_namespace);
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for key in keys {
        let status = key.status.as_ref();
        let ready = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
        let minted = status.map_or(0, |s| s.tokens.len());
        rows.push(vec![
            key.namespace().unwrap_or_default(),
            key.name_any(),
            ready.map_or_else(|| "-".to_owned(), |c| c.status.clone()),
            ready.map_or_else(|| "-".to_owned(), |c| c.reason.clone()),
            format!("{minted}/{}", key.spec.tokens.len()),
            time(status.and_then(|s| s.next_rotation_at.as_ref())),
            time(status.and_then(|s| s.expires_at.as_ref())),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths).skip(skip) {
            let _ = write!(line, "{cell:<width$}   ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The human-readable report.
pub fn render(key: &ApiKey) -> String {
    let mut out = String::new();
    let namespace = key.metadata.namespace.as_deref().unwrap_or_default();
    let name = key.metadata.name.as_deref().unwrap_or_default();
    let _ = writeln!(out, "ApiKey {namespace}/{name}");
    if let Some(owner) = &key.spec.owner {
        let _ = writeln!(
            out,
            "  Personal key of {} (groups: {})",
            owner.username,
            if owner.groups.is_empty() {
                "none".to_owned()
            } else {
                owner.groups.join(", ")
            }
        );
    }
    let Some(status) = &key.status else {
        let _ = writeln!(
            out,
            "  not reconciled yet (is the Keysmith controller running?)"
        );
        return out;
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
    let generation = key.metadata.generation;
    match status.served_generation {
        Some(served) if Some(served) != generation => {
            let _ = writeln!(
                out,
                "  Serving:       generation {served}; generation {} is rejected (see Ready) and changes no answer until fixed",
                generation.unwrap_or_default()
            );
        }
        Some(served) => {
            let _ = writeln!(out, "  Serving:       generation {served}");
        }
        None => {}
    }
    let readers = status.access.as_ref().map_or_else(
        || "no access list in effect".to_owned(),
        |access| {
            let subjects: Vec<String> = access
                .subjects
                .iter()
                .map(|s| match &s.namespace {
                    Some(namespace) => format!("{} {namespace}/{}", s.kind, s.name),
                    None => format!("{} {}", s.kind, s.name),
                })
                .collect();
            format!(
                "{} (Role and RoleBinding {})",
                subjects.join(", "),
                access.role_binding
            )
        },
    );
    let _ = writeln!(out, "  Readers:       {readers}");
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
        for (label, p) in t
            .previous
            .iter()
            .map(|p| ("previous", p))
            .chain(t.earlier.iter().map(|p| ("earlier", p)))
        {
            let _ = writeln!(
                out,
                "      {label} {} valid until {}, last used {}",
                p.id,
                p.valid_until.0,
                time(p.last_used_at.as_ref()),
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
            "metadata": {"name": "site", "namespace": "cms", "generation": 5},
            "spec": {"tokens": [{"name": "delivery"}]},
            "status": {
                "secretName": "site",
                "servedGeneration": 4,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Rotated",
                    "message": "1 token(s) current in Secret site", "lastTransitionTime": "2026-11-22T10:00:00Z"}],
                "tokens": [{"name": "delivery", "id": "ks_abcdef", "sha256": "00",
                    "issuedAt": "2026-11-22T10:00:00Z",
                    "previous": {"id": "ks_123456", "sha256": "11", "validUntil": "2026-11-22T11:00:00Z",
                        "lastUsedAt": "2026-11-22T09:59:00Z"},
                    "earlier": [{"id": "ks_654321", "sha256": "22", "validUntil": "2026-11-22T10:30:00Z"}]}],
            },
        }))
        .unwrap();
        let text = render(&key);
        assert!(text.contains("ApiKey cms/site"));
        assert!(text.contains("Ready     True  Rotated: 1 token(s) current in Secret site"));
        assert!(text.contains("delivery: ks_abcdef issued 2026-11-22T10:00:00Z"));
        assert!(text.contains(
            "previous ks_123456 valid until 2026-11-22T11:00:00Z, last used 2026-11-22T09:59:00Z"
        ));
        assert!(text.contains("earlier ks_654321 valid until 2026-11-22T10:30:00Z, last used -"));
        assert!(text.contains("Serving:       generation 4; generation 5 is rejected"));
        assert!(!text.contains("Personal key"));

        let mut personal = key;
        personal.spec.owner = Some(keysmith_core::api::Owner {
            username: "alice".into(),
            groups: vec!["dev-team".into(), "on-call".into()],
        });
        assert!(
            render(&personal).contains("  Personal key of alice (groups: dev-team, on-call)\n")
        );
        assert!(text.contains("Readers:       no access list in effect"));
    }

    #[test]
    fn renders_who_may_read_the_secrets() {
        let key: ApiKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "site", "namespace": "cms"},
            "spec": {"tokens": [{"name": "delivery"}]},
            "status": {"access": {
                "role": "site.keysmith-access", "roleBinding": "site.keysmith-access",
                "secrets": ["site"],
                "subjects": [{"kind": "User", "name": "alice"},
                    {"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"}],
            }},
        }))
        .unwrap();
        assert!(render(&key).contains(
            "Readers:       User alice, ServiceAccount ci/deployer (Role and RoleBinding site.keysmith-access)"
        ));
    }

    #[test]
    fn table_aligns_a_row_per_key_with_the_namespace_only_across_namespaces() {
        let ready: ApiKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "storefront-web", "namespace": "shop"},
            "spec": {"tokens": [{"name": "a"}, {"name": "b"}]},
            "status": {
                "conditions": [{"type": "Ready", "status": "False", "reason": "SecretConflict",
                    "message": "", "lastTransitionTime": "2026-11-22T10:00:00Z"}],
                "nextRotationAt": "2026-12-01T00:00:00Z",
                "tokens": [{"name": "a", "id": "ks_abcdef", "sha256": "00",
                    "issuedAt": "2026-11-22T10:00:00Z"}],
            },
        }))
        .unwrap();
        let fresh: ApiKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "new", "namespace": "default"},
            "spec": {"tokens": [{"name": "a"}]},
        }))
        .unwrap();
        let keys = [fresh, ready];
        let text = table(&keys, true);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let cells: Vec<Vec<&str>> = lines
            .iter()
            .map(|l| {
                l.split("   ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .collect();
        assert_eq!(
            cells[0],
            [
                "NAMESPACE",
                "NAME",
                "READY",
                "REASON",
                "TOKENS",
                "NEXT ROTATION",
                "EXPIRES"
            ]
        );
        assert_eq!(cells[1], ["default", "new", "-", "-", "0/1", "-", "-"]);
        assert_eq!(
            cells[2],
            [
                "shop",
                "storefront-web",
                "False",
                "SecretConflict",
                "1/2",
                "2026-12-01T00:00:00Z",
                "-"
            ]
        );
        // Every column starts where its header does.
        for header in ["NAME", "READY", "REASON", "TOKENS", "NEXT ROTATION"] {
            let column = lines[0].find(&format!("   {header}")).unwrap() + 3;
            assert!(
                lines[1..].iter().all(|l| l[column - 3..column] == *"   "),
                "{text}"
            );
        }
        let one_namespace = table(&keys, false);
        assert!(one_namespace.starts_with("NAME "), "{one_namespace}");
        assert!(!one_namespace.contains("shop"), "{one_namespace}");
    }
}
