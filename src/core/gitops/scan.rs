//! One full scan of a source folder: read and validate every manifest, note the git HEAD and
//! whether the folder is dirty, stamp ownership. Blocking (file and process I/O): run it on a
//! blocking thread.

use std::hash::{Hash, Hasher};
use std::path::Path;

use crate::apply::{relative_file, stamp, Stamp};
use crate::manifest::{
    is_manifest_path, load_files, load_path, Document, ManifestError, MAX_FILES, MAX_FILE_BYTES,
};

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
    /// Read from the HEAD commit's tree (a git work tree with a commit), not the folder.
    pub from_commit: bool,
    /// HEAD did not move during the read.
    pub settled: bool,
}

/// A folder that did not.
#[derive(Debug, Clone)]
pub struct ScanError {
    pub head: Option<String>,
    pub dirty: bool,
    /// File names relative to the folder.
    pub errors: Vec<ManifestError>,
}

/// Read the folder's manifests: in a git work tree with a commit, the files of the HEAD
/// commit's tree under the folder (committed content: an editor's half-written file or a
/// `git pull` in progress is never read); otherwise the folder itself. Then the dirty state.
/// An empty folder is an error: syncing it would prune everything.
pub fn scan(dir: &Path, repo: Option<&GitRepo>, source: &str) -> Result<Scan, ScanError> {
    let root = dir.display().to_string();
    let head_of = || -> Result<Option<String>, String> {
        match repo {
            None => Ok(None),
            Some(_) => git::head(dir),
        }
    };
    let t = std::time::Instant::now();
    let head = match head_of() {
        Ok(h) => h,
        // Never fall back to reading the work tree of a repository whose HEAD cannot be read.
        Err(e) => {
            return Err(ScanError {
                head: None,
                dirty: false,
                errors: vec![ManifestError::new(
                    ".",
                    format!("cannot read the git HEAD: {e}"),
                )],
            })
        }
    };
    let loaded = match &head {
        Some(sha) => load_commit(dir, sha),
        // Not a git work tree, or no commit yet: the folder as it is.
        None => load_path(dir),
    };
    // A commit landed during the read: what was read is consistent (one commit's tree) but
    // already old; the caller does not prune from it and reads again.
    let settled = head_of().is_ok_and(|h| h == head);
    tracing::debug!(
        ms = t.elapsed().as_secs_f64() * 1e3,
        committed = head.is_some(),
        settled,
        "scanned"
    );
    let from_commit = head.is_some();
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
            errors: vec![ManifestError::new(
                ".",
                if from_commit {
                    format!(
                        "no manifests (.yaml, .yml or .json) under this folder in the HEAD commit {}; berth applies committed content in a git work tree: commit them. Refusing to sync an empty set, which would prune everything",
                        head.as_deref().map(git::short).unwrap_or("-")
                    )
                } else {
                    "no manifests in the folder (.yaml, .yml or .json); refusing to sync an empty set, which would prune everything".to_string()
                },
            )],
            head,
            dirty,
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
                    // Read from the commit: uncommitted changes are not in what is applied.
                    dirty: dirty && !from_commit,
                },
            );
            Ok(Scan {
                docs,
                head,
                dirty,
                fingerprint,
                from_commit,
                settled,
            })
        }
    }
}

/// The manifests of commit `sha` under `dir`, named as [`load_path`] would name them.
fn load_commit(dir: &Path, sha: &str) -> Result<Vec<Document>, Vec<ManifestError>> {
    let fail = |msg: String| vec![ManifestError::new(dir.display().to_string(), msg)];
    let files: Vec<git::TreeFile> = git::tree_files(dir, sha)
        .map_err(fail)?
        .into_iter()
        .filter(|f| is_manifest_path(&f.path))
        .take(MAX_FILES + 1)
        .collect();
    // Oversized blobs are not read; the loader reports them.
    let wanted: Vec<String> = files
        .iter()
        .filter(|f| f.size <= MAX_FILE_BYTES as u64)
        .map(|f| f.oid.clone())
        .collect();
    let mut blobs = git::read_blobs(dir, &wanted).map_err(fail)?.into_iter();
    let named = files.into_iter().map(|f| {
        let name = dir.join(&f.path).display().to_string();
        let content = if f.size <= MAX_FILE_BYTES as u64 {
            blobs
                .next()
                .ok_or_else(|| "cannot read it from git".to_string())
        } else {
            Err(format!(
                "file is too large ({} bytes; the limit is {} MiB)",
                f.size,
                MAX_FILE_BYTES >> 20
            ))
        };
        (name, content)
    });
    load_files(named.collect::<Vec<_>>())
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
    fn a_git_work_tree_is_read_from_its_head_commit() {
        let d = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(d.path())
                .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
                .args(["-c", "commit.gpgsign=false"])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "git {args:?}: {out:?}");
        };
        git(&["init", "-q", "-b", "main"]);
        let m = d.path().join("manifests");
        std::fs::create_dir_all(m.join("sub")).unwrap();
        std::fs::write(m.join("sub/web.yaml"), TD).unwrap();
        std::fs::write(m.join("notes.txt"), "ignored").unwrap();
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "one"]);
        let repo = git::detect(&m).unwrap().unwrap();
        let committed = scan(&m, Some(&repo), "src").unwrap();
        assert!(committed.from_commit && committed.settled && !committed.dirty);
        assert_eq!(committed.docs.len(), 1);
        assert_eq!(committed.docs[0].source.file, "sub/web.yaml");
        // Emptied (or half written) in the work tree: what is read is still the commit.
        std::fs::write(m.join("sub/web.yaml"), "").unwrap();
        std::fs::write(m.join("new.yaml"), TD.replace("web", "other")).unwrap();
        let s = scan(&m, Some(&repo), "src").unwrap();
        assert!(s.dirty);
        assert_eq!(s.fingerprint, committed.fingerprint);
        let a = &s.docs[0].resource.metadata().annotations;
        assert_eq!(a[ownership::DIRTY], "false", "committed content is applied");
        // A broken commit is reported with the file's name.
        std::fs::write(m.join("sub/web.yaml"), "kind: [\n").unwrap();
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "broken"]);
        let e = scan(&m, Some(&repo), "src").unwrap_err();
        assert_eq!(e.errors[0].file, "sub/web.yaml", "{:?}", e.errors);
        // Manifests only in the work tree, none committed: said so, with what to do.
        let fresh = d.path().join("fresh");
        std::fs::create_dir(&fresh).unwrap();
        std::fs::write(fresh.join("web.yaml"), TD).unwrap();
        let e = scan(&fresh, Some(&repo), "src").unwrap_err();
        assert!(
            e.errors[0].message.contains("commit them"),
            "{:?}",
            e.errors
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
