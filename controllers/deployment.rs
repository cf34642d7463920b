//! deployment controller: owns a service's `status.deployments`.
//!
//! A task definition that resolves to a new revision gets a new PRIMARY deployment (the old
//! PRIMARY becomes ACTIVE, and INACTIVE once its tasks are gone). The PRIMARY turns COMPLETED
//! when it runs its full count healthy and nothing else runs ("has reached a steady state.").
//! The circuit breaker counts failed tasks of an IN_PROGRESS deployment; at the threshold the
//! deployment is FAILED and, with rollback, the last COMPLETED deployment's revision becomes
//! PRIMARY again. A FAILED revision is not retried until a different one is applied.
//! The service controller does the task arithmetic toward whatever is PRIMARY.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::time::Duration;

use super::common::{self, counts_healthy, event_once};
use super::rollout;
use berth_core::model::{
    keys, new_id, now, Deployment, DesiredStatus, Kind, Service, ServiceSpec, Task, TaskDefinition,
};
use berth_core::objects::{self, ObjectError};
use berth_core::runtime::{
    Action, ClusterCache, Controller, ControllerOptions, Reconciler, Trigger,
};
use berth_core::store::DynStore;

/// INACTIVE deployments kept for history and rollback.
const KEEP_INACTIVE: usize = 5;

/// How long every new task must have been running before the PRIMARY is COMPLETED: a revision
/// whose containers exit right after starting can show all its tasks RUNNING for an instant
/// (more so on a loaded host), and calling that steady would disarm the circuit breaker.
const SETTLE: Duration = Duration::from_secs(3);

pub struct DeploymentController {
    store: DynStore,
    cache: ClusterCache,
    /// Service → the spec its latest reconcile read (see `controller_with`).
    seen_spec: Arc<Mutex<HashMap<String, ServiceSpec>>>,
}

impl DeploymentController {
    /// A deployment controller with a cache of its own.
    pub fn controller(store: DynStore) -> Controller {
        let cache = ClusterCache::start(store.clone(), &[]);
        Self::controller_with(store, &cache)
    }

    pub fn controller_with(store: DynStore, cache: &ClusterCache) -> Controller {
        let r = Arc::new(DeploymentController {
            store: store.clone(),
            cache: cache.clone(),
            seen_spec: Default::default(),
        });
        let by_family = common::family_trigger(cache);
        let seen = r.seen_spec.clone();
        let spec_changed = move |svc: &Service| -> Vec<String> {
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.get(&svc.metadata.name) == Some(&svc.spec) {
                vec![]
            } else {
                vec![svc.metadata.name.clone()]
            }
        };
        Controller::new(
            "deployment",
            store,
            r,
            ControllerOptions {
                workers: 4,
                resync: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .shared(&cache.informer)
        // Status writes by other controllers are spaced: at once, each task-creating write of
        // the service controller made this one rewrite the record, which failed the service
        // controller's next fenced write (a 10,000-task scale-up lost ~200 such races)...
        .primary_spaced(Kind::Service, common::TASK_BURST_SPACING)
        // ...but a spec change this controller has not read yet becomes a deployment at once
        // (an ECS client's `services_stable` waiter right after UpdateService would otherwise
        // see the old deployment alone, and stable).
        .trigger(Trigger::on::<Service>(
            keys::prefix(Kind::Service),
            spec_changed,
        ))
        .trigger(
            Trigger::on::<Task>(keys::prefix(Kind::Task), common::task_service)
                .spaced(common::TASK_BURST_SPACING),
        )
        .trigger(Trigger::on::<TaskDefinition>(
            keys::prefix(Kind::TaskDefinition),
            by_family,
        ))
    }

    fn new_deployment(td: &str, desired: u32) -> Deployment {
        Deployment {
            id: format!("ecs-svc/{}", &new_id()[..19]),
            status: "PRIMARY".into(),
            task_definition: td.to_string(),
            desired_count: desired,
            running_count: 0,
            pending_count: 0,
            failed_tasks: 0,
            rollout_state: "IN_PROGRESS".into(),
            rollout_state_reason: "ECS deployment in progress.".into(),
            created_at: now(),
            updated_at: now(),
        }
    }

    async fn reconcile_service(&self, name: &str) -> anyhow::Result<Action> {
        let key = keys::key(Kind::Service, name);
        let Some(svc): Option<Service> = objects::get(&*self.store, &key).await? else {
            self.seen_spec
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
            return Ok(Action::Done);
        };
        self.seen_spec
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), svc.spec.clone());
        if svc.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        common::caught_up(&self.cache, svc.metadata.revision).await?;
        let mut next = svc.clone();
        let Some(td) =
            common::taskdef(&*self.store, &self.cache, &svc.spec.task_definition).await?
        else {
            event_once(
                &mut next,
                format!(
                    "service {name} is unable to resolve task definition {}.",
                    svc.spec.task_definition
                ),
            );
            self.write(&key, &svc, &next).await?;
            return Ok(Action::RequeueAfter(Duration::from_secs(10)));
        };
        let target = td.metadata.name.clone();
        let desired = common::desired_count(&self.cache, &svc);
        let tasks = common::tasks_of(&self.cache, name);
        let deps = &mut next.status.deployments;

        // 1. A new revision (that has not already failed) becomes PRIMARY.
        let failed_before = deps
            .iter()
            .any(|d| d.task_definition == target && d.rollout_state == "FAILED");
        let primary_td = deps
            .iter()
            .find(|d| d.status == "PRIMARY")
            .map(|d| d.task_definition.clone());
        let mut events: Vec<String> = Vec::new();
        if primary_td.is_none() || (primary_td.as_deref() != Some(&target) && !failed_before) {
            for d in deps.iter_mut().filter(|d| d.status == "PRIMARY") {
                d.status = "ACTIVE".into();
                d.updated_at = now();
            }
            let d = Self::new_deployment(&target, desired);
            events.push(if primary_td.is_none() {
                format!("service {name} created deployment {} ({target}).", d.id)
            } else {
                format!("service {name} started deployment {} to {target}.", d.id)
            });
            deps.insert(0, d);
        }

        // 2. Counts per deployment.
        let checks = common::checks_by_taskdef(&*self.store, &self.cache, &tasks, &[&td]).await?;
        for d in deps.iter_mut() {
            let mine: Vec<&Task> = tasks
                .iter()
                .map(|t| &**t)
                .filter(|t| t.is_active() && t.spec.task_definition == d.task_definition)
                .collect();
            let running = mine
                .iter()
                .filter(|t| t.status.last_status == berth_core::model::TaskState::Running)
                .count() as u32;
            let failed = tasks
                .iter()
                .filter(|t| t.spec.deployment_id == d.id && t.failed_to_start())
                .count() as u32;
            let counts = (running, mine.len() as u32 - running, failed);
            if (d.running_count, d.pending_count, d.failed_tasks) != counts {
                (d.running_count, d.pending_count, d.failed_tasks) = counts;
                d.updated_at = now();
            }
            d.desired_count = if d.status == "PRIMARY" { desired } else { 0 };
        }

        // 3. Circuit breaker on the PRIMARY.
        let breaker = svc
            .spec
            .deployment_configuration
            .deployment_circuit_breaker
            .clone()
            .filter(|b| b.enable);
        if let Some(b) = breaker {
            let threshold = rollout::breaker_threshold(desired, b.threshold);
            let p = &mut deps[0];
            if p.status == "PRIMARY"
                && p.rollout_state == "IN_PROGRESS"
                && p.failed_tasks >= threshold
            {
                p.rollout_state = "FAILED".into();
                p.rollout_state_reason = format!(
                    "ECS deployment circuit breaker: {} tasks failed to start or stay healthy (threshold {threshold}).",
                    p.failed_tasks
                );
                p.updated_at = now();
                let failed_id = p.id.clone();
                events.push(format!(
                    "service {name} (deployment {failed_id}) deployment failed: {} tasks failed (circuit breaker threshold {threshold}).",
                    p.failed_tasks
                ));
                if b.rollback {
                    let last_good = deps
                        .iter()
                        .skip(1)
                        .find(|d| d.rollout_state == "COMPLETED")
                        .map(|d| (d.id.clone(), d.task_definition.clone()));
                    match last_good {
                        Some((good_id, good_td)) => {
                            deps[0].status = "ACTIVE".into();
                            let d = Self::new_deployment(&good_td, desired);
                            events.push(format!(
                                "service {name} (deployment {}) rolling back to deployment {good_id} ({good_td}).",
                                d.id
                            ));
                            deps.insert(0, d);
                        }
                        None => events.push(format!(
                            "service {name} has no COMPLETED deployment to roll back to."
                        )),
                    }
                }
            }
        }

        // 4. Completion, and retiring deployments whose tasks are gone.
        let primary = deps[0].task_definition.clone();
        let behind_lb = super::lb_target::lb_healthy_tasks(&self.cache, &svc, &tasks);
        let healthy = |t: &Task| {
            behind_lb
                .as_ref()
                .is_none_or(|ok| ok.contains(&t.metadata.name))
                && counts_healthy(
                    t,
                    checks
                        .get(&t.spec.task_definition)
                        .copied()
                        .unwrap_or(false),
                )
        };
        let active: Vec<&Task> = tasks
            .iter()
            .map(|t| &**t)
            .filter(|t| t.is_active())
            .collect();
        let new_healthy = active
            .iter()
            .filter(|t| t.spec.task_definition == primary && healthy(t))
            .count() as u32;
        let new_total = active
            .iter()
            .filter(|t| t.spec.task_definition == primary)
            .count() as u32;
        let others = active.len() as u32 - new_total;
        let stopping = tasks
            .iter()
            .filter(|t| !t.is_stopped() && t.status.desired_status == DesiredStatus::Stopped)
            .count();
        let steady = new_total == desired && new_healthy == desired && others == 0 && stopping == 0;
        // Time until the newest of the primary's tasks has run for SETTLE (zero once settled).
        let settle_left = active
            .iter()
            .filter(|t| t.spec.task_definition == primary)
            .map(|t| settle_left(t, now()))
            .max()
            .unwrap_or_default();
        let steady = steady && settle_left.is_zero();
        if steady && deps[0].rollout_state == "IN_PROGRESS" {
            deps[0].rollout_state = "COMPLETED".into();
            deps[0].rollout_state_reason = "ECS deployment completed.".into();
            deps[0].updated_at = now();
        }
        for d in deps.iter_mut().skip(1) {
            let has_tasks = tasks.iter().any(|t| {
                !t.is_stopped()
                    && t.spec.task_definition == d.task_definition
                    && d.task_definition != primary
            });
            if d.status == "ACTIVE" && !has_tasks {
                d.status = "INACTIVE".into();
                d.updated_at = now();
            }
        }
        let mut inactive = 0;
        deps.retain(|d| {
            if d.status == "INACTIVE" {
                inactive += 1;
                inactive <= KEEP_INACTIVE
            } else {
                true
            }
        });
        for e in events {
            next.status.push_event(e);
        }
        let was_steady = next
            .status
            .events
            .first()
            .is_some_and(|e| e.message.ends_with("has reached a steady state."));
        if steady && !was_steady && next.status.deployments[0].rollout_state == "COMPLETED" {
            next.status
                .push_event(format!("service {name} has reached a steady state."));
        }
        if !self.write(&key, &svc, &next).await? {
            return Ok(Action::Requeue);
        }
        Ok(if steady {
            Action::Done
        } else if !settle_left.is_zero() {
            Action::RequeueAfter(settle_left + Duration::from_millis(50))
        } else {
            Action::RequeueAfter(Duration::from_secs(5))
        })
    }

    async fn write(&self, key: &str, before: &Service, after: &Service) -> anyhow::Result<bool> {
        if before == after {
            return Ok(true);
        }
        match objects::put_cas(&*self.store, key, after).await {
            Ok(_) => Ok(true),
            Err(ObjectError::Conflict(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// What is left of a task's SETTLE window (all of it while it is not yet running).
fn settle_left(t: &Task, at: chrono::DateTime<chrono::Utc>) -> Duration {
    match t.status.started_at {
        Some(started) => {
            let ran = (at - started).to_std().unwrap_or_default();
            SETTLE.saturating_sub(ran)
        }
        None => SETTLE,
    }
}

#[async_trait]
impl Reconciler for DeploymentController {
    async fn reconcile(&self, name: &str) -> anyhow::Result<Action> {
        self.reconcile_service(name).await
    }
}
