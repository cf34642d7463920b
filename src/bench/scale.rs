//! `berth bench scale`: the control plane (controllers, in-process, no real agent) against many
//! SIMULATED instances — fakes, no Docker, named `fake-scale-*`, played by
//! `berth_core::agent::simulated::SimulatedAgent` (their records, leases and task status
//! transitions, as a real agent writes them).
//!
//! It prints: time until every task is placed; placements/s for the same batch on an empty
//! cluster and with the cluster full (side by side); idle control-plane CPU over a quiet window
//! (`/proc/self/stat`); p99 reconcile time (the controllers' histograms, bucket upper bounds);
//! control-plane RSS (`/proc/self/status`). Every phase is bounded by `--timeout`; nothing is
//! asserted. The process's figures include the simulated agent (one process playing every
//! instance) and, on the embedded store, the store itself; etcd runs in its own process with
//! its default limits.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::node::{self, NodeConfig};
use berth_core::agent::simulated::{SimulatedAgent, SimulatedAgentConfig};
use berth_core::model::{keys, Kind, Task, TaskState};
use berth_core::store::DynStore;

/// Names of the simulated instances start with this: they are fakes.
pub const FAKE_PREFIX: &str = "fake-scale-";
/// Instances registered at once.
const REGISTER_CONCURRENCY: usize = 32;
/// Concurrent task updates of the simulated agent.
const AGENT_WORKERS: usize = 16;
/// Each simulated instance's capacity (CPU units, MiB); a task takes 10 units and 16 MiB.
const INSTANCE_CPU: u32 = 1024 * 64;
const INSTANCE_MEMORY: u32 = 1024 * 64;

pub struct Options {
    pub instances: u32,
    pub tasks: u32,
    /// Tasks of the batch measured on an empty and on a full cluster.
    pub batch: u32,
    /// Batches on each cluster; the median rate is compared.
    pub repeat: u32,
    pub store: String,
    /// Upper bound for each phase.
    pub timeout: Duration,
    /// The quiet window for idle CPU.
    pub idle: Duration,
}

/// Per service group: the tasks seen placed on a fake instance, and seen RUNNING.
#[derive(Default)]
struct Seen {
    placed: HashSet<String>,
    running: HashSet<String>,
}

type Counts = Arc<Mutex<HashMap<String, Seen>>>;

pub async fn run(o: &Options) -> anyhow::Result<()> {
    let build = if cfg!(debug_assertions) {
        "DEBUG build"
    } else {
        "release build"
    };
    let mut _etcd = None;
    let mut _dir = None;
    let store: DynStore = match o.store.as_str() {
        "embedded" => {
            let dir = tempfile::tempdir()?;
            let s = berth_core::store::embedded::EmbeddedStore::open(dir.path().join("store"))?;
            _dir = Some(dir);
            Arc::new(s)
        }
        "etcd" => {
            // Default limits: no --max-txn-ops, no quota flags (src/bench/etcd.rs).
            let server = tokio::task::spawn_blocking(super::etcd::EtcdServer::try_start).await??;
            let s = berth_core::store::etcd::EtcdStore::connect(&server.endpoints()).await?;
            _etcd = Some(server);
            Arc::new(s)
        }
        other => anyhow::bail!("--store {other:?}: expected embedded or etcd"),
    };
    println!(
        "scale ({build}, {} store): {} simulated instances (fakes, no Docker), {} tasks, batch {}",
        o.store, o.instances, o.tasks, o.batch
    );
    node::ensure_default_cluster(&*store).await?;
    let stop = CancellationToken::new();
    let counts: Counts = Arc::default();
    let observer = tokio::spawn(observe(store.clone(), counts.clone(), stop.clone()));
    let mut cfg = SimulatedAgentConfig::new("default");
    (cfg.cpu, cfg.memory) = (INSTANCE_CPU, INSTANCE_MEMORY);
    cfg.workers = AGENT_WORKERS;
    // Long leases and a rare resync: the fake agent's own upkeep should not be what the idle
    // figure measures (a real agent is a process of its own).
    cfg.lease_ttl = Duration::from_secs(120);
    cfg.resync = Duration::from_secs(600);
    let agent = SimulatedAgent::start(store.clone(), cfg, stop.clone());
    let t = Instant::now();
    add_fake_instances(&agent, o.instances).await?;
    println!(
        "  {} fake instances registered by the simulated agent in {:.1} s",
        o.instances,
        t.elapsed().as_secs_f64()
    );
    let n = node::start(
        store.clone(),
        NodeConfig {
            api: None,
            controllers: true,
            agent: None,
            manifests: None,
            control: Default::default(),
            secrets_key: None,
        },
    )
    .await?;

    // Each phase starts from a quiet store: the one before it must not still be settling.
    settle(&store, o.timeout).await?;
    let empty = batches(&store, &counts, "scale-empty", o).await?;
    settle(&store, o.timeout).await?;
    let fill = phase(&store, &counts, "scale-fill", o.tasks, o.timeout).await?;

    // Idle and memory at the full cluster, before its batches (whose deleted services leave
    // STOPPED tasks behind, kept an hour as ECS does). Let the last writes settle first
    // (status counters trail a burst by a few seconds: the instance-status controller spaces
    // them), then measure a quiet window.
    let settled = settle(&store, o.timeout).await?;
    println!(
        "  store quiet {:.1} s after the fill (no write for 1 s)",
        settled.as_secs_f64()
    );
    let running = running_total(&counts);
    let cpu = idle_cpu(o.idle).await;
    if running_total(&counts) != running {
        println!("  (the idle window was not quiet: tasks were still being started)");
    }
    let rss_full = proc_status_kib("VmRSS");
    let full = batches(&store, &counts, "scale-full", o).await?;
    let rss = proc_status_kib("VmRSS");
    let hwm = proc_status_kib("VmHWM");
    let p99 = reconcile_p99(&n.registry);

    println!();
    println!("  {:<52} {:>12} {:>12}", "", "empty", "full");
    println!(
        "  {:<52} {:>12} {:>12}",
        format!(
            "placements/s, batch of {} (median of {})",
            o.batch, o.repeat
        ),
        rate_str(empty.median),
        rate_str(full.median)
    );
    println!(
        "  {:<52} {:>12} {:>12}",
        "  (min-max)",
        empty.spread(),
        full.spread()
    );
    println!(
        "  {:<52} {:>12} {:>12}",
        "  (tasks already running)", empty.before, full.before
    );
    if let (Some(a), Some(b)) = (empty.median, full.median) {
        println!(
            "  full / empty: {:.2} (target: within 20%, i.e. >= 0.80)",
            b / a
        );
    }
    println!(
        "  time until all {} tasks placed: {} ({}/s); all RUNNING: {} (target 10,000 on 1,000: <= 3 s embedded, <= 6 s etcd)",
        o.tasks,
        fill.placed_str(),
        fill.rate_str(),
        fill.running_str()
    );
    println!(
        "  idle control-plane CPU with {running} tasks RUNNING: {} of a core over {:.0} s (target <= 2%)",
        cpu.map(|c| format!("{:.2}%", c * 100.0))
            .unwrap_or_else(|| "n/a".into()),
        o.idle.as_secs_f64()
    );
    let mib = |k: Option<u64>| {
        k.map(|k| format!("{:.0}", k as f64 / 1024.0))
            .unwrap_or_else(|| "n/a".into())
    };
    println!(
        "  control-plane RSS: {} MiB after the fill ({} tasks), {} MiB now (plus {} STOPPED), {} MiB peak (target <= 200 MiB)",
        mib(rss_full),
        o.batch + o.tasks,
        mib(rss),
        o.batch * 2 * (o.repeat - 1),
        mib(hwm)
    );
    println!("  p99 reconcile time (upper bucket bound of the controllers' histograms):");
    for (name, p) in p99 {
        println!("    {name:<28} {p}");
    }
    println!(
        "  issue #11 before (release, etcd 3.4, 500 instances): 1,000 tasks at 24/s, the next 1,000 at 13/s"
    );

    n.shutdown().await;
    stop.cancel();
    agent.join().await;
    let _ = observer.await;
    Ok(())
}

/// Register the fake instances with the simulated agent, a few at a time.
async fn add_fake_instances(agent: &SimulatedAgent, n: u32) -> anyhow::Result<()> {
    let ids: Vec<String> = (0..n).map(|i| format!("{FAKE_PREFIX}{i:05}")).collect();
    let mut adds = futures::stream::iter(ids.iter().map(|id| agent.add_instance(id)))
        .buffer_unordered(REGISTER_CONCURRENCY);
    while let Some(r) = adds.next().await {
        r?;
    }
    Ok(())
}

/// Wait until the store's revision holds still for a second; how long that took.
async fn settle(store: &DynStore, timeout: Duration) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut last = store.revision().await?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = store.revision().await?;
        if now == last || t.elapsed() > timeout {
            return Ok(t.elapsed());
        }
        last = now;
    }
}

/// Counts, per service group, the tasks seen placed on a fake instance and seen RUNNING (one
/// watch of the task prefix; it only observes: the simulated agent does the agent's work).
async fn observe(store: DynStore, counts: Counts, stop: CancellationToken) {
    let prefix = keys::prefix(Kind::Task);
    let mut from = 0;
    'outer: while !stop.is_cancelled() {
        let mut w = match store.watch(&prefix, from).await {
            Ok(w) => w,
            Err(_) => {
                // Compacted or unavailable: start from now (the bench only counts new events).
                from = store.revision().await.map(|r| r + 1).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            let item = tokio::select! {
                _ = stop.cancelled() => break 'outer,
                i = w.next() => i,
            };
            let Some(Ok(events)) = item else {
                continue 'outer;
            };
            for ev in events {
                from = ev.kv.mod_revision + 1;
                let Ok(t) = Task::from_kv(&ev.kv) else {
                    continue;
                };
                let on_fake = t
                    .status
                    .container_instance
                    .as_deref()
                    .is_some_and(|i| i.starts_with(FAKE_PREFIX));
                if !on_fake {
                    continue;
                }
                let mut c = counts.lock().unwrap();
                let seen = c.entry(t.spec.group.clone()).or_default();
                seen.placed.insert(t.metadata.name.clone());
                if t.status.last_status == TaskState::Running {
                    seen.running.insert(t.metadata.name.clone());
                } else if t.is_stopped() {
                    seen.running.remove(&t.metadata.name);
                }
            }
        }
    }
}

fn running_total(counts: &Counts) -> usize {
    counts
        .lock()
        .unwrap()
        .values()
        .map(|s| s.running.len())
        .sum()
}

struct Phase {
    tasks: u32,
    placed: Option<Duration>,
    running: Option<Duration>,
    /// Placed when the timeout hit (if it did).
    partial: usize,
}

impl Phase {
    fn rate(&self) -> Option<f64> {
        self.placed
            .map(|d| self.tasks as f64 / d.as_secs_f64().max(1e-9))
    }
    fn rate_str(&self) -> String {
        match self.rate() {
            Some(r) => format!("{r:.0}"),
            None => format!("{} placed (timeout)", self.partial),
        }
    }
    fn placed_str(&self) -> String {
        match self.placed {
            Some(d) => format!("{:.2} s", d.as_secs_f64()),
            None => format!("timeout with {} of {} placed", self.partial, self.tasks),
        }
    }
    fn running_str(&self) -> String {
        match self.running {
            Some(d) => format!("{:.2} s", d.as_secs_f64()),
            None => "timeout".into(),
        }
    }
}

/// `o.repeat` batches of `o.batch` tasks, each a service of its own that is deleted and whose
/// tasks are all stopped before the next starts: every batch starts from the same running
/// count. A single sub-second batch is at the mercy of one lost race or one slow fsync.
struct Batches {
    before: usize,
    rates: Vec<f64>,
    median: Option<f64>,
}

impl Batches {
    fn spread(&self) -> String {
        let lo = self.rates.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = self.rates.iter().copied().fold(0.0, f64::max);
        if self.rates.is_empty() {
            "n/a".into()
        } else {
            format!("{lo:.0}-{hi:.0}")
        }
    }
}

fn rate_str(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.0}"))
        .unwrap_or_else(|| "timeout".into())
}

async fn batches(
    store: &DynStore,
    counts: &Counts,
    name: &str,
    o: &Options,
) -> anyhow::Result<Batches> {
    let before = running_total(counts);
    let mut rates = Vec::new();
    let mut timed_out = false;
    for r in 0..o.repeat {
        let svc = format!("{name}-{r}");
        let p = phase(store, counts, &svc, o.batch, o.timeout).await?;
        match p.rate() {
            Some(rate) => rates.push(rate),
            None => timed_out = true,
        }
        if r + 1 < o.repeat {
            drain(store, counts, &svc, o.timeout).await?;
            settle(store, o.timeout).await?;
        }
    }
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    let median = (!timed_out && !sorted.is_empty()).then(|| sorted[sorted.len() / 2]);
    Ok(Batches {
        before,
        rates,
        median,
    })
}

/// Delete the service and wait until none of its tasks runs and its record is gone.
async fn drain(
    store: &DynStore,
    counts: &Counts,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    use berth_core::model::Service;
    use berth_core::objects;
    let key = keys::key(Kind::Service, name);
    objects::delete_service(&**store, name).await?;
    let group = format!("service:{name}");
    let t = Instant::now();
    loop {
        let running = counts
            .lock()
            .unwrap()
            .get(&group)
            .map_or(0, |s| s.running.len());
        let svc: Option<Service> = objects::get(&**store, &key).await?;
        let gone = svc.is_none();
        if running == 0 && gone {
            return Ok(());
        }
        if t.elapsed() > timeout {
            anyhow::bail!("{name}: {running} tasks still running {timeout:?} after its deletion");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Apply a service of `count` tasks and time until all are placed and all RUNNING.
async fn phase(
    store: &DynStore,
    counts: &Counts,
    name: &str,
    count: u32,
    timeout: Duration,
) -> anyhow::Result<Phase> {
    let before = running_total(counts);
    let group = format!("service:{name}");
    // The httpd task of the other benches (10 CPU units, 16 MiB, a dynamic host port); the
    // image is never pulled: the instances are fakes.
    let manifest =
        super::harness::httpd_service(name, "fake/none:1", super::harness::HTTPD, count, &[], &[]);
    let start = Instant::now();
    super::harness::apply_yaml(store, &manifest, &format!("{name}.yaml")).await?;
    let mut p = Phase {
        tasks: count,
        placed: None,
        running: None,
        partial: 0,
    };
    let deadline = start + timeout;
    // No new placement for this long ends the phase early (e.g. a transaction over etcd's
    // limits that is retried forever).
    let stall = Duration::from_secs(30).min(timeout);
    let mut progress = (0, Instant::now());
    loop {
        let (placed, running) = {
            let c = counts.lock().unwrap();
            c.get(&group)
                .map(|s| (s.placed.len(), s.running.len()))
                .unwrap_or_default()
        };
        p.partial = placed;
        if p.placed.is_none() && placed >= count as usize {
            p.placed = Some(start.elapsed());
        }
        if running >= count as usize {
            p.running = Some(start.elapsed());
            break;
        }
        // Progress anywhere counts: an earlier phase's backlog may still be placed first.
        let total: usize = counts
            .lock()
            .unwrap()
            .values()
            .map(|s| s.placed.len() + s.running.len())
            .sum();
        if total != progress.0 {
            progress = (total, Instant::now());
        }
        if Instant::now() > deadline {
            break;
        }
        if progress.1.elapsed() > stall {
            println!(
                "  {name}: no progress for {} s, giving up ({placed} placed)",
                stall.as_secs()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "  {name}: {count} tasks on top of {before} running: placed {}, RUNNING {}",
        p.placed_str(),
        p.running_str()
    );
    Ok(p)
}

/// utime + stime of this process in clock ticks (`/proc/self/stat` fields 14 and 15).
fn cpu_ticks() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; fields resume after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Share of one core used by this process over `window` (USER_HZ is 100 on Linux).
async fn idle_cpu(window: Duration) -> Option<f64> {
    let a = cpu_ticks()?;
    let t = Instant::now();
    tokio::time::sleep(window).await;
    let b = cpu_ticks()?;
    Some((b - a) as f64 / 100.0 / t.elapsed().as_secs_f64())
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Each controller's p99 reconcile time as the upper bound of the histogram bucket it falls
/// in (the buckets are ×4 apart), read from the same text /metrics serves.
fn reconcile_p99(registry: &berth_core::runtime::Registry) -> Vec<(String, String)> {
    let text = berth_core::metrics::render(berth_core::metrics::Snapshot {
        leadership: None,
        durations: registry.durations(),
        ..Default::default()
    });
    // controller -> [(le, cumulative count)]
    let mut buckets: HashMap<String, Vec<(f64, u64)>> = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("berth_controller_reconcile_duration_seconds_bucket{")
        else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |k: &str| {
            labels.split(',').find_map(|kv| {
                let (a, b) = kv.split_once('=')?;
                (a == k).then(|| b.trim_matches('"').to_string())
            })
        };
        let (Some(c), Some(le)) = (label("controller"), label("le")) else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        let n = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        buckets.entry(c).or_default().push((le, n));
    }
    let mut out: Vec<(String, String)> = buckets
        .into_iter()
        .map(|(c, mut b)| {
            b.sort_by(|x, y| x.0.total_cmp(&y.0));
            let total = b.last().map(|x| x.1).unwrap_or(0);
            let p = if total == 0 {
                "no reconciles".to_string()
            } else {
                let want = (total as f64 * 0.99).ceil() as u64;
                let le = b
                    .iter()
                    .find(|x| x.1 >= want)
                    .map(|x| x.0)
                    .unwrap_or(f64::INFINITY);
                if le.is_finite() {
                    format!("<= {:.1} ms ({total} reconciles)", le * 1e3)
                } else {
                    format!("> the largest bucket ({total} reconciles)")
                }
            };
            (c, p)
        })
        .collect();
    out.sort();
    out
}
