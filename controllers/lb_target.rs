//! lb_target controller: keeps each target group's registered targets equal to the RUNNING
//! tasks of the services that name it, and drains targets of stopping tasks.
//!
//! Protocol with the load balancers and the agent (all through the store):
//! 1. a RUNNING task of a service with `loadBalancers` gets a `Target` record (`registered`);
//!    load balancers health-check it and route to it once healthy;
//! 2. when the task is asked to stop, its target turns `draining`: load balancers send it no
//!    new request and report `drained` once nothing is in flight;
//! 3. the record is deleted when drained (or the deregistration delay passed, or the task is
//!    gone) — and only then does the agent send SIGTERM (it waits while a record exists).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::time::Duration;

use super::common::{self, event_once};
use berth_core::model::lb::{lb_keys, Target, TargetHealth};
use berth_core::model::{keys, now, Kind, Service, TargetGroup, Task, TaskState};
use berth_core::objects::{self, ObjectError};
use berth_core::runtime::cluster_cache::TARGETS_BY_SERVICE;
use berth_core::runtime::{
    Action, ClusterCache, Controller, ControllerOptions, Reconciler, Trigger,
};
use berth_core::store::{chunk_ops, DynStore, Op, Txn};

pub struct LbTargetController {
    store: DynStore,
    cache: ClusterCache,
}

impl LbTargetController {
    /// An lb_target controller with a cache of its own.
    pub fn controller(store: DynStore) -> Controller {
        let cache = ClusterCache::start(store.clone(), &[]);
        Self::controller_with(store, &cache)
    }

    pub fn controller_with(store: DynStore, cache: &ClusterCache) -> Controller {
        let r = Arc::new(LbTargetController {
            store: store.clone(),
            cache: cache.clone(),
        });
        let by_health = |h: &TargetHealth| vec![h.service.clone()];
        let by_target = |t: &Target| vec![t.service.clone()];
        Controller::new(
            "lb_target",
            store,
            r,
            ControllerOptions {
                workers: 4,
                resync: Duration::from_secs(15),
                ..Default::default()
            },
        )
        .shared(&cache.informer)
        .primary_spaced(Kind::Service, common::TASK_BURST_SPACING)
        .trigger(
            Trigger::on::<Task>(keys::prefix(Kind::Task), common::task_service)
                .spaced(common::TASK_BURST_SPACING),
        )
        .trigger(Trigger::on::<TargetHealth>(
            lb_keys::TARGET_HEALTH,
            by_health,
        ))
        .trigger(Trigger::on::<Target>(lb_keys::TARGETS, by_target))
    }

    /// Where a load balancer reaches a task's container port: the instance's host IP and the
    /// published host port (bridge/host), or the task's own IP and the container port (awsvpc).
    fn address(&self, t: &Task, container: &str, port: u16) -> Option<(String, u16)> {
        if let Some(ip) = t.status.task_ip.as_deref().filter(|ip| !ip.is_empty()) {
            return Some((ip.to_string(), port));
        }
        let host_ip = self
            .cache
            .instances
            .get_name(t.status.container_instance.as_deref()?)
            .map(|i| i.spec.host_ip.clone())
            .filter(|ip| !ip.is_empty())
            .unwrap_or_else(|| "127.0.0.1".into());
        let c = t.status.containers.iter().find(|c| c.name == container)?;
        let b = c
            .network_bindings
            .iter()
            .find(|b| b.container_port == port)?;
        Some((host_ip, b.host_port))
    }

    async fn reconcile_service(&self, name: &str) -> anyhow::Result<Action> {
        let svc: Option<Service> =
            objects::get(&*self.store, &keys::key(Kind::Service, name)).await?;
        // Targets are written unfenced: decide on a cache that holds everything the store had
        // when this reconcile began (a consistent read), so a stale view cannot re-register a
        // target that was just drained.
        let rev = self.store.revision().await?;
        self.cache.wait_for(rev).await?;
        let tasks = common::tasks_of(&self.cache, name);
        let by_id: BTreeMap<&str, &Task> = tasks
            .iter()
            .map(|t| (t.metadata.name.as_str(), &**t))
            .collect();
        // Every target of this service, in any target group (the targets-by-service index).
        let mut existing: Vec<(String, Target)> = self
            .cache
            .targets
            .by_index(TARGETS_BY_SERVICE, name)
            .iter()
            .map(|t| (lb_keys::target(&t.target_group, &t.task_id), (**t).clone()))
            .collect();
        let wanted_lbs = svc
            .as_ref()
            .map(|s| s.spec.load_balancers.clone())
            .unwrap_or_default();
        let mut registered: BTreeMap<String, u32> = BTreeMap::new();
        let mut deregistered: BTreeMap<String, u32> = BTreeMap::new();
        let mut draining = false;
        let mut txn = Txn::new();
        let mut writes = 0;

        for lb in &wanted_lbs {
            let tg: Option<TargetGroup> = objects::get(
                &*self.store,
                &keys::key(Kind::TargetGroup, &lb.target_group),
            )
            .await?;
            let delay = tg
                .map(|t| t.spec.deregistration_delay_seconds)
                .unwrap_or(30);
            for t in &tasks {
                let key = lb_keys::target(&lb.target_group, &t.metadata.name);
                let have = existing.iter().any(|(k, _)| *k == key);
                if have || !t.is_active() || t.status.last_status != TaskState::Running {
                    continue;
                }
                let Some((ip, port)) = self.address(t, &lb.container_name, lb.container_port)
                else {
                    continue;
                };
                let target = Target {
                    target_group: lb.target_group.clone(),
                    task_id: t.metadata.name.clone(),
                    service: name.to_string(),
                    ip,
                    port,
                    state: "registered".into(),
                    registered_at: now(),
                    draining_since: None,
                    deregistration_delay_seconds: delay,
                };
                txn = txn.and_then(Op::put(key, serde_json::to_vec(&target)?));
                writes += 1;
                *registered.entry(lb.target_group.clone()).or_insert(0) += 1;
            }
        }
        let wanted_groups: BTreeSet<&str> =
            wanted_lbs.iter().map(|l| l.target_group.as_str()).collect();
        for (tkey, target) in existing.iter_mut() {
            let task = by_id.get(target.task_id.as_str());
            let keep = task
                .is_some_and(|t| t.is_active() && t.status.last_status == TaskState::Running)
                && wanted_groups.contains(target.target_group.as_str());
            let health_key = lb_keys::health(&target.target_group, &target.task_id);
            if target.state == "registered" && !keep {
                if task.is_none_or(|t| t.is_stopped()) {
                    // Nothing left to drain.
                    txn = txn
                        .and_then(Op::delete(tkey.clone()))
                        .and_then(Op::delete(health_key));
                    *deregistered.entry(target.target_group.clone()).or_insert(0) += 1;
                } else {
                    target.state = "draining".into();
                    target.draining_since = Some(now());
                    txn = txn.and_then(Op::put(tkey.clone(), serde_json::to_vec(&*target)?));
                    draining = true;
                }
                writes += 1;
            } else if target.state == "draining" {
                let drained = self
                    .cache
                    .target_health
                    .get(&health_key)
                    .is_some_and(|h| h.state == "drained");
                let expired = target.draining_since.is_none_or(|s| {
                    now() - s
                        >= chrono::Duration::seconds(target.deregistration_delay_seconds as i64)
                });
                if drained || expired || task.is_none_or(|t| t.is_stopped()) {
                    txn = txn
                        .and_then(Op::delete(tkey.clone()))
                        .and_then(Op::delete(health_key));
                    *deregistered.entry(target.target_group.clone()).or_insert(0) += 1;
                    writes += 1;
                } else {
                    draining = true;
                }
            }
        }
        if writes > 0 {
            // Unfenced puts and deletes: chunking to etcd's default limits changes nothing.
            for ops in chunk_ops(txn.success) {
                self.store
                    .txn(Txn {
                        success: ops,
                        ..Txn::new()
                    })
                    .await?;
            }
        }
        if let Some(svc) = svc.filter(|_| !registered.is_empty() || !deregistered.is_empty()) {
            self.events(name, svc, &registered, &deregistered).await?;
        }
        Ok(if draining {
            Action::RequeueAfter(Duration::from_millis(500))
        } else {
            Action::Done
        })
    }

    async fn events(
        &self,
        name: &str,
        mut svc: Service,
        registered: &BTreeMap<String, u32>,
        deregistered: &BTreeMap<String, u32>,
    ) -> anyhow::Result<()> {
        let key = keys::key(Kind::Service, name);
        for _ in 0..5 {
            let mut next = svc.clone();
            for (tg, n) in registered {
                event_once(
                    &mut next,
                    format!("service {name} registered {n} targets in target-group {tg}"),
                );
            }
            for (tg, n) in deregistered {
                event_once(
                    &mut next,
                    format!("service {name} deregistered {n} targets in target-group {tg}"),
                );
            }
            match objects::put_cas(&*self.store, &key, &next).await {
                Ok(_) => return Ok(()),
                Err(ObjectError::Conflict(_)) => {
                    let Some(fresh) = objects::get(&*self.store, &key).await? else {
                        return Ok(());
                    };
                    svc = fresh;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Tasks of a service whose every load-balancer target is healthy (for the deployment math:
/// a task behind a load balancer counts as healthy only once the load balancer says so).
/// One cache lookup per task and load balancer: the service's own work.
pub fn lb_healthy_tasks(
    cache: &ClusterCache,
    svc: &Service,
    tasks: &[Arc<Task>],
) -> Option<BTreeSet<String>> {
    if svc.spec.load_balancers.is_empty() {
        return None;
    }
    Some(
        tasks
            .iter()
            .filter(|t| {
                svc.spec.load_balancers.iter().all(|lb| {
                    cache
                        .target_health
                        .get(&lb_keys::health(&lb.target_group, &t.metadata.name))
                        .is_some_and(|h| h.state == "healthy")
                })
            })
            .map(|t| t.metadata.name.clone())
            .collect(),
    )
}

#[async_trait]
impl Reconciler for LbTargetController {
    async fn reconcile(&self, name: &str) -> anyhow::Result<Action> {
        self.reconcile_service(name).await
    }

    async fn resync_keys(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.cache.targets.index_values(TARGETS_BY_SERVICE))
    }
}
