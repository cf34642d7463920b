//! `berth bench converge`: time from apply to N tasks RUNNING on a fresh berth, beside N raw
//! Docker create+start calls with the same concurrency, measured in the same run.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::harness::{
    apply_docs, cpu_seconds, dockerd_pid, httpd_service, median, parse_yaml, BenchNode,
    RawContainer, HTTPD,
};
use berth_core::model::{keys, Kind, Task, TaskState};
use berth_core::runtime::WatcherEvent;

/// Concurrency used for both sides: the agent's worker count.
const CONCURRENCY: usize = 8;

pub async fn run(n: u32, image: &str, runs: u32) -> anyhow::Result<()> {
    let docker = berth_core::agent::docker::connect().await?;
    let mut raw = Vec::new();
    let mut berth = Vec::new();
    let mut ratios = Vec::new();
    // CPU spent during each side (utime + stime): this process (berth's control plane and
    // agent on the berth side, only the client on the raw side) and dockerd.
    let dockerd = dockerd_pid();
    let cpu = || {
        (
            cpu_seconds("self").unwrap_or(0.0),
            dockerd.as_deref().and_then(cpu_seconds).unwrap_or(0.0),
        )
    };
    let add = |acc: &mut (f64, f64), before: (f64, f64), after: (f64, f64)| {
        acc.0 += after.0 - before.0;
        acc.1 += after.1 - before.1;
    };
    let (mut cpu_raw, mut cpu_berth) = ((0.0, 0.0), (0.0, 0.0));
    settle().await;
    for round in 0..runs.max(1) {
        // Docker's speed drifts during a run on a small machine: the two sides take turns
        // going first, and each round is judged on its own pair.
        // Each side's CPU includes Docker's teardown of its containers (the settle after it).
        let c0 = cpu();
        let (r, b, phases) = if round % 2 == 0 {
            let r = raw_docker(&docker, n, image).await?;
            settle().await;
            let c1 = cpu();
            let (b, p) = berth_converge(n, image).await?;
            settle().await;
            add(&mut cpu_raw, c0, c1);
            add(&mut cpu_berth, c1, cpu());
            (r, b, p)
        } else {
            let (b, p) = berth_converge(n, image).await?;
            settle().await;
            let c1 = cpu();
            let r = raw_docker(&docker, n, image).await?;
            settle().await;
            add(&mut cpu_berth, c0, c1);
            add(&mut cpu_raw, c1, cpu());
            (r, b, p)
        };
        let ratio = b.as_secs_f64() / r.as_secs_f64();
        println!(
            "round {}: raw docker {:>7.1} ms   berth {:>7.1} ms   ratio {ratio:.3}{}",
            round + 1,
            r.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            if round % 2 == 0 {
                ""
            } else {
                "   (berth first)"
            }
        );
        println!("         berth: {}", phases.line());
        raw.push(r);
        berth.push(b);
        ratios.push(Duration::from_secs_f64(ratio));
    }
    let (r, b) = (median(&mut raw), median(&mut berth));
    let ratio = median(&mut ratios).as_secs_f64();
    println!(
        "converge {n} replicas (median of {}): raw docker {:.1} ms, berth {:.1} ms; ratio {ratio:.3} (median of the rounds' ratios; berth adds {:+.1}%)",
        raw.len(),
        r.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3,
        (ratio - 1.0) * 100.0
    );
    let rounds = raw.len() as f64;
    let per = |v: f64| v * 1e3 / rounds;
    println!(
        "  CPU per round: raw side: this process {:.0} ms, dockerd {:.0} ms | berth side: berth (control plane + agent, in this process) {:.0} ms, dockerd {:.0} ms",
        per(cpu_raw.0),
        per(cpu_raw.1),
        per(cpu_berth.0),
        per(cpu_berth.1)
    );
    Ok(())
}

/// Docker goes on tearing down removed containers (mounts, network, shims) after the API
/// answered: let that finish before the other side starts, so neither pays for the other.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// N containers created and started through the Docker API with bounded concurrency.
async fn raw_docker(docker: &bollard::Docker, n: u32, image: &str) -> anyhow::Result<Duration> {
    let run_id = berth_core::model::new_id();
    let mut spec = RawContainer::new(image, HTTPD);
    spec.publish = Some(8080);
    spec.labels = [("berth.bench".to_string(), "raw".to_string())].into();
    let spec = &spec;
    let start = Instant::now();
    let names: Vec<String> = (0..n)
        .map(|i| format!("berth-bench-raw-{}-{i}", &run_id[..8]))
        .collect();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(names.clone())
        .map(|name| async move {
            let id = spec.create_start(docker, &name).await?;
            // The agent inspects each container after starting it; so does this side.
            docker
                .inspect_container(
                    &id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await?;
            Ok(())
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let elapsed = start.elapsed();
    for name in &names {
        let _ = berth_core::agent::docker::remove(docker, name).await;
    }
    for r in results {
        r?;
    }
    Ok(elapsed)
}

/// When the berth side's tasks reached each step, as offsets from the apply: the last one
/// created, the first and last placed, the first RUNNING (the last RUNNING is the total).
#[derive(Default)]
struct Phases {
    created: Duration,
    placed: (Option<Duration>, Duration),
    first_running: Option<Duration>,
}

impl Phases {
    fn line(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "tasks created by {:.0} ms, placed {:.0}..{:.0} ms, first RUNNING {:.0} ms",
            ms(self.created),
            self.placed.0.map(ms).unwrap_or(0.0),
            ms(self.placed.1),
            self.first_running.map(ms).unwrap_or(0.0)
        )
    }
}

/// Apply a service of N replicas to a fresh berth (embedded store) and time until all N
/// tasks are RUNNING.
async fn berth_converge(n: u32, image: &str) -> anyhow::Result<(Duration, Phases)> {
    let bench = BenchNode::start().await?;
    let store = bench.store.clone();
    // Wait for the agent to register before starting the clock.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store
        .get(&keys::instance_lease_key(&bench.instance))
        .await?
        .is_none()
    {
        anyhow::ensure!(Instant::now() < deadline, "agent did not register");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let docs = parse_yaml(
        &httpd_service("bench", image, HTTPD, n, &[], &[]),
        "bench.yaml",
    )?;
    // Follow the store with a watch (from before the apply) so the clock stops the moment the
    // last task is RUNNING.
    let mut events = berth_core::runtime::watcher(store.clone(), keys::prefix(Kind::Task));
    let start = Instant::now();
    apply_docs(&store, &docs).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut created, mut placed, mut running) = (HashSet::new(), HashSet::new(), HashSet::new());
    let mut phases = Phases::default();
    while running.len() < n as usize {
        anyhow::ensure!(
            Instant::now() < deadline,
            "service did not converge in 120 s"
        );
        let kvs = match tokio::time::timeout(Duration::from_millis(500), events.next()).await {
            Ok(Some(WatcherEvent::Restarted(kvs))) => kvs,
            Ok(Some(WatcherEvent::Applied(kv))) => vec![kv],
            Ok(Some(WatcherEvent::Deleted(_))) | Err(_) => continue,
            Ok(None) => anyhow::bail!("the task watch ended"),
        };
        let at = start.elapsed();
        for t in kvs.iter().filter_map(|kv| Task::from_kv(kv).ok()) {
            let id = t.metadata.name.clone();
            if created.insert(id.clone()) {
                phases.created = at;
            }
            if t.status.container_instance.is_some() && placed.insert(id.clone()) {
                phases.placed.0.get_or_insert(at);
                phases.placed.1 = at;
            }
            if t.status.last_status == TaskState::Running && running.insert(id) {
                phases.first_running.get_or_insert(at);
            }
        }
    }
    let elapsed = start.elapsed();
    bench.finish().await;
    Ok((elapsed, phases))
}
