//! Applying manifests to a real embedded store: create, unchanged, new revisions, pinned
//! revisions, dry runs, concurrent applies that retry, and deletes. Nothing from a failed apply
//! may reach the store.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth::apply::{
    apply, delete_documents, latest_taskdef, resolve_taskdef, ApplyError, ApplyOptions, Outcome,
};
use berth::manifest::{load_path, parse_str, Document};
use berth::model::{self, keys, Kind};
use berth::store::embedded::EmbeddedStore;
use berth::store::{self, Store, StoreError, Txn, TxnResult, WatchStream};
use common::manifests::*;

fn open_store() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("data")).unwrap();
    (dir, store)
}

fn docs(text: &str) -> Vec<Document> {
    parse_str(text, "m.yaml").unwrap_or_else(|e| panic!("{}", show(&e)))
}

fn app(image: &str, count: i64) -> String {
    format!(
        "{}---\n{}",
        image_td("web", image),
        service("web", "web", count, &[])
    )
}

async fn snapshot(store: &dyn Store) -> (Vec<(String, Vec<u8>, i64)>, i64) {
    let (kvs, _) = store.range(keys::ROOT).await.unwrap();
    let rev = store.revision().await.unwrap();
    (
        kvs.into_iter()
            .map(|kv| (kv.key, kv.value, kv.mod_revision))
            .collect(),
        rev,
    )
}

/// The service `web` as stored.
async fn stored_web(store: &dyn Store) -> model::Service {
    let kv = store
        .get(&keys::key(Kind::Service, "web"))
        .await
        .unwrap()
        .expect("service web is stored");
    model::Object::from_kv(&kv).unwrap()
}

fn outcomes(results: &[berth::apply::ObjectResult]) -> Vec<String> {
    results.iter().map(|r| r.to_string()).collect()
}

#[tokio::test]
async fn apply_create_then_unchanged_then_new_revision() {
    let (_dir, store) = open_store();
    let opts = ApplyOptions::default();

    let r = apply(&store, &docs(&app("img:1", 2)), &opts).await.unwrap();
    assert_eq!(
        outcomes(&r),
        [
            "cluster/default created",
            "taskdefinition/web:1 created",
            "service/web created"
        ]
    );
    let svc = stored_web(&store).await;
    assert_eq!(svc.status.status, "ACTIVE");
    assert_eq!(svc.status.desired_count, 2);
    assert!(!svc.metadata.uid.is_empty());
    assert!(svc.metadata.created_at.is_some());
    assert!(svc.metadata.revision > 0, "stamped from the kv on read");
    let raw: serde_json::Value = serde_json::from_slice(
        &store
            .get(&keys::key(Kind::Service, "web"))
            .await
            .unwrap()
            .unwrap()
            .value,
    )
    .unwrap();
    assert!(
        raw["metadata"].get("revision").is_none(),
        "revision is not stored"
    );

    // The same again: nothing changes, nothing is written.
    let before = snapshot(&store).await;
    let r = apply(&store, &docs(&app("img:1", 2)), &opts).await.unwrap();
    assert_eq!(
        outcomes(&r),
        ["taskdefinition/web:1 unchanged", "service/web unchanged"]
    );
    assert_eq!(
        snapshot(&store).await,
        before,
        "an unchanged apply writes nothing"
    );
    let (revs, _) = store
        .range(&keys::taskdef_family_prefix("web"))
        .await
        .unwrap();
    assert_eq!(revs.len(), 1);

    // A new image registers web:2; the service (following the family) is unchanged.
    let r = apply(&store, &docs(&app("img:2", 2)), &opts).await.unwrap();
    assert_eq!(
        outcomes(&r),
        ["taskdefinition/web:2 created", "service/web unchanged"]
    );
    let td = latest_taskdef(&store, "web").await.unwrap().unwrap();
    assert_eq!(td.metadata.name, "web:2");
    assert_eq!(td.status.revision, 2);
    assert_eq!(td.status.family, "web");
    assert_eq!(td.status.status, "ACTIVE");
    assert!(td.status.registered_at.is_some());
    assert_eq!(td.spec.container_definitions[0].image, "img:2");
    let old = resolve_taskdef(&store, "web:1").await.unwrap().unwrap();
    assert_eq!(
        old.spec.container_definitions[0].image, "img:1",
        "old revisions stay readable"
    );
    assert!(resolve_taskdef(&store, "web:9").await.unwrap().is_none());
    assert_eq!(
        resolve_taskdef(&store, "web")
            .await
            .unwrap()
            .unwrap()
            .metadata
            .name,
        "web:2"
    );

    // Scaling configures the service and keeps its identity.
    let r = apply(&store, &docs(&app("img:2", 5)), &opts).await.unwrap();
    assert_eq!(
        outcomes(&r),
        ["taskdefinition/web:2 unchanged", "service/web configured"]
    );
    let svc2 = stored_web(&store).await;
    assert_eq!(svc2.metadata.uid, svc.metadata.uid);
    assert_eq!(svc2.metadata.created_at, svc.metadata.created_at);
    assert_eq!(svc2.spec.desired_count, 5);
    assert_eq!(svc2.status.desired_count, 5);
}

#[tokio::test]
async fn apply_a_folder_twice_creates_no_revision() {
    let (_dir, store) = open_store();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "app.yaml", GOOD_YAML);
    write(dir.path(), "ecs/api.json", ECS_JSON);
    let set = load_path(dir.path()).unwrap();
    let r = apply(&store, &set, &ApplyOptions::default()).await.unwrap();
    assert!(r.iter().all(|r| r.outcome == Outcome::Created), "{r:?}");
    let before = snapshot(&store).await;
    let set = load_path(dir.path()).unwrap();
    let r = apply(&store, &set, &ApplyOptions::default()).await.unwrap();
    assert!(r.iter().all(|r| r.outcome == Outcome::Unchanged), "{r:?}");
    assert_eq!(snapshot(&store).await, before);
}

#[tokio::test]
async fn a_bad_reference_stores_nothing() {
    let (_dir, store) = open_store();
    apply(&store, &docs(&app("img:1", 1)), &ApplyOptions::default())
        .await
        .unwrap();
    let before = snapshot(&store).await;

    // A new TD revision, a new service … and one service naming a missing task definition.
    let text = format!(
        "{}---\n{}---\n{}",
        image_td("web", "img:2"),
        service("other", "web", 1, &[]),
        service("broken", "nope", 1, &[])
    );
    let e = apply(&store, &docs(&text), &ApplyOptions::default())
        .await
        .unwrap_err();
    let ApplyError::Invalid(errors) = &e else {
        panic!("{e}")
    };
    assert_eq!(e.http_status(), 422);
    let err = find(errors, "spec.taskDefinition");
    assert_eq!(err.document, Some(3));
    assert_eq!(err.file, "m.yaml");
    assert!(err.message.contains("nope"), "{err}");
    assert_eq!(
        snapshot(&store).await,
        before,
        "nothing from the failed apply is stored"
    );

    // A pinned revision that does not exist, and a cluster that does not exist.
    let text = format!(
        "{}---\n{}",
        service("pinned", "web:7", 1, &[]),
        service("elsewhere", "web", 1, &[]).replace("spec:\n", "spec:\n  cluster: nowhere\n")
    );
    let e = apply(&store, &docs(&text), &ApplyOptions::default())
        .await
        .unwrap_err();
    let errors = e.manifest_errors();
    assert!(find(errors, "spec.taskDefinition")
        .message
        .contains("latest revision"));
    assert!(find(errors, "spec.cluster").message.contains("nowhere"));
    assert_eq!(snapshot(&store).await, before);

    // Invalid manifests never reach the store either.
    let e = apply(
        &store,
        &docs(&image_td("web", " ")),
        &ApplyOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(e.is_invalid());
    assert_eq!(snapshot(&store).await, before);
}

#[tokio::test]
async fn pinned_revisions_resolve() {
    let (_dir, store) = open_store();
    let opts = ApplyOptions::default();
    apply(&store, &docs(&image_td("web", "a")), &opts)
        .await
        .unwrap();
    // web:2 is created by this very apply, so pinning it is fine.
    let text = format!(
        "{}---\n{}",
        image_td("web", "b"),
        service("s", "web:2", 1, &[])
    );
    let r = apply(&store, &docs(&text), &opts).await.unwrap();
    assert!(outcomes(&r).contains(&"taskdefinition/web:2 created".to_string()));
    // web:1 from the store.
    let r = apply(&store, &docs(&service("t", "web:1", 1, &[])), &opts)
        .await
        .unwrap();
    assert_eq!(r.last().unwrap().outcome, Outcome::Created);
}

async fn dry_run(store: &EmbeddedStore, text: &str) -> Vec<berth::apply::ObjectResult> {
    apply(
        store,
        &docs(text),
        &ApplyOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let (_dir, store) = open_store();
    let before = snapshot(&store).await;
    let r = dry_run(&store, &app("img:1", 1)).await;
    assert_eq!(
        outcomes(&r),
        [
            "cluster/default created",
            "taskdefinition/web:1 created",
            "service/web created"
        ]
    );
    assert_eq!(snapshot(&store).await, before);
    apply(&store, &docs(&app("img:1", 1)), &ApplyOptions::default())
        .await
        .unwrap();
    let before = snapshot(&store).await;
    let r = dry_run(&store, &app("img:2", 1)).await;
    assert_eq!(outcomes(&r)[0], "taskdefinition/web:2 created");
    assert_eq!(snapshot(&store).await, before);
}

/// A store that makes the first `n` transactions wait for each other, so that concurrent
/// applies plan on the same revisions and all but one must retry.
struct Racing {
    inner: EmbeddedStore,
    barrier: tokio::sync::Barrier,
    gate: AtomicUsize,
    n: usize,
    failed: AtomicUsize,
}

#[async_trait]
impl Store for Racing {
    async fn get(&self, key: &str) -> store::Result<Option<store::KeyValue>> {
        self.inner.get(key).await
    }
    async fn range(&self, prefix: &str) -> store::Result<(Vec<store::KeyValue>, i64)> {
        self.inner.range(prefix).await
    }
    async fn txn(&self, txn: Txn) -> store::Result<TxnResult> {
        if self.gate.fetch_add(1, Ordering::SeqCst) < self.n {
            self.barrier.wait().await;
        }
        let r = self.inner.txn(txn).await?;
        if !r.succeeded {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
        Ok(r)
    }
    async fn watch(&self, prefix: &str, from: i64) -> store::Result<WatchStream> {
        self.inner.watch(prefix, from).await
    }
    async fn lease_grant(&self, ttl: Duration) -> store::Result<i64> {
        self.inner.lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: i64) -> Result<(), StoreError> {
        self.inner.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: i64) -> Result<(), StoreError> {
        self.inner.lease_revoke(lease).await
    }
    async fn revision(&self) -> store::Result<i64> {
        self.inner.revision().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_applies_retry_and_stay_consistent() {
    let (_dir, inner) = open_store();
    apply(&inner, &docs(&app("img:1", 1)), &ApplyOptions::default())
        .await
        .unwrap();
    let store = Arc::new(Racing {
        inner,
        barrier: tokio::sync::Barrier::new(2),
        gate: AtomicUsize::new(0),
        n: 2,
        failed: AtomicUsize::new(0),
    });
    // Two different changes to the same service (and family), at the same time.
    let a = docs(&app("img:a", 4));
    let b = docs(&app("img:b", 7));
    let (s1, s2) = (store.clone(), store.clone());
    let t1 = tokio::spawn(async move { apply(&*s1, &a, &ApplyOptions::default()).await });
    let t2 = tokio::spawn(async move { apply(&*s2, &b, &ApplyOptions::default()).await });
    let r1 = t1.await.unwrap().expect("first apply succeeds");
    let r2 = t2.await.unwrap().expect("second apply succeeds");
    assert!(
        store.failed.load(Ordering::SeqCst) >= 1,
        "one of them had to retry"
    );

    // Both registered a revision: web:2 and web:3, one each.
    let mut names: Vec<String> = r1.iter().chain(&r2).map(|r| r.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["web", "web", "web:2", "web:3"], "{r1:?} {r2:?}");
    let (revs, _) = store
        .range(&keys::taskdef_family_prefix("web"))
        .await
        .unwrap();
    assert_eq!(revs.len(), 3);
    // The service holds one of the two specs, whole.
    let svc = stored_web(&*store).await;
    assert!(svc.spec.desired_count == 4 || svc.spec.desired_count == 7);
    assert_eq!(svc.status.desired_count, svc.spec.desired_count);
    // The latest revision is the one whose apply committed last: applying either again shows
    // a consistent picture (one of them unchanged for the TD).
    let latest = latest_taskdef(&*store, "web").await.unwrap().unwrap();
    assert_eq!(latest.metadata.name, "web:3");
}

#[tokio::test]
async fn delete_documents_marks_and_refuses() {
    let (_dir, store) = open_store();
    let opts = ApplyOptions::default();
    let cluster = "apiVersion: berth.dev/v1\nkind: Cluster\nmetadata: {name: prod}\n";
    let text = format!(
        "{cluster}---\n{}---\n{}",
        image_td("web", "a"),
        service("web", "web", 1, &[]).replace("spec:\n", "spec:\n  cluster: prod\n")
    );
    let set = docs(&text);
    apply(&store, &set, &opts).await.unwrap();
    apply(&store, &docs(&image_td("web", "b")), &opts)
        .await
        .unwrap();

    // The cluster is still used by the service: refused, and nothing else happens either.
    let before = snapshot(&store).await;
    let e = delete_documents(&store, &set).await.unwrap_err();
    assert!(e.to_string().contains("still in use"), "{e}");
    assert_eq!(snapshot(&store).await, before);

    // Service and task definition only.
    let r = delete_documents(&store, &set[1..]).await.unwrap();
    assert_eq!(
        outcomes(&r),
        ["taskdefinition/web pruned", "service/web pruned"]
    );
    let svc = stored_web(&store).await;
    assert!(svc.metadata.deletion_timestamp.is_some());
    for rev in [1, 2] {
        let td = resolve_taskdef(&store, &format!("web:{rev}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(td.status.status, "INACTIVE");
    }
    // Again: nothing left to do.
    let r = delete_documents(&store, &set[1..]).await.unwrap();
    assert!(r.iter().all(|r| r.outcome == Outcome::Unchanged), "{r:?}");

    // Applying a service that is being deleted is refused.
    let e = apply(&store, &set, &opts).await.unwrap_err();
    assert!(e.to_string().contains("being deleted"), "{e}");

    // Once the controller removed it, the cluster can go.
    store
        .delete(&keys::key(Kind::Service, "web"))
        .await
        .unwrap();
    let r = delete_documents(&store, &set[..1]).await.unwrap();
    assert_eq!(outcomes(&r), ["cluster/prod pruned"]);
    assert!(store
        .get(&keys::key(Kind::Cluster, "prod"))
        .await
        .unwrap()
        .is_none());

    // Re-applying an INACTIVE family registers a fresh ACTIVE revision.
    let r = apply(&store, &docs(&image_td("web", "b")), &opts)
        .await
        .unwrap();
    assert_eq!(outcomes(&r), ["taskdefinition/web:3 created"]);
}

#[test]
fn apply_errors_map_to_http_statuses() {
    assert_eq!(ApplyError::Conflict.http_status(), 409);
    assert_eq!(
        ApplyError::Store(StoreError::Unavailable("x".into())).http_status(),
        503
    );
    assert_eq!(ApplyError::Invalid(vec![]).http_status(), 422);
}
