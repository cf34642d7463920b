//! Reading Compose's loose value shapes: scalars written as numbers or strings, a command as a
//! string (split like a shell) or a list, `KEY=VALUE` lists or maps.

use serde_yaml::Value;

use super::locate::Seg;

/// A string, number or boolean as text.
pub fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A list of scalars.
pub fn scalar_list(v: &Value) -> Option<Vec<String>> {
    v.as_sequence()?.iter().map(scalar).collect()
}

/// A string or a list of strings (`env_file`, `tmpfs`, `cap_add` …).
pub fn one_or_many(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Sequence(_) => scalar_list(v),
        other => scalar(other).map(|s| vec![s]),
    }
}

/// `command`/`entrypoint`: a string is split as a shell would (quotes, backslashes); a list is
/// taken as it is.
pub fn command(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Null => Ok(vec![]),
        Value::String(s) => split_shell(s),
        Value::Sequence(_) => {
            scalar_list(v).ok_or_else(|| "must be a string or a list of strings".to_string())
        }
        _ => Err("must be a string or a list of strings".into()),
    }
}

/// Split like a POSIX shell (no expansion): whitespace separates, `'…'` is literal, `"…"` keeps
/// `\"`, `\\` and `\$` escapes, a backslash outside quotes escapes the next character.
pub fn split_shell(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match it.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unclosed ' in `{s}`")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match it.next() {
                        Some('"') => break,
                        Some('\\') => match it.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => cur.push(e),
                            Some(e) => {
                                cur.push('\\');
                                cur.push(e);
                            }
                            None => return Err(format!("unclosed \" in `{s}`")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unclosed \" in `{s}`")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = it.next() {
                    cur.push(n);
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// `environment`/`labels`: a list of `KEY=VALUE` (or bare `KEY`) or a map; `None` values are
/// bare keys (Compose takes those from the environment).
pub fn key_values(v: &Value) -> Result<Vec<(String, Option<String>, Seg)>, String> {
    match v {
        Value::Null => Ok(vec![]),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let s = scalar(item).ok_or("list items must be KEY=VALUE strings")?;
                Ok(match s.split_once('=') {
                    Some((k, val)) => (k.to_string(), Some(val.to_string()), Seg::Index(i)),
                    None => (s.clone(), None, Seg::Index(i)),
                })
            })
            .collect(),
        Value::Mapping(m) => m
            .iter()
            .map(|(k, val)| {
                let k = super::source::key_text(k);
                let val = match val {
                    Value::Null => None,
                    other => Some(scalar(other).ok_or(format!(
                        "the value of `{k}` must be a string, number or boolean"
                    ))?),
                };
                Ok((k.clone(), val, Seg::Key(k)))
            })
            .collect(),
        _ => Err("must be a list of KEY=VALUE or a mapping".into()),
    }
}

/// A whole number (written as a number or a string).
pub fn whole(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_split() {
        assert_eq!(
            split_shell("httpd -f -p 8080").unwrap(),
            ["httpd", "-f", "-p", "8080"]
        );
        assert_eq!(
            split_shell(r#"sh -c 'echo "hi there"; sleep 1' "a\"b" c\ d"#).unwrap(),
            ["sh", "-c", "echo \"hi there\"; sleep 1", "a\"b", "c d"]
        );
        assert_eq!(split_shell("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split_shell("''").unwrap(), [""]);
        assert!(split_shell("echo 'x").is_err());
        assert!(split_shell("echo \"x").is_err());
    }
}
