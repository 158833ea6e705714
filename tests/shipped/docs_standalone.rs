//! The documentation users get stands alone: it never points at the product specification
//! (which is not part of the repository), and the README links every document under `docs/`.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every file users read: the READMEs, `docs/`, `examples/`, the chart and the benchmarks.
fn user_facing() -> Vec<PathBuf> {
    let root = Path::new(ROOT);
    let mut files = vec![root.join("README.md"), root.join("emulator/README.md")];
    let mut dirs = vec![
        root.join("docs"),
        root.join("examples"),
        root.join("charts"),
        root.join("bench"),
    ];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn no_document_refers_to_the_specification() {
    let mut found = Vec::new();
    for file in user_facing() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            let refers = ["SPEC section", "SPEC sections", "SPEC.md"]
                .iter()
                .any(|s| line.contains(s))
                || line
                    .split("SPEC ")
                    .skip(1)
                    .any(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
            if refers {
                found.push(format!("{}:{}: {line}", file.display(), i + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "say the thing itself, users do not have the specification: {found:#?}"
    );
}

#[test]
fn the_readme_links_every_document() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let docs = std::fs::read_dir(Path::new(ROOT).join("docs")).unwrap();
    let unlinked: Vec<String> = docs
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !readme.contains(&format!("](docs/{name})")))
        .collect();
    assert!(
        unlinked.is_empty(),
        "add these to the README's Documentation list: {unlinked:?}"
    );
}
