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

/// The default source name of a folder or file: its base name, with anything outside
/// `A-Z a-z 0-9 . _ -` replaced by `-` (`manifests/` → `manifests`).
pub fn default_source_name(path: &std::path::Path) -> String {
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
