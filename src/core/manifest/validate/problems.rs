//! How checks report: a list of (field path, message) per object.

/// Problems found in one object: (field path, message).
pub(crate) type Problems = Vec<(String, String)>;

pub(super) fn push(out: &mut Problems, field: impl Into<String>, msg: impl Into<String>) {
    out.push((field.into(), msg.into()));
}
