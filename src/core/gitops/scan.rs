//! One full scan of a source folder: read and validate every manifest, note the git HEAD and
//! whether the folder is dirty, stamp ownership. Blocking (file and process I/O): run it on a
//! blocking thread.

use std::hash::{Hash, Hasher};
use std::path::Path;

use crate::apply::{relative_file, stamp, Stamp};
use crate::manifest::{load_path, Document, ManifestError};

use super::git::{self, GitRepo};

/// A folder that read and validated cleanly.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Stamped with the source's ownership annotations; `source.file` relative to the folder.
    pub docs: Vec<Document>,
    pub head: Option<String>,
    pub dirty: bool,
    /// Identifies the folder's desired content (documents and where they came from; not the
    /// commit): equal fingerprints, equal desired state.
    pub fingerprint: u64,
}

/// A folder that did not.
#[derive(Debug, Clone)]
pub struct ScanError {
    pub head: Option<String>,
    pub dirty: bool,
    /// File names relative to the folder.
    pub errors: Vec<ManifestError>,
}

/// Read HEAD, the folder, HEAD again (re-reading when a commit landed in between), then the
/// dirty state. An empty folder is an error: syncing it would prune everything.
pub fn scan(dir: &Path, repo: Option<&GitRepo>, source: &str) -> Result<Scan, ScanError> {
    let root = dir.display().to_string();
    let head_of = || -> Option<String> {
        repo?;
        match git::head(dir) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(dir = %root, error = %e, "cannot read the git HEAD");
                None
            }
        }
    };
    let mut attempt = 0;
    let (head, loaded) = loop {
        attempt += 1;
        let t = std::time::Instant::now();
        let before = head_of();
        let t_head = t.elapsed();
        let loaded = load_path(dir);
        let t_load = t.elapsed();
        let after = head_of();
        tracing::debug!(
            head_ms = t_head.as_secs_f64() * 1e3,
            load_ms = (t_load - t_head).as_secs_f64() * 1e3,
            head2_ms = (t.elapsed() - t_load).as_secs_f64() * 1e3,
            "scan timings"
        );
        if before == after || attempt >= 3 {
            break (after, loaded);
        }
    };
    let dirty = repo.is_some()
        && match git::dirty(dir) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(dir = %root, error = %e, "cannot read the git status");
                false
            }
        };
    match loaded {
        Err(mut errors) => {
            for e in &mut errors {
                e.file = relative_file(&e.file, &root);
            }
            Err(ScanError {
                head,
                dirty,
                errors,
            })
        }
        Ok(docs) if docs.is_empty() => Err(ScanError {
            head,
            dirty,
            errors: vec![ManifestError::new(
                ".",
                "no manifests in the folder (.yaml, .yml or .json); refusing to sync an empty set, which would prune everything",
            )],
        }),
        Ok(mut docs) => {
            for d in &mut docs {
                d.source.file = relative_file(&d.source.file, &root);
            }
            let fingerprint = fingerprint(&docs);
            stamp(
                &mut docs,
                "",
                &Stamp {
                    source: source.to_string(),
                    commit: head.clone(),
                    dirty,
                },
            );
            Ok(Scan {
                docs,
                head,
                dirty,
                fingerprint,
            })
        }
    }
}

pub fn fingerprint(docs: &[Document]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for d in docs {
        serde_json::to_vec(d)
            .expect("documents serialize")
            .hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::ownership;

    const TD: &str = "apiVersion: berth.dev/v1\nkind: TaskDefinition\nmetadata: {name: web}\nspec:\n  containerDefinitions:\n    - {name: a, image: busybox, memory: 16}\n";

    #[test]
    fn scan_stamps_relative_files_and_fingerprints_content() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/web.yaml"), TD).unwrap();
        std::fs::write(d.path().join("README.md"), "not read").unwrap();
        let s = scan(d.path(), None, "src").unwrap();
        assert_eq!(s.docs.len(), 1);
        assert_eq!(s.docs[0].source.file, "sub/web.yaml");
        let a = &s.docs[0].resource.metadata().annotations;
        assert_eq!(a[ownership::SOURCE], "src");
        assert_eq!(a[ownership::FILE], "sub/web.yaml");
        assert_eq!(a[ownership::DOCUMENT], "1");
        assert!(!a.contains_key(ownership::COMMIT), "not a git work tree");
        assert_eq!(s.head, None);
        let again = scan(d.path(), None, "src").unwrap();
        assert_eq!(s.fingerprint, again.fingerprint);
        std::fs::write(d.path().join("sub/web.yaml"), TD.replace("16", "32")).unwrap();
        assert_ne!(
            s.fingerprint,
            scan(d.path(), None, "src").unwrap().fingerprint
        );
    }

    #[test]
    fn broken_and_empty_folders_are_errors_with_relative_files() {
        let d = tempfile::tempdir().unwrap();
        let e = scan(d.path(), None, "src").unwrap_err();
        assert!(
            e.errors[0].message.contains("no manifests"),
            "{:?}",
            e.errors
        );
        std::fs::write(d.path().join("bad.yaml"), "kind: [\n").unwrap();
        let e = scan(d.path(), None, "src").unwrap_err();
        assert_eq!(e.errors[0].file, "bad.yaml");
        assert!(e.errors[0].line.is_some(), "{:?}", e.errors);
    }
}
