//! The line of a key in the compose text, found after the fact by walking the text to it (the
//! way `manifest::parse` locates its errors): serde_yaml attaches the position of whatever a
//! deserializer fails on, so the walk fails on the key itself. Only warnings and errors look a
//! line up, so the re-reading costs nothing on a clean file.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a path into the compose document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl Seg {
    pub fn key(k: &str) -> Seg {
        Seg::Key(k.to_string())
    }
}

/// `services.web.ports[1]`.
pub fn display(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The 1-based line of the last step of `path` (a key's own line, a list item's line); the
/// nearest enclosing value's line when the step is not in the text (a merged `<<` key).
pub fn line_of(text: &str, path: &[Seg]) -> Option<usize> {
    catch_unwind(AssertUnwindSafe(|| {
        let de = serde_yaml::Deserializer::from_str(text);
        let err = Locate { path }.deserialize(de).err()?;
        err.location().map(|l| l.line())
    }))
    .ok()
    .flatten()
}

const LOCATED: &str = "\u{0}located";

struct Locate<'p> {
    path: &'p [Seg],
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! fail_scalar {
    ($($name:ident: $t:ty),*) => {$(
        fn $name<E: de::Error>(self, _: $t) -> Result<(), E> {
            Err(E::custom(LOCATED))
        }
    )*};
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("anything")
    }
    fail_scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
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
            while i < *want {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    return Err(de::Error::custom(LOCATED));
                }
                i += 1;
            }
            seq.next_element_seed(Locate { path: rest })?;
        }
        Err(de::Error::custom(LOCATED))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if let Some((Seg::Key(want), rest)) = self.path.split_first() {
            // The last step fails on the key, so the position is the key's line.
            let last = rest.is_empty();
            while let Some(found) = map.next_key_seed(Key {
                fail_on: last.then_some(want.as_str()),
            })? {
                if found == *want {
                    map.next_value_seed(Locate { path: rest })?;
                    break;
                }
                map.next_value::<IgnoredAny>()?;
            }
        }
        Err(de::Error::custom(LOCATED))
    }
}

/// A mapping key as text; fails on `fail_on`.
struct Key<'a> {
    fail_on: Option<&'a str>,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl Key<'_> {
    fn found<E: de::Error>(self, k: String) -> Result<String, E> {
        match self.fail_on {
            Some(f) if f == k => Err(E::custom(LOCATED)),
            _ => Ok(k),
        }
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        self.found(v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        self.found(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        self.found(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        self.found(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        self.found(v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        self.found("null".to_string())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Ok(String::new())
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Ok(String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[&str]) -> Vec<Seg> {
        s.iter()
            .map(|x| match x.parse::<usize>() {
                Ok(i) => Seg::Index(i),
                Err(_) => Seg::key(x),
            })
            .collect()
    }

    #[test]
    fn keys_and_items_have_their_own_lines() {
        let text = "services:\n  web:\n    image: x\n    build:\n      context: .\n    ports:\n      - \"80\"\n      - 81\n  db: {image: y, tty: true}\n";
        assert_eq!(line_of(text, &p(&["services", "web", "build"])), Some(4));
        assert_eq!(line_of(text, &p(&["services", "web", "image"])), Some(3));
        assert_eq!(
            line_of(text, &p(&["services", "web", "ports", "1"])),
            Some(8)
        );
        assert_eq!(line_of(text, &p(&["services", "db", "tty"])), Some(9));
        assert_eq!(line_of(text, &p(&["services", "db"])), Some(9));
        // Not in the text: the enclosing mapping.
        assert!(line_of(text, &p(&["services", "web", "nothing"])).is_some());
        assert_eq!(
            display(&p(&["services", "web", "ports", "1"])),
            "services.web.ports[1]"
        );
    }
}
