//! `berth bench …`: numbers beside the obvious alternative, measured in the same run.
//! A layer above `node` (it starts whole nodes) and below `cli` (ARCHITECTURE.md).

pub mod dashboard;
pub mod gitops;
pub mod lb;
pub mod recovery;
pub mod webdriver;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::query_parameters::CreateContainerOptions;
use clap::Subcommand;
use futures::StreamExt;

use crate::node::{self, NodeConfig};
use berth_core::agent::AgentConfig;
use berth_core::manifest;
use berth_core::model::{keys, Kind, Task, TaskState};
use berth_core::objects;
use berth_core::store::DynStore;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// The dashboard with N simulated tasks (time to first render, payload size, live update
    /// latency) and the agent's stats sampling cost per 100 containers.
    Dashboard {
        #[arg(long, default_value_t = 1000)]
        tasks: u32,
        /// Real busybox containers for the stats-sampling cost (0: skip).
        #[arg(long, default_value_t = 100)]
        containers: u32,
        /// How long the sampler runs over them.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        #[arg(long, default_value = "local/busybox:1")]
        image: String,
    },
    /// Time from apply to N tasks RUNNING, beside N raw Docker create+start calls.
    Converge {
        #[arg(long, default_value_t = 20)]
        replicas: u32,
        #[arg(long, default_value = "local/busybox:1")]
        image: String,
        /// Rounds of each (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: u32,
    },
    /// Time from a commit (or a file renamed into the folder) to the store holding the new
    /// desired state, for a small and a large folder, beside Argo CD's and Flux's polling.
    Gitops {
        /// Changes per scenario (the median is reported).
        #[arg(long, default_value_t = 50)]
        changes: u32,
        #[arg(long, default_value_t = 5)]
        small: usize,
        #[arg(long, default_value_t = 1000)]
        large: usize,
    },
    /// kill -9 a container of a service; time until the replacement is RUNNING and HEALTHY,
    /// beside a raw `docker run` of the same image.
    /// Throughput and latency through berth's load balancer beside nginx, same targets.
    Lb {
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value = "local/busybox:1")]
        image: String,
    },
    Recovery {
        #[arg(long, default_value_t = 5)]
        replicas: u32,
        #[arg(long, default_value_t = 20)]
        runs: u32,
        #[arg(long, default_value = "local/busybox:1")]
        image: String,
    },
}

pub async fn run(cmd: &BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Dashboard {
            tasks,
            containers,
            seconds,
            image,
        } => self::dashboard::run(*tasks, *containers, *seconds, image).await,
        BenchCommand::Converge {
            replicas,
            image,
            runs,
        } => converge(*replicas, image, *runs).await,
        BenchCommand::Gitops {
            changes,
            small,
            large,
        } => self::gitops::run(*changes, *small, *large).await,
        BenchCommand::Lb {
            connections,
            seconds,
            image,
        } => self::lb::run(*connections, *seconds, image).await,
        BenchCommand::Recovery {
            replicas,
            runs,
            image,
        } => self::recovery::run(*replicas, *runs, image).await,
    }
}

/// Concurrency used for both sides: the agent's worker count.
const CONCURRENCY: usize = 8;

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn converge(n: u32, image: &str, runs: u32) -> anyhow::Result<()> {
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
    let start = Instant::now();
    let names: Vec<String> = (0..n)
        .map(|i| format!("berth-bench-raw-{}-{i}", &run_id[..8]))
        .collect();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(names.clone())
        .map(|name| {
            let docker = docker.clone();
            let image = image.to_string();
            async move {
                let mut exposed = std::collections::HashMap::new();
                exposed.insert("8080/tcp".to_string(), std::collections::HashMap::new());
                let mut bindings = std::collections::HashMap::new();
                bindings.insert(
                    "8080/tcp".to_string(),
                    Some(vec![bollard::models::PortBinding {
                        host_ip: Some("0.0.0.0".into()),
                        host_port: Some(String::new()),
                    }]),
                );
                let body = bollard::models::ContainerCreateBody {
                    image: Some(image),
                    cmd: Some(vec![
                        "httpd".into(),
                        "-f".into(),
                        "-p".into(),
                        "8080".into(),
                    ]),
                    exposed_ports: Some(exposed),
                    labels: Some([("berth.bench".to_string(), "raw".to_string())].into()),
                    host_config: Some(bollard::models::HostConfig {
                        port_bindings: Some(bindings),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let id = docker
                    .create_container(
                        Some(CreateContainerOptions {
                            name: Some(name),
                            platform: String::new(),
                        }),
                        body,
                    )
                    .await?
                    .id;
                docker
                    .start_container(
                        &id,
                        None::<bollard::query_parameters::StartContainerOptions>,
                    )
                    .await?;
                // The agent inspects each container after starting it; so does this side.
                docker
                    .inspect_container(
                        &id,
                        None::<bollard::query_parameters::InspectContainerOptions>,
                    )
                    .await?;
                Ok(())
            }
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

/// A whole berth (embedded store in a temp dir, controllers, one roomy agent) for benchmarks.
pub struct BenchNode {
    pub _dir: tempfile::TempDir,
    pub store: DynStore,
    pub instance: String,
    pub node: node::Node,
}

impl BenchNode {
    pub async fn start() -> anyhow::Result<BenchNode> {
        let dir = tempfile::tempdir()?;
        let store: DynStore = Arc::new(berth_core::store::embedded::EmbeddedStore::open(
            dir.path().join("store"),
        )?);
        let instance = format!("bench-{}", &berth_core::model::new_id()[..8]);
        let mut agent = AgentConfig::new(&instance, "default");
        agent.cpu = Some(1024 * 64);
        agent.memory = Some(64 * 1024);
        let node = node::start(
            store.clone(),
            NodeConfig {
                api: None,
                controllers: true,
                agent: Some(agent),
                manifests: None,
            },
        )
        .await?;
        Ok(BenchNode {
            _dir: dir,
            store,
            instance,
            node,
        })
    }

    /// Stop berth and remove every container its agent started (a benchmark leaves nothing).
    pub async fn finish(self) {
        self.node.shutdown().await;
        if let Ok(docker) = berth_core::agent::docker::connect().await {
            let owned = berth_core::agent::docker::list_owned(&docker, &self.instance)
                .await
                .unwrap_or_default();
            for id in owned.into_iter().filter_map(|c| c.id) {
                let _ = berth_core::agent::docker::remove(&docker, &id).await;
            }
        }
    }
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
    let BenchNode {
        _dir,
        store,
        instance,
        node,
    } = BenchNode::start().await?;
    // Wait for the agent to register before starting the clock.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store
        .get(&keys::instance_lease_key(&instance))
        .await?
        .is_none()
    {
        anyhow::ensure!(Instant::now() < deadline, "agent did not register");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = format!(
        r#"
apiVersion: berth.dev/v1
kind: TaskDefinition
metadata: {{name: bench}}
spec:
  containerDefinitions:
    - name: httpd
      image: {image}
      command: ["httpd", "-f", "-p", "8080"]
      cpu: 10
      memory: 16
      portMappings: [{{containerPort: 8080}}]
---
apiVersion: berth.dev/v1
kind: Service
metadata: {{name: bench}}
spec:
  taskDefinition: bench
  desiredCount: {n}
"#
    );
    let docs = manifest::parse_str(&text, "bench.yaml")
        .map_err(|e| anyhow::anyhow!("bench manifest: {:?}", e))?;
    let start = Instant::now();
    berth_core::apply::apply(
        &*store,
        &docs,
        &berth_core::apply::ApplyOptions { dry_run: false },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
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
    BenchNode {
        _dir,
        store,
        instance,
        node,
    }
    .finish()
    .await;
    Ok(elapsed)
}
