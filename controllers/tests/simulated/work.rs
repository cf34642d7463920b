//! The work of one reconcile follows the service's own tasks, not the cluster's (issue 11's
//! acceptance test): the service controller's and the scheduler's store reads (a counting
//! store wrapper) and cache lookups (the shared cache's read counters) are counted with 10 and
//! with 500 unrelated tasks RUNNING on the same instances, and must be the same. Nothing is
//! timed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use berth_controllers::recovery::{RecoveryController, DEFAULT_LOST_INSTANCE_GRACE};
use berth_controllers::scheduler::Scheduler;
use berth_controllers::service::ServiceController;
use berth_core::agent::simulated::{SimulatedAgent, SimulatedAgentConfig};
use berth_core::apply::{apply, ApplyOptions};
use berth_core::manifest::parse_str;
use berth_core::model::TaskState;
use berth_core::runtime::{ClusterCache, Reconciler, Registry};
use berth_core::store::embedded::EmbeddedStore;
use berth_core::store::{self, DynStore, KeyValue, Store, Txn, TxnResult, WatchStream};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::harness::Web;

/// Counts the reads that go through it (writes, watches and leases pass uncounted).
struct CountingStore {
    inner: DynStore,
    gets: AtomicU64,
    ranges: AtomicU64,
    listed: AtomicU64,
    revisions: AtomicU64,
}

#[async_trait]
impl Store for CountingStore {
    async fn get(&self, key: &str) -> store::Result<Option<KeyValue>> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key).await
    }
    async fn range(&self, prefix: &str) -> store::Result<(Vec<KeyValue>, i64)> {
        let r = self.inner.range(prefix).await?;
        self.ranges.fetch_add(1, Ordering::Relaxed);
        self.listed.fetch_add(r.0.len() as u64, Ordering::Relaxed);
        Ok(r)
    }
    async fn txn(&self, txn: Txn) -> store::Result<TxnResult> {
        self.inner.txn(txn).await
    }
    async fn watch(&self, prefix: &str, from: i64) -> store::Result<WatchStream> {
        self.inner.watch(prefix, from).await
    }
    async fn lease_grant(&self, ttl: StdDuration) -> store::Result<i64> {
        self.inner.lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: i64) -> store::Result<()> {
        self.inner.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: i64) -> store::Result<()> {
        self.inner.lease_revoke(lease).await
    }
    async fn revision(&self) -> store::Result<i64> {
        self.revisions.fetch_add(1, Ordering::Relaxed);
        self.inner.revision().await
    }
}

/// Reads made by one reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Work {
    store_gets: u64,
    store_ranges: u64,
    store_keys_listed: u64,
    store_revision_reads: u64,
    cache_lookups: u64,
    cache_objects: u64,
}

fn reads(s: &CountingStore, cache: &ClusterCache) -> Work {
    let (lookups, objects) = cache.read_stats();
    Work {
        store_gets: s.gets.load(Ordering::Relaxed),
        store_ranges: s.ranges.load(Ordering::Relaxed),
        store_keys_listed: s.listed.load(Ordering::Relaxed),
        store_revision_reads: s.revisions.load(Ordering::Relaxed),
        cache_lookups: lookups,
        cache_objects: objects,
    }
}

fn minus(a: Work, b: Work) -> Work {
    Work {
        store_gets: a.store_gets - b.store_gets,
        store_ranges: a.store_ranges - b.store_ranges,
        store_keys_listed: a.store_keys_listed - b.store_keys_listed,
        store_revision_reads: a.store_revision_reads - b.store_revision_reads,
        cache_lookups: a.cache_lookups - b.cache_lookups,
        cache_objects: a.cache_objects - b.cache_objects,
    }
}

async fn apply_yaml(store: &DynStore, yaml: &str) {
    let docs = parse_str(yaml, "test.yaml").expect("manifests parse");
    apply(&**store, &docs, &ApplyOptions::default())
        .await
        .expect("apply");
}

fn running(cache: &ClusterCache, service: &str) -> usize {
    cache
        .tasks_of_service(service)
        .iter()
        .filter(|t| t.status.last_status == TaskState::Running)
        .count()
}

async fn settle(inner: &DynStore, cache: &ClusterCache) {
    let rev = inner.revision().await.unwrap();
    cache.wait_for(rev).await.unwrap();
}

/// The reads of (a steady service reconcile, a reconcile that scales web 3 → 5, the scheduler
/// pass that places those 2, the recovery controller's periodic resync) with `unrelated`
/// RUNNING tasks of another service around.
async fn measure(unrelated: u32) -> [Work; 4] {
    let dir = tempfile::tempdir().unwrap();
    let inner: DynStore = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let counting = Arc::new(CountingStore {
        inner: inner.clone(),
        gets: AtomicU64::new(0),
        ranges: AtomicU64::new(0),
        listed: AtomicU64::new(0),
        revisions: AtomicU64::new(0),
    });
    let store: DynStore = counting.clone();
    let cache = berth_controllers::cache(store.clone());

    // Bring both services up with every controller and the simulated agent (a fake).
    let controllers = CancellationToken::new();
    let agent_stop = CancellationToken::new();
    let control = berth_controllers::ControlConfig::default();
    let handles: Vec<_> =
        berth_controllers::all_with(store.clone(), &cache, &Registry::default(), &control)
            .into_iter()
            .map(|c| tokio::spawn(c.run(controllers.clone())))
            .collect();
    let mut cfg = SimulatedAgentConfig::new("default");
    (cfg.cpu, cfg.memory) = (1 << 20, 1 << 20);
    // The agent reads the store itself: its reads are not the controllers' and go uncounted.
    let agent = SimulatedAgent::start(inner.clone(), cfg, agent_stop.clone());
    agent.add_instances("sim", 3).await.unwrap();
    apply_yaml(&inner, &Web::new("noise", unrelated).manifests()).await;
    apply_yaml(&inner, &Web::new("web", 3).manifests()).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while running(&cache, "noise") < unrelated as usize || running(&cache, "web") < 3 {
        assert!(Instant::now() < deadline, "services did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // From here on only the reconciles under test run.
    controllers.cancel();
    for h in handles {
        h.await.unwrap();
    }
    settle(&inner, &cache).await;

    let svc = ServiceController::new(store.clone(), &cache);
    // A first pass writes whatever status the stopped controllers left unwritten.
    svc.reconcile("web").await.unwrap();
    settle(&inner, &cache).await;
    let before = reads(&counting, &cache);
    svc.reconcile("web").await.unwrap();
    let steady = minus(reads(&counting, &cache), before);

    apply_yaml(&inner, &Web::new("web", 5).manifests()).await;
    settle(&inner, &cache).await;
    let before = reads(&counting, &cache);
    svc.reconcile("web").await.unwrap();
    let scale = minus(reads(&counting, &cache), before);
    settle(&inner, &cache).await;
    assert_eq!(
        cache.unplaced_tasks().len(),
        2,
        "the scale-up created 2 tasks"
    );

    let sched = Scheduler::new(store.clone(), &cache);
    let before = reads(&counting, &cache);
    sched.reconcile("*").await.unwrap();
    let place = minus(reads(&counting, &cache), before);
    settle(&inner, &cache).await;
    assert!(cache.unplaced_tasks().is_empty(), "the pass placed both");
    assert_eq!(cache.tasks_of_service("web").len(), 5);

    let recovery = RecoveryController::new(store.clone(), &cache, DEFAULT_LOST_INSTANCE_GRACE);
    let before = reads(&counting, &cache);
    recovery.resync_keys().await.unwrap();
    let resync = minus(reads(&counting, &cache), before);

    agent_stop.cancel();
    agent.join().await;
    [steady, scale, place, resync]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_and_scheduler_work_does_not_follow_the_cluster() {
    let small = measure(10).await;
    let large = measure(500).await;
    for (what, (s, l)) in [
        "steady service reconcile",
        "scale-up reconcile",
        "scheduler pass",
    ]
    .iter()
    .zip(small.iter().zip(large.iter()))
    {
        eprintln!("{what}: with 10 unrelated tasks {s:?}; with 500 {l:?}");
        assert_eq!(s, l, "{what}: work grew with unrelated tasks");
        assert_eq!(
            s.store_ranges, 0,
            "{what}: a reconcile lists no prefix of the store"
        );
    }
    // A resync looks at every task by nature, but in the cache: it reads nothing from the
    // store (it relisted every task and instance each 15 s).
    for (n, r) in [(10, small[3]), (500, large[3])] {
        eprintln!("recovery resync with {n} unrelated tasks: {r:?}");
        assert_eq!(
            (r.store_gets, r.store_ranges),
            (0, 0),
            "recovery resync read the store"
        );
    }
}
