//! Source apply end to end on an embedded store: stamping, drift, pruning, one transaction.

use super::codec::{decode, encode};
use super::inventory::{inventory_key, Inventory, ObjectRef};
use super::prune::prune_candidates;
use super::source_name::{default_source_name, legacy_source_name, validate_source_name};
use super::*;
use crate::manifest::Document;
use crate::model::{keys, Kind, Service};
use crate::store::embedded::EmbeddedStore;
use crate::store::Store;

fn store() -> (tempfile::TempDir, EmbeddedStore) {
    let d = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(d.path().join("store")).unwrap();
    (d, s)
}

fn td(name: &str, image: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1\nkind: TaskDefinition\nmetadata: {{name: {name}}}\nspec:\n  containerDefinitions:\n    - {{name: a, image: {image}, memory: 16}}\n---\n"
    )
}

fn svc(name: &str, family: &str, n: u32) -> String {
    format!(
        "apiVersion: berth.dev/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{taskDefinition: {family}, desiredCount: {n}}}\n---\n"
    )
}

/// Documents of `files` (name, text) stamped as source `src` at `commit`.
fn docs(files: &[(&str, String)], commit: &str) -> Vec<Document> {
    let mut out = Vec::new();
    for (f, text) in files {
        out.extend(crate::manifest::parse_str(text, f).unwrap());
    }
    stamp(
        &mut out,
        "",
        &Stamp {
            source: "src".into(),
            commit: Some(commit.into()),
            dirty: false,
        },
    );
    out
}

fn no_status(_: &SourceReport) -> Option<(String, Vec<u8>)> {
    None
}

async fn run(s: &EmbeddedStore, d: &[Document], prune: bool) -> SourceReport {
    let opts = SourceApplyOptions {
        dry_run: false,
        prune,
        ..Default::default()
    };
    apply_source(s, "src", d, &opts, &no_status).await.unwrap()
}

fn lines(r: &SourceReport) -> Vec<String> {
    r.results.iter().map(|o| o.to_string()).collect()
}

/// The stored service `name`.
async fn service(s: &EmbeddedStore, name: &str) -> Service {
    let kv = s
        .get(&keys::key(Kind::Service, name))
        .await
        .unwrap()
        .unwrap();
    decode(&kv).unwrap()
}

async fn revision(s: &EmbeddedStore) -> i64 {
    s.revision().await.unwrap()
}

#[test]
fn relative_files_and_source_names() {
    assert_eq!(relative_file("manifests/web.yaml", "manifests"), "web.yaml");
    assert_eq!(
        relative_file("manifests/a/b.yaml", "manifests/"),
        "a/b.yaml"
    );
    assert_eq!(relative_file("./web.yaml", "."), "web.yaml");
    assert_eq!(relative_file("dir/web.yaml", "dir/web.yaml"), "web.yaml");
    assert_eq!(relative_file("other/x.yaml", "dir"), "other/x.yaml");
    let a = default_source_name(std::path::Path::new("/tmp/my repo/manifests"));
    let b = default_source_name(std::path::Path::new("/srv/other/manifests"));
    assert!(
        a.starts_with("manifests-") && a.len() == "manifests-".len() + 8,
        "{a}"
    );
    assert!(b.starts_with("manifests-") && a != b, "{a} {b}");
    assert_eq!(
        a,
        default_source_name(std::path::Path::new("/tmp/my repo/manifests"))
    );
    assert!(default_source_name(std::path::Path::new("/x/a b")).starts_with("a-b-"));
    assert_eq!(legacy_source_name(std::path::Path::new("/x/a b")), "a-b");
    assert!(validate_source_name(&a).is_ok());
    assert!(validate_source_name("web-1.x_y").is_ok());
    assert!(validate_source_name("").is_err());
    assert!(validate_source_name(".hidden").is_err());
    assert!(validate_source_name("a/b").is_err());
}

#[test]
fn prune_candidates_are_owned_minus_desired_in_prune_order() {
    let r = |k, n: &str| ObjectRef::new(k, n);
    let desired: std::collections::BTreeSet<ObjectRef> =
        [r(Kind::Service, "keep")].into_iter().collect();
    let inv = vec![
        r(Kind::Cluster, "c"),
        r(Kind::Service, "keep"),
        r(Kind::TaskDefinition, "old"),
    ];
    let owned = vec![r(Kind::Service, "gone"), r(Kind::TaskDefinition, "old")];
    assert_eq!(
        prune_candidates(&inv, &owned, &desired),
        [
            r(Kind::Service, "gone"),
            r(Kind::TaskDefinition, "old"),
            r(Kind::Cluster, "c")
        ]
    );
}

#[tokio::test]
async fn source_apply_stamps_and_a_new_commit_alone_writes_nothing() {
    let (_d, s) = store();
    let files = [("web.yaml", td("web", "img:1") + &svc("web", "web", 2))];
    let r = run(&s, &docs(&files, "c1"), true).await;
    assert_eq!(
        lines(&r),
        [
            "cluster/default created",
            "taskdefinition/web:1 created",
            "service/web created"
        ]
    );
    assert!(r.committed.is_some());
    let stored = service(&s, "web").await;
    let a = &stored.metadata.annotations;
    assert_eq!(a[ownership::SOURCE], "src");
    assert_eq!(a[ownership::FILE], "web.yaml");
    assert_eq!(a[ownership::DOCUMENT], "2");
    assert_eq!(a[ownership::COMMIT], "c1");
    assert_eq!(a[ownership::DIRTY], "false");
    let inv: Inventory =
        serde_json::from_slice(&s.get(&inventory_key("src")).await.unwrap().unwrap().value)
            .unwrap();
    assert_eq!(
        inv.objects,
        [
            ObjectRef::new(Kind::Service, "web"),
            ObjectRef::new(Kind::TaskDefinition, "web")
        ]
    );

    // The same content at another commit: no write, no new revision.
    let before = revision(&s).await;
    let r = run(&s, &docs(&files, "c2"), true).await;
    assert!(r.in_sync(), "{:?}", lines(&r));
    assert_eq!(r.committed, None);
    assert_eq!(revision(&s).await, before);

    // A real change records the commit that made it.
    let files = [("web.yaml", td("web", "img:1") + &svc("web", "web", 4))];
    let r = run(&s, &docs(&files, "c3"), true).await;
    assert_eq!(
        lines(&r),
        ["taskdefinition/web:1 unchanged", "service/web configured"]
    );
    let stored = service(&s, "web").await;
    assert_eq!(stored.metadata.annotations[ownership::COMMIT], "c3");
    assert_eq!(stored.spec.desired_count, 4);
}

#[tokio::test]
async fn moving_a_manifest_relabels_without_a_new_revision() {
    let (_d, s) = store();
    run(&s, &docs(&[("a.yaml", td("web", "img:1"))], "c1"), false).await;
    let r = run(&s, &docs(&[("b.yaml", td("web", "img:1"))], "c2"), false).await;
    assert_eq!(lines(&r), ["taskdefinition/web:1 configured"]);
    let latest = latest_taskdef(&s, "web").await.unwrap().unwrap();
    assert_eq!(latest.metadata.name, "web:1");
    assert_eq!(latest.metadata.annotations[ownership::FILE], "b.yaml");
}

#[tokio::test]
async fn plain_apply_keeps_ownership_and_drift_shows_in_a_dry_run() {
    let (_d, s) = store();
    let files = [("web.yaml", td("web", "img:1") + &svc("web", "web", 2))];
    let d = docs(&files, "c1");
    run(&s, &d, true).await;
    // Someone applies a changed copy without a source.
    let changed =
        crate::manifest::parse_str(&(td("web", "img:1") + &svc("web", "web", 3)), "copy.yaml")
            .unwrap();
    let out = apply(&s, &changed, &ApplyOptions::default()).await.unwrap();
    assert_eq!(
        out.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
        ["taskdefinition/web:1 unchanged", "service/web configured"]
    );
    let stored = service(&s, "web").await;
    assert_eq!(
        stored.metadata.annotations[ownership::SOURCE],
        "src",
        "still owned"
    );
    // The source sees the drift in a dry run, and puts it back.
    let opts = SourceApplyOptions {
        dry_run: true,
        prune: true,
        ..Default::default()
    };
    let before = revision(&s).await;
    let r = apply_source(&s, "src", &d, &opts, &no_status)
        .await
        .unwrap();
    assert!(!r.in_sync());
    assert_eq!(
        lines(&r),
        ["taskdefinition/web:1 unchanged", "service/web configured"]
    );
    assert_eq!(revision(&s).await, before, "a dry run writes nothing");
    let r = run(&s, &d, true).await;
    assert_eq!(r.changes(), 1);
    assert!(run(&s, &d, true).await.in_sync());
}

#[tokio::test]
async fn prune_drains_services_and_deactivates_task_definitions() {
    let (_d, s) = store();
    let files = vec![
        ("web.yaml", td("web", "img:1") + &svc("web", "web", 2)),
        ("job.yaml", td("job", "img:1")),
    ];
    run(&s, &docs(&files, "c1"), true).await;
    // Without prune: reported, left alone.
    let only_job = [("job.yaml", td("job", "img:1"))];
    let r = run(&s, &docs(&only_job, "c2"), false).await;
    assert_eq!(lines(&r), ["taskdefinition/job:1 unchanged"]);
    assert_eq!(r.extraneous.len(), 2, "{:?}", r.extraneous);
    assert!(!r.in_sync());
    assert!(
        r.inventory.contains(&ObjectRef::new(Kind::Service, "web")),
        "still owned"
    );
    // With prune: the service drains, the family goes INACTIVE, all in one transaction.
    let r = run(&s, &docs(&only_job, "c3"), true).await;
    assert_eq!(
        lines(&r),
        [
            "taskdefinition/job:1 unchanged",
            "service/web pruned",
            "taskdefinition/web pruned"
        ]
    );
    assert!(r.extraneous.is_empty());
    assert_eq!(r.inventory, [ObjectRef::new(Kind::TaskDefinition, "job")]);
    let stored = service(&s, "web").await;
    assert!(stored.metadata.deletion_timestamp.is_some());
    let web = latest_taskdef(&s, "web").await.unwrap().unwrap();
    assert_eq!(web.status.status, "INACTIVE");
    // Idempotent: nothing more to do.
    let r = run(&s, &docs(&only_job, "c3"), true).await;
    assert!(r.in_sync(), "{:?} {:?}", lines(&r), r.extraneous);
    assert_eq!(r.committed, None);
}

#[tokio::test]
async fn a_pruned_service_its_source_holds_again_is_taken_back() {
    let (_d, s) = store();
    let files = vec![
        ("web.yaml", td("web", "img:1") + &svc("web", "web", 2)),
        ("job.yaml", td("job", "img:1")),
    ];
    run(&s, &docs(&files, "c1"), true).await;
    let only_job = [("job.yaml", td("job", "img:1"))];
    run(&s, &docs(&only_job, "c2"), true).await;
    assert!(service(&s, "web")
        .await
        .metadata
        .deletion_timestamp
        .is_some());
    // The file comes back before the service is gone: its deletion is cancelled, not refused.
    let r = run(&s, &docs(&files, "c3"), true).await;
    assert!(
        lines(&r).contains(&"service/web configured".to_string()),
        "{:?}",
        lines(&r)
    );
    let web = service(&s, "web").await;
    assert!(web.metadata.deletion_timestamp.is_none());
    assert_eq!(web.status.status, "ACTIVE");
    assert_eq!(web.spec.desired_count, 2);
    let td = latest_taskdef(&s, "web").await.unwrap().unwrap();
    assert_eq!(td.status.status, "ACTIVE");
    // Another source may not resurrect a service being deleted, even taking it over.
    run(&s, &docs(&only_job, "c4"), true).await;
    let opts = SourceApplyOptions {
        dry_run: false,
        prune: false,
        take_over: true,
        ..Default::default()
    };
    let mut other = docs(&files, "c5");
    for d in &mut other {
        let a = &mut d.resource.metadata_mut().annotations;
        a.insert(ownership::SOURCE.into(), "other".into());
    }
    let refuse = SourceApplyOptions {
        take_over: false,
        ..opts.clone()
    };
    let e = apply_source(&s, "other", &other, &refuse, &no_status)
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), 409, "{e}");
    assert!(
        e.to_string().contains("belongs to source `src`") && e.to_string().contains("--take-over"),
        "{e}"
    );
    let e = apply_source(&s, "other", &other, &opts, &no_status)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("being deleted"), "{e}");
}

#[tokio::test]
async fn prune_finds_owned_objects_without_an_inventory_and_spares_other_owners() {
    let (_d, s) = store();
    let files = vec![("a.yaml", td("a", "img:1")), ("b.yaml", td("b", "img:1"))];
    run(&s, &docs(&files, "c1"), true).await;
    s.delete(&inventory_key("src")).await.unwrap();
    // `b` moves to another source (taken over explicitly).
    let mut other = crate::manifest::parse_str(&td("b", "img:1"), "b.yaml").unwrap();
    stamp(
        &mut other,
        "",
        &Stamp {
            source: "other".into(),
            commit: None,
            dirty: false,
        },
    );
    let opts = SourceApplyOptions {
        dry_run: false,
        prune: true,
        take_over: true,
        ..Default::default()
    };
    apply_source(&s, "other", &other, &opts, &no_status)
        .await
        .unwrap();
    let r = run(&s, &docs(&[("c.yaml", td("c", "img:1"))], "c2"), true).await;
    assert_eq!(
        lines(&r),
        ["taskdefinition/c:1 created", "taskdefinition/a pruned"]
    );
    assert_eq!(
        latest_taskdef(&s, "b")
            .await
            .unwrap()
            .unwrap()
            .status
            .status,
        "ACTIVE"
    );
}

#[tokio::test]
async fn pruning_a_family_a_service_still_uses_is_refused() {
    let (_d, s) = store();
    let files = vec![
        ("td.yaml", td("web", "img:1")),
        ("svc.yaml", svc("web", "web", 1)),
    ];
    run(&s, &docs(&files, "c1"), true).await;
    let before = revision(&s).await;
    let opts = SourceApplyOptions {
        dry_run: false,
        prune: true,
        ..Default::default()
    };
    let e = apply_source(&s, "src", &docs(&files[1..], "c2"), &opts, &no_status)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("svc.yaml") && msg.contains("would be pruned"),
        "{msg}"
    );
    assert_eq!(revision(&s).await, before, "nothing written");
}

#[tokio::test]
async fn status_record_rides_in_the_same_transaction() {
    let (_d, s) = store();
    let d = docs(&[("a.yaml", td("a", "img:1"))], "c1");
    let opts = SourceApplyOptions {
        dry_run: false,
        prune: true,
        ..Default::default()
    };
    let status = |r: &SourceReport| {
        Some((
            "/berth/sources/src".to_string(),
            format!("{}", r.changes()).into_bytes(),
        ))
    };
    let r = apply_source(&s, "src", &d, &opts, &status).await.unwrap();
    let rev = r.committed.unwrap();
    let kv = s.get("/berth/sources/src").await.unwrap().unwrap();
    assert_eq!(kv.value, b"1");
    assert_eq!(kv.mod_revision, rev);
    let td_kv = s.get(&keys::taskdef_key("a", 1)).await.unwrap().unwrap();
    assert_eq!(td_kv.mod_revision, rev, "one transaction");
}

#[tokio::test]
async fn a_scaled_services_desired_count_belongs_to_its_scaling_policy() {
    let (_d, s) = store();
    let policy = "apiVersion: berth.dev/v1\nkind: ScalingPolicy\nmetadata: {name: web-cpu}\nspec:\n  service: web\n  minCapacity: 1\n  maxCapacity: 9\n  targetTracking: {predefinedMetricType: ECSServiceAverageCPUUtilization, targetValue: 50}\n---\n";
    let files = |n| {
        [(
            "web.yaml",
            td("web", "img:1") + &svc("web", "web", n) + policy,
        )]
    };
    let r = run(&s, &docs(&files(2), "c1"), true).await;
    assert!(
        lines(&r).contains(&"service/web created".to_string()),
        "{:?}",
        lines(&r)
    );
    // The scaler moves the count.
    let key = keys::key(Kind::Service, "web");
    let mut cur: Service = decode(&s.get(&key).await.unwrap().unwrap()).unwrap();
    cur.spec.desired_count = 5;
    s.put(&key, encode(&mut cur)).await.unwrap();
    // Not drift; a later commit (even one changing the manifest's count) keeps it.
    let opts = SourceApplyOptions {
        dry_run: true,
        prune: true,
        ..Default::default()
    };
    let r = apply_source(&s, "src", &docs(&files(2), "c2"), &opts, &no_status)
        .await
        .unwrap();
    assert!(r.in_sync(), "{:?}", lines(&r));
    run(&s, &docs(&files(3), "c3"), true).await;
    assert_eq!(service(&s, "web").await.spec.desired_count, 5);
}
