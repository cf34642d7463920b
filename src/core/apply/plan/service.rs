//! Services: their cluster, task definition and target groups exist (in the set or the
//! store), a service being deleted is not re-applied (unless its own source takes it back), and a ScalingPolicy's service keeps the
//! desiredCount its scaler set.

use std::collections::{HashMap, HashSet};

use crate::apply::codec::{decode, encode};
use crate::apply::error::{err, ApplyError};
use crate::apply::meta::{merged_annotations, same_meta};
use crate::apply::ownership;
use crate::apply::reader::Reader;
use crate::apply::report::{ObjectResult, Outcome};
use crate::manifest::{check_service_against_taskdef, Document, ManifestError, Resource};
use crate::model::{self, keys, Kind, Service};
use crate::store::Op;

use super::cluster::{self, DEFAULT_CLUSTER};
use super::lb::target_group_exists;
use super::taskdef::{self, FamilyAfter};

/// The rest of the set, as services see it.
pub struct SetContext<'a> {
    pub docs: &'a [Document],
    pub stamped: bool,
    pub now: chrono::DateTime<chrono::Utc>,
    /// Task definition families in the set, as they will be after this apply.
    pub families: &'a HashMap<String, FamilyAfter>,
}

/// Plan every Service document into `results` (by document index), `ops` and `errors`. True
/// when the implicit default cluster is created.
pub async fn plan_services(
    r: &mut Reader<'_>,
    cx: &SetContext<'_>,
    results: &mut [Option<ObjectResult>],
    ops: &mut Vec<Op>,
    errors: &mut Vec<ManifestError>,
) -> Result<bool, ApplyError> {
    let SetContext {
        docs,
        stamped,
        now,
        families,
    } = *cx;
    let set_clusters: HashSet<&str> = docs
        .iter()
        .filter(|d| d.kind() == Kind::Cluster)
        .map(|d| d.name())
        .collect();
    // Services a ScalingPolicy drives (in the set or the store): the policy owns their
    // desiredCount, so an apply keeps the current one instead of fighting the scaler (and a
    // source does not take the scaler's changes for drift). A new service starts at the
    // manifest's count.
    let mut scaled: HashSet<String> = docs
        .iter()
        .filter_map(|d| match &d.resource {
            Resource::ScalingPolicy(p) => Some(p.spec.service.clone()),
            _ => None,
        })
        .collect();
    if docs.iter().any(|d| d.kind() == Kind::Service) {
        for kv in r.list(Kind::ScalingPolicy).await? {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&kv.value) {
                if let Some(s) = v["spec"]["service"].as_str() {
                    scaled.insert(s.to_string());
                }
            }
        }
    }
    let mut implicit_default: HashSet<&str> = HashSet::new();
    let mut created_default = false;
    for (i, doc) in docs.iter().enumerate() {
        let Resource::Service(want) = &doc.resource else {
            continue;
        };
        let name = want.metadata.name.as_str();
        let key = keys::key(Kind::Service, name);
        let mut current: Option<Service> = match r.get(&key).await? {
            Some(kv) => Some(decode(&kv)?),
            None => None,
        };
        // A source that pruned this service and now holds it again (a file restored, a revert)
        // takes it back: the pending deletion is cancelled, its tasks are replaced as needed.
        let mut undeleted = false;
        if let Some(cur) = current.as_mut() {
            let own_source = ownership::owner(&want.metadata.annotations);
            if stamped
                && cur.metadata.deletion_timestamp.is_some()
                && own_source.is_some()
                && ownership::owner(&cur.metadata.annotations) == own_source
            {
                cur.metadata.deletion_timestamp = None;
                cur.status.status = "ACTIVE".into();
                undeleted = true;
            }
        }
        if let Some(cur) = &current {
            if cur.metadata.deletion_timestamp.is_some() {
                errors.push(err(
                    doc,
                    "metadata.name",
                    format!(
                        "service `{name}` is being deleted; apply it again once its tasks have stopped and it is gone"
                    ),
                ));
                continue;
            }
        }
        let mut want_spec = want.spec.clone();
        if let Some(cur) = current.as_ref().filter(|_| scaled.contains(name)) {
            want_spec.desired_count = cur.spec.desired_count;
        }
        let changed = undeleted
            || current.as_ref().is_none_or(|cur| {
                cur.spec != want_spec || !same_meta(&cur.metadata, &want.metadata, stamped)
            });
        let before = errors.len();

        // The cluster: in the set or in the store. Like ECS, the `default` cluster comes into
        // being the first time something uses it.
        let cluster = want.spec.cluster.as_str();
        let cluster_key = keys::key(Kind::Cluster, cluster);
        let exists = set_clusters.contains(cluster)
            || implicit_default.contains(cluster)
            || r.get(&cluster_key).await?.is_some();
        if exists {
            // fine
        } else if cluster == DEFAULT_CLUSTER {
            let mut c = cluster::implicit(cluster, now);
            ops.push(Op::put(cluster_key.clone(), encode(&mut c)));
            implicit_default.insert(cluster);
            created_default = true;
        } else {
            errors.push(err(
                doc,
                "spec.cluster",
                format!(
                    "cluster `{cluster}` does not exist: define it in the manifests (kind: Cluster) or create it first"
                ),
            ));
        }

        // The task definition: in the set or in the store.
        let reference = want.spec.task_definition.as_str();
        let Some((family, pinned)) = model::parse_taskdef_ref(reference) else {
            errors.push(err(
                doc,
                "spec.taskDefinition",
                "must be `family` or `family:REVISION`",
            ));
            continue;
        };
        let resolved = match taskdef::resolve(r, families, reference, family, pinned).await? {
            Ok(found) => Some(found),
            Err(msg) => {
                errors.push(err(doc, "spec.taskDefinition", msg));
                None
            }
        };
        if changed {
            if let Some((resolved_name, spec, active)) = &resolved {
                if !active {
                    errors.push(err(
                        doc,
                        "spec.taskDefinition",
                        format!(
                            "task definition `{resolved_name}` is INACTIVE (deleted); apply its manifest again to register a new revision"
                        ),
                    ));
                }
                for (field, msg) in check_service_against_taskdef(&want.spec, spec, resolved_name) {
                    errors.push(err(doc, &field, msg));
                }
            }
        }
        // Target groups: in the set or in the store.
        for (k, lb) in want.spec.load_balancers.iter().enumerate() {
            if !target_group_exists(r, docs, &lb.target_group).await? {
                errors.push(err(
                    doc,
                    &format!("spec.loadBalancers[{k}].targetGroup"),
                    format!(
                        "target group `{}` does not exist: define it in the manifests (kind: TargetGroup) or create it first",
                        lb.target_group
                    ),
                ));
            }
        }
        if errors.len() > before {
            continue;
        }

        let outcome = match current {
            None => {
                let mut s: Service = want.clone();
                s.metadata.annotations =
                    merged_annotations(None, &want.metadata.annotations, stamped);
                s.metadata.uid = model::new_id();
                s.metadata.created_at = Some(now);
                s.status = model::ServiceStatus {
                    status: "ACTIVE".into(),
                    desired_count: want.spec.desired_count,
                    ..Default::default()
                };
                ops.push(Op::put(key, encode(&mut s)));
                Outcome::Created
            }
            Some(mut cur) if changed => {
                cur.spec = want_spec.clone();
                cur.metadata.labels = want.metadata.labels.clone();
                cur.metadata.annotations = merged_annotations(
                    Some(&cur.metadata.annotations),
                    &want.metadata.annotations,
                    stamped,
                );
                cur.status.desired_count = want_spec.desired_count;
                if cur.status.status.is_empty() {
                    cur.status.status = "ACTIVE".into();
                }
                ops.push(Op::put(key, encode(&mut cur)));
                Outcome::Configured
            }
            Some(_) => Outcome::Unchanged,
        };
        if outcome != Outcome::Unchanged {
            // What this write relies on: its cluster and task definition stay as read.
            r.deps.insert(cluster_key);
            if let Some(k) = r.family_keys.get(family) {
                r.deps.insert(k.clone());
            }
        }
        results[i] = Some(ObjectResult {
            kind: Kind::Service,
            name: name.to_string(),
            outcome,
            source: Some(doc.source.clone()),
        });
    }
    Ok(created_default)
}
