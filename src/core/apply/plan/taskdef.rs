//! Task definitions: registering a new revision when a family's manifest changed, and
//! resolving a service's reference against the set being applied and the store.

use std::collections::HashMap;

use crate::apply::codec::{decode, encode};
use crate::apply::error::ApplyError;
use crate::apply::meta::{merged_annotations, meta_diff, MetaDiff};
use crate::apply::reader::Reader;
use crate::apply::report::{ObjectResult, Outcome};
use crate::manifest::Document;
use crate::model::{self, keys, Kind, TaskDefinition, TaskDefinitionSpec, TaskDefinitionStatus};
use crate::store::{KeyValue, Op};

/// A family as it will be after this apply.
pub struct FamilyAfter {
    latest: u32,
    spec: TaskDefinitionSpec,
    stored: Vec<KeyValue>,
}

/// What a service's reference resolves to: `family:N`, its spec, and whether it is ACTIVE.
pub type Resolved = (String, TaskDefinitionSpec, bool);

/// The revision number of a task definition key (`…/web/00000004` → 4).
fn revision_of(kv: &KeyValue) -> Option<u32> {
    kv.key.rsplit('/').next()?.parse().ok()
}

/// Plan one TaskDefinition document: unchanged, relabelled, or a new revision.
pub async fn plan_taskdef(
    r: &mut Reader<'_>,
    doc: &Document,
    want: &TaskDefinition,
    stamped: bool,
    now: chrono::DateTime<chrono::Utc>,
    ops: &mut Vec<Op>,
) -> Result<(ObjectResult, FamilyAfter), ApplyError> {
    let family = want.metadata.name.as_str();
    let stored = r.family(family).await?;
    let latest = match stored.last() {
        Some(kv) => {
            let td: TaskDefinition = decode(kv)?;
            let rev = revision_of(kv).unwrap_or(td.status.revision);
            Some((rev, td, kv.key.clone()))
        }
        None => None,
    };
    // A new revision when the spec, labels or the user's annotations changed (or the
    // family was deleted); a change of owner alone relabels the latest revision.
    let diff = latest.as_ref().map(|(_, td, _)| {
        if td.spec != want.spec || td.status.status == "INACTIVE" {
            MetaDiff::User
        } else {
            meta_diff(&td.metadata, &want.metadata, stamped)
        }
    });
    let (rev, outcome) = match latest {
        Some((rev, _, _)) if diff == Some(MetaDiff::Same) => (rev, Outcome::Unchanged),
        Some((rev, mut td, key)) if diff == Some(MetaDiff::Ownership) => {
            td.metadata.annotations = merged_annotations(
                Some(&td.metadata.annotations),
                &want.metadata.annotations,
                stamped,
            );
            ops.push(Op::put(key, encode(&mut td)));
            (rev, Outcome::Configured)
        }
        _ => {
            let rev = latest.as_ref().map_or(0, |(rev, _, _)| *rev) + 1;
            let key = keys::taskdef_key(family, rev);
            r.compares.insert(key.clone(), 0);
            let mut td: TaskDefinition = want.clone();
            td.metadata.annotations = merged_annotations(
                latest.as_ref().map(|(_, td, _)| &td.metadata.annotations),
                &want.metadata.annotations,
                stamped,
            );
            td.metadata.name = format!("{family}:{rev}");
            td.metadata.uid = model::new_id();
            td.metadata.created_at = Some(now);
            td.status = TaskDefinitionStatus {
                family: family.to_string(),
                revision: rev,
                status: "ACTIVE".into(),
                registered_at: Some(now),
            };
            ops.push(Op::put(key, encode(&mut td)));
            (rev, Outcome::Created)
        }
    };
    let result = ObjectResult {
        kind: Kind::TaskDefinition,
        name: format!("{family}:{rev}"),
        outcome,
        source: Some(doc.source.clone()),
    };
    let after = FamilyAfter {
        latest: rev,
        spec: want.spec.clone(),
        stored,
    };
    Ok((result, after))
}

/// Resolve a service's `reference` (`family`, or `family:N` when `pinned`): a family in the
/// set as it will be after this apply, otherwise as stored (its latest revision, whatever its
/// status, so that an INACTIVE one is reported as such). `Err(message)`: no such definition.
pub async fn resolve(
    r: &mut Reader<'_>,
    families: &HashMap<String, FamilyAfter>,
    reference: &str,
    family: &str,
    pinned: Option<u32>,
) -> Result<Result<Resolved, String>, ApplyError> {
    if let Some(fam) = families.get(family) {
        return Ok(match pinned {
            None => Ok((format!("{family}:{}", fam.latest), fam.spec.clone(), true)),
            Some(n) if n == fam.latest => Ok((reference.to_string(), fam.spec.clone(), true)),
            Some(n) => match fam.stored.iter().find(|kv| revision_of(kv) == Some(n)) {
                Some(kv) => {
                    let td: TaskDefinition = decode(kv)?;
                    let active = td.status.status != "INACTIVE";
                    Ok((reference.to_string(), td.spec, active))
                }
                None => Err(format!(
                    "task definition `{reference}` does not exist (the latest revision of `{family}` is {})",
                    fam.latest
                )),
            },
        });
    }
    let stored = r.family(family).await?;
    let found = match pinned {
        None => stored.last(),
        Some(n) => stored.iter().find(|kv| revision_of(kv) == Some(n)),
    };
    Ok(match found {
        Some(kv) => {
            let td: TaskDefinition = decode(kv)?;
            let active = td.status.status != "INACTIVE";
            let rev = revision_of(kv).unwrap_or(td.status.revision);
            Ok((format!("{family}:{rev}"), td.spec, active))
        }
        None => Err(match stored.last().and_then(revision_of) {
            None => format!(
                "task definition family `{family}` does not exist: define it in the manifests (kind: TaskDefinition) or register it first"
            ),
            Some(latest) => format!(
                "task definition `{reference}` does not exist (the latest revision of `{family}` is {latest})"
            ),
        }),
    })
}
