//! The core's contract, in one test binary that links the core alone: the validation rules,
//! every shipped example against them, the committed API reference against the CRD, and the
//! core's dependency tree kept free of I/O.

mod api_reference;
mod examples;
mod purity;
mod validation;
