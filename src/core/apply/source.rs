//! Source apply. A *source* is a named set of manifests applied as a whole: the folder
//! `berth up --manifests` watches, or a folder applied with `berth apply --prune`. Every object
//! it applies carries ownership annotations ([`ownership`]); its *inventory*
//! (`/berth/inventories/NAME`) lists what it owns. An object the source owns that is no longer
//! in its manifests is *extraneous*: pruned with `prune`, otherwise reported. The objects, the
//! prunes, the inventory and the source's status record are written in ONE transaction.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use crate::manifest::{validate, Document, ManifestError};
use crate::model::{keys, Kind};
use crate::store::{Op, Store};

use super::commit::{backoff, commit_at, MAX_ATTEMPTS};
use super::error::{err, ApplyError};
use super::inventory::{inventory_key, Inventory, ObjectRef};
use super::ownership;
use super::plan::plan_apply;
use super::prune::{owned_objects, plan_prune, prune_candidates};
use super::reader::Reader;
use super::report::SourceReport;
use super::safety;
use super::source_name::validate_source_name;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceApplyOptions {
    /// Plan and report, write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Prune extraneous objects (owned by the source, no longer in its manifests).
    #[serde(default)]
    pub prune: bool,
    /// Take over objects another source owns (otherwise such an apply is refused).
    #[serde(default)]
    pub take_over: bool,
    /// The control plane's data key, which seals Secrets (none: a Secret is refused).
    #[serde(skip)]
    pub secrets: Option<std::sync::Arc<crate::auth::secrets_key::SecretsKey>>,
}

/// Builds the source's status record for the apply's transaction, as (key, value); None leaves
/// it as it is.
pub type StatusWriter<'a> = dyn Fn(&SourceReport) -> Option<(String, Vec<u8>)> + Send + Sync + 'a;

/// Apply a source's documents as a whole: create/update what differs, prune (or report)
/// extraneous objects, update the inventory and write `status`'s record — one transaction, all
/// or nothing. Documents should be [stamped](crate::apply::stamp); an unstamped one is
/// stamped with `source`.
///
/// Only keys written and keys those writes depend on are compared (not every object read), so
/// a sync that changes one object of a thousand is a small transaction.
pub async fn apply_source(
    store: &dyn Store,
    source: &str,
    docs: &[Document],
    opts: &SourceApplyOptions,
    status: &StatusWriter<'_>,
) -> Result<SourceReport, ApplyError> {
    validate_source_name(source)
        .map_err(|m| ApplyError::Invalid(vec![ManifestError::new("(source)", m)]))?;
    let errors = validate(docs);
    if !errors.is_empty() {
        return Err(ApplyError::Invalid(errors));
    }
    safety::check_apply(store, docs).await?;
    let stamped: Vec<Document>;
    let docs = if docs
        .iter()
        .all(|d| ownership::owner(&d.resource.metadata().annotations) == Some(source))
    {
        docs
    } else {
        stamped = docs
            .iter()
            .cloned()
            .map(|mut d| {
                let a = &mut d.resource.metadata_mut().annotations;
                a.insert(ownership::SOURCE.into(), source.to_string());
                d
            })
            .collect();
        &stamped
    };
    let desired: BTreeSet<ObjectRef> = docs.iter().map(ObjectRef::of).collect();
    let inv_key = inventory_key(source);
    for attempt in 0..MAX_ATTEMPTS {
        let t0 = std::time::Instant::now();
        let mut r = Reader::new(store);
        if !opts.take_over {
            let foreign = owned_elsewhere(&mut r, source, docs).await?;
            if !foreign.is_empty() {
                return Err(ApplyError::Owned(foreign));
            }
        }
        let plan = plan_apply(&mut r, docs, true, opts.secrets.as_deref()).await?;
        let t_plan = t0.elapsed();
        let stored_inv: Inventory = match r.get(&inv_key).await? {
            None => Inventory::default(),
            Some(kv) => serde_json::from_slice(&kv.value).unwrap_or_else(|e| {
                tracing::warn!(key = %inv_key, error = %e, "unreadable inventory; relying on ownership annotations");
                Inventory::default()
            }),
        };
        r.deps.insert(inv_key.clone());
        let owned = owned_objects(store, source, &desired).await?;
        let candidates = prune_candidates(&stored_inv.objects, &owned, &desired);
        let pruned = plan_prune(&mut r, source, &candidates, docs, opts.prune).await?;
        let t_prune = t0.elapsed();

        let mut inventory = desired.clone();
        inventory.extend(
            pruned
                .extraneous
                .iter()
                .map(|e| ObjectRef::new(e.kind, e.name.clone())),
        );
        let inventory: Vec<ObjectRef> = inventory.into_iter().collect();
        let mut ops = plan.ops;
        ops.extend(pruned.ops);
        let mut results = plan.results;
        results.extend(pruned.results);
        if inventory != stored_inv.objects || stored_inv.source != source {
            let inv = Inventory {
                source: source.to_string(),
                objects: inventory.clone(),
            };
            ops.push(Op::put(
                inv_key.clone(),
                serde_json::to_vec(&inv).expect("inventory serializes"),
            ));
        }
        let mut report = SourceReport {
            results,
            extraneous: pruned.extraneous,
            inventory,
            committed: None,
        };
        if opts.dry_run {
            return Ok(report);
        }
        if let Some((key, value)) = status(&report) {
            ops.push(Op::put(key, value));
        }
        let t_status = t0.elapsed();
        if ops.is_empty() {
            return Ok(report);
        }
        let written: HashSet<&str> = ops.iter().map(Op::key).collect();
        let compares: BTreeMap<String, i64> = r
            .compares
            .iter()
            .filter(|(k, _)| written.contains(k.as_str()) || r.deps.contains(k.as_str()))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let committed = commit_at(store, compares, ops).await?;
        tracing::debug!(
            source,
            plan_ms = t_plan.as_secs_f64() * 1e3,
            prune_ms = (t_prune - t_plan).as_secs_f64() * 1e3,
            status_ms = (t_status - t_prune).as_secs_f64() * 1e3,
            commit_ms = (t0.elapsed() - t_status).as_secs_f64() * 1e3,
            "source apply timings"
        );
        if let Some(rev) = committed {
            report.committed = Some(rev);
            return Ok(report);
        }
        backoff(attempt).await;
    }
    Err(ApplyError::Conflict)
}

/// The documents naming an object that another source owns (by the stored object's
/// `berth.dev/source`; a task definition family by its latest revision), as errors that name
/// the owner and how to take it over.
async fn owned_elsewhere(
    r: &mut Reader<'_>,
    source: &str,
    docs: &[Document],
) -> Result<Vec<ManifestError>, ApplyError> {
    let mut out = Vec::new();
    for d in docs {
        let kv = if d.kind() == Kind::TaskDefinition {
            r.family(d.name()).await?.last().cloned()
        } else {
            r.get(&keys::key(d.kind(), d.name())).await?
        };
        let Some(kv) = kv else { continue };
        let v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        let Some(owner) = v["metadata"]["annotations"][ownership::SOURCE].as_str() else {
            continue;
        };
        if owner != source {
            out.push(err(
                d,
                "metadata.name",
                format!(
                    "{}/{} belongs to source `{owner}`; remove it from that source first, or take it over (`berth apply --prune --take-over`, `berth up --manifests DIR --take-over`, API field `takeOver: true`)",
                    d.kind().as_str().to_ascii_lowercase(),
                    d.name()
                ),
            ));
        }
    }
    Ok(out)
}
