//! Planning `berth delete -f`: services marked for deletion, clusters removed when nothing uses
//! them, task definition families made INACTIVE, other kinds removed.

use std::collections::HashSet;

use crate::apply::codec::{decode, encode};
use crate::apply::error::{err, ApplyError};
use crate::apply::reader::Reader;
use crate::apply::report::{ObjectResult, Outcome};
use crate::manifest::{Document, Resource};
use crate::model::{self, keys, Kind, Service, TaskDefinition};
use crate::store::{Op, Store};

use super::cluster::{cluster_users, ClusterUsers};
use super::set::Plan;

pub async fn plan_delete(store: &dyn Store, docs: &[Document]) -> Result<Plan, ApplyError> {
    let mut r = Reader::new(store);
    let now = model::now();
    let mut results = Vec::new();
    let mut ops = Vec::new();
    let mut errors = Vec::new();
    let mut done: HashSet<(Kind, &str)> = HashSet::new();
    let mut users: Option<ClusterUsers> = None;

    for doc in docs {
        let name = doc.name();
        if !done.insert((doc.kind(), name)) {
            continue;
        }
        let outcome = match &doc.resource {
            Resource::Service(_) => {
                let key = keys::key(Kind::Service, name);
                match r.get(&key).await? {
                    None => Outcome::Unchanged,
                    Some(kv) => {
                        let mut s: Service = decode(&kv)?;
                        if s.mark_deleted(now) {
                            ops.push(Op::put(key, encode(&mut s)));
                            Outcome::Pruned
                        } else {
                            Outcome::Unchanged
                        }
                    }
                }
            }
            Resource::Cluster(_) => {
                let key = keys::key(Kind::Cluster, name);
                match r.get(&key).await? {
                    None => Outcome::Unchanged,
                    Some(_) => {
                        let parts = cluster_users(&r, name, &mut users).await?;
                        if parts.is_empty() {
                            ops.push(Op::delete(key));
                            Outcome::Pruned
                        } else {
                            errors.push(err(
                                doc,
                                "metadata.name",
                                format!(
                                    "cluster `{name}` is still in use by {}; delete those first",
                                    parts.join(" and ")
                                ),
                            ));
                            continue;
                        }
                    }
                }
            }
            Resource::ScalingPolicy(_)
            | Resource::Role(_)
            | Resource::LoadBalancer(_)
            | Resource::TargetGroup(_)
            | Resource::Secret(_) => {
                let key = keys::key(doc.kind(), name);
                match r.get(&key).await? {
                    None => Outcome::Unchanged,
                    Some(_) => {
                        ops.push(Op::delete(key));
                        Outcome::Pruned
                    }
                }
            }
            Resource::TaskDefinition(_) => {
                let stored = r.family(name).await?;
                let mut changed = false;
                for kv in &stored {
                    let mut td: TaskDefinition = decode(kv)?;
                    if td.status.status != "INACTIVE" {
                        td.status.status = "INACTIVE".into();
                        r.compares.insert(kv.key.clone(), kv.mod_revision);
                        ops.push(Op::put(kv.key.clone(), encode(&mut td)));
                        changed = true;
                    }
                }
                if changed {
                    Outcome::Pruned
                } else {
                    Outcome::Unchanged
                }
            }
        };
        results.push(ObjectResult {
            kind: doc.kind(),
            name: name.to_string(),
            outcome,
            source: Some(doc.source.clone()),
        });
    }
    if !errors.is_empty() {
        return Err(ApplyError::Invalid(errors));
    }
    Ok(Plan {
        results,
        ops,
        compares: r.compares,
    })
}
