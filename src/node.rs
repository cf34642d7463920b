//! Assembling a berth process: API server, control-plane controllers and (optionally) an
//! agent, all sharing one store. `berth up` runs all three; `server` and `agent` split them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use berth_core::agent::AgentConfig;
use berth_core::api::{self, ApiState};
use berth_core::auth::secrets_key::SecretsKey;
use berth_core::model::{keys, Cluster, ClusterSpec, Kind};
use berth_core::objects;
use berth_core::runtime::Registry;
use berth_core::store::election::{self, ElectionConfig, Leadership};
use berth_core::store::{DynStore, Store};

pub struct NodeConfig {
    /// Where the API listens (`None`: no API, e.g. a plain agent).
    pub api: Option<SocketAddr>,
    /// Run the control-plane controllers.
    pub controllers: bool,
    pub agent: Option<AgentConfig>,
    /// A manifest folder to watch and keep applied (the GitOps source controller).
    pub manifests: Option<berth_core::gitops::SourceConfig>,
    /// Settings of the control-plane controllers.
    pub control: berth_controllers::ControlConfig,
    /// The data key of Secrets (a control plane's; `None` on a plain agent): the API and the
    /// manifest folder seal with it, the in-process agent opens its tasks' secrets with it.
    pub secrets_key: Option<Arc<SecretsKey>>,
}

pub struct Node {
    pub api_addr: Option<SocketAddr>,
    pub registry: Registry,
    pub leadership: Leadership,
    /// Why a part of the node stopped it (e.g. the agent's instance id is taken).
    pub failure: Arc<Mutex<Option<String>>>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Ask every part to stop and wait for them.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    pub fn token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Wait until the node stops by itself or `shutdown` is cancelled.
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The `default` cluster always exists, as in ECS.
pub async fn ensure_default_cluster(store: &dyn Store) -> anyhow::Result<()> {
    let key = keys::key(Kind::Cluster, "default");
    if store.get(&key).await?.is_some() {
        return Ok(());
    }
    let mut c = Cluster::new(Kind::Cluster, "default", ClusterSpec::default());
    c.metadata.uid = berth_core::model::new_id();
    c.metadata.created_at = Some(berth_core::model::now());
    c.status.status = "ACTIVE".into();
    match objects::put_cas(store, &key, &c).await {
        Ok(_) | Err(objects::ObjectError::Conflict(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub async fn start(store: DynStore, cfg: NodeConfig) -> anyhow::Result<Node> {
    let shutdown = CancellationToken::new();
    let registry = Registry::default();
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let mut tasks = Vec::new();
    if cfg.controllers {
        ensure_default_cluster(&*store).await?;
    }
    if let Some(mut src) = cfg.manifests.clone() {
        src.secrets = cfg.secrets_key.clone();
        // Watch the folder from now on; wait for the first sync so the node starts applied (a
        // broken folder is reported in the source's status, not fatal).
        // What a sync writes is audited as the folder's (not an API call).
        let who = format!(
            "gitops:{}",
            src.name
                .clone()
                .unwrap_or_else(|| src.dir.display().to_string())
        );
        let audited: DynStore = Arc::new(berth_core::audit::AuditedStore::new(
            store.clone(),
            berth_core::audit::AuditLog::new(store.clone()),
            &who,
        ));
        let (task, first_sync) = berth_core::gitops::start(
            audited,
            src,
            berth_core::gitops::Timing::default(),
            shutdown.clone(),
        )
        .await?;
        tasks.push(task);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(60), first_sync).await;
    }
    let mut api_addr = None;
    let mut listener = None;
    if let Some(addr) = cfg.api {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        api_addr = Some(l.local_addr()?);
        listener = Some(l);
    }
    // A candidate id operators can recognise: host, API address, process.
    let leadership = Leadership::new(&format!(
        "{}/{}/{}",
        hostname(),
        api_addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into()),
        std::process::id()
    ));
    if let Some(listener) = listener {
        let state = ApiState {
            store: store.clone(),
            registry: registry.clone(),
            leadership: leadership.clone(),
            secrets: cfg.secrets_key.clone(),
        };
        let s = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = api::serve(listener, state, s).await {
                tracing::error!(error = %e, "API server failed");
            }
        }));
    }
    if cfg.controllers {
        // One shared cache for every controller: the process watches the store once, and the
        // cache outlives leadership terms. Controllers run only on the elected leader, every
        // write fenced by its term; on the embedded store this process is the only candidate
        // and leads at once.
        let cache = berth_controllers::cache(store.clone());
        // Registered up front so a standby control plane lists what it would run.
        drop(berth_controllers::all_with(
            store.clone(),
            &cache,
            &registry,
            &cfg.control,
        ));
        let reg = registry.clone();
        let control = cfg.control.clone();
        let audit = berth_core::audit::AuditLog::new(store.clone());
        let me = leadership.get().me;
        tasks.push(tokio::spawn(election::run(
            store.clone(),
            leadership.clone(),
            ElectionConfig::default(),
            shutdown.clone(),
            move |fenced, term| {
                // Every controller write is in the audit trail, as made by the leader.
                let audited: DynStore = Arc::new(berth_core::audit::AuditedStore::new(
                    fenced,
                    audit.clone(),
                    &format!("controllers@{me}"),
                ));
                let controllers = berth_controllers::all_with(audited, &cache, &reg, &control);
                async move {
                    let running: Vec<_> = controllers
                        .into_iter()
                        .map(|c| tokio::spawn(c.run(term.clone())))
                        .collect();
                    for r in running {
                        let _ = r.await;
                    }
                }
            },
        )));
        // API and load balancer run on every control plane (`berth lb` runs more of them).
        tasks.push(tokio::spawn(berth_core::lb::run(
            store.clone(),
            berth_core::lb::LbConfig::default(),
            shutdown.clone(),
        )));
    }
    if let Some(mut agent_cfg) = cfg.agent {
        // The in-process agent of a control plane opens its tasks' secrets itself.
        if let berth_core::agent::secrets::Secrets::Local(k @ None) = &mut agent_cfg.secrets {
            *k = cfg.secrets_key.clone();
        }
        berth_core::apply::safety::protect(&agent_cfg.data_dir);
        let docker = berth_core::agent::docker::connect().await?;
        tasks.push(tokio::spawn(
            berth_core::agent::credentials_endpoint::serve_for_agent(
                store.clone(),
                docker.clone(),
                agent_cfg.instance_id.clone(),
                agent_cfg.secrets.clone(),
                shutdown.clone(),
            ),
        ));
        let s = shutdown.clone();
        let st = store.clone();
        let reg = registry.clone();
        let failed = failure.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = berth_core::agent::run(st, docker, agent_cfg, reg, s.clone()).await {
                let e = format!("agent failed: {e:#}");
                tracing::error!("{e}");
                *failed.lock().unwrap() = Some(e);
                s.cancel();
            }
        }));
    }
    Ok(Node {
        api_addr,
        registry,
        leadership,
        failure,
        shutdown,
        tasks,
    })
}

/// This host's name (`local` when it has none).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local".into())
}
