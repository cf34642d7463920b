//! What a conversion says back: warnings (a key berth does not carry, a mapping that loses
//! something) and errors (bad input), each with the file and line it is about.

use std::fmt;

/// A warning: `compose.yaml:14: services.web.build is not supported by berth (…)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    pub line: Option<usize>,
    /// The key's path in the compose file, e.g. `services.web.build`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {} {}", self.file, self.path, self.message),
            None => write!(f, "{}: {} {}", self.file, self.path, self.message),
        }
    }
}

/// One error in the input, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Why a compose file could not be converted. Nothing is applied when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no compose file in {dir}: looked for compose.yaml, compose.yml, docker-compose.yaml, \
         docker-compose.yml (or name one with -f)"
    )]
    NotFound { dir: String },
    #[error("{}", join(.0))]
    Invalid(Vec<Problem>),
}

fn join(p: &[Problem]) -> String {
    p.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// What one conversion collects as it goes: the text (to look lines up), warnings, errors.
pub(crate) struct Ctx<'a> {
    pub file: &'a str,
    pub text: &'a str,
    pub findings: Vec<Finding>,
    pub problems: Vec<Problem>,
}

impl<'a> Ctx<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Self {
        Ctx {
            file,
            text,
            findings: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// `path` is carried differently (or not at all): say so, with the key's line.
    pub fn warn(&mut self, path: &[super::locate::Seg], message: impl Into<String>) {
        self.findings.push(Finding {
            file: self.file.to_string(),
            line: super::locate::line_of(self.text, path),
            path: super::locate::display(path),
            message: message.into(),
        });
    }

    /// A key berth has no equivalent for.
    pub fn unsupported(&mut self, path: &[super::locate::Seg], hint: &str) {
        let msg = if hint.is_empty() {
            "is not supported by berth (ignored)".to_string()
        } else {
            format!("is not supported by berth ({hint})")
        };
        self.warn(path, msg);
    }

    /// Bad input at `path`.
    pub fn error(&mut self, path: &[super::locate::Seg], message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.to_string(),
            line: super::locate::line_of(self.text, path),
            message: format!("{}: {}", super::locate::display(path), message.into()),
        });
    }
}
