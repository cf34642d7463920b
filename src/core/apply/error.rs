//! How an apply fails, and the HTTP status each failure answers with.

use crate::manifest::{Document, ManifestError};
use crate::objects::ObjectError;
use crate::store::StoreError;

use super::commit::MAX_ATTEMPTS;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The manifests are wrong (a bad field, a reference to something that does not exist, a
    /// service being deleted, a cluster still in use): the caller must change its input.
    #[error("{}", render(.0))]
    Invalid(Vec<ManifestError>),
    /// The manifests hold objects another source owns; applying them would take them over
    /// (and that source would prune or fight back). Refused unless asked to take over.
    #[error("{}", render(.0))]
    Owned(Vec<ManifestError>),
    /// Other writers kept changing the keys this apply read; nothing was applied.
    #[error("conflict: the store kept changing underneath this request; gave up after {MAX_ATTEMPTS} attempts and wrote nothing")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApplyError {
    /// The HTTP status an API answers with: 422 invalid input, 409 conflict, 503 store
    /// unavailable, 500 otherwise.
    pub fn http_status(&self) -> u16 {
        match self {
            ApplyError::Invalid(_) => 422,
            ApplyError::Owned(_) | ApplyError::Conflict => 409,
            ApplyError::Store(StoreError::Unavailable(_)) => 503,
            ApplyError::Store(_) => 500,
        }
    }

    pub fn is_invalid(&self) -> bool {
        matches!(self, ApplyError::Invalid(_))
    }

    /// The manifest errors of an `Invalid` error (empty otherwise).
    pub fn manifest_errors(&self) -> &[ManifestError] {
        match self {
            ApplyError::Invalid(e) | ApplyError::Owned(e) => e,
            _ => &[],
        }
    }
}

fn render(errors: &[ManifestError]) -> String {
    match errors {
        [] => "invalid manifests".to_string(),
        [one] => one.to_string(),
        many => {
            let mut s = format!("{} problems in the manifests:", many.len());
            for e in many {
                s.push_str("\n  ");
                s.push_str(&e.to_string());
            }
            s
        }
    }
}

/// A typed read that failed, as a store error: an undecodable record is corrupt data. (Reads
/// never report a CAS conflict; one would be a bug, reported rather than dropped.)
pub fn store_error(e: ObjectError) -> StoreError {
    match e {
        ObjectError::Store(s) => s,
        ObjectError::Decode { key, source } => StoreError::Corrupt(format!("{key}: {source}")),
        ObjectError::Conflict(k) => StoreError::Invalid(format!("unexpected conflict on {k}")),
    }
}

impl From<ObjectError> for ApplyError {
    fn from(e: ObjectError) -> Self {
        ApplyError::Store(store_error(e))
    }
}

/// An error at `field` of the document `doc`.
pub fn err(doc: &Document, field: &str, msg: impl Into<String>) -> ManifestError {
    ManifestError::at(&doc.source, Some(field), msg)
}
