//! A source's inventory (`/berth/inventories/NAME`): the objects it owns.

use serde::{Deserialize, Serialize};

use crate::manifest::Document;
use crate::model::{keys, Kind};

use super::kind_serde;

/// Where a source's inventory lives.
pub fn inventory_key(source: &str) -> String {
    format!("{}inventories/{source}", keys::ROOT)
}

/// An object by kind and name (a task definition by its family).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    #[serde(with = "kind_serde")]
    pub kind: Kind,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        ObjectRef {
            kind,
            name: name.into(),
        }
    }

    pub fn of(doc: &Document) -> Self {
        ObjectRef::new(doc.kind(), doc.name())
    }
}

/// Prune order: what uses things goes before what it uses (services before their task
/// definitions, everything before clusters).
fn prune_rank(k: Kind) -> u8 {
    match k {
        Kind::Service => 1,
        Kind::TaskDefinition => 2,
        Kind::Cluster => 3,
        _ => 0,
    }
}

impl Ord for ObjectRef {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (prune_rank(self.kind), self.kind.as_str(), &self.name).cmp(&(
            prune_rank(other.kind),
            other.kind.as_str(),
            &other.name,
        ))
    }
}

impl PartialOrd for ObjectRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            self.kind.as_str().to_ascii_lowercase(),
            self.name
        )
    }
}

/// What a source owns in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    pub source: String,
    pub objects: Vec<ObjectRef>,
}
