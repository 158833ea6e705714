//! Token verification without I/O: what a Rust service embeds to verify in process, and what
//! the `keysmith verifier` server answers with.
//!
//! [`key`] is what one ApiKey means to the verifier, [`decision`] the decision order, [`index`]
//! the hash → token map with tombstones that [`Index::verify`](index::Index::verify) reads,
//! [`intern`] the table that lets keys with equal grants share one copy, and
//! [`usage`] the per-token mark that keeps `lastUsedAt` reports to one a minute.

pub mod decision;
pub mod index;
pub mod intern;
pub mod key;
pub mod usage;
