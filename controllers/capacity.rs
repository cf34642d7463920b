//! What an instance has and uses: the placement candidates the scheduler ranks and the
//! remaining resources the instance-status controller reports, both from the shared cache's
//! per-instance usage (kept as tasks change), so neither folds over every task of the cluster.

use std::collections::HashMap;

use berth_core::model::{ContainerInstance, Protocol, Resources};
use berth_core::placement::Candidate;
use berth_core::runtime::{ClusterCache, Usage};

/// Host ports each task definition holds, looked up once per definition.
#[derive(Default)]
pub struct PortsOf {
    memo: HashMap<String, Vec<(u16, Protocol)>>,
}

impl PortsOf {
    pub fn get(&mut self, cache: &ClusterCache, taskdef: &str) -> &[(u16, Protocol)] {
        self.memo
            .entry(taskdef.to_string())
            .or_insert_with(|| {
                cache
                    .taskdef(taskdef)
                    .map(|td| td.spec.fixed_host_ports())
                    .unwrap_or_default()
            })
            .as_slice()
    }
}

/// The candidate an instance makes, given what its tasks use.
pub fn candidate(
    i: &ContainerInstance,
    connected: bool,
    u: &Usage,
    cache: &ClusterCache,
    ports: &mut PortsOf,
) -> Candidate {
    let mut c = Candidate {
        id: i.metadata.name.clone(),
        cluster: i.spec.cluster.clone(),
        usable: i.status.status == "ACTIVE" && connected,
        cpu_total: i.status.registered_resources.cpu,
        memory_total: i.status.registered_resources.memory,
        cpu_used: u.cpu,
        memory_used: u.memory,
        tasks: u.tasks,
        groups: u.groups.iter().map(|(g, n)| (g.clone(), *n)).collect(),
        attributes: i.spec.attributes.clone(),
        ..Default::default()
    };
    for td in u.taskdefs.keys() {
        c.ports_used.extend(ports.get(cache, td).iter().copied());
    }
    c
}

/// What is left on an instance, as ECS reports `remainingResources`.
pub fn remaining(c: &Candidate) -> Resources {
    Resources {
        cpu: c.cpu_free(),
        memory: c.memory_free(),
        ports: c
            .ports_used
            .iter()
            .map(|(p, proto)| format!("{}/{p}", proto.as_str()))
            .collect(),
    }
}
