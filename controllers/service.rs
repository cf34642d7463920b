//! service controller: keeps `desiredCount` tasks of the service's primary deployment, replaces
//! what died, rolls to new task-definition revisions within the min/max percent bounds, and
//! drains and removes a service that is being deleted.
//!
//! Tasks are created in the same transaction that compares the service's revision, so a stale
//! reconcile (another process, an old read) can never double-create: the write fails and the
//! reconcile starts over from fresh state (Kubernetes' "expectations", by construction).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::time::Duration;

use super::common::{self, counts_healthy, event_once};
use super::rollout::{self, Counts};
use berth_core::model::{
    keys, now, stop_codes, ContainerInstance, DesiredStatus, Kind, SchedulingStrategy, Service,
    Task, TaskDefinition, TaskState,
};
use berth_core::objects::{self, ObjectError};
use berth_core::runtime::{
    Action, ClusterCache, Controller, ControllerOptions, Reconciler, Trigger,
};
use berth_core::store::{Compare, DynStore, KeyValue, Op, Txn, MAX_TXN_BYTES, MAX_TXN_COMPARES};

/// How long STOPPED tasks stay readable (ECS keeps them about an hour).
pub const STOPPED_TASK_RETENTION: chrono::Duration = chrono::Duration::hours(1);

pub struct ServiceController {
    store: DynStore,
    cache: ClusterCache,
    /// Service → the PRIMARY deployment its latest reconcile acted on (see `controller_with`).
    seen_primary: Arc<Mutex<HashMap<String, String>>>,
}

impl ServiceController {
    /// A service controller with a cache of its own.
    pub fn controller(store: DynStore) -> Controller {
        let cache = ClusterCache::start(store.clone(), &[]);
        Self::controller_with(store, &cache)
    }

    /// Reads the service's tasks from `cache` (its tasks-by-service index).
    /// The reconciler alone (tests call `reconcile` on it directly).
    pub fn new(store: DynStore, cache: &ClusterCache) -> Self {
        ServiceController {
            store,
            cache: cache.clone(),
            seen_primary: Default::default(),
        }
    }

    pub fn controller_with(store: DynStore, cache: &ClusterCache) -> Controller {
        let r = Arc::new(ServiceController::new(store.clone(), cache));
        let seen = r.seen_primary.clone();
        let new_primary = move |svc: &Service| -> Vec<String> {
            let name = &svc.metadata.name;
            let primary = svc
                .status
                .deployments
                .iter()
                .find(|d| d.status == "PRIMARY");
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            match primary {
                Some(d) if seen.get(name) != Some(&d.id) => vec![name.clone()],
                _ => vec![],
            }
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
        .shared(&cache.informer)
        .primary_spaced(Kind::Service, common::TASK_BURST_SPACING)
        // ...except a PRIMARY deployment this controller has not acted on yet (a new service's
        // first, written by the deployment controller right after our first, empty pass; a
        // new revision's): its tasks are created at once, not a spacing later.
        .trigger(Trigger::on::<Service>(
            keys::prefix(Kind::Service),
            new_primary,
        ))
        .trigger(
            Trigger::on::<Task>(keys::prefix(Kind::Task), common::task_service)
                .spaced(common::TASK_BURST_SPACING),
        )
        // DAEMON services follow their cluster's instances on the instance's own event (a
        // join, a drain, a disconnect), not on the next resync; a draining instance also
        // wakes every service with tasks on it, to move them off.
        .trigger(Trigger::on::<ContainerInstance>(
            keys::prefix(Kind::ContainerInstance),
            instance_trigger(cache),
        ))
        // ...and on its lease (a DAEMON counts connected instances).
        .trigger(Trigger::new(
            keys::INSTANCE_LEASE_PREFIX,
            lease_trigger(cache),
        ))
    }
}

/// Queue key standing for every DAEMON service of a cluster (no service name has a `/`).
const DAEMONS_OF: &str = "daemons-of/";

fn lease_trigger(cache: &ClusterCache) -> impl Fn(&KeyValue) -> Vec<String> + Send + Sync {
    let cache = cache.clone();
    move |kv: &KeyValue| {
        let id = kv
            .key
            .strip_prefix(keys::INSTANCE_LEASE_PREFIX)
            .unwrap_or("");
        cache
            .instances
            .get(&keys::key(Kind::ContainerInstance, id))
            .map(|i| format!("{DAEMONS_OF}{}", i.spec.cluster))
            .into_iter()
            .collect()
    }
}

fn instance_trigger(
    cache: &ClusterCache,
) -> impl Fn(&ContainerInstance) -> Vec<String> + Send + Sync + 'static {
    let cache = cache.clone();
    move |i: &ContainerInstance| {
        let mut keys = vec![format!("{DAEMONS_OF}{}", i.spec.cluster)];
        // Placements rewrite ACTIVE instances all the time: only a drain needs the rest.
        if i.status.status != "ACTIVE" {
            let mut services: Vec<String> = cache
                .tasks_on_instance(&i.metadata.name)
                .iter()
                .filter(|t| !t.is_stopped())
                .filter_map(|t| t.service_name().map(str::to_string))
                .collect();
            services.sort();
            services.dedup();
            keys.extend(services);
        }
        keys
    }
}

impl ServiceController {
    async fn stop_tasks(&self, ids: &[String], reason: &str) -> anyhow::Result<()> {
        for id in ids {
            objects::request_stop(
                &*self.store,
                id,
                stop_codes::SERVICE_SCHEDULER_INITIATED,
                reason,
            )
            .await?;
        }
        Ok(())
    }

    /// Delete STOPPED tasks of the service past retention.
    async fn collect_garbage(&self, tasks: &[Arc<Task>]) -> anyhow::Result<()> {
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
        let began = tokio::time::Instant::now();
        let key = keys::key(Kind::Service, name);
        let svc: Option<Service> = objects::get(&*self.store, &key).await?;
        if let Some(s) = &svc {
            common::caught_up(&self.cache, s.metadata.revision).await?;
        }
        let tasks: Vec<Arc<Task>> = common::tasks_of(&self.cache, name);
        self.collect_garbage(&tasks).await?;
        let active: Vec<&Task> = tasks
            .iter()
            .map(|t| &**t)
            .filter(|t| t.is_active())
            .collect();
        let Some(svc) = svc else {
            self.seen_primary
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
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

        // The deployment controller decides which revision is PRIMARY; we move tasks to it.
        let Some(primary) = svc
            .status
            .deployments
            .iter()
            .find(|d| d.status == "PRIMARY")
            .cloned()
        else {
            return Ok(Action::Done);
        };
        self.seen_primary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), primary.id.clone());
        let Some(td) = common::taskdef(&*self.store, &self.cache, &primary.task_definition).await?
        else {
            event_once(
                &mut next,
                format!(
                    "service {name} is unable to resolve task definition {}.",
                    primary.task_definition
                ),
            );
            self.write_status(&key, &svc, &next, vec![]).await?;
            return Ok(Action::RequeueAfter(Duration::from_secs(10)));
        };
        let primary_td = td.metadata.name.clone();
        let primary_id = primary.id.clone();
        let desired = common::desired_count(&self.cache, &svc);
        let checks = common::checks_by_taskdef(&*self.store, &self.cache, &tasks, &[&td]).await?;
        let behind_lb = super::lb_target::lb_healthy_tasks(&self.cache, &svc, &tasks);
        let healthy = |t: &Task| {
            counts_healthy(t, checks[&t.spec.task_definition])
                && behind_lb
                    .as_ref()
                    .is_none_or(|ok| ok.contains(&t.metadata.name))
        };
        // Tasks on a draining or deregistered instance are replaced like an old revision's
        // (within the same min/max bounds), as ECS drains; a DAEMON task goes last.
        let daemon = svc.spec.scheduling_strategy == Some(SchedulingStrategy::Daemon);
        let leaving = self.leaving_instances(&active, name, daemon);
        let on_leaving = |t: &Task| {
            t.status
                .container_instance
                .as_deref()
                .is_some_and(|i| leaving.contains(i))
        };
        let (new, old): (Vec<&Task>, Vec<&Task>) = active
            .iter()
            .partition(|t| t.spec.task_definition == primary_td && !on_leaving(t));
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
        let mut step = rollout::step(
            desired,
            cfg.minimum_healthy_percent,
            cfg.maximum_percent,
            counts,
        );
        // Judged on the arithmetic alone: a back-off or a tripped breaker holding launches is
        // not a configuration that leaves no room.
        let stuck = rollout::is_stuck(desired, counts, step);
        let mut requeue = None;
        if primary.rollout_state == "FAILED" && step.start > 0 {
            // The circuit breaker tripped with nothing to roll back to: stop launching.
            step.start = 0;
        }
        // Crash loops: back off launches after repeated failures in a row.
        let consecutive =
            rollout::crash_loop_failures(&tasks, &primary_td, primary.created_at, now());
        let backoff = rollout::launch_backoff(consecutive);
        if step.start > 0 && !backoff.is_zero() {
            let last = tasks
                .iter()
                .filter_map(|t| t.status.stopped_at)
                .max()
                .unwrap_or_else(now);
            let wait_until = last + chrono::Duration::from_std(backoff).unwrap_or_default();
            let left = (wait_until - now()).to_std().unwrap_or_default();
            if !left.is_zero() {
                step.start = 0;
                requeue = Some(left);
                event_once(
                    &mut next,
                    format!(
                        "service {name} is backing off task launches for {:.1}s after {consecutive} consecutive task failures.",
                        backoff.as_secs_f64()
                    ),
                );
            }
        }
        if stuck {
            event_once(
                &mut next,
                format!(
                    "service {name} is unable to make progress: minimumHealthyPercent {} and maximumPercent {} leave no room to replace tasks; raise maximumPercent or lower minimumHealthyPercent.",
                    cfg.minimum_healthy_percent, cfg.maximum_percent
                ),
            );
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

        // New tasks are written together with the service status, fenced by its revision, in
        // transactions that fit etcd's defaults (--max-txn-ops 128, 1.5 MiB): each compares
        // the service revision the previous one wrote and rewrites the service record, so the
        // chain is as safe as one transaction (a change of the service by anyone else stops
        // it) and the service's revision is always that of its newest tasks (what the next
        // pass waits for in the cache before counting). At most MAX_CREATES_PER_PASS per pass;
        // the rest follow on a requeue.
        let creates: Vec<Task> = (0..step.start.min(MAX_CREATES_PER_PASS))
            .map(|_| self.new_task(&svc, &td, &primary_id))
            .collect();
        let more_to_create = (creates.len() as u32) < step.start;
        if !creates.is_empty() {
            let ids: Vec<&str> = creates.iter().map(|t| t.metadata.name.as_str()).collect();
            next.status.push_event(format!(
                "service {name} has started {} tasks: {}.",
                creates.len(),
                task_list(&ids)
            ));
        }
        if !to_stop.is_empty() {
            let ids: Vec<&str> = to_stop.iter().map(String::as_str).collect();
            next.status.push_event(format!(
                "service {name} has stopped {} running tasks: {}.",
                to_stop.len(),
                task_list(&ids)
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
        let steady = creates.is_empty()
            && to_stop.is_empty()
            && counts.new_total == desired
            && counts.new_healthy == desired
            && counts.old_total == 0
            && stopping == 0;
        let n_creates = creates.len();
        let mut chunks = chunk_creates(creates, next.to_bytes().len()).into_iter();
        let first = chunks.next().unwrap_or_default();
        let written = match self.write_status(&key, &svc, &next, first).await {
            Ok(w) => w,
            Err(e) => {
                // Users read the service, not /v1/controllers: say why nothing starts.
                let mut failed = svc.clone();
                event_once(
                    &mut failed,
                    format!("service {name} was unable to write {n_creates} new tasks: {e:#}."),
                );
                let _ = self.write_status(&key, &svc, &failed, vec![]).await;
                return Err(e);
            }
        };
        let Some(mut fence) = written else {
            // Lost a race with another writer: start over on fresh state.
            tracing::debug!(
                service = name,
                creates = n_creates,
                "service changed before the write"
            );
            return Ok(Action::Requeue);
        };
        for chunk in chunks {
            match self.write_more(&key, fence, &next, &chunk).await? {
                Some(rev) => fence = rev,
                // The service changed: the rest is decided again on fresh state.
                None => {
                    tracing::debug!(service = name, "service changed between chunks");
                    return Ok(Action::Requeue);
                }
            }
        }
        self.stop_tasks(
            &to_stop,
            &format!("Scaling activity initiated by (deployment {primary_id})"),
        )
        .await?;
        tracing::debug!(
            service = name,
            tasks = tasks.len(),
            created = n_creates,
            stopped = to_stop.len(),
            ms = began.elapsed().as_millis() as u64,
            "service pass"
        );
        if more_to_create {
            Ok(Action::Requeue)
        } else if let Some(d) = requeue {
            Ok(Action::RequeueAfter(d))
        } else if steady {
            Ok(Action::Done)
        } else {
            // Task changes re-trigger us; this bounds the wait if a trigger is lost.
            Ok(Action::RequeueAfter(Duration::from_secs(5)))
        }
    }

    /// The instances the service's tasks must move off: draining (or no longer registered)
    /// ones; for a DAEMON, only once no other service's tasks run there (daemons go last).
    /// One lookup per instance, not per task.
    fn leaving_instances(
        &self,
        active: &[&Task],
        service: &str,
        daemon: bool,
    ) -> std::collections::HashSet<String> {
        let mut ids: Vec<&str> = active
            .iter()
            .filter_map(|t| t.status.container_instance.as_deref())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter(|id| {
                let draining = match self
                    .cache
                    .instances
                    .get(&keys::key(Kind::ContainerInstance, id))
                {
                    Some(i) => i.status.status != "ACTIVE",
                    None => true,
                };
                draining
                    && (!daemon
                        || !self.cache.tasks_on_instance(id).iter().any(|o| {
                            !o.is_stopped()
                                && o.service_name().is_some_and(|other| other != service)
                        }))
            })
            .map(str::to_string)
            .collect()
    }

    fn new_task(&self, svc: &Service, td: &TaskDefinition, deployment: &str) -> Task {
        let mut constraints = svc.spec.placement_constraints.clone();
        constraints.extend(td.spec.placement_constraints.iter().cloned());
        if svc.spec.scheduling_strategy == Some(SchedulingStrategy::Daemon)
            && !constraints
                .iter()
                .any(|c| c.kind == berth_core::model::PlacementConstraintType::DistinctInstance)
        {
            constraints.push(berth_core::model::PlacementConstraint {
                kind: berth_core::model::PlacementConstraintType::DistinctInstance,
                expression: None,
            });
        }
        let group = common::group_of(&svc.metadata.name);
        let mut t = Task::provision(td, &svc.spec.cluster, &group, deployment);
        t.spec.deployment_id = deployment.to_string();
        t.spec.placement_strategy = svc.spec.placement_strategy.clone();
        t.spec.placement_constraints = constraints;
        t.metadata
            .labels
            .insert("berth.service".into(), svc.metadata.name.clone());
        t
    }

    /// Write the service status (if changed) and any new tasks in one fenced transaction.
    /// Returns the service's revision afterwards, None when it changed underneath.
    async fn write_status(
        &self,
        key: &str,
        before: &Service,
        after: &Service,
        creates: Vec<Task>,
    ) -> anyhow::Result<Option<i64>> {
        if before == after && creates.is_empty() {
            return Ok(Some(before.metadata.revision));
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
        let r = self.store.txn(txn).await?;
        Ok(r.succeeded.then_some(r.revision))
    }

    /// More new tasks, fenced on the service revision the previous write left, with the
    /// service record rewritten so its revision moves with them. Returns that revision.
    async fn write_more(
        &self,
        key: &str,
        fence: i64,
        svc: &Service,
        creates: &[Task],
    ) -> anyhow::Result<Option<i64>> {
        let mut txn = Txn::new()
            .when(Compare::mod_revision(key, fence))
            .and_then(Op::put(key, svc.to_bytes()));
        for t in creates {
            let tk = keys::key(Kind::Task, &t.metadata.name);
            txn = txn
                .when(Compare::absent(&tk))
                .and_then(Op::put(tk, t.to_bytes()));
        }
        let r = self.store.txn(txn).await?;
        Ok(r.succeeded.then_some(r.revision))
    }
}

/// Task ids named in one service event; the rest are counted. The service record travels with
/// every task-creating transaction and every watch event of the service: a scale-up of 1,024
/// tasks listing every id made each event ~46 KB and the record (50 events) megabytes.
const EVENT_TASK_IDS: usize = 10;

/// `(task a) (task b) … and N more`, as ECS's events list them, at most EVENT_TASK_IDS named.
fn task_list(ids: &[&str]) -> String {
    let mut out: Vec<String> = ids
        .iter()
        .take(EVENT_TASK_IDS)
        .map(|t| format!("(task {t})"))
        .collect();
    if ids.len() > EVENT_TASK_IDS {
        out.push(format!("and {} more", ids.len() - EVENT_TASK_IDS));
    }
    out.join(" ")
}

/// New tasks per pass (a pass of a big service writes several transactions).
const MAX_CREATES_PER_PASS: u32 = 1024;

/// Split new tasks into transactions within etcd's limits: one compare and one put per task
/// plus the service's, each carrying the service record (`svc_bytes`).
fn chunk_creates(creates: Vec<Task>, svc_bytes: usize) -> Vec<Vec<Task>> {
    let mut out: Vec<Vec<Task>> = vec![Vec::new()];
    let mut bytes = svc_bytes;
    for t in creates {
        let n = t.to_bytes().len() + 128;
        let cur = out.last().expect("one chunk");
        if !cur.is_empty() && (cur.len() + 1 >= MAX_TXN_COMPARES || bytes + n > MAX_TXN_BYTES) {
            out.push(Vec::new());
            bytes = svc_bytes;
        }
        bytes += n;
        out.last_mut().expect("one chunk").push(t);
    }
    out
}

#[async_trait]
impl Reconciler for ServiceController {
    async fn reconcile(&self, name: &str) -> anyhow::Result<Action> {
        if let Some(cluster) = name.strip_prefix(DAEMONS_OF) {
            let daemons: Vec<String> = self
                .cache
                .services
                .list()
                .iter()
                .filter(|s| {
                    s.spec.cluster == cluster
                        && s.spec.scheduling_strategy == Some(SchedulingStrategy::Daemon)
                })
                .map(|s| s.metadata.name.clone())
                .collect();
            for svc in daemons {
                self.reconcile_service(&svc).await?;
            }
            return Ok(Action::Done);
        }
        self.reconcile_service(name).await
    }

    async fn resync_keys(&self) -> anyhow::Result<Vec<String>> {
        // Tasks whose service is gone are reconciled through their group's name (from the
        // cache's index: a resync reads no store).
        Ok(self.cache.services_with_tasks())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_at_most_ten_tasks_and_counts_the_rest() {
        let ids: Vec<String> = (0..1024).map(|i| format!("t{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let s = task_list(&ids);
        assert!(s.starts_with("(task t0) (task t1) "), "{s}");
        assert!(s.ends_with("(task t9) and 1014 more"), "{s}");
        assert_eq!(task_list(&ids[..2]), "(task t0) (task t1)");
        assert_eq!(task_list(&ids[..10]).matches("(task ").count(), 10);
        assert!(!task_list(&ids[..10]).contains("more"));
    }
}
