//! `berth bench converge`: time from apply to N tasks RUNNING on a fresh berth, beside N raw
//! Docker create+start calls with the same concurrency, measured in the same run.

use std::time::{Duration, Instant};

use futures::StreamExt;

use super::harness::{
    apply_docs, httpd_service, median, parse_yaml, BenchNode, RawContainer, HTTPD,
};
use berth_core::model::{keys, Kind, Task, TaskState};
use berth_core::objects;
use berth_core::store::DynStore;

/// Concurrency used for both sides: the agent's worker count.
const CONCURRENCY: usize = 8;

pub async fn run(n: u32, image: &str, runs: u32) -> anyhow::Result<()> {
    let docker = berth_core::agent::docker::connect().await?;
    let mut raw = Vec::new();
    let mut berth = Vec::new();
    for round in 0..runs.max(1) {
        let r = raw_docker(&docker, n, image).await?;
        let b = berth_converge(n, image).await?;
        println!(
            "round {}: raw docker {:>7.1} ms   berth {:>7.1} ms",
            round + 1,
            r.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3
        );
        raw.push(r);
        berth.push(b);
    }
    let (r, b) = (median(&mut raw), median(&mut berth));
    println!(
        "converge {n} replicas (median of {}): raw docker {:.1} ms, berth {:.1} ms, ratio {:.3} (berth adds {:+.1}%)",
        raw.len(),
        r.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3,
        b.as_secs_f64() / r.as_secs_f64(),
        (b.as_secs_f64() / r.as_secs_f64() - 1.0) * 100.0
    );
    Ok(())
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

async fn running_count(store: &DynStore) -> anyhow::Result<usize> {
    Ok(objects::list_tasks(&**store)
        .await?
        .iter()
        .filter(|t: &&Task| t.status.last_status == TaskState::Running)
        .count())
}

/// Apply a service of N replicas to a fresh berth (embedded store) and time until all N
/// tasks are RUNNING.
async fn berth_converge(n: u32, image: &str) -> anyhow::Result<Duration> {
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
    let start = Instant::now();
    apply_docs(&store, &docs).await?;
    // Follow the store with a watch so the clock stops the moment the last task is RUNNING.
    let mut events = berth_core::runtime::watcher(store.clone(), keys::prefix(Kind::Task));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if running_count(&store).await? >= n as usize {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "service did not converge in 120 s"
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), events.next()).await;
    }
    let elapsed = start.elapsed();
    bench.finish().await;
    Ok(elapsed)
}
