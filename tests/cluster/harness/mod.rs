//! The one harness of the integration tests. Every suite runs against the backend that
//! `KEYSMITH_TEST_CLUSTER` names: the API emulator (default) or a real kube-apiserver, etcd and
//! kube-controller-manager (`real`, built by `testenv/install`). Either way RBAC is on and the
//! controller and verifier act as the chart's ServiceAccounts with the chart's rules.
//!
//! - [`controller`]: a controller running in-process with a clock the test moves, and the API
//!   writes it made (the emulator's request log or the real server's audit log).
//! - [`verifier`]: a verifier running in-process, ApiKeys whose status holds hashes of tokens the
//!   test minted, and helpers to ask it.
//! - [`http`]: a minimal HTTP/1.1 client; [`logs`]: the process's log lines, captured.
#![allow(dead_code, unused_imports)]

pub mod controller;
pub mod http;
pub mod logs;
pub mod verifier;

pub use keysmith_emulator::{Config, eventually};
pub use keysmith_testenv::{Backend, Cluster, Identity};
use serde_json::json;

/// A cluster prepared like one with the chart installed, plus `namespace`.
pub async fn cluster(namespace: &str) -> Cluster {
    let cluster = Cluster::with_chart(Backend::from_env(), Config::default())
        .await
        .expect("the test cluster starts");
    cluster
        .apply_object(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        )
        .await
        .expect("namespace applies");
    cluster
}

/// Clients of `cluster` acting as the chart's ServiceAccounts (real tokens on a real server).
pub async fn chart_clients(cluster: &Cluster) -> keysmith::devcluster::ChartClients {
    use keysmith::devcluster::{controller_identity, verifier_identity};
    keysmith::devcluster::ChartClients {
        controller: cluster
            .client_as(&controller_identity())
            .await
            .expect("controller client"),
        verifier: cluster
            .client_as(&verifier_identity())
            .await
            .expect("verifier client"),
    }
}

/// The emulator for a test (or a part of one) that needs what only it can do, such as fault
/// injection; `None`, with a line saying what was skipped, on the real API server.
pub fn emulator_only<'a>(
    cluster: &'a Cluster,
    what: &str,
) -> Option<&'a keysmith_emulator::Emulator> {
    let emu = cluster.emulator();
    if emu.is_none() {
        println!("skipped on the real API server (needs the emulator's fault injection): {what}");
    }
    emu
}

/// Whether the suites run against the real API server.
pub fn real() -> bool {
    Backend::from_env() == Backend::Real
}
