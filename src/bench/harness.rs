//! What the benchmarks share: a whole berth node to measure ([`BenchNode`]), the raw-Docker
//! side they are compared with ([`RawContainer`]), the httpd service they both run, and small
//! statistics helpers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::{CreateContainerOptions, StartContainerOptions};
use bollard::Docker;

use crate::node::{self, NodeConfig};
use berth_core::agent::AgentConfig;
use berth_core::store::DynStore;

/// The busybox httpd both sides of a benchmark run: berth's task and the raw container.
pub const HTTPD: &[&str] = &["httpd", "-f", "-p", "8080"];

/// The median (the upper one for an even count); NaN-free durations only.
pub fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A free TCP port on 127.0.0.1 (free when asked; bind it soon).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A TaskDefinition with one `httpd` container (`command`, port 8080) and a Service of
/// `replicas` of it, both named `name`. `container_extra` and `service_extra` are further
/// lines of the container and of the service's spec.
pub fn httpd_service(
    name: &str,
    image: &str,
    command: &[&str],
    replicas: u32,
    container_extra: &[&str],
    service_extra: &[&str],
) -> String {
    let command = serde_json::to_string(command).expect("strings serialize");
    let lines = |indent: &str, extra: &[&str]| -> String {
        extra.iter().map(|l| format!("{indent}{l}\n")).collect()
    };
    format!(
        r#"apiVersion: berth.dev/v1
kind: TaskDefinition
metadata: {{name: {name}}}
spec:
  containerDefinitions:
    - name: httpd
      image: {image}
      command: {command}
      cpu: 10
      memory: 16
      portMappings: [{{containerPort: 8080}}]
{}---
apiVersion: berth.dev/v1
kind: Service
metadata: {{name: {name}}}
spec:
  taskDefinition: {name}
  desiredCount: {replicas}
{}"#,
        lines("      ", container_extra),
        lines("  ", service_extra)
    )
}

/// A FAKE ContainerInstance record (no agent, no Docker) in the `default` cluster on
/// 127.0.0.1: ACTIVE, connected, with `cpu` units and `memory` MiB registered and remaining.
pub fn fake_instance(id: &str, cpu: u32, memory: u32) -> berth_core::model::ContainerInstance {
    use berth_core::model::{ContainerInstance, ContainerInstanceSpec, Kind, Resources};
    let mut ci = ContainerInstance::new(
        Kind::ContainerInstance,
        id,
        ContainerInstanceSpec {
            cluster: "default".into(),
            host_ip: "127.0.0.1".into(),
            ..Default::default()
        },
    );
    ci.metadata.uid = berth_core::model::new_id();
    ci.metadata.created_at = Some(berth_core::model::now());
    ci.status.status = "ACTIVE".into();
    ci.status.agent_connected = true;
    ci.status.registered_at = ci.metadata.created_at;
    ci.status.registered_resources = Resources {
        cpu,
        memory,
        ports: vec![],
    };
    ci.status.remaining_resources = ci.status.registered_resources.clone();
    ci
}

/// Parse `text` as the manifest file `file`.
pub fn parse_yaml(text: &str, file: &str) -> anyhow::Result<Vec<berth_core::manifest::Document>> {
    berth_core::manifest::parse_str(text, file)
        .map_err(|e| anyhow::anyhow!("bench manifest: {e:?}"))
}

/// Apply parsed documents to `store`.
pub async fn apply_docs(
    store: &DynStore,
    docs: &[berth_core::manifest::Document],
) -> anyhow::Result<()> {
    berth_core::apply::apply(&**store, docs, &berth_core::apply::ApplyOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Parse `text` as the manifest file `file` and apply it to `store`.
pub async fn apply_yaml(store: &DynStore, text: &str, file: &str) -> anyhow::Result<()> {
    apply_docs(store, &parse_yaml(text, file)?).await
}

/// A container created straight through the Docker API: what a benchmark compares berth with.
#[derive(Default)]
pub struct RawContainer {
    pub image: String,
    pub cmd: Vec<String>,
    /// A container port published on an ephemeral host port (as berth's bridge mode does).
    pub publish: Option<u16>,
    pub labels: HashMap<String, String>,
    /// A `CMD-SHELL` health check every second (1 s timeout, 2 retries).
    pub health_cmd: Option<String>,
    pub memory_bytes: Option<i64>,
}

impl RawContainer {
    pub fn new(image: &str, cmd: &[&str]) -> RawContainer {
        RawContainer {
            image: image.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn body(&self) -> bollard::models::ContainerCreateBody {
        let port = self.publish.map(|p| format!("{p}/tcp"));
        bollard::models::ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(self.cmd.clone()),
            exposed_ports: port.clone().map(|p| [(p, HashMap::new())].into()),
            labels: (!self.labels.is_empty()).then(|| self.labels.clone()),
            healthcheck: self
                .health_cmd
                .as_ref()
                .map(|c| bollard::models::HealthConfig {
                    test: Some(vec!["CMD-SHELL".into(), c.clone()]),
                    interval: Some(1_000_000_000),
                    timeout: Some(1_000_000_000),
                    retries: Some(2),
                    ..Default::default()
                }),
            host_config: Some(bollard::models::HostConfig {
                port_bindings: port.map(|p| {
                    [(
                        p,
                        Some(vec![bollard::models::PortBinding {
                            host_ip: Some("0.0.0.0".into()),
                            host_port: Some(String::new()),
                        }]),
                    )]
                    .into()
                }),
                memory: self.memory_bytes,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Create the container as `name` and start it; its id.
    pub async fn create_start(&self, docker: &Docker, name: &str) -> anyhow::Result<String> {
        let id = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_string()),
                    platform: String::new(),
                }),
                self.body(),
            )
            .await?
            .id;
        docker
            .start_container(&id, None::<StartContainerOptions>)
            .await?;
        Ok(id)
    }
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
        // The raw side's `docker run` pulls only a missing image; so does this agent. (ECS's
        // default behaviour asks the registry on every start: a round trip the comparison
        // would charge to berth's path, not Docker's.)
        agent.pull.behavior = berth_core::agent::pull::PullBehavior::PreferCached;
        let node = node::start(
            store.clone(),
            NodeConfig {
                api: None,
                controllers: true,
                agent: Some(agent),
                manifests: None,
                control: Default::default(),
                secrets_key: None,
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

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0) // USER_HZ is 100 on Linux
}

pub fn dockerd_pid() -> Option<String> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().to_string_lossy().to_string();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "dockerd").then_some(pid)
    })
}
