//! Reads and rules shared by the service, deployment and recovery controllers.

use berth_core::model::{
    keys, parse_taskdef_ref, ContainerInstance, HealthStatus, Kind, SchedulingStrategy, Service,
    Task, TaskDefinition, TaskState,
};
use berth_core::objects;
use berth_core::runtime::Cache;
use berth_core::store::{DynStore, KeyValue, Store};

/// Trigger mapper: a task → the service it belongs to, if any.
pub fn task_service(kv: &berth_core::store::KeyValue) -> Vec<String> {
    serde_json::from_slice::<Task>(&kv.value)
        .ok()
        .and_then(|t| t.service_name().map(str::to_string))
        .into_iter()
        .collect()
}

pub fn group_of(service: &str) -> String {
    format!("service:{service}")
}

/// Every task of a service (any state), read fresh from the store.
pub async fn tasks_of(store: &dyn Store, service: &str) -> anyhow::Result<Vec<Task>> {
    let group = group_of(service);
    Ok(objects::list_tasks(store)
        .await?
        .into_iter()
        .filter(|t| t.spec.group == group)
        .collect())
}

/// REPLICA: the spec's count; DAEMON: one per ACTIVE instance of the cluster.
pub async fn desired_count(store: &dyn Store, svc: &Service) -> anyhow::Result<u32> {
    Ok(match svc.spec.scheduling_strategy.unwrap_or_default() {
        SchedulingStrategy::Replica => svc.spec.desired_count,
        SchedulingStrategy::Daemon => {
            let instances: Vec<ContainerInstance> =
                objects::list(store, &keys::prefix(Kind::ContainerInstance)).await?;
            instances
                .iter()
                .filter(|i| i.spec.cluster == svc.spec.cluster && i.status.status == "ACTIVE")
                .count() as u32
        }
    })
}

/// Does the task definition have a health check on an essential container?
pub fn has_checks(td: &TaskDefinition) -> bool {
    td.spec.container_definitions.iter().any(|c| {
        c.is_essential()
            && c.health_check
                .as_ref()
                .is_some_and(|h| h.command.first().map(String::as_str) != Some("NONE"))
    })
}

/// Healthy for deployment purposes: RUNNING and, if its definition has health checks, HEALTHY.
pub fn counts_healthy(t: &Task, has_checks: bool) -> bool {
    t.status.last_status == TaskState::Running
        && match t.status.health_status {
            HealthStatus::Healthy => true,
            HealthStatus::Unhealthy => false,
            HealthStatus::Unknown => !has_checks,
        }
}

/// `has_checks` for every task definition the tasks use (plus `extra`), fetched once each.
pub async fn checks_by_taskdef(
    store: &dyn Store,
    tasks: &[Task],
    extra: &[&TaskDefinition],
) -> anyhow::Result<std::collections::BTreeMap<String, bool>> {
    let mut m = std::collections::BTreeMap::new();
    for td in extra {
        m.insert(td.metadata.name.clone(), has_checks(td));
    }
    for t in tasks {
        if !m.contains_key(&t.spec.task_definition) {
            let h = objects::taskdef(store, &t.spec.task_definition)
                .await?
                .map(|d| has_checks(&d))
                .unwrap_or(false);
            m.insert(t.spec.task_definition.clone(), h);
        }
    }
    Ok(m)
}

/// Push an event unless it is already the newest one (level-triggered reconciles repeat).
pub fn event_once(svc: &mut Service, msg: String) {
    if svc.status.events.first().map(|e| e.message.as_str()) != Some(msg.as_str()) {
        svc.status.push_event(msg);
    }
}

/// Maps a changed task definition to the services that follow its family (from a local
/// cache of services), so a new revision triggers exactly those.
pub fn family_trigger(
    store: DynStore,
) -> impl Fn(&KeyValue) -> Vec<String> + Send + Sync + 'static {
    let services = Cache::start(store, &keys::prefix(Kind::Service), |_| {});
    move |kv: &KeyValue| -> Vec<String> {
        let Ok(td) = serde_json::from_slice::<TaskDefinition>(&kv.value) else {
            return vec![];
        };
        services
            .list()
            .iter()
            .filter_map(|kv| serde_json::from_slice::<Service>(&kv.value).ok())
            .filter(|s| {
                parse_taskdef_ref(&s.spec.task_definition).map(|(f, _)| f)
                    == Some(td.status.family.as_str())
            })
            .map(|s| s.metadata.name)
            .collect()
    }
}
