//! List-then-watch of a key prefix that never loses an event: resumes a broken watch from the
//! last seen revision + 1 and re-lists when that revision was compacted away.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Duration;
use tokio_stream::wrappers::ReceiverStream;

use crate::store::{DynStore, EventKind, KeyValue, StoreError};

#[derive(Debug, Clone)]
pub enum WatcherEvent {
    /// A fresh full listing (first start, or after compaction): replaces everything known.
    Restarted(Vec<KeyValue>),
    Applied(KeyValue),
    /// The deleted key's last value (empty when the backend did not say).
    Deleted(KeyValue),
}

/// Stream of events for `prefix`. Ends only when the receiver is dropped.
pub fn watcher(store: DynStore, prefix: String) -> ReceiverStream<WatcherEvent> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        let mut retry = Duration::from_millis(100);
        'relist: loop {
            let (kvs, rev) = match store.range(&prefix).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%prefix, error = %e, "list failed; retrying");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(5));
                    if tx.is_closed() {
                        return;
                    }
                    continue;
                }
            };
            if tx.send(WatcherEvent::Restarted(kvs)).await.is_err() {
                return;
            }
            let mut last = rev;
            loop {
                let mut stream = match store.watch(&prefix, last + 1).await {
                    Ok(s) => s,
                    Err(StoreError::Compacted { .. }) => continue 'relist,
                    Err(e) => {
                        tracing::warn!(%prefix, error = %e, "watch failed; retrying");
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(Duration::from_secs(5));
                        if tx.is_closed() {
                            return;
                        }
                        continue;
                    }
                };
                retry = Duration::from_millis(100);
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(events) => {
                            for ev in events {
                                last = last.max(ev.kv.mod_revision);
                                let out = match ev.kind {
                                    EventKind::Put => WatcherEvent::Applied(ev.kv),
                                    EventKind::Delete => {
                                        let mut kv = ev.prev.unwrap_or(ev.kv.clone());
                                        kv.key = ev.kv.key;
                                        kv.mod_revision = ev.kv.mod_revision;
                                        WatcherEvent::Deleted(kv)
                                    }
                                };
                                if tx.send(out).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Err(StoreError::Compacted { .. }) => continue 'relist,
                        Err(e) => {
                            tracing::debug!(%prefix, error = %e, "watch stream broke; resuming");
                            break;
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// A local mirror of a prefix kept up to date by a [`watcher`] (a "reflector").
#[derive(Clone)]
pub struct Cache {
    map: Arc<RwLock<BTreeMap<String, KeyValue>>>,
    synced: watch::Receiver<bool>,
}

impl Cache {
    /// Start mirroring `prefix`; `on_change` is called with each changed key after the cache
    /// has been updated.
    pub fn start(
        store: DynStore,
        prefix: &str,
        on_change: impl Fn(&WatcherEvent) + Send + Sync + 'static,
    ) -> Cache {
        let map: Arc<RwLock<BTreeMap<String, KeyValue>>> = Default::default();
        let (synced_tx, synced) = watch::channel(false);
        let m = map.clone();
        let mut events = watcher(store, prefix.to_string());
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                {
                    let mut w = m.write().unwrap();
                    match &ev {
                        WatcherEvent::Restarted(kvs) => {
                            w.clear();
                            for kv in kvs {
                                w.insert(kv.key.clone(), kv.clone());
                            }
                        }
                        WatcherEvent::Applied(kv) => {
                            w.insert(kv.key.clone(), kv.clone());
                        }
                        WatcherEvent::Deleted(kv) => {
                            w.remove(&kv.key);
                        }
                    }
                }
                if matches!(ev, WatcherEvent::Restarted(_)) {
                    let _ = synced_tx.send(true);
                }
                on_change(&ev);
            }
        });
        Cache { map, synced }
    }

    /// Wait until the first full listing has arrived (never prune from an unsynced cache).
    pub async fn wait_synced(&self) {
        let mut s = self.synced.clone();
        let _ = s.wait_for(|v| *v).await;
    }

    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.map.read().unwrap().get(key).cloned()
    }

    pub fn list(&self) -> Vec<KeyValue> {
        self.map.read().unwrap().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
