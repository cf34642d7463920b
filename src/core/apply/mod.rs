//! Applying manifests to the store: all or nothing.
//!
//! [`apply`] validates the set, resolves references across the set and the store, and writes
//! everything in ONE store transaction that compares the mod revision of every key it read
//! (absent for the keys it creates). When another writer got in between, it re-plans and tries
//! again; it never leaves half an apply behind. [`apply_source`] does the same for a source,
//! pruning what it no longer holds.
//!
//! Files, bottom up: `error`, `codec`, `reader` and `commit` (the transaction); `ownership`,
//! `meta`, `report`, `inventory`; `plan/` by kind; `safety`; `documents` and `source` (the entry
//! points), with `prune`.

mod codec;
mod commit;
mod documents;
mod error;
mod inventory;
mod kind_serde;
mod lookup;
mod meta;
pub mod ownership;
mod plan;
mod prune;
mod reader;
mod report;
pub mod safety;
mod source;
mod source_name;
mod stamp;

#[cfg(test)]
mod source_tests;

pub use commit::MAX_ATTEMPTS;
pub use documents::{apply, delete_documents, ApplyOptions};
pub use error::ApplyError;
pub use inventory::{inventory_key, Inventory, ObjectRef};
pub use lookup::{latest_taskdef, resolve_taskdef};
pub use plan::DEFAULT_CLUSTER;
pub use prune::prune_candidates;
pub use report::{Extraneous, ObjectResult, Outcome, SourceReport};
pub use source::{apply_source, SourceApplyOptions, StatusWriter};
pub use source_name::{default_source_name, legacy_source_name, validate_source_name};
pub use stamp::{relative_file, stamp, Stamp};
