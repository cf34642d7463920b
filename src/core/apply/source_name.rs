//! Source names: what a source may be called, and what a folder is called by default.

/// Source names are store-key and URL safe: 1–128 of `A-Z a-z 0-9 . _ -`, not starting with
/// a dot.
pub fn validate_source_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 128 || !ok_chars || name.starts_with('.') {
        return Err(format!(
            "invalid source name {name:?}: use 1-128 letters, digits, '.', '_' or '-', not starting with '.'"
        ));
    }
    Ok(())
}

/// The default source name of a folder or file: its base name made unique by a short hash of
/// its canonical path (`/srv/a/manifests` → `manifests-1a2b3c4d`), so two folders with the
/// same base name are two sources and never prune each other's objects.
pub fn default_source_name(path: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    let mut base = legacy_source_name(&canonical);
    base.truncate(128 - 9);
    format!("{base}-{}", &hex::encode(digest)[..8])
}

/// The default source name before it was made unique: the base name alone. A source recorded
/// under it for the same folder keeps it (see the callers).
pub fn legacy_source_name(path: &std::path::Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name.trim_start_matches('.').to_string();
    name.truncate(128);
    if name.is_empty() {
        "root".to_string()
    } else {
        name
    }
}
