//! The emulator's integration tests, in one test binary: the REST semantics, watches, RBAC,
//! built-in kinds, API aggregation, fault injection, the real `kubectl` against it, the limits
//! and formats a real server enforces, and the (ignored) scale run.

mod common;

mod aggregation;

mod faults;
mod kinds;
mod kubectl;
mod limits;
mod rbac;
mod rest;
mod scale;
mod watch;
