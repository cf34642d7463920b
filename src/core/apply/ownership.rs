//! The annotations berth writes on every object applied from a source. Only a source writes
//! them; a plain `berth apply` keeps whatever the stored object had.

use std::collections::BTreeMap;

/// The source's name.
pub const SOURCE: &str = "berth.dev/source";
/// The manifest file, relative to the source's folder.
pub const FILE: &str = "berth.dev/source-file";
/// The 1-based index of the document in that file.
pub const DOCUMENT: &str = "berth.dev/source-document";
/// The HEAD commit of the git work tree when the object was last written (git only).
pub const COMMIT: &str = "berth.dev/commit";
/// `"true"` when the folder had uncommitted changes at that write (git only).
pub const DIRTY: &str = "berth.dev/dirty";

pub const KEYS: [&str; 5] = [SOURCE, FILE, DOCUMENT, COMMIT, DIRTY];
/// Never a reason to write by themselves: a commit that leaves an object as it was does not
/// rewrite it (nor register a task definition revision). They record the commit of the
/// object's last change.
pub const TRANSIENT: [&str; 2] = [COMMIT, DIRTY];

pub fn is_ownership_key(k: &str) -> bool {
    KEYS.contains(&k)
}

/// The user's own annotations: everything but the ownership ones.
pub fn user(a: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    a.iter()
        .filter(|(k, _)| !is_ownership_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The ownership annotations that make an object different: source, file, document.
pub fn durable(a: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    a.iter()
        .filter(|(k, _)| is_ownership_key(k) && !TRANSIENT.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// The source an object belongs to, if any.
pub fn owner(a: &BTreeMap<String, String>) -> Option<&str> {
    a.get(SOURCE).map(String::as_str)
}
