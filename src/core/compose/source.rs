//! Reading a compose project: which file (`compose.yaml`, …), the project name, the `.env`
//! beside it, the YAML itself (with `<<` merge keys) and `${VAR}` interpolation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::locate::{line_of, Seg};
use super::report::{ComposeError, Finding, Problem};

/// Project-wide facts a service refers to.
pub struct Project<'a> {
    pub dir: &'a Path,
    /// Top-level `volumes:`: compose name → Docker volume name.
    pub volumes: &'a HashMap<String, String>,
    /// Top-level `secrets:`: compose name → `valueFrom` (`SECRET:KEY`).
    pub secrets: &'a HashMap<String, String>,
    pub vars: &'a HashMap<String, String>,
}

/// The files Compose looks for, in its order.
pub const DEFAULT_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// Compose files larger than this are refused.
pub const MAX_BYTES: usize = 4 * 1024 * 1024;

/// The compose file in `dir`, as Compose finds it.
pub fn find_file(dir: &Path) -> Result<PathBuf, ComposeError> {
    DEFAULT_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| ComposeError::NotFound {
            dir: dir.display().to_string(),
        })
}

/// Compose's normalisation of a project name: lower case, only `[a-z0-9_-]`, starting with a
/// letter or digit.
pub fn normalize_project(name: &str) -> String {
    let s: String = name
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    s.trim_start_matches(['_', '-']).to_string()
}

/// The project name from the compose file's folder.
pub fn project_from_path(file: &Path) -> String {
    let dir = std::fs::canonicalize(file)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .or_else(|| file.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    normalize_project(
        &dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    )
}

/// `KEY=VALUE` lines (`.env`, `env_file`): comments, blank lines, `export `, quotes.
pub fn parse_env_text(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((k, v)) = line.split_once('=') else {
            // A bare name: taken from the environment by Compose; nothing to set here.
            if valid_var(line) {
                continue;
            }
            return Err((i + 1, format!("expected KEY=VALUE, got `{raw}`")));
        };
        let k = k.trim();
        if !valid_var(k) {
            return Err((i + 1, format!("`{k}` is not a valid variable name")));
        }
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            let inner = &v[1..v.len() - 1];
            if v.starts_with('"') {
                inner.replace("\\n", "\n").replace("\\\"", "\"")
            } else {
                inner.to_string()
            }
        } else {
            // An unquoted value ends at ` #`.
            match v.find(" #") {
                Some(j) => v[..j].trim_end().to_string(),
                None => v.to_string(),
            }
        };
        out.push((k.to_string(), v));
    }
    Ok(out)
}

fn valid_var(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The variables interpolation sees: the process environment over the `.env` beside the file.
pub fn variables(
    file: &Path,
    env: &HashMap<String, String>,
) -> Result<HashMap<String, String>, ComposeError> {
    let mut vars = HashMap::new();
    let dotenv = file.parent().unwrap_or(Path::new(".")).join(".env");
    if dotenv.is_file() {
        let text = std::fs::read_to_string(&dotenv).map_err(|e| ComposeError::Read {
            path: dotenv.display().to_string(),
            source: e,
        })?;
        let parsed = parse_env_text(&text).map_err(|(line, message)| {
            ComposeError::Invalid(vec![Problem {
                file: dotenv.display().to_string(),
                line: Some(line),
                message,
            }])
        })?;
        vars.extend(parsed);
    }
    vars.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(vars)
}

/// Parse the YAML text (one document) and resolve `<<` merge keys.
pub fn parse_yaml(text: &str, display: &str) -> Result<Value, ComposeError> {
    let invalid = |line: Option<usize>, message: String| {
        ComposeError::Invalid(vec![Problem {
            file: display.to_string(),
            line,
            message,
        }])
    };
    if text.len() > MAX_BYTES {
        return Err(invalid(
            None,
            format!("the file is larger than {MAX_BYTES} bytes"),
        ));
    }
    let mut v: Value = serde_yaml::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        invalid(line, format!("invalid YAML: {e}"))
    })?;
    v.apply_merge()
        .map_err(|e| invalid(None, format!("invalid YAML merge (`<<`): {e}")))?;
    if !v.is_mapping() {
        return Err(invalid(
            Some(1),
            "a compose file is a mapping with `services:` at the top".into(),
        ));
    }
    Ok(v)
}

/// Interpolate every string value (not keys) of the document, as Compose does.
pub fn interpolate_tree(
    v: &mut Value,
    vars: &HashMap<String, String>,
    text: &str,
    display: &str,
    findings: &mut Vec<Finding>,
    problems: &mut Vec<Problem>,
) {
    let mut unset: Vec<(String, Vec<Seg>)> = Vec::new();
    let mut path = Vec::new();
    walk(v, vars, &mut path, &mut unset, problems, text, display);
    let mut seen = std::collections::BTreeSet::new();
    for (name, p) in unset {
        if seen.insert(name.clone()) {
            findings.push(Finding {
                file: display.to_string(),
                line: line_of(text, &p),
                path: super::locate::display(&p),
                message: format!("uses variable {name}, which is not set: using an empty string"),
            });
        }
    }
}

fn walk(
    v: &mut Value,
    vars: &HashMap<String, String>,
    path: &mut Vec<Seg>,
    unset: &mut Vec<(String, Vec<Seg>)>,
    problems: &mut Vec<Problem>,
    text: &str,
    display: &str,
) {
    match v {
        Value::String(s) => match interpolate(s, &|n| vars.get(n).cloned()) {
            Ok((out, missing)) => {
                *s = out;
                unset.extend(missing.into_iter().map(|m| (m, path.clone())));
            }
            Err(m) => problems.push(Problem {
                file: display.to_string(),
                line: line_of(text, path),
                message: format!("{}: {m}", super::locate::display(path)),
            }),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Seg::Index(i));
                walk(item, vars, path, unset, problems, text, display);
                path.pop();
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m.iter_mut() {
                path.push(Seg::Key(key_text(k)));
                walk(item, vars, path, unset, problems, text, display);
                path.pop();
            }
        }
        Value::Tagged(t) => walk(&mut t.value, vars, path, unset, problems, text, display),
        _ => {}
    }
}

/// A mapping key as text.
pub fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        _ => "?".into(),
    }
}

/// `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`,
/// `${VAR:+alt}`, `${VAR+alt}`, `$$` (a literal `$`). Returns the text and the names used
/// unset with no default.
pub fn interpolate(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Vec<String>), String> {
    let mut out = String::new();
    let mut missing = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some('{') => {
                // Find the matching `}` (defaults may nest `${…}`).
                let mut depth = 0usize;
                let mut j = i + 1;
                let end = loop {
                    match chars.get(j) {
                        None => return Err(format!("`{s}` has a `${{` with no closing `}}`")),
                        Some('{') => depth += 1,
                        Some('}') => {
                            depth -= 1;
                            if depth == 0 {
                                break j;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                };
                let inner: String = chars[i + 2..end].iter().collect();
                let (value, mut miss) = expand(&inner, lookup, s)?;
                out.push_str(&value);
                missing.append(&mut miss);
                i = end + 1;
            }
            Some(n) if n.is_ascii_alphabetic() || *n == '_' => {
                let mut j = i + 1;
                while chars
                    .get(j)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    j += 1;
                }
                let name: String = chars[i + 1..j].iter().collect();
                match lookup(&name) {
                    Some(v) => out.push_str(&v),
                    None => missing.push(name),
                }
                i = j;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok((out, missing))
}

fn expand(
    inner: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    whole: &str,
) -> Result<(String, Vec<String>), String> {
    let name_end = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    let name = &inner[..name_end];
    if !valid_var(name) {
        return Err(format!("invalid interpolation `${{{inner}}}` in `{whole}`"));
    }
    let op = &inner[name_end..];
    let value = lookup(name);
    let set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
    let nested = |t: &str| interpolate(t, lookup);
    let (result, missing) = if op.is_empty() {
        match value {
            Some(v) => (v, vec![]),
            None => (String::new(), vec![name.to_string()]),
        }
    } else if let Some(d) = op.strip_prefix(":-") {
        if set_nonempty {
            (value.unwrap_or_default(), vec![])
        } else {
            nested(d)?
        }
    } else if let Some(d) = op.strip_prefix('-') {
        match value {
            Some(v) => (v, vec![]),
            None => nested(d)?,
        }
    } else if let Some(m) = op.strip_prefix(":?") {
        if set_nonempty {
            (value.unwrap_or_default(), vec![])
        } else {
            return Err(format!("required variable {name} is missing a value: {m}"));
        }
    } else if let Some(m) = op.strip_prefix('?') {
        match value {
            Some(v) => (v, vec![]),
            None => return Err(format!("required variable {name} is missing a value: {m}")),
        }
    } else if let Some(a) = op.strip_prefix(":+") {
        if set_nonempty {
            nested(a)?
        } else {
            (String::new(), vec![])
        }
    } else if let Some(a) = op.strip_prefix('+') {
        if value.is_some() {
            nested(a)?
        } else {
            (String::new(), vec![])
        }
    } else {
        return Err(format!("invalid interpolation `${{{inner}}}` in `{whole}`"));
    };
    Ok((result, missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(n: &str) -> Option<String> {
        match n {
            "TAG" => Some("1.2".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn interpolation_follows_compose() {
        let i = |s: &str| interpolate(s, &look).map(|r| r.0);
        assert_eq!(i("app:${TAG}").unwrap(), "app:1.2");
        assert_eq!(i("app:$TAG-x").unwrap(), "app:1.2-x");
        assert_eq!(i("${NOPE:-dflt}").unwrap(), "dflt");
        assert_eq!(i("${EMPTY:-dflt}").unwrap(), "dflt");
        assert_eq!(i("${EMPTY-dflt}").unwrap(), "");
        assert_eq!(i("${NOPE-dflt}").unwrap(), "dflt");
        assert_eq!(i("${NOPE:-${TAG}}").unwrap(), "1.2");
        assert_eq!(i("${TAG:+set}").unwrap(), "set");
        assert_eq!(i("${NOPE:+set}").unwrap(), "");
        assert_eq!(i("cost $$5").unwrap(), "cost $5");
        assert_eq!(i("a $ b").unwrap(), "a $ b");
        assert!(i("${NOPE:?give it}").unwrap_err().contains("give it"));
        assert!(i("${EMPTY:?x}").is_err());
        assert_eq!(i("${EMPTY?x}").unwrap(), "");
        assert!(i("${TAG").is_err());
        assert!(i("${1X}").is_err());
        assert!(i("${TAG!}").is_err());
        let (s, missing) = interpolate("${NOPE}/$ALSO", &look).unwrap();
        assert_eq!(s, "/");
        assert_eq!(missing, vec!["NOPE".to_string(), "ALSO".to_string()]);
    }

    proptest::proptest! {
        #[test]
        fn interpolation_never_panics_and_plain_text_is_kept(s in "[a-z ${}:?+$_-]{0,30}", plain in "[a-z /.:-]{0,30}") {
            let _ = interpolate(&s, &look);
            proptest::prop_assert_eq!(interpolate(&plain, &look).unwrap().0, plain);
        }
    }

    #[test]
    fn project_names_and_env_files() {
        assert_eq!(normalize_project("My App.v2"), "myappv2");
        assert_eq!(normalize_project("_x-Y_"), "x-y_");
        let env =
            parse_env_text("# c\nA=1\nexport B = two \nC=\"q w\"\nD='x'\nE=v # note\nBARE\n\n")
                .unwrap();
        assert_eq!(
            env,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two".into()),
                ("C".into(), "q w".into()),
                ("D".into(), "x".into()),
                ("E".into(), "v".into()),
            ]
        );
        assert_eq!(parse_env_text("A=1\n1X=2\n").unwrap_err().0, 2);
        assert_eq!(parse_env_text("what is this\n").unwrap_err().0, 1);
    }
}
