//! Locating errors after the fact: an error that names a document and a field but no position
//! gets the line and column of that field, found by walking the text again.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::bounded::KeySeed;
use crate::manifest::error::ManifestError;

/// Errors per file that get a line/column looked up after the fact (each lookup re-reads the text).
const MAX_LOCATE: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Yaml,
    Json,
}

/// How a document was written, to map an object's field path back to the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `apiVersion`/`kind`/`metadata`/`spec`.
    Envelope,
    /// A plain ECS task definition (`family` + `containerDefinitions`), possibly wrapped in
    /// `{"taskDefinition": {...}}` as `aws ecs describe-task-definition` prints it.
    Ecs { wrapped: bool },
}

/// What is remembered about a parsed file to locate errors found later.
#[derive(Debug, Clone)]
pub(crate) struct FileInfo {
    pub format: Format,
    /// A JSON array of objects: document n is element n-1.
    pub json_array: bool,
    pub origins: HashMap<usize, Origin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `spec.containerDefinitions[0].image` → [spec, containerDefinitions, 0, image].
fn parse_path(field: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in field.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() && name != "?" {
            out.push(Seg::Key(name.to_string()));
        }
        while let Some(r) = rest.strip_prefix('[') {
            match r.split_once(']') {
                Some((idx, tail)) => {
                    if let Ok(i) = idx.parse() {
                        out.push(Seg::Index(i));
                    }
                    rest = tail;
                }
                None => break,
            }
        }
    }
    out
}

/// The object's field path → the path in the text as written.
fn text_path(origin: Origin, field: &str) -> Vec<Seg> {
    let segs = parse_path(field);
    match origin {
        Origin::Envelope => segs,
        Origin::Ecs { wrapped } => {
            let mut out = Vec::new();
            if wrapped {
                out.push(Seg::Key("taskDefinition".into()));
            }
            match segs.split_first() {
                Some((Seg::Key(k), rest)) if k == "spec" => out.extend(rest.iter().cloned()),
                Some((Seg::Key(k), rest)) if k == "metadata" => match rest.first() {
                    Some(Seg::Key(n)) if n == "name" => out.push(Seg::Key("family".into())),
                    Some(Seg::Key(n)) if n == "labels" => out.push(Seg::Key("tags".into())),
                    _ => {}
                },
                _ => {}
            }
            out
        }
    }
}

/// Fill in line/column for errors that name a document (and maybe a field) but no position.
pub(crate) fn locate_errors(text: &str, info: &FileInfo, errors: &mut [ManifestError]) {
    let mut budget = MAX_LOCATE;
    for e in errors.iter_mut() {
        if e.line.is_some() {
            continue;
        }
        let Some(doc) = e.document else { continue };
        if budget == 0 {
            break;
        }
        budget -= 1;
        let origin = info.origins.get(&doc).copied().unwrap_or(Origin::Envelope);
        let path = text_path(origin, e.field.as_deref().unwrap_or(""));
        if let Some((l, c)) = locate(text, info, doc, &path) {
            e.line = Some(l);
            e.column = Some(c);
        }
    }
}

const LOCATED: &str = "\u{0}located";

fn locate(text: &str, info: &FileInfo, document: usize, path: &[Seg]) -> Option<(usize, usize)> {
    catch_unwind(AssertUnwindSafe(|| {
        locate_inner(text, info, document, path)
    }))
    .ok()
    .flatten()
}

fn locate_inner(
    text: &str,
    info: &FileInfo,
    document: usize,
    path: &[Seg],
) -> Option<(usize, usize)> {
    match info.format {
        Format::Yaml => {
            let de = serde_yaml::Deserializer::from_str(text).nth(document.checked_sub(1)?)?;
            let err = Locate { path }.deserialize(de).err()?;
            err.location().map(|l| (l.line(), l.column()))
        }
        Format::Json => {
            let mut full = Vec::with_capacity(path.len() + 1);
            if info.json_array {
                full.push(Seg::Index(document.checked_sub(1)?));
            }
            full.extend(path.iter().cloned());
            let mut de = serde_json::Deserializer::from_str(text);
            let err = Locate { path: &full }.deserialize(&mut de).err()?;
            (err.line() > 0).then(|| (err.line(), err.column()))
        }
    }
}

/// Walks to `path` and fails there, so the deserializer attaches the position of that value
/// (or of the deepest enclosing value that exists).
struct Locate<'p> {
    path: &'p [Seg],
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("anything")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(LOCATED))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(LOCATED))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(LOCATED))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(LOCATED))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(LOCATED))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(LOCATED))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(LOCATED))
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some((Seg::Index(want), rest)) = self.path.split_first() {
            let mut i = 0;
            loop {
                if i == *want {
                    seq.next_element_seed(Locate { path: rest })?;
                    break;
                }
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
                i += 1;
            }
        }
        Err(de::Error::custom(LOCATED))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if let Some((Seg::Key(want), rest)) = self.path.split_first() {
            let mut seen = BTreeSet::new();
            while let Some(k) = map.next_key_seed(KeySeed)? {
                if &k == want && seen.insert(k) {
                    map.next_value_seed(Locate { path: rest })?;
                    break;
                }
                map.next_value::<IgnoredAny>()?;
            }
        }
        Err(de::Error::custom(LOCATED))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(format: Format) -> FileInfo {
        FileInfo {
            format,
            json_array: false,
            origins: HashMap::new(),
        }
    }

    #[test]
    fn paths_parse() {
        assert_eq!(
            parse_path("spec.containerDefinitions[0].portMappings[12].hostPort"),
            vec![
                Seg::Key("spec".into()),
                Seg::Key("containerDefinitions".into()),
                Seg::Index(0),
                Seg::Key("portMappings".into()),
                Seg::Index(12),
                Seg::Key("hostPort".into()),
            ]
        );
        assert_eq!(parse_path(""), vec![]);
        assert_eq!(
            parse_path("[3].kind"),
            vec![Seg::Index(3), Seg::Key("kind".into())]
        );
    }

    #[test]
    fn ecs_paths_map_back_to_the_text() {
        let o = Origin::Ecs { wrapped: true };
        assert_eq!(
            text_path(o, "spec.containerDefinitions[1].image"),
            parse_path("taskDefinition.containerDefinitions[1].image")
        );
        assert_eq!(
            text_path(Origin::Ecs { wrapped: false }, "metadata.name"),
            parse_path("family")
        );
    }

    #[test]
    fn locate_yaml_fields_in_later_documents() {
        let text =
            "a: 1\n---\nkind: X\nspec:\n  list:\n    - {x: 1}\n    - x: 2\n      y: [1, 2]\n";
        let i = info(Format::Yaml);
        assert_eq!(locate(text, &i, 2, &parse_path("kind")), Some((3, 7)));
        assert_eq!(
            locate(text, &i, 2, &parse_path("spec.list[1].y")),
            Some((8, 10))
        );
        assert_eq!(
            locate(text, &i, 2, &parse_path("spec.list[0].x")),
            Some((6, 11))
        );
        // A missing field: the enclosing mapping.
        assert_eq!(
            locate(text, &i, 2, &parse_path("spec.list[1].z")).map(|p| p.0),
            Some(7)
        );
        assert_eq!(locate(text, &i, 1, &[]), Some((1, 1)));
        assert_eq!(locate(text, &i, 9, &[]), None);
    }

    #[test]
    fn locate_json_fields() {
        let text =
            "[\n {\"kind\": \"A\"},\n {\n  \"kind\": \"B\",\n  \"spec\": {\"x\": [1, 2]}\n }\n]";
        let mut i = info(Format::Json);
        i.json_array = true;
        assert_eq!(
            locate(text, &i, 2, &parse_path("kind")).map(|p| p.0),
            Some(4)
        );
        assert_eq!(
            locate(text, &i, 2, &parse_path("spec.x[1]")).map(|p| p.0),
            Some(5)
        );
        assert_eq!(
            locate(text, &i, 1, &parse_path("kind")).map(|p| p.0),
            Some(2)
        );
    }
}
