//! Comparing and merging metadata: what counts as a change, and which annotations to store.

use std::collections::BTreeMap;

use crate::model;

use super::ownership;

/// How a stored object's metadata differs from a manifest's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaDiff {
    Same,
    /// Only the ownership annotations (source, file, document) differ.
    Ownership,
    /// Labels or the user's own annotations differ.
    User,
}

/// `stamped`: the manifest carries its source's ownership annotations (a source apply), so a
/// different owner is a difference. The commit and dirty annotations never are.
pub fn meta_diff(cur: &model::Metadata, want: &model::Metadata, stamped: bool) -> MetaDiff {
    if cur.labels != want.labels
        || ownership::user(&cur.annotations) != ownership::user(&want.annotations)
    {
        MetaDiff::User
    } else if stamped
        && ownership::durable(&cur.annotations) != ownership::durable(&want.annotations)
    {
        MetaDiff::Ownership
    } else {
        MetaDiff::Same
    }
}

pub fn same_meta(cur: &model::Metadata, want: &model::Metadata, stamped: bool) -> bool {
    meta_diff(cur, want, stamped) == MetaDiff::Same
}

/// The annotations to store: the manifest's own, plus the ownership ones — the manifest's stamp
/// for a source apply, the stored object's otherwise (a plain apply never changes who owns an
/// object).
pub fn merged_annotations(
    stored: Option<&BTreeMap<String, String>>,
    want: &BTreeMap<String, String>,
    stamped: bool,
) -> BTreeMap<String, String> {
    let mut out = ownership::user(want);
    let owner = if stamped { Some(want) } else { stored };
    if let Some(owner) = owner {
        for k in ownership::KEYS {
            if let Some(v) = owner.get(k) {
                out.insert(k.to_string(), v.clone());
            }
        }
    }
    out
}
