//! The scheduler: assigns PROVISIONING tasks to container instances.
//!
//! Optimistic concurrency (Nomad's plan check): read the instances, then the tasks, choose, and
//! commit the assignment in one transaction that compares the chosen instance's record. Every
//! placement bumps that record, so a racing scheduler that decided on stale usage fails the
//! compare and retries on fresh state: an instance is never over-committed.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use rand::SeedableRng;
use tokio::time::Duration;

use crate::capacity::{self, candidates};
use berth_core::model::{keys, ContainerInstance, DesiredStatus, Kind, Task, TaskState};
use berth_core::objects::{self, ObjectError};
use berth_core::placement::{self, Request};
use berth_core::runtime::{Action, Controller, ControllerOptions, Reconciler, Trigger};
use berth_core::store::{Compare, DynStore, Op, Txn};

/// The key of a placement pass over every pending task.
const ALL: &str = "*";

pub struct Scheduler {
    store: DynStore,
}

impl Scheduler {
    pub fn controller(store: DynStore) -> Controller {
        let r = Arc::new(Scheduler {
            store: store.clone(),
        });
        let task_prefix = keys::prefix(Kind::Task);
        // A pending task is placed by its own key; anything that may free or add room
        // (a task stopping, an instance or agent lease changing) re-runs a pass over all
        // pending tasks ("*").
        let on_task = |kv: &berth_core::store::KeyValue| -> Vec<String> {
            match serde_json::from_slice::<Task>(&kv.value) {
                Ok(t) if t.status.container_instance.is_none() && !t.is_stopped() => {
                    vec![t.metadata.name]
                }
                Ok(t) if t.is_stopped() || t.status.desired_status == DesiredStatus::Stopped => {
                    vec![ALL.to_string()]
                }
                _ => vec![],
            }
        };
        let all = |_: &berth_core::store::KeyValue| vec![ALL.to_string()];
        Controller::new(
            "scheduler",
            store,
            r,
            ControllerOptions {
                // Placements on one instance serialise on its record anyway.
                workers: 2,
                resync: Duration::from_secs(10),
                ..Default::default()
            },
        )
        .trigger(Trigger::new(task_prefix, on_task))
        .trigger(Trigger::new(keys::prefix(Kind::ContainerInstance), all))
        .trigger(Trigger::new(keys::INSTANCE_LEASE_PREFIX, all))
    }

    async fn place_all_pending(&self) -> anyhow::Result<Action> {
        let pending: Vec<String> = self.resync_keys().await?;
        let mut retry = false;
        for id in pending {
            match self.place_task(&id).await {
                Ok(Action::Done) => {}
                Ok(_) => retry = true,
                Err(e) => {
                    tracing::debug!(task = %id, error = %e, "placement pass failed for task");
                    retry = true
                }
            }
        }
        Ok(if retry {
            Action::RequeueAfter(Duration::from_secs(5))
        } else {
            Action::Done
        })
    }

    /// Place one task if it still needs a place.
    pub async fn place_task(&self, id: &str) -> anyhow::Result<Action> {
        for _attempt in 0..10 {
            let key = objects::task_key(id);
            let Some(task) = objects::get::<_, _>(&*self.store, &key).await? else {
                return Ok(Action::Done);
            };
            let task: Task = task;
            if task.status.container_instance.is_some() || task.is_stopped() {
                return Ok(Action::Done);
            }
            if task.status.desired_status == DesiredStatus::Stopped {
                // Never placed: nothing runs, so it is stopped right here.
                let r = objects::update_task(&*self.store, id, |t| {
                    if t.status.container_instance.is_some() || t.is_stopped() {
                        return false;
                    }
                    t.status.last_status = TaskState::Stopped;
                    t.status.stopped_at = Some(berth_core::model::now());
                    true
                })
                .await?;
                if r.is_some_and(|t| t.status.container_instance.is_some()) {
                    continue;
                }
                return Ok(Action::Done);
            }
            // Order matters: instances first, then tasks (see module docs).
            let instances: Vec<ContainerInstance> =
                objects::list(&*self.store, &keys::prefix(Kind::ContainerInstance)).await?;
            let (leases, _) = self.store.range(keys::INSTANCE_LEASE_PREFIX).await?;
            let connected: BTreeSet<String> = leases
                .iter()
                .filter_map(|kv| kv.key.strip_prefix(keys::INSTANCE_LEASE_PREFIX))
                .map(str::to_string)
                .collect();
            let tasks = objects::list_tasks(&*self.store).await?;
            let ports = objects::taskdef(&*self.store, &task.spec.task_definition)
                .await?
                .map(|td| td.spec.fixed_host_ports())
                .unwrap_or_default();
            let req = Request {
                cluster: task.spec.cluster.clone(),
                cpu: task.spec.cpu,
                memory: task.spec.memory,
                ports,
                group: task.spec.group.clone(),
                strategy: task.spec.placement_strategy.clone(),
                constraints: task.spec.placement_constraints.clone(),
            };
            let cands = candidates(&instances, &connected, &tasks, &*self.store).await;
            let chosen =
                match placement::place(&req, &cands, &mut rand::rngs::StdRng::from_entropy()) {
                    Ok(i) => i,
                    Err(no) => {
                        let msg = no.reason;
                        objects::update_task(&*self.store, id, |t| {
                            if t.status.placement_message.as_deref() == Some(msg.as_str())
                                || t.status.container_instance.is_some()
                            {
                                return false;
                            }
                            t.status.placement_message = Some(msg.clone());
                            true
                        })
                        .await?;
                        // Instance changes re-trigger pending tasks; this is the safety net.
                        return Ok(Action::RequeueAfter(Duration::from_secs(5)));
                    }
                };
            let inst = instances
                .iter()
                .find(|i| i.metadata.name == cands[chosen].id)
                .expect("candidate comes from instances");
            let mut inst2 = inst.clone();
            let mut c = cands[chosen].clone();
            c.take(&req);
            inst2.status.placement_generation += 1;
            inst2.status.remaining_resources = capacity::remaining(&c);
            inst2.status.pending_tasks_count += 1;
            let mut t2 = task.clone();
            t2.status.container_instance = Some(inst.metadata.name.clone());
            t2.status.last_status = TaskState::Pending;
            t2.status.placement_message = None;
            let ikey = keys::key(Kind::ContainerInstance, &inst.metadata.name);
            let txn = Txn::new()
                .when(Compare::mod_revision(&ikey, inst.metadata.revision))
                .when(Compare::mod_revision(&key, task.metadata.revision))
                .and_then(Op::put(&ikey, inst2.to_bytes()))
                .and_then(Op::put(&key, t2.to_bytes()));
            if self.store.txn(txn).await?.succeeded {
                tracing::debug!(task = %id, instance = %inst.metadata.name, "placed");
                return Ok(Action::Done);
            }
            // Lost a race: re-read and decide again.
            tokio::task::yield_now().await;
        }
        Err(ObjectError::Conflict(format!("placement of task {id}")).into())
    }
}

#[async_trait]
impl Reconciler for Scheduler {
    async fn reconcile(&self, key: &str) -> anyhow::Result<Action> {
        if key == ALL {
            return self.place_all_pending().await;
        }
        self.place_task(key).await
    }
    async fn resync_keys(&self) -> anyhow::Result<Vec<String>> {
        Ok(objects::list_tasks(&*self.store)
            .await?
            .into_iter()
            .filter(|t| t.status.container_instance.is_none() && !t.is_stopped())
            .map(|t| t.metadata.name)
            .collect())
    }
}
