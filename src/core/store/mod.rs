//! The store: the only shared state between berth's components (ARCHITECTURE.md, "Store").
//!
//! One trait, two backends: [`embedded::EmbeddedStore`] (durable write-ahead log on local disk)
//! and [`etcd::EtcdStore`]. Both give a global monotonic revision, compare-and-swap
//! transactions on a key's mod revision, ordered gap-free watches from a revision, and leases.
//! [`remote::RemoteStore`] is a joined agent's view of the store through the API server.

pub mod election;
pub mod embedded;
pub mod etcd;
pub mod remote;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

/// A key with its value and the revisions etcd would report for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the transaction that created the key (since its last deletion).
    pub create_revision: i64,
    /// Revision of the last transaction that modified the key.
    pub mod_revision: i64,
    /// Number of modifications since creation (1 for a fresh key).
    pub version: i64,
    /// Lease the key is attached to, 0 for none.
    pub lease: i64,
}

/// A comparison inside a transaction. `mod_revision == 0` means "the key does not exist".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compare {
    ModRevision { key: String, revision: i64 },
}

impl Compare {
    pub fn mod_revision(key: impl Into<String>, revision: i64) -> Self {
        Compare::ModRevision {
            key: key.into(),
            revision,
        }
    }
    /// The key must not exist.
    pub fn absent(key: impl Into<String>) -> Self {
        Self::mod_revision(key, 0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: i64,
    },
    Delete {
        key: String,
    },
}

impl Op {
    pub fn put(key: impl Into<String>, value: Vec<u8>) -> Self {
        Op::Put {
            key: key.into(),
            value,
            lease: 0,
        }
    }
    pub fn put_with_lease(key: impl Into<String>, value: Vec<u8>, lease: i64) -> Self {
        Op::Put {
            key: key.into(),
            value,
            lease,
        }
    }
    pub fn delete(key: impl Into<String>) -> Self {
        Op::Delete { key: key.into() }
    }
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// If every compare holds, apply `success` atomically; otherwise apply `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn when(mut self, c: Compare) -> Self {
        self.compares.push(c);
        self
    }
    pub fn and_then(mut self, op: Op) -> Self {
        self.success.push(op);
        self
    }
    pub fn or_else(mut self, op: Op) -> Self {
        self.failure.push(op);
        self
    }
}

/// etcd's default `--max-txn-ops`: no list of a transaction (compares, success, failure) may
/// hold more. Writers chunk to this so berth runs on an etcd started with default flags.
pub const MAX_TXN_OPS: usize = 128;
/// Compares a writer may put in one transaction: one of etcd's 128 is kept for the leader
/// fence ([`election::FencedStore`] adds it to every controller write).
pub const MAX_TXN_COMPARES: usize = MAX_TXN_OPS - 1;
/// Bytes of values one transaction may carry: etcd's default request limit is 1.5 MiB; keep
/// room for keys and framing.
pub const MAX_TXN_BYTES: usize = 1024 * 1024;

/// Size of an op for [`MAX_TXN_BYTES`] accounting.
pub fn op_bytes(op: &Op) -> usize {
    match op {
        Op::Put { key, value, .. } => key.len() + value.len(),
        Op::Delete { key } => key.len(),
    }
}

/// Split unconditional ops into groups that each fit one transaction within etcd's defaults,
/// keeping order. Only for writes that need no fence across groups.
pub fn chunk_ops(ops: Vec<Op>) -> Vec<Vec<Op>> {
    let mut out: Vec<Vec<Op>> = Vec::new();
    let mut cur: Vec<Op> = Vec::new();
    let mut bytes = 0;
    for op in ops {
        let n = op_bytes(&op);
        if !cur.is_empty() && (cur.len() == MAX_TXN_OPS || bytes + n > MAX_TXN_BYTES) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += n;
        cur.push(op);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    pub succeeded: bool,
    /// The store revision after the transaction (unchanged if nothing was written).
    pub revision: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch. For a delete, `kv.value` is empty and `kv.mod_revision` is the
/// revision of the deletion; `prev` carries the value it deleted when known. A put carries no
/// previous value (`prev` is `None`): nothing needs it, and on etcd asking for it costs a read
/// of the old revision per event per watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev: Option<KeyValue>,
}

/// Watch events of one revision are delivered together, revisions strictly increasing.
pub type WatchStream = BoxStream<'static, Result<Vec<WatchEvent>, StoreError>>;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The requested watch start revision has been compacted away; re-list and watch again.
    #[error("revision {requested} has been compacted (oldest available {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    #[error("lease {0} not found or expired")]
    LeaseNotFound(i64),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store I/O error: {0}")]
    Io(String),
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    #[error("invalid store request: {0}")]
    Invalid(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// All keys starting with `prefix`, sorted by key, and the revision the read was made at.
    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)>;
    async fn txn(&self, txn: Txn) -> Result<TxnResult>;
    /// Events for keys under `prefix` with revision >= `from_revision`, in order, no gaps.
    /// `from_revision` older than the compaction point yields `StoreError::Compacted`
    /// (either from this call or as the first stream item).
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream>;
    async fn lease_grant(&self, ttl: Duration) -> Result<i64>;
    /// Refresh the lease's TTL. Errors with `LeaseNotFound` once it expired.
    async fn lease_keep_alive(&self, lease: i64) -> Result<()>;
    /// Revoke the lease, deleting every key attached to it.
    async fn lease_revoke(&self, lease: i64) -> Result<()>;
    /// The store's current revision.
    async fn revision(&self) -> Result<i64>;
    /// Why this store can no longer write, once it cannot (the embedded store after an I/O
    /// error). The process should then exit loudly so a supervisor restarts it and the log
    /// replays; `None` while healthy or when the backend recovers by itself (etcd).
    fn failure(&self) -> Option<String> {
        None
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        Ok(self
            .txn(Txn::new().and_then(Op::put(key, value)))
            .await?
            .revision)
    }
    async fn delete(&self, key: &str) -> Result<i64> {
        Ok(self
            .txn(Txn::new().and_then(Op::delete(key)))
            .await?
            .revision)
    }
}

pub type DynStore = Arc<dyn Store>;

/// Open a store from a URL: `embedded:///path/to/dir` (or a bare path),
/// `etcd://host:2379,host2:2379`, or `etcds://…` (TLS, with the default [`etcd::EtcdTls`]:
/// the system's roots, no client certificate).
pub async fn open(url: &str) -> anyhow::Result<DynStore> {
    open_with(url, &etcd::EtcdTls::default()).await
}

/// [`open`] with TLS settings for `etcds://` URLs (a CA, a client certificate and key).
pub async fn open_with(url: &str, tls: &etcd::EtcdTls) -> anyhow::Result<DynStore> {
    let (rest, scheme) = if let Some(rest) = url.strip_prefix("etcds://") {
        (Some(rest), "https")
    } else if let Some(rest) = url.strip_prefix("etcd://") {
        (Some(rest), "http")
    } else {
        (None, "")
    };
    if let Some(rest) = rest {
        let endpoints: Vec<String> = rest
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| format!("{scheme}://{}", s.trim_end_matches('/')))
            .collect();
        if endpoints.is_empty() {
            anyhow::bail!("store URL {url:?} names no etcd endpoint");
        }
        if scheme == "http" && *tls != etcd::EtcdTls::default() {
            anyhow::bail!("--etcd-ca/--etcd-cert/--etcd-key need an etcds:// store URL (TLS)");
        }
        let tls = (scheme == "https").then_some(tls);
        Ok(Arc::new(
            etcd::EtcdStore::connect_with(&endpoints, tls, Some(etcd::COMPACTION_INTERVAL)).await?,
        ))
    } else {
        let path = url.strip_prefix("embedded://").unwrap_or(url);
        Ok(Arc::new(embedded::EmbeddedStore::open(path)?))
    }
}

#[cfg(test)]
mod chunk_tests {
    use super::*;

    #[test]
    fn chunks_fit_ops_and_bytes() {
        let ops: Vec<Op> = (0..300).map(|i| Op::delete(format!("k{i}"))).collect();
        let chunks = chunk_ops(ops);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![128, 128, 44]
        );
        let big: Vec<Op> = (0..3)
            .map(|i| Op::put(format!("b{i}"), vec![0; 600 * 1024]))
            .collect();
        assert_eq!(chunk_ops(big).len(), 3);
        assert!(chunk_ops(vec![]).is_empty());
    }
}
