//! `keysmith scan-rules` proven with the real gitleaks (built by `testenv/install`): in a
//! throwaway git repository holding the tokens the controller minted, lookalikes and ordinary
//! high-entropy strings, the rules printed for the keys in scope find the minted tokens and the
//! lookalikes whose checksum alone differs, and nothing else. The TruffleHog file is checked
//! against TruffleHog's custom-detector format (v3.97), and its regexes must find the same.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use crate::harness::controller::*;
use keysmith::api::Encoding;
use keysmith::token::Token;
use serde_json::Value;

/// Two keys in `cms` using two prefixes and both encodings, and one in `default` whose prefix
/// is out of the scope scanned.
const KEYS: &str = r#"
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: web, namespace: cms, labels: {team: web}}
spec:
  tokens:
    - {name: a}
    - {name: b, prefix: Acme_live_, encoding: hex, bytes: 24}
---
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: batch, namespace: cms, labels: {team: batch}}
spec:
  tokens:
    - {name: a, prefix: Acme_live_, bytes: 20}
    - {name: b, encoding: hex}
    - {name: c}
---
apiVersion: keysmith.dev/v1alpha1
kind: ApiKey
metadata: {name: elsewhere, namespace: default}
spec:
  tokens: [{name: a, prefix: other_}]
"#;

/// The rule each in-scope slot's token must be found by.
const IN_SCOPE: [(&str, &str, &str); 5] = [
    ("web", "a", "keysmith-ks_-base62-32"),
    ("web", "b", "keysmith-Acme_live_-hex-24"),
    ("batch", "a", "keysmith-Acme_live_-base62-20"),
    ("batch", "b", "keysmith-ks_-hex-32"),
    ("batch", "c", "keysmith-ks_-base62-32"),
];

/// A run of `len` random characters of `encoding`'s alphabet (a token's random part).
fn random_run(encoding: Encoding, len: usize) -> String {
    let long = Token::generate("", 64, encoding).unwrap();
    long.expose_secret()[..len].to_owned()
}

/// `token` with the last character of its checksum changed to another of its alphabet.
fn lookalike(token: &str) -> String {
    let (body, last) = token.split_at(token.len() - 1);
    let other = if last == "0" { "1" } else { "0" };
    format!("{body}{other}")
}

/// `git ARGS` in `repo`, as a throwaway identity.
fn git(repo: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Scan Test",
            "-c",
            "user.email=scan@test.invalid",
        ])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(repo)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// Commit `files` (name, content) to `repo`.
fn commit(repo: &Path, message: &str, files: &[(&str, String)]) {
    for (name, content) in files {
        std::fs::write(repo.join(name), content).unwrap();
        git(repo, &["add", name]);
    }
    git(repo, &["commit", "-q", "-m", message]);
}

/// Run `keysmith ARGS` with `kubeconfig` and nothing else from the environment.
async fn keysmith(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .await
        .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The rule ids of a gitleaks configuration.
fn rule_ids(config: &str) -> BTreeSet<String> {
    let doc: toml::Table = toml::from_str(config).expect("TOML");
    assert_eq!(doc["extend"]["useDefault"].as_bool(), Some(true));
    doc["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Where a string was found, the string, and the rule (or detector) that found it.
type Finding = (String, String, String);

/// `(File, Secret, RuleID)` of every finding of gitleaks with `config` over `repo`'s history.
fn gitleaks_findings(config: &Path, repo: &Path) -> BTreeSet<Finding> {
    let report = repo.with_extension("report.json");
    let out = Command::new(keysmith_testenv::binaries::binary("gitleaks"))
        .arg("git")
        .arg("--config")
        .arg(config)
        .args(["--report-format", "json", "--report-path"])
        .arg(&report)
        .args(["--no-banner", "--log-level", "warn"])
        .arg(repo)
        .env_remove("GITLEAKS_CONFIG")
        .env_remove("GITLEAKS_CONFIG_TOML")
        .output()
        .expect("gitleaks runs");
    // Exit status 1: leaks found, which the repository is made to have.
    assert_eq!(out.status.code(), Some(1), "gitleaks: {out:?}");
    let findings: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).expect("a JSON report");
    findings
        .iter()
        .map(|f| {
            (
                f["File"].as_str().unwrap().to_owned(),
                f["Secret"].as_str().unwrap().to_owned(),
                f["RuleID"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Check `yaml` against TruffleHog's custom-detector format (`proto/custom_detectors.proto`
/// and the checks of `pkg/custom_detectors/validation.go` in v3.97.0), and return each
/// detector's name and compiled regexes.
fn trufflehog_detectors(yaml: &str, endpoint: &str) -> Vec<(String, Vec<regex::Regex>)> {
    let doc: Value = serde_saphyr::from_str(yaml).expect("YAML");
    let top: Vec<&String> = doc.as_object().unwrap().keys().collect();
    assert_eq!(top, ["detectors"], "{yaml}");
    let known = [
        "name",
        "keywords",
        "regex",
        "verify",
        "description",
        "exclude_regexes_capture",
        "exclude_words",
        "entropy",
        "exclude_regexes_match",
        "primary_regex_name",
        "validations",
    ];
    let mut names = BTreeSet::new();
    let mut detectors = Vec::new();
    for d in doc["detectors"].as_array().unwrap() {
        let d = d.as_object().unwrap();
        assert!(d.keys().all(|k| known.contains(&k.as_str())), "{d:?}");
        let name = d["name"].as_str().unwrap();
        assert!(!name.is_empty() && names.insert(name.to_owned()), "{name}");
        let keywords: Vec<&str> = d["keywords"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert!(!keywords.is_empty() && keywords.iter().all(|k| !k.is_empty()));
        let regexes: Vec<regex::Regex> = d["regex"]
            .as_object()
            .unwrap()
            .values()
            .map(|r| {
                let r = r.as_str().unwrap();
                assert!(keywords.iter().any(|k| r.contains(k)), "{r}");
                regex::RegexBuilder::new(r).unicode(false).build().unwrap()
            })
            .collect();
        assert!(!regexes.is_empty());
        for verify in d["verify"].as_array().unwrap() {
            assert_eq!(verify["endpoint"], endpoint);
            assert_eq!(verify["unsafe"], endpoint.starts_with("http://"));
            for header in verify["headers"].as_array().into_iter().flatten() {
                assert!(header.as_str().unwrap().contains(':'), "{header}");
            }
        }
        detectors.push((name.to_owned(), regexes));
    }
    detectors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitleaks_with_the_printed_rules_finds_the_minted_tokens_and_no_random_strings() {
    let h = Harness::start().await;
    h.apply(KEYS).await;
    let mut minted = BTreeMap::new();
    for (name, slot, rule) in IN_SCOPE {
        // Status may say Ready a moment before the Secret is written.
        let token = eventually("the slot's token in the Secret", || async {
            h.secret(name).await.and_then(|s| secret_value(&s, slot))
        })
        .await;
        minted.insert(token, rule);
    }
    let out_of_scope = eventually("elsewhere minted", || async {
        h.cluster
            .get("v1", "Secret", "default", "elsewhere")
            .await
            .and_then(|s| secret_value(&s, "a"))
    })
    .await;

    // Someone who may only read ApiKeys in cms (the chart's view role), not their Secrets.
    h.apply(&crate::harness::view_role_for("scanner", "cms"))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    h.cluster
        .write_kubeconfig(&kubeconfig, &Identity::user("scanner", &[]))
        .await
        .unwrap();
    let config = eventually("the RoleBinding to take effect", || async {
        let out = keysmith(&kubeconfig, &["scan-rules", "-n", NS]).await;
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).unwrap())
    })
    .await;
    let rules: BTreeSet<&str> = IN_SCOPE.iter().map(|(_, _, rule)| *rule).collect();
    assert_eq!(
        rule_ids(&config),
        rules.iter().map(|r| (*r).to_owned()).collect()
    );
    for token in minted.keys().chain([&out_of_scope]) {
        assert!(!config.contains(token.as_str()), "a token in the rules");
    }
    // A selector narrows the scope; selecting nothing is a rule-less config and a line.
    let web = stdout(&keysmith(&kubeconfig, &["scan-rules", "-n", NS, "-l", "team=web"]).await);
    assert_eq!(
        rule_ids(&web),
        BTreeSet::from([
            "keysmith-ks_-base62-32".into(),
            "keysmith-Acme_live_-hex-24".into()
        ])
    );
    let none = keysmith(&kubeconfig, &["scan-rules", "-n", NS, "-l", "team=nobody"]).await;
    assert_eq!(rule_ids(&stdout(&none)), BTreeSet::new());
    assert_eq!(
        String::from_utf8(none.stderr).unwrap(),
        "No ApiKeys found in namespace cms.\n"
    );
    // A webhook is TruffleHog's: asked for gitleaks, the command refuses before connecting.
    let refused = keysmith(&kubeconfig, &["scan-rules", "--verify-url", "https://x"]).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8(refused.stderr)
            .unwrap()
            .contains("--verify-url is for --format trufflehog"),
    );

    // The repository: the minted tokens in one commit, then lookalikes and high-entropy noise.
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    let line = |i: usize, s: &str| format!("value_{i} = \"{s}\"\n");
    let tokens: String = minted.keys().enumerate().map(|(i, t)| line(i, t)).collect();
    commit(&repo, "settings", &[("settings.env", tokens.clone())]);

    let lookalikes: Vec<String> = minted.keys().map(|t| lookalike(t)).collect();
    let mut noise = vec![out_of_scope.clone()];
    for token in minted.keys() {
        let parsed = keysmith::token::parse(token).unwrap();
        let (prefix, encoding) = (parsed.prefix(), parsed.encoding());
        let tail = token.len() - prefix.len();
        // The same alphabet and length without the prefix, and the token's whole length of it.
        noise.push(random_run(encoding, tail));
        noise.push(random_run(encoding, token.len()));
        // Longer runs: one more character after, a word character before.
        noise.push(format!("{token}{}", random_run(encoding, 1)));
        noise.push(format!("x{token}"));
        // A format of the same prefix that no key in scope mints.
        noise.push(
            Token::generate(prefix, 16, encoding)
                .unwrap()
                .expose_secret()
                .to_owned(),
        );
    }
    let text = |values: &[String]| -> String {
        values.iter().enumerate().map(|(i, s)| line(i, s)).collect()
    };
    let files = [
        ("lookalikes.env", text(&lookalikes)),
        ("noise.env", text(&noise)),
    ];
    commit(&repo, "more values", &files);

    let config_path = work.path().join("gitleaks.toml");
    std::fs::write(&config_path, &config).unwrap();
    let findings = gitleaks_findings(&config_path, &repo);
    // gitleaks cannot check a CRC: a lookalike is found by the rule of the token it imitates.
    // Nothing in noise.env, not even a part of a longer run.
    let expected: BTreeSet<Finding> = minted
        .iter()
        .flat_map(|(token, rule)| {
            [
                ("settings.env".into(), token.clone(), (*rule).to_owned()),
                (
                    "lookalikes.env".into(),
                    lookalike(token),
                    (*rule).to_owned(),
                ),
            ]
        })
        .collect();
    assert_eq!(findings, expected);

    // The TruffleHog file: the documented shape, and its regexes find the same strings.
    let endpoint = "https://verifier.example/scan-verify";
    let yaml = stdout(
        &keysmith(
            &kubeconfig,
            &[
                "scan-rules",
                "-n",
                NS,
                "--format",
                "trufflehog",
                "--verify-url",
                endpoint,
                "--verify-header",
                "Authorization: Bearer scan-test",
            ],
        )
        .await,
    );
    let detectors = trufflehog_detectors(&yaml, endpoint);
    assert_eq!(
        detectors
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<BTreeSet<_>>(),
        rules
    );
    let mut found = BTreeSet::new();
    for (file, content) in [("settings.env", tokens.as_str())]
        .into_iter()
        .chain(files.iter().map(|(f, c)| (*f, c.as_str())))
    {
        for (name, regexes) in &detectors {
            for m in regexes.iter().flat_map(|r| r.find_iter(content)) {
                found.insert((file.to_owned(), m.as_str().to_owned(), name.clone()));
            }
        }
    }
    assert_eq!(found, expected);
}
