//! Reading a git work tree through the `git` command line: where its metadata lives, the HEAD
//! commit, whether the manifest folder has uncommitted changes. Read-only: berth never writes
//! to the repository (not even the index: `--no-optional-locks`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository a folder belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRepo {
    /// The work tree's top level.
    pub toplevel: PathBuf,
    /// `.git` of this work tree (holds `HEAD`).
    pub git_dir: PathBuf,
    /// The shared git directory (holds `refs/` and `packed-refs`; equals `git_dir` except in a
    /// linked worktree).
    pub common_dir: PathBuf,
}

fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C")
        .arg(dir)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("LC_ALL", "C")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_COMMON_DIR")
        .stdin(Stdio::null());
    c
}

fn canonical(p: PathBuf) -> PathBuf {
    std::fs::canonicalize(&p).unwrap_or(p)
}

/// The repository whose work tree holds `dir`; `Ok(None)` when `dir` is not in one (or `git`
/// is not installed); `Err` when git refuses it (e.g. "dubious ownership").
pub fn detect(dir: &Path) -> Result<Option<GitRepo>, String> {
    let out = match git(dir)
        .args([
            "rev-parse",
            "--is-inside-work-tree",
            "--show-toplevel",
            "--absolute-git-dir",
            "--git-common-dir",
        ])
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot run git: {e}")),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("not a git repository") {
            return Ok(None);
        }
        return Err(format!("git rev-parse failed: {}", stderr.trim()));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    match lines.as_slice() {
        ["true", top, git_dir, common, ..] => {
            let common = Path::new(common);
            let common = if common.is_absolute() {
                common.to_path_buf()
            } else {
                dir.join(common)
            };
            Ok(Some(GitRepo {
                toplevel: canonical(PathBuf::from(top)),
                git_dir: canonical(PathBuf::from(git_dir)),
                common_dir: canonical(common),
            }))
        }
        // Inside a .git directory or a bare repository: no work tree to read manifests from.
        _ => Ok(None),
    }
}

/// The HEAD commit (None on an unborn branch: a repository with no commit yet).
pub fn head(dir: &Path) -> Result<Option<String>, String> {
    let out = git(dir)
        .args(["rev-parse", "--verify", "-q", "HEAD"])
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    let sha = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !sha.is_empty() {
        Ok(Some(sha))
    } else if out.status.code() == Some(1) {
        Ok(None)
    } else {
        Err(format!(
            "git rev-parse HEAD failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether the folder has changes not in HEAD: modified, staged, deleted or untracked files.
pub fn dirty(dir: &Path) -> Result<bool, String> {
    let out = git(dir)
        .args([
            "--no-optional-locks",
            "status",
            "--porcelain",
            "--untracked-files=all",
            "--",
            ".",
        ])
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git status failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(!out.stdout.iter().all(u8::is_ascii_whitespace))
}

/// A regular file of a commit's tree under the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Relative to the folder.
    pub path: String,
    pub oid: String,
    pub size: u64,
}

/// The regular files of commit `sha`'s tree under `dir` (paths relative to `dir`; symlinks and
/// submodules are not listed). A commit is immutable: what this lists cannot be half written.
pub fn tree_files(dir: &Path, sha: &str) -> Result<Vec<TreeFile>, String> {
    let out = git(dir)
        .args(["ls-tree", "-r", "-z", "-l", sha])
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git ls-tree {} failed: {}",
            short(sha),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut files = Vec::new();
    for entry in out.stdout.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        // "<mode> SP <type> SP <oid> SP+ <size> TAB <path>"
        let entry = String::from_utf8_lossy(entry);
        let Some((meta, path)) = entry.split_once('\t') else {
            continue;
        };
        let fields: Vec<&str> = meta.split_whitespace().collect();
        let [mode, kind, oid, size] = fields.as_slice() else {
            continue;
        };
        if *kind != "blob" || !matches!(*mode, "100644" | "100755") {
            continue;
        }
        files.push(TreeFile {
            path: path.to_string(),
            oid: oid.to_string(),
            size: size.parse().unwrap_or(u64::MAX),
        });
    }
    Ok(files)
}

/// The contents of blobs, in the order asked (`git cat-file --batch`).
pub fn read_blobs(dir: &Path, oids: &[String]) -> Result<Vec<Vec<u8>>, String> {
    use std::io::{BufRead, BufReader, Read, Write};
    if oids.is_empty() {
        return Ok(vec![]);
    }
    let mut child = git(dir)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run git: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input: String = oids.iter().map(|o| format!("{o}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut blobs = Vec::with_capacity(oids.len());
    let mut result = Ok(());
    for oid in oids {
        let mut header = String::new();
        if let Err(e) = stdout.read_line(&mut header) {
            result = Err(format!("git cat-file: {e}"));
            break;
        }
        let parts: Vec<&str> = header.split_whitespace().collect();
        let size = match parts.as_slice() {
            [_, "blob", size] => size.parse::<usize>().unwrap_or(0),
            _ => {
                result = Err(format!(
                    "git cat-file: cannot read {oid}: {}",
                    header.trim()
                ));
                break;
            }
        };
        let mut buf = vec![0u8; size + 1];
        if let Err(e) = stdout.read_exact(&mut buf) {
            result = Err(format!("git cat-file: {e}"));
            break;
        }
        buf.pop(); // the newline after each object
        blobs.push(buf);
    }
    drop(stdout);
    let _ = writer.join();
    let _ = child.kill();
    let _ = child.wait();
    result.map(|()| blobs)
}

/// The first 12 characters of a commit, for people.
pub fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path, args: &[&str]) {
        let st = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .unwrap();
        assert!(st.status.success(), "git {args:?}: {st:?}");
    }

    #[test]
    fn detects_head_and_dirty_state_of_a_subfolder() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        assert_eq!(detect(root).unwrap(), None, "not a repository yet");
        run(root, &["init", "-q", "-b", "main"]);
        let sub = root.join("manifests");
        std::fs::create_dir(&sub).unwrap();
        let repo = detect(&sub).unwrap().expect("inside a work tree");
        assert_eq!(repo.toplevel, std::fs::canonicalize(root).unwrap());
        assert_eq!(repo.git_dir, repo.common_dir);
        assert!(repo.git_dir.ends_with(".git"));
        assert_eq!(head(&sub).unwrap(), None, "unborn branch");

        std::fs::write(sub.join("a.yaml"), "x: 1\n").unwrap();
        assert!(dirty(&sub).unwrap(), "untracked file");
        run(root, &["add", "."]);
        run(root, &["commit", "-q", "-m", "one"]);
        let sha = head(&sub).unwrap().expect("a commit");
        assert_eq!(sha.len(), 40);
        assert!(!dirty(&sub).unwrap());
        // A change outside the folder does not make the folder dirty.
        std::fs::write(root.join("README.md"), "hi\n").unwrap();
        assert!(!dirty(&sub).unwrap());
        std::fs::write(sub.join("a.yaml"), "x: 2\n").unwrap();
        assert!(dirty(&sub).unwrap());
        assert_eq!(short(&sha).len(), 12);
        // The commit's tree, not the work tree: the committed content.
        let files = tree_files(&sub, &sha).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "a.yaml");
        assert_eq!(files[0].size, 5);
        let oids: Vec<String> = files.iter().map(|f| f.oid.clone()).collect();
        assert_eq!(read_blobs(&sub, &oids).unwrap(), vec![b"x: 1\n".to_vec()]);
    }
}
