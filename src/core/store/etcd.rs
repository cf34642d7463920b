//! etcd backend (etcd >= 3.4) on the etcd-client crate.
//!
//! Watches are resumed transparently from the last delivered revision + 1 when the gRPC stream
//! breaks (etcd-client does not reconnect watches by itself); compaction ends the stream with
//! `StoreError::Compacted` so the caller re-lists.
//!
//! The store compacts etcd on a schedule, as kube-apiserver does: every [`COMPACTION_INTERVAL`]
//! it compacts to the revision it saw one period earlier, so history (and etcd's database) stays
//! bounded by one period of writes while every watcher keeps a full period to catch up.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare as EtcdCompare, CompareOp, ConnectOptions, Error as EtcdError,
    EventType, GetOptions, Identity, PutOptions, TlsOptions, Txn as EtcdTxn, TxnOp, WatchOptions,
    Watcher,
};
use futures::StreamExt;

use super::{
    Compare, EventKind, KeyValue, Op, Result, Store, StoreError, Txn, TxnResult, WatchEvent,
    WatchStream,
};

/// Per-request deadline for unary calls; a hung connection must not hang a controller forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Large ranges (every task of a big cluster) exceed tonic's 4 MiB default.
const MAX_DECODE: usize = 256 << 20;
/// Delay between attempts to re-establish a broken watch.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// gRPC status codes (tonic is not re-exported by etcd-client).
const CODE_INVALID_ARGUMENT: i32 = 3;
const CODE_NOT_FOUND: i32 = 5;
const CODE_FAILED_PRECONDITION: i32 = 9;
const CODE_OUT_OF_RANGE: i32 = 11;
const CODE_UNAVAILABLE: i32 = 14;
/// How often the store compacts etcd (kube-apiserver's default `--etcd-compaction-interval`).
pub const COMPACTION_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Aborts the compaction task when the last clone of the store is dropped.
struct CompactorGuard(tokio::task::JoinHandle<()>);

impl Drop for CompactorGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A store backed by an etcd cluster. Cheap to share; every call clones the underlying client.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    _compactor: Option<std::sync::Arc<CompactorGuard>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

fn map_err(e: EtcdError) -> StoreError {
    match e {
        EtcdError::GRpcStatus(s) => {
            let code = s.code() as i32;
            let msg = s.message().to_string();
            match code {
                CODE_INVALID_ARGUMENT | CODE_FAILED_PRECONDITION | CODE_OUT_OF_RANGE => {
                    StoreError::Invalid(msg)
                }
                _ => StoreError::Unavailable(format!("etcd: {msg} ({:?})", s.code())),
            }
        }
        EtcdError::InvalidArgs(m) => StoreError::Invalid(m),
        other => StoreError::Unavailable(format!("etcd: {other}")),
    }
}

fn is_lease_not_found(e: &EtcdError) -> bool {
    match e {
        EtcdError::GRpcStatus(s) => {
            s.code() as i32 == CODE_NOT_FOUND || s.message().contains("lease not found")
        }
        EtcdError::LeaseKeepAliveError(m) => m.contains("lease not found"),
        _ => false,
    }
}

/// Attempts of one request when the member the balancer picked is down.
const ATTEMPTS: u32 = 8;

/// Whether the request never reached etcd (no connection could be made), so sending it again
/// cannot apply it twice, even a write.
fn not_sent(e: &EtcdError) -> bool {
    let m = e.to_string();
    m.contains("tcp connect error") || m.contains("Connection refused") || m.contains("dns error")
}

/// Whether trying again may help: the member was unreachable or had no leader.
fn transient(e: &EtcdError) -> bool {
    match e {
        EtcdError::GRpcStatus(s) => s.code() as i32 == CODE_UNAVAILABLE,
        EtcdError::TransportError(_) | EtcdError::IoError(_) => true,
        _ => false,
    }
}

/// Send a request again when a member is down: with several endpoints the balancer may pick a
/// dead one, and the next attempt picks another. Reads retry any transient error; writes only
/// those where the request was never sent.
async fn retrying<T, F, Fut>(write: bool, mut f: F) -> std::result::Result<T, EtcdError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, EtcdError>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Err(e) if attempt < ATTEMPTS && (not_sent(&e) || (!write && transient(&e))) => {
                tokio::time::sleep(Duration::from_millis(25 * u64::from(attempt))).await;
                attempt += 1;
            }
            r => return r,
        }
    }
}

async fn timed<T>(fut: impl Future<Output = std::result::Result<T, EtcdError>>) -> Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(r) => r.map_err(map_err),
        Err(_) => Err(StoreError::Unavailable(format!(
            "etcd request timed out after {REQUEST_TIMEOUT:?}"
        ))),
    }
}

fn convert_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

fn convert_event(ev: &etcd_client::Event) -> Option<WatchEvent> {
    let kv = ev.kv()?;
    Some(WatchEvent {
        kind: match ev.event_type() {
            EventType::Put => EventKind::Put,
            EventType::Delete => EventKind::Delete,
        },
        kv: convert_kv(kv),
        prev: ev.prev_kv().map(convert_kv),
    })
}

/// Reads the value each delete removed (the key at the revision before the delete), a few at
/// a time. Left `None` when that revision is compacted or etcd does not answer: a consumer
/// that needs it (the agent routes' per-instance filter) then treats the delete as unknown.
async fn fill_deleted(client: &Client, events: &mut [WatchEvent]) {
    use futures::StreamExt;
    let wanted: Vec<(usize, String, i64)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == EventKind::Delete && e.prev.is_none())
        .map(|(i, e)| (i, e.kv.key.clone(), e.kv.mod_revision - 1))
        .collect();
    if wanted.is_empty() {
        return;
    }
    let found: Vec<(usize, Option<KeyValue>)> = futures::stream::iter(wanted)
        .map(|(i, key, rev)| {
            let mut kv = client.kv_client();
            async move {
                let opts = GetOptions::new().with_revision(rev);
                let got = tokio::time::timeout(REQUEST_TIMEOUT, kv.get(key.as_str(), Some(opts)))
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .and_then(|r| r.kvs().first().map(convert_kv));
                (i, got)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (i, prev) in found {
        events[i].prev = prev;
    }
}

fn convert_op(op: &Op) -> TxnOp {
    match op {
        Op::Put { key, value, lease } => TxnOp::put(
            key.as_str(),
            value.clone(),
            (*lease != 0).then(|| PutOptions::new().with_lease(*lease)),
        ),
        Op::Delete { key } => TxnOp::delete(key.as_str(), None),
    }
}

/// TLS to etcd (`etcds://` URLs): the CA that signed etcd's server certificate and, for
/// client-certificate authentication, this client's certificate and key (PEM files).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl EtcdTls {
    fn options(&self) -> anyhow::Result<TlsOptions> {
        let read = |p: &std::path::Path, what: &str| {
            std::fs::read(p)
                .map_err(|e| anyhow::anyhow!("reading the etcd {what} {}: {e}", p.display()))
        };
        let mut tls = TlsOptions::new();
        if let Some(ca) = &self.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca, "CA certificate")?));
        }
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                tls = tls.identity(Identity::from_pem(
                    read(c, "client certificate")?,
                    read(k, "client key")?,
                ));
            }
            (None, None) => {}
            _ => anyhow::bail!("--etcd-cert and --etcd-key go together"),
        }
        Ok(tls)
    }
}

impl EtcdStore {
    /// Connect to etcd (`http://host:2379` endpoints), check that it answers, and compact it
    /// every [`COMPACTION_INTERVAL`].
    pub async fn connect(endpoints: &[String]) -> anyhow::Result<Self> {
        Self::connect_with(endpoints, None, Some(COMPACTION_INTERVAL)).await
    }

    /// [`connect`](Self::connect) with another compaction period (`None`: never compact).
    pub async fn connect_with_compaction(
        endpoints: &[String],
        compaction: Option<Duration>,
    ) -> anyhow::Result<Self> {
        Self::connect_with(endpoints, None, compaction).await
    }

    /// Connect over TLS when `tls` is given (`https://` endpoints).
    pub async fn connect_with(
        endpoints: &[String],
        tls: Option<&EtcdTls>,
        compaction: Option<Duration>,
    ) -> anyhow::Result<Self> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            // etcd rejects pings more frequent than every 5 s by default.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_require_leader(true);
        if let Some(tls) = tls {
            opts = opts.with_tls(tls.options()?);
        }
        let client = Client::connect(endpoints, Some(opts))
            .await
            .map_err(|e| anyhow::anyhow!("connecting to etcd at {endpoints:?}: {e}"))?;
        let mut store = EtcdStore {
            client,
            _compactor: None,
        };
        store
            .revision()
            .await
            .map_err(|e| anyhow::anyhow!("etcd at {endpoints:?} does not answer: {e}"))?;
        if let Some(period) = compaction {
            let task = tokio::spawn(compact_every(store.clone(), period));
            store._compactor = Some(std::sync::Arc::new(CompactorGuard(task)));
        }
        Ok(store)
    }

    /// Compact etcd's history up to `revision` (physically). A revision already compacted is
    /// not an error: another control plane did it first.
    pub async fn compact(&self, revision: i64) -> Result<()> {
        let mut client = self.client.clone();
        let opts = etcd_client::CompactionOptions::new().with_physical();
        match timed(client.compact(revision, Some(opts))).await {
            Ok(_) => Ok(()),
            Err(StoreError::Invalid(m)) if m.contains("compacted") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The underlying etcd-client handle (e.g. for compaction or maintenance calls).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_DECODE)
    }

    fn first_lease(txn: &Txn) -> i64 {
        txn.success
            .iter()
            .chain(&txn.failure)
            .find_map(|op| match op {
                Op::Put { lease, .. } if *lease != 0 => Some(*lease),
                _ => None,
            })
            .unwrap_or(0)
    }
}

/// Every `period`, compact to the revision seen one period earlier (kube-apiserver's scheme: a
/// watcher that is less than one period behind never sees `Compacted`). The task holds a clone
/// without a guard, so dropping the last user-held store ends it.
async fn compact_every(store: EtcdStore, period: Duration) {
    let store = EtcdStore {
        client: store.client,
        _compactor: None,
    };
    let mut seen: Option<i64> = None;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(rev) = seen {
            match store.compact(rev).await {
                Ok(()) => tracing::debug!(revision = rev, "compacted etcd"),
                Err(e) => tracing::warn!(revision = rev, error = %e, "etcd compaction failed"),
            }
        }
        match store.revision().await {
            Ok(r) => seen = Some(r),
            Err(e) => tracing::warn!(error = %e, "etcd compaction: cannot read the revision"),
        }
    }
}

/// State of one logical watch that may span several etcd watch streams.
struct WatchState {
    client: Client,
    prefix: String,
    /// First revision not yet delivered.
    next_revision: i64,
    conn: Option<(Watcher, etcd_client::WatchStream)>,
    ready: VecDeque<Result<Vec<WatchEvent>>>,
    done: bool,
    backoff: Duration,
}

async fn open_watch(
    client: &Client,
    prefix: &str,
    from: i64,
) -> std::result::Result<(Watcher, etcd_client::WatchStream), EtcdError> {
    // No `with_prev_key`: etcd would read the previous revision of every event for every
    // watcher; the value before a delete is read on its own (`fill_deleted`).
    let opts = WatchOptions::new().with_prefix().with_start_revision(from);
    let mut wc = client.watch_client().max_decoding_message_size(MAX_DECODE);
    match tokio::time::timeout(REQUEST_TIMEOUT, wc.watch(prefix, Some(opts))).await {
        Ok(r) => r,
        Err(_) => Err(EtcdError::WatchError("creating watch timed out".into())),
    }
}

impl WatchState {
    async fn next_item(&mut self) -> Option<Result<Vec<WatchEvent>>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            let Some((_, stream)) = self.conn.as_mut() else {
                match open_watch(&self.client, &self.prefix, self.next_revision).await {
                    Ok(c) => self.conn = Some(c),
                    Err(e) => {
                        tracing::warn!(
                            prefix = %self.prefix,
                            "re-establishing etcd watch from revision {} failed: {e}",
                            self.next_revision
                        );
                        self.back_off().await;
                    }
                }
                continue;
            };
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.compact_revision() > 0 {
                        self.done = true;
                        self.conn = None;
                        return Some(Err(StoreError::Compacted {
                            requested: self.next_revision,
                            compacted: resp.compact_revision(),
                        }));
                    }
                    if resp.canceled() {
                        tracing::warn!(
                            prefix = %self.prefix,
                            "etcd canceled watch ({}); resuming from revision {}",
                            resp.cancel_reason(),
                            self.next_revision
                        );
                        self.conn = None;
                        self.back_off().await;
                        continue;
                    }
                    self.backoff = INITIAL_BACKOFF;
                    let mut events: Vec<WatchEvent> =
                        resp.events().iter().filter_map(convert_event).collect();
                    fill_deleted(&self.client, &mut events).await;
                    self.push_events(events);
                }
                Ok(None) | Err(_) => {
                    // Stream broke (etcd restart, network): resume where we left off.
                    self.conn = None;
                    self.back_off().await;
                }
            }
        }
    }

    async fn back_off(&mut self) {
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Group a response's events per revision (etcd never splits a revision across responses
    /// unless fragmenting, which we do not request).
    fn push_events(&mut self, events: Vec<WatchEvent>) {
        let mut group: Vec<WatchEvent> = Vec::new();
        let mut group_rev = 0;
        for we in events {
            let rev = we.kv.mod_revision;
            if rev < self.next_revision {
                continue; // already delivered before a reconnect
            }
            if rev != group_rev && !group.is_empty() {
                self.ready.push_back(Ok(std::mem::take(&mut group)));
            }
            group_rev = rev;
            group.push(we);
        }
        if !group.is_empty() {
            self.ready.push_back(Ok(group));
        }
        if group_rev >= self.next_revision {
            self.next_revision = group_rev + 1;
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        if key.is_empty() {
            return Ok(None);
        }
        let kv = self.kv();
        let resp = timed(retrying(false, || {
            let mut kv = kv.clone();
            async move { kv.get(key, None).await }
        }))
        .await?;
        Ok(resp.kvs().first().map(convert_kv))
    }

    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        let kv = self.kv();
        let resp = timed(retrying(false, || {
            let mut kv = kv.clone();
            async move { kv.get(prefix, Some(GetOptions::new().with_prefix())).await }
        }))
        .await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        Ok((resp.kvs().iter().map(convert_kv).collect(), rev))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::ModRevision { key, revision } => {
                    EtcdCompare::mod_revision(key.as_str(), CompareOp::Equal, *revision)
                }
            })
            .collect();
        let success: Vec<TxnOp> = txn.success.iter().map(convert_op).collect();
        let failure: Vec<TxnOp> = txn.failure.iter().map(convert_op).collect();
        let req = EtcdTxn::new()
            .when(compares)
            .and_then(success)
            .or_else(failure);
        let kv = self.kv();
        let send = retrying(true, || {
            let (mut kv, req) = (kv.clone(), req.clone());
            async move { kv.txn(req).await }
        });
        let resp = match tokio::time::timeout(REQUEST_TIMEOUT, send).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if is_lease_not_found(&e) => {
                return Err(StoreError::LeaseNotFound(Self::first_lease(&txn)))
            }
            Ok(Err(e)) => return Err(map_err(e)),
            Err(_) => {
                return Err(StoreError::Unavailable(
                    "etcd txn timed out (it may or may not have been applied)".into(),
                ))
            }
        };
        Ok(TxnResult {
            succeeded: resp.succeeded(),
            revision: resp.header().map_or(0, |h| h.revision()),
        })
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        let from = if from_revision <= 0 {
            self.revision().await? + 1
        } else {
            from_revision
        };
        let conn = open_watch(&self.client, prefix, from)
            .await
            .map_err(map_err)?;
        let state = WatchState {
            client: self.client.clone(),
            prefix: prefix.to_string(),
            next_revision: from,
            conn: Some(conn),
            ready: VecDeque::new(),
            done: false,
            backoff: INITIAL_BACKOFF,
        };
        Ok(futures::stream::unfold(state, |mut st| async move {
            let item = st.next_item().await?;
            Some((item, st))
        })
        .boxed())
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<i64> {
        // etcd TTLs are whole seconds (and at least ~2 s in practice); round up.
        let secs = (ttl.as_millis().div_ceil(1000) as i64).max(1);
        let lc = self.client.lease_client();
        // An extra lease from a retried grant is harmless: nothing is attached, it expires.
        Ok(timed(retrying(false, || {
            let mut lc = lc.clone();
            async move { lc.grant(secs, None).await }
        }))
        .await?
        .id())
    }

    async fn lease_keep_alive(&self, lease: i64) -> Result<()> {
        let lc = self.client.lease_client();
        // One request/response round trip; etcd-client reports TTL <= 0 as "lease not found".
        let send = retrying(false, || {
            let mut lc = lc.clone();
            async move { lc.keep_alive(lease).await }
        });
        match tokio::time::timeout(REQUEST_TIMEOUT, send).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if is_lease_not_found(&e) => Err(StoreError::LeaseNotFound(lease)),
            Ok(Err(e)) => Err(map_err(e)),
            Err(_) => Err(StoreError::Unavailable("etcd keep-alive timed out".into())),
        }
    }

    async fn lease_revoke(&self, lease: i64) -> Result<()> {
        let mut lc = self.client.lease_client();
        match tokio::time::timeout(REQUEST_TIMEOUT, lc.revoke(lease)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if is_lease_not_found(&e) => Err(StoreError::LeaseNotFound(lease)),
            Ok(Err(e)) => Err(map_err(e)),
            Err(_) => Err(StoreError::Unavailable(
                "etcd lease revoke timed out".into(),
            )),
        }
    }

    async fn revision(&self) -> Result<i64> {
        let kv = self.kv();
        let resp = timed(retrying(false, || {
            let mut kv = kv.clone();
            async move {
                kv.get("\0", Some(GetOptions::new().with_count_only()))
                    .await
            }
        }))
        .await?;
        resp.header()
            .map(|h| h.revision())
            .ok_or_else(|| StoreError::Unavailable("etcd response without header".into()))
    }
}
