//! Keeps each ContainerInstance's observed status true: remaining resources, task counts and
//! whether its agent holds its lease.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::time::Duration;

use berth_core::model::{keys, ContainerInstance, Kind, Task, TaskState};
use berth_core::objects::{self, ObjectError};
use berth_core::runtime::{Action, Controller, ControllerOptions, Reconciler, Trigger};
use berth_core::store::DynStore;

use crate::capacity::remaining;

pub struct InstanceStatus {
    store: DynStore,
}

impl InstanceStatus {
    pub fn controller(store: DynStore) -> Controller {
        let r = Arc::new(InstanceStatus {
            store: store.clone(),
        });
        let by_task = |kv: &berth_core::store::KeyValue| -> Vec<String> {
            serde_json::from_slice::<Task>(&kv.value)
                .ok()
                .and_then(|t| t.status.container_instance)
                .into_iter()
                .collect()
        };
        let by_name = |prefix: String| {
            move |kv: &berth_core::store::KeyValue| -> Vec<String> {
                kv.key
                    .strip_prefix(&prefix)
                    .map(|s| vec![s.to_string()])
                    .unwrap_or_default()
            }
        };
        Controller::new(
            "instances",
            store,
            r,
            ControllerOptions {
                workers: 2,
                resync: Duration::from_secs(15),
                ..Default::default()
            },
        )
        .trigger(Trigger::new(keys::prefix(Kind::Task), by_task))
        .primary(Kind::ContainerInstance)
        .trigger(Trigger::new(
            keys::INSTANCE_LEASE_PREFIX,
            by_name(keys::INSTANCE_LEASE_PREFIX.to_string()),
        ))
    }
}

#[async_trait]
impl Reconciler for InstanceStatus {
    async fn reconcile(&self, id: &str) -> anyhow::Result<Action> {
        let key = keys::key(Kind::ContainerInstance, id);
        for _ in 0..10 {
            let Some(inst) = objects::get::<_, _>(&*self.store, &key).await? else {
                return Ok(Action::Done);
            };
            let inst: ContainerInstance = inst;
            let connected = self
                .store
                .get(&keys::instance_lease_key(id))
                .await?
                .is_some();
            let tasks = objects::list_tasks(&*self.store).await?;
            let mine: Vec<Task> = tasks
                .into_iter()
                .filter(|t| t.status.container_instance.as_deref() == Some(id))
                .collect();
            let set: BTreeSet<String> = [id.to_string()].into();
            let cands =
                crate::capacity::candidates(std::slice::from_ref(&inst), &set, &mine, &*self.store)
                    .await;
            let mut next = inst.clone();
            next.status.agent_connected = connected;
            next.status.disconnected_at = match (connected, inst.status.disconnected_at) {
                (true, _) => None,
                (false, Some(t)) => Some(t),
                (false, None) => Some(berth_core::model::now()),
            };
            next.status.remaining_resources = remaining(&cands[0]);
            next.status.running_tasks_count = mine
                .iter()
                .filter(|t| t.status.last_status == TaskState::Running)
                .count() as u32;
            next.status.pending_tasks_count = mine
                .iter()
                .filter(|t| t.status.last_status < TaskState::Running)
                .count() as u32;
            if next.status == inst.status {
                return Ok(Action::Done);
            }
            match objects::put_cas(&*self.store, &key, &next).await {
                Ok(_) => return Ok(Action::Done),
                Err(ObjectError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Action::Requeue)
    }
}
