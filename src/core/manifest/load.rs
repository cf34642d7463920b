//! Loading a file or a directory tree of manifests.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::document::Document;
use super::error::ManifestError;
use super::parse::{locate_errors, parse_file, FileInfo, MAX_FILE_BYTES};
use super::validate::validate;

/// Manifest files one load may read.
pub const MAX_FILES: usize = 10_000;
/// Total bytes one load may read.
const MAX_TOTAL_BYTES: usize = 256 * 1024 * 1024;
/// Directory nesting one load follows.
const MAX_DEPTH: usize = 64;

/// Load manifests from a file, or from a directory walked recursively in sorted order.
///
/// In a directory only `.yaml`, `.yml` and `.json` files are read (a README is ignored), hidden
/// files and directories (`.git`) are skipped, and symlinks are followed only when they resolve
/// inside the directory. A file named directly is read whatever its extension. Every error of
/// every file is collected; then the whole set is validated ([`validate`]).
pub fn load_path(path: &Path) -> Result<Vec<Document>, Vec<ManifestError>> {
    let mut l = Loader::default();
    let shown = path.display().to_string();
    match fs::metadata(path) {
        Err(e) => l.fail(shown, io_message(&e)),
        Ok(meta) if meta.is_dir() => match fs::canonicalize(path) {
            Err(e) => l.fail(shown, io_message(&e)),
            Ok(root) => {
                let mut stack = vec![root.clone()];
                l.walk(path, &root, &root, &mut stack);
            }
        },
        Ok(_) => l.read_file(path, path),
    }
    l.finish()
}

/// Load manifests from files already read elsewhere (e.g. the blobs of a git commit), in the
/// order given: `(name, content or why it could not be read)`. The same limits, parsing and
/// validation as [`load_path`].
pub fn load_files(
    files: impl IntoIterator<Item = (String, Result<Vec<u8>, String>)>,
) -> Result<Vec<Document>, Vec<ManifestError>> {
    let mut l = Loader::default();
    for (name, content) in files {
        if l.stopped {
            break;
        }
        match content {
            Ok(bytes) => l.add_bytes(name, bytes),
            Err(msg) => l.fail(name, msg),
        }
    }
    l.finish()
}

/// Whether a path relative to a manifest folder is one [`load_path`] reads: a `.yaml`, `.yml`
/// or `.json` file with no hidden component.
pub fn is_manifest_path(rel: &str) -> bool {
    !rel.split('/').any(|c| c.starts_with('.') || c.is_empty())
        && rel.rsplit('/').next().is_some_and(is_manifest_name)
}

impl Loader {
    fn finish(self) -> Result<Vec<Document>, Vec<ManifestError>> {
        let mut l = self;
        let mut semantic = validate(&l.docs);
        // Give semantic errors a line and column from the text they came from.
        let mut by_file: HashMap<String, Vec<ManifestError>> = HashMap::new();
        for e in semantic.drain(..) {
            by_file.entry(e.file.clone()).or_default().push(e);
        }
        for (file, mut errs) in by_file {
            if let Some((text, info)) = l.texts.get(&file) {
                locate_errors(text, info, &mut errs);
            }
            l.errors.extend(errs);
        }
        // Report in reading order: file by file, document by document (stable, so a document's
        // parse errors stay before its semantic ones).
        let mut order: HashMap<&str, usize> = HashMap::new();
        for (i, f) in l.order.iter().enumerate() {
            order.entry(f.as_str()).or_insert(i);
        }
        l.errors.sort_by_key(|e| {
            (
                order.get(e.file.as_str()).copied().unwrap_or(usize::MAX),
                e.document.unwrap_or(0),
            )
        });

        if l.errors.is_empty() {
            Ok(l.docs)
        } else {
            Err(l.errors)
        }
    }
}

#[derive(Default)]
struct Loader {
    docs: Vec<Document>,
    errors: Vec<ManifestError>,
    texts: HashMap<String, (String, FileInfo)>,
    /// Every path reported on, in reading order.
    order: Vec<String>,
    files: usize,
    bytes: usize,
    stopped: bool,
}

fn io_message(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => format!("cannot read: {e}"),
    }
}

fn is_manifest_name(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    l.ends_with(".yaml") || l.ends_with(".yml") || l.ends_with(".json")
}

/// `ELOOP`: too many levels of symbolic links (40 on Linux, 62 on the BSDs and macOS).
fn is_loop(e: &io::Error) -> bool {
    let code = if cfg!(target_os = "linux") { 40 } else { 62 };
    e.raw_os_error() == Some(code)
}

impl Loader {
    fn fail(&mut self, file: String, msg: impl Into<String>) {
        self.seen(&file);
        self.errors.push(ManifestError::new(file, msg));
    }

    fn seen(&mut self, file: &str) {
        if self.order.last().map(String::as_str) != Some(file) {
            self.order.push(file.to_string());
        }
    }

    /// `shown` is the directory as the user named it (for messages), `real` its canonical path.
    fn walk(&mut self, shown: &Path, real: &Path, root: &Path, stack: &mut Vec<PathBuf>) {
        if self.stopped {
            return;
        }
        if stack.len() > MAX_DEPTH {
            self.fail(
                shown.display().to_string(),
                format!("directories nested deeper than {MAX_DEPTH} levels are not read"),
            );
            return;
        }
        let entries = match fs::read_dir(real) {
            Ok(rd) => rd,
            Err(e) => {
                let msg = if e.kind() == io::ErrorKind::NotFound {
                    "directory vanished while reading (removed or renamed during the scan)"
                        .to_string()
                } else {
                    io_message(&e)
                };
                self.fail(shown.display().to_string(), msg);
                return;
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            match entry {
                Ok(e) => names.push(e.file_name()),
                Err(e) => self.fail(shown.display().to_string(), io_message(&e)),
            }
        }
        names.sort();
        for name in names {
            if self.stopped {
                return;
            }
            let name_str = name.to_string_lossy();
            if name_str.starts_with('.') {
                continue; // .git, editor swap files, …
            }
            let entry_shown = shown.join(&name);
            let entry_real = real.join(&name);
            let shown_str = entry_shown.display().to_string();
            let lmeta = match fs::symlink_metadata(&entry_real) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.fail(
                        shown_str,
                        "vanished while reading the directory (removed or renamed during the scan)",
                    );
                    continue;
                }
                Err(e) => {
                    self.fail(shown_str, io_message(&e));
                    continue;
                }
            };
            let target = if lmeta.file_type().is_symlink() {
                match fs::canonicalize(&entry_real) {
                    Ok(t) if t.starts_with(root) => t,
                    Ok(t) => {
                        if is_manifest_name(&name_str) || t.is_dir() {
                            self.fail(
                                shown_str,
                                format!(
                                    "symlink points outside the manifest directory (to {}); refusing to follow it",
                                    t.display()
                                ),
                            );
                        }
                        continue;
                    }
                    Err(e) if is_loop(&e) => {
                        self.fail(
                            shown_str,
                            "symlink loop (too many levels of symbolic links)",
                        );
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        if is_manifest_name(&name_str) {
                            self.fail(shown_str, "broken symlink: its target does not exist");
                        }
                        continue;
                    }
                    Err(e) => {
                        self.fail(shown_str, io_message(&e));
                        continue;
                    }
                }
            } else {
                entry_real.clone()
            };
            let meta = match fs::metadata(&target) {
                Ok(m) => m,
                Err(e) => {
                    let msg = if e.kind() == io::ErrorKind::NotFound {
                        "vanished while reading the directory (removed or renamed during the scan)"
                            .to_string()
                    } else {
                        io_message(&e)
                    };
                    self.fail(shown_str, msg);
                    continue;
                }
            };
            if meta.is_dir() {
                if stack.contains(&target) {
                    self.fail(
                        shown_str,
                        format!(
                            "symlink loop: leads back to {}, which is already being read",
                            target.display()
                        ),
                    );
                    continue;
                }
                stack.push(target.clone());
                self.walk(&entry_shown, &target, root, stack);
                stack.pop();
            } else if meta.is_file() && is_manifest_name(&name_str) {
                self.read_file(&target, &entry_shown);
            }
        }
    }

    fn read_file(&mut self, real: &Path, shown: &Path) {
        let shown_str = shown.display().to_string();
        if self.files >= MAX_FILES {
            self.fail(
                shown_str,
                format!("too many manifest files (the limit is {MAX_FILES}); stopped reading"),
            );
            self.stopped = true;
            return;
        }
        self.files += 1;
        let text = match read_limited(real) {
            Ok(t) => t,
            Err(msg) => {
                self.fail(shown_str, msg);
                return;
            }
        };
        self.add_text(shown_str, text);
    }

    /// A file's content read elsewhere.
    fn add_bytes(&mut self, shown_str: String, buf: Vec<u8>) {
        if self.files >= MAX_FILES {
            self.fail(
                shown_str,
                format!("too many manifest files (the limit is {MAX_FILES}); stopped reading"),
            );
            self.stopped = true;
            return;
        }
        self.files += 1;
        if buf.len() > MAX_FILE_BYTES {
            let msg = format!(
                "file is too large ({} bytes; the limit is {} MiB)",
                buf.len(),
                MAX_FILE_BYTES >> 20
            );
            self.fail(shown_str, msg);
            return;
        }
        match String::from_utf8(buf) {
            Ok(text) => self.add_text(shown_str, text),
            Err(e) => {
                let msg = format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                );
                self.fail(shown_str, msg)
            }
        }
    }

    fn add_text(&mut self, shown_str: String, text: String) {
        self.bytes += text.len();
        if self.bytes > MAX_TOTAL_BYTES {
            self.fail(
                shown_str,
                format!(
                    "the manifests add up to more than {} MiB; stopped reading",
                    MAX_TOTAL_BYTES >> 20
                ),
            );
            self.stopped = true;
            return;
        }
        self.seen(&shown_str);
        let (docs, errors, info) = parse_file(&text, &shown_str);
        self.docs.extend(docs);
        self.errors.extend(errors);
        self.texts.insert(shown_str, (text, info));
    }
}

/// Read a whole file of at most [`MAX_FILE_BYTES`] as UTF-8.
fn read_limited(path: &Path) -> Result<String, String> {
    let f = fs::File::open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            "file vanished while reading (removed or renamed during the scan)".to_string()
        } else {
            io_message(&e)
        }
    })?;
    let meta = f.metadata().map_err(|e| io_message(&e))?;
    if !meta.is_file() {
        return Err("not a regular file".to_string());
    }
    let too_large = |n: u64| {
        format!(
            "file is too large ({n} bytes; the limit is {} MiB)",
            MAX_FILE_BYTES >> 20
        )
    };
    if meta.len() > MAX_FILE_BYTES as u64 {
        return Err(too_large(meta.len()));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io_message(&e))?;
    if buf.len() > MAX_FILE_BYTES {
        return Err(too_large(buf.len() as u64));
    }
    String::from_utf8(buf).map_err(|e| {
        format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}
