//! Checks of `metadata` that every kind shares (label and annotation keys).

use super::problems::{push, Problems};
use crate::model::Metadata;

pub(super) fn check_metadata(m: &Metadata, out: &mut Problems) {
    for (what, map) in [("labels", &m.labels), ("annotations", &m.annotations)] {
        for k in map.keys() {
            if k.trim().is_empty() {
                push(out, format!("metadata.{what}"), "keys must not be empty");
            } else if k.len() > 253 || k.chars().any(char::is_whitespace) {
                push(
                    out,
                    format!("metadata.{what}"),
                    format!("key `{k}` must be at most 253 characters with no whitespace"),
                );
            }
        }
    }
}
