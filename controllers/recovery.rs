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
use berth_core::runtime::{Action, Controller, ControllerOptions, Reconciler, Trigger};
use berth_core::store::{DynStore, KeyValue};

/// How long an instance may stay disconnected after its lease expired before its tasks are
/// declared lost (the lease TTL itself already covers short hiccups).
pub const LOST_INSTANCE_GRACE: Duration = Duration::from_secs(2);

pub struct RecoveryController {
    store: DynStore,
}

const TASK: &str = "task/";
const INSTANCE: &str = "instance/";

impl RecoveryController {
    pub fn controller(store: DynStore) -> Controller {
        let r = Arc::new(RecoveryController {
            store: store.clone(),
        });
        let unhealthy = |kv: &KeyValue| -> Vec<String> {
            match serde_json::from_slice::<Task>(&kv.value) {
                Ok(t)
                    if t.is_active()
                        && t.status.health_status == HealthStatus::Unhealthy
                        && t.service_name().is_some() =>
                {
                    vec![format!("{TASK}{}", t.metadata.name)]
                }
                _ => vec![],
            }
        };
        let instance = |kv: &KeyValue| -> Vec<String> {
            match serde_json::from_slice::<ContainerInstance>(&kv.value) {
                Ok(i) if !i.status.agent_connected => {
                    vec![format!("{INSTANCE}{}", i.metadata.name)]
                }
                _ => vec![],
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
        .trigger(Trigger::new(keys::prefix(Kind::Task), unhealthy))
        .trigger(Trigger::new(
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
        let until = since + chrono::Duration::from_std(LOST_INSTANCE_GRACE).unwrap_or_default();
        if let Ok(left) = (until - now()).to_std() {
            return Ok(Action::RequeueAfter(left));
        }
        let tasks = objects::list_tasks(&*self.store).await?;
        for t in tasks
            .iter()
            .filter(|t| t.status.container_instance.as_deref() == Some(id) && !t.is_stopped())
        {
            let reason = format!(
                "Task lost: container instance {id} has been disconnected since {}",
                since.to_rfc3339()
            );
            objects::update_task(&*self.store, &t.metadata.name, |t| {
                if t.is_stopped() || t.status.container_instance.as_deref() != Some(id) {
                    return false;
                }
                t.status.desired_status = DesiredStatus::Stopped;
                t.status.last_status = TaskState::Stopped;
                t.status.stopped_at = Some(now());
                t.status.stop_code = Some(stop_codes::SERVICE_SCHEDULER_INITIATED.into());
                t.status.stopped_reason = Some(reason.clone());
                for c in t.status.containers.iter_mut() {
                    c.last_status = "STOPPED".into();
                    c.network_bindings.clear();
                }
                true
            })
            .await?;
            tracing::warn!(task = %t.metadata.name, instance = %id, "task lost with its instance");
        }
        Ok(Action::Done)
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
        let mut keys_out = Vec::new();
        for t in objects::list_tasks(&*self.store).await? {
            if t.is_active() && t.status.health_status == HealthStatus::Unhealthy {
                keys_out.push(format!("{TASK}{}", t.metadata.name));
            }
        }
        let instances: Vec<ContainerInstance> =
            objects::list(&*self.store, &keys::prefix(Kind::ContainerInstance)).await?;
        for i in instances.iter().filter(|i| !i.status.agent_connected) {
            keys_out.push(format!("{INSTANCE}{}", i.metadata.name));
        }
        Ok(keys_out)
    }
}
