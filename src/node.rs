//! Assembling a berth process: API server, control-plane controllers and (optionally) an
//! agent, all sharing one store. `berth up` runs all three; `server` and `agent` split them.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use berth_core::agent::AgentConfig;
use berth_core::api::{self, ApiState};
use berth_core::model::{keys, Cluster, ClusterSpec, Kind};
use berth_core::objects;
use berth_core::runtime::Registry;
use berth_core::store::{DynStore, Store};

pub struct NodeConfig {
    /// Where the API listens (`None`: no API, e.g. a plain agent).
    pub api: Option<SocketAddr>,
    /// Run the control-plane controllers.
    pub controllers: bool,
    pub agent: Option<AgentConfig>,
    /// A manifest folder to watch and keep applied (the GitOps source controller).
    pub manifests: Option<berth_core::gitops::SourceConfig>,
}

pub struct Node {
    pub api_addr: Option<SocketAddr>,
    pub registry: Registry,
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
    let mut tasks = Vec::new();
    if cfg.controllers {
        ensure_default_cluster(&*store).await?;
    }
    if let Some(src) = cfg.manifests.clone() {
        // Watch the folder from now on; wait for the first sync so the node starts applied (a
        // broken folder is reported in the source's status, not fatal).
        let (task, first_sync) = berth_core::gitops::start(
            store.clone(),
            src,
            berth_core::gitops::Timing::default(),
            shutdown.clone(),
        )
        .await?;
        tasks.push(task);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(60), first_sync).await;
    }
    let mut api_addr = None;
    if let Some(addr) = cfg.api {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        api_addr = Some(listener.local_addr()?);
        let state = ApiState {
            store: store.clone(),
            registry: registry.clone(),
        };
        let s = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = api::serve(listener, state, s).await {
                tracing::error!(error = %e, "API server failed");
            }
        }));
    }
    if cfg.controllers {
        // One shared cache for every controller: the process watches the store once.
        let cache = berth_controllers::cache(store.clone());
        for c in berth_controllers::all_with(store.clone(), &cache, &registry) {
            tasks.push(tokio::spawn(c.run(shutdown.clone())));
        }
        // The control plane also runs a load balancer (`berth lb` runs more of them).
        tasks.push(tokio::spawn(berth_core::lb::run(
            store.clone(),
            berth_core::lb::LbConfig::default(),
            shutdown.clone(),
        )));
    }
    if let Some(agent_cfg) = cfg.agent {
        let docker = berth_core::agent::docker::connect().await?;
        tasks.push(tokio::spawn(
            berth_core::agent::credentials_endpoint::serve_for_agent(
                store.clone(),
                docker.clone(),
                agent_cfg.instance_id.clone(),
                shutdown.clone(),
            ),
        ));
        let s = shutdown.clone();
        let st = store.clone();
        let reg = registry.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = berth_core::agent::run(st, docker, agent_cfg, reg, s.clone()).await {
                tracing::error!(error = %format!("{e:#}"), "agent failed");
                s.cancel();
            }
        }));
    }
    Ok(Node {
        api_addr,
        registry,
        shutdown,
        tasks,
    })
}
