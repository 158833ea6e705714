//! Every example ApiKey passes `keysmith_core::validation::validate`: the semantic rules the CRD
//! schema cannot express (duration ranges, overlap shorter than the interval, grant patterns,
//! CIDRs, Secret names and types).

use std::fs;
use std::path::Path;

use keysmith_core::api::ApiKey;
use keysmith_core::validation::validate;
use serde_json::Value;

#[test]
fn every_example_apikey_is_a_valid_spec() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = 0;
    let mut problems = Vec::new();
    let mut files: Vec<_> = fs::read_dir(&dir)
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
    {
        let text = fs::read_to_string(path).expect("readable");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("YAML");
        for doc in docs.into_iter().filter(|d| d["kind"] == "ApiKey") {
            let key: ApiKey = serde_json::from_value(doc).expect("an ApiKey");
            let name = format!(
                "{}:{}",
                path.display(),
                key.metadata.name.as_deref().unwrap_or("?")
            );
            if let Err(invalid) = validate(&key.spec) {
                problems.push(format!("{name}: {invalid}"));
            }
            // The optional hard expiry shown commented out is valid once uncommented, too.
            if let Some(line) = text
                .lines()
                .find(|l| l.trim_start().starts_with("# expiresAt:"))
            {
                let value = line
                    .split("expiresAt:")
                    .nth(1)
                    .unwrap()
                    .split('#')
                    .next()
                    .unwrap();
                let mut spec = key.spec.clone();
                spec.expires_at = Some(value.trim().trim_matches('"').to_string());
                if let Err(invalid) = validate(&spec) {
                    problems.push(format!("{name} with its commented expiresAt: {invalid}"));
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 7, "checked {checked} ApiKeys");
    assert!(
        problems.is_empty(),
        "invalid example specs:\n{}",
        problems.join("\n")
    );
}
