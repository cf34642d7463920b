//! Reads and rules shared by the service, deployment and recovery controllers.

use berth_core::model::{
    ContainerInstance, HealthStatus, SchedulingStrategy, Service, Task, TaskDefinition, TaskState,
};
use std::sync::Arc;
use std::time::Duration;

use berth_core::objects;
use berth_core::runtime::ClusterCache;
use berth_core::store::Store;

/// Spacing of task- and service-triggered reconciles (`Trigger::spaced`): a service scaling
/// by thousands changes its tasks (and its status) thousands of times a second, and each
/// reconcile reads all of its tasks.
pub const TASK_BURST_SPACING: Duration = Duration::from_millis(100);

/// Trigger mapper: a task → the service it belongs to, if any.
pub fn task_service(t: &Task) -> Vec<String> {
    t.service_name().map(str::to_string).into_iter().collect()
}

pub fn group_of(service: &str) -> String {
    format!("service:{service}")
}

/// Every task of a service (any state), from the shared cache's index: the work follows the
/// service's own tasks, not the cluster's.
/// Shared, not copied: a reconcile of a big service must not copy its tasks.
pub fn tasks_of(cache: &ClusterCache, service: &str) -> Vec<Arc<Task>> {
    cache.tasks_of_service(service)
}

/// Wait until the cache has seen the service record as read (`revision`): every task created
/// with that record (in its transaction) is then in the cache, so counting tasks from it can
/// never under-count and create twice.
pub async fn caught_up(cache: &ClusterCache, revision: i64) -> anyhow::Result<()> {
    Ok(cache.wait_for(revision).await?)
}

/// A task definition from the cache, else from the store (just registered, not seen yet).
pub async fn taskdef(
    store: &dyn Store,
    cache: &ClusterCache,
    reference: &str,
) -> anyhow::Result<Option<TaskDefinition>> {
    match cache.taskdef(reference) {
        Some(td) => Ok(Some((*td).clone())),
        None => Ok(objects::taskdef(store, reference).await?),
    }
}

/// REPLICA: the spec's count; DAEMON: one per ACTIVE instance of the cluster.
pub fn desired_count(cache: &ClusterCache, svc: &Service) -> u32 {
    match svc.spec.scheduling_strategy.unwrap_or_default() {
        SchedulingStrategy::Replica => svc.spec.desired_count,
        SchedulingStrategy::Daemon => {
            // Instances that can run its task: ACTIVE and connected, or disconnected but
            // still holding it (within the lost-instance grace its task is not replaced).
            let instances: Vec<std::sync::Arc<ContainerInstance>> = cache.instances.list();
            let holds = |i: &ContainerInstance| {
                cache
                    .tasks_on_instance(&i.metadata.name)
                    .iter()
                    .any(|t| t.is_active() && t.service_name() == Some(svc.metadata.name.as_str()))
            };
            instances
                .iter()
                .filter(|i| i.spec.cluster == svc.spec.cluster && i.status.status == "ACTIVE")
                .filter(|i| cache.connected(&i.metadata.name) || holds(i))
                .count() as u32
        }
    }
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
    cache: &ClusterCache,
    tasks: &[Arc<Task>],
    extra: &[&TaskDefinition],
) -> anyhow::Result<std::collections::BTreeMap<String, bool>> {
    let mut m = std::collections::BTreeMap::new();
    for td in extra {
        m.insert(td.metadata.name.clone(), has_checks(td));
    }
    for t in tasks {
        if !m.contains_key(&t.spec.task_definition) {
            let h = taskdef(store, cache, &t.spec.task_definition)
                .await?
                .map(|d| has_checks(&d))
                .unwrap_or(false);
            m.insert(t.spec.task_definition.clone(), h);
        }
    }
    Ok(m)
}

/// Push an event unless it is among the newest few (level-triggered reconciles repeat).
pub fn event_once(svc: &mut Service, msg: String) {
    // Among the newest few, not only the newest: two conditions that each report once would
    // otherwise alternate, and every pass would rewrite the service (a write loop).
    let recent = svc.status.events.iter().take(EVENT_ONCE_WINDOW);
    if !recent.into_iter().any(|e| e.message == msg) {
        svc.status.push_event(msg);
    }
}

/// How many of the newest events `event_once` looks through.
const EVENT_ONCE_WINDOW: usize = 4;

/// Maps a changed task definition to the services that follow its family (the cache's
/// services-by-family index), so a new revision triggers exactly those.
pub fn family_trigger(
    cache: &ClusterCache,
) -> impl Fn(&TaskDefinition) -> Vec<String> + Send + Sync + 'static {
    let cache = cache.clone();
    move |td: &TaskDefinition| cache.services_of_family(&td.status.family)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::model::{Kind, ServiceSpec};

    /// Two conditions reported on every pass (a back-off and a stuck rollout once did this)
    /// must not alternate forever: after both are there, a pass changes nothing.
    #[test]
    fn alternating_events_settle() {
        let mut svc = Service::new(Kind::Service, "web", ServiceSpec::default());
        for _ in 0..3 {
            event_once(&mut svc, "backing off".into());
            event_once(&mut svc, "stuck".into());
        }
        assert_eq!(svc.status.events.len(), 2);
    }
}
