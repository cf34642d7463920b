//! Leader election and write fencing for control planes sharing one store (ARCHITECTURE.md,
//! "Leadership").
//!
//! A lease-held key is not mutual exclusion on its own: a paused leader may wake after its lease
//! expired and write as if it still led. So the leader's work gets a [`FencedStore`] that adds
//! "the leader key still has my revision" to every transaction; a deposed leader's writes fail.

use std::future::Future;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::{
    Compare, DynStore, KeyValue, Op, Result, Store, StoreError, Txn, TxnResult, WatchStream,
    MAX_TXN_COMPARES,
};

/// The key the controllers' leader holds with its lease.
pub const LEADER_KEY: &str = "/berth/leader/controllers";

/// What the leader key holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LeaderRecord {
    pub holder: String,
    /// When this term began (RFC 3339).
    pub since: String,
}

/// This process's view of the leadership, for `/v1/controllers`, the dashboard and metrics.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LeaderStatus {
    /// This process's candidate id.
    pub me: String,
    /// The current leader's id, if any.
    pub leader: Option<String>,
    /// The leader key's revision: increases with every new term.
    pub term: i64,
    /// When the current term began.
    pub since: Option<String>,
    pub is_leader: bool,
    /// Leadership changes this process has seen (terms begun or ended).
    pub changes: u64,
    /// When this process last saw the leader change.
    pub last_change: Option<String>,
}

/// A shared, cheaply cloned handle on [`LeaderStatus`].
#[derive(Debug, Clone, Default)]
pub struct Leadership {
    inner: Arc<RwLock<LeaderStatus>>,
}

impl Leadership {
    pub fn new(me: &str) -> Self {
        let l = Leadership::default();
        l.inner.write().unwrap().me = me.to_string();
        l
    }
    pub fn get(&self) -> LeaderStatus {
        self.inner.read().unwrap().clone()
    }
    fn observe(&self, kv: Option<&KeyValue>) {
        let rec = kv.and_then(|kv| serde_json::from_slice::<LeaderRecord>(&kv.value).ok());
        let mut s = self.inner.write().unwrap();
        let leader = rec.as_ref().map(|r| r.holder.clone());
        let term = kv.map(|kv| kv.mod_revision).unwrap_or(0);
        if leader != s.leader || (term != s.term && leader.is_some()) {
            s.changes += 1;
            s.last_change = Some(chrono::Utc::now().to_rfc3339());
        }
        s.is_leader = leader.as_deref() == Some(s.me.as_str());
        s.leader = leader;
        s.term = term;
        s.since = rec.map(|r| r.since);
    }
}

/// A store whose every transaction is fenced by the leader key's revision. Reads, watches and
/// leases pass through. Once a write finds the fence broken, `deposed` is cancelled and every
/// later write fails at once.
pub struct FencedStore {
    inner: DynStore,
    key: String,
    revision: i64,
    deposed: CancellationToken,
}

impl FencedStore {
    pub fn new(inner: DynStore, key: &str, revision: i64, deposed: CancellationToken) -> Self {
        FencedStore {
            inner,
            key: key.to_string(),
            revision,
            deposed,
        }
    }

    fn fence(&self) -> Compare {
        Compare::mod_revision(self.key.clone(), self.revision)
    }

    fn not_leader(&self) -> StoreError {
        StoreError::Unavailable(format!(
            "this control plane is no longer the leader (term {}): write refused",
            self.revision
        ))
    }

    /// Whether the leader key still carries this term's revision.
    async fn fence_holds(&self) -> Result<bool> {
        let kv = self.inner.get(&self.key).await?;
        Ok(kv.is_some_and(|kv| kv.mod_revision == self.revision))
    }
}

#[async_trait]
impl Store for FencedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get(key).await
    }
    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        self.inner.range(prefix).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        if self.deposed.is_cancelled() {
            return Err(self.not_leader());
        }
        if txn.compares.len() > MAX_TXN_COMPARES {
            return Err(StoreError::Invalid(format!(
                "a fenced transaction may hold at most {MAX_TXN_COMPARES} compares"
            )));
        }
        let Txn {
            mut compares,
            success,
            failure,
        } = txn;
        compares.push(self.fence());
        let res = self
            .inner
            .txn(Txn {
                compares,
                success,
                failure: vec![],
            })
            .await?;
        if res.succeeded {
            return Ok(res);
        }
        // Either the caller's own compares failed (an ordinary conflict) or the fence did.
        if !self.fence_holds().await? {
            self.deposed.cancel();
            return Err(self.not_leader());
        }
        if failure.is_empty() {
            return Ok(res);
        }
        // The failure branch runs fenced too (not atomically with the failed compares, which
        // no caller relies on: they re-read and retry).
        let res2 = self
            .inner
            .txn(Txn {
                compares: vec![self.fence()],
                success: failure,
                failure: vec![],
            })
            .await?;
        if !res2.succeeded {
            self.deposed.cancel();
            return Err(self.not_leader());
        }
        Ok(TxnResult {
            succeeded: false,
            revision: res2.revision,
        })
    }
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        self.inner.watch(prefix, from_revision).await
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<i64> {
        self.inner.lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: i64) -> Result<()> {
        self.inner.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: i64) -> Result<()> {
        self.inner.lease_revoke(lease).await
    }
    async fn revision(&self) -> Result<i64> {
        self.inner.revision().await
    }
    fn failure(&self) -> Option<String> {
        self.inner.failure()
    }
}

/// Timings of an election.
#[derive(Debug, Clone, Copy)]
pub struct ElectionConfig {
    /// The leader key's lease: how long a dead leader blocks a successor.
    pub ttl: Duration,
    /// How often a follower looks at the leader key.
    pub poll: Duration,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            ttl: Duration::from_secs(8),
            poll: Duration::from_millis(500),
        }
    }
}

/// Try to become the leader: `Some((lease, revision))` if this call took the key.
async fn campaign(
    store: &DynStore,
    me: &str,
    ttl: Duration,
) -> Result<Option<(i64, i64, KeyValue)>> {
    if store.get(LEADER_KEY).await?.is_some() {
        return Ok(None);
    }
    let lease = store.lease_grant(ttl).await?;
    let rec = LeaderRecord {
        holder: me.to_string(),
        since: chrono::Utc::now().to_rfc3339(),
    };
    let value = serde_json::to_vec(&rec).expect("leader record serialises");
    let res = store
        .txn(
            Txn::new()
                .when(Compare::absent(LEADER_KEY))
                .and_then(Op::put_with_lease(LEADER_KEY, value.clone(), lease)),
        )
        .await?;
    if !res.succeeded {
        let _ = store.lease_revoke(lease).await;
        return Ok(None);
    }
    let kv = KeyValue {
        key: LEADER_KEY.into(),
        value,
        create_revision: res.revision,
        mod_revision: res.revision,
        version: 1,
        lease,
    };
    Ok(Some((lease, res.revision, kv)))
}

/// Hold the lease of a term until it is lost, `deposed` fires or `shutdown` does. Gives up
/// leadership a little before the lease could have expired unseen.
async fn hold(
    store: &DynStore,
    lease: i64,
    cfg: ElectionConfig,
    deposed: &CancellationToken,
    shutdown: &CancellationToken,
) {
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = deposed.cancelled() => return,
            _ = tokio::time::sleep(cfg.ttl / 4) => {}
        }
        match store.lease_keep_alive(lease).await {
            Ok(()) => last_ok = Instant::now(),
            Err(StoreError::LeaseNotFound(_)) => {
                tracing::warn!("leader lease expired; stepping down");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "leader lease keep-alive failed");
                if last_ok.elapsed() >= cfg.ttl * 3 / 4 {
                    tracing::warn!("cannot renew the leader lease; stepping down");
                    return;
                }
            }
        }
    }
}

/// Run `lead` whenever this process is the elected leader, until `shutdown`. `lead` gets the
/// fenced store to do all its writes through and a token that is cancelled when the term ends;
/// it must return soon after. Leadership is handed over (lease revoked) on shutdown.
pub async fn run<F, Fut>(
    store: DynStore,
    leadership: Leadership,
    cfg: ElectionConfig,
    shutdown: CancellationToken,
    mut lead: F,
) where
    F: FnMut(DynStore, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let me = leadership.get().me;
    while !shutdown.is_cancelled() {
        match campaign(&store, &me, cfg.ttl).await {
            Ok(Some((lease, revision, kv))) => {
                leadership.observe(Some(&kv));
                tracing::info!(holder = %me, term = revision, "elected leader of the controllers");
                let term = shutdown.child_token();
                let fenced: DynStore = Arc::new(FencedStore::new(
                    store.clone(),
                    LEADER_KEY,
                    revision,
                    term.clone(),
                ));
                let work = tokio::spawn(lead(fenced, term.clone()));
                hold(&store, lease, cfg, &term, &shutdown).await;
                term.cancel();
                let _ = work.await;
                // Whether deposed or shutting down, let a successor in at once.
                let _ = store.lease_revoke(lease).await;
                leadership.observe(None);
                tracing::info!(holder = %me, term = revision, "leadership ended");
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "leader election: store unavailable"),
        }
        if let Ok(kv) = store.get(LEADER_KEY).await {
            leadership.observe(kv.as_ref());
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(cfg.poll) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn store() -> (tempfile::TempDir, DynStore) {
        let dir = tempfile::tempdir().unwrap();
        let s: DynStore = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        (dir, s)
    }

    #[tokio::test]
    async fn deposed_leader_cannot_write() {
        let (_d, s) = store();
        let lease = s.lease_grant(Duration::from_secs(30)).await.unwrap();
        let res = s
            .txn(Txn::new().and_then(Op::put_with_lease(LEADER_KEY, b"{}".to_vec(), lease)))
            .await
            .unwrap();
        let deposed = CancellationToken::new();
        let f = FencedStore::new(s.clone(), LEADER_KEY, res.revision, deposed.clone());
        f.put("/berth/x", b"1".to_vec()).await.unwrap();
        // An ordinary conflict is not a deposition.
        let conflict = f
            .txn(
                Txn::new()
                    .when(Compare::absent("/berth/x"))
                    .and_then(Op::put("/berth/x", b"2".to_vec())),
            )
            .await
            .unwrap();
        assert!(!conflict.succeeded);
        assert!(!deposed.is_cancelled());
        // Another term begins: the old leader's writes fail, and keep failing.
        s.lease_revoke(lease).await.unwrap();
        s.put(LEADER_KEY, b"{}".to_vec()).await.unwrap();
        let err = f.put("/berth/x", b"3".to_vec()).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(deposed.is_cancelled());
        assert_eq!(s.get("/berth/x").await.unwrap().unwrap().value, b"1");
    }

    #[tokio::test]
    async fn one_leader_at_a_time_and_handover_on_shutdown() {
        let (_d, s) = store();
        let cfg = ElectionConfig {
            ttl: Duration::from_secs(2),
            poll: Duration::from_millis(50),
        };
        let running = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        let mut tokens = Vec::new();
        let mut leaderships = Vec::new();
        for i in 0..3 {
            let shutdown = CancellationToken::new();
            let l = Leadership::new(&format!("cp{i}"));
            let (r, m) = (running.clone(), max.clone());
            handles.push(tokio::spawn(run(
                s.clone(),
                l.clone(),
                cfg,
                shutdown.clone(),
                move |_st, term| {
                    let (r, m) = (r.clone(), m.clone());
                    async move {
                        let n = r.fetch_add(1, Ordering::SeqCst) + 1;
                        m.fetch_max(n, Ordering::SeqCst);
                        term.cancelled().await;
                        r.fetch_sub(1, Ordering::SeqCst);
                    }
                },
            )));
            tokens.push(shutdown);
            leaderships.push(l);
        }
        let wait_leader =
            |ls: &[Leadership]| -> Option<usize> { ls.iter().position(|l| l.get().is_leader) };
        let mut first = None;
        for _ in 0..100 {
            first = wait_leader(&leaderships);
            if first.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let first = first.expect("a leader is elected");
        tokens[first].cancel();
        let mut second = None;
        for _ in 0..100 {
            second = leaderships
                .iter()
                .enumerate()
                .position(|(i, l)| i != first && l.get().is_leader);
            if second.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(second.is_some(), "a successor takes over after a handover");
        for t in &tokens {
            t.cancel();
        }
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(max.load(Ordering::SeqCst), 1, "never two leaders at once");
    }
}
