//! The control plane's shared cache: every kind the controllers read, watched once per process
//! by one [`SharedInformer`], decoded once, with the indexes the controllers ask for:
//!
//! - tasks by service (`Task::service_name()`), by container instance
//!   (`status.containerInstance`), by phase (`unplaced`, `active`, `stopped`), and the
//!   resources every instance's tasks hold ([`InstanceUsage`], kept as tasks change);
//! - services by task-definition family; task definitions by family; targets by service.
//!
//! Reconcilers read from it and keep writing with compare-and-swap, so a stale read costs a
//! retry, never a wrong write. Where a decision would be wrong on a stale cut (creating tasks
//! from a task count), the reader first waits until the cache has seen the revision of the
//! record it fences on ([`ClusterCache::wait_for`]).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Duration;

use super::informer::{CacheError, SharedInformer, CATCH_UP};
use super::reflector::{Aggregate, Reflector, Sink};
use crate::model::lb::{lb_keys, Target, TargetHealth};
use crate::model::{
    keys, parse_taskdef_ref, ContainerInstance, Kind, Object, Service, Task, TaskDefinition,
};
use crate::store::{DynStore, KeyValue};

pub const TASKS_BY_SERVICE: &str = "service";
pub const TASKS_BY_INSTANCE: &str = "instance";
/// Values: `unplaced` (no instance, not stopped), `active` (wanted and not stopped), `stopped`.
pub const TASKS_BY_PHASE: &str = "phase";
pub const SERVICES_BY_FAMILY: &str = "family";
pub const TASKDEFS_BY_FAMILY: &str = "family";
pub const TARGETS_BY_SERVICE: &str = "service";

pub const UNPLACED: &str = "unplaced";
pub const ACTIVE: &str = "active";
pub const STOPPED: &str = "stopped";

/// What the tasks on one instance hold: what capacity and placement need, counted as the
/// tasks change instead of folded over every task at each placement.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Usage {
    pub cpu: u32,
    pub memory: u32,
    /// Tasks holding resources (placed, not yet stopped).
    pub tasks: u32,
    /// Active tasks per group (`service:web`), for spread and distinctInstance.
    pub groups: HashMap<String, u32>,
    /// Tasks per task definition (`family:rev`): the host ports they hold come from there.
    pub taskdefs: HashMap<String, u32>,
    /// Tasks by `lastStatus` below RUNNING and at RUNNING (the instance's counters).
    pub pending: u32,
    pub running: u32,
}

#[derive(Debug, Default)]
pub struct InstanceUsage {
    by_instance: HashMap<String, Usage>,
}

impl InstanceUsage {
    pub fn get(&self, instance: &str) -> Usage {
        self.by_instance.get(instance).cloned().unwrap_or_default()
    }
}

fn bump(m: &mut HashMap<String, u32>, k: &str, add: bool) {
    if add {
        *m.entry(k.to_string()).or_insert(0) += 1;
    } else if let Some(n) = m.get_mut(k) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            m.remove(k);
        }
    }
}

impl InstanceUsage {
    fn change(&mut self, t: &Task, add: bool) {
        if !t.holds_resources() {
            return;
        }
        let Some(i) = t.status.container_instance.as_deref() else {
            return;
        };
        let u = self.by_instance.entry(i.to_string()).or_default();
        let sign = |v: &mut u32, d: u32| {
            *v = if add { *v + d } else { v.saturating_sub(d) };
        };
        sign(&mut u.cpu, t.spec.cpu);
        sign(&mut u.memory, t.spec.memory);
        sign(&mut u.tasks, 1);
        if t.status.last_status == crate::model::TaskState::Running {
            sign(&mut u.running, 1);
        } else if t.status.last_status < crate::model::TaskState::Running {
            sign(&mut u.pending, 1);
        }
        if t.is_active() {
            bump(&mut u.groups, &t.spec.group, add);
        }
        bump(&mut u.taskdefs, &t.spec.task_definition, add);
        if u.tasks == 0 {
            self.by_instance.remove(i);
        }
    }
}

impl Aggregate<Task> for InstanceUsage {
    fn add(&mut self, t: &Task) {
        self.change(t, true)
    }
    fn remove(&mut self, t: &Task) {
        self.change(t, false)
    }
}

fn object<S, T>(kv: &KeyValue) -> Option<Object<S, T>>
where
    S: serde::de::DeserializeOwned,
    T: serde::de::DeserializeOwned + Default,
{
    Object::from_kv(kv).ok()
}

fn task_service(t: &Task) -> Vec<String> {
    t.service_name().map(str::to_string).into_iter().collect()
}

fn task_instance(t: &Task) -> Vec<String> {
    t.status.container_instance.clone().into_iter().collect()
}

fn task_phase(t: &Task) -> Vec<String> {
    let mut v = Vec::new();
    if t.status.container_instance.is_none() && !t.is_stopped() {
        v.push(UNPLACED.to_string());
    }
    if t.is_active() {
        v.push(ACTIVE.to_string());
    }
    if t.is_stopped() {
        v.push(STOPPED.to_string());
    }
    v
}

fn service_family(s: &Service) -> Vec<String> {
    parse_taskdef_ref(&s.spec.task_definition)
        .map(|(f, _)| vec![f.to_string()])
        .unwrap_or_default()
}

fn taskdef_family(td: &TaskDefinition) -> Vec<String> {
    vec![td.status.family.clone()]
}

fn target_service(t: &Target) -> Vec<String> {
    vec![t.service.clone()]
}

/// The shared cache of one process (cheap to clone).
#[derive(Clone)]
pub struct ClusterCache {
    pub informer: SharedInformer,
    pub tasks: Arc<Reflector<Task, InstanceUsage>>,
    pub services: Arc<Reflector<Service>>,
    pub instances: Arc<Reflector<ContainerInstance>>,
    /// Instance lease keys: present while the instance's agent is connected.
    pub leases: Arc<Reflector<()>>,
    pub taskdefs: Arc<Reflector<TaskDefinition>>,
    pub targets: Arc<Reflector<Target>>,
    pub target_health: Arc<Reflector<TargetHealth>>,
}

impl ClusterCache {
    /// Start caching the standard kinds, plus `extra` prefixes (keys only) that controllers
    /// trigger on, so those share the one watch too.
    pub fn start(store: DynStore, extra: &[&str]) -> ClusterCache {
        let tasks = Arc::new(
            Reflector::new(keys::prefix(Kind::Task), object::<_, _>)
                .index(TASKS_BY_SERVICE, task_service)
                .index(TASKS_BY_INSTANCE, task_instance)
                .index(TASKS_BY_PHASE, task_phase),
        );
        let services = Arc::new(
            Reflector::new(keys::prefix(Kind::Service), object::<_, _>)
                .index(SERVICES_BY_FAMILY, service_family),
        );
        let instances = Arc::new(Reflector::new(
            keys::prefix(Kind::ContainerInstance),
            object::<_, _>,
        ));
        let leases = Arc::new(Reflector::new(keys::INSTANCE_LEASE_PREFIX, |_| Some(())));
        let taskdefs = Arc::new(
            Reflector::new(keys::prefix(Kind::TaskDefinition), object::<_, _>)
                .index(TASKDEFS_BY_FAMILY, taskdef_family),
        );
        let targets = Arc::new(
            Reflector::new(lb_keys::TARGETS, |kv: &KeyValue| {
                serde_json::from_slice::<Target>(&kv.value).ok()
            })
            .index(TARGETS_BY_SERVICE, target_service),
        );
        let target_health = Arc::new(Reflector::new(lb_keys::TARGET_HEALTH, |kv: &KeyValue| {
            serde_json::from_slice::<TargetHealth>(&kv.value).ok()
        }));
        let mut sinks: Vec<Arc<dyn Sink>> = vec![
            tasks.clone(),
            services.clone(),
            instances.clone(),
            leases.clone(),
            taskdefs.clone(),
            targets.clone(),
            target_health.clone(),
            Arc::new(Reflector::<()>::new(
                keys::prefix(Kind::ScalingPolicy),
                |_| Some(()),
            )),
        ];
        for p in extra {
            sinks.push(Arc::new(Reflector::<()>::new(*p, |_| Some(()))));
        }
        let informer = SharedInformer::start(store, keys::ROOT, sinks);
        ClusterCache {
            informer,
            tasks,
            services,
            instances,
            leases,
            taskdefs,
            targets,
            target_health,
        }
    }

    /// Wait until the cache has seen `revision` (at most [`CATCH_UP`]).
    pub async fn wait_for(&self, revision: i64) -> Result<(), CacheError> {
        self.informer.wait_for(revision, CATCH_UP).await
    }

    pub async fn wait_for_within(&self, revision: i64, d: Duration) -> Result<(), CacheError> {
        self.informer.wait_for(revision, d).await
    }

    /// Every task of a service (any state), from the index.
    pub fn tasks_of_service(&self, service: &str) -> Vec<Arc<Task>> {
        self.tasks.by_index(TASKS_BY_SERVICE, service)
    }

    pub fn tasks_on_instance(&self, instance: &str) -> Vec<Arc<Task>> {
        self.tasks.by_index(TASKS_BY_INSTANCE, instance)
    }

    /// Tasks waiting for a placement.
    pub fn unplaced_tasks(&self) -> Vec<Arc<Task>> {
        self.tasks.by_index(TASKS_BY_PHASE, UNPLACED)
    }

    /// Names of services whose task definition is of `family`.
    pub fn services_of_family(&self, family: &str) -> Vec<String> {
        self.services
            .by_index(SERVICES_BY_FAMILY, family)
            .iter()
            .map(|s| s.metadata.name.clone())
            .collect()
    }

    /// Names of services that have tasks (any state).
    pub fn services_with_tasks(&self) -> Vec<String> {
        self.tasks.index_values(TASKS_BY_SERVICE)
    }

    pub fn usage(&self, instance: &str) -> Usage {
        self.tasks.aggregate(|a| a.get(instance))
    }

    pub fn connected(&self, instance: &str) -> bool {
        self.leases
            .get(&keys::instance_lease_key(instance))
            .is_some()
    }

    /// [`crate::objects::taskdef`] from the cache: `family:N` exactly, `family` its latest
    /// ACTIVE revision.
    pub fn taskdef(&self, reference: &str) -> Option<Arc<TaskDefinition>> {
        let (family, rev) = parse_taskdef_ref(reference)?;
        if family.is_empty() || family.contains('/') {
            return None;
        }
        match rev {
            Some(r) => self.taskdefs.get(&keys::taskdef_key(family, r)),
            None => self
                .taskdefs
                .by_index(TASKDEFS_BY_FAMILY, family)
                .into_iter()
                .rev()
                .find(|t| t.status.status != "INACTIVE"),
        }
    }

    /// Lookups made and objects handed out by every reflector, summed (for tests that check
    /// a reconcile's work does not follow the cluster's size).
    pub fn read_stats(&self) -> (u64, u64) {
        [
            self.tasks.stats().get(),
            self.services.stats().get(),
            self.instances.stats().get(),
            self.leases.stats().get(),
            self.taskdefs.stats().get(),
            self.targets.stats().get(),
            self.target_health.stats().get(),
        ]
        .iter()
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }
}
