//! Manifests: parse YAML/JSON files into typed objects, check them, and load a
//! folder of them.
//!
//! - [`parse_str`] turns one file's text into [`Document`]s (many `---` documents per YAML
//!   file; a JSON object or array; a plain ECS task-definition JSON).
//! - [`validate`] runs the semantic checks (per object and across the whole set).
//! - [`load_path`] reads a file or a directory tree, collects every error of every file, then
//!   validates the set. Errors name the file, the document, the field and, where known, the
//!   line and column.
//!
//! Applying documents to the store lives in [`crate::apply`].
//!
//! This file only declares the modules and re-exports, so no child depends on it.

mod document;
mod error;
mod load;
mod parse;
mod validate;

pub use document::{Document, Resource, Source};
pub use error::ManifestError;
pub use load::{is_manifest_path, load_files, load_path, MAX_FILES};
pub use parse::{parse_str, MAX_DOCUMENTS, MAX_FILE_BYTES, MAX_NODES};
pub(crate) use validate::check_service_against_taskdef;
pub use validate::{validate, validate_name};
