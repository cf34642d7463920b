//! Parsing one file's text into documents.
//!
//! Two passes over the text:
//! 1. every document is read into a `serde_json::Value` under a node budget (so YAML alias
//!    bombs stop early, [`bounded`]) to find its kind, its apiVersion and whether it is a plain
//!    ECS task-definition JSON ([`classify`], [`ecs`]);
//! 2. each document is deserialized into its typed object through `serde_path_to_error`, straight
//!    from serde_yaml's per-document deserializer, so errors carry the field path and the
//!    line/column serde_yaml reports ([`decode`]).
//!
//! Errors that have a field but no position (kind/apiVersion checks, ECS JSON, semantic checks
//! found later) are located afterwards by walking the text to that field ([`locate`]).
//! [`file`] drives the passes. This file only declares the modules and re-exports.

mod bounded;
mod classify;
mod decode;
mod ecs;
mod file;
mod locate;

pub use bounded::{MAX_DOCUMENTS, MAX_FILE_BYTES, MAX_NODES};
pub(crate) use file::parse_file;
pub use file::parse_str;
pub(crate) use locate::{locate_errors, FileInfo};
