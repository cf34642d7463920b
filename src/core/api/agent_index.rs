//! The assignment index behind the agent routes: which tasks are placed on which instance,
//! kept from one watch of the task prefix shared by every agent, so building an agent's scope
//! (`auth::node_authz::Scope`) costs its own tasks, not the cluster's. It may lag the store a
//! little: the agent routes re-decide every refusal on a scope read from the store itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};

use futures::StreamExt;

use crate::model::{keys, Kind, Task};
use crate::runtime::watcher::{watcher, WatcherEvent};
use crate::store::{DynStore, KeyValue};

/// Task id → (task definition family, cluster).
pub type Tasks = BTreeMap<String, (String, String)>;

#[derive(Default)]
struct Inner {
    /// Task id → the instance it is placed on.
    by_task: HashMap<String, String>,
    by_instance: HashMap<String, Tasks>,
}

impl Inner {
    fn remove(&mut self, id: &str) {
        if let Some(inst) = self.by_task.remove(id) {
            if let Some(m) = self.by_instance.get_mut(&inst) {
                m.remove(id);
                if m.is_empty() {
                    self.by_instance.remove(&inst);
                }
            }
        }
    }

    fn apply(&mut self, kv: &KeyValue) {
        let Some(id) = keys::name_of(&kv.key, Kind::Task) else {
            return;
        };
        self.remove(id);
        let Ok(t) = serde_json::from_slice::<Task>(&kv.value) else {
            return;
        };
        if let Some(inst) = t.status.container_instance.clone() {
            let family = t
                .spec
                .task_definition
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            self.by_task.insert(id.to_string(), inst.clone());
            self.by_instance
                .entry(inst)
                .or_default()
                .insert(id.to_string(), (family, t.spec.cluster.clone()));
        }
    }
}

#[derive(Clone)]
pub struct AssignmentIndex {
    inner: Arc<RwLock<Inner>>,
    synced: Arc<AtomicBool>,
}

impl AssignmentIndex {
    /// Start following the task prefix (stops once every handle is dropped).
    pub fn start(store: DynStore) -> Self {
        let ix = AssignmentIndex {
            inner: Arc::new(RwLock::new(Inner::default())),
            synced: Arc::new(AtomicBool::new(false)),
        };
        let weak: Weak<RwLock<Inner>> = Arc::downgrade(&ix.inner);
        let synced = ix.synced.clone();
        tokio::spawn(async move {
            let mut events = watcher(store, keys::prefix(Kind::Task));
            while let Some(ev) = events.next().await {
                let Some(inner) = weak.upgrade() else { return };
                let mut g = inner.write().unwrap();
                match ev {
                    WatcherEvent::Restarted(kvs) => {
                        *g = Inner::default();
                        kvs.iter().for_each(|kv| g.apply(kv));
                        synced.store(true, Ordering::Release);
                    }
                    WatcherEvent::Applied(kv) => g.apply(&kv),
                    WatcherEvent::Deleted(kv) => {
                        if let Some(id) = keys::name_of(&kv.key, Kind::Task) {
                            g.remove(id);
                        }
                    }
                }
            }
        });
        ix
    }

    /// The tasks placed on `instance`; None until the first listing is in.
    pub fn tasks_of(&self, instance: &str) -> Option<Tasks> {
        if !self.synced.load(Ordering::Acquire) {
            return None;
        }
        Some(
            self.inner
                .read()
                .unwrap()
                .by_instance
                .get(instance)
                .cloned()
                .unwrap_or_default(),
        )
    }
}
