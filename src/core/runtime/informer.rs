//! The shared informer: one list per cached prefix and ONE watch of the store's root per
//! process, feeding every [`Reflector`](super::reflector::Reflector) and every controller
//! trigger (Kubernetes' shared informers; kube-runtime's watcher + reflector).
//!
//! Why one watch of the root rather than one per kind: every store revision is a write under
//! the root, so the informer knows exactly which revision all its reflectors are current at,
//! and it applies each revision to all of them before publishing it. A reader can therefore
//! (a) wait until the cache has seen a revision it read elsewhere (the service controller
//! waits for the tasks written with the service record it reads), and (b) read several kinds
//! as one consistent cut ([`SharedInformer::consistent`]; the scheduler's usage per instance
//! always agrees with the instance record it compares).
//!
//! Start: list each prefix (at revisions r1 ≤ r2 ≤ …), then watch the root from r1 + 1,
//! skipping for prefix i the events at or below ri (already in its listing). A compacted
//! start revision re-lists; any other watch failure resumes from the last revision + 1.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Duration;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::reflector::{Change, Sink};
use crate::store::{DynStore, EventKind, StoreError};

/// Called with every change of a subscribed prefix, in store order, while the informer
/// holds its dispatch lock: keep it short and never call back into the informer.
pub type Handler = Arc<dyn Fn(&Change) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("the cache has not reached revision {wanted} within {waited:?} (it is at {at})")]
    Behind {
        wanted: i64,
        at: i64,
        waited: Duration,
    },
}

/// How long a reader waits for the cache to catch up before giving up (and retrying later).
pub const CATCH_UP: Duration = Duration::from_secs(5);

struct Entry {
    sink: Arc<dyn Sink>,
    /// The revision this prefix was listed at: events at or below it are in the listing.
    listed_at: i64,
    handlers: Vec<(String, Handler)>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Progress {
    synced: bool,
    revision: i64,
}

struct Inner {
    root: String,
    entries: Mutex<Vec<Entry>>,
    progress: watch::Sender<Progress>,
    _stop: DropGuard,
}

/// A cheap handle; the watch stops when the last handle is dropped.
#[derive(Clone)]
pub struct SharedInformer {
    inner: Arc<Inner>,
}

impl SharedInformer {
    /// Mirror `sinks` (each its own prefix under `root`) from `store`, starting now.
    pub fn start(store: DynStore, root: &str, sinks: Vec<Arc<dyn Sink>>) -> SharedInformer {
        let stop = CancellationToken::new();
        let (progress, _) = watch::channel(Progress::default());
        let inner = Arc::new(Inner {
            root: root.to_string(),
            entries: Mutex::new(
                sinks
                    .into_iter()
                    .map(|sink| Entry {
                        sink,
                        listed_at: 0,
                        handlers: Vec::new(),
                    })
                    .collect(),
            ),
            progress,
            _stop: stop.clone().drop_guard(),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = run(store, weak) => {}
            }
        });
        SharedInformer { inner }
    }

    /// Whether a cached prefix covers `prefix` (then [`SharedInformer::subscribe`] works).
    pub fn covers(&self, prefix: &str) -> bool {
        self.inner
            .entries
            .lock()
            .unwrap()
            .iter()
            .any(|e| prefix.starts_with(e.sink.prefix()))
    }

    /// Call `handler` with every change under `prefix` from now on, after replaying what the
    /// cache already holds (as an informer's AddEventHandler does). False if no cached prefix
    /// covers it: the caller watches the store itself.
    pub fn subscribe(&self, prefix: &str, handler: Handler) -> bool {
        let mut entries = self.inner.entries.lock().unwrap();
        // Read under the dispatch lock: the first listing publishes `synced` while holding it,
        // so a handler is either in that listing's notifications or replayed here, never both.
        let synced = self.is_synced();
        let Some(e) = entries
            .iter_mut()
            .find(|e| prefix.starts_with(e.sink.prefix()))
        else {
            return false;
        };
        if synced {
            e.sink.replay(&mut |c| {
                if c.kv.key.starts_with(prefix) {
                    handler(c)
                }
            });
        }
        e.handlers.push((prefix.to_string(), handler));
        true
    }

    /// Keys currently cached under `prefix` (a cached prefix must cover it).
    pub fn keys(&self, prefix: &str) -> Option<Vec<String>> {
        let entries = self.inner.entries.lock().unwrap();
        let e = entries
            .iter()
            .find(|e| prefix.starts_with(e.sink.prefix()))?;
        Some(
            e.sink
                .keys()
                .into_iter()
                .filter(|k| k.starts_with(prefix))
                .collect(),
        )
    }

    pub fn is_synced(&self) -> bool {
        self.inner.progress.borrow().synced
    }

    /// The store revision every reflector is current at (0 before the first listing).
    pub fn revision(&self) -> i64 {
        self.inner.progress.borrow().revision
    }

    /// Wait until the first listing has arrived (never prune from an unsynced cache).
    pub async fn wait_synced(&self) {
        let mut rx = self.inner.progress.subscribe();
        let _ = rx.wait_for(|p| p.synced).await;
    }

    /// Wait until the cache has seen `revision` (e.g. the revision of an object just read
    /// from the store), at most `timeout`.
    pub async fn wait_for(&self, revision: i64, timeout: Duration) -> Result<(), CacheError> {
        let mut rx = self.inner.progress.subscribe();
        let r = tokio::time::timeout(timeout, rx.wait_for(|p| p.synced && p.revision >= revision))
            .await;
        match r {
            Ok(Ok(_)) => Ok(()),
            _ => Err(CacheError::Behind {
                wanted: revision,
                at: self.revision(),
                waited: timeout,
            }),
        }
    }

    /// Run `f` while no revision is being applied: everything it reads from the reflectors
    /// is one consistent cut of the store, at [`SharedInformer::revision`].
    pub fn consistent<R>(&self, f: impl FnOnce(i64) -> R) -> R {
        let _g = self.inner.entries.lock().unwrap();
        f(self.revision())
    }

    pub fn root(&self) -> &str {
        &self.inner.root
    }
}

fn notify(e: &Entry, c: &Change) {
    for (prefix, h) in &e.handlers {
        if c.kv.key.starts_with(prefix.as_str()) {
            h(c);
        }
    }
}

/// List every prefix, then follow the root watch; re-list on compaction. Ends when the
/// informer is dropped.
async fn run(store: DynStore, weak: std::sync::Weak<Inner>) {
    let mut retry = Duration::from_millis(100);
    'relist: loop {
        let Some(inner) = weak.upgrade() else { return };
        let prefixes: Vec<String> = inner
            .entries
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.sink.prefix().to_string())
            .collect();
        drop(inner);
        let mut lists = Vec::with_capacity(prefixes.len());
        for p in &prefixes {
            match store.range(p).await {
                Ok(r) => lists.push(r),
                Err(e) => {
                    tracing::warn!(prefix = %p, error = %e, "cache list failed; retrying");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(5));
                    continue 'relist;
                }
            }
        }
        let start = lists.iter().map(|(_, r)| *r).min().unwrap_or(0);
        {
            let Some(inner) = weak.upgrade() else { return };
            let mut entries = inner.entries.lock().unwrap();
            for (e, (kvs, rev)) in entries.iter_mut().zip(lists) {
                e.listed_at = rev;
                for c in e.sink.replace(kvs) {
                    notify(e, &c);
                }
            }
            inner.progress.send_replace(Progress {
                synced: true,
                revision: start,
            });
        }
        let mut last = start;
        loop {
            let root = match weak.upgrade() {
                Some(i) => i.root.clone(),
                None => return,
            };
            let mut stream = match store.watch(&root, last + 1).await {
                Ok(s) => s,
                Err(StoreError::Compacted { .. }) => continue 'relist,
                Err(e) => {
                    tracing::warn!(error = %e, "cache watch failed; retrying");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            retry = Duration::from_millis(100);
            while let Some(item) = stream.next().await {
                let events = match item {
                    Ok(events) => events,
                    Err(StoreError::Compacted { .. }) => continue 'relist,
                    Err(e) => {
                        tracing::debug!(error = %e, "cache watch broke; resuming");
                        break;
                    }
                };
                let Some(inner) = weak.upgrade() else { return };
                let mut entries = inner.entries.lock().unwrap();
                for ev in events {
                    last = last.max(ev.kv.mod_revision);
                    for e in entries.iter_mut() {
                        if !ev.kv.key.starts_with(e.sink.prefix())
                            || ev.kv.mod_revision <= e.listed_at
                        {
                            continue;
                        }
                        let c = match ev.kind {
                            EventKind::Put => e.sink.apply(ev.kv.clone()),
                            EventKind::Delete => e.sink.delete(ev.kv.clone()),
                        };
                        notify(e, &c);
                    }
                }
                // Published only once the whole batch is applied: readers waiting for a
                // revision see all of its writes.
                inner.progress.send_replace(Progress {
                    synced: true,
                    revision: last,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::reflector::{ChangeKind, Reflector};
    use crate::store::embedded::EmbeddedStore;

    fn decode(kv: &crate::store::KeyValue) -> Option<String> {
        String::from_utf8(kv.value.clone()).ok()
    }

    #[tokio::test]
    async fn follows_every_prefix_from_one_watch_and_knows_its_revision() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        store.put("/r/a/1", b"one".to_vec()).await.unwrap();
        let a: Arc<Reflector<String>> = Arc::new(Reflector::new("/r/a/", decode));
        let b: Arc<Reflector<String>> = Arc::new(Reflector::new("/r/b/", decode));
        let inf = SharedInformer::start(store.clone(), "/r/", vec![a.clone(), b.clone()]);
        inf.wait_synced().await;
        assert_eq!(a.len(), 1);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        assert!(inf.subscribe(
            "/r/b/",
            Arc::new(move |c: &Change| s.lock().unwrap().push((c.kind, c.kv.key.clone())))
        ));
        assert!(!inf.subscribe("/elsewhere/", Arc::new(|_: &Change| {})));
        let rev = store.put("/r/b/2", b"two".to_vec()).await.unwrap();
        // A write outside every cached prefix still advances the revision.
        let other = store.put("/r/zzz", b"x".to_vec()).await.unwrap();
        inf.wait_for(rev, CATCH_UP).await.unwrap();
        assert_eq!(b.get("/r/b/2").as_deref().map(String::as_str), Some("two"));
        inf.wait_for(other, CATCH_UP).await.unwrap();
        assert_eq!(inf.revision(), other);
        store.delete("/r/b/2").await.unwrap();
        let last = store.revision().await.unwrap();
        inf.wait_for(last, CATCH_UP).await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (ChangeKind::Applied, "/r/b/2".to_string()),
                (ChangeKind::Deleted, "/r/b/2".to_string())
            ]
        );
        assert!(inf
            .wait_for(last + 100, Duration::from_millis(50))
            .await
            .is_err());
    }
}
