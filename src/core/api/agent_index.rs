//! The assignment index behind the agent routes: which tasks are placed on which instance,
//! kept from one watch of the task prefix shared by every joined agent, so that what the
//! server does for one agent costs that agent's own tasks, not the cluster's:
//! - its scope (`auth::node_authz::Scope`): the tasks placed on it;
//! - [`AssignmentIndex::range`]: its tasks' records, consistent at the index's revision;
//! - [`AssignmentIndex::subscribe`]: its task events from a revision on, replayed from a
//!   bounded history of recent events, then live; each store event is decoded once for all.
//!
//! It may lag the store a little. The agent routes re-decide every refusal on a scope read from
//! the store itself, and a watch from before the history (or before the first listing) is
//! served by a store watch filtered per event, as it was before the index.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;

use crate::model::{keys, Kind, Task};
use crate::store::remote::wire;
use crate::store::{DynStore, EventKind, KeyValue, StoreError, WatchEvent};

/// Task id → (task definition family, cluster).
pub type Tasks = BTreeMap<String, (String, String)>;

/// Recent task events kept for resuming watches, across all instances.
const HISTORY: usize = 10_000;
/// Batches one subscriber may fall behind before its watch ends (and resumes from history).
const FEED_CAPACITY: usize = 512;

/// One revision's events for one instance.
#[derive(Debug)]
pub struct Batch {
    pub revision: i64,
    pub events: Vec<wire::Event>,
}

static RECORDS_READ: AtomicU64 = AtomicU64::new(0);

/// Task records this process read to answer agents' task ranges and watches (for tests: the
/// count grows with the agents' own tasks, not with the cluster's).
pub fn task_records_read() -> u64 {
    RECORDS_READ.load(Ordering::Relaxed)
}

/// Count `n` task records read for an agent.
pub fn count_read(n: usize) {
    RECORDS_READ.fetch_add(n as u64, Ordering::Relaxed);
}

#[derive(Default)]
struct Assigned {
    tasks: Tasks,
    /// Task key → its record.
    records: BTreeMap<String, KeyValue>,
    history: VecDeque<Arc<Batch>>,
    feed: Option<broadcast::Sender<Arc<Batch>>>,
}

impl Assigned {
    fn idle(&self) -> bool {
        self.tasks.is_empty()
            && self.history.is_empty()
            && self.feed.as_ref().is_none_or(|f| f.receiver_count() == 0)
    }
}

#[derive(Default)]
struct Inner {
    synced: bool,
    /// Every task event up to here is applied.
    revision: i64,
    /// The history holds every event from this revision on.
    since: i64,
    /// Task id → the instance it is placed on.
    by_task: HashMap<String, String>,
    by_instance: HashMap<String, Assigned>,
    /// The history's batches in store order: (revision, instance), to trim the oldest.
    order: VecDeque<(i64, String)>,
}

impl Inner {
    /// A fresh listing at `revision`: every feed ends (its watchers resume through the store).
    fn restart(&mut self, kvs: &[KeyValue], revision: i64) {
        *self = Inner {
            synced: true,
            revision,
            since: revision + 1,
            ..Default::default()
        };
        for kv in kvs {
            self.place(kv);
        }
    }

    fn unplace(&mut self, id: &str) -> Option<String> {
        let inst = self.by_task.remove(id)?;
        if let Some(a) = self.by_instance.get_mut(&inst) {
            a.tasks.remove(id);
            a.records.remove(&keys::key(Kind::Task, id));
        }
        Some(inst)
    }

    /// Record `kv` (a task's current record); the instance it is placed on, if any.
    fn place(&mut self, kv: &KeyValue) -> Option<String> {
        let id = keys::name_of(&kv.key, Kind::Task)?.to_string();
        self.unplace(&id);
        let t = serde_json::from_slice::<Task>(&kv.value).ok()?;
        let inst = t.status.container_instance.clone()?;
        let family = t.spec.task_definition.split(':').next().unwrap_or("");
        self.by_task.insert(id.clone(), inst.clone());
        let a = self.by_instance.entry(inst.clone()).or_default();
        a.tasks
            .insert(id, (family.to_string(), t.spec.cluster.clone()));
        a.records.insert(kv.key.clone(), kv.clone());
        Some(inst)
    }

    /// Apply one revision's events and hand each instance its part.
    fn apply(&mut self, evs: &[WatchEvent]) {
        let Some(revision) = evs.iter().map(|e| e.kv.mod_revision).max() else {
            return;
        };
        let mut parts: BTreeMap<String, Vec<wire::Event>> = BTreeMap::new();
        for e in evs {
            match e.kind {
                EventKind::Put => {
                    // As the store watch decides: a put is the agent's when the new value is.
                    if let Some(inst) = self.place(&e.kv) {
                        parts.entry(inst).or_default().push(wire::Event {
                            delete: false,
                            kv: wire::Kv::from(&e.kv),
                            prev: None,
                        });
                    }
                }
                EventKind::Delete => {
                    let Some(id) = keys::name_of(&e.kv.key, Kind::Task) else {
                        continue;
                    };
                    let last = self
                        .by_task
                        .get(id)
                        .and_then(|i| self.by_instance.get(i))
                        .and_then(|a| a.records.get(&e.kv.key))
                        .cloned();
                    if let (Some(inst), Some(last)) = (self.unplace(id), last) {
                        let prev = e.prev.clone().unwrap_or(last);
                        parts.entry(inst).or_default().push(wire::Event {
                            delete: true,
                            kv: wire::Kv::from(&e.kv),
                            prev: Some(wire::Kv::from(&prev)),
                        });
                    }
                }
            }
        }
        for (inst, events) in parts {
            let batch = Arc::new(Batch { revision, events });
            let a = self.by_instance.entry(inst.clone()).or_default();
            a.history.push_back(batch.clone());
            if let Some(f) = &a.feed {
                if f.send(batch).is_err() {
                    a.feed = None;
                }
            }
            self.order.push_back((revision, inst));
        }
        while self.order.len() > HISTORY {
            let Some((rev, inst)) = self.order.pop_front() else {
                break;
            };
            self.since = self.since.max(rev + 1);
            if let Some(a) = self.by_instance.get_mut(&inst) {
                a.history.pop_front();
                if a.idle() {
                    self.by_instance.remove(&inst);
                }
            }
        }
        self.revision = self.revision.max(revision);
    }
}

/// A feed of one instance's task events: the batches from the asked revision already in the
/// history, then the live ones.
pub struct Feed {
    pub replay: Vec<Arc<Batch>>,
    pub live: broadcast::Receiver<Arc<Batch>>,
}

#[derive(Clone)]
pub struct AssignmentIndex {
    inner: Arc<RwLock<Inner>>,
}

impl AssignmentIndex {
    /// Start following the task prefix (stops once every handle is dropped).
    pub fn start(store: DynStore) -> Self {
        let ix = AssignmentIndex {
            inner: Arc::new(RwLock::new(Inner::default())),
        };
        tokio::spawn(follow(store, Arc::downgrade(&ix.inner)));
        ix
    }

    /// The tasks placed on `instance`; None until the first listing is in.
    pub fn tasks_of(&self, instance: &str) -> Option<Tasks> {
        let g = self.inner.read().unwrap();
        g.synced.then(|| {
            g.by_instance
                .get(instance)
                .map(|a| a.tasks.clone())
                .unwrap_or_default()
        })
    }

    /// The records of the tasks placed on `instance` and the revision they are all current at
    /// (the task prefix as a store range at that revision would show it to the agent).
    pub fn range(&self, instance: &str) -> Option<(Vec<KeyValue>, i64)> {
        let g = self.inner.read().unwrap();
        if !g.synced {
            return None;
        }
        let kvs: Vec<KeyValue> = g
            .by_instance
            .get(instance)
            .map(|a| a.records.values().cloned().collect())
            .unwrap_or_default();
        count_read(kvs.len());
        Some((kvs, g.revision))
    }

    /// The revision every task event is applied up to.
    pub fn revision(&self) -> i64 {
        self.inner.read().unwrap().revision
    }

    /// `instance`'s task events from revision `from` on, or None when the history does not
    /// reach back that far (or the index has not listed yet).
    pub fn subscribe(&self, instance: &str, from: i64) -> Option<Feed> {
        let mut g = self.inner.write().unwrap();
        if !g.synced || from < g.since {
            return None;
        }
        let a = g.by_instance.entry(instance.to_string()).or_default();
        let replay: Vec<Arc<Batch>> = a
            .history
            .iter()
            .filter(|b| b.revision >= from)
            .cloned()
            .collect();
        count_read(replay.iter().map(|b| b.events.len()).sum());
        let live = a
            .feed
            .get_or_insert_with(|| broadcast::channel(FEED_CAPACITY).0)
            .subscribe();
        Some(Feed { replay, live })
    }
}

/// List, then watch from the listing on; relist only when the store compacted past us.
async fn follow(store: DynStore, inner: Weak<RwLock<Inner>>) {
    let prefix = keys::prefix(Kind::Task);
    let pause = Duration::from_millis(200);
    let mut listed = false;
    loop {
        if !listed {
            let (kvs, rev) = match store.range(&prefix).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "assignment index: list failed");
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            let Some(i) = inner.upgrade() else { return };
            i.write().unwrap().restart(&kvs, rev);
            listed = true;
        }
        let from = match inner.upgrade() {
            Some(i) => i.read().unwrap().revision + 1,
            None => return,
        };
        let mut events = match store.watch(&prefix, from).await {
            Ok(s) => s,
            Err(StoreError::Compacted { .. }) => {
                listed = false;
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "assignment index: watch failed");
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        while let Some(item) = events.next().await {
            let Some(i) = inner.upgrade() else { return };
            match item {
                Ok(evs) => i.write().unwrap().apply(&evs),
                Err(StoreError::Compacted { .. }) => {
                    listed = false;
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "assignment index: watch broke; resuming");
                    tokio::time::sleep(pause).await;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, on: Option<&str>, rev: i64) -> KeyValue {
        let mut t = Task::new(
            Kind::Task,
            id,
            crate::model::TaskSpec {
                task_definition: "web:1".into(),
                cluster: "default".into(),
                ..Default::default()
            },
        );
        t.status.container_instance = on.map(str::to_string);
        KeyValue {
            key: keys::key(Kind::Task, id),
            value: t.to_bytes(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: 0,
        }
    }

    fn put(kv: KeyValue) -> WatchEvent {
        WatchEvent {
            kind: EventKind::Put,
            kv,
            prev: None,
        }
    }

    #[test]
    fn each_instance_gets_its_own_events_and_a_resumable_history() {
        let mut ix = Inner::default();
        ix.restart(&[task("a", Some("i-1"), 3)], 5);
        ix.apply(&[
            put(task("b", Some("i-2"), 6)),
            put(task("c", Some("i-1"), 6)),
        ]);
        ix.apply(&[put(task("d", None, 7))]);
        ix.apply(&[WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: keys::key(Kind::Task, "a"),
                mod_revision: 8,
                ..task("a", None, 8)
            },
            prev: None,
        }]);
        assert_eq!(ix.revision, 8);
        let one = &ix.by_instance["i-1"];
        let revs: Vec<i64> = one.history.iter().map(|b| b.revision).collect();
        assert_eq!(revs, [6, 8]);
        // The delete carries the record it deleted, as a store watch's prev.
        let del = &one.history[1].events[0];
        assert!(del.delete && del.prev.as_ref().is_some_and(|p| p.mod_revision == 3));
        assert_eq!(one.records.len(), 1);
        assert_eq!(ix.by_instance["i-2"].history.len(), 1);
        assert!(!ix.by_task.contains_key("d"));
    }

    #[test]
    fn the_history_is_bounded_and_says_where_it_starts() {
        let mut ix = Inner::default();
        ix.restart(&[], 1);
        for r in 0..(HISTORY as i64 + 10) {
            ix.apply(&[put(task(&format!("t{}", r % 50), Some("i-1"), r + 2))]);
        }
        assert_eq!(ix.order.len(), HISTORY);
        assert_eq!(ix.by_instance["i-1"].history.len(), HISTORY);
        assert_eq!(ix.since, 12);
        assert_eq!(ix.by_instance["i-1"].history[0].revision, 12);
    }

    #[tokio::test]
    async fn a_subscriber_gets_the_replay_then_live_batches() {
        let ix = AssignmentIndex {
            inner: Arc::new(RwLock::new(Inner::default())),
        };
        assert!(ix.subscribe("i-1", 1).is_none(), "not listed yet");
        ix.inner.write().unwrap().restart(&[], 1);
        ix.inner
            .write()
            .unwrap()
            .apply(&[put(task("a", Some("i-1"), 2))]);
        assert!(ix.subscribe("i-1", 1).is_none(), "before the history");
        let mut f = ix.subscribe("i-1", 2).unwrap();
        assert_eq!(f.replay.len(), 1);
        ix.inner.write().unwrap().apply(&[
            put(task("b", Some("i-2"), 3)),
            put(task("c", Some("i-1"), 3)),
        ]);
        let b = f.live.recv().await.unwrap();
        assert_eq!((b.revision, b.events.len()), (3, 1));
        let (kvs, rev) = ix.range("i-1").unwrap();
        assert_eq!((kvs.len(), rev), (2, 3));
    }
}
