//! berth's load balancer (hyper): listeners and rules from LoadBalancer objects, targets from
//! the lb_target controller's records, followed live from the store without restarts. Active
//! health checks and passive ejection; draining targets get no new requests and are reported
//! `drained` once idle. Runs inside `berth up` / `berth server`, or alone as `berth lb`.

pub mod health;
pub mod proxy;
pub mod routing;
pub mod targets;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::model::lb::{lb_keys, Listener, Target, TargetHealth};
use crate::model::{keys, now, Kind, LoadBalancer, TargetGroup};
use crate::runtime::Cache;
use crate::store::DynStore;
use targets::TargetRuntime;

/// One target group as the proxy uses it.
pub struct Group {
    pub spec: crate::model::TargetGroupSpec,
    pub targets: Vec<Arc<TargetRuntime>>,
    pub cursor: AtomicUsize,
}

/// Everything the proxy needs, rebuilt whenever the store changes.
#[derive(Default)]
pub struct Table {
    /// Listener by port.
    pub listeners: BTreeMap<u16, Listener>,
    pub groups: HashMap<String, Arc<Group>>,
}

pub type SharedTable = Arc<RwLock<Arc<Table>>>;

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

fn build(
    lbs: &Cache,
    tgs: &Cache,
    tcache: &Cache,
    runtimes: &mut HashMap<String, Arc<TargetRuntime>>,
) -> Table {
    let mut t = Table::default();
    for kv in lbs.list() {
        if let Ok(lb) = serde_json::from_slice::<LoadBalancer>(&kv.value) {
            for l in lb.spec.listeners {
                t.listeners.entry(l.port).or_insert(l);
            }
        }
    }
    let mut by_group: HashMap<String, Vec<Arc<TargetRuntime>>> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for kv in tcache.list() {
        let Ok(target) = serde_json::from_slice::<Target>(&kv.value) else {
            continue;
        };
        let Ok(ip) = target.ip.parse::<std::net::IpAddr>() else {
            continue;
        };
        let addr = SocketAddr::new(ip, target.port);
        let rt = runtimes
            .entry(kv.key.clone())
            .and_modify(|r| {
                if r.addr != addr {
                    *r = Arc::new(TargetRuntime::new(
                        &target.target_group,
                        &target.task_id,
                        &target.service,
                        addr,
                    ));
                }
            })
            .or_insert_with(|| {
                Arc::new(TargetRuntime::new(
                    &target.target_group,
                    &target.task_id,
                    &target.service,
                    addr,
                ))
            })
            .clone();
        let draining = target.state == "draining";
        if !draining {
            rt.drained_reported
                .store(false, std::sync::atomic::Ordering::Release);
        }
        rt.draining
            .store(draining, std::sync::atomic::Ordering::Release);
        seen.insert(kv.key.clone());
        by_group
            .entry(target.target_group.clone())
            .or_default()
            .push(rt);
    }
    runtimes.retain(|k, _| seen.contains(k));
    for kv in tgs.list() {
        if let Ok(tg) = serde_json::from_slice::<TargetGroup>(&kv.value) {
            let targets = by_group.remove(&tg.metadata.name).unwrap_or_default();
            t.groups.insert(
                tg.metadata.name.clone(),
                Arc::new(Group {
                    spec: tg.spec,
                    targets,
                    cursor: AtomicUsize::new(0),
                }),
            );
        }
    }
    t
}

/// Write a target's health as this load balancer sees it (on transitions only).
pub async fn report(store: &DynStore, t: &TargetRuntime, state: &str, reason: &str) {
    let h = TargetHealth {
        state: state.into(),
        service: t.service.clone(),
        reason: reason.into(),
        updated_at: now(),
    };
    let key = lb_keys::health(&t.target_group, &t.task_id);
    // Only while the target is still registered: a late report must not resurrect a record.
    let txn = crate::store::Txn::new()
        .when(crate::store::Compare::mod_revision(
            lb_keys::target(&t.target_group, &t.task_id),
            0,
        ))
        .or_else(crate::store::Op::put(
            key,
            serde_json::to_vec(&h).unwrap_or_default(),
        ));
    if let Err(e) = store.txn(txn).await {
        tracing::warn!(error = %e, "could not record target health");
    }
}
