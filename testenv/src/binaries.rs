//! Where `testenv/install` puts the pinned real-cluster binaries.

use std::path::{Path, PathBuf};

/// The folder holding the pinned binaries: `KEYSMITH_TESTENV_BIN`, or `target/testenv/bin` of
/// this workspace (where `testenv/install` builds them).
pub fn bin_dir() -> PathBuf {
    std::env::var_os("KEYSMITH_TESTENV_BIN").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/testenv/bin")
                .components()
                .collect()
        },
        PathBuf::from,
    )
}

/// The path of pinned binary `name` (`kube-apiserver`, `etcd`, `helm`, `promtool`, ...).
///
/// # Panics
/// When it has not been built, with the command that builds it: a test that needs the real
/// binaries must say how to get them, not skip.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `testenv/install` (builds the pinned kube-apiserver, \
         kube-controller-manager, etcd, helm, promtool and gitleaks from Go modules; needs Go \
         1.26)",
        path.display()
    );
    path
}
