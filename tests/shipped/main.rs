//! What ships besides the running operator, in one test binary: the chart (its files, its
//! render with the pinned helm and promtool, and its install on a real API server), the command
//! line (`keysmith dev`, `crd`, `token`), the docs, the release files and the benchmark scripts,
//! plus the emulator's differential conformance against a real kube-apiserver.

// The cluster suites' HTTP client, shared rather than copied; only `request` is used here.
#[allow(dead_code)]
#[path = "../cluster/harness/http.rs"]
mod http;

mod bench_scripts;
mod chart;
mod chart_real;
mod chart_tools;
mod conformance;
mod crd;
mod dev_command;
mod docs_standalone;
mod release;
mod rendered;
mod token_cli;
