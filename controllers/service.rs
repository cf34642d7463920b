//! service controller: keeps `desiredCount` tasks of the service's primary deployment, replaces
//! what died, rolls to new task-definition revisions within the min/max percent bounds, and
//! drains and removes a service that is being deleted.
//!
//! Tasks are created in the same transaction that compares the service's revision, so a stale
//! reconcile (another process, an old read) can never double-create: the write fails and the
//! reconcile starts over from fresh state (Kubernetes' "expectations", by construction).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::time::Duration;

use super::rollout::{self, Counts};
use crate::model::{
    keys, new_id, now, parse_taskdef_ref, stop_codes, Deployment, DesiredStatus, HealthStatus,
    Kind, SchedulingStrategy, Service, Task, TaskDefinition, TaskSpec, TaskState, TaskStatus,
};
use crate::objects::{self, ObjectError};
use crate::runtime::{Action, Cache, Controller, ControllerOptions, Reconciler, Trigger};
use crate::store::{Compare, DynStore, Op, Txn};

/// How long STOPPED tasks stay readable (ECS keeps them about an hour).
pub const STOPPED_TASK_RETENTION: chrono::Duration = chrono::Duration::hours(1);

pub struct ServiceController {
    store: DynStore,
}

impl ServiceController {
    pub fn controller(store: DynStore) -> Controller {
        let services = Cache::start(store.clone(), &keys::prefix(Kind::Service), |_| {});
        let r = Arc::new(ServiceController {
            store: store.clone(),
        });
        let svc_prefix = keys::prefix(Kind::Service);
        let by_name = move |kv: &crate::store::KeyValue| -> Vec<String> {
            kv.key
                .strip_prefix(&svc_prefix)
                .map(|n| vec![n.to_string()])
                .unwrap_or_default()
        };
        let by_task = |kv: &crate::store::KeyValue| -> Vec<String> {
            serde_json::from_slice::<Task>(&kv.value)
                .ok()
                .and_then(|t| t.service_name().map(str::to_string))
                .into_iter()
                .collect()
        };
        // A new revision of a family re-triggers the services that follow it.
        let by_family = move |kv: &crate::store::KeyValue| -> Vec<String> {
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
        };
        Controller::new(
            "service",
            store,
            r,
            ControllerOptions {
                workers: 4,
                resync: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .trigger(Trigger::new(keys::prefix(Kind::Service), by_name))
        .trigger(Trigger::new(keys::prefix(Kind::Task), by_task))
        .trigger(Trigger::new(keys::prefix(Kind::TaskDefinition), by_family))
    }
}

fn group_of(service: &str) -> String {
    format!("service:{service}")
}

/// Does a task count as healthy for deployment purposes? RUNNING and, if its definition has
/// health checks, HEALTHY.
fn counts_healthy(t: &Task, has_checks: bool) -> bool {
    t.status.last_status == TaskState::Running
        && match t.status.health_status {
            HealthStatus::Healthy => true,
            HealthStatus::Unhealthy => false,
            HealthStatus::Unknown => !has_checks,
        }
}

impl ServiceController {
    async fn taskdef(&self, reference: &str) -> anyhow::Result<Option<TaskDefinition>> {
        let Some((family, rev)) = parse_taskdef_ref(reference) else {
            return Ok(None);
        };
        match rev {
            Some(r) => Ok(objects::get(&*self.store, &keys::taskdef_key(family, r)).await?),
            None => {
                let all: Vec<TaskDefinition> =
                    objects::list(&*self.store, &keys::taskdef_family_prefix(family)).await?;
                Ok(all
                    .into_iter()
                    .rev()
                    .find(|t| t.status.status != "INACTIVE"))
            }
        }
    }

    async fn stop_tasks(&self, ids: &[String], reason: &str) -> anyhow::Result<()> {
        for id in ids {
            objects::update_task(&*self.store, id, |t| {
                if t.status.desired_status == DesiredStatus::Stopped || t.is_stopped() {
                    return false;
                }
                t.status.desired_status = DesiredStatus::Stopped;
                t.status.stop_code = Some(stop_codes::SERVICE_SCHEDULER_INITIATED.into());
                t.status.stopped_reason = Some(reason.to_string());
                true
            })
            .await?;
        }
        Ok(())
    }

    /// Delete STOPPED tasks of the service past retention.
    async fn collect_garbage(&self, tasks: &[Task]) -> anyhow::Result<()> {
        let cutoff = now() - STOPPED_TASK_RETENTION;
        for t in tasks {
            if t.is_stopped() && t.status.stopped_at.is_some_and(|s| s < cutoff) {
                let _ = objects::delete_cas(
                    &*self.store,
                    &keys::key(Kind::Task, &t.metadata.name),
                    t.metadata.revision,
                )
                .await;
            }
        }
        Ok(())
    }

    async fn reconcile_service(&self, name: &str) -> anyhow::Result<Action> {
        let key = keys::key(Kind::Service, name);
        let svc: Option<Service> = objects::get(&*self.store, &key).await?;
        let group = group_of(name);
        let tasks: Vec<Task> = objects::list_tasks(&*self.store)
            .await?
            .into_iter()
            .filter(|t| t.spec.group == group)
            .collect();
        self.collect_garbage(&tasks).await?;
        let active: Vec<&Task> = tasks.iter().filter(|t| t.is_active()).collect();
        let Some(svc) = svc else {
            // Owner gone: its tasks are orphans and go too.
            let ids: Vec<String> = active.iter().map(|t| t.metadata.name.clone()).collect();
            self.stop_tasks(&ids, &format!("service {name} was deleted"))
                .await?;
            return Ok(Action::Done);
        };
        let mut next = svc.clone();
        if svc.metadata.deletion_timestamp.is_some() {
            let ids: Vec<String> = active.iter().map(|t| t.metadata.name.clone()).collect();
            self.stop_tasks(&ids, &format!("service {name} is being deleted"))
                .await?;
            let remaining = tasks.iter().filter(|t| !t.is_stopped()).count();
            if remaining == 0 {
                match objects::delete_cas(&*self.store, &key, svc.metadata.revision).await {
                    Ok(()) | Err(ObjectError::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                return Ok(Action::Done);
            }
            next.status.status = "DRAINING".into();
            next.status.desired_count = 0;
            next.status.running_count = tasks
                .iter()
                .filter(|t| t.status.last_status == TaskState::Running)
                .count() as u32;
            next.status.pending_count = 0;
            self.write_status(&key, &svc, &next, vec![]).await?;
            return Ok(Action::RequeueAfter(Duration::from_secs(2)));
        }

        let Some(td) = self.taskdef(&svc.spec.task_definition).await? else {
            let msg = format!(
                "service {name} is unable to resolve task definition {}.",
                svc.spec.task_definition
            );
            if next.status.events.first().map(|e| e.message.as_str()) != Some(msg.as_str()) {
                next.status.push_event(msg);
                self.write_status(&key, &svc, &next, vec![]).await?;
            }
            return Ok(Action::RequeueAfter(Duration::from_secs(10)));
        };
        let primary_td = td.metadata.name.clone();
        let desired = match svc.spec.scheduling_strategy.unwrap_or_default() {
            SchedulingStrategy::Replica => svc.spec.desired_count,
            SchedulingStrategy::Daemon => self.daemon_count(&svc.spec.cluster).await?,
        };

        // Deployments: a new revision becomes PRIMARY; the older ones become ACTIVE.
        let is_new_revision = next
            .status
            .deployments
            .iter()
            .find(|d| d.status == "PRIMARY")
            .is_none_or(|d| d.task_definition != primary_td);
        if is_new_revision {
            for d in next.status.deployments.iter_mut() {
                if d.status == "PRIMARY" {
                    d.status = "ACTIVE".into();
                    d.updated_at = now();
                }
            }
            let id = format!("ecs-svc/{}", &new_id()[..19]);
            next.status.deployments.insert(
                0,
                Deployment {
                    id: id.clone(),
                    status: "PRIMARY".into(),
                    task_definition: primary_td.clone(),
                    desired_count: desired,
                    running_count: 0,
                    pending_count: 0,
                    failed_tasks: 0,
                    rollout_state: "IN_PROGRESS".into(),
                    rollout_state_reason: "ECS deployment in progress.".into(),
                    created_at: now(),
                    updated_at: now(),
                },
            );
            if svc.status.deployments.is_empty() {
                next.status.push_event(format!(
                    "service {name} created deployment {id} ({primary_td})."
                ));
            } else {
                next.status.push_event(format!(
                    "service {name} started deployment {id} to {primary_td}."
                ));
            }
        }
        let primary_id = next.status.deployments[0].id.clone();

        // Which task definitions have health checks (they decide what "healthy" means).
        let mut checks: BTreeMap<String, bool> = BTreeMap::new();
        checks.insert(primary_td.clone(), has_checks(&td));
        for t in &tasks {
            if !checks.contains_key(&t.spec.task_definition) {
                let h = self
                    .taskdef(&t.spec.task_definition)
                    .await?
                    .map(|d| has_checks(&d))
                    .unwrap_or(false);
                checks.insert(t.spec.task_definition.clone(), h);
            }
        }
        let healthy = |t: &Task| counts_healthy(t, checks[&t.spec.task_definition]);
        let (new, old): (Vec<&Task>, Vec<&Task>) = active
            .iter()
            .partition(|t| t.spec.task_definition == primary_td);
        let stopping = tasks
            .iter()
            .filter(|t| !t.is_stopped() && t.status.desired_status == DesiredStatus::Stopped)
            .count() as u32;
        let counts = Counts {
            new_total: new.len() as u32,
            new_healthy: new.iter().filter(|t| healthy(t)).count() as u32,
            old_total: old.len() as u32,
            old_healthy: old.iter().filter(|t| healthy(t)).count() as u32,
            stopping,
        };
        let cfg = &svc.spec.deployment_configuration;
        let step = rollout::step(
            desired,
            cfg.minimum_healthy_percent,
            cfg.maximum_percent,
            counts,
        );

        if rollout::is_stuck(desired, counts, step) {
            let msg = format!(
                "service {name} is unable to make progress: minimumHealthyPercent {} and maximumPercent {} leave no room to replace tasks; raise maximumPercent or lower minimumHealthyPercent.",
                cfg.minimum_healthy_percent, cfg.maximum_percent
            );
            if next.status.events.first().map(|e| e.message.as_str()) != Some(msg.as_str()) {
                next.status.push_event(msg);
            }
        }
        // Choose which tasks to stop: the least useful first.
        let mut to_stop: Vec<String> = Vec::new();
        let mut new_sorted: Vec<&&Task> = new.iter().collect();
        new_sorted.sort_by_key(|t| {
            (
                healthy(t),
                t.status.last_status,
                std::cmp::Reverse(t.status.created_at),
            )
        });
        to_stop.extend(
            new_sorted
                .iter()
                .take(step.stop_new as usize)
                .map(|t| t.metadata.name.clone()),
        );
        let old_unhealthy: Vec<&&Task> = old.iter().filter(|t| !healthy(t)).collect();
        to_stop.extend(old_unhealthy.iter().map(|t| t.metadata.name.clone()));
        let mut old_healthy: Vec<&&Task> = old.iter().filter(|t| healthy(t)).collect();
        old_healthy.sort_by_key(|t| t.status.created_at);
        to_stop.extend(
            old_healthy
                .iter()
                .take(step.stop_old_healthy as usize)
                .map(|t| t.metadata.name.clone()),
        );

        // New tasks are written together with the service status, fenced by its revision.
        let mut creates = Vec::new();
        for _ in 0..step.start {
            creates.push(self.new_task(&svc, &td, &primary_id));
        }
        if !creates.is_empty() {
            let ids: Vec<String> = creates
                .iter()
                .map(|t: &Task| format!("(task {})", t.metadata.name))
                .collect();
            next.status.push_event(format!(
                "service {name} has started {} tasks: {}.",
                creates.len(),
                ids.join(" ")
            ));
        }
        if !to_stop.is_empty() {
            let ids: Vec<String> = to_stop.iter().map(|t| format!("(task {t})")).collect();
            next.status.push_event(format!(
                "service {name} has stopped {} running tasks: {}.",
                to_stop.len(),
                ids.join(" ")
            ));
        }

        // Observed counts (before this step's effects land).
        let running = active
            .iter()
            .filter(|t| t.status.last_status == TaskState::Running)
            .count() as u32;
        next.status.status = "ACTIVE".into();
        next.status.desired_count = desired;
        next.status.running_count = running;
        next.status.pending_count = active.len() as u32 - running + creates.len() as u32;
        for d in next.status.deployments.iter_mut() {
            let mine: Vec<&&Task> = active
                .iter()
                .filter(|t| t.spec.task_definition == d.task_definition)
                .collect();
            let r = mine
                .iter()
                .filter(|t| t.status.last_status == TaskState::Running)
                .count() as u32;
            let (rc, pc) = (r, mine.len() as u32 - r);
            if d.running_count != rc || d.pending_count != pc {
                d.running_count = rc;
                d.pending_count = pc;
                d.updated_at = now();
            }
            if d.status == "PRIMARY" {
                if d.desired_count != desired {
                    d.desired_count = desired;
                }
            } else {
                d.desired_count = 0;
            }
        }
        // Steady: the primary has its full count, healthy, and nothing else runs.
        let steady = creates.is_empty()
            && to_stop.is_empty()
            && counts.new_total == desired
            && counts.new_healthy == desired
            && counts.old_total == 0
            && stopping == 0;
        if steady {
            let primary = &mut next.status.deployments[0];
            if primary.rollout_state == "IN_PROGRESS" {
                primary.rollout_state = "COMPLETED".into();
                primary.rollout_state_reason = "ECS deployment completed.".into();
                primary.updated_at = now();
            }
            next.status.deployments.retain(|d| d.status == "PRIMARY");
            let was_steady = svc
                .status
                .events
                .first()
                .is_some_and(|e| e.message.ends_with("has reached a steady state."));
            if !was_steady {
                next.status
                    .push_event(format!("service {name} has reached a steady state."));
            }
        }
        if !self.write_status(&key, &svc, &next, creates).await? {
            // Lost a race with another writer: start over on fresh state.
            return Ok(Action::Requeue);
        }
        self.stop_tasks(
            &to_stop,
            &format!("Scaling activity initiated by (deployment {primary_id})"),
        )
        .await?;
        if steady {
            Ok(Action::Done)
        } else {
            // Task changes re-trigger us; this bounds the wait if a trigger is lost.
            Ok(Action::RequeueAfter(Duration::from_secs(5)))
        }
    }

    /// One task per ACTIVE instance of the cluster (DAEMON services).
    async fn daemon_count(&self, cluster: &str) -> anyhow::Result<u32> {
        let instances: Vec<crate::model::ContainerInstance> =
            objects::list(&*self.store, &keys::prefix(Kind::ContainerInstance)).await?;
        Ok(instances
            .iter()
            .filter(|i| i.spec.cluster == cluster && i.status.status == "ACTIVE")
            .count() as u32)
    }

    fn new_task(&self, svc: &Service, td: &TaskDefinition, deployment: &str) -> Task {
        let mut constraints = svc.spec.placement_constraints.clone();
        constraints.extend(td.spec.placement_constraints.iter().cloned());
        if svc.spec.scheduling_strategy == Some(SchedulingStrategy::Daemon)
            && !constraints
                .iter()
                .any(|c| c.kind == crate::model::PlacementConstraintType::DistinctInstance)
        {
            constraints.push(crate::model::PlacementConstraint {
                kind: crate::model::PlacementConstraintType::DistinctInstance,
                expression: None,
            });
        }
        let mut t = Task::new(
            Kind::Task,
            new_id(),
            TaskSpec {
                task_definition: td.metadata.name.clone(),
                cluster: svc.spec.cluster.clone(),
                group: group_of(&svc.metadata.name),
                started_by: deployment.to_string(),
                deployment_id: deployment.to_string(),
                placement_strategy: svc.spec.placement_strategy.clone(),
                placement_constraints: constraints,
                cpu: td.spec.reserved_cpu(),
                memory: td.spec.reserved_memory(),
            },
        );
        t.metadata.uid = t.metadata.name.clone();
        t.metadata.created_at = Some(now());
        t.metadata
            .labels
            .insert("berth.service".into(), svc.metadata.name.clone());
        t.status = TaskStatus {
            last_status: TaskState::Provisioning,
            desired_status: DesiredStatus::Running,
            created_at: Some(now()),
            ..Default::default()
        };
        t
    }

    /// Write the service status (if changed) and any new tasks in one fenced transaction.
    /// Returns false when the service changed underneath.
    async fn write_status(
        &self,
        key: &str,
        before: &Service,
        after: &Service,
        creates: Vec<Task>,
    ) -> anyhow::Result<bool> {
        if before == after && creates.is_empty() {
            return Ok(true);
        }
        let mut txn = Txn::new()
            .when(Compare::mod_revision(key, before.metadata.revision))
            .and_then(Op::put(key, after.to_bytes()));
        for t in &creates {
            let tk = keys::key(Kind::Task, &t.metadata.name);
            txn = txn
                .when(Compare::absent(&tk))
                .and_then(Op::put(tk, t.to_bytes()));
        }
        Ok(self.store.txn(txn).await?.succeeded)
    }
}

fn has_checks(td: &TaskDefinition) -> bool {
    td.spec.container_definitions.iter().any(|c| {
        c.is_essential()
            && c.health_check
                .as_ref()
                .is_some_and(|h| h.command.first().map(String::as_str) != Some("NONE"))
    })
}

#[async_trait]
impl Reconciler for ServiceController {
    async fn reconcile(&self, name: &str) -> anyhow::Result<Action> {
        self.reconcile_service(name).await
    }

    async fn resync_keys(&self) -> anyhow::Result<Vec<String>> {
        let (kvs, _) = self.store.range(&keys::prefix(Kind::Service)).await?;
        let mut names: Vec<String> = kvs
            .iter()
            .filter_map(|kv| keys::name_of(&kv.key, Kind::Service))
            .map(str::to_string)
            .collect();
        // Tasks whose service is gone are reconciled through their group's name.
        for t in objects::list_tasks(&*self.store).await? {
            if let Some(s) = t.service_name() {
                if t.is_active() {
                    names.push(s.to_string());
                }
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }
}
