//! StartTask: the custom-scheduler path. One task per named container instance, committed with
//! the scheduler's fence (controllers/scheduler.rs): the task is written already placed, in one
//! transaction with the instance's record, compared on the revision its usage was read at and
//! bumped (`placementGeneration`). Two schedulers deciding on the same room cannot both win:
//! the loser is retried on fresh usage, and an instance without room answers `RESOURCE:CPU` /
//! `RESOURCE:MEMORY` / `RESOURCE:PORTS` in `failures[]`, never an over-commit.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};

use super::arn;
use super::ctx::{cluster_of, str_list, Ctx};
use super::error::{EcsError, EcsResult};
use super::shapes::{self, failure};
use super::tags;
use crate::model::{
    keys, parse_taskdef_ref, ContainerInstance, Kind, Protocol, Task, TaskDefinition, TaskState,
};
use crate::objects;
use crate::store::{Compare, Op, Store, Txn};

/// ECS: at most 10 container instances per StartTask.
const MAX_INSTANCES: usize = 10;
/// Tries of one instance's commit that lost a race to another placement.
const ATTEMPTS: usize = 32;

pub async fn start(cx: &Ctx, req: &Value) -> EcsResult {
    let cluster = cluster_of(req);
    cx.require_cluster(&cluster).await?;
    let Some(td_ref) = req["taskDefinition"].as_str().map(arn::name) else {
        return Err(EcsError::invalid("taskDefinition is required"));
    };
    let instances = str_list(req, "containerInstances");
    if instances.is_empty() || instances.len() > MAX_INSTANCES {
        return Err(EcsError::invalid(format!(
            "containerInstances must name between 1 and {MAX_INSTANCES} container instances"
        )));
    }
    let group = req["group"].as_str().unwrap_or("");
    if group.starts_with("service:") {
        return Err(EcsError::invalid(format!(
            "group {group:?} is reserved for the tasks of a service"
        )));
    }
    super::ctx::refuse_unsupported(req, super::ctx::UNSUPPORTED_TASK_MEMBERS)?;
    let task_tags = tags::from_request(req)?;
    let store = &*cx.st.store;
    if parse_taskdef_ref(td_ref).is_none() {
        return Err(EcsError::invalid(format!(
            "invalid taskDefinition {td_ref:?}"
        )));
    }
    let Some(td) = objects::taskdef(store, td_ref).await? else {
        return Err(EcsError::client(format!(
            "TaskDefinition not found: {td_ref}"
        )));
    };
    if let Some(c) = objects::get::<crate::model::ClusterSpec, crate::model::ClusterStatus>(
        store,
        &keys::key(Kind::Cluster, &cluster),
    )
    .await?
    {
        crate::apply::safety::check_against(&td.spec, &cluster, &c.spec.settings)
            .map_err(EcsError::invalid)?;
    }
    let group = if group.is_empty() {
        format!("family:{}", td.status.family)
    } else {
        group.to_string()
    };
    let started_by = req["startedBy"].as_str().unwrap_or("start-task");

    let mut tasks = vec![];
    let mut failures = vec![];
    for w in &instances {
        let id = arn::name(w);
        let mut t = Task::provision(&td, &cluster, &group, started_by);
        t.metadata.tags = task_tags.clone();
        match place(store, &cluster, id, &td, t).await? {
            Ok(t) => {
                let v = serde_json::to_value(&t).unwrap_or(Value::Null);
                let mut o = shapes::task(&cx.region, &v);
                o["tags"] = tags::of(&v);
                tasks.push(o)
            }
            Err(reason) => failures.push(failure(
                arn::container_instance(&cx.region, &cluster, id),
                reason,
            )),
        }
    }
    Ok(json!({ "tasks": tasks, "failures": failures }))
}

/// Place `t` on instance `id`, or the ECS failure reason why not.
async fn place(
    store: &dyn Store,
    cluster: &str,
    id: &str,
    td: &TaskDefinition,
    mut t: Task,
) -> Result<Result<Task, &'static str>, EcsError> {
    if id.is_empty() || id.contains('/') {
        return Ok(Err("MISSING"));
    }
    let ikey = keys::key(Kind::ContainerInstance, id);
    let want_ports = td.spec.fixed_host_ports();
    for _ in 0..ATTEMPTS {
        // The record first, then the tasks: a placement committed after this read bumps the
        // record, so the compare below fails and the usage is read again.
        let Some(mut rec): Option<ContainerInstance> = objects::get(store, &ikey).await? else {
            return Ok(Err("MISSING"));
        };
        if rec.spec.cluster != cluster {
            return Ok(Err("MISSING"));
        }
        if rec.status.status != "ACTIVE" && !rec.status.status.is_empty() {
            return Ok(Err("INACTIVE"));
        }
        if store.get(&keys::instance_lease_key(id)).await?.is_none() {
            return Ok(Err("AGENT"));
        }
        let usage = usage(store, id).await?;
        let reg = &rec.status.registered_resources;
        let cpu_free = reg.cpu.saturating_sub(usage.cpu);
        let mem_free = reg.memory.saturating_sub(usage.memory);
        if t.spec.cpu > cpu_free {
            return Ok(Err("RESOURCE:CPU"));
        }
        if t.spec.memory > mem_free {
            return Ok(Err("RESOURCE:MEMORY"));
        }
        if want_ports.iter().any(|p| usage.ports.contains(p)) {
            return Ok(Err("RESOURCE:PORTS"));
        }
        t.status.container_instance = Some(id.to_string());
        t.status.last_status = TaskState::Pending;
        let mut ports = usage.ports.clone();
        ports.extend(want_ports.iter().copied());
        rec.status.placement_generation += 1;
        rec.status.pending_tasks_count += 1;
        rec.status.remaining_resources.cpu = cpu_free - t.spec.cpu;
        rec.status.remaining_resources.memory = mem_free - t.spec.memory;
        rec.status.remaining_resources.ports = ports
            .iter()
            .map(|(p, proto)| format!("{}/{p}", proto.as_str()))
            .collect();
        let tkey = objects::task_key(&t.metadata.name);
        let txn = Txn::new()
            .when(Compare::mod_revision(&ikey, rec.metadata.revision))
            .when(Compare::absent(&tkey))
            .and_then(Op::put(ikey.clone(), rec.to_bytes()))
            .and_then(Op::put(tkey, t.to_bytes()));
        let r = store.txn(txn).await?;
        if r.succeeded {
            t.metadata.revision = r.revision;
            return Ok(Ok(t));
        }
    }
    Err(EcsError::server(format!(
        "container instance {id} changed under every attempt to place on it; retry"
    )))
}

struct Usage {
    cpu: u32,
    memory: u32,
    ports: BTreeSet<(u16, Protocol)>,
}

/// What the tasks placed on `id` hold (as the shared cache counts it: placed, not stopped).
async fn usage(store: &dyn Store, id: &str) -> Result<Usage, EcsError> {
    let mut u = Usage {
        cpu: 0,
        memory: 0,
        ports: BTreeSet::new(),
    };
    let mut tds: HashMap<String, Vec<(u16, Protocol)>> = HashMap::new();
    for t in objects::list_tasks(store).await? {
        if !t.holds_resources() || t.status.container_instance.as_deref() != Some(id) {
            continue;
        }
        u.cpu += t.spec.cpu;
        u.memory += t.spec.memory;
        if !tds.contains_key(&t.spec.task_definition) {
            let p = objects::taskdef(store, &t.spec.task_definition)
                .await?
                .map(|d| d.spec.fixed_host_ports())
                .unwrap_or_default();
            tds.insert(t.spec.task_definition.clone(), p);
        }
        if let Some(p) = tds.get(&t.spec.task_definition) {
            u.ports.extend(p.iter().copied());
        }
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::model::{ContainerInstanceSpec, Resources};
    use crate::store::embedded::EmbeddedStore;
    use crate::store::DynStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_start_tasks_never_over_commit_an_instance() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(EmbeddedStore::open(dir.path().join("s")).unwrap());
        let mut i = ContainerInstance::new(
            Kind::ContainerInstance,
            "i-1",
            ContainerInstanceSpec {
                cluster: "default".into(),
                ..Default::default()
            },
        );
        i.status.status = "ACTIVE".into();
        i.status.registered_resources = Resources {
            cpu: 512,
            memory: 1024,
            ports: vec![],
        };
        let txn = Txn::new()
            .and_then(Op::put(
                keys::key(Kind::ContainerInstance, "i-1"),
                i.to_bytes(),
            ))
            .and_then(Op::put(keys::instance_lease_key("i-1"), b"x".to_vec()));
        store.txn(txn).await.unwrap();
        let td: TaskDefinition = serde_json::from_value(serde_json::json!({
            "apiVersion": "berth.dev/v1", "kind": "TaskDefinition",
            "metadata": {"name": "job:1"},
            "spec": {"cpu": 128, "memory": 64,
                     "containerDefinitions": [{"name": "a", "image": "x", "memory": 64}]},
            "status": {"family": "job", "revision": 1}
        }))
        .unwrap();
        let mut joins = vec![];
        for _ in 0..12 {
            let (store, td) = (store.clone(), td.clone());
            joins.push(tokio::spawn(async move {
                let t = Task::provision(&td, "default", "family:job", "test");
                place(&*store, "default", "i-1", &td, t).await
            }));
        }
        let mut placed = 0;
        for j in joins {
            match j.await.unwrap().unwrap() {
                Ok(t) => {
                    assert_eq!(t.status.container_instance.as_deref(), Some("i-1"));
                    placed += 1;
                }
                Err(why) => assert_eq!(why, "RESOURCE:CPU"),
            }
        }
        assert_eq!(placed, 4, "512 cpu holds four tasks of 128");
        let u = usage(&*store, "i-1").await.unwrap();
        assert_eq!((u.cpu, u.memory), (512, 256));
        let rec: ContainerInstance =
            objects::get(&*store, &keys::key(Kind::ContainerInstance, "i-1"))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(rec.status.remaining_resources.cpu, 0);
        assert_eq!(rec.status.placement_generation, 4);
        // Gone and foreign instances are MISSING, never an error.
        let t = Task::provision(&td, "default", "family:job", "test");
        assert_eq!(
            place(&*store, "default", "i-2", &td, t)
                .await
                .unwrap()
                .err(),
            Some("MISSING")
        );
        let t = Task::provision(&td, "other", "family:job", "test");
        assert_eq!(
            place(&*store, "other", "i-1", &td, t).await.unwrap().err(),
            Some("MISSING")
        );
    }
}
