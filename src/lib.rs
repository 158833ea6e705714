//! Keysmith: a Kubernetes operator that manages API keys as custom resources.
//!
//! This crate is the shell around the pure core, the `keysmith_core` crate: [`api`] (the `ApiKey`
//! types, read one watched object at a time by [`apikeys`]), [`crd`] (the
//! CustomResourceDefinition), [`token`] (token format), [`duration`] and [`schedule`] (time
//! parsing), [`grants`] (the permission evaluator) and [`validation`] (every rule a spec must
//! satisfy) are re-exported from it under the paths they had before it became its own crate. The
//! command line is [`cli`].
//!
//! The pure reconcile decision is [`planner`]; [`controller`] is the shell that applies it
//! against the API server. [`verifier`] answers whether a token is valid for a request.
//! [`components`] runs either or both in one process; [`cluster`] connects to the API server and
//! [`telemetry`] holds what every long-running command shares (logs, `/metrics`, `/healthz`,
//! `/readyz`, SIGTERM). [`devcluster`] is the emulated cluster of `keysmith dev` and the tests.
//! [`allocator`] hands memory freed after a burst of work back to the operating system, and
//! [`text`] writes the verifier's per-request text (answers, audit lines) without `fmt`.

pub(crate) mod allocator;
pub(crate) mod apikeys;
pub mod cli;
pub(crate) mod cluster;
pub mod components;
pub mod controller;
pub mod devcluster;
pub mod scope;
pub mod telemetry;
pub(crate) mod text;
pub mod verifier;

pub use keysmith_core::{
    api, crd, duration, grants, planner, scan_rules, schedule, token, validation,
};
