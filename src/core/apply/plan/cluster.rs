//! Clusters: applying one, the implicit `default` cluster, and what still uses a cluster
//! (which blocks deleting or pruning it).

use crate::apply::codec::encode;
use crate::apply::error::ApplyError;
use crate::apply::reader::Reader;
use crate::apply::report::{ObjectResult, Outcome};
use crate::manifest::Document;
use crate::model::{self, keys, Cluster, Kind, Object};
use crate::store::{KeyValue, Op, StoreError};

use super::simple::update;

/// The cluster a service runs in when it names none; created on first use, as in ECS.
pub const DEFAULT_CLUSTER: &str = "default";

pub async fn plan_cluster(
    r: &mut Reader<'_>,
    doc: &Document,
    want: &Cluster,
    stamped: bool,
    now: chrono::DateTime<chrono::Utc>,
    ops: &mut Vec<Op>,
) -> Result<ObjectResult, ApplyError> {
    let key = keys::key(Kind::Cluster, &want.metadata.name);
    let (outcome, write) = update(r, &key, want, stamped, now).await?;
    if let Some(mut c) = write {
        // ACTIVE from creation on (and a stored one without a status becomes so).
        if outcome == Outcome::Created || c.status.status.is_empty() {
            c.status.status = "ACTIVE".into();
        }
        ops.push(Op::put(key, encode(&mut c)));
    }
    Ok(ObjectResult {
        kind: Kind::Cluster,
        name: want.metadata.name.clone(),
        outcome,
        source: Some(doc.source.clone()),
    })
}

/// A new, empty, ACTIVE cluster `name` (the implicit default cluster).
pub fn implicit(name: &str, now: chrono::DateTime<chrono::Utc>) -> Cluster {
    let mut c: Cluster = Object::new(Kind::Cluster, name, Default::default());
    c.metadata.uid = model::new_id();
    c.metadata.created_at = Some(now);
    c.status.status = "ACTIVE".into();
    c
}

/// `spec.cluster` of a stored object, read loosely (a half-written object still counts).
fn cluster_of(kv: &KeyValue) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&kv.value).ok()?;
    v.pointer("/spec/cluster")?.as_str().map(str::to_string)
}

fn task_is_stopped(kv: &KeyValue) -> bool {
    serde_json::from_slice::<serde_json::Value>(&kv.value)
        .ok()
        .and_then(|v| {
            v.pointer("/status/lastStatus")
                .and_then(|s| s.as_str())
                .map(|s| s == "STOPPED")
        })
        .unwrap_or(false)
}

pub type ClusterUsers = (Vec<KeyValue>, Vec<KeyValue>, Vec<KeyValue>);

/// What still uses a cluster ("services a, b", "2 container instance(s)", …); empty when
/// nothing does. `users` caches the listings across calls of one plan.
pub async fn cluster_users(
    r: &Reader<'_>,
    name: &str,
    users: &mut Option<ClusterUsers>,
) -> Result<Vec<String>, StoreError> {
    if users.is_none() {
        *users = Some((
            r.list(Kind::Service).await?,
            r.list(Kind::ContainerInstance).await?,
            r.list(Kind::Task).await?,
        ));
    }
    let (services, instances, tasks) = users.as_ref().expect("loaded above");
    let in_cluster = |kv: &&KeyValue| cluster_of(kv).as_deref() == Some(name);
    let svc: Vec<&str> = services
        .iter()
        .filter(in_cluster)
        .filter_map(|kv| keys::name_of(&kv.key, Kind::Service))
        .collect();
    let inst = instances.iter().filter(in_cluster).count();
    let running = tasks
        .iter()
        .filter(in_cluster)
        .filter(|kv| !task_is_stopped(kv))
        .count();
    let mut parts = Vec::new();
    if !svc.is_empty() {
        parts.push(format!("services {}", svc.join(", ")));
    }
    if inst > 0 {
        parts.push(format!("{inst} container instance(s)"));
    }
    if running > 0 {
        parts.push(format!("{running} task(s) not yet stopped"));
    }
    Ok(parts)
}
