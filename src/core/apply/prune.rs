//! Pruning a source: what it owns that its manifests no longer hold is *extraneous*, and is
//! pruned (services drained, task definition families made INACTIVE, clusters removed once
//! unused, other kinds removed) or reported.

use std::collections::{BTreeMap, BTreeSet};

use crate::manifest::{Document, Resource};
use crate::model::{self, keys, Cluster, Kind, Service, TaskDefinition};
use crate::store::{KeyValue, Op, Store, StoreError};

use super::codec::{decode, encode};
use super::error::{err, ApplyError};
use super::inventory::ObjectRef;
use super::ownership;
use super::plan::{cluster_users, ClusterUsers};
use super::reader::Reader;
use super::report::{Extraneous, ObjectResult, Outcome};

/// What may be extraneous: the inventory and every object carrying the source's annotation,
/// minus what the manifests hold now; in prune order.
pub fn prune_candidates(
    inventory: &[ObjectRef],
    owned: &[ObjectRef],
    desired: &BTreeSet<ObjectRef>,
) -> Vec<ObjectRef> {
    let all: BTreeSet<ObjectRef> = inventory.iter().chain(owned).cloned().collect();
    all.into_iter().filter(|o| !desired.contains(o)).collect()
}

/// Objects in the store annotated as belonging to `source` (a task definition family by its
/// latest revision), other than the `desired` ones (which are not prune candidates anyway).
pub async fn owned_objects(
    store: &dyn Store,
    source: &str,
    desired: &BTreeSet<ObjectRef>,
) -> Result<Vec<ObjectRef>, StoreError> {
    let needle = format!(
        "\"{}\":{}",
        ownership::SOURCE,
        serde_json::to_string(source).expect("a string serializes")
    );
    let needle = needle.as_bytes();
    let mut out = Vec::new();
    for kind in Kind::APPLYABLE {
        let prefix = keys::prefix(kind);
        let (kvs, _) = store.range(&prefix).await?;
        let mut latest: BTreeMap<String, &KeyValue> = BTreeMap::new();
        for kv in &kvs {
            let Some(rest) = kv.key.strip_prefix(&prefix) else {
                continue;
            };
            let name = if kind == Kind::TaskDefinition {
                match rest.split_once('/') {
                    Some((family, _)) => family,
                    None => continue,
                }
            } else {
                rest
            };
            // Keys come sorted, so the last revision of a family wins.
            latest.insert(name.to_string(), kv);
        }
        for (name, kv) in latest {
            if desired.contains(&ObjectRef::new(kind, name.as_str()))
                || !kv.value.windows(needle.len()).any(|w| w == needle)
            {
                continue;
            }
            let v: serde_json::Value = match serde_json::from_slice(&kv.value) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if v["metadata"]["annotations"][ownership::SOURCE].as_str() == Some(source) {
                out.push(ObjectRef::new(kind, name));
            }
        }
    }
    Ok(out)
}

pub struct PrunePlan {
    pub results: Vec<ObjectResult>,
    pub ops: Vec<Op>,
    pub extraneous: Vec<Extraneous>,
}

/// Plan pruning `candidates`. An object now owned by another source, already gone or already
/// being deleted is dropped from the inventory silently.
pub async fn plan_prune(
    r: &mut Reader<'_>,
    source: &str,
    candidates: &[ObjectRef],
    docs: &[Document],
    prune: bool,
) -> Result<PrunePlan, ApplyError> {
    let now = model::now();
    let mut plan = PrunePlan {
        results: vec![],
        ops: vec![],
        extraneous: vec![],
    };
    let mut errors = Vec::new();
    let mut users: Option<ClusterUsers> = None;
    let not_ours = |a: &BTreeMap<String, String>| ownership::owner(a).is_some_and(|o| o != source);
    let services_in_set = || {
        docs.iter().filter_map(|d| match &d.resource {
            Resource::Service(s) => Some((d, s)),
            _ => None,
        })
    };
    for c in candidates {
        let name = c.name.as_str();
        let mut keep = |reason: String| {
            plan.extraneous.push(Extraneous {
                kind: c.kind,
                name: name.to_string(),
                reason,
            })
        };
        let off = || "not in the manifests any more; prune is off".to_string();
        let result = |outcome| ObjectResult {
            kind: c.kind,
            name: name.to_string(),
            outcome,
            source: None,
        };
        match c.kind {
            Kind::Service => {
                let key = keys::key(Kind::Service, name);
                let Some(kv) = r.get(&key).await? else {
                    continue;
                };
                let mut s: Service = decode(&kv)?;
                if not_ours(&s.metadata.annotations) || s.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if !prune {
                    keep(off());
                    continue;
                }
                s.mark_deleted(now);
                plan.ops.push(Op::put(key, encode(&mut s)));
                plan.results.push(result(Outcome::Pruned));
            }
            Kind::TaskDefinition => {
                let stored = r.family(name).await?;
                let Some(last) = stored.last() else {
                    continue;
                };
                let latest: TaskDefinition = decode(last)?;
                if not_ours(&latest.metadata.annotations) {
                    continue;
                }
                let mut active = Vec::new();
                for kv in &stored {
                    let td: TaskDefinition = decode(kv)?;
                    if td.status.status != "INACTIVE" {
                        active.push((kv.clone(), td));
                    }
                }
                if active.is_empty() {
                    continue;
                }
                if !prune {
                    keep(off());
                    continue;
                }
                let users: Vec<&Document> = services_in_set()
                    .filter(|(_, s)| {
                        model::parse_taskdef_ref(&s.spec.task_definition).map(|(f, _)| f)
                            == Some(name)
                    })
                    .map(|(d, _)| d)
                    .collect();
                if !users.is_empty() {
                    for d in users {
                        errors.push(err(
                            d,
                            "spec.taskDefinition",
                            format!(
                                "task definition family `{name}` is no longer in the manifests and would be pruned, but this service uses it: keep its manifest or change the service"
                            ),
                        ));
                    }
                    continue;
                }
                for (kv, mut td) in active {
                    td.status.status = "INACTIVE".into();
                    r.compares.insert(kv.key.clone(), kv.mod_revision);
                    plan.ops.push(Op::put(kv.key.clone(), encode(&mut td)));
                }
                plan.results.push(result(Outcome::Pruned));
            }
            Kind::Cluster => {
                let key = keys::key(Kind::Cluster, name);
                let Some(kv) = r.get(&key).await? else {
                    continue;
                };
                let cl: Cluster = decode(&kv)?;
                if not_ours(&cl.metadata.annotations) {
                    continue;
                }
                let in_set: Vec<&str> = services_in_set()
                    .filter(|(_, s)| s.spec.cluster == name)
                    .map(|(_, s)| s.metadata.name.as_str())
                    .collect();
                if !in_set.is_empty() {
                    keep(format!(
                        "not in the manifests any more, but still used by services in them: {}",
                        in_set.join(", ")
                    ));
                    continue;
                }
                if !prune {
                    keep(off());
                    continue;
                }
                let parts = cluster_users(r, name, &mut users).await?;
                if !parts.is_empty() {
                    keep(format!(
                        "prune waits: still in use by {}",
                        parts.join(" and ")
                    ));
                    continue;
                }
                plan.ops.push(Op::delete(key));
                plan.results.push(result(Outcome::Pruned));
            }
            kind => {
                let key = keys::key(kind, name);
                let Some(kv) = r.get(&key).await? else {
                    continue;
                };
                let v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap_or_default();
                let owner = v["metadata"]["annotations"][ownership::SOURCE].as_str();
                if owner.is_some_and(|o| o != source) {
                    continue;
                }
                if !prune {
                    keep(off());
                    continue;
                }
                plan.ops.push(Op::delete(key));
                plan.results.push(result(Outcome::Pruned));
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApplyError::Invalid(errors));
    }
    Ok(plan)
}
