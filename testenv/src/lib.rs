//! Keysmith's test clusters. Integration tests run against one of two backends chosen by
//! `KEYSMITH_TEST_CLUSTER`: the API emulator (`emulator`, the default) or a real control plane
//! (`real`: etcd, kube-apiserver and kube-controller-manager built from pinned Go modules by
//! `testenv/install`), behind one interface, [`Cluster`].

pub mod argo;
pub mod binaries;
mod cluster;
pub mod rbac;
pub mod real;

pub use cluster::{BACKEND_VAR, Backend, Cluster, ClusterError};
pub use keysmith_emulator::{Identity, LogEntry};
pub use real::RealOptions;
