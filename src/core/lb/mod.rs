//! berth's load balancer (hyper): listeners and rules from LoadBalancer objects, targets from
//! the lb_target controller's records, followed live from the store without restarts. Active
//! health checks and passive ejection; draining targets get no new requests and are reported
//! `drained` once idle. Runs inside `berth up` / `berth server`, or alone as `berth lb`.

pub mod health;
pub mod proxy;
pub mod routing;
pub mod table;
pub mod targets;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::model::lb::lb_keys;
use crate::model::{keys, Kind};
use crate::runtime::Cache;
use crate::store::DynStore;
use table::{build, SharedTable};
use targets::TargetRuntime;

pub struct LbConfig {
    /// Address listeners bind on (their ports come from the LoadBalancer objects).
    pub bind_ip: std::net::IpAddr,
}

impl Default for LbConfig {
    fn default() -> Self {
        LbConfig {
            bind_ip: std::net::IpAddr::from([0, 0, 0, 0]),
        }
    }
}

/// Run until `shutdown`.
pub use table::{Group, Table};

/// Run until `shutdown`.
pub async fn run(store: DynStore, cfg: LbConfig, shutdown: CancellationToken) {
    let changed = Arc::new(Notify::new());
    let on_change = {
        let c = changed.clone();
        move |_: &crate::runtime::WatcherEvent| c.notify_one()
    };
    let lbs = Cache::start(
        store.clone(),
        &keys::prefix(Kind::LoadBalancer),
        on_change.clone(),
    );
    let tgs = Cache::start(
        store.clone(),
        &keys::prefix(Kind::TargetGroup),
        on_change.clone(),
    );
    let tcache = Cache::start(store.clone(), lb_keys::TARGETS, on_change);
    lbs.wait_synced().await;
    tgs.wait_synced().await;
    tcache.wait_synced().await;

    let table: SharedTable = Default::default();
    // Target runtimes survive table rebuilds (their health and in-flight counts matter).
    let mut runtimes: HashMap<String, Arc<TargetRuntime>> = HashMap::new();
    let mut listeners: HashMap<u16, CancellationToken> = HashMap::new();
    let client = proxy::client();
    tokio::spawn(health::run(store.clone(), table.clone(), shutdown.clone()));
    loop {
        let next = build(&lbs, &tgs, &tcache, &mut runtimes);
        let ports: Vec<u16> = next.listeners.keys().copied().collect();
        *table.write().unwrap() = Arc::new(next);
        // Start new listeners, stop removed ones.
        for port in &ports {
            if listeners.contains_key(port) {
                continue;
            }
            let addr = SocketAddr::new(cfg.bind_ip, *port);
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    let tok = shutdown.child_token();
                    tokio::spawn(proxy::serve(
                        l,
                        *port,
                        table.clone(),
                        client.clone(),
                        tok.clone(),
                    ));
                    listeners.insert(*port, tok);
                    tracing::info!(%addr, "load balancer listener up");
                }
                Err(e) => tracing::error!(%addr, error = %e, "cannot bind load balancer listener"),
            }
        }
        listeners.retain(|port, tok| {
            let keep = ports.contains(port);
            if !keep {
                tok.cancel();
                tracing::info!(port, "load balancer listener removed");
            }
            keep
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changed.notified() => {}
            // Retry binds that failed.
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        // Coalesce bursts of changes into one rebuild.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
