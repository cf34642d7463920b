//! One conformance suite for the `Store` trait, run against both backends: every test function
//! below is instantiated as `embedded::<name>` and `etcd::<name>` (a real etcd per test).
//! Backend-specific tests (torn WAL tail, kill -9, watch resume across an etcd restart) follow
//! at the end. Throughput is measured by `berth bench store`, not here.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::store::embedded::EmbeddedStore;
use berth::store::etcd::EtcdStore;
use berth::store::{
    Compare, DynStore, EventKind, Op, Store, StoreError, Txn, WatchEvent, WatchStream,
};
use common::etcd::EtcdServer;
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(10);
const LEASE_TTL: Duration = Duration::from_secs(2);

enum Backend {
    Embedded {
        dir: tempfile::TempDir,
        store: Option<DynStore>,
    },
    Etcd {
        server: EtcdServer,
        store: Arc<EtcdStore>,
    },
}

/// Open the embedded store, retrying briefly while a just-dropped instance releases its lock.
fn open_embedded(path: &std::path::Path) -> DynStore {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match EmbeddedStore::open(path) {
            Ok(s) => return Arc::new(s),
            Err(e) if Instant::now() < deadline && e.to_string().contains("in use") => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("open embedded store: {e:#}"),
        }
    }
}

impl Backend {
    async fn embedded() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = open_embedded(dir.path());
        Backend::Embedded {
            dir,
            store: Some(store),
        }
    }

    async fn etcd() -> Self {
        let server = EtcdServer::start_async().await;
        let store = Arc::new(EtcdStore::connect(&server.endpoints()).await.unwrap());
        Backend::Etcd { server, store }
    }

    fn store(&self) -> DynStore {
        match self {
            Backend::Embedded { store, .. } => store.clone().expect("store is open"),
            Backend::Etcd { store, .. } => store.clone(),
        }
    }

    /// Stop and start the store on the same data. Callers must have dropped their handles.
    async fn restart(&mut self) {
        match self {
            Backend::Embedded { dir, store } => {
                let old = store.take().unwrap();
                assert_eq!(
                    Arc::strong_count(&old),
                    1,
                    "test still holds a store handle across restart"
                );
                drop(old);
                *store = Some(open_embedded(dir.path()));
            }
            Backend::Etcd { server, store } => {
                tokio::task::block_in_place(|| server.restart());
                *store = Arc::new(EtcdStore::connect(&server.endpoints()).await.unwrap());
            }
        }
    }

    /// Make every revision up to now unavailable to new watches.
    async fn compact(&mut self) {
        match self {
            // The embedded store keeps watch history in memory only.
            Backend::Embedded { .. } => self.restart().await,
            Backend::Etcd { store, .. } => {
                let rev = store.revision().await.unwrap();
                store
                    .client()
                    .clone()
                    .compact(
                        rev,
                        Some(etcd_client::CompactionOptions::new().with_physical()),
                    )
                    .await
                    .unwrap();
            }
        }
    }
}

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

async fn next_group(w: &mut WatchStream) -> Vec<WatchEvent> {
    match tokio::time::timeout(WAIT, w.next()).await {
        Ok(Some(Ok(evs))) => evs,
        Ok(Some(Err(e))) => panic!("watch error: {e}"),
        Ok(None) => panic!("watch stream ended"),
        Err(_) => panic!("no watch event within {WAIT:?}"),
    }
}

/// Check the group invariants (non-empty, one revision) and return its revision.
fn group_revision(g: &[WatchEvent]) -> i64 {
    assert!(!g.is_empty(), "empty watch group");
    let rev = g[0].kv.mod_revision;
    assert!(
        g.iter().all(|e| e.kv.mod_revision == rev),
        "group mixes revisions: {g:?}"
    );
    rev
}

/// Collect groups until one at or past `rev`, checking revisions strictly increase.
async fn groups_until(w: &mut WatchStream, rev: i64) -> Vec<Vec<WatchEvent>> {
    let mut out: Vec<Vec<WatchEvent>> = Vec::new();
    loop {
        let g = next_group(w).await;
        let r = group_revision(&g);
        if let Some(last) = out.last() {
            assert!(r > group_revision(last), "revisions not increasing");
        }
        out.push(g);
        if r >= rev {
            return out;
        }
    }
}

async fn assert_quiet(w: &mut WatchStream, d: Duration) {
    if let Ok(item) = tokio::time::timeout(d, w.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

/// A compacted start revision may be reported by `watch()` itself or as the first stream item.
async fn assert_compacted(s: &DynStore, prefix: &str, from: i64) {
    match s.watch(prefix, from).await {
        Err(StoreError::Compacted { requested, .. }) => assert_eq!(requested, from),
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(mut w) => match tokio::time::timeout(WAIT, w.next()).await {
            Ok(Some(Err(StoreError::Compacted { requested, .. }))) => {
                assert_eq!(requested, from)
            }
            other => panic!("expected Compacted as first item, got {other:?}"),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// The shared suite
// ---------------------------------------------------------------------------------------------

async fn put_get_range(b: &mut Backend) {
    let s = b.store();
    let r0 = s.revision().await.unwrap();
    assert_eq!(r0, 1, "an empty store is at revision 1, like etcd");
    assert_eq!(s.get("/t/a").await.unwrap(), None);

    let r1 = s.put("/t/a", v("1")).await.unwrap();
    assert_eq!(r1, r0 + 1);
    let a = s.get("/t/a").await.unwrap().unwrap();
    assert_eq!(
        (
            a.key.as_str(),
            a.value.clone(),
            a.create_revision,
            a.mod_revision,
            a.version,
            a.lease
        ),
        ("/t/a", v("1"), r1, r1, 1, 0)
    );

    let r2 = s.put("/t/a", v("2")).await.unwrap();
    assert_eq!(r2, r1 + 1);
    let a = s.get("/t/a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (r1, r2, 2));

    let r3 = s.put("/t/b", v("3")).await.unwrap();
    let r4 = s.put("/u/c", v("4")).await.unwrap();
    assert_eq!((r3, r4), (r2 + 1, r2 + 2));

    let (kvs, rev) = s.range("/t/").await.unwrap();
    assert_eq!(rev, r4);
    let keys: Vec<_> = kvs.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["/t/a", "/t/b"]);
    assert_eq!(kvs[1].value, v("3"));
    let (all, _) = s.range("").await.unwrap();
    let keys: Vec<_> = all.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["/t/a", "/t/b", "/u/c"]);
    assert!(s.range("/none/").await.unwrap().0.is_empty());

    let r5 = s.delete("/t/a").await.unwrap();
    assert_eq!(r5, r4 + 1);
    assert_eq!(s.get("/t/a").await.unwrap(), None);
    // Deleting a missing key writes nothing: the revision does not move.
    assert_eq!(s.delete("/t/a").await.unwrap(), r5);
    assert_eq!(s.revision().await.unwrap(), r5);

    // Re-creating starts a new generation.
    let r6 = s.put("/t/a", v("new")).await.unwrap();
    let a = s.get("/t/a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (r6, r6, 1));
}

async fn txn_compare_and_swap(b: &mut Backend) {
    let s = b.store();
    let r1 = s.put("/cas/k", v("1")).await.unwrap();

    // Stale revision: success branch not applied, failure branch applied.
    let res = s
        .txn(
            Txn::new()
                .when(Compare::mod_revision("/cas/k", r1 - 1))
                .and_then(Op::put("/cas/k", v("lost")))
                .or_else(Op::put("/cas/failed", v("f"))),
        )
        .await
        .unwrap();
    assert!(!res.succeeded);
    assert_eq!(res.revision, r1 + 1);
    assert_eq!(s.get("/cas/k").await.unwrap().unwrap().value, v("1"));
    assert_eq!(
        s.get("/cas/failed").await.unwrap().unwrap().mod_revision,
        res.revision
    );

    // Current revision: success branch applied.
    let res = s
        .txn(
            Txn::new()
                .when(Compare::mod_revision("/cas/k", r1))
                .and_then(Op::put("/cas/k", v("2")))
                .or_else(Op::put("/cas/other", v("x"))),
        )
        .await
        .unwrap();
    assert!(res.succeeded);
    let k = s.get("/cas/k").await.unwrap().unwrap();
    assert_eq!(
        (k.value, k.mod_revision, k.version),
        (v("2"), res.revision, 2)
    );
    assert_eq!(s.get("/cas/other").await.unwrap(), None);

    // The old revision is now stale.
    let res2 = s
        .txn(
            Txn::new()
                .when(Compare::mod_revision("/cas/k", r1))
                .and_then(Op::put("/cas/k", v("3"))),
        )
        .await
        .unwrap();
    assert!(!res2.succeeded);
    assert_eq!(
        res2.revision, res.revision,
        "nothing written, no new revision"
    );
    assert_eq!(s.revision().await.unwrap(), res.revision);

    // absent() fails on an existing key, holds on a missing one.
    let before = s.revision().await.unwrap();
    let res = s
        .txn(
            Txn::new()
                .when(Compare::absent("/cas/k"))
                .and_then(Op::put("/cas/k", v("4"))),
        )
        .await
        .unwrap();
    assert!(!res.succeeded);
    assert_eq!(res.revision, before);
    let res = s
        .txn(
            Txn::new()
                .when(Compare::absent("/cas/new"))
                .and_then(Op::put("/cas/new", v("n"))),
        )
        .await
        .unwrap();
    assert!(res.succeeded);
    assert_eq!(res.revision, before + 1);

    // After a delete the key is absent again; its old revision no longer matches.
    let rd = s.delete("/cas/new").await.unwrap();
    let res = s
        .txn(
            Txn::new()
                .when(Compare::mod_revision("/cas/new", res.revision))
                .and_then(Op::put("/cas/new", v("m"))),
        )
        .await
        .unwrap();
    assert!(!res.succeeded);
    assert_eq!(res.revision, rd);
    let res = s
        .txn(Txn::new().when(Compare::absent("/cas/new")))
        .await
        .unwrap();
    assert!(res.succeeded);

    // An empty transaction succeeds and writes nothing.
    let res = s.txn(Txn::new()).await.unwrap();
    assert!(res.succeeded);
    assert_eq!(res.revision, rd);
}

async fn create_once_race(b: &mut Backend) {
    let s = b.store();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let res = s
                    .txn(
                        Txn::new()
                            .when(Compare::absent("/race/leader"))
                            .and_then(Op::put("/race/leader", format!("{i}").into_bytes())),
                    )
                    .await
                    .unwrap();
                (i, res)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (i, res) = t.await.unwrap();
        if res.succeeded {
            winners.push((i, res.revision));
        }
    }
    assert_eq!(winners.len(), 1, "exactly one creator wins: {winners:?}");
    let kv = s.get("/race/leader").await.unwrap().unwrap();
    assert_eq!(kv.value, format!("{}", winners[0].0).into_bytes());
    assert_eq!(kv.mod_revision, winners[0].1);
    assert_eq!(kv.version, 1);
}

async fn multi_key_atomicity(b: &mut Backend) {
    let s = b.store();
    s.put("/m/x", v("x")).await.unwrap();
    let mut w = s.watch("/m/", 0).await.unwrap();

    let res = s
        .txn(
            Txn::new()
                .and_then(Op::put("/m/a", v("a")))
                .and_then(Op::put("/m/b", v("b")))
                .and_then(Op::delete("/m/x"))
                .and_then(Op::put("/m/c", v("c"))),
        )
        .await
        .unwrap();
    assert!(res.succeeded);
    let (kvs, rev) = s.range("/m/").await.unwrap();
    assert_eq!(rev, res.revision);
    assert_eq!(kvs.len(), 3);
    assert!(kvs.iter().all(|kv| kv.mod_revision == res.revision));

    // One revision, one group, in operation order.
    let g = next_group(&mut w).await;
    assert_eq!(group_revision(&g), res.revision);
    let seen: Vec<_> = g.iter().map(|e| (e.kind, e.kv.key.as_str())).collect();
    assert_eq!(
        seen,
        [
            (EventKind::Put, "/m/a"),
            (EventKind::Put, "/m/b"),
            (EventKind::Delete, "/m/x"),
            (EventKind::Put, "/m/c"),
        ]
    );
    assert_eq!(g[2].prev.as_ref().unwrap().value, v("x"));

    // A transaction that fails (unknown lease) applies none of its operations.
    let before = s.revision().await.unwrap();
    let err = s
        .txn(
            Txn::new()
                .and_then(Op::put("/m/d", v("d")))
                .and_then(Op::put_with_lease("/m/e", v("e"), 4242)),
        )
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::LeaseNotFound(4242));
    assert_eq!(s.get("/m/d").await.unwrap(), None);
    assert_eq!(s.revision().await.unwrap(), before);

    // The same key twice in one branch is rejected, as etcd does.
    let err = s
        .txn(
            Txn::new()
                .and_then(Op::put("/m/a", v("1")))
                .and_then(Op::delete("/m/a")),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert_quiet(&mut w, Duration::from_millis(200)).await;
}

async fn watch_from_past_then_live(b: &mut Backend) {
    let s = b.store();
    let start = s.revision().await.unwrap() + 1;
    let ra1 = s.put("/w/a", v("a1")).await.unwrap();
    let rb1 = s.put("/w/b", v("b1")).await.unwrap();
    s.put("/x/outside", v("o")).await.unwrap();
    let ra2 = s.put("/w/a", v("a2")).await.unwrap();
    let rdel = s.delete("/w/b").await.unwrap();
    let rcd = s
        .txn(
            Txn::new()
                .and_then(Op::put("/w/c", v("c")))
                .and_then(Op::put("/w/d", v("d"))),
        )
        .await
        .unwrap()
        .revision;

    let mut w = s.watch("/w/", start).await.unwrap();
    let groups = groups_until(&mut w, rcd).await;
    let revs: Vec<i64> = groups.iter().map(|g| group_revision(g)).collect();
    assert_eq!(
        revs,
        [ra1, rb1, ra2, rdel, rcd],
        "exactly these revisions, no gaps"
    );

    let e = &groups[0][0];
    assert_eq!(
        (e.kind, e.kv.key.as_str(), e.kv.value.clone()),
        (EventKind::Put, "/w/a", v("a1"))
    );
    assert_eq!((e.kv.create_revision, e.kv.version), (ra1, 1));
    assert!(e.prev.is_none());
    let e = &groups[2][0];
    assert_eq!(
        (e.kv.value.clone(), e.kv.version, e.kv.create_revision),
        (v("a2"), 2, ra1)
    );
    assert!(e.prev.is_none(), "a put carries no previous value");
    let e = &groups[3][0];
    assert_eq!((e.kind, e.kv.key.as_str()), (EventKind::Delete, "/w/b"));
    assert!(e.kv.value.is_empty());
    assert_eq!(e.kv.mod_revision, rdel);
    assert_eq!(e.prev.as_ref().unwrap().value, v("b1"));
    assert_eq!(groups[4].len(), 2);

    // Then live events, continuing without a gap.
    let rlive = s.put("/w/e", v("e")).await.unwrap();
    let g = next_group(&mut w).await;
    assert_eq!(group_revision(&g), rlive);
    assert_eq!(g[0].kv.key, "/w/e");

    // Starting in the middle of history.
    let mut w2 = s.watch("/w/", ra2).await.unwrap();
    let groups = groups_until(&mut w2, rlive).await;
    let revs: Vec<i64> = groups.iter().map(|g| group_revision(g)).collect();
    assert_eq!(revs, [ra2, rdel, rcd, rlive]);
}

async fn watch_prefix_isolation(b: &mut Backend) {
    let s = b.store();
    let start = s.revision().await.unwrap() + 1;
    let mut one_revs = Vec::new();
    for i in 0..5 {
        one_revs.push(s.put(&format!("/iso/one/{i}"), v("1")).await.unwrap());
        s.put(&format!("/iso/two/{i}"), v("2")).await.unwrap();
        s.put(&format!("/iso/onex{i}"), v("not under /iso/one/"))
            .await
            .unwrap();
    }
    let mut w = s.watch("/iso/one/", start).await.unwrap();
    let groups = groups_until(&mut w, *one_revs.last().unwrap()).await;
    let revs: Vec<i64> = groups.iter().map(|g| group_revision(g)).collect();
    assert_eq!(revs, one_revs);
    assert!(groups
        .iter()
        .flatten()
        .all(|e| e.kv.key.starts_with("/iso/one/")));

    // Live: writes elsewhere are not delivered.
    s.put("/iso/two/live", v("2")).await.unwrap();
    assert_quiet(&mut w, Duration::from_millis(300)).await;
    let r = s.put("/iso/one/live", v("1")).await.unwrap();
    assert_eq!(group_revision(&next_group(&mut w).await), r);

    // A wider prefix sees both.
    let mut all = s.watch("/iso/", start).await.unwrap();
    let groups = groups_until(&mut all, r).await;
    assert_eq!(groups.len(), 5 * 3 + 2);
}

async fn watch_groups_per_revision(b: &mut Backend) {
    let s = b.store();
    let mut w = s.watch("/g/", 0).await.unwrap();
    let mut txn = Txn::new();
    for i in 0..5 {
        txn = txn.and_then(Op::put(format!("/g/{i}"), v("v")));
    }
    txn = txn.and_then(Op::put("/h/outside", v("o")));
    let r1 = s.txn(txn).await.unwrap().revision;
    let r2 = s.put("/g/0", v("again")).await.unwrap();
    let r3 = s
        .txn(
            Txn::new()
                .and_then(Op::delete("/g/1"))
                .and_then(Op::delete("/g/2")),
        )
        .await
        .unwrap()
        .revision;

    let g1 = next_group(&mut w).await;
    assert_eq!(group_revision(&g1), r1);
    assert_eq!(g1.len(), 5, "only the events under the prefix");
    let g2 = next_group(&mut w).await;
    assert_eq!((group_revision(&g2), g2.len()), (r2, 1));
    let g3 = next_group(&mut w).await;
    assert_eq!((group_revision(&g3), g3.len()), (r3, 2));
    assert!(g3.iter().all(|e| e.kind == EventKind::Delete));
}

async fn watch_from_now_and_future(b: &mut Backend) {
    let s = b.store();
    s.put("/now/before", v("b")).await.unwrap();
    let mut w = s.watch("/now/", 0).await.unwrap();
    let cur = s.revision().await.unwrap();
    let mut future = s.watch("/now/", cur + 3).await.unwrap();
    let mut revs = Vec::new();
    for i in 0..4 {
        revs.push(s.put(&format!("/now/{i}"), v("x")).await.unwrap());
    }
    let groups = groups_until(&mut w, revs[3]).await;
    let got: Vec<i64> = groups.iter().map(|g| group_revision(g)).collect();
    assert_eq!(
        got, revs,
        "from 0 = from now: the earlier put is not replayed"
    );
    let groups = groups_until(&mut future, revs[3]).await;
    let got: Vec<i64> = groups.iter().map(|g| group_revision(g)).collect();
    assert_eq!(
        got,
        &revs[2..],
        "a future start revision skips earlier events"
    );
}

async fn watch_stream_drop(b: &mut Backend) {
    let s = b.store();
    for _ in 0..20 {
        let w = s.watch("/drop/", 0).await.unwrap();
        drop(w);
    }
    let mut w = s.watch("/drop/", 0).await.unwrap();
    let r = s.put("/drop/k", v("1")).await.unwrap();
    assert_eq!(group_revision(&next_group(&mut w).await), r);
}

async fn wait_for_deletes(
    w: &mut WatchStream,
    keys: &[&str],
    within: Duration,
) -> Vec<Vec<WatchEvent>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut pending: HashSet<&str> = keys.iter().copied().collect();
    let mut groups = Vec::new();
    while !pending.is_empty() {
        let item = tokio::time::timeout_at(deadline, w.next())
            .await
            .unwrap_or_else(|_| panic!("keys {pending:?} not deleted within {within:?}"));
        let g = item.unwrap().unwrap();
        for e in &g {
            if e.kind == EventKind::Delete {
                pending.remove(e.kv.key.as_str());
            }
        }
        groups.push(g);
    }
    groups
}

async fn lease_expiry_deletes_keys(b: &mut Backend) {
    let s = b.store();
    let lease = s.lease_grant(LEASE_TTL).await.unwrap();
    assert!(lease > 0);
    let granted = Instant::now();
    s.txn(
        Txn::new()
            .and_then(Op::put_with_lease("/lease/a", v("a"), lease))
            .and_then(Op::put_with_lease("/lease/b", v("b"), lease)),
    )
    .await
    .unwrap();
    s.put("/lease/keep", v("k")).await.unwrap();
    assert_eq!(s.get("/lease/a").await.unwrap().unwrap().lease, lease);
    let mut w = s.watch("/lease/", 0).await.unwrap();

    let groups = wait_for_deletes(&mut w, &["/lease/a", "/lease/b"], Duration::from_secs(8)).await;
    assert!(granted.elapsed() >= LEASE_TTL - Duration::from_millis(100));
    assert_eq!(
        groups.len(),
        1,
        "expiry deletes the lease's keys in one revision"
    );
    assert!(groups[0]
        .iter()
        .all(|e| e.prev.as_ref().is_some_and(|p| p.lease == lease)));
    assert_eq!(s.get("/lease/a").await.unwrap(), None);
    assert_eq!(s.get("/lease/b").await.unwrap(), None);
    assert!(s.get("/lease/keep").await.unwrap().is_some());

    assert_eq!(
        s.lease_keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(lease))
    );
    let err = s
        .txn(Txn::new().and_then(Op::put_with_lease("/lease/c", v("c"), lease)))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::LeaseNotFound(lease));
}

async fn lease_keep_alive_and_revoke(b: &mut Backend) {
    let s = b.store();
    let lease = s.lease_grant(LEASE_TTL).await.unwrap();
    s.txn(Txn::new().and_then(Op::put_with_lease("/ka/a", v("a"), lease)))
        .await
        .unwrap();
    // Keep it alive for twice its TTL (time passes on purpose: the keys must not expire).
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.lease_keep_alive(lease).await.unwrap();
    }
    assert!(
        s.get("/ka/a").await.unwrap().is_some(),
        "kept-alive lease expired"
    );

    let mut w = s.watch("/ka/", 0).await.unwrap();
    s.lease_revoke(lease).await.unwrap();
    let g = next_group(&mut w).await;
    assert_eq!(
        (g[0].kind, g[0].kv.key.as_str()),
        (EventKind::Delete, "/ka/a")
    );
    assert_eq!(s.get("/ka/a").await.unwrap(), None);

    assert_eq!(
        s.lease_revoke(lease).await,
        Err(StoreError::LeaseNotFound(lease))
    );
    assert_eq!(
        s.lease_keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(lease))
    );
    assert_eq!(
        s.lease_keep_alive(987654).await,
        Err(StoreError::LeaseNotFound(987654))
    );

    // Revoking a lease without keys writes nothing.
    let empty = s.lease_grant(LEASE_TTL).await.unwrap();
    let before = s.revision().await.unwrap();
    s.lease_revoke(empty).await.unwrap();
    assert_eq!(s.revision().await.unwrap(), before);
}

async fn restart_durability(b: &mut Backend) {
    let s = b.store();
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..25 {
                    let key = format!("/dur/{w:02}/{i:02}");
                    let rev = s.put(&key, key.clone().into_bytes()).await.unwrap();
                    acked.push((key, rev));
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in writers {
        acked.extend(t.await.unwrap());
    }
    let revs: HashSet<i64> = acked.iter().map(|(_, r)| *r).collect();
    assert_eq!(revs.len(), acked.len(), "every write got its own revision");

    let lease = s.lease_grant(Duration::from_secs(60)).await.unwrap();
    let rl = s
        .txn(Txn::new().and_then(Op::put_with_lease("/dur/leased", v("l"), lease)))
        .await
        .unwrap()
        .revision;
    let before = s.revision().await.unwrap();
    assert_eq!(before, rl);
    drop(s);

    b.restart().await;
    let s = b.store();
    assert_eq!(s.revision().await.unwrap(), before);
    let (kvs, _) = s.range("/dur/").await.unwrap();
    assert_eq!(kvs.len(), acked.len() + 1);
    for (key, rev) in &acked {
        let kv = s
            .get(key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key} lost"));
        assert_eq!(
            (kv.mod_revision, kv.create_revision, kv.version),
            (*rev, *rev, 1)
        );
        assert_eq!(kv.value, key.clone().into_bytes());
    }
    let leased = s.get("/dur/leased").await.unwrap().unwrap();
    assert_eq!(leased.lease, lease);
    s.lease_keep_alive(lease).await.unwrap();
    assert_eq!(s.put("/dur/after", v("a")).await.unwrap(), before + 1);
}

async fn compacted_watch(b: &mut Backend) {
    let s = b.store();
    let old = s.put("/c/a", v("1")).await.unwrap();
    s.put("/c/a", v("2")).await.unwrap();
    s.put("/c/b", v("3")).await.unwrap();
    drop(s);
    b.compact().await;
    let s = b.store();
    assert_compacted(&s, "/c/", old).await;
    // Re-list, then watch from the listed revision + 1 works.
    let (kvs, rev) = s.range("/c/").await.unwrap();
    assert_eq!(kvs.len(), 2);
    let mut w = s.watch("/c/", rev + 1).await.unwrap();
    let r = s.put("/c/c", v("4")).await.unwrap();
    assert_eq!(group_revision(&next_group(&mut w).await), r);
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let mut b = super::Backend::embedded().await;
                    super::$name(&mut b).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let mut b = super::Backend::etcd().await;
                    super::$name(&mut b).await;
                }
            )*
        }
    };
}

conformance!(
    put_get_range,
    txn_compare_and_swap,
    create_once_race,
    multi_key_atomicity,
    watch_from_past_then_live,
    watch_prefix_isolation,
    watch_groups_per_revision,
    watch_from_now_and_future,
    watch_stream_drop,
    lease_expiry_deletes_keys,
    lease_keep_alive_and_revoke,
    restart_durability,
    compacted_watch,
);

// ---------------------------------------------------------------------------------------------
// Backend-specific tests
// ---------------------------------------------------------------------------------------------

fn wal_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_torn_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    {
        let s = open_embedded(dir.path());
        for i in 0..50 {
            let key = format!("/torn/{i}");
            acked.push((key.clone(), s.put(&key, vec![i as u8; 10]).await.unwrap()));
        }
    }
    let wal = wal_files(dir.path()).pop().unwrap();
    let clean_len = std::fs::metadata(&wal).unwrap().len();
    {
        // A crash in the middle of an append: a plausible header and part of a payload.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&wal).unwrap();
        f.write_all(&[0x40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3])
            .unwrap();
        f.write_all(b"garbage garbage").unwrap();
    }
    {
        let s = open_embedded(dir.path());
        assert_eq!(s.revision().await.unwrap(), 51);
        for (key, rev) in &acked {
            assert_eq!(s.get(key).await.unwrap().unwrap().mod_revision, *rev);
        }
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), clean_len);
        assert_eq!(s.put("/torn/after", v("x")).await.unwrap(), 52);
    }
    let s = open_embedded(dir.path());
    assert_eq!(s.revision().await.unwrap(), 52);
    assert!(s.get("/torn/after").await.unwrap().is_some());
}

/// Child half of `embedded_kill9_keeps_acknowledged_writes` (run in a subprocess).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: spawned by embedded_kill9_keeps_acknowledged_writes"]
async fn embedded_kill9_child() {
    let Some(dir) = std::env::var_os("BERTH_KILL9_DIR") else {
        return;
    };
    let s = open_embedded(std::path::Path::new(&dir));
    let tasks: Vec<_> = (0..4)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("/k9/{w}/{i}");
                    let rev = s.put(&key, key.clone().into_bytes()).await.unwrap();
                    println!("ACK {key} {rev}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_kill9_keeps_acknowledged_writes() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "embedded_kill9_child",
            "--ignored",
            "--nocapture",
        ])
        .env("BERTH_KILL9_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut acked = Vec::new();
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (key, rev) = rest.split_once(' ').unwrap();
            acked.push((key.to_string(), rev.parse::<i64>().unwrap()));
            if acked.len() == 2000 {
                child.kill().unwrap(); // SIGKILL mid-stream
                break;
            }
        }
    }
    child.wait().unwrap();
    assert_eq!(acked.len(), 2000, "child stopped early");
    let s = open_embedded(dir.path());
    let max = acked.iter().map(|(_, r)| *r).max().unwrap();
    assert!(s.revision().await.unwrap() >= max);
    for (key, rev) in &acked {
        let kv = s
            .get(key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged write {key} lost"));
        assert_eq!(kv.mod_revision, *rev);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_watch_resumes_after_etcd_restart() {
    let mut server = EtcdServer::start_async().await;
    let s: DynStore = Arc::new(EtcdStore::connect(&server.endpoints()).await.unwrap());
    let mut w = s.watch("/resume/", 0).await.unwrap();
    let r1 = s.put("/resume/a", v("1")).await.unwrap();
    assert_eq!(group_revision(&next_group(&mut w).await), r1);

    tokio::task::block_in_place(|| server.restart());
    // The client reconnects on its own; allow it a moment.
    let deadline = Instant::now() + WAIT;
    let r2 = loop {
        match s.put("/resume/b", v("2")).await {
            Ok(r) => break r,
            Err(e) if Instant::now() < deadline => {
                eprintln!("put after restart: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("etcd did not come back: {e}"),
        }
    };
    assert_eq!(r2, r1 + 1, "etcd kept its data and revision");
    let g = next_group(&mut w).await;
    assert_eq!(group_revision(&g), r2, "resumed without gap or duplicate");
    assert_eq!(g[0].kv.key, "/resume/b");
}

#[tokio::test]
async fn store_open_urls() {
    let dir = tempfile::tempdir().unwrap();
    let s = berth::store::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    s.put("/u", v("1")).await.unwrap();
    drop(s);
    let s = berth::store::open(&format!("embedded://{}", dir.path().display()))
        .await
        .unwrap();
    assert!(s.get("/u").await.unwrap().is_some());
    let server = EtcdServer::start_async().await;
    let e = berth::store::open(&server.url()).await.unwrap();
    assert_eq!(e.revision().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_is_compacted_on_a_schedule() {
    let server = EtcdServer::start_async().await;
    let period = Duration::from_millis(500);
    let s: DynStore = Arc::new(
        EtcdStore::connect_with_compaction(&server.endpoints(), Some(period))
            .await
            .unwrap(),
    );
    let first = s.put("/gc/a", v("1")).await.unwrap();
    s.put("/gc/a", v("2")).await.unwrap();
    // Each tick compacts to the revision seen one tick earlier: after a few periods the
    // first writes are gone from history, while the current value stays readable.
    let deadline = Instant::now() + WAIT;
    loop {
        tokio::time::sleep(period).await;
        match s.watch("/gc/", first).await {
            Err(StoreError::Compacted { .. }) => break,
            Ok(mut w) => match tokio::time::timeout(Duration::from_millis(200), w.next()).await {
                Ok(Some(Err(StoreError::Compacted { .. }))) => break,
                _ => assert!(Instant::now() < deadline, "etcd was never compacted"),
            },
            Err(e) => panic!("watch: {e}"),
        }
    }
    assert_compacted(&s, "/gc/", first).await;
    assert_eq!(s.get("/gc/a").await.unwrap().unwrap().value, v("2"));
    // A watch from a revision younger than one period still works.
    let (_, rev) = s.range("/gc/").await.unwrap();
    let mut w = s.watch("/gc/", rev + 1).await.unwrap();
    let r = s.put("/gc/b", v("3")).await.unwrap();
    assert_eq!(group_revision(&next_group(&mut w).await), r);
    // A compaction racing another control plane's (same revision twice) is not an error.
    let etcd = EtcdStore::connect_with_compaction(&server.endpoints(), None)
        .await
        .unwrap();
    etcd.compact(r).await.unwrap();
    etcd.compact(r).await.unwrap();
}

/// The embedded store's memory and disk follow the number of keys, not the number of writes:
/// the watch history is a bounded ring and the WAL is folded into a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_history_and_wal_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    const KEYS: usize = 500;
    const ROUNDS: usize = 300; // 150,000 writes to the same 500 keys
    let value = vec![b'x'; 64];
    for round in 0..ROUNDS {
        let mut txn = Txn::new();
        for k in 0..KEYS {
            txn = txn.and_then(Op::put(format!("/bound/{k:04}"), value.clone()));
        }
        let r = store.txn(txn).await.unwrap();
        assert!(r.succeeded, "round {round}");
    }
    let st = store.stats();
    assert_eq!(st.keys, KEYS);
    assert!(
        st.history_events <= 100_000,
        "history is a bounded ring: {st:?}"
    );
    assert!(st.compacted > 1, "old revisions left the history: {st:?}");
    let s: DynStore = Arc::new(store);
    assert_compacted(&s, "/bound/", 2).await;
    let disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    // 150,000 writes of ~80 bytes would be > 12 MiB of log; rotation keeps about one
    // snapshot threshold (4 MiB) of log plus the snapshot.
    assert!(disk < 10 << 20, "data dir holds {disk} bytes");
}
