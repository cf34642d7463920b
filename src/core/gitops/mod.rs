//! GitOps: a manifest folder (optionally a git work tree) as the source of desired state.
//!
//! - [`controller`]: the source controller `berth up|server --manifests DIR` runs — watches the
//!   folder and its git HEAD, applies the whole folder atomically on each change, prunes,
//!   reports drift, self-heals;
//! - [`scan`] and [`git`]: reading the folder and the work tree;
//! - [`record`]: the sync status record under `/berth/sources/`;
//! - [`api`]: the `/v1/sources` endpoints; [`diff`]: what `berth diff` prints.
//!
//! Ownership annotations, inventories and pruning live in [`crate::apply`].

pub mod controller;
pub mod diff;
pub mod git;
pub mod record;
pub mod scan;

pub use controller::{start, SourceConfig, Timing};
