//! The agent (one per container instance): registers the instance, holds its lease, runs the
//! tasks assigned to it through Docker, and re-adopts its labelled containers after a restart.

pub mod credentials_endpoint;
pub mod docker;
pub mod exit_watch;
pub mod hook;
pub mod join;
pub mod logs;
pub mod metadata;
pub mod pull;
pub mod runner;
pub mod secrets;
pub mod simulated;
pub mod stats;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bollard::query_parameters::EventsOptions;
use bollard::Docker;
use futures::StreamExt;
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::model::{keys, ContainerInstance, ContainerInstanceSpec, Kind, Resources, Task};
use crate::objects::{self, ObjectError};
use crate::runtime::queue::Queue;
use crate::runtime::{Controller, ControllerOptions, Registry, Trigger};
use crate::store::{Compare, DynStore, Op, StoreError, Txn};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub instance_id: String,
    pub cluster: String,
    /// CPU units to offer (default: cores × 1024).
    pub cpu: Option<u32>,
    /// MiB to offer (default: the Docker host's memory).
    pub memory: Option<u32>,
    /// Address clients use to reach published host ports.
    pub host_ip: String,
    pub attributes: BTreeMap<String, String>,
    pub lease_ttl: Duration,
    /// Image for awsvpc pause containers (berth's own busybox image by default).
    pub pause_image: String,
    /// Where the agent keeps container logs (`<dataDir>/logs`).
    pub data_dir: std::path::PathBuf,
    /// How often containers' CPU/memory are sampled into the store.
    pub stats_interval: Duration,
    /// Where the agent serves container logs (advertised on its instance record).
    pub logs_addr: std::net::SocketAddr,
    /// Stop this instance's tasks when the lease could not be renewed for this long (the
    /// cluster's lost-instance grace).
    pub self_fence_after: Duration,
    /// Where task tokens and role credentials come from: the server key in the store
    /// (in-process agent) or the API server (a joined agent).
    pub secrets: secrets::Secrets,
    /// Image pulls: behaviour (ECS_IMAGE_PULL_BEHAVIOR) and timeout.
    pub pull: pull::PullConfig,
}

impl AgentConfig {
    pub fn new(instance_id: &str, cluster: &str) -> Self {
        AgentConfig {
            instance_id: instance_id.into(),
            cluster: cluster.into(),
            cpu: None,
            memory: None,
            host_ip: "127.0.0.1".into(),
            attributes: BTreeMap::new(),
            lease_ttl: Duration::from_secs(10),
            pause_image: "local/busybox:1".into(),
            data_dir: std::env::temp_dir().join(format!("berth-agent-{instance_id}")),
            stats_interval: stats::DEFAULT_INTERVAL,
            logs_addr: ([127, 0, 0, 1], 0).into(),
            self_fence_after: Duration::from_secs(300),
            secrets: secrets::Secrets::default(),
            pull: pull::PullConfig::default(),
        }
    }
}

/// Create or refresh this instance's record (keeping what the scheduler wrote).
async fn register(store: &DynStore, docker: &Docker, cfg: &AgentConfig) -> anyhow::Result<()> {
    let info = docker.info().await?;
    let version = docker
        .version()
        .await
        .ok()
        .and_then(|v| v.version)
        .unwrap_or_default();
    let cpu = cfg
        .cpu
        .unwrap_or_else(|| info.ncpu.unwrap_or(1).max(1) as u32 * 1024);
    let memory = cfg
        .memory
        .unwrap_or_else(|| (info.mem_total.unwrap_or(0) / (1024 * 1024)) as u32);
    let key = keys::key(Kind::ContainerInstance, &cfg.instance_id);
    for _ in 0..20 {
        let existing: Option<ContainerInstance> = objects::get(&**store, &key).await?;
        let mut inst = existing.clone().unwrap_or_else(|| {
            let mut i = ContainerInstance::new(
                Kind::ContainerInstance,
                &cfg.instance_id,
                ContainerInstanceSpec::default(),
            );
            i.metadata.uid = crate::model::new_id();
            i.metadata.created_at = Some(crate::model::now());
            i.status.status = "ACTIVE".into();
            i.status.registered_at = Some(crate::model::now());
            i
        });
        inst.spec.cluster = cfg.cluster.clone();
        inst.spec.host_ip = cfg.host_ip.clone();
        // Its configured attributes, plus the custom ones put through ECS (PutAttributes).
        let custom: Vec<String> = inst
            .metadata
            .annotations
            .get(crate::model::CUSTOM_ATTRIBUTES_ANNOTATION)
            .map(|s| s.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        let mut attributes = cfg.attributes.clone();
        for k in custom {
            if let Some(v) = inst.spec.attributes.get(&k) {
                attributes.entry(k).or_insert_with(|| v.clone());
            }
        }
        inst.spec.attributes = attributes;
        inst.status.registered_resources = Resources {
            cpu,
            memory,
            ports: vec![],
        };
        if existing.is_none() {
            inst.status.remaining_resources = inst.status.registered_resources.clone();
        }
        inst.status.docker_version = version.clone();
        inst.status.agent_connected = true;
        if existing.as_ref() == Some(&inst) {
            return Ok(());
        }
        match objects::put_cas(&**store, &key, &inst).await {
            Ok(_) => return Ok(()),
            Err(ObjectError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!(
        "could not register instance {}: too many conflicts",
        cfg.instance_id
    )
}

/// What an instance's lease key holds: which agent process holds the instance.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseHolder {
    pub holder: String,
}

/// Why the instance lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "instance id {instance:?} is held by another live agent ({holder}); choose another \
         --instance-id, or stop that agent and wait for its lease to lapse"
    )]
    Taken { instance: String, holder: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
}

/// This agent's holder id: random, kept in its data directory so a restarted agent takes its
/// own still-live lease back at once, while a second process claiming the id is refused.
fn holder_id(cfg: &AgentConfig) -> anyhow::Result<String> {
    let path = cfg.data_dir.join("holder-id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        if !s.trim().is_empty() {
            return Ok(s.trim().to_string());
        }
    }
    std::fs::create_dir_all(&cfg.data_dir)?;
    let id = format!("{}-{}", cfg.instance_id, crate::model::new_id());
    std::fs::write(&path, &id)?;
    Ok(id)
}

/// Take the instance's lease key: absent, or held by this very agent before a restart.
async fn acquire(
    store: &DynStore,
    instance: &str,
    holder: &str,
    ttl: Duration,
) -> Result<i64, LeaseError> {
    let key = keys::instance_lease_key(instance);
    let value = serde_json::to_vec(&LeaseHolder {
        holder: holder.to_string(),
    })
    .expect("lease holder serialises");
    loop {
        let existing = store.get(&key).await?;
        let fence = match &existing {
            None => Compare::absent(&key),
            Some(kv) => {
                let other = serde_json::from_slice::<LeaseHolder>(&kv.value)
                    .map(|h| h.holder)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&kv.value).into_owned());
                if other != holder {
                    return Err(LeaseError::Taken {
                        instance: instance.to_string(),
                        holder: other,
                    });
                }
                Compare::mod_revision(&key, kv.mod_revision)
            }
        };
        let l = store.lease_grant(ttl).await?;
        let res = store
            .txn(
                Txn::new()
                    .when(fence)
                    .and_then(Op::put_with_lease(&key, value.clone(), l)),
            )
            .await?;
        if res.succeeded {
            return Ok(l);
        }
        let _ = store.lease_revoke(l).await;
    }
}

/// A store call on the lease path, bounded: a partitioned store must not stall the clock
/// that decides self-fencing.
async fn bounded<T>(
    d: Duration,
    f: impl std::future::Future<Output = Result<T, LeaseError>>,
) -> Result<T, LeaseError> {
    tokio::time::timeout(d, f)
        .await
        .unwrap_or(Err(LeaseError::Timeout(d)))
}

/// Hold the instance's lease key while the agent lives; re-acquire it if it expired. An agent
/// that cannot renew for `self_fence_after` stops its own containers gracefully (the control
/// plane replaces them elsewhere after the same grace): never two live copies of a task.
async fn hold_lease(
    store: DynStore,
    cfg: AgentConfig,
    holder: String,
    first: i64,
    runner: Arc<runner::TaskRunner>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut lease = Some(first);
    let mut last_renewed = tokio::time::Instant::now();
    let call = cfg.lease_ttl / 2;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(cfg.lease_ttl / 4) => {}
        }
        match lease {
            None => match bounded(
                call,
                acquire(&store, &cfg.instance_id, &holder, cfg.lease_ttl),
            )
            .await
            {
                Ok(l) => {
                    lease = Some(l);
                    last_renewed = tokio::time::Instant::now();
                    tracing::info!(instance = %cfg.instance_id, "instance lease re-acquired");
                }
                Err(e @ LeaseError::Taken { .. }) => {
                    runner.fence().await;
                    shutdown.cancel();
                    return Err(e.into());
                }
                Err(e) => tracing::warn!(error = %e, "could not acquire the instance lease"),
            },
            Some(l) => match bounded(call, async { Ok(store.lease_keep_alive(l).await?) }).await {
                Ok(()) => last_renewed = tokio::time::Instant::now(),
                Err(LeaseError::Store(StoreError::LeaseNotFound(_))) => {
                    tracing::warn!(instance = %cfg.instance_id, "instance lease expired; re-registering");
                    lease = None;
                }
                Err(e) => tracing::warn!(error = %e, "lease keep-alive failed"),
            },
        }
        if last_renewed.elapsed() >= cfg.self_fence_after {
            if !runner.is_fenced() {
                tracing::error!(
                    instance = %cfg.instance_id,
                    after = ?cfg.self_fence_after,
                    "cannot renew the instance lease: stopping this instance's tasks (self-fencing)"
                );
                runner.fence().await;
            }
        } else if runner.is_fenced() && lease.is_some() {
            tracing::info!(instance = %cfg.instance_id, "lease held again; running tasks again");
            runner.unfence();
        }
    }
    if let Some(l) = lease {
        let _ = store.lease_revoke(l).await;
    }
    Ok(())
}

/// Enqueue the task of every container event of this agent: Docker tells of a death within
/// milliseconds, long before any resync.
async fn follow_docker_events(
    docker: Docker,
    store: DynStore,
    instance: String,
    queue: Arc<Queue>,
    runner: Arc<runner::TaskRunner>,
    shutdown: CancellationToken,
) {
    loop {
        let mut filters = HashMap::new();
        filters.insert("type".to_string(), vec!["container".to_string()]);
        filters.insert(
            "label".to_string(),
            vec![format!("{}={instance}", docker::LABEL_INSTANCE)],
        );
        let mut events = docker.events(Some(EventsOptions {
            filters: Some(filters),
            ..Default::default()
        }));
        // Anything missed while not listening is caught by a full pass.
        if let Ok(ids) = crate::runtime::Reconciler::resync_keys(&*runner).await {
            ids.iter().for_each(|id| queue.add(id));
        }
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = events.next() => ev,
            };
            match ev {
                Some(Ok(ev)) => {
                    let action = ev.action.as_deref().unwrap_or("");
                    // What changes a task's state: an exit (every stop and kill that ends a
                    // container ends in `die`), a removal, an OOM kill, a health change. Not
                    // `start`: only this agent starts containers, and it records each start
                    // itself; an outside `docker start` is found by the resync.
                    let interesting = matches!(action, "die" | "destroy" | "oom")
                        || action.starts_with("health_status");
                    if !interesting {
                        continue;
                    }
                    if let Some(t) = ev
                        .actor
                        .as_ref()
                        .and_then(|a| a.attributes.as_ref())
                        .and_then(|a| a.get(docker::LABEL_TASK))
                    {
                        queue.add(t);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "docker events stream failed; reconnecting");
                    break;
                }
                None => break,
            }
        }
        let _ = &store;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Mark tasks stopping as their essential containers' processes exit (see `exit_watch`).
async fn follow_exits(
    mut exits: tokio::sync::mpsc::UnboundedReceiver<exit_watch::Exited>,
    runner: Arc<runner::TaskRunner>,
    shutdown: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = exits.recv() => ev,
        };
        let Some(ev) = ev else { return };
        if let Err(e) = runner.early_exit(&ev).await {
            // Docker's die event still stops the task.
            tracing::debug!(task = %ev.task, error = %e, "early exit not recorded");
        }
    }
}

/// Run the agent until `shutdown`.
pub async fn run(
    store: DynStore,
    docker: Docker,
    cfg: AgentConfig,
    registry: Registry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // The lease first: a second claimant of a live instance id is refused before it writes.
    let holder = holder_id(&cfg)?;
    let first = acquire(&store, &cfg.instance_id, &holder, cfg.lease_ttl).await?;
    register(&store, &docker, &cfg).await?;
    let metadata = metadata::start(
        store.clone(),
        docker.clone(),
        cfg.instance_id.clone(),
        cfg.secrets.clone(),
        shutdown.clone(),
    )
    .await;
    let (exit_watch, exits) = exit_watch::ExitWatch::new();
    let runner = Arc::new(
        runner::TaskRunner::new(
            store.clone(),
            docker.clone(),
            &cfg.instance_id,
            &cfg.pause_image,
            cfg.secrets.clone(),
        )
        .with_pull(cfg.pull.clone())
        .with_metadata(metadata.clone())
        .with_exit_watch(exit_watch),
    );
    let early = tokio::spawn(follow_exits(exits, runner.clone(), shutdown.clone()));
    let lease = tokio::spawn(hold_lease(
        store.clone(),
        cfg.clone(),
        holder,
        first,
        runner.clone(),
        shutdown.clone(),
    ));
    let me = cfg.instance_id.clone();
    let own = runner.clone();
    let mine = move |kv: &crate::store::KeyValue| -> Vec<String> {
        match serde_json::from_slice::<Task>(&kv.value) {
            Ok(t)
                if t.status.container_instance.as_deref() == Some(me.as_str())
                    && !own.is_own_write(&t.metadata.name, kv.mod_revision) =>
            {
                vec![t.metadata.name]
            }
            _ => vec![],
        }
    };
    let controller = Controller::new(
        &format!("agent/{}", cfg.instance_id),
        store.clone(),
        runner.clone(),
        ControllerOptions {
            // Docker serialises much of its work; a few parallel calls is the sweet spot.
            workers: 8,
            resync: Duration::from_secs(20),
            ..Default::default()
        },
    )
    .trigger(Trigger::new(keys::prefix(Kind::Task), mine))
    .register(&registry);
    let stats = tokio::spawn(stats::run(
        store.clone(),
        docker.clone(),
        cfg.instance_id.clone(),
        cfg.stats_interval,
        shutdown.clone(),
    ));
    let logs = tokio::spawn(logs::run(
        store.clone(),
        docker.clone(),
        cfg.instance_id.clone(),
        cfg.host_ip.clone(),
        cfg.logs_addr,
        logs::LogConfig::new(cfg.data_dir.join("logs")),
        shutdown.clone(),
    ));
    let events = tokio::spawn(follow_docker_events(
        docker.clone(),
        store.clone(),
        cfg.instance_id.clone(),
        controller.queue(),
        runner,
        shutdown.clone(),
    ));
    controller.run(shutdown.clone()).await;
    let _ = events.await;
    let _ = early.await;
    let _ = stats.await;
    let _ = logs.await;
    if let Some(m) = &metadata {
        m.uninstall().await;
    }
    lease.await??;
    Ok(())
}
