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

/// Container name (label `berth.container`) of an awsvpc task's namespace owner.
pub const PAUSE: &str = "_pause";
/// The berth-managed network awsvpc tasks get their own address on. Inter-container traffic is
/// off, so a task cannot reach another task's ports; the host (and its load balancer) can.
pub const AWSVPC_NETWORK: &str = "berth-awsvpc";

/// The awsvpc network's id, creating the network if needed. Serialised in-process, and
/// duplicates (dockerd may create two networks of one name under a race between agents) are
/// removed so the name stays unambiguous.
async fn ensure_awsvpc_network(docker: &Docker) -> anyhow::Result<String> {
    use bollard::models::NetworkCreateRequest;
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _guard = LOCK.lock().await;
    let mut filters = HashMap::new();
    filters.insert("name".to_string(), vec![AWSVPC_NETWORK.to_string()]);
    let mut found: Vec<(String, String)> = docker
        .list_networks(Some(bollard::query_parameters::ListNetworksOptions {
            filters: Some(filters),
        }))
        .await?
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(AWSVPC_NETWORK))
        .filter_map(|n| Some((format!("{:?}", n.created), n.id?)))
        .collect();
    found.sort();
    if let Some((_, keep)) = found.first() {
        for (_, extra) in found.iter().skip(1) {
            let _ = docker.remove_network(extra).await;
        }
        return Ok(keep.clone());
    }
    let mut options = HashMap::new();
    options.insert(
        "com.docker.network.bridge.enable_icc".to_string(),
        "false".to_string(),
    );
    let req = NetworkCreateRequest {
        name: AWSVPC_NETWORK.into(),
        driver: Some("bridge".into()),
        options: Some(options),
        labels: Some([("berth.managed".to_string(), "true".to_string())].into()),
        ..Default::default()
    };
    Ok(docker.create_network(req).await?.id)
}

/// Start (or adopt) the pause container that owns an awsvpc task's network namespace.
pub async fn start_pause(
    docker: &Docker,
    task: &Task,
    instance: &str,
    image: &str,
) -> anyhow::Result<Observed> {
    let network = ensure_awsvpc_network(docker).await?;
    let name = container_name(&task.metadata.name, PAUSE);
    let mut labels = HashMap::new();
    labels.insert(LABEL_TASK.to_string(), task.metadata.name.clone());
    labels.insert(LABEL_CLUSTER.to_string(), task.spec.cluster.clone());
    labels.insert(LABEL_CONTAINER.to_string(), PAUSE.to_string());
    labels.insert(LABEL_INSTANCE.to_string(), instance.to_string());
    if let Some(s) = task.service_name() {
        labels.insert(LABEL_SERVICE.to_string(), s.to_string());
    }
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        // Exits promptly on SIGTERM (PID 1 ignores signals it does not handle).
        cmd: Some(vec![
            "sh".into(),
            "-c".into(),
            "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done".into(),
        ]),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(network),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = match docker
        .create_container(
            Some(bollard::query_parameters::CreateContainerOptions {
                name: Some(name.clone()),
                platform: String::new(),
            }),
            body,
        )
        .await
    {
        Ok(r) => r.id,
        Err(e) if is_status(&e, 409) => name.clone(),
        Err(e) => return Err(e.into()),
    };
    match docker
        .start_container(
            &id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
    {
        Ok(()) => {}
        Err(e) if is_status(&e, 304) => {}
        Err(e) => return Err(e.into()),
    }
    let i = docker
        .inspect_container(
            &id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await?;
    Ok(observe(&i))
}

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
            // Publishing needs the port in exposed_ports too (ARCHITECTURE.md, "Pitfalls").
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
        init: c
            .linux_parameters
            .as_ref()
            .and_then(|l| l.init_process_enabled),
        // Refused at apply/run time unless the cluster allows them (src/auth/safety.rs).
        pid_mode: td.spec.pid_mode.clone().filter(|m| m == "host"),
        ipc_mode: td
            .spec
            .ipc_mode
            .clone()
            .filter(|m| m == "host" || m == "none"),
        cap_add: c
            .linux_parameters
            .as_ref()
            .and_then(|l| l.capabilities.as_ref())
            .map(|k| k.add.clone())
            .filter(|v| !v.is_empty()),
        cap_drop: c
            .linux_parameters
            .as_ref()
            .and_then(|l| l.capabilities.as_ref())
            .map(|k| k.drop.clone())
            .filter(|v| !v.is_empty()),
        shm_size: c
            .linux_parameters
            .as_ref()
            .and_then(|l| l.shared_memory_size)
            .map(|m| m as i64 * mib),
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
            // The normalized path, exactly what the safety checks looked at (no `..` for the
            // kernel to resolve through a symlink).
            let src = vol
                .host
                .as_ref()
                .and_then(|h| h.source_path.as_deref())
                .map(crate::apply::safety::normalize)
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
    stop_within(docker, id, Some(timeout_secs as i32)).await
}

/// SIGTERM, then SIGKILL after the container's own stop timeout (set from its definition's
/// `stopTimeout` at creation).
pub async fn stop_graceful(docker: &Docker, id: &str) -> anyhow::Result<()> {
    stop_within(docker, id, None).await
}

async fn stop_within(docker: &Docker, id: &str, t: Option<i32>) -> anyhow::Result<()> {
    match docker
        .stop_container(id, Some(StopContainerOptions { t, signal: None }))
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
    /// Address on the awsvpc network, if attached.
    pub ip: Option<String>,
    pub created: Option<chrono::DateTime<chrono::Utc>>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The main process, while running (host PID namespace).
    pub pid: Option<i64>,
    /// Its addresses on every network it is attached to (none when it shares another
    /// container's namespace, as awsvpc members do the pause container's).
    pub addresses: Vec<String>,
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
    let ip = i
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|n| n.get(AWSVPC_NETWORK))
        .and_then(|e| e.ip_address.clone())
        .filter(|ip| !ip.is_empty());
    Observed {
        ip,
        created: time(i.created.as_ref()),
        started_at: time(st.and_then(|s| s.started_at.as_ref())),
        finished_at: time(st.and_then(|s| s.finished_at.as_ref())),
        id: i.id.clone().unwrap_or_default(),
        exit_code: st
            .and_then(|s| s.exit_code)
            .filter(|_| state == "exited" || state == "dead"),
        error: st.and_then(|s| s.error.clone()).filter(|e| !e.is_empty()),
        oom_killed: st.and_then(|s| s.oom_killed).unwrap_or(false),
        addresses: addresses(i),
        pid: st
            .and_then(|s| s.pid)
            .filter(|p| *p > 0 && (state == "running" || state == "paused")),
        health,
        state,
        bindings,
    }
}

/// The IPv4 addresses of a container on its networks.
pub fn addresses(i: &ContainerInspectResponse) -> Vec<String> {
    network_ips(
        i.network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref()),
    )
}

/// The addresses in a container's networks (of an inspect or of a list entry).
pub fn network_ips(
    networks: Option<&HashMap<String, bollard::models::EndpointSettings>>,
) -> Vec<String> {
    networks
        .map(|n| {
            n.values()
                .filter_map(|e| e.ip_address.clone())
                .filter(|ip| !ip.is_empty())
                .collect()
        })
        .unwrap_or_default()
}
