//! The task metadata endpoint v4 and the relative-URI task credentials, at `169.254.170.2` as
//! on ECS (issue 12, item 4).
//!
//! Each agent serves, on the Docker bridge gateway at an ephemeral port, `GET /v4/<id>`,
//! `/v4/<id>/task`, `/v4/<id>/taskWithTags`, `/v4/<id>/stats`, `/v4/<id>/task/stats`
//! (`handlers.rs`, ECS's field names in `shapes.rs`) and `GET /v2/credentials/<id>` (the task
//! role's credentials, through the same checks and audit as `credentials_endpoint`). `dnat.rs`
//! routes each task address's `169.254.170.2:80` to it. Containers get
//! `ECS_CONTAINER_METADATA_URI_V4=http://169.254.170.2/v4/<container id>` and, with a task
//! role, `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/v2/credentials/<task id>`: both ids are
//! 128 random bits, kept as labels of the containers (so they survive an agent restart), and a
//! request is answered only from an address of the task the id belongs to.

pub mod dnat;
mod handlers;
mod shapes;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bollard::Docker;
use rand::RngCore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::credentials_endpoint::{bridge_gateway, EndpointState};
use super::docker as d;
use super::secrets::Secrets;
use crate::model::{NetworkMode, Task, TaskDefinition};
use crate::store::DynStore;

pub const ENV_METADATA_V4: &str = "ECS_CONTAINER_METADATA_URI_V4";
pub const ENV_RELATIVE_URI: &str = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI";
/// The container's opaque metadata id.
pub const LABEL_METADATA_ID: &str = "berth.metadata-id";
/// The task's opaque credentials id (the same on each of its containers).
pub const LABEL_CREDENTIALS_ID: &str = "berth.credentials-id";

pub struct Metadata {
    pub(crate) docker: Docker,
    pub(crate) store: DynStore,
    pub(crate) instance: String,
    pub(crate) creds: EndpointState,
    pub(crate) secrets: Secrets,
    /// Where the DNAT sends tasks (gateway address and this server's port).
    pub addr: SocketAddr,
    /// Whether the DNAT rules could be installed (iptables present, root).
    pub dnat: bool,
    /// This agent's rules: task → addresses (all of the instance's rules were deleted at
    /// start, so this is exactly what the chain holds for it).
    routes: std::sync::Mutex<HashMap<String, BTreeSet<String>>>,
}

/// 128 random bits, hex.
pub fn opaque_id() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

pub(crate) fn is_opaque_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Bind, install the DNAT chain and serve until `shutdown` (then remove this agent's rules).
/// None when there is no address to serve on; tasks then run without the metadata env.
pub async fn start(
    store: DynStore,
    docker: Docker,
    instance: String,
    secrets: Secrets,
    shutdown: CancellationToken,
) -> Option<Arc<Metadata>> {
    // Docker's network API can stall under load: fall back to docker0's address.
    let gateway = match tokio::time::timeout(Duration::from_secs(10), bridge_gateway(&docker)).await
    {
        Ok(Some(g)) => g,
        _ => docker0_address().await?,
    };
    let listener = match TcpListener::bind((IpAddr::V4(gateway), 0)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(%gateway, error = %e, "task metadata endpoint: cannot bind");
            return None;
        }
    };
    let addr = listener.local_addr().ok()?;
    let dnat = match dnat::install(&instance).await {
        Ok(()) => {
            if let Some(live) = live_addresses(&docker).await {
                if let Err(e) = dnat::gc(&live).await {
                    tracing::warn!(error = %e, "task metadata endpoint: stale DNAT rules kept");
                }
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "task metadata endpoint: no DNAT of 169.254.170.2 (tasks cannot reach it)");
            false
        }
    };
    let meta = Arc::new(Metadata {
        docker,
        creds: EndpointState::new(store.clone(), instance.clone(), secrets.clone()),
        store,
        instance,
        secrets,
        addr,
        dnat,
        routes: Default::default(),
    });
    let app = Router::new()
        .route("/v4/{id}", get(handlers::container))
        .route("/v4/{id}/task", get(handlers::task))
        .route("/v4/{id}/taskWithTags", get(handlers::task_with_tags))
        .route("/v4/{id}/stats", get(handlers::container_stats))
        .route("/v4/{id}/task/stats", get(handlers::task_stats))
        .route("/v2/credentials/{id}", get(handlers::credentials))
        .fallback(handlers::not_found)
        .with_state(meta.clone())
        .into_make_service_with_connect_info::<SocketAddr>();
    tracing::info!(%addr, dnat, "task metadata endpoint listening");
    tokio::spawn(async move {
        let s = shutdown.clone();
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "task metadata endpoint failed");
        }
    });
    Some(meta)
}

/// The addresses of every running container of the host (any agent's), or None when Docker
/// cannot say (then nothing is collected).
async fn live_addresses(docker: &Docker) -> Option<std::collections::HashSet<String>> {
    let list = docker
        .list_containers(None::<bollard::query_parameters::ListContainersOptions>)
        .await
        .ok()?;
    Some(
        list.iter()
            .filter_map(|c| c.network_settings.as_ref()?.networks.as_ref())
            .flat_map(|n| n.values().filter_map(|e| e.ip_address.clone()))
            .filter(|ip| !ip.is_empty())
            .collect(),
    )
}

/// The IPv4 address of the host's `docker0` (`ip -4 -o addr show docker0`).
async fn docker0_address() -> Option<Ipv4Addr> {
    let o = tokio::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "docker0"])
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&o.stdout);
    let mut words = text.split_whitespace();
    words.find(|w| *w == "inet")?;
    words.next()?.split('/').next()?.parse().ok()
}

impl Metadata {
    /// Labels and environment for one container of `task`: its own metadata id, the task's
    /// credentials id (reused from a sibling container when there is one). Nothing in host
    /// network mode (the container shares the host's address; not routed).
    pub async fn for_container(
        &self,
        task: &Task,
        td: &TaskDefinition,
    ) -> (HashMap<String, String>, Vec<(String, String)>) {
        if td.spec.network_mode() == NetworkMode::Host {
            return (HashMap::new(), vec![]);
        }
        let meta_id = opaque_id();
        let mut labels = HashMap::from([(LABEL_METADATA_ID.to_string(), meta_id.clone())]);
        let mut env = vec![(
            ENV_METADATA_V4.to_string(),
            format!("http://{}/v4/{meta_id}", dnat::METADATA_IP),
        )];
        if td.spec.task_role.as_deref().is_some_and(|r| !r.is_empty()) {
            let existing = d::list_task(&self.docker, &self.instance, &task.metadata.name)
                .await
                .unwrap_or_default()
                .into_iter()
                .find_map(|c| c.labels.and_then(|l| l.get(LABEL_CREDENTIALS_ID).cloned()))
                .filter(|v| is_opaque_id(v));
            let cred_id = existing.unwrap_or_else(opaque_id);
            labels.insert(LABEL_CREDENTIALS_ID.to_string(), cred_id.clone());
            env.push((
                ENV_RELATIVE_URI.to_string(),
                format!("/v2/credentials/{cred_id}"),
            ));
        }
        (labels, env)
    }

    /// Route `ip` (an address of `task`) to this server.
    pub async fn allow(&self, task: &str, ip: &str) {
        if !self.dnat || ip.parse::<Ipv4Addr>().is_err() {
            return;
        }
        let new = self
            .routes_mut()
            .entry(task.to_string())
            .or_default()
            .insert(ip.to_string());
        if !new {
            return;
        }
        if let Err(e) = dnat::insert(&self.instance, task, ip, self.addr).await {
            tracing::warn!(task, ip, error = %e, "task metadata DNAT rule not installed");
            if let Some(ips) = self.routes_mut().get_mut(task) {
                ips.remove(ip);
            }
        }
    }

    fn routes_mut(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeSet<String>>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remove this agent's DNAT rules (clean shutdown; the shared chain stays).
    pub async fn uninstall(&self) {
        if self.dnat {
            self.routes_mut().clear();
            if let Err(e) = dnat::uninstall(&self.instance).await {
                tracing::warn!(error = %e, "task metadata endpoint: DNAT rules not removed");
            }
        }
    }

    /// Drop `task`'s routes (its containers are gone).
    pub async fn forget(&self, task: &str) {
        if !self.dnat {
            return;
        }
        let ips = self.routes_mut().remove(task).unwrap_or_default();
        for ip in ips {
            if let Err(e) = dnat::delete(&self.instance, task, &ip, self.addr).await {
                tracing::warn!(task, ip, error = %e, "task metadata DNAT rule not removed");
            }
        }
    }
}
