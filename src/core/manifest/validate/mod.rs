//! Semantic checks: what serde's types cannot say. ECS's own rules where ECS has them.
//!
//! One file per kind's checks, the shared rules beside them, and [`set`] running them over a
//! whole set of documents. This file only declares the modules and re-exports.

mod cluster;
mod lb;
mod metadata;
mod names;
mod placement;
mod problems;
mod role;
mod scaling;
mod secret;
mod service;
mod set;
mod taskdef;
#[cfg(test)]
mod testing;

pub use names::validate_name;
pub(crate) use service::check_service_against_taskdef;
pub use set::validate;
