//! The core stays pure: nothing that does network I/O or runs an async runtime may enter its
//! dependency tree. A new dependency (or a feature of one, such as kube's default `client`) that
//! pulls one in fails here, before anyone builds on it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Crates that mean I/O or a runtime: the async runtime and its event loop, the HTTP stack, and
/// kube's client and controller runtime (the core may use kube's types and derive only).
const FORBIDDEN: [&str; 9] = [
    "tokio",
    "mio",
    "hyper",
    "hyper-util",
    "axum",
    "tower",
    "reqwest",
    "kube-client",
    "kube-runtime",
];

/// The names of every crate keysmith-core links, resolved for this crate alone (the workspace's
/// other members enable more of kube, which must not count for the core). Offline and for the
/// host platform only: the build that runs this test has downloaded exactly the host's packages.
/// Other platforms' dependencies (`winapi-*`, `jiff-tzdb-platform`) are never fetched by a Linux
/// build, so asking for `--target all` offline fails on a machine with an empty Cargo cache.
fn linked_crates() -> BTreeSet<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["tree", "--locked", "--offline", "--edges", "normal"])
        .args([
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--package",
            "keysmith-core",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("cargo tree prints UTF-8")
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_core_links_no_runtime_http_stack_or_kubernetes_client() {
    let crates = linked_crates();
    // The tree really is the core's: without these the check below would pass on nothing.
    for expected in ["keysmith-core", "kube-core", "k8s-openapi", "serde"] {
        assert!(
            crates.contains(expected),
            "{expected} missing from {crates:?}"
        );
    }
    let found: Vec<&str> = FORBIDDEN
        .into_iter()
        .filter(|name| crates.contains(*name))
        .collect();
    assert!(
        found.is_empty(),
        "keysmith-core must do no I/O, but it now depends on {found:?}; \
         run `cargo tree -p keysmith-core -e normal -i <crate>` to see which dependency brings it \
         in, and keep that code in the keysmith shell instead"
    );
}
