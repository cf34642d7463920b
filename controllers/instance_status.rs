//! Keeps each ContainerInstance's observed status true: remaining resources, task counts and
//! whether its agent holds its lease.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::time::{Duration, Instant};

use berth_core::model::{keys, Kind, Task};
use berth_core::objects::{self, ObjectError};
use berth_core::runtime::{
    Action, ClusterCache, Controller, ControllerOptions, Reconciler, Trigger,
};
use berth_core::store::DynStore;

use crate::capacity::{candidate, remaining, PortsOf};

pub struct InstanceStatus {
    store: DynStore,
    cache: ClusterCache,
    /// When each instance's counters were last written by us.
    written: Mutex<HashMap<String, Instant>>,
}

/// Counters (remaining resources, task counts) of one instance are written at most once a
/// second: a burst of placements would otherwise rewrite the record after every task
/// transition, and every rewrite makes the scheduler's compare on that record fail once.
/// Connection changes are written at once.
const COUNTERS_EVERY: Duration = Duration::from_secs(1);
/// ...and all instances' counters together at most about this many times a second: in a
/// burst over 1,000 instances, one write per instance per second was half of all the writes
/// the store took. The scheduler decides from the cache's usage, not from these counters.
const COUNTER_WRITES_PER_SEC: usize = 200;

/// How often one instance's counters may be written in a cluster of `instances`.
fn counters_every(instances: usize) -> Duration {
    COUNTERS_EVERY.max(Duration::from_secs_f64(
        instances as f64 / COUNTER_WRITES_PER_SEC as f64,
    ))
}

impl InstanceStatus {
    /// An instance-status controller with a cache of its own.
    pub fn controller(store: DynStore) -> Controller {
        let cache = ClusterCache::start(store.clone(), &[]);
        Self::controller_with(store, &cache)
    }

    pub fn controller_with(store: DynStore, cache: &ClusterCache) -> Controller {
        let r = Arc::new(InstanceStatus {
            store: store.clone(),
            cache: cache.clone(),
            written: Mutex::new(HashMap::new()),
        });
        let by_task =
            |t: &Task| -> Vec<String> { t.status.container_instance.clone().into_iter().collect() };
        let by_name = |prefix: String| {
            move |kv: &berth_core::store::KeyValue| -> Vec<String> {
                kv.key
                    .strip_prefix(&prefix)
                    .map(|s| vec![s.to_string()])
                    .unwrap_or_default()
            }
        };
        Controller::new(
            "instances",
            store,
            r,
            ControllerOptions {
                workers: 2,
                resync: Duration::from_secs(15),
                ..Default::default()
            },
        )
        .shared(&cache.informer)
        .trigger(
            Trigger::on::<Task>(keys::prefix(Kind::Task), by_task)
                .spaced(super::common::TASK_BURST_SPACING),
        )
        .primary(Kind::ContainerInstance)
        .trigger(Trigger::new(
            keys::INSTANCE_LEASE_PREFIX,
            by_name(keys::INSTANCE_LEASE_PREFIX.to_string()),
        ))
    }
}

#[async_trait]
impl Reconciler for InstanceStatus {
    async fn reconcile(&self, id: &str) -> anyhow::Result<Action> {
        let key = keys::key(Kind::ContainerInstance, id);
        for _ in 0..10 {
            // The record, its lease and its tasks' usage as one cut of the cache: the usage
            // is the cache's per-instance aggregate, not a fold over the cluster's tasks.
            let cut = self.cache.informer.consistent(|_| {
                let inst = self.cache.instances.get_name(id)?;
                Some((inst, self.cache.connected(id), self.cache.usage(id)))
            });
            let Some((inst, connected, usage)) = cut else {
                return Ok(Action::Done);
            };
            let cand = candidate(
                &inst,
                connected,
                &usage,
                &self.cache,
                &mut PortsOf::default(),
            );
            let mut next = (*inst).clone();
            next.status.agent_connected = connected;
            next.status.disconnected_at = match (connected, inst.status.disconnected_at) {
                (true, _) => None,
                (false, Some(t)) => Some(t),
                (false, None) => Some(berth_core::model::now()),
            };
            next.status.remaining_resources = remaining(&cand);
            next.status.running_tasks_count = usage.running;
            next.status.pending_tasks_count = usage.pending;
            if next.status == inst.status {
                return Ok(Action::Done);
            }
            let counters_only = next.status.agent_connected == inst.status.agent_connected
                && next.status.disconnected_at == inst.status.disconnected_at;
            let every = counters_every(self.cache.instances.len());
            let since = self.written.lock().unwrap().get(id).map(|t| t.elapsed());
            if let Some(since) = since.filter(|s| counters_only && *s < every) {
                return Ok(Action::RequeueAfter(every - since));
            }
            match objects::put_cas(&*self.store, &key, &next).await {
                Ok(_) => {
                    let mut w = self.written.lock().unwrap();
                    w.insert(id.to_string(), Instant::now());
                    // Forget instances written long ago (bounded by the cluster's size anyway).
                    if w.len() > 4096 {
                        w.retain(|_, t| t.elapsed() < every);
                    }
                    return Ok(Action::Done);
                }
                Err(ObjectError::Conflict(_)) => {
                    // Our cut was stale: decide again once the cache has what the store has.
                    let rev = self.store.revision().await?;
                    self.cache.wait_for(rev).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Action::Requeue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_writes_stay_within_a_cluster_wide_budget() {
        assert_eq!(counters_every(0), COUNTERS_EVERY);
        assert_eq!(counters_every(200), COUNTERS_EVERY);
        assert_eq!(counters_every(1000), Duration::from_secs(5));
        for n in [1usize, 10, 199, 201, 1000, 5000] {
            let per_sec = n as f64 / counters_every(n).as_secs_f64();
            assert!(
                per_sec <= COUNTER_WRITES_PER_SEC as f64 + 1e-9,
                "{n}: {per_sec}/s"
            );
        }
    }
}
