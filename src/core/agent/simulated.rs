//! A simulated agent (a fake, named as such): plays an agent's part against the store without
//! Docker, for fast controller tests and scale benchmarks.
//!
//! One [`SimulatedAgent`] stands for any number of simulated container instances. Like the
//! real agent it registers each instance's `ContainerInstance` record, holds the instance's
//! lease key, and plays the tasks assigned to its instances through the status transitions a
//! real agent writes:
//!
//! - placed (PENDING) → RUNNING with `containers[]` (a fake `dockerId`, network bindings for
//!   the host ports of bridge-mode port mappings, the task IP in awsvpc mode), health HEALTHY
//!   when the container has a health check (UNKNOWN otherwise), `startedAt`;
//! - asked to stop → held in DEACTIVATING while the task has a load-balancer target (as the
//!   real agent waits for draining), then STOPPED with exit codes, bindings cleared and the
//!   stop code and reason of whoever asked kept (UserInitiated only when none was given);
//! - an essential container exiting → stopped with `EssentialContainerExited`; a task that
//!   cannot start → stopped with `TaskFailedToStart`.
//!
//! Knobs for tests: [`SimulatedAgent::exit_container`], [`SimulatedAgent::set_health`],
//! [`SimulatedAgent::fail_starts_of`] / [`SimulatedAgent::fail_next_starts`],
//! [`SimulatedAgent::set_start_delay`], and [`SimulatedAgent::disconnect`] (drops the
//! instance's lease, as a partition or a dead host would) / [`SimulatedAgent::reconnect`].
//!
//! Cost: one store watch on the task prefix for the whole agent (not one per instance), one
//! keep-alive pass over all leases per `lease_ttl / 4`, and per task a handful of reads and
//! writes at its transitions. No timers run for a task except while a configured delay is
//! pending (start delay, healthy delay, stop delay, draining): those wake the task's own key
//! through the reconcile queue and read only that task.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::model::lb::{lb_keys, Target};
use crate::model::{
    keys, new_id, now, stop_codes, ContainerInstance, ContainerInstanceSpec, ContainerStatus,
    DesiredStatus, HealthStatus, Kind, NetworkBinding, NetworkMode, Resources, Service, Task,
    TaskDefinition, TaskState,
};
use crate::objects::{self, ObjectError};
use crate::runtime::queue::Queue;
use crate::runtime::{Action, Controller, ControllerOptions, Reconciler, Trigger};
use crate::store::{DynStore, KeyValue, Op, StoreError, Txn};

/// First dynamic host port handed out on each simulated instance (Docker's default range).
const FIRST_DYNAMIC_PORT: u16 = 32768;

/// Settings shared by every instance of a [`SimulatedAgent`].
#[derive(Debug, Clone)]
pub struct SimulatedAgentConfig {
    pub cluster: String,
    /// CPU units and MiB each simulated instance offers.
    pub cpu: u32,
    pub memory: u32,
    /// The address recorded on each instance for reaching its host ports.
    pub host_ip: String,
    pub lease_ttl: Duration,
    /// How long a task stays ACTIVATING before RUNNING (a simulated image pull and start).
    pub start_delay: Duration,
    /// How long a started container with a health check reports UNKNOWN before HEALTHY.
    pub healthy_after: Duration,
    /// How long a task stays DEACTIVATING after SIGTERM (its containers shutting down).
    pub stop_delay: Duration,
    /// Exit code of a container stopped on request.
    pub stop_exit_code: i64,
    /// Periodic pass over every task of the agent's instances (a safety net, as in the
    /// real agent).
    pub resync: Duration,
    pub workers: usize,
}

impl SimulatedAgentConfig {
    pub fn new(cluster: &str) -> Self {
        SimulatedAgentConfig {
            cluster: cluster.into(),
            cpu: 4096,
            memory: 8192,
            host_ip: "127.0.0.1".into(),
            lease_ttl: Duration::from_secs(10),
            start_delay: Duration::ZERO,
            healthy_after: Duration::ZERO,
            stop_delay: Duration::ZERO,
            stop_exit_code: 0,
            resync: Duration::from_secs(20),
            workers: 8,
        }
    }
}

/// What the simulation knows about one instance.
#[derive(Debug, Default)]
struct SimInstance {
    connected: bool,
    next_port: u16,
    /// Index of this instance (for fake awsvpc task IPs) and the tasks it numbered so far.
    index: u32,
    next_ip: u32,
}

/// What the simulation knows about one live task (forgotten once it is STOPPED).
#[derive(Debug, Default)]
struct SimTask {
    first_seen: Option<Instant>,
    started: Option<Instant>,
    sigterm_at: Option<Instant>,
    /// Containers that exited on their own, with their exit codes.
    exits: BTreeMap<String, i64>,
    /// Health reported for containers (overrides the default HEALTHY of checked ones); the
    /// empty name stands for every checked container.
    health: BTreeMap<String, HealthStatus>,
}

#[derive(Debug, Default)]
struct Knobs {
    /// Task-definition references (`family` or `family:rev`) whose tasks fail to start.
    fail_taskdefs: BTreeSet<String>,
    /// The next this many tasks to start fail.
    fail_next: u32,
    start_delay: Option<Duration>,
}

struct Inner {
    store: DynStore,
    cfg: SimulatedAgentConfig,
    instances: RwLock<HashMap<String, SimInstance>>,
    /// Lease of each connected instance (held across store calls, hence async).
    leases: tokio::sync::Mutex<HashMap<String, i64>>,
    tasks: Mutex<HashMap<String, SimTask>>,
    /// Tasks held in DEACTIVATING until their load-balancer targets are gone.
    draining: Mutex<HashSet<String>>,
    knobs: Mutex<Knobs>,
    /// Resolved task definitions (`family:rev` is immutable in what the agent reads).
    taskdefs: Mutex<HashMap<String, Arc<TaskDefinition>>>,
}

/// A simulated agent for any number of simulated container instances. See the module docs.
pub struct SimulatedAgent {
    inner: Arc<Inner>,
    queue: Arc<Queue>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl SimulatedAgent {
    /// Start the simulated agent (its task watch and its lease keep-alive) until `shutdown`.
    /// Instances are added with [`SimulatedAgent::add_instance`].
    pub fn start(store: DynStore, cfg: SimulatedAgentConfig, shutdown: CancellationToken) -> Self {
        let inner = Arc::new(Inner {
            store: store.clone(),
            cfg: cfg.clone(),
            instances: RwLock::new(HashMap::new()),
            leases: tokio::sync::Mutex::new(HashMap::new()),
            tasks: Mutex::new(HashMap::new()),
            draining: Mutex::new(HashSet::new()),
            knobs: Mutex::new(Knobs::default()),
            taskdefs: Mutex::new(HashMap::new()),
        });
        let on_task = {
            let inner = inner.clone();
            move |kv: &KeyValue| -> Vec<String> {
                match serde_json::from_slice::<Task>(&kv.value) {
                    Ok(t) if inner.serves(t.status.container_instance.as_deref()) => {
                        vec![t.metadata.name]
                    }
                    _ => vec![],
                }
            }
        };
        let on_target = {
            let inner = inner.clone();
            move |kv: &KeyValue| -> Vec<String> {
                match serde_json::from_slice::<Target>(&kv.value) {
                    Ok(t) if inner.draining.lock().unwrap().contains(&t.task_id) => {
                        vec![t.task_id]
                    }
                    _ => vec![],
                }
            }
        };
        let controller = Controller::new(
            "simulated-agent",
            store,
            Arc::new(SimRunner(inner.clone())),
            ControllerOptions {
                workers: cfg.workers,
                resync: cfg.resync,
                ..Default::default()
            },
        )
        .trigger(Trigger::new(keys::prefix(Kind::Task), on_task))
        .trigger(Trigger::new(lb_keys::TARGETS, on_target));
        let queue = controller.queue();
        let handles = vec![
            tokio::spawn(controller.run(shutdown.clone())),
            tokio::spawn(keep_leases(inner.clone(), shutdown)),
        ];
        SimulatedAgent {
            inner,
            queue,
            handles: Mutex::new(handles),
        }
    }

    /// Register a simulated container instance (its record and its lease key), as a real
    /// agent does when it joins.
    pub async fn add_instance(&self, id: &str) -> anyhow::Result<()> {
        {
            let mut all = self.inner.instances.write().unwrap();
            let index = all.len() as u32;
            all.entry(id.to_string()).or_insert(SimInstance {
                connected: false,
                next_port: FIRST_DYNAMIC_PORT,
                index,
                next_ip: 0,
            });
        }
        register(&self.inner, id).await?;
        self.connect(id, false).await
    }

    /// Register `n` instances named `{prefix}-{i}`; returns their ids.
    pub async fn add_instances(&self, prefix: &str, n: usize) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let id = format!("{prefix}-{i}");
            self.add_instance(&id).await?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Simulated instance ids.
    pub fn instances(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .instances
            .read()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Cut the instance off: its lease is revoked (the lease key vanishes at once, as when a
    /// lease expires) and the simulation stops acting on its tasks until [`reconnect`].
    ///
    /// [`reconnect`]: SimulatedAgent::reconnect
    pub async fn disconnect(&self, id: &str) -> anyhow::Result<()> {
        let mut leases = self.inner.leases.lock().await;
        if let Some(i) = self.inner.instances.write().unwrap().get_mut(id) {
            i.connected = false;
        }
        if let Some(l) = leases.remove(id) {
            match self.inner.store.lease_revoke(l).await {
                Ok(()) | Err(StoreError::LeaseNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Hold the instance's lease again and resume its tasks (what the real agent does after a
    /// partition heals or on restart).
    pub async fn reconnect(&self, id: &str) -> anyhow::Result<()> {
        self.connect(id, true).await
    }

    /// Take the instance's lease; with `resume`, look at its tasks again.
    async fn connect(&self, id: &str, resume: bool) -> anyhow::Result<()> {
        let mut leases = self.inner.leases.lock().await;
        if !self.inner.instances.read().unwrap().contains_key(id) {
            anyhow::bail!("{id} is not a simulated instance of this agent");
        }
        if !leases.contains_key(id) {
            leases.insert(id.to_string(), self.inner.acquire(id).await?);
        }
        if let Some(i) = self.inner.instances.write().unwrap().get_mut(id) {
            i.connected = true;
        }
        drop(leases);
        if resume {
            for t in self.inner.live_tasks().await? {
                self.queue.add(&t);
            }
        }
        Ok(())
    }

    /// Make a task's container exit with `code` (as if its process died). An essential
    /// container exiting stops the task with `EssentialContainerExited`.
    pub fn exit_container(&self, task: &str, container: &str, code: i64) {
        self.inner.with_task(task, |t| {
            t.exits.insert(container.to_string(), code);
        });
        self.queue.add(task);
    }

    /// Report `health` for a task's containers that have health checks (`container`: one of
    /// them, `None`: all). UNHEALTHY is what the recovery controller acts on.
    pub fn set_health(&self, task: &str, container: Option<&str>, health: HealthStatus) {
        self.inner.with_task(task, |t| {
            if container.is_none() {
                t.health.clear();
            }
            t.health
                .insert(container.unwrap_or_default().to_string(), health);
        });
        self.queue.add(task);
    }

    /// Every new task of `taskdef` (`family` for all its revisions, or `family:rev`) fails
    /// to start from now on.
    pub fn fail_starts_of(&self, taskdef: &str) {
        self.inner
            .knobs
            .lock()
            .unwrap()
            .fail_taskdefs
            .insert(taskdef.to_string());
    }

    /// The next `n` tasks to start fail to start.
    pub fn fail_next_starts(&self, n: u32) {
        self.inner.knobs.lock().unwrap().fail_next = n;
    }

    /// Undo [`fail_starts_of`] and [`fail_next_starts`].
    ///
    /// [`fail_starts_of`]: SimulatedAgent::fail_starts_of
    /// [`fail_next_starts`]: SimulatedAgent::fail_next_starts
    pub fn clear_start_failures(&self) {
        let mut k = self.inner.knobs.lock().unwrap();
        k.fail_taskdefs.clear();
        k.fail_next = 0;
    }

    /// Tasks not yet started from now on stay ACTIVATING this long (overrides the config).
    pub fn set_start_delay(&self, d: Duration) {
        self.inner.knobs.lock().unwrap().start_delay = Some(d);
    }

    /// Wait for the agent to finish after its `shutdown` was cancelled.
    pub async fn join(&self) {
        let handles: Vec<JoinHandle<()>> = std::mem::take(&mut *self.handles.lock().unwrap());
        for h in handles {
            let _ = h.await;
        }
    }
}

/// Create or refresh an instance's record (keeping what the scheduler wrote), as the real
/// agent's registration does, with the configured resources instead of Docker's.
async fn register(inner: &Inner, id: &str) -> anyhow::Result<()> {
    let key = keys::key(Kind::ContainerInstance, id);
    let offered = Resources {
        cpu: inner.cfg.cpu,
        memory: inner.cfg.memory,
        ports: vec![],
    };
    for _ in 0..20 {
        let existing: Option<ContainerInstance> = objects::get(&*inner.store, &key).await?;
        let mut inst = match existing {
            Some(i) => i,
            None => {
                let mut i = ContainerInstance::new(
                    Kind::ContainerInstance,
                    id,
                    ContainerInstanceSpec::default(),
                );
                i.metadata.uid = new_id();
                i.metadata.created_at = Some(now());
                i.status.status = "ACTIVE".into();
                i.status.registered_at = Some(now());
                i.status.remaining_resources = offered.clone();
                i
            }
        };
        inst.spec.cluster = inner.cfg.cluster.clone();
        inst.spec.host_ip = inner.cfg.host_ip.clone();
        inst.status.registered_resources = offered.clone();
        inst.status.docker_version = "simulated".into();
        inst.status.agent_connected = true;
        match objects::put_cas(&*inner.store, &key, &inst).await {
            Ok(_) => return Ok(()),
            Err(ObjectError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("could not register simulated instance {id}: too many conflicts")
}

/// Renew every connected instance's lease each `lease_ttl / 4`; re-acquire one that expired.
async fn keep_leases(inner: Arc<Inner>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(inner.cfg.lease_ttl / 4) => {}
        }
        let mut leases = inner.leases.lock().await;
        let held: Vec<(String, i64)> = leases.iter().map(|(k, v)| (k.clone(), *v)).collect();
        for (id, lease) in held {
            match inner.store.lease_keep_alive(lease).await {
                Ok(()) => {}
                Err(StoreError::LeaseNotFound(_)) => {
                    tracing::warn!(instance = %id, "simulated instance lease expired; re-acquiring");
                    match inner.acquire(&id).await {
                        Ok(l) => {
                            leases.insert(id, l);
                        }
                        Err(e) => tracing::warn!(error = %e, "could not re-acquire a lease"),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "simulated lease keep-alive failed"),
            }
        }
    }
    let leases = std::mem::take(&mut *inner.leases.lock().await);
    for l in leases.values() {
        let _ = inner.store.lease_revoke(*l).await;
    }
}

impl Inner {
    /// Is `instance` one of ours and connected?
    fn serves(&self, instance: Option<&str>) -> bool {
        instance.is_some_and(|i| {
            self.instances
                .read()
                .unwrap()
                .get(i)
                .is_some_and(|s| s.connected)
        })
    }

    async fn acquire(&self, id: &str) -> Result<i64, StoreError> {
        let l = self.store.lease_grant(self.cfg.lease_ttl).await?;
        self.store
            .txn(Txn::new().and_then(Op::put_with_lease(
                keys::instance_lease_key(id),
                b"connected".to_vec(),
                l,
            )))
            .await?;
        Ok(l)
    }

    fn with_task<R>(&self, id: &str, f: impl FnOnce(&mut SimTask) -> R) -> R {
        f(self
            .tasks
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default())
    }

    fn forget(&self, id: &str) {
        self.tasks.lock().unwrap().remove(id);
        self.draining.lock().unwrap().remove(id);
    }

    /// Tasks on our connected instances that have not stopped.
    async fn live_tasks(&self) -> anyhow::Result<Vec<String>> {
        Ok(objects::list_tasks(&*self.store)
            .await?
            .into_iter()
            .filter(|t| !t.is_stopped() && self.serves(t.status.container_instance.as_deref()))
            .map(|t| t.metadata.name)
            .collect())
    }

    async fn taskdef(&self, reference: &str) -> anyhow::Result<Option<Arc<TaskDefinition>>> {
        if let Some(td) = self.taskdefs.lock().unwrap().get(reference) {
            return Ok(Some(td.clone()));
        }
        let Some(td) = objects::taskdef(&*self.store, reference).await? else {
            return Ok(None);
        };
        let td = Arc::new(td);
        if reference.contains(':') {
            self.taskdefs
                .lock()
                .unwrap()
                .insert(reference.to_string(), td.clone());
        }
        Ok(Some(td))
    }

    /// Should this task fail to start (decided once, when it would start)?
    fn start_fails(&self, taskdef: &str) -> bool {
        let mut k = self.knobs.lock().unwrap();
        let family = taskdef.split(':').next().unwrap_or(taskdef);
        if k.fail_taskdefs.contains(taskdef) || k.fail_taskdefs.contains(family) {
            return true;
        }
        if k.fail_next > 0 {
            k.fail_next -= 1;
            return true;
        }
        false
    }

    fn start_delay(&self) -> Duration {
        self.knobs
            .lock()
            .unwrap()
            .start_delay
            .unwrap_or(self.cfg.start_delay)
    }

    /// The containers of a task starting on `instance`: fake ids, bindings for bridge-mode
    /// port mappings (fixed or the instance's next dynamic port), and the task IP (awsvpc).
    fn start_containers(
        &self,
        instance: &str,
        td: &TaskDefinition,
        health: HealthStatus,
    ) -> (Vec<ContainerStatus>, Option<String>) {
        let mode = td.spec.network_mode();
        let mut all = self.instances.write().unwrap();
        let Some(inst) = all.get_mut(instance) else {
            return (vec![], None);
        };
        let containers = td
            .spec
            .container_definitions
            .iter()
            .map(|c| {
                let mut network_bindings = Vec::new();
                if mode == NetworkMode::Bridge {
                    for p in &c.port_mappings {
                        let host_port = match p.host_port {
                            Some(h) if h != 0 => h,
                            _ => {
                                let h = inst.next_port;
                                inst.next_port = h.checked_add(1).unwrap_or(FIRST_DYNAMIC_PORT);
                                h
                            }
                        };
                        network_bindings.push(NetworkBinding {
                            container_port: p.container_port,
                            host_port,
                            bind_ip: "0.0.0.0".into(),
                            protocol: p.protocol.unwrap_or_default().as_str().into(),
                        });
                    }
                }
                ContainerStatus {
                    name: c.name.clone(),
                    docker_id: Some(format!("{}{}", new_id(), new_id())),
                    last_status: "RUNNING".into(),
                    health_status: if checked(c) {
                        health
                    } else {
                        HealthStatus::Unknown
                    },
                    network_bindings,
                    ..Default::default()
                }
            })
            .collect();
        let task_ip = (mode == NetworkMode::Awsvpc).then(|| {
            inst.next_ip += 1;
            let n = inst.next_ip;
            format!(
                "10.{}.{}.{}",
                inst.index % 256,
                (n / 250) % 256,
                n % 250 + 2
            )
        });
        (containers, task_ip)
    }
}

/// Does the container have a (real) health check?
fn checked(c: &crate::model::ContainerDefinition) -> bool {
    c.health_check
        .as_ref()
        .is_some_and(|h| h.command.first().map(String::as_str) != Some("NONE"))
}

/// ECS task health from its essential checked containers: UNHEALTHY if any is, HEALTHY if
/// all are, UNKNOWN otherwise (and when none has a check).
fn task_health(td: &TaskDefinition, containers: &[ContainerStatus]) -> HealthStatus {
    let states: Vec<HealthStatus> = td
        .spec
        .container_definitions
        .iter()
        .filter(|c| c.is_essential() && checked(c))
        .map(|c| {
            containers
                .iter()
                .find(|s| s.name == c.name)
                .map(|s| s.health_status)
                .unwrap_or_default()
        })
        .collect();
    if states.contains(&HealthStatus::Unhealthy) {
        HealthStatus::Unhealthy
    } else if !states.is_empty() && states.iter().all(|s| *s == HealthStatus::Healthy) {
        HealthStatus::Healthy
    } else {
        HealthStatus::Unknown
    }
}

struct SimRunner(Arc<Inner>);

/// Why the simulation stops a task on its own.
struct Cause {
    code: &'static str,
    reason: String,
}

impl SimRunner {
    /// DEACTIVATING (with the cause, if any), then STOPPED once the simulated shutdown is
    /// over: exit codes recorded, bindings cleared, the first stop code kept.
    async fn stop(&self, task: &Task, cause: Option<Cause>) -> anyhow::Result<Action> {
        let s = &self.0;
        let id = task.metadata.name.as_str();
        if task.status.last_status < TaskState::Deactivating || cause.is_some() {
            self.deactivate(id, cause.as_ref()).await?;
        }
        let (sigterm_at, exits) = s.with_task(id, |t| {
            (
                *t.sigterm_at.get_or_insert_with(Instant::now),
                t.exits.clone(),
            )
        });
        let left = s.cfg.stop_delay.saturating_sub(sigterm_at.elapsed());
        if !left.is_zero() {
            return Ok(Action::RequeueAfter(left));
        }
        let stop_exit = s.cfg.stop_exit_code;
        objects::update_task(&*s.store, id, |t| {
            if t.is_stopped() {
                return false;
            }
            for c in t.status.containers.iter_mut() {
                if c.last_status == "RUNNING" {
                    c.exit_code = Some(exits.get(&c.name).copied().unwrap_or(stop_exit));
                }
                c.last_status = "STOPPED".into();
                c.network_bindings.clear();
            }
            // Stopped without a request (none of ours): the stop counts as the user's.
            t.request_stop(stop_codes::USER_INITIATED, "Task stopped");
            t.status.last_status = TaskState::Stopped;
            t.status.stopped_at = Some(now());
            true
        })
        .await?;
        s.forget(id);
        Ok(Action::Done)
    }

    /// While a load-balancer target of the task exists (up to its deregistration delay plus
    /// a margin), hold the task in DEACTIVATING: the real agent's draining wait. The targets
    /// looked at are those of the service's target groups; their deletion wakes the task.
    async fn draining(&self, task: &Task) -> anyhow::Result<Option<Duration>> {
        let s = &self.0;
        let Some(svc_name) = task.service_name() else {
            return Ok(None);
        };
        let svc: Option<Service> =
            objects::get(&*s.store, &keys::key(Kind::Service, svc_name)).await?;
        let mut delay = None;
        for lb in svc.iter().flat_map(|s| s.spec.load_balancers.iter()) {
            let key = lb_keys::target(&lb.target_group, &task.metadata.name);
            if let Some(kv) = s.store.get(&key).await? {
                if let Ok(t) = serde_json::from_slice::<Target>(&kv.value) {
                    delay = delay.max(Some(t.deregistration_delay_seconds));
                }
            }
        }
        let Some(delay) = delay else {
            s.draining.lock().unwrap().remove(&task.metadata.name);
            return Ok(None);
        };
        let since = task.status.stopping_at.unwrap_or_else(now);
        let until = since + chrono::Duration::seconds(delay as i64 + 5);
        let Ok(left) = (until - now()).to_std() else {
            s.draining.lock().unwrap().remove(&task.metadata.name);
            return Ok(None);
        };
        s.draining
            .lock()
            .unwrap()
            .insert(task.metadata.name.clone());
        if task.status.last_status < TaskState::Deactivating {
            self.deactivate(&task.metadata.name, None).await?;
        }
        Ok(Some(left))
    }

    /// DEACTIVATING (stamped `stoppingAt`), and asked to stop for `cause` unless someone
    /// asked first (the first stop code stands).
    async fn deactivate(&self, id: &str, cause: Option<&Cause>) -> anyhow::Result<()> {
        objects::update_task(&*self.0.store, id, |t| {
            let asked = cause.is_some_and(|c| t.request_stop(c.code, &c.reason));
            let begins = !t.is_stopped() && t.status.last_status < TaskState::Deactivating;
            if begins {
                t.status.last_status = TaskState::Deactivating;
                t.status.stopping_at = Some(now());
            }
            asked || begins
        })
        .await?;
        Ok(())
    }

    async fn run(&self, task: &Task, instance: &str) -> anyhow::Result<Action> {
        let s = &self.0;
        let id = task.metadata.name.as_str();
        let Some(td) = s.taskdef(&task.spec.task_definition).await? else {
            let reason = format!("task definition {} not found", task.spec.task_definition);
            return self.stop(task, Some(failed_to_start(reason))).await;
        };
        let started = task.status.containers.iter().any(|c| c.docker_id.is_some());
        if !started {
            return self.start(task, instance, &td).await;
        }
        let (exits, overrides, since) =
            s.with_task(id, |t| (t.exits.clone(), t.health.clone(), t.started));
        // Essential semantics: one essential container exiting stops the task.
        for c in &td.spec.container_definitions {
            if let (true, Some(code)) = (c.is_essential(), exits.get(&c.name)) {
                let reason = format!(
                    "Essential container in task exited: {} (exit code {code})",
                    c.name
                );
                return self
                    .stop(
                        task,
                        Some(Cause {
                            code: stop_codes::ESSENTIAL_CONTAINER_EXITED,
                            reason,
                        }),
                    )
                    .await;
            }
        }
        let healthy_left = since
            .map(|at| s.cfg.healthy_after.saturating_sub(at.elapsed()))
            .unwrap_or_default();
        let mut containers = task.status.containers.clone();
        for c in containers.iter_mut() {
            let def = td
                .spec
                .container_definitions
                .iter()
                .find(|d| d.name == c.name);
            if let Some(code) = exits.get(&c.name) {
                c.last_status = "STOPPED".into();
                c.exit_code = Some(*code);
                c.network_bindings.clear();
            }
            if def.is_some_and(checked) {
                let default = if healthy_left.is_zero() {
                    HealthStatus::Healthy
                } else {
                    HealthStatus::Unknown
                };
                c.health_status = overrides
                    .get(&c.name)
                    .or_else(|| overrides.get(""))
                    .copied()
                    .unwrap_or(default);
            }
        }
        let health = task_health(&td, &containers);
        objects::update_task(&*s.store, id, |t| {
            if t.is_stopped() || t.status.container_instance.as_deref() != Some(instance) {
                return false;
            }
            let changed = t.status.containers != containers || t.status.health_status != health;
            t.status.containers = containers.clone();
            t.status.health_status = health;
            changed
        })
        .await?;
        Ok(if healthy_left.is_zero() {
            Action::Done
        } else {
            Action::RequeueAfter(healthy_left)
        })
    }

    /// PENDING → (ACTIVATING for the start delay) → RUNNING, or a failure to start.
    async fn start(
        &self,
        task: &Task,
        instance: &str,
        td: &TaskDefinition,
    ) -> anyhow::Result<Action> {
        let s = &self.0;
        let id = task.metadata.name.as_str();
        let delay = s.start_delay();
        let first_seen = s.with_task(id, |t| *t.first_seen.get_or_insert_with(Instant::now));
        let left = delay.saturating_sub(first_seen.elapsed());
        if !left.is_zero() {
            if task.status.last_status < TaskState::Activating {
                objects::update_task(&*s.store, id, |t| {
                    if t.is_stopped() || t.status.last_status >= TaskState::Activating {
                        return false;
                    }
                    t.status.last_status = TaskState::Activating;
                    true
                })
                .await?;
            }
            return Ok(Action::RequeueAfter(left));
        }
        if s.start_fails(&task.spec.task_definition) {
            let reason = "CannotStartContainerError: simulated failure to start".to_string();
            return self.stop(task, Some(failed_to_start(reason))).await;
        }
        let health = if s.cfg.healthy_after.is_zero() {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unknown
        };
        let (containers, task_ip) = s.start_containers(instance, td, health);
        let task_health = task_health(td, &containers);
        let written = objects::update_task(&*s.store, id, |t| {
            if t.is_stopped()
                || t.status.desired_status == DesiredStatus::Stopped
                || t.status.container_instance.as_deref() != Some(instance)
                || t.status.containers.iter().any(|c| c.docker_id.is_some())
            {
                return false;
            }
            t.status.last_status = TaskState::Running;
            t.status.started_at = Some(now());
            t.status.health_status = task_health;
            t.status.containers = containers.clone();
            t.status.task_ip = task_ip.clone();
            true
        })
        .await?;
        s.with_task(id, |t| t.started = Some(Instant::now()));
        if written.is_some_and(|t| t.status.desired_status == DesiredStatus::Stopped) {
            // Asked to stop meanwhile: the next reconcile stops it.
            return Ok(Action::Requeue);
        }
        Ok(if s.cfg.healthy_after.is_zero() {
            Action::Done
        } else {
            Action::RequeueAfter(s.cfg.healthy_after)
        })
    }
}

fn failed_to_start(reason: String) -> Cause {
    Cause {
        code: stop_codes::TASK_FAILED_TO_START,
        reason,
    }
}

#[async_trait]
impl Reconciler for SimRunner {
    async fn reconcile(&self, id: &str) -> anyhow::Result<Action> {
        let s = &self.0;
        let task: Option<Task> = objects::get(&*s.store, &keys::key(Kind::Task, id)).await?;
        let Some(task) = task else {
            s.forget(id);
            return Ok(Action::Done);
        };
        let Some(instance) = task.status.container_instance.clone() else {
            return Ok(Action::Done);
        };
        if task.is_stopped() {
            s.forget(id);
            return Ok(Action::Done);
        }
        if !s.serves(Some(&instance)) {
            // Not ours, or our instance is cut off: nothing reaches the store from it.
            return Ok(Action::Done);
        }
        if task.status.desired_status == DesiredStatus::Stopped {
            if let Some(wait) = self.draining(&task).await? {
                return Ok(Action::RequeueAfter(wait));
            }
            return self.stop(&task, None).await;
        }
        self.run(&task, &instance).await
    }

    async fn resync_keys(&self) -> anyhow::Result<Vec<String>> {
        self.0.live_tasks().await
    }
}
