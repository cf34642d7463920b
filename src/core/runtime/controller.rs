//! The controller runner: triggers → de-duplicating queue → workers calling `reconcile(key)`,
//! with per-key back-off, periodic resync and graceful shutdown (ARCHITECTURE.md, "Reconcile runtime").

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::backoff::{Backoff, BackoffPolicy};
use super::informer::SharedInformer;
use super::queue::Queue;
use super::reflector::Change;
use super::watcher::{watcher, WatcherEvent};
use crate::model::{keys, Kind};
use crate::store::{DynStore, KeyValue, Store};

/// What to do with a key after a successful reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Done,
    Requeue,
    RequeueAfter(Duration),
}

#[async_trait]
pub trait Reconciler: Send + Sync + 'static {
    /// Bring the world for `key` toward its desired state. Must be idempotent and re-read
    /// everything it needs: the key is all the trigger says.
    async fn reconcile(&self, key: &str) -> anyhow::Result<Action>;
    /// Keys to reconcile on a periodic resync beyond the names of the controller's primary
    /// kind ([`Controller::primary`]), which the runtime lists itself.
    async fn resync_keys(&self) -> anyhow::Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// Maps a changed store key (with its value, or its last value for deletes) to the keys of
/// the controller to enqueue.
pub type KeyMapper = Arc<dyn Fn(&KeyValue) -> Vec<String> + Send + Sync>;

/// Maps a change, with the object the shared cache already decoded when it has one.
type ChangeMapper =
    Arc<dyn Fn(&KeyValue, Option<&(dyn Any + Send + Sync)>) -> Vec<String> + Send + Sync>;

pub struct Trigger {
    pub prefix: String,
    map: ChangeMapper,
    /// See [`Trigger::spaced`].
    spacing: Option<Duration>,
}

impl Trigger {
    pub fn new(
        prefix: impl Into<String>,
        map: impl Fn(&KeyValue) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        Trigger {
            prefix: prefix.into(),
            map: Arc::new(move |kv, _| map(kv)),
            spacing: None,
        }
    }

    /// Keys from this trigger are reconciled at most once per `spacing` while it keeps firing
    /// (the first after a quiet spell at once: [`Queue::add_spaced`]). For secondary objects
    /// that change in bursts, such as the tasks of a service.
    pub fn spaced(mut self, spacing: Duration) -> Self {
        self.spacing = Some(spacing);
        self
    }

    /// A trigger on decoded objects of type `T`: the shared cache decodes each change once for
    /// every controller (without a cache, or when the object is not a `T`, it is decoded here).
    pub fn on<T>(
        prefix: impl Into<String>,
        map: impl Fn(&T) -> Vec<String> + Send + Sync + 'static,
    ) -> Self
    where
        T: serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        Trigger {
            prefix: prefix.into(),
            map: Arc::new(
                move |kv, obj| match obj.and_then(|o| o.downcast_ref::<T>()) {
                    Some(t) => map(t),
                    None => serde_json::from_slice::<T>(&kv.value)
                        .map(|t| map(&t))
                        .unwrap_or_default(),
                },
            ),
            spacing: None,
        }
    }

    /// The keys this change enqueues.
    pub fn keys(&self, kv: &KeyValue) -> Vec<String> {
        (self.map)(kv, None)
    }
}

#[derive(Debug, Clone)]
pub struct ControllerOptions {
    pub workers: usize,
    pub resync: Duration,
    pub backoff: BackoffPolicy,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            workers: 4,
            resync: Duration::from_secs(30),
            backoff: BackoffPolicy::default(),
        }
    }
}

/// Live counters of one controller, for `berth` status, the dashboard and /metrics.
pub struct ControllerStats {
    pub name: String,
    queue: Arc<Queue>,
    reconciles: AtomicU64,
    errors: AtomicU64,
    last: Mutex<LastReconcile>,
    /// Reconcile durations in seconds, for /metrics.
    pub duration: prometheus_client::metrics::histogram::Histogram,
}

#[derive(Default, Clone)]
struct LastReconcile {
    at: Option<DateTime<Utc>>,
    duration: Duration,
    error: Option<String>,
    error_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerStatus {
    pub name: String,
    pub queue_depth: usize,
    pub in_flight: usize,
    pub reconciles_total: u64,
    pub errors_total: u64,
    pub last_reconcile_at: Option<DateTime<Utc>>,
    pub last_reconcile_ms: f64,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

impl ControllerStats {
    pub fn snapshot(&self) -> ControllerStatus {
        let last = self.last.lock().unwrap().clone();
        ControllerStatus {
            name: self.name.clone(),
            queue_depth: self.queue.depth(),
            in_flight: self.queue.in_flight(),
            reconciles_total: self.reconciles.load(Ordering::Relaxed),
            errors_total: self.errors.load(Ordering::Relaxed),
            last_reconcile_at: last.at,
            last_reconcile_ms: last.duration.as_secs_f64() * 1000.0,
            last_error: last.error,
            last_error_at: last.error_at,
        }
    }
}

/// All controllers of a process, by name.
#[derive(Default, Clone)]
pub struct Registry {
    inner: Arc<RwLock<BTreeMap<String, Arc<ControllerStats>>>>,
}

impl Registry {
    pub fn snapshot(&self) -> Vec<ControllerStatus> {
        self.inner
            .read()
            .unwrap()
            .values()
            .map(|s| s.snapshot())
            .collect()
    }
    /// Each controller's reconcile-duration histogram (shared, live).
    pub fn durations(&self) -> Vec<(String, prometheus_client::metrics::histogram::Histogram)> {
        let r = self.inner.read().unwrap();
        r.values()
            .map(|s| (s.name.clone(), s.duration.clone()))
            .collect()
    }
    fn register(&self, stats: Arc<ControllerStats>) {
        self.inner
            .write()
            .unwrap()
            .insert(stats.name.clone(), stats);
    }
}

/// The keys of one resync: every object name of the primary kind, then the reconciler's own.
/// From the shared cache when it holds the kind: a resync re-queues what the process already
/// knows instead of relisting the store.
async fn resync(
    store: &dyn Store,
    informer: Option<&SharedInformer>,
    primary: Option<Kind>,
    r: &dyn Reconciler,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    if let Some(kind) = primary {
        let prefix = keys::prefix(kind);
        let cached = informer
            .filter(|i| i.is_synced())
            .and_then(|i| i.keys(&prefix));
        let listed = match cached {
            Some(keys) => keys,
            None => {
                let (kvs, _) = store.range(&prefix).await?;
                kvs.into_iter().map(|kv| kv.key).collect()
            }
        };
        out.extend(
            listed
                .iter()
                .filter_map(|k| keys::name_of(k, kind))
                .map(str::to_string),
        );
    }
    out.extend(r.resync_keys().await?);
    Ok(out)
}

pub struct Controller {
    name: String,
    store: DynStore,
    reconciler: Arc<dyn Reconciler>,
    triggers: Vec<Trigger>,
    /// The kind whose object names are this controller's keys (resynced by the runtime).
    primary: Option<Kind>,
    /// The process's shared cache: triggers subscribe to it instead of watching the store.
    informer: Option<SharedInformer>,
    opts: ControllerOptions,
    queue: Arc<Queue>,
    stats: Arc<ControllerStats>,
}

impl Controller {
    pub fn new(
        name: &str,
        store: DynStore,
        reconciler: Arc<dyn Reconciler>,
        opts: ControllerOptions,
    ) -> Self {
        let queue = Arc::new(Queue::new());
        let stats = Arc::new(ControllerStats {
            name: name.to_string(),
            queue: queue.clone(),
            reconciles: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last: Mutex::new(LastReconcile::default()),
            duration: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0005, 4.0, 10),
            ),
        });
        Controller {
            name: name.to_string(),
            store,
            reconciler,
            triggers: Vec::new(),
            primary: None,
            informer: None,
            opts,
            queue,
            stats,
        }
    }

    /// Declare the kind whose objects this controller reconciles, one key per object name:
    /// a change to one enqueues its name, and the periodic resync enqueues every one of them
    /// (plus [`Reconciler::resync_keys`]).
    pub fn primary(self, kind: Kind) -> Self {
        self.primary_with(kind, None)
    }

    /// [`Controller::primary`] with its changes [`Trigger::spaced`]: for a kind whose records
    /// several controllers rewrite in bursts (a service's status while thousands of its tasks
    /// start), where each write would otherwise start another full reconcile at once.
    pub fn primary_spaced(self, kind: Kind, spacing: Duration) -> Self {
        self.primary_with(kind, Some(spacing))
    }

    fn primary_with(mut self, kind: Kind, spacing: Option<Duration>) -> Self {
        self.primary = Some(kind);
        let t = Trigger::new(keys::prefix(kind), move |kv: &KeyValue| {
            keys::name_of(&kv.key, kind)
                .map(|n| vec![n.to_string()])
                .unwrap_or_default()
        });
        self.trigger(match spacing {
            Some(d) => t.spaced(d),
            None => t,
        })
    }

    /// Take triggers (and the primary kind's resync) from the process's shared informer: each
    /// prefix it covers is then watched once per process, not once per controller. Triggers on
    /// prefixes it does not cover still watch the store themselves.
    pub fn shared(mut self, informer: &SharedInformer) -> Self {
        self.informer = Some(informer.clone());
        self
    }

    pub fn trigger(mut self, t: Trigger) -> Self {
        self.triggers.push(t);
        self
    }

    /// A handle to enqueue keys from outside (e.g. Docker events in the agent).
    pub fn queue(&self) -> Arc<Queue> {
        self.queue.clone()
    }

    pub fn register(self, registry: &Registry) -> Self {
        registry.register(self.stats.clone());
        self
    }

    /// Run until `shutdown` is cancelled, then let in-flight reconciles finish.
    pub async fn run(self, shutdown: CancellationToken) {
        let Controller {
            name,
            store,
            reconciler,
            triggers,
            primary,
            informer,
            opts,
            queue,
            stats,
        } = self;
        let bg = CancellationToken::new();
        for t in triggers {
            if let Some(inf) = &informer {
                let q = queue.clone();
                let stop = bg.clone();
                let map = t.map.clone();
                let spacing = t.spacing;
                let handler = Arc::new(move |c: &Change| {
                    if stop.is_cancelled() {
                        return;
                    }
                    for key in map(&c.kv, c.obj.as_deref()) {
                        match spacing {
                            Some(d) => q.add_spaced(&key, d),
                            None => q.add(&key),
                        }
                    }
                });
                if inf.subscribe(&t.prefix, handler) {
                    continue;
                }
            }
            let q = queue.clone();
            let mut events = watcher(store.clone(), t.prefix.clone());
            let stop = bg.clone();
            tokio::spawn(async move {
                loop {
                    let ev = tokio::select! {
                        _ = stop.cancelled() => return,
                        ev = events.next() => match ev { Some(ev) => ev, None => return },
                    };
                    let kvs: Vec<&KeyValue> = match &ev {
                        WatcherEvent::Restarted(kvs) => kvs.iter().collect(),
                        WatcherEvent::Applied(kv) | WatcherEvent::Deleted(kv) => vec![kv],
                    };
                    for kv in kvs {
                        for key in (t.map)(kv, None) {
                            match t.spacing {
                                Some(d) => q.add_spaced(&key, d),
                                None => q.add(&key),
                            }
                        }
                    }
                }
            });
        }
        {
            let q = queue.clone();
            let r = reconciler.clone();
            let stop = bg.clone();
            let period = opts.resync;
            let name = name.clone();
            let store = store.clone();
            let informer = informer.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(Instant::now() + period, period);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    match resync(&*store, informer.as_ref(), primary, &*r).await {
                        Ok(keys) => keys.iter().for_each(|k| q.add(k)),
                        Err(e) => {
                            tracing::warn!(controller = %name, error = %e, "resync list failed")
                        }
                    }
                }
            });
        }
        let backoff = Arc::new(Backoff::new(opts.backoff));
        let mut workers = Vec::new();
        for _ in 0..opts.workers.max(1) {
            let q = queue.clone();
            let r = reconciler.clone();
            let stats = stats.clone();
            let backoff = backoff.clone();
            let name = name.clone();
            workers.push(tokio::spawn(async move {
                while let Some(key) = q.pop().await {
                    let started = Instant::now();
                    let result = r.reconcile(&key).await;
                    let elapsed = started.elapsed();
                    stats.reconciles.fetch_add(1, Ordering::Relaxed);
                    stats.duration.observe(elapsed.as_secs_f64());
                    {
                        let mut last = stats.last.lock().unwrap();
                        last.at = Some(Utc::now());
                        last.duration = elapsed;
                        if let Err(e) = &result {
                            last.error = Some(format!("{key}: {e:#}"));
                            last.error_at = last.at;
                        }
                    }
                    q.done(&key);
                    match result {
                        Ok(Action::Done) => backoff.reset(&key),
                        Ok(Action::Requeue) => {
                            backoff.reset(&key);
                            q.add(&key)
                        }
                        Ok(Action::RequeueAfter(d)) => {
                            backoff.reset(&key);
                            q.add_after(&key, d)
                        }
                        Err(e) => {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                            let delay = backoff.fail(&key);
                            tracing::debug!(controller = %name, %key, error = %format!("{e:#}"), retry_in = ?delay, "reconcile failed");
                            q.add_after(&key, delay);
                        }
                    }
                }
            }));
        }
        shutdown.cancelled().await;
        bg.cancel();
        queue.close();
        for w in workers {
            let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
        }
        tracing::debug!(controller = %name, "stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Fails the first `fail_times` reconciles of every key, counts calls and overlap.
    struct Flaky {
        fail_times: usize,
        calls: Mutex<BTreeMap<String, usize>>,
        times: Mutex<Vec<(String, Instant)>>,
        running: AtomicUsize,
        max_running_same_key: AtomicUsize,
    }

    #[async_trait]
    impl Reconciler for Flaky {
        async fn reconcile(&self, key: &str) -> anyhow::Result<Action> {
            let n = {
                let mut c = self.calls.lock().unwrap();
                let n = c.entry(key.to_string()).or_insert(0);
                *n += 1;
                *n
            };
            self.times
                .lock()
                .unwrap()
                .push((key.to_string(), Instant::now()));
            let r = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running_same_key.fetch_max(r, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            if n <= self.fail_times {
                anyhow::bail!("boom {n}");
            }
            Ok(Action::Done)
        }
        async fn resync_keys(&self) -> anyhow::Result<Vec<String>> {
            Ok(vec!["resynced".into()])
        }
    }

    fn flaky(fail_times: usize) -> Arc<Flaky> {
        Arc::new(Flaky {
            fail_times,
            calls: Default::default(),
            times: Default::default(),
            running: AtomicUsize::new(0),
            max_running_same_key: AtomicUsize::new(0),
        })
    }

    fn temp_store() -> (DynStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::store::embedded::EmbeddedStore::open(dir.path()).unwrap();
        (Arc::new(s), dir)
    }

    #[tokio::test(start_paused = true)]
    async fn backs_off_exponentially_then_resets() {
        let (store, _d) = temp_store();
        let r = flaky(3);
        let c = Controller::new(
            "t",
            store,
            r.clone(),
            ControllerOptions {
                workers: 2,
                resync: Duration::from_secs(3600),
                backoff: BackoffPolicy {
                    base: Duration::from_millis(100),
                    max: Duration::from_secs(10),
                },
            },
        );
        let q = c.queue();
        let stop = CancellationToken::new();
        let h = tokio::spawn(c.run(stop.clone()));
        q.add("k");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let times: Vec<Instant> = r.times.lock().unwrap().iter().map(|(_, t)| *t).collect();
        assert_eq!(times.len(), 4, "3 failures then a success");
        // Each attempt takes 10 ms; waits are 100, 200, 400 ms.
        let gaps: Vec<u128> = times
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect();
        assert_eq!(gaps, vec![110, 210, 410]);
        // Success reset the back-off: the next failure-free run is immediate.
        stop.cancel();
        h.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn one_reconcile_in_flight_per_key() {
        let (store, _d) = temp_store();
        let r = flaky(0);
        let c = Controller::new(
            "t",
            store,
            r.clone(),
            ControllerOptions {
                workers: 8,
                ..Default::default()
            },
        );
        let q = c.queue();
        let stop = CancellationToken::new();
        let h = tokio::spawn(c.run(stop.clone()));
        for _ in 0..50 {
            q.add("same");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(r.max_running_same_key.load(Ordering::SeqCst), 1);
        let calls = r.calls.lock().unwrap().get("same").copied().unwrap();
        // De-duplicated: far fewer calls than triggers, but at least one after the last add.
        assert!((2..=10).contains(&calls), "calls = {calls}");
        stop.cancel();
        h.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn periodic_resync_enqueues_keys() {
        let (store, _d) = temp_store();
        let r = flaky(0);
        let c = Controller::new(
            "t",
            store,
            r.clone(),
            ControllerOptions {
                workers: 1,
                resync: Duration::from_secs(10),
                ..Default::default()
            },
        );
        let stop = CancellationToken::new();
        let h = tokio::spawn(c.run(stop.clone()));
        tokio::time::sleep(Duration::from_secs(35)).await;
        let calls = r
            .calls
            .lock()
            .unwrap()
            .get("resynced")
            .copied()
            .unwrap_or(0);
        assert_eq!(calls, 3);
        stop.cancel();
        h.await.unwrap();
    }

    #[tokio::test]
    async fn store_changes_trigger_mapped_keys_and_stats_count() {
        let (store, _d) = temp_store();
        store.put("/x/a", b"1".to_vec()).await.unwrap();
        let r = flaky(1);
        let registry = Registry::default();
        let c = Controller::new(
            "watching",
            store.clone(),
            r.clone(),
            ControllerOptions {
                backoff: BackoffPolicy {
                    base: Duration::from_millis(5),
                    max: Duration::from_millis(50),
                },
                ..Default::default()
            },
        )
        .trigger(Trigger::new("/x/", |kv| {
            vec![kv.key.trim_start_matches("/x/").to_string()]
        }))
        .register(&registry);
        let stop = CancellationToken::new();
        let h = tokio::spawn(c.run(stop.clone()));
        store.put("/x/b", b"2".to_vec()).await.unwrap();
        store.put("/y/c", b"3".to_vec()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let calls = r.calls.lock().unwrap().clone();
            let done = registry.snapshot()[0].reconciles_total >= 4;
            if done && calls.get("a") == Some(&2) && calls.get("b") == Some(&2) {
                assert!(!calls.contains_key("c"));
                break;
            }
            assert!(Instant::now() < deadline, "calls: {calls:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let st = &registry.snapshot()[0];
        assert_eq!(st.name, "watching");
        assert_eq!(st.errors_total, 2);
        assert!(st.reconciles_total >= 4);
        assert!(st.last_error.as_deref().unwrap().contains("boom"));
        stop.cancel();
        h.await.unwrap();
    }
}
