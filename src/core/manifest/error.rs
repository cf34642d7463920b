//! The one error type of manifest parsing and validation, and helpers that turn serde's
//! messages into friendlier ones.

use serde::{Deserialize, Serialize};

use super::document::Source;

/// A problem with a manifest, located as precisely as the parser allows.
///
/// Displayed as
/// `manifests/web.yaml: document 2: spec.containerDefinitions[0].image: must not be empty (line 12, column 7)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestError {
    pub file: String,
    /// 1-based document index inside the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// Field path such as `spec.containerDefinitions[0].image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// 1-based line and column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    pub message: String,
}

impl ManifestError {
    pub fn new(file: impl Into<String>, message: impl Into<String>) -> Self {
        ManifestError {
            file: file.into(),
            document: None,
            field: None,
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// An error about one document of a file.
    pub fn at(source: &Source, field: Option<&str>, message: impl Into<String>) -> Self {
        ManifestError {
            document: Some(source.document),
            field: field.map(str::to_string),
            ..ManifestError::new(source.file.clone(), message)
        }
    }

    pub fn with_document(mut self, document: usize) -> Self {
        self.document = Some(document);
        self
    }

    /// Set the field path; serde's placeholders for unknown parts (`.`, `?`) are dropped.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        let f = field.into();
        let f = f
            .split('.')
            .filter(|seg| !seg.is_empty() && *seg != "?")
            .collect::<Vec<_>>()
            .join(".");
        self.field = if f.is_empty() { None } else { Some(f) };
        self
    }

    pub fn with_location(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.file)?;
        if let Some(d) = self.document {
            write!(f, ": document {d}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)?;
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, " (line {l}, column {c})"),
            (Some(l), None) => write!(f, " (line {l})"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for ManifestError {}

/// The closest candidate to `word` if it is close enough to be a plausible typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let mut best: Option<(&str, f64)> = None;
    for c in candidates {
        let cl = c.to_ascii_lowercase();
        let score = if cl == lower {
            1.0
        } else {
            strsim::jaro_winkler(&lower, &cl)
                .max(strsim::normalized_damerau_levenshtein(&lower, &cl))
        };
        if score >= 0.8 && best.is_none_or(|(_, s)| score > s) {
            best = Some((c, score));
        }
    }
    best.map(|(c, _)| c)
}

/// The words written between backticks in a message, in order.
fn backticked(msg: &str) -> Vec<&str> {
    msg.split('`').skip(1).step_by(2).collect()
}

/// Rewrite serde's raw messages into clearer ones: unknown fields and variants get a "did you
/// mean" suggestion, negative numbers where a count is expected say so.
pub(crate) fn improve_message(msg: &str) -> String {
    for what in ["unknown field", "unknown variant"] {
        if let Some(rest) = msg.strip_prefix(what) {
            let words = backticked(rest);
            if let Some((got, expected)) = words.split_first() {
                if rest.contains("there are no fields") || expected.is_empty() {
                    return format!("{what} `{got}` (this object takes no fields)");
                }
                let list = expected
                    .iter()
                    .map(|w| format!("`{w}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return match closest(got, expected.iter().copied()) {
                    Some(s) => format!("{what} `{got}`, did you mean `{s}`?"),
                    None => format!("{what} `{got}` (expected one of {list})"),
                };
            }
        }
    }
    for prefix in ["invalid value: integer `-", "invalid type: integer `-"] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            if let Some((num, tail)) = rest.split_once('`') {
                if tail.contains("expected u") || tail.contains("non-negative") {
                    return format!("must not be negative (got -{num})");
                }
            }
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid value: integer `") {
        if let Some((num, tail)) = rest.split_once('`') {
            let max = if tail.contains("expected u16") {
                Some(u16::MAX as u64)
            } else if tail.contains("expected u32") {
                Some(u32::MAX as u64)
            } else {
                None
            };
            if let Some(max) = max {
                return format!("{num} is out of range (at most {max})");
            }
        }
    }
    msg.to_string()
}

/// serde_yaml writes `path: message at line L column C`; keep just the message.
pub(crate) fn strip_yaml_decorations(msg: &str, path: &str, loc: Option<(usize, usize)>) -> String {
    let mut m = msg.to_string();
    if let Some((l, c)) = loc {
        let suffix = format!(" at line {l} column {c}");
        if let Some(i) = m.find(&suffix) {
            m.replace_range(i..i + suffix.len(), "");
        }
    }
    if path != "." && !path.is_empty() {
        if let Some(rest) = m.strip_prefix(&format!("{path}: ")) {
            return rest.to_string();
        }
    }
    // serde_yaml's own path can differ slightly from serde_path_to_error's (e.g. the parent
    // map of an unknown field): strip a leading `token: ` when the token has no spaces and
    // looks like a path.
    if let Some((head, rest)) = m.split_once(": ") {
        let looks_like_path = !head.is_empty()
            && !head.contains(char::is_whitespace)
            && head
                .chars()
                .all(|c| c.is_alphanumeric() || "._-[]?".contains(c));
        if looks_like_path && (head.contains('.') || head.contains('[') || path.starts_with(head)) {
            return rest.to_string();
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(closest("imag", ["name", "image", "command"]), Some("image"));
        assert_eq!(closest("zzzz", ["name", "image"]), None);
        let m = improve_message("unknown field `imag`, expected one of `name`, `image`, `cpu`");
        assert!(m.contains("did you mean `image`?"), "{m}");
        let m = improve_message("unknown variant `brdge`, expected one of `bridge`, `host`");
        assert!(m.contains("did you mean `bridge`?"), "{m}");
        let m = improve_message("unknown field `x`, there are no fields");
        assert!(m.contains("no fields"), "{m}");
        assert_eq!(
            improve_message("invalid value: integer `-1`, expected u32"),
            "must not be negative (got -1)"
        );
        assert!(
            improve_message("invalid value: integer `70000`, expected u16")
                .contains("out of range")
        );
    }

    #[test]
    fn strip() {
        assert_eq!(
            strip_yaml_decorations(
                "spec.containerDefinitions[0]: missing field `image` at line 5 column 5",
                "spec.containerDefinitions[0]",
                Some((5, 5))
            ),
            "missing field `image`"
        );
        assert_eq!(
            strip_yaml_decorations("invalid type: string \"x\", expected u32", "spec.cpu", None),
            "invalid type: string \"x\", expected u32"
        );
    }

    #[test]
    fn display() {
        let e = ManifestError::new("manifests/web.yaml", "must not be empty")
            .with_document(2)
            .with_field("spec.containerDefinitions[0].image")
            .with_location(12, 7);
        assert_eq!(
            e.to_string(),
            "manifests/web.yaml: document 2: spec.containerDefinitions[0].image: must not be empty (line 12, column 7)"
        );
    }
}
