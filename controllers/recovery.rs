//! recovery controller: replaces what is broken.
//!
//! - A service task whose container health checks fail (UNHEALTHY) after the service's
//!   `healthCheckGracePeriodSeconds` is stopped; the service controller starts a replacement.
//! - An instance whose agent lease has been gone for longer than a grace period is lost: its
//!   tasks are marked STOPPED so they are replaced elsewhere. If that agent comes back, it
//!   removes the containers of tasks that are no longer its own (see the agent's runner).
//! - Essential-container exits are reported by the agent itself (stopCode
//!   EssentialContainerExited); crash loops are backed off by the service controller.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::time::Duration;

use berth_core::model::{
    keys, now, stop_codes, ContainerInstance, DesiredStatus, HealthStatus, Kind, Service, Task,
    TaskState,
};
use berth_core::objects;
use berth_core::runtime::cluster_cache::{ACTIVE, TASKS_BY_PHASE};
use berth_core::runtime::{
    Action, ClusterCache, Controller, ControllerOptions, Reconciler, Trigger,
};
use berth_core::store::{Compare, DynStore, Op, Txn};

/// How long an instance may stay disconnected after its lease expired before its tasks are
/// declared lost. Like Kubernetes' default eviction timeout: a pause or a partition shorter
/// than this changes nothing (ECS itself never replaces a merely disconnected agent's tasks).
pub const DEFAULT_LOST_INSTANCE_GRACE: Duration = Duration::from_secs(300);

pub struct RecoveryController {
    store: DynStore,
    /// The process's shared cache: resyncs and a lost instance's task list read it, not the
    /// store (a relist of every task each 15 s was the idle control plane's largest cost).
    cache: ClusterCache,
    lost_grace: Duration,
}

const TASK: &str = "task/";
const INSTANCE: &str = "instance/";

impl RecoveryController {
    pub fn new(store: DynStore, cache: &ClusterCache, lost_grace: Duration) -> Self {
        RecoveryController {
            store,
            cache: cache.clone(),
            lost_grace,
        }
    }

    pub fn controller(store: DynStore, cache: &ClusterCache, lost_grace: Duration) -> Controller {
        let r = Arc::new(Self::new(store.clone(), cache, lost_grace));
        // Typed triggers: with the shared informer they get its decoded objects, so no task
        // event is decoded a second time here.
        let unhealthy = |t: &Task| -> Vec<String> {
            if t.is_active()
                && t.status.health_status == HealthStatus::Unhealthy
                && t.service_name().is_some()
            {
                vec![format!("{TASK}{}", t.metadata.name)]
            } else {
                vec![]
            }
        };
        let instance = |i: &ContainerInstance| -> Vec<String> {
            if i.status.agent_connected {
                vec![]
            } else {
                vec![format!("{INSTANCE}{}", i.metadata.name)]
            }
        };
        Controller::new(
            "recovery",
            store,
            r,
            ControllerOptions {
                workers: 2,
                resync: Duration::from_secs(15),
                ..Default::default()
            },
        )
        .trigger(Trigger::on::<Task>(keys::prefix(Kind::Task), unhealthy))
        .trigger(Trigger::on::<ContainerInstance>(
            keys::prefix(Kind::ContainerInstance),
            instance,
        ))
    }

    async fn check_task(&self, id: &str) -> anyhow::Result<Action> {
        let Some(t): Option<Task> = objects::get(&*self.store, &keys::key(Kind::Task, id)).await?
        else {
            return Ok(Action::Done);
        };
        if !t.is_active() || t.status.health_status != HealthStatus::Unhealthy {
            return Ok(Action::Done);
        }
        let Some(svc_name) = t.service_name() else {
            return Ok(Action::Done);
        };
        let svc: Option<Service> =
            objects::get(&*self.store, &keys::key(Kind::Service, svc_name)).await?;
        let grace = svc
            .and_then(|s| s.spec.health_check_grace_period_seconds)
            .unwrap_or(0);
        if let Some(started) = t.status.started_at {
            let until = started + chrono::Duration::seconds(grace as i64);
            if let Ok(left) = (until - now()).to_std() {
                return Ok(Action::RequeueAfter(left));
            }
        }
        let unhealthy: Vec<String> = t
            .status
            .containers
            .iter()
            .filter(|c| c.health_status == HealthStatus::Unhealthy)
            .map(|c| c.name.clone())
            .collect();
        let reason = format!(
            "{} (unhealthy: {})",
            stop_codes::HEALTH_CHECK_REASON,
            unhealthy.join(", ")
        );
        objects::update_task(&*self.store, id, |t| {
            t.status.health_status == HealthStatus::Unhealthy
                && t.request_stop(stop_codes::SERVICE_SCHEDULER_INITIATED, &reason)
        })
        .await?;
        Ok(Action::Done)
    }

    async fn check_instance(&self, id: &str) -> anyhow::Result<Action> {
        let Some(inst): Option<ContainerInstance> =
            objects::get(&*self.store, &keys::key(Kind::ContainerInstance, id)).await?
        else {
            return Ok(Action::Done);
        };
        if self
            .store
            .get(&keys::instance_lease_key(id))
            .await?
            .is_some()
        {
            return Ok(Action::Done);
        }
        let Some(since) = inst.status.disconnected_at else {
            // The instance-status controller stamps the moment; look again shortly.
            return Ok(Action::RequeueAfter(Duration::from_millis(500)));
        };
        let until = since + chrono::Duration::from_std(self.lost_grace).unwrap_or_default();
        if let Ok(left) = (until - now()).to_std() {
            return Ok(Action::RequeueAfter(left));
        }
        let lease_key = keys::instance_lease_key(id);
        // The cache's copies only name the tasks: `mark_lost` re-reads each and writes with a
        // compare on it (and on the lease's absence), so a stale copy costs nothing wrong.
        let tasks = if self.cache.informer.is_synced() {
            self.cache.tasks_on_instance(id)
        } else {
            objects::list_tasks(&*self.store)
                .await?
                .into_iter()
                .filter(|t| t.status.container_instance.as_deref() == Some(id))
                .map(Arc::new)
                .collect()
        };
        for t in tasks.iter().filter(|t| !t.is_stopped()) {
            let reason = format!(
                "Task lost: container instance {id} has been disconnected since {}",
                since.to_rfc3339()
            );
            let key = keys::key(Kind::Task, &t.metadata.name);
            // Fenced on the lease in the same transaction: an agent that reconnects at the
            // last moment keeps its tasks.
            if !mark_lost(&self.store, &key, &lease_key, id, &reason).await? {
                tracing::info!(instance = %id, "instance reconnected; its tasks are kept");
                return Ok(Action::Done);
            }
            tracing::warn!(task = %t.metadata.name, instance = %id, "task lost with its instance");
        }
        Ok(Action::Done)
    }
}

/// Mark one task of a lost instance STOPPED, provided the instance's lease key is still absent.
/// `Ok(false)`: the instance reconnected, nothing was written.
async fn mark_lost(
    store: &DynStore,
    key: &str,
    lease_key: &str,
    instance: &str,
    reason: &str,
) -> anyhow::Result<bool> {
    loop {
        let Some(kv) = store.get(key).await? else {
            return Ok(true);
        };
        let mut t: Task = serde_json::from_slice(&kv.value)?;
        if t.is_stopped() || t.status.container_instance.as_deref() != Some(instance) {
            return Ok(true);
        }
        t.status.desired_status = DesiredStatus::Stopped;
        t.status.last_status = TaskState::Stopped;
        t.status.stopped_at = Some(now());
        t.status.stop_code = Some(stop_codes::SERVICE_SCHEDULER_INITIATED.into());
        t.status.stopped_reason = Some(reason.to_string());
        for c in t.status.containers.iter_mut() {
            c.last_status = "STOPPED".into();
            c.network_bindings.clear();
        }
        let res = store
            .txn(
                Txn::new()
                    .when(Compare::mod_revision(key, kv.mod_revision))
                    .when(Compare::absent(lease_key))
                    .and_then(Op::put(key, serde_json::to_vec(&t)?)),
            )
            .await?;
        if res.succeeded {
            return Ok(true);
        }
        if store.get(lease_key).await?.is_some() {
            return Ok(false);
        }
        // The task changed under us: look again.
    }
}

#[async_trait]
impl Reconciler for RecoveryController {
    async fn reconcile(&self, key: &str) -> anyhow::Result<Action> {
        if let Some(id) = key.strip_prefix(TASK) {
            self.check_task(id).await
        } else if let Some(id) = key.strip_prefix(INSTANCE) {
            self.check_instance(id).await
        } else {
            Ok(Action::Done)
        }
    }

    async fn resync_keys(&self) -> anyhow::Result<Vec<String>> {
        let (tasks, instances) = if self.cache.informer.is_synced() {
            (
                self.cache.tasks.by_index(TASKS_BY_PHASE, ACTIVE),
                self.cache.instances.list(),
            )
        } else {
            let tasks = objects::list_tasks(&*self.store).await?;
            let instances: Vec<ContainerInstance> =
                objects::list(&*self.store, &keys::prefix(Kind::ContainerInstance)).await?;
            (
                tasks.into_iter().map(Arc::new).collect(),
                instances.into_iter().map(Arc::new).collect(),
            )
        };
        let mut keys_out: Vec<String> = tasks
            .iter()
            .filter(|t| t.is_active() && t.status.health_status == HealthStatus::Unhealthy)
            .map(|t| format!("{TASK}{}", t.metadata.name))
            .collect();
        keys_out.extend(
            instances
                .iter()
                .filter(|i| !i.status.agent_connected)
                .map(|i| format!("{INSTANCE}{}", i.metadata.name)),
        );
        Ok(keys_out)
    }
}
