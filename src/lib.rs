//! Keysmith: a Kubernetes operator that manages API keys as custom resources.
//!
//! The pure core (no I/O): [`api`] (the `ApiKey` types), [`crd`] (the CustomResourceDefinition),
//! [`token`] (token format), [`duration`] and [`schedule`] (time parsing), [`grants`] (the
//! permission evaluator) and [`validation`] (every rule a spec must satisfy). The command line is
//! [`cli`].

pub mod api;
pub mod cli;
pub mod crd;
pub mod duration;
pub mod grants;
pub mod planner;
pub mod schedule;
pub mod token;
pub mod validation;
