//! The REST verbs, one file each: what the verb does to the stored objects
//! (naming, optimistic concurrency, `generation`, the status subresource,
//! managedFields, finalizers, `deletionTimestamp`; admission is in
//! `admission.rs`), and how its HTTP request is answered. The library API
//! calls the first half directly.

pub mod create;
pub mod delete;
pub mod get;
pub mod list;
pub mod patch;
pub mod update;
pub mod watch;

use serde_json::Value;

use crate::admission::FieldValidation;
use crate::fields::Shape;
use crate::managed::Part;
use crate::registry::ResourceType;

/// Per-request write settings.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Field manager recorded in managedFields.
    pub manager: String,
    /// Unknown-field handling.
    pub field_validation: FieldValidation,
    /// `dryRun=All`: run everything, store nothing.
    pub dry_run: bool,
    /// SSA `force`.
    pub force: bool,
}

/// What a write answers with: the object as the client sees it, and the
/// warnings admission produced (sent as `Warning` headers).
#[derive(Debug)]
pub struct Written {
    /// The object written (or that would be, on a dry run).
    pub object: Value,
    /// Admission warnings.
    pub warnings: Vec<String>,
}

/// How managedFields of `rt`'s objects are tracked (its schema's list types and maps).
fn shape_of(rt: &ResourceType) -> Shape<'_> {
    Shape::root(rt.crd.as_ref().and_then(|c| c.schema.as_ref()))
}

/// Which part of an object a write owns fields in: status through `/status`, the rest
/// otherwise, everything when the kind has no separate status.
fn part_of(rt: &ResourceType, status: bool) -> Part {
    match (rt.status_subresource, status) {
        (_, true) => Part::Status,
        (true, false) => Part::Main,
        (false, false) => Part::Whole,
    }
}
