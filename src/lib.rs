//! Keysmith: a Kubernetes operator that manages API keys as custom resources.
//!
//! The pure core (no I/O): [`api`] (the `ApiKey` types), [`crd`] (the CustomResourceDefinition),
//! [`token`] (token format), [`duration`] and [`schedule`] (time parsing), [`grants`] (the
//! permission evaluator) and [`validation`] (every rule a spec must satisfy). The command line is
//! [`cli`].
//!
//! The pure reconcile decision is [`planner`]; [`controller`] is the shell that applies it
//! against the API server. [`cluster`] connects to it and [`telemetry`] holds what every
//! long-running command shares (logs, `/metrics`, `/healthz`, `/readyz`, SIGTERM).

pub mod api;
pub mod cli;
pub mod cluster;
pub mod controller;
pub mod crd;
pub mod duration;
pub mod grants;
pub mod planner;
pub mod schedule;
pub mod telemetry;
pub mod token;
pub mod validation;
pub mod verifier;
