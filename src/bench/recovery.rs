//! `berth bench recovery`: kill -9 a container of a 5-replica service and time until its
//! replacement is RUNNING and HEALTHY, beside a raw `docker run` of the same image with the same
//! health check, measured in the same run.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bollard::query_parameters::{InspectContainerOptions, KillContainerOptions};
use bollard::Docker;

use super::harness::{apply_yaml, httpd_service, median, ms, BenchNode, RawContainer, HTTPD};
use berth_core::model::{keys, HealthStatus, Kind, Task, TaskState};
use berth_core::objects;
use berth_core::store::DynStore;

const HEALTH_CMD: &str = "nc -w 1 127.0.0.1 8080 </dev/null";

pub async fn run(replicas: u32, runs: u32, image: &str) -> anyhow::Result<()> {
    let docker = berth_core::agent::docker::connect().await?;
    let bench = BenchNode::start().await?;
    let store = bench.store.clone();
    let health = format!(
        r#"healthCheck: {{command: ["CMD-SHELL", "{HEALTH_CMD}"], interval: 1, timeout: 1, retries: 2}}"#
    );
    let text = httpd_service(
        "recovery",
        image,
        HTTPD,
        replicas,
        &[&health, "stopTimeout: 1"],
        &[],
    );
    apply_yaml(&store, &text, "recovery.yaml").await?;
    wait_healthy(
        &store,
        replicas as usize,
        &BTreeSet::new(),
        Duration::from_secs(120),
    )
    .await?;

    let (mut b_run, mut b_healthy, mut r_run, mut r_healthy) = (vec![], vec![], vec![], vec![]);
    for round in 0..runs.max(1) {
        let tasks = service_tasks(&store).await?;
        let before: BTreeSet<String> = tasks.iter().map(|t| t.metadata.name.clone()).collect();
        let victim = tasks
            .iter()
            .find(|t| t.status.last_status == TaskState::Running)
            .and_then(|t| t.status.containers.first())
            .and_then(|c| c.docker_id.clone())
            .ok_or_else(|| anyhow::anyhow!("no running container to kill"))?;
        let t0 = Instant::now();
        docker
            .kill_container(
                &victim,
                Some(KillContainerOptions {
                    signal: "SIGKILL".into(),
                }),
            )
            .await?;
        let running = wait_replacement(&store, &before, false, Duration::from_secs(60)).await?;
        let t_run = t0.elapsed();
        wait_replacement(&store, &before, true, Duration::from_secs(60)).await?;
        let t_healthy = t0.elapsed();
        let _ = running;
        // Let the service settle so every round starts from steady state.
        wait_healthy(
            &store,
            replicas as usize,
            &BTreeSet::new(),
            Duration::from_secs(60),
        )
        .await?;
        let (raw_run, raw_healthy) = raw_docker_run(&docker, image).await?;
        println!(
            "round {:>2}: berth replacement RUNNING {:>7.1} ms, HEALTHY {:>7.1} ms | raw docker run RUNNING {:>7.1} ms, HEALTHY {:>7.1} ms",
            round + 1,
            ms(t_run),
            ms(t_healthy),
            ms(raw_run),
            ms(raw_healthy)
        );
        b_run.push(t_run);
        b_healthy.push(t_healthy);
        r_run.push(raw_run);
        r_healthy.push(raw_healthy);
    }
    let (br, bh, rr, rh) = (
        median(&mut b_run),
        median(&mut b_healthy),
        median(&mut r_run),
        median(&mut r_healthy),
    );
    println!(
        "recovery, median of {}: kill -9 → replacement RUNNING {:.1} ms vs raw docker run {:.1} ms (overhead {:+.1} ms); HEALTHY {:.1} ms vs raw {:.1} ms (overhead {:+.1} ms)",
        runs.max(1),
        ms(br),
        ms(rr),
        ms(br) - ms(rr),
        ms(bh),
        ms(rh),
        ms(bh) - ms(rh)
    );
    bench.finish().await;
    Ok(())
}

async fn service_tasks(store: &DynStore) -> anyhow::Result<Vec<Task>> {
    Ok(objects::list_tasks(&**store)
        .await?
        .into_iter()
        .filter(|t| t.spec.group == "service:recovery" && t.is_active())
        .collect())
}

async fn wait_healthy(
    store: &DynStore,
    n: usize,
    exclude: &BTreeSet<String>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let t = service_tasks(store).await?;
        let ok = t
            .iter()
            .filter(|t| {
                !exclude.contains(&t.metadata.name)
                    && t.status.last_status == TaskState::Running
                    && t.status.health_status == HealthStatus::Healthy
            })
            .count();
        let stopping = objects::list_tasks(&**store)
            .await?
            .iter()
            .filter(|t| t.spec.group == "service:recovery" && !t.is_stopped() && !t.is_active())
            .count();
        if ok >= n && t.len() == n && stopping == 0 {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "service did not become healthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until a task not in `before` is RUNNING (and HEALTHY if asked).
async fn wait_replacement(
    store: &DynStore,
    before: &BTreeSet<String>,
    healthy: bool,
    timeout: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    let mut events = berth_core::runtime::watcher(store.clone(), keys::prefix(Kind::Task));
    loop {
        for t in service_tasks(store).await? {
            if !before.contains(&t.metadata.name)
                && t.status.last_status == TaskState::Running
                && (!healthy || t.status.health_status == HealthStatus::Healthy)
            {
                return Ok(t.metadata.name);
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no replacement within {timeout:?}"
        );
        let _ = tokio::time::timeout(
            Duration::from_millis(50),
            futures::StreamExt::next(&mut events),
        )
        .await;
    }
}

/// `docker run -d` of the same image and health check: time to running, and to healthy.
async fn raw_docker_run(docker: &Docker, image: &str) -> anyhow::Result<(Duration, Duration)> {
    let name = format!("berth-bench-raw-{}", &berth_core::model::new_id()[..10]);
    let mut spec = RawContainer::new(image, HTTPD);
    spec.publish = Some(8080);
    spec.health_cmd = Some(HEALTH_CMD.to_string());
    let t0 = Instant::now();
    let id = spec.create_start(docker, &name).await?;
    docker
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await?;
    let running = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let i = docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await?;
        if berth_core::agent::docker::observe(&i).health == HealthStatus::Healthy {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "raw container never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let healthy = t0.elapsed();
    berth_core::agent::docker::remove(docker, &id).await?;
    Ok((running, healthy))
}
