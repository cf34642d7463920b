//! What an instance has and uses, from the store: the placement candidates the scheduler ranks
//! and the remaining resources the instance-status controller reports. Both read it the same way.

use std::collections::{BTreeMap, BTreeSet};

use berth_core::model::{ContainerInstance, Resources, Task};
use berth_core::objects;
use berth_core::placement::Candidate;

/// Build placement candidates from a consistent-enough snapshot.
pub async fn candidates(
    instances: &[ContainerInstance],
    connected: &BTreeSet<String>,
    tasks: &[Task],
    store: &dyn berth_core::store::Store,
) -> Vec<Candidate> {
    let mut by_id: BTreeMap<&str, Candidate> = BTreeMap::new();
    for i in instances {
        by_id.insert(
            &i.metadata.name,
            Candidate {
                id: i.metadata.name.clone(),
                cluster: i.spec.cluster.clone(),
                usable: i.status.status == "ACTIVE" && connected.contains(&i.metadata.name),
                cpu_total: i.status.registered_resources.cpu,
                memory_total: i.status.registered_resources.memory,
                attributes: i.spec.attributes.clone(),
                ..Default::default()
            },
        );
    }
    let mut td_ports: BTreeMap<String, Vec<(u16, berth_core::model::Protocol)>> = BTreeMap::new();
    for t in tasks.iter().filter(|t| t.holds_resources()) {
        let Some(c) = t
            .status
            .container_instance
            .as_deref()
            .and_then(|i| by_id.get_mut(i))
        else {
            continue;
        };
        c.cpu_used += t.spec.cpu;
        c.memory_used += t.spec.memory;
        c.tasks += 1;
        if t.is_active() {
            *c.groups.entry(t.spec.group.clone()).or_insert(0) += 1;
        }
        if !td_ports.contains_key(&t.spec.task_definition) {
            let ports = objects::taskdef(store, &t.spec.task_definition)
                .await
                .ok()
                .flatten()
                .map(|td| td.spec.fixed_host_ports())
                .unwrap_or_default();
            td_ports.insert(t.spec.task_definition.clone(), ports);
        }
        c.ports_used
            .extend(td_ports[&t.spec.task_definition].iter().copied());
    }
    by_id.into_values().collect()
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
