//! `berth bench dashboard`: the dashboard with N simulated tasks, and the agent's stats
//! sampling cost.
//!
//! 1. N tasks of 20 services on 10 instances are written straight to a fresh store. The
//!    instances are FAKE (named `fake-bench-*`, no agent, no Docker): only the dashboard reads
//!    them. With no controllers running, nothing touches them but this bench. Measured: the
//!    initial snapshot's size and time, the time to first render in headless Chromium (when
//!    chromedriver is installed), the latency from a store write to the page showing it, and
//!    the time until the page shows a burst that changes every task.
//! 2. M real busybox `sleep` containers labelled for a bench instance; the agent's sampler
//!    runs over them for a while at its default interval; the process's CPU time (from
//!    /proc/self/stat) over the wall time is its cost, reported per 100 containers, with
//!    dockerd's CPU over the same window beside it (Docker does most of the work).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::harness::{cpu_seconds, dockerd_pid, RawContainer};
use super::webdriver::{self, Browser};
use berth_core::metrics::sample::{now_ms, stats_key, ContainerSample, InstanceSample};
use berth_core::model::{
    keys, now, ContainerStatus, Deployment, DesiredStatus, HealthStatus, Kind, NetworkBinding,
    Resources, Service, ServiceSpec, Task, TaskSpec, TaskState, TaskStatus,
};
use berth_core::store::{DynStore, Op, Txn};

/// The bench's HTTP server; `shutdown` stops it without waiting for open event streams.
struct Served {
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn shutdown(self) {
        self.stop.cancel();
        self.server.abort();
    }
}

const SERVICES: u32 = 20;
const INSTANCES: u32 = 10;

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

pub async fn run(tasks: u32, containers: u32, secs: u64, image: &str) -> anyhow::Result<()> {
    dashboard(tasks).await?;
    if containers > 0 {
        stats_cost(containers, secs, image).await?;
    }
    Ok(())
}

fn svc_name(i: u32) -> String {
    format!("bench-svc-{i:02}")
}

fn task_obj(i: u32, status: TaskState) -> Task {
    let svc = svc_name(i % SERVICES);
    let id = format!("{:08x}{:024x}", 0xbe00_0000u32 + i, i as u128 * 7919);
    let mut t = Task::new(
        Kind::Task,
        &id,
        TaskSpec {
            task_definition: format!("{svc}:1"),
            cluster: "default".into(),
            group: format!("service:{svc}"),
            started_by: "bench".into(),
            cpu: 128,
            memory: 64,
            ..Default::default()
        },
    );
    t.metadata.uid = id.clone();
    t.metadata.created_at = Some(now());
    t.status = TaskStatus {
        last_status: status,
        desired_status: DesiredStatus::Running,
        health_status: HealthStatus::Healthy,
        container_instance: Some(format!("fake-bench-{}", i % INSTANCES)),
        containers: vec![ContainerStatus {
            name: "app".into(),
            docker_id: Some(format!("{id}{id}")),
            last_status: status.as_str().into(),
            health_status: HealthStatus::Healthy,
            network_bindings: vec![NetworkBinding {
                container_port: 8080,
                host_port: 30000 + (i % 30000) as u16,
                bind_ip: "0.0.0.0".into(),
                protocol: "tcp".into(),
            }],
            ..Default::default()
        }],
        created_at: Some(now()),
        started_at: Some(now()),
        ..Default::default()
    };
    t
}

/// Write tasks 0..n in `status`, 200 to a transaction.
async fn put_tasks(store: &DynStore, n: u32, status: TaskState) -> anyhow::Result<()> {
    let mut txn = Txn::new();
    for i in 0..n {
        let t = task_obj(i, status);
        txn = txn.and_then(Op::put(
            keys::key(Kind::Task, &t.metadata.name),
            t.to_bytes(),
        ));
        if txn.success.len() >= 200 {
            store.txn(std::mem::take(&mut txn)).await?;
        }
    }
    if !txn.success.is_empty() {
        store.txn(txn).await?;
    }
    Ok(())
}

/// Write the simulated cluster: instances, services, tasks and stats samples.
async fn populate(store: &DynStore, n: u32) -> anyhow::Result<()> {
    crate::node::ensure_default_cluster(&**store).await?;
    let per_instance = n.div_ceil(INSTANCES);
    for i in 0..INSTANCES {
        let id = format!("fake-bench-{i}");
        let mut ci = super::harness::fake_instance(&id, 65536, 65536);
        ci.status.remaining_resources = Resources {
            cpu: 65536 - per_instance * 128,
            memory: 65536 - per_instance * 64,
            ports: vec![],
        };
        ci.status.running_tasks_count = per_instance;
        store
            .put(&keys::key(Kind::ContainerInstance, &id), ci.to_bytes())
            .await?;
    }
    for s in 0..SERVICES {
        let name = svc_name(s);
        let count = (0..n).filter(|i| i % SERVICES == s).count() as u32;
        let mut svc = Service::new(
            Kind::Service,
            &name,
            ServiceSpec {
                cluster: "default".into(),
                task_definition: name.clone(),
                desired_count: count,
                ..Default::default()
            },
        );
        svc.status.status = "ACTIVE".into();
        svc.status.desired_count = count;
        svc.status.running_count = count;
        svc.status.deployments = vec![Deployment {
            id: berth_core::model::new_id(),
            status: "PRIMARY".into(),
            task_definition: format!("{name}:1"),
            desired_count: count,
            running_count: count,
            pending_count: 0,
            failed_tasks: 0,
            rollout_state: "COMPLETED".into(),
            rollout_state_reason: String::new(),
            created_at: now(),
            updated_at: now(),
        }];
        svc.status
            .push_event(format!("service {name} has reached a steady state."));
        store
            .put(&keys::key(Kind::Service, &name), svc.to_bytes())
            .await?;
    }
    put_tasks(store, n, TaskState::Running).await?;
    for inst in 0..INSTANCES {
        let sample = InstanceSample {
            instance: format!("fake-bench-{inst}"),
            at_ms: now_ms(),
            interval_secs: 3600.0,
            containers: (0..n)
                .filter(|i| i % INSTANCES == inst)
                .map(|i| ContainerSample {
                    task: task_obj(i, TaskState::Running).metadata.name,
                    name: "app".into(),
                    cpu_percent: (i % 37) as f64,
                    mem_bytes: (8 + (i % 24) as u64) << 20,
                    mem_limit: 64 << 20,
                })
                .collect(),
        };
        store
            .put(&stats_key(&sample.instance), serde_json::to_vec(&sample)?)
            .await?;
    }
    Ok(())
}

async fn get(url: &str) -> anyhow::Result<(Duration, usize)> {
    let start = Instant::now();
    let body = reqwest::get(url).await?.error_for_status()?.bytes().await?;
    let _: serde_json::Value = serde_json::from_slice(&body)?;
    Ok((start.elapsed(), body.len()))
}

async fn dashboard(n: u32) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store: DynStore = Arc::new(berth_core::store::embedded::EmbeddedStore::open(
        dir.path().join("store"),
    )?);
    let t = Instant::now();
    populate(&store, n).await?;
    println!(
        "dashboard: {n} simulated tasks ({SERVICES} services on {INSTANCES} fake instances) written in {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    // The dashboard's own routes, served without the API's authentication layer: this measures
    // the dashboard, not the login.
    let state = berth_core::api::ApiState {
        store: store.clone(),
        registry: berth_core::runtime::Registry::default(),
        leadership: Default::default(),
        secrets: None,
    };
    let app = berth_core::api::live_routes(&state).with_state(state);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let server = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        })
    };
    let node = Served { stop, server };
    let base = format!("http://{addr}");
    let snap_url = format!("{base}/ui/api/snapshot");
    let (cold, size) = get(&snap_url).await?;
    let mut warm = Vec::new();
    for _ in 0..5 {
        warm.push(get(&snap_url).await?.0.as_secs_f64() * 1e3);
    }
    let page = reqwest::get(format!("{base}/ui"))
        .await?
        .bytes()
        .await?
        .len()
        + reqwest::get(format!("{base}/ui/app.js"))
            .await?
            .bytes()
            .await?
            .len()
        + reqwest::get(format!("{base}/ui/app.css"))
            .await?
            .bytes()
            .await?
            .len();
    println!(
        "dashboard: initial snapshot {:.1} KiB ({:.0} bytes/task), fetched+parsed in {:.1} ms cold (store watch sync included), {:.1} ms warm (median of 5); page assets {:.1} KiB",
        size as f64 / 1024.0,
        size as f64 / n.max(1) as f64,
        cold.as_secs_f64() * 1e3,
        median(&mut warm),
        page as f64 / 1024.0
    );
    if webdriver::chromedriver().is_none() {
        println!(
            "dashboard: chromedriver not installed (Debian chromium-driver); no browser numbers"
        );
        node.shutdown().await;
        return Ok(());
    }
    let browser = Browser::start(1440, 1000).await?;
    let mut first = Vec::new();
    for _ in 0..3 {
        browser.goto(&format!("{base}/ui")).await?;
        let v = browser
            .wait_for(
                "return window.__berth && window.__berth.firstRender",
                Duration::from_secs(30),
            )
            .await?;
        first.push(v.as_f64().unwrap_or(f64::NAN));
    }
    let rows = browser
        .eval("return document.querySelectorAll('#tasks tbody tr').length")
        .await?;
    let info = browser
        .eval(
            "const n = performance.getEntriesByType('navigation')[0];\
             return {dcl: n ? n.domContentLoadedEventEnd : null, frame: window.__berth.lastRender,\
                     heap: performance.memory ? performance.memory.usedJSHeapSize : null}",
        )
        .await?;
    println!(
        "dashboard: time to first render in headless Chromium {:.0} ms (median of 3; from navigation start to the snapshot rendered, {} task rows; DOMContentLoaded {:.0} ms; that frame {:.0} ms; JS heap {:.1} MiB)",
        median(&mut first),
        rows,
        info["dcl"].as_f64().unwrap_or(f64::NAN),
        info["frame"].as_f64().unwrap_or(f64::NAN),
        info["heap"].as_f64().unwrap_or(f64::NAN) / 1048576.0,
    );

    // One task changes: time from the store write to the row showing it.
    let mut lags = Vec::new();
    for k in 0..5u32 {
        let i = k * 97 % n.max(1);
        let t = task_obj(i, TaskState::Running);
        let id = t.metadata.name.clone();
        // Always a change from RUNNING (each k is a different task).
        let (want, state) = if k % 2 == 0 {
            ("STOPPING", TaskState::Stopping)
        } else {
            ("DEACTIVATING", TaskState::Deactivating)
        };
        browser
            .eval(&format!(
                "window.__seen = null; const tr = document.querySelector('[data-task=\"{id}\"]');\
                 new MutationObserver((m, o) => {{ if (tr.dataset.status === '{want}') {{ window.__seen = Date.now(); o.disconnect(); }} }})\
                 .observe(tr, {{attributes: true}}); return 1"
            ))
            .await?;
        let mut t = t;
        t.status.last_status = state;
        let written = chrono::Utc::now().timestamp_millis() as f64;
        store.put(&keys::key(Kind::Task, &id), t.to_bytes()).await?;
        let seen = match browser
            .wait_for("return window.__seen", Duration::from_secs(10))
            .await
        {
            Ok(v) => v,
            Err(e) => {
                let diag = browser
                    .eval(&format!("return {{errors: window.__berth.errors, batches: window.__berth.batches, renders: window.__berth.renders, status: (document.querySelector('[data-task=\"{id}\"]') || {{}}).outerHTML}}"))
                    .await?;
                anyhow::bail!("{e}; page: {diag}");
            }
        };
        lags.push(seen.as_f64().unwrap_or(f64::NAN) - written);
    }
    // A burst: every task changes at once.
    browser
        .eval(&format!(
            "window.__burst = null; const want = {n}; const f = () => {{ if (window.__burst) return;\
               const c = document.querySelectorAll('#tasks tbody tr[data-status=\"ACTIVATING\"]').length;\
               if (c >= want) window.__burst = Date.now(); else setTimeout(f, 10); }}; f(); return 1"
        ))
        .await?;
    let written = chrono::Utc::now().timestamp_millis() as f64;
    put_tasks(&store, n, TaskState::Activating).await?;
    let burst = browser
        .wait_for("return window.__burst", Duration::from_secs(60))
        .await?;
    let burst_ms = burst.as_f64().unwrap_or(f64::NAN) - written;
    let perf = browser
        .eval("return {renders: window.__berth.renders, batches: window.__berth.batches, frame: window.__berth.lastRender}")
        .await?;
    println!(
        "dashboard: store write → row updated {:.0} ms (median of 5, {:?} ms); all {n} tasks changed at once → page shows all {:.0} ms after the first write ({} SSE batches, {} renders so far, last frame {:.1} ms)",
        median(&mut lags.clone()),
        lags.iter().map(|l| l.round() as i64).collect::<Vec<_>>(),
        burst_ms,
        perf["batches"],
        perf["renders"],
        perf["frame"].as_f64().unwrap_or(f64::NAN),
    );
    browser.close().await;
    node.shutdown().await;
    Ok(())
}

async fn stats_cost(m: u32, secs: u64, image: &str) -> anyhow::Result<()> {
    let docker = berth_core::agent::docker::connect().await?;
    let instance = format!("bench-stats-{}", &berth_core::model::new_id()[..8]);
    let label = format!("{}={instance}", berth_core::agent::docker::LABEL_INSTANCE);
    let result = async {
        let t = Instant::now();
        let created: Vec<anyhow::Result<()>> = futures::stream::iter(0..m)
            .map(|i| {
                let docker = docker.clone();
                let instance = instance.clone();
                let image = image.to_string();
                async move {
                    let mut spec = RawContainer::new(&image, &["sleep", "3600"]);
                    spec.labels = [
                        (berth_core::agent::docker::LABEL_INSTANCE.to_string(), instance.clone()),
                        (berth_core::agent::docker::LABEL_TASK.to_string(), format!("bench-task-{i}")),
                        (berth_core::agent::docker::LABEL_CONTAINER.to_string(), "app".to_string()),
                    ]
                    .into();
                    spec.memory_bytes = Some(32 << 20);
                    spec.create_start(&docker, &format!("{instance}-{i}")).await?;
                    Ok(())
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for r in created {
            r?;
        }
        println!(
            "stats: {m} busybox sleep containers started in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        // One pass, timed directly (the first only records CPU counters).
        let mut sampler = berth_core::agent::stats::Sampler::new(docker.clone(), &instance);
        let interval = berth_core::agent::stats::DEFAULT_INTERVAL;
        sampler.sample(interval).await?;
        let mut passes = Vec::new();
        let mut size = 0;
        for _ in 0..3 {
            let t = Instant::now();
            let s = sampler.sample(interval).await?;
            passes.push(t.elapsed().as_secs_f64() * 1e3);
            size = serde_json::to_vec(&s)?.len();
            anyhow::ensure!(
                s.containers.len() == m as usize,
                "sampled {} of {m} containers",
                s.containers.len()
            );
        }
        // The agent's loop as it runs, over a window: CPU of this process and of dockerd.
        let dir = tempfile::tempdir()?;
        let store: DynStore = Arc::new(berth_core::store::embedded::EmbeddedStore::open(
            dir.path().join("store"),
        )?);
        let stop = CancellationToken::new();
        let dockerd = dockerd_pid();
        let (me0, d0) = (
            cpu_seconds("self"),
            dockerd.as_deref().and_then(cpu_seconds),
        );
        let started = Instant::now();
        let h = tokio::spawn(berth_core::agent::stats::run(
            store.clone(),
            docker.clone(),
            instance.clone(),
            interval,
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.cancel();
        let _ = h.await;
        let wall = started.elapsed().as_secs_f64();
        let (me1, d1) = (
            cpu_seconds("self"),
            dockerd.as_deref().and_then(cpu_seconds),
        );
        let me = me1.zip(me0).map(|(a, b)| (a - b) / wall * 100.0);
        let dd = d1.zip(d0).map(|(a, b)| (a - b) / wall * 100.0);
        let per100 = |v: f64| v * 100.0 / m as f64;
        println!(
            "stats: one sampling pass over {m} containers {:.0} ms (median of 3), one store write of {:.1} KiB per pass",
            median(&mut passes),
            size as f64 / 1024.0
        );
        match me {
            Some(me) => println!(
                "stats: agent sampling every {:?} for {wall:.0} s: berth process {me:.2}% of a core ({:.2}% per 100 containers); dockerd {}",
                interval,
                per100(me),
                dd.map_or("unknown".into(), |d| format!(
                    "{d:.2}% of a core ({:.2}% per 100 containers)",
                    per100(d)
                )),
            ),
            None => println!("stats: /proc/self/stat unreadable; no CPU numbers"),
        }
        anyhow::Ok(())
    }
    .await;
    // Clean up whatever happened.
    let mut filters = HashMap::new();
    filters.insert("label".to_string(), vec![label]);
    if let Ok(list) = docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
    {
        futures::stream::iter(list.into_iter().filter_map(|c| c.id))
            .map(|id| {
                let docker = docker.clone();
                async move { berth_core::agent::docker::remove(&docker, &id).await }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
    }
    result
}
