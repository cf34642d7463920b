//! Compose files on berth (`berth compose convert|up|down`): the conversion of a Compose file
//! into berth manifests (it reads the file, `.env`, env files and secret files; never the
//! store). Each compose service becomes one TaskDefinition and one Service named
//! `PROJECT-SERVICE`; every key berth cannot carry is reported by name and line
//! ([`Finding`]), bad input is an error with file and line ([`ComposeError`]).
//!
//! - [`source`]: which file, the project name, `.env`, the YAML and `${VAR}` interpolation
//! - [`service`]: one compose service → container definition and service pieces; [`mounts`]:
//!   its volumes, bind mounts and tmpfs
//! - [`convert`]: the project → documents, secrets, dependency order
//! - [`ports`], [`duration`], [`units`], [`values`]: Compose's value syntaxes
//! - [`locate`]: the line of a key; [`report`]: findings and errors
//!
//! Applying the documents is the CLI's (through the API, as `berth apply` does).

pub mod convert;
pub mod duration;
pub mod locate;
pub mod mounts;
pub mod ports;
pub mod report;
pub mod service;
pub mod source;
pub mod units;
pub mod values;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use convert::{Conversion, Unit};
pub use report::{ComposeError, Finding, Problem};
pub use service::Condition;

/// What to convert.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The compose file; None: look in `dir` for compose.yaml, compose.yml, docker-compose.yaml,
    /// docker-compose.yml.
    pub file: Option<PathBuf>,
    /// Where to look when `file` is None (the current directory).
    pub dir: PathBuf,
    /// `-p/--project-name` (normalised as Compose does); else `COMPOSE_PROJECT_NAME` from `env`.
    pub project: Option<String>,
    /// The process environment (over the `.env` beside the file).
    pub env: HashMap<String, String>,
}

/// Read, interpolate and convert a compose file.
pub fn load(opts: &Options) -> Result<Conversion, ComposeError> {
    let file = match &opts.file {
        Some(f) => f.clone(),
        None => source::find_file(&opts.dir)?,
    };
    // A file found in the current directory is named as Compose names it: `compose.yaml`.
    let display = match &opts.file {
        Some(f) => f.display().to_string(),
        None => file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.display().to_string()),
    };
    let text = std::fs::read_to_string(&file).map_err(|e| ComposeError::Read {
        path: display.clone(),
        source: e,
    })?;
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let vars = source::variables(&file, &opts.env)?;
    let mut doc = source::parse_yaml(&text, &display)?;
    let mut ctx = report::Ctx::new(&display, &text);
    source::interpolate_tree(
        &mut doc,
        &vars,
        &text,
        &display,
        &mut ctx.findings,
        &mut ctx.problems,
    );
    if !ctx.problems.is_empty() {
        return Err(ComposeError::Invalid(ctx.problems));
    }
    // Compose's order: -p, COMPOSE_PROJECT_NAME, the top-level `name:`, the folder.
    let from_env = opts
        .env
        .get("COMPOSE_PROJECT_NAME")
        .filter(|n| !n.is_empty());
    let project = match opts.project.as_ref().or(from_env) {
        Some(p) => source::normalize_project(p),
        None => match doc
            .get("name")
            .and_then(values::scalar)
            .filter(|n| !n.is_empty())
        {
            Some(n) => source::normalize_project(&n),
            None => source::project_from_path(&file),
        },
    };
    if project.is_empty() {
        return Err(ComposeError::Invalid(vec![Problem {
            file: display,
            line: None,
            message: "the project name is empty after normalisation (lower case letters, digits, `-` and `_`): give one with -p".into(),
        }]));
    }
    convert::convert_document(&mut ctx, &doc, &project, &dir, &vars)
}

/// Convert compose text directly (tests, tools): `file` is only used in messages and `dir` for
/// relative paths.
pub fn convert_text(
    text: &str,
    file: &str,
    dir: &Path,
    project: &str,
    vars: &HashMap<String, String>,
) -> Result<Conversion, ComposeError> {
    let mut doc = source::parse_yaml(text, file)?;
    let mut ctx = report::Ctx::new(file, text);
    source::interpolate_tree(
        &mut doc,
        vars,
        text,
        file,
        &mut ctx.findings,
        &mut ctx.problems,
    );
    if !ctx.problems.is_empty() {
        return Err(ComposeError::Invalid(ctx.problems));
    }
    convert::convert_document(&mut ctx, &doc, project, dir, vars)
}

#[cfg(test)]
mod tests;
