//! `berth bench recovery`: kill -9 a container of a 5-replica service and time until its
//! replacement is RUNNING and HEALTHY, beside a raw `docker run` of the same image with the same
//! health check, measured in the same run.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bollard::query_parameters::{EventsOptions, InspectContainerOptions, KillContainerOptions};
use bollard::Docker;

use super::harness::{apply_yaml, httpd_service, median, ms, BenchNode, RawContainer, HTTPD};
use berth_core::model::{keys, HealthStatus, Kind, Task, TaskState};
use berth_core::objects;
use berth_core::runtime::WatcherEvent;
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
    let (mut b_die, mut b_after_die, mut r_die, mut r_chain) = (vec![], vec![], vec![], vec![]);
    for round in 0..runs.max(1) {
        let tasks = service_tasks(&store).await?;
        let before: BTreeSet<String> = tasks.iter().map(|t| t.metadata.name.clone()).collect();
        let victim = tasks
            .iter()
            .find(|t| t.status.last_status == TaskState::Running)
            .and_then(|t| t.status.containers.first())
            .and_then(|c| c.docker_id.clone())
            .ok_or_else(|| anyhow::anyhow!("no running container to kill"))?;
        let die = die_event(&docker, &victim);
        let t0 = Instant::now();
        let timeline =
            (round == 0).then(|| tokio::spawn(timeline(store.clone(), t0, before.clone())));
        kill9(&docker, &victim).await?;
        let t_die = tokio::time::timeout(Duration::from_secs(10), die)
            .await
            .map_err(|_| anyhow::anyhow!("no die event for the killed container"))?
            .map(|()| t0.elapsed())?;
        let running = wait_replacement(&store, &before, false, Duration::from_secs(60)).await?;
        let t_run = t0.elapsed();
        wait_replacement(&store, &before, true, Duration::from_secs(60)).await?;
        let t_healthy = t0.elapsed();
        let _ = running;
        if let Some(t) = timeline {
            if let Ok(Ok(lines)) = tokio::time::timeout(Duration::from_secs(2), t).await {
                println!("  {:>7.1}  Docker's die event", ms(t_die));
                lines.iter().for_each(|l| println!("{l}"));
            }
        }
        // Let the service settle so every round starts from steady state.
        wait_healthy(
            &store,
            replicas as usize,
            &BTreeSet::new(),
            Duration::from_secs(60),
        )
        .await?;
        let (raw_run, raw_healthy, raw_die) = raw_docker_run(&docker, image).await?;
        println!(
            "round {:>2}: die event {:>6.1} ms; berth replacement RUNNING {:>7.1} ms, HEALTHY {:>7.1} ms | raw: die event {:>6.1} ms, docker run RUNNING {:>7.1} ms, HEALTHY {:>7.1} ms",
            round + 1,
            ms(t_die),
            ms(t_run),
            ms(t_healthy),
            ms(raw_die),
            ms(raw_run),
            ms(raw_healthy)
        );
        b_die.push(t_die);
        b_after_die.push(t_run - t_die);
        b_run.push(t_run);
        b_healthy.push(t_healthy);
        r_die.push(raw_die);
        r_chain.push(raw_die + raw_run);
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
    // The kill itself and Docker's die event are Docker's time, before berth can know: what
    // berth adds is the time from the die event to the replacement running, beside `docker run`.
    let (bd, bad, rd) = (
        median(&mut b_die),
        median(&mut b_after_die),
        median(&mut r_die),
    );
    println!(
        "  of which Docker's kill → die event {:.1} ms (a raw container's: {:.1} ms); die event → replacement RUNNING {:.1} ms vs raw docker run {:.1} ms (berth's own path {:+.1} ms)",
        ms(bd),
        ms(rd),
        ms(bad),
        ms(rr),
        ms(bad) - ms(rr)
    );
    // The obvious alternative end to end: a supervisor that sees the die event and runs anew.
    let rc = median(&mut r_chain);
    println!(
        "  kill -9 → RUNNING: berth {:.1} ms vs raw (kill → die event → docker run) {:.1} ms (overhead {:+.1} ms)",
        ms(br),
        ms(rc),
        ms(br) - ms(rc)
    );
    bench.finish().await;
    Ok(())
}

/// Where the time goes (round 1): every task write of the service after the kill, with its
/// offset — the victim's stop, the replacement's creation, placement and start.
async fn timeline(store: DynStore, t0: Instant, before: BTreeSet<String>) -> Vec<String> {
    let mut lines = vec!["timeline of round 1 (ms after kill -9):".to_string()];
    let mut events = berth_core::runtime::watcher(store, keys::prefix(Kind::Task));
    let mut seen_list = false;
    while let Some(ev) = futures::StreamExt::next(&mut events).await {
        let kv = match ev {
            WatcherEvent::Applied(kv) => kv,
            WatcherEvent::Restarted(_) => {
                seen_list = true;
                continue;
            }
            _ => continue,
        };
        let Ok(t) = Task::from_kv(&kv) else {
            continue;
        };
        if !seen_list || t.spec.group != "service:recovery" {
            continue;
        }
        lines.push(format!(
            "  {:>7.1}  task {} desired {:?} last {:?} instance {} health {:?}",
            ms(t0.elapsed()),
            &t.metadata.name[..8.min(t.metadata.name.len())],
            t.status.desired_status,
            t.status.last_status,
            t.status.container_instance.as_deref().unwrap_or("-"),
            t.status.health_status
        ));
        if t.status.last_status == TaskState::Running
            && t.status.health_status == HealthStatus::Healthy
            && !before.contains(&t.metadata.name)
        {
            break;
        }
    }
    lines
}

async fn kill9(docker: &Docker, id: &str) -> anyhow::Result<()> {
    let opts = KillContainerOptions {
        signal: "SIGKILL".into(),
    };
    Ok(docker.kill_container(id, Some(opts)).await?)
}

/// Resolves when Docker reports the container's `die` (subscribed before the kill).
fn die_event(
    docker: &Docker,
    id: &str,
) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static {
    let filters = std::collections::HashMap::from([
        ("container".to_string(), vec![id.to_string()]),
        ("event".to_string(), vec!["die".to_string()]),
    ]);
    // `since` replays from a second ago, so a stream that connects after the kill still sees it.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().saturating_sub(1).to_string())
        .unwrap_or_default();
    let mut events = docker.events(Some(EventsOptions {
        filters: Some(filters),
        since: Some(since),
        ..Default::default()
    }));
    let task = tokio::spawn(async move {
        match futures::StreamExt::next(&mut events).await {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(anyhow::anyhow!("docker events: {e}")),
            None => Err(anyhow::anyhow!("docker events ended")),
        }
    });
    async move { task.await? }
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

/// `docker run -d` of the same image and health check: time to running, to healthy, and from
/// its kill -9 to Docker's die event.
async fn raw_docker_run(
    docker: &Docker,
    image: &str,
) -> anyhow::Result<(Duration, Duration, Duration)> {
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
    // The same kill -9 of the raw container: Docker's own kill → die latency.
    let die = die_event(docker, &id);
    let t1 = Instant::now();
    kill9(docker, &id).await?;
    tokio::time::timeout(Duration::from_secs(10), die)
        .await
        .map_err(|_| anyhow::anyhow!("no die event for the raw container"))??;
    let died = t1.elapsed();
    berth_core::agent::docker::remove(docker, &id).await?;
    Ok((running, healthy, died))
}
