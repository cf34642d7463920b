//! Translating ECS container definitions into Docker API calls (bollard).

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, HealthConfig, HostConfig,
    PortBinding,
};
use bollard::query_parameters::{
    ListContainersOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;

use crate::model::{
    ContainerDefinition, HealthStatus, NetworkBinding, NetworkMode, Task, TaskDefinition,
};

pub const LABEL_TASK: &str = "berth.task";
pub const LABEL_CLUSTER: &str = "berth.cluster";
pub const LABEL_CONTAINER: &str = "berth.container";
pub const LABEL_SERVICE: &str = "berth.service";
/// Which agent owns the container: several agents may share one Docker daemon.
pub const LABEL_INSTANCE: &str = "berth.instance";

pub async fn connect() -> anyhow::Result<Docker> {
    let d = Docker::connect_with_local_defaults()?;
    Ok(d.negotiate_version().await?)
}

/// Deterministic name: a second create for the same task container fails with 409 instead of
/// making a duplicate.
pub fn container_name(task_id: &str, container: &str) -> String {
    format!("berth-{task_id}-{container}")
}

pub fn labels(task: &Task, c: &ContainerDefinition, instance: &str) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = c.docker_labels.clone().into_iter().collect();
    l.insert(LABEL_TASK.into(), task.metadata.name.clone());
    l.insert(LABEL_CLUSTER.into(), task.spec.cluster.clone());
    l.insert(LABEL_CONTAINER.into(), c.name.clone());
    l.insert(LABEL_INSTANCE.into(), instance.into());
    if let Some(s) = task.service_name() {
        l.insert(LABEL_SERVICE.into(), s.into());
    }
    l
}

const SECOND_NS: i64 = 1_000_000_000;

/// The Docker create body for one container of a task.
pub fn create_body(
    task: &Task,
    td: &TaskDefinition,
    c: &ContainerDefinition,
    instance: &str,
    extra_env: &[(String, String)],
) -> ContainerCreateBody {
    let mode = td.spec.network_mode();
    let mut exposed: HashMap<String, HashMap<(), ()>> = HashMap::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &c.port_mappings {
        let key = format!(
            "{}/{}",
            p.container_port,
            p.protocol.unwrap_or_default().as_str()
        );
        exposed.insert(key.clone(), HashMap::new());
        if mode == NetworkMode::Bridge {
            // Publishing needs the port in exposed_ports too (DESIGN.md §9).
            let host_port = match p.host_port {
                Some(h) if h != 0 => h.to_string(),
                _ => String::new(),
            };
            bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: Some("0.0.0.0".into()),
                    host_port: Some(host_port),
                }]),
            );
        }
    }
    let mut env: Vec<String> = c
        .environment
        .iter()
        .map(|e| format!("{}={}", e.name, e.value))
        .collect();
    env.extend(extra_env.iter().map(|(k, v)| format!("{k}={v}")));
    let healthcheck = c.health_check.as_ref().map(|h| HealthConfig {
        test: Some(h.command.clone()),
        interval: Some(h.interval.unwrap_or(30) as i64 * SECOND_NS),
        timeout: Some(h.timeout.unwrap_or(5) as i64 * SECOND_NS),
        retries: Some(h.retries.unwrap_or(3) as i64),
        start_period: Some(h.start_period.unwrap_or(0) as i64 * SECOND_NS),
        start_interval: None,
    });
    let network_mode = match mode {
        NetworkMode::Bridge => "bridge",
        NetworkMode::Host => "host",
        NetworkMode::None => "none",
        // awsvpc joins the task's pause container namespace; set by the runner.
        NetworkMode::Awsvpc => "bridge",
    };
    let mib = 1024 * 1024;
    let host_config = HostConfig {
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        network_mode: Some(network_mode.into()),
        // ECS: container cpu units become cpu shares (Docker's minimum is 2).
        cpu_shares: (c.cpu > 0).then(|| c.cpu.max(2) as i64),
        memory: c.memory.map(|m| m as i64 * mib),
        memory_reservation: c.memory_reservation.map(|m| m as i64 * mib),
        privileged: c.privileged,
        readonly_rootfs: c.readonly_root_filesystem,
        binds: binds(td, c),
        init: None,
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(c.image.clone()),
        cmd: (!c.command.is_empty()).then(|| c.command.clone()),
        entrypoint: (!c.entry_point.is_empty()).then(|| c.entry_point.clone()),
        env: Some(env),
        user: c.user.clone(),
        working_dir: c.working_directory.clone(),
        hostname: c.hostname.clone(),
        labels: Some(labels(task, c, instance)),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck,
        stop_timeout: Some(c.stop_timeout_secs() as i64),
        host_config: Some(host_config),
        ..Default::default()
    }
}

fn binds(td: &TaskDefinition, c: &ContainerDefinition) -> Option<Vec<String>> {
    let v: Vec<String> = c
        .mount_points
        .iter()
        .filter_map(|m| {
            let vol = td.spec.volumes.iter().find(|v| v.name == m.source_volume)?;
            let src = vol
                .host
                .as_ref()
                .and_then(|h| h.source_path.clone())
                .unwrap_or_else(|| vol.name.clone());
            let ro = if m.read_only { ":ro" } else { "" };
            Some(format!("{src}:{}{ro}", m.container_path))
        })
        .collect();
    (!v.is_empty()).then_some(v)
}

/// All containers this agent owns (running or not).
pub async fn list_owned(docker: &Docker, instance: &str) -> anyhow::Result<Vec<ContainerSummary>> {
    let mut filters = HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![format!("{LABEL_INSTANCE}={instance}")],
    );
    Ok(docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await?)
}

/// Containers of one task owned by this agent.
pub async fn list_task(
    docker: &Docker,
    instance: &str,
    task_id: &str,
) -> anyhow::Result<Vec<ContainerSummary>> {
    let mut filters = HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![
            format!("{LABEL_INSTANCE}={instance}"),
            format!("{LABEL_TASK}={task_id}"),
        ],
    );
    Ok(docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await?)
}

/// SIGTERM, then SIGKILL after `timeout_secs` (Docker's stop does exactly this).
pub async fn stop(docker: &Docker, id: &str, timeout_secs: u32) -> anyhow::Result<()> {
    match docker
        .stop_container(
            id,
            Some(StopContainerOptions {
                t: Some(timeout_secs as i32),
                signal: None,
            }),
        )
        .await
    {
        Ok(()) => Ok(()),
        // 304: already stopped; 404: already gone.
        Err(bollard::errors::Error::DockerResponseServerError { status_code, .. })
            if status_code == 304 || status_code == 404 =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn remove(docker: &Docker, id: &str) -> anyhow::Result<()> {
    match docker
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                link: false,
            }),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError { status_code, .. })
            if status_code == 404 || status_code == 409 =>
        {
            // 409: removal already in progress.
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

pub fn is_status(e: &bollard::errors::Error, code: u16) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code, .. } if *status_code == code)
}

/// What the agent needs from `docker inspect`.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub id: String,
    /// created, running, exited, dead, paused, restarting, removing.
    pub state: String,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    pub oom_killed: bool,
    pub health: HealthStatus,
    pub bindings: Vec<NetworkBinding>,
    pub created: Option<chrono::DateTime<chrono::Utc>>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Observed {
    pub fn running(&self) -> bool {
        self.state == "running" || self.state == "restarting" || self.state == "paused"
    }
    pub fn exited(&self) -> bool {
        self.state == "exited" || self.state == "dead"
    }
}

pub fn observe(i: &ContainerInspectResponse) -> Observed {
    let st = i.state.as_ref();
    let state = st
        .and_then(|s| s.status)
        .map(|s| s.to_string())
        .unwrap_or_default();
    let health = match st
        .and_then(|s| s.health.as_ref())
        .and_then(|h| h.status)
        .map(|s| s.to_string())
        .as_deref()
    {
        Some("healthy") => HealthStatus::Healthy,
        Some("unhealthy") => HealthStatus::Unhealthy,
        _ => HealthStatus::Unknown,
    };
    let mut bindings = Vec::new();
    if let Some(ports) = i.network_settings.as_ref().and_then(|n| n.ports.as_ref()) {
        for (k, v) in ports {
            let (port, proto) = k.split_once('/').unwrap_or((k.as_str(), "tcp"));
            let Ok(container_port) = port.parse::<u16>() else {
                continue;
            };
            for b in v.iter().flatten() {
                // Docker lists an IPv4 and an IPv6 binding for one port; keep IPv4.
                let ip = b.host_ip.clone().unwrap_or_default();
                if ip.contains(':') {
                    continue;
                }
                if let Some(hp) = b.host_port.as_deref().and_then(|p| p.parse::<u16>().ok()) {
                    bindings.push(NetworkBinding {
                        container_port,
                        host_port: hp,
                        bind_ip: if ip.is_empty() { "0.0.0.0".into() } else { ip },
                        protocol: proto.to_string(),
                    });
                }
            }
        }
    }
    bindings.sort_by_key(|b| (b.container_port, b.host_port));
    // Docker reports "0001-01-01T00:00:00Z" for never; treat years before 2000 as absent.
    let time = |s: Option<&String>| {
        s.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            .filter(|t| chrono::Datelike::year(t) >= 2000)
    };
    Observed {
        created: time(i.created.as_ref()),
        started_at: time(st.and_then(|s| s.started_at.as_ref())),
        finished_at: time(st.and_then(|s| s.finished_at.as_ref())),
        id: i.id.clone().unwrap_or_default(),
        exit_code: st
            .and_then(|s| s.exit_code)
            .filter(|_| state == "exited" || state == "dead"),
        error: st.and_then(|s| s.error.clone()).filter(|e| !e.is_empty()),
        oom_killed: st.and_then(|s| s.oom_killed).unwrap_or(false),
        health,
        state,
        bindings,
    }
}
