//! What an apply reports: one line per object, and for a source the objects it left in place.

use serde::{Deserialize, Serialize};

use crate::model::Kind;

use super::inventory::ObjectRef;
use super::kind_serde;

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
    Pruned,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
            Outcome::Pruned => "pruned",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of an apply's report. `name` is `family:N` for task definitions (the revision
/// registered, or the latest one when unchanged) and the plain family for a delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectResult {
    #[serde(with = "kind_serde")]
    pub kind: Kind,
    pub name: String,
    pub outcome: Outcome,
    /// The manifest document the object came from (absent for implicit objects and prunes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::manifest::Source>,
}

impl std::fmt::Display for ObjectResult {
    /// `service/web configured`, `taskdefinition/web:2 created`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} {}",
            self.kind.as_str().to_ascii_lowercase(),
            self.name,
            self.outcome
        )
    }
}

/// An extraneous object left in place, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extraneous {
    #[serde(with = "kind_serde")]
    pub kind: Kind,
    pub name: String,
    pub reason: String,
}

/// The result of one source apply (or its dry run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceReport {
    /// One line per manifest object (plus an implicitly created default cluster), then one per
    /// pruned object.
    pub results: Vec<ObjectResult>,
    /// Extraneous objects not pruned (prune off, or still in use).
    pub extraneous: Vec<Extraneous>,
    /// The source's inventory after this apply.
    pub inventory: Vec<ObjectRef>,
    /// The store revision of the transaction (None when nothing was written).
    pub committed: Option<i64>,
}

impl SourceReport {
    /// The store matches the manifests: every object unchanged and nothing extraneous.
    pub fn in_sync(&self) -> bool {
        self.extraneous.is_empty() && self.results.iter().all(|r| r.outcome == Outcome::Unchanged)
    }

    /// Objects that are (or, for a dry run, would be) created, configured or pruned.
    pub fn changes(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.outcome != Outcome::Unchanged)
            .count()
    }
}
