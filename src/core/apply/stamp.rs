//! Stamping documents with their source's ownership annotations.

use crate::manifest::Document;

use super::ownership;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stamp {
    pub source: String,
    /// HEAD of the git work tree the folder is in (None: not a git work tree, or no commit yet).
    pub commit: Option<String>,
    /// The folder has uncommitted changes (tracked or untracked).
    pub dirty: bool,
}

/// `file` (as the loader named it) relative to `root` (the path given to the loader). A file
/// loaded on its own is named by its file name.
pub fn relative_file(file: &str, root: &str) -> String {
    let root = root.trim_end_matches('/');
    if file == root {
        return std::path::Path::new(file)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.to_string());
    }
    match file.strip_prefix(root).and_then(|r| r.strip_prefix('/')) {
        Some(rel) if !rel.is_empty() => rel.to_string(),
        _ => file.to_string(),
    }
}

/// Stamp the ownership annotations on documents loaded from `root` (replacing any the
/// manifests carried themselves).
pub fn stamp(docs: &mut [Document], root: &str, s: &Stamp) {
    for d in docs {
        let file = relative_file(&d.source.file, root);
        let index = d.source.document;
        let a = &mut d.resource.metadata_mut().annotations;
        for k in ownership::KEYS {
            a.remove(k);
        }
        a.insert(ownership::SOURCE.into(), s.source.clone());
        a.insert(ownership::FILE.into(), file);
        a.insert(ownership::DOCUMENT.into(), index.to_string());
        if let Some(c) = &s.commit {
            a.insert(ownership::COMMIT.into(), c.clone());
            a.insert(ownership::DIRTY.into(), s.dirty.to_string());
        }
    }
}
