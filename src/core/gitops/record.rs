//! A source's sync status record, `/berth/sources/NAME`: what `berth sync status` and
//! `GET /v1/sources` show.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::apply::{Extraneous, ObjectResult, Outcome, SourceReport};
use crate::manifest::ManifestError;
use crate::model::{keys, Metadata, Object, API_VERSION};

pub const SYNCED: &str = "Synced";
pub const OUT_OF_SYNC: &str = "OutOfSync";
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";

pub fn sources_prefix() -> String {
    format!("{}sources/", keys::ROOT)
}

pub fn source_key(name: &str) -> String {
    format!("{}{name}", sources_prefix())
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// `git` (a folder in a git work tree, watched), `folder` (watched, no git) or `apply`
    /// (`berth apply --prune` from a client).
    pub kind: String,
    pub path: String,
    #[serde(default)]
    pub prune: bool,
    #[serde(default)]
    pub self_heal: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// `Synced` (the store matches the folder) or `OutOfSync`.
    #[serde(default)]
    pub sync: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The folder as last read: its HEAD commit and whether it had uncommitted changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    #[serde(default)]
    pub dirty: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied: Option<Applied>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<Attempt>,
    /// Per manifest object: its last result and whether the store still matches it.
    #[serde(default)]
    pub objects: Vec<ObjectState>,
    /// Owned objects no longer in the folder and not (yet) pruned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extraneous: Vec<Extraneous>,
}

/// The last successful apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default)]
    pub dirty: bool,
    pub at: DateTime<Utc>,
    /// Objects created, configured or pruned by it.
    pub changes: usize,
}

/// The last apply attempted (successful or not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default)]
    pub dirty: bool,
    pub at: DateTime<Utc>,
    /// `Succeeded` or `Failed`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ManifestError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectState {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// `Synced` or `OutOfSync`.
    pub sync: String,
    /// What the last apply did (`created`, `configured`, `unchanged`, `pruned`) or, when
    /// OutOfSync, what applying would do.
    pub result: String,
}

impl ObjectState {
    pub fn from_result(r: &ObjectResult, sync: &str) -> Self {
        ObjectState {
            kind: r.kind.as_str().to_string(),
            name: r.name.clone(),
            file: r.source.as_ref().map(|s| s.file.clone()),
            document: r.source.as_ref().map(|s| s.document),
            sync: sync.to_string(),
            result: r.outcome.as_str().to_string(),
        }
    }
}

pub type SourceRecord = Object<SourceSpec, SourceStatus>;

pub fn new_record(name: &str, spec: SourceSpec) -> SourceRecord {
    Object {
        api_version: API_VERSION.to_string(),
        kind: "Source".to_string(),
        metadata: Metadata {
            name: name.to_string(),
            ..Default::default()
        },
        spec,
        status: SourceStatus::default(),
    }
}

/// Whether `next` says anything `prev` does not (timestamps alone do not count), so that an
/// idle source never rewrites its record.
pub fn differs(prev: Option<&SourceRecord>, next: &SourceRecord) -> bool {
    let Some(prev) = prev else {
        return true;
    };
    let strip = |r: &SourceRecord| {
        let mut r = r.clone();
        r.metadata.revision = 0;
        let epoch = DateTime::<Utc>::default();
        if let Some(a) = &mut r.status.last_applied {
            a.at = epoch;
        }
        if let Some(a) = &mut r.status.last_attempt {
            a.at = epoch;
        }
        r
    };
    strip(prev) != strip(next)
}

pub fn encode(r: &SourceRecord) -> Vec<u8> {
    let mut r = r.clone();
    r.metadata.revision = 0;
    r.to_bytes()
}

/// The record after a successful apply of `report`. `new_content`: the folder (or HEAD) changed
/// since the last apply, so this is a new attempt worth a new timestamp.
pub fn after_apply(
    prev: Option<&SourceRecord>,
    base: SourceRecord,
    head: Option<String>,
    dirty: bool,
    report: &SourceReport,
    new_content: bool,
) -> SourceRecord {
    let now = crate::model::now();
    let mut r = base;
    let changes = report.changes();
    let prev_status = prev.map(|p| p.status.clone()).unwrap_or_default();
    r.status = SourceStatus {
        sync: if report.extraneous.is_empty() {
            SYNCED.into()
        } else {
            OUT_OF_SYNC.into()
        },
        message: if !report.extraneous.is_empty() {
            format!(
                "{} object(s) not in the manifests any more were left in place (see extraneous)",
                report.extraneous.len()
            )
        } else if !new_content && changes > 0 {
            format!("self-heal: put back {changes} object(s) changed outside the source")
        } else if !new_content && prev_status.message.starts_with("self-heal") {
            // Keep telling the last self-heal until new content is applied.
            prev_status.message.clone()
        } else {
            String::new()
        },
        head: head.clone(),
        dirty,
        last_applied: if changes > 0 || new_content || prev_status.last_applied.is_none() {
            Some(Applied {
                commit: head.clone(),
                dirty,
                at: now,
                changes,
            })
        } else {
            prev_status.last_applied.clone()
        },
        last_attempt: if new_content
            || prev_status
                .last_attempt
                .as_ref()
                .is_none_or(|a| a.result != SUCCEEDED)
        {
            Some(Attempt {
                commit: head,
                dirty,
                at: now,
                result: SUCCEEDED.into(),
                errors: vec![],
            })
        } else {
            prev_status.last_attempt.clone()
        },
        objects: report
            .results
            .iter()
            .filter(|o| o.outcome != Outcome::Pruned)
            .map(|o| ObjectState::from_result(o, SYNCED))
            .collect(),
        extraneous: report.extraneous.clone(),
    };
    r
}

/// The record after a failed attempt: the last good state stays applied; the errors say why.
pub fn after_failure(
    prev: Option<&SourceRecord>,
    base: SourceRecord,
    head: Option<String>,
    dirty: bool,
    errors: Vec<ManifestError>,
) -> SourceRecord {
    let mut r = base;
    let prev_status = prev.map(|p| p.status.clone()).unwrap_or_default();
    let good = match &prev_status.last_applied {
        Some(Applied {
            commit: Some(c), ..
        }) => format!("commit {} is still applied", super::git::short(c)),
        Some(_) => "the last good state is still applied".to_string(),
        None => "nothing from this source has been applied yet".to_string(),
    };
    let at = match &prev_status.last_attempt {
        // The same failure again keeps its first timestamp.
        Some(a) if a.result == FAILED && a.commit == head && a.errors == errors => a.at,
        _ => crate::model::now(),
    };
    r.status = SourceStatus {
        sync: OUT_OF_SYNC.into(),
        message: format!(
            "sync failed with {} error(s); nothing was applied; {good}",
            errors.len()
        ),
        head: head.clone(),
        dirty,
        last_applied: prev_status.last_applied,
        last_attempt: Some(Attempt {
            commit: head,
            dirty,
            at,
            result: FAILED.into(),
            errors,
        }),
        objects: prev_status.objects,
        extraneous: prev_status.extraneous,
    };
    r
}

/// The record after a comparison (a dry run) with no apply: drift shows as OutOfSync objects.
pub fn after_compare(
    prev: Option<&SourceRecord>,
    base: SourceRecord,
    head: Option<String>,
    dirty: bool,
    report: &SourceReport,
) -> SourceRecord {
    let mut r = base;
    let prev_status = prev.map(|p| p.status.clone()).unwrap_or_default();
    let prev_result = |o: &ObjectResult| {
        prev_status
            .objects
            .iter()
            .find(|p| {
                p.kind == o.kind.as_str() && p.name.split(':').next() == o.name.split(':').next()
            })
            .map(|p| p.result.clone())
    };
    let objects: Vec<ObjectState> = report
        .results
        .iter()
        .map(|o| {
            if o.outcome == Outcome::Unchanged {
                let mut s = ObjectState::from_result(o, SYNCED);
                s.result = prev_result(o).unwrap_or(s.result);
                s
            } else {
                ObjectState::from_result(o, OUT_OF_SYNC)
            }
        })
        .collect();
    let drifted = objects.iter().filter(|o| o.sync == OUT_OF_SYNC).count();
    let in_sync = report.in_sync();
    r.status = SourceStatus {
        sync: if in_sync {
            SYNCED.into()
        } else {
            OUT_OF_SYNC.into()
        },
        message: if drifted > 0 {
            format!(
                "{drifted} object(s) differ from the manifests (changed outside the source){}",
                if r.spec.self_heal {
                    ""
                } else {
                    "; start with --self-heal to put them back automatically"
                }
            )
        } else if !report.extraneous.is_empty() {
            format!(
                "{} object(s) not in the manifests any more were left in place (see extraneous)",
                report.extraneous.len()
            )
        } else {
            String::new()
        },
        head,
        dirty,
        last_applied: prev_status.last_applied,
        last_attempt: prev_status.last_attempt,
        objects,
        extraneous: report.extraneous.clone(),
    };
    r
}

/// The record when comparing failed (e.g. a service of the folder is being deleted in the
/// store).
pub fn after_compare_error(
    prev: Option<&SourceRecord>,
    base: SourceRecord,
    head: Option<String>,
    dirty: bool,
    message: String,
) -> SourceRecord {
    let mut r = base;
    let prev_status = prev.map(|p| p.status.clone()).unwrap_or_default();
    r.status = SourceStatus {
        sync: OUT_OF_SYNC.into(),
        message,
        head,
        dirty,
        ..prev_status
    };
    r
}
