//! One file's text to documents: format detection, the two passes over YAML or JSON, and the
//! limits on documents per file.

use std::cell::Cell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::de::DeserializeSeed;
use serde_json::Value;

use super::bounded::{Bounded, MAX_DOCUMENTS, MAX_FILE_BYTES, MAX_NODES};
use super::classify::{classify, Plan};
use super::decode::{decode, yaml_error, Input};
use super::ecs::ecs_to_envelope;
use super::locate::{locate_errors, FileInfo, Format, Origin};
use crate::manifest::document::{Document, Source};
use crate::manifest::error::{improve_message, ManifestError};
use crate::model::Kind;

/// Parse one file's text. `file` names it in errors; a `.json` name (or, for names that are
/// neither `.yaml` nor `.yml`, text starting with `{` or `[`) selects JSON, anything else YAML.
/// Empty documents are skipped. Semantic checks are [`crate::manifest::validate`]'s job.
pub fn parse_str(text: &str, file: &str) -> Result<Vec<Document>, Vec<ManifestError>> {
    let (docs, errors, _) = parse_file(text, file);
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(errors)
    }
}

fn detect_format(text: &str, file: &str) -> Format {
    let lower = file.to_ascii_lowercase();
    if lower.ends_with(".json") {
        return Format::Json;
    }
    if lower.ends_with(".yaml") || lower.ends_with(".yml") {
        return Format::Yaml;
    }
    match text
        .trim_start_matches('\u{feff}')
        .trim_start()
        .chars()
        .next()
    {
        Some('{') | Some('[') => Format::Json,
        _ => Format::Yaml,
    }
}

/// Parse a file: documents, errors (located where possible) and what is needed to locate
/// errors found later.
pub(crate) fn parse_file(text: &str, file: &str) -> (Vec<Document>, Vec<ManifestError>, FileInfo) {
    let format = detect_format(text, file);
    let info = FileInfo {
        format,
        json_array: false,
        origins: HashMap::new(),
    };
    if text.len() > MAX_FILE_BYTES {
        let e = ManifestError::new(
            file,
            format!(
                "file is too large ({} bytes; the limit is {} MiB)",
                text.len(),
                MAX_FILE_BYTES >> 20
            ),
        );
        return (Vec::new(), vec![e], info);
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    // serde_yaml is unmaintained and has panicked on hostile input before: a panic in it must
    // become an error about this file, not take the server down.
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        let mut errors = Vec::new();
        let mut docs = Vec::new();
        let mut info = info.clone();
        match format {
            Format::Yaml => parse_yaml(text, file, &mut info, &mut docs, &mut errors),
            Format::Json => parse_json(text, file, &mut info, &mut docs, &mut errors),
        }
        // Classification errors come before the typed pass's: report in document order.
        errors.sort_by_key(|e| e.document.unwrap_or(0));
        locate_errors(text, &info, &mut errors);
        (docs, errors, info)
    }));
    match parsed {
        Ok(r) => r,
        Err(_) => {
            let e = ManifestError::new(
                file,
                "the parser failed on this file (an internal error, triggered by malformed input); check its syntax",
            );
            (Vec::new(), vec![e], info)
        }
    }
}

fn parse_yaml(
    text: &str,
    file: &str,
    info: &mut FileInfo,
    docs: &mut Vec<Document>,
    errors: &mut Vec<ManifestError>,
) {
    let budget = Cell::new(MAX_NODES);
    let mut values: Vec<(usize, Value)> = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        if n > MAX_DOCUMENTS {
            errors.push(ManifestError::new(
                file,
                format!("too many documents (the limit is {MAX_DOCUMENTS} per file)"),
            ));
            break;
        }
        let mut track = serde_path_to_error::Track::new();
        let r = Bounded { budget: &budget }
            .deserialize(serde_path_to_error::Deserializer::new(de, &mut track));
        match r {
            Ok(Value::Null) => {}
            Ok(v) => values.push((n, v)),
            Err(e) => {
                errors.push(yaml_error(file, n, &track.path().to_string(), e, false));
                // Stop here. After a syntax error (or an unknown anchor, even one behind an
                // error of ours) the parser is stuck mid-document: it would repeat the error
                // forever or hand out the rest of a broken document (serde_yaml then panics).
                break;
            }
        }
    }

    let mut plans: HashMap<usize, Plan> = HashMap::new();
    let mut ecs_values: HashMap<usize, Value> = HashMap::new();
    for (n, v) in values {
        let source = Source {
            file: file.to_string(),
            document: n,
        };
        match classify(&v, &source, errors) {
            Some(Plan::Typed(kind)) => {
                plans.insert(n, Plan::Typed(kind));
            }
            Some(Plan::Ecs { wrapped }) => {
                plans.insert(n, Plan::Ecs { wrapped });
                ecs_values.insert(n, v);
            }
            None => {}
        }
    }
    let Some(&last) = plans.keys().max() else {
        return;
    };

    // pass 2: typed, straight from the YAML events for exact positions.
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        if n > last {
            break;
        }
        let source = Source {
            file: file.to_string(),
            document: n,
        };
        let result = match plans.get(&n) {
            None => continue,
            Some(Plan::Typed(kind)) => {
                info.origins.insert(n, Origin::Envelope);
                decode(*kind, Input::Yaml(de), &source)
            }
            Some(Plan::Ecs { wrapped }) => {
                info.origins.insert(n, Origin::Ecs { wrapped: *wrapped });
                let v = ecs_values.remove(&n).unwrap_or(Value::Null);
                let env = ecs_to_envelope(v, *wrapped);
                decode(Kind::TaskDefinition, Input::Value(env), &source)
            }
        };
        match result {
            Ok(resource) => docs.push(Document { source, resource }),
            Err(e) => errors.push(e),
        }
    }
}

fn parse_json(
    text: &str,
    file: &str,
    info: &mut FileInfo,
    docs: &mut Vec<Document>,
    errors: &mut Vec<ManifestError>,
) {
    let budget = Cell::new(MAX_NODES);
    let mut de = serde_json::Deserializer::from_str(text);
    let mut track = serde_path_to_error::Track::new();
    let r = Bounded { budget: &budget }
        .deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track))
        .and_then(|v| de.end().map(|_| v));
    let value = match r {
        Ok(v) => v,
        Err(e) => {
            let mut me =
                ManifestError::new(file, json_message(&e)).with_field(track.path().to_string());
            if e.line() > 0 {
                me = me.with_location(e.line(), e.column());
            }
            errors.push(me);
            return;
        }
    };
    let values: Vec<(usize, Value)> = match value {
        Value::Array(items) => {
            info.json_array = true;
            if items.len() > MAX_DOCUMENTS {
                errors.push(ManifestError::new(
                    file,
                    format!("too many documents (the limit is {MAX_DOCUMENTS} per file)"),
                ));
                return;
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i + 1, v))
                .collect()
        }
        Value::Null => Vec::new(),
        v => vec![(1, v)],
    };
    for (n, v) in values {
        let source = Source {
            file: file.to_string(),
            document: n,
        };
        let result = match classify(&v, &source, errors) {
            None => continue,
            Some(Plan::Typed(kind)) => {
                info.origins.insert(n, Origin::Envelope);
                decode(kind, Input::Value(v), &source)
            }
            Some(Plan::Ecs { wrapped }) => {
                info.origins.insert(n, Origin::Ecs { wrapped });
                let env = ecs_to_envelope(v, wrapped);
                decode(Kind::TaskDefinition, Input::Value(env), &source)
            }
        };
        match result {
            Ok(resource) => docs.push(Document { source, resource }),
            Err(e) => errors.push(e),
        }
    }
}

fn json_message(e: &serde_json::Error) -> String {
    // serde_json appends " at line L column C"; the position is reported separately.
    let msg = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    improve_message(msg.strip_suffix(&suffix).unwrap_or(&msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(detect_format("{}", "a.yaml"), Format::Yaml);
        assert_eq!(detect_format("kind: x", "a.json"), Format::Json);
        assert_eq!(detect_format("\u{feff}  [1]", "-"), Format::Json);
        assert_eq!(detect_format("kind: x", "-"), Format::Yaml);
    }

    #[test]
    fn unknown_anchor_after_an_error_does_not_panic() {
        // serde_yaml panics if asked for the document after a broken one.
        let text = "kind: TaskDefinition\napiVersion: a\napiVersion: b\nb: *a\n---\nkind: x\n";
        let errors = parse_str(text, "p.yaml").unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(!errors[0].message.contains("internal error"));
        let errors = parse_str("a: 1\nb: *nope\n---\nc: 1\n", "p.yaml").unwrap_err();
        assert!(errors[0].message.contains("unknown anchor"), "{errors:?}");
    }
}
