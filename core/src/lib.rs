//! Keysmith's pure core: everything that decides, and nothing that does I/O.
//!
//! [`api`] holds the `ApiKey` types (and the labels and annotations Keysmith reads and writes),
//! [`crd`] the CustomResourceDefinition generated from them, [`token`] the token format and
//! [`scan_rules`] the secret-scanner rules that find it,
//! [`duration`] and [`schedule`] the time parsing, [`grants`] the permission evaluator and
//! [`validation`] every rule a spec must satisfy, [`served`] the policy a key serves when an edit
//! is rejected, [`invariants`] the promises of SPEC 4.1a as a checker over observed snapshots.
//! [`planner`] is the reconcile decision of the
//! controller and [`verifier`] the verification decision with its token index.
//!
//! This crate depends on no async runtime, HTTP stack or Kubernetes client (a test,
//! `tests/contract/purity.rs`, keeps it so): the `keysmith` binary is the shell that feeds it from the
//! API server, and a Rust service can embed it to verify tokens in process (see
//! `examples/verify_in_process.rs`).

#![warn(missing_docs)]

pub mod api;
pub mod crd;
pub mod duration;
pub mod grants;
pub mod invariants;
pub mod personal;
pub mod planner;
pub mod scan_rules;
pub mod schedule;
pub mod served;
pub mod token;
pub mod validation;
pub mod verifier;
