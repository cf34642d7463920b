//! The one store transaction of an apply: it compares the mod revision of every key the plan
//! relied on (0 for keys it creates), so a concurrent writer makes it fail instead of being
//! overwritten; the caller then re-plans after a [`backoff`].

use std::collections::BTreeMap;
use std::time::Duration;

use crate::store::{Compare, Op, Store, StoreError, Txn};

/// Attempts (plan + transaction) before an apply gives up with `ApplyError::Conflict`.
pub const MAX_ATTEMPTS: usize = 8;

/// Write `ops` if every key in `compares` is still at its revision: the transaction's revision
/// when it succeeded, None when another writer got in between.
pub async fn commit_at(
    store: &dyn Store,
    compares: BTreeMap<String, i64>,
    ops: Vec<Op>,
) -> Result<Option<i64>, StoreError> {
    let mut txn = Txn::new();
    for (key, rev) in compares {
        txn = txn.when(Compare::mod_revision(key, rev));
    }
    for op in ops {
        txn = txn.and_then(op);
    }
    let r = store.txn(txn).await?;
    Ok(r.succeeded.then_some(r.revision))
}

/// Like [`commit_at`]: whether the transaction succeeded.
pub async fn commit(
    store: &dyn Store,
    compares: BTreeMap<String, i64>,
    ops: Vec<Op>,
) -> Result<bool, StoreError> {
    Ok(commit_at(store, compares, ops).await?.is_some())
}

/// Exponential backoff with jitter between attempts, so racing appliers spread out.
pub async fn backoff(attempt: usize) {
    let base = 5u64 << attempt.min(6);
    let jitter = rand::random::<u64>() % (base + 1);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}
