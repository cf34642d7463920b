//! The agent's stats sampler: every interval, one-shot Docker stats of each running container
//! this agent owns (bounded concurrency), CPU computed from the delta of the container's CPU
//! time between two passes, memory as `docker stats` shows it. The pass is written to the store
//! as ONE compact key per instance (`/berth/stats/<instanceId>`, on a lease), so the store sees
//! one small write per agent per interval.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::ContainerStatsResponse;
use bollard::query_parameters::{ListContainersOptions, StatsOptionsBuilder};
use bollard::Docker;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::docker::{LABEL_CONTAINER, LABEL_INSTANCE, LABEL_TASK};
use crate::metrics::sample::{now_ms, stats_key, ContainerSample, InstanceSample};
use crate::store::{DynStore, Op, StoreError, Txn};

/// How often the agent samples by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Docker stats calls in flight at once. dockerd answers stats from a collector that ticks
/// once a second, so a call waits for the next tick: too low a bound spreads one pass over
/// many ticks (8 → 13 s for 100 containers); the calls themselves are cheap to hold open.
pub const CONCURRENCY: usize = 64;

/// One container's CPU counter as last read.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    total_ns: u64,
    at: Instant,
}

/// Samples the containers of one agent; keeps the previous CPU counters between passes.
pub struct Sampler {
    docker: Docker,
    instance: String,
    concurrency: usize,
    prev: HashMap<String, CpuMark>,
}

/// What one running container is, from its labels.
#[derive(Debug, Clone)]
struct Target {
    id: String,
    task: String,
    name: String,
}

impl Sampler {
    pub fn new(docker: Docker, instance: &str) -> Self {
        Sampler {
            docker,
            instance: instance.to_string(),
            concurrency: CONCURRENCY,
            prev: HashMap::new(),
        }
    }

    async fn targets(&self) -> anyhow::Result<Vec<Target>> {
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_string(),
            vec![format!("{LABEL_INSTANCE}={}", self.instance)],
        );
        filters.insert("status".to_string(), vec!["running".to_string()]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: false,
                filters: Some(filters),
                ..Default::default()
            }))
            .await?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                Some(Target {
                    id: c.id?,
                    task: labels.get(LABEL_TASK)?.clone(),
                    name: labels.get(LABEL_CONTAINER).cloned().unwrap_or_default(),
                })
            })
            .collect())
    }

    /// One pass over every running container. Containers seen for the first time only record
    /// their CPU counter (a rate needs two readings) and are left out of this pass.
    pub async fn sample(&mut self, interval: Duration) -> anyhow::Result<InstanceSample> {
        let targets = self.targets().await?;
        let docker = self.docker.clone();
        let results: Vec<(Target, Option<ContainerStatsResponse>, Instant)> =
            futures::stream::iter(targets)
                .map(|t| {
                    let docker = docker.clone();
                    async move {
                        let opts = StatsOptionsBuilder::default()
                            .stream(false)
                            .one_shot(true)
                            .build();
                        let r = docker.stats(&t.id, Some(opts)).next().await;
                        let at = Instant::now();
                        (t, r.and_then(|r| r.ok()), at)
                    }
                })
                .buffer_unordered(self.concurrency.max(1))
                .collect()
                .await;
        let mut next_prev = HashMap::with_capacity(results.len());
        let mut containers = Vec::with_capacity(results.len());
        for (t, stats, at) in results {
            let Some(s) = stats else { continue };
            let total_ns = s
                .cpu_stats
                .as_ref()
                .and_then(|c| c.cpu_usage.as_ref())
                .and_then(|u| u.total_usage)
                .unwrap_or(0);
            let mark = CpuMark { total_ns, at };
            let prev = self.prev.get(&t.id).copied();
            next_prev.insert(t.id.clone(), mark);
            let Some(prev) = prev else { continue };
            let wall = at.duration_since(prev.at).as_nanos() as f64;
            let cpu_percent = if wall > 0.0 && total_ns >= prev.total_ns {
                (total_ns - prev.total_ns) as f64 / wall * 100.0
            } else {
                0.0
            };
            let (mem_bytes, mem_limit) = memory(&s);
            containers.push(ContainerSample {
                task: t.task,
                name: t.name,
                cpu_percent: (cpu_percent * 100.0).round() / 100.0,
                mem_bytes,
                mem_limit,
            });
        }
        self.prev = next_prev;
        containers.sort_by(|a, b| (&a.task, &a.name).cmp(&(&b.task, &b.name)));
        Ok(InstanceSample {
            instance: self.instance.clone(),
            at_ms: now_ms(),
            interval_secs: interval.as_secs_f64(),
            containers,
        })
    }
}

/// Memory in use the way `docker stats` computes it: usage minus inactive page cache; and the
/// limit (0 when it is the whole host).
fn memory(s: &ContainerStatsResponse) -> (u64, u64) {
    let Some(m) = s.memory_stats.as_ref() else {
        return (0, 0);
    };
    let usage = m.usage.unwrap_or(0);
    let cache = m
        .stats
        .as_ref()
        .and_then(|st| {
            st.get("inactive_file")
                .or_else(|| st.get("total_inactive_file"))
                .copied()
        })
        .unwrap_or(0);
    let limit = m.limit.unwrap_or(0);
    // Docker reports the host's memory as the limit of an unlimited container.
    let limit = if limit >= (1u64 << 60) { 0 } else { limit };
    (usage.saturating_sub(cache), limit)
}

/// Write one pass under the sampler's lease (granted or re-granted as needed).
async fn publish(
    store: &DynStore,
    key: &str,
    sample: &InstanceSample,
    lease: &mut Option<i64>,
    ttl: Duration,
) -> Result<(), StoreError> {
    let value = serde_json::to_vec(sample).expect("samples serialize");
    for _ in 0..2 {
        let l = match *lease {
            Some(l) => match store.lease_keep_alive(l).await {
                Ok(()) => l,
                Err(StoreError::LeaseNotFound(_)) => {
                    *lease = None;
                    continue;
                }
                Err(e) => return Err(e),
            },
            None => {
                let l = store.lease_grant(ttl).await?;
                *lease = Some(l);
                l
            }
        };
        match store
            .txn(Txn::new().and_then(Op::put_with_lease(key, value.clone(), l)))
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::LeaseNotFound(_)) => *lease = None,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Unavailable(
        "could not hold a stats lease".into(),
    ))
}

/// Sample every `interval` until `shutdown`; the key vanishes with its lease when the agent
/// stops or dies. An idle agent (no containers) writes once and then stays quiet.
pub async fn run(
    store: DynStore,
    docker: Docker,
    instance: String,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let interval = interval.max(Duration::from_millis(200));
    let key = stats_key(&instance);
    let ttl = (interval * 3).max(Duration::from_secs(15));
    let mut sampler = Sampler::new(docker, &instance);
    let mut lease: Option<i64> = None;
    let mut last_empty = false;
    let mut last_write = Instant::now();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let sample = match sampler.sample(interval).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "stats pass failed");
                continue;
            }
        };
        let empty = sample.containers.is_empty();
        // Nothing running: no need to say so again (the lease keeps the last empty pass),
        // except to keep the lease alive.
        if empty && last_empty && last_write.elapsed() < ttl / 3 {
            continue;
        }
        match publish(&store, &key, &sample, &mut lease, ttl).await {
            Ok(()) => {
                last_empty = empty;
                last_write = Instant::now();
            }
            Err(e) => tracing::debug!(error = %e, "writing stats failed"),
        }
    }
    if let Some(l) = lease {
        let _ = store.lease_revoke(l).await;
    }
}
