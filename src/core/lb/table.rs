//! The routing table the proxy and the health checker share: listeners, target groups and
//! their targets, rebuilt from the store caches whenever they change.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};

use super::targets::TargetRuntime;
use crate::model::lb::{Listener, Target};
use crate::model::{LoadBalancer, TargetGroup};
use crate::runtime::Cache;

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

pub(crate) fn build(
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
