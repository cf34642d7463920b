//! Issue 16 item 5, as an attacker and an operator would see it: anonymous requests cannot
//! flush the audit trail (they are rate-limited and aggregated per source), accepted changes
//! are kept apart from that noise, and changes the controllers make are recorded with their
//! source.

mod common;

use std::time::Duration;

use common::berth::*;
use common::manifests::*;
use serde_json::Value;

fn audit(b: &Berth, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["audit", "-o", "json"];
    a.extend_from_slice(args);
    serde_json::from_str::<Value>(&b.cli_ok(&a))
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn anonymous_floods_aggregate_and_controller_writes_are_recorded() {
    let b = Berth::up(None);
    let name = unique("kept");
    b.apply(manifest_dir(&[("web.yaml", web_manifest(&name, 1, "1"))]).path());
    b.wait_running(&name, 1, Duration::from_secs(90));

    // 400 anonymous requests from one address.
    for _ in 0..400 {
        let _ = http_raw(b.port, "GET", "/v1/services", &[], b"");
    }
    let anon = audit(&b, &["--identity", "anonymous"]);
    assert!(
        anon.len() <= 12,
        "400 anonymous requests were recorded one by one: {} records",
        anon.len()
    );
    assert!(
        !anon.is_empty(),
        "unauthenticated requests are still recorded"
    );
    // The apply (an accepted change) is still in the trail.
    let applies = audit(&b, &["--action", "berth:Apply*"]);
    assert!(
        applies.iter().any(|r| r["decision"] == "allowed"),
        "the change is kept: {applies:?}"
    );
    // What the controllers wrote for it is recorded, as the controllers' own.
    let writes = wait_for(
        "controller writes in the trail",
        Duration::from_secs(30),
        || {
            let w = audit(&b, &["--action", "berth:StoreWrite"]);
            (!w.is_empty()).then_some(w)
        },
    );
    assert!(
        writes.iter().any(|r| r["identity"]
            .as_str()
            .unwrap_or("")
            .starts_with("controllers@")),
        "{writes:?}"
    );
    let touched_a_task = |r: &Value| {
        r["resources"].as_array().is_some_and(|rs| {
            rs.iter().any(|x| {
                x["resource"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("/berth/tasks/"))
            })
        })
    };
    assert!(
        writes.iter().any(touched_a_task),
        "task creation by the service controller is recorded: {writes:?}"
    );
}

#[test]
fn a_gitops_sync_is_recorded_with_its_source() {
    let name = unique("synced");
    let dir = manifest_dir(&[("web.yaml", web_manifest(&name, 1, "1"))]);
    let b = Berth::up_with(
        None,
        vec!["--manifests".into(), dir.path().display().to_string()],
    );
    let writes = wait_for("the sync in the trail", Duration::from_secs(30), || {
        let w: Vec<Value> = audit(&b, &["--action", "berth:StoreWrite"])
            .into_iter()
            .filter(|r| r["identity"].as_str().unwrap_or("").starts_with("gitops:"))
            .collect();
        (!w.is_empty()).then_some(w)
    });
    assert!(
        writes
            .iter()
            .any(|r| r["resources"].to_string().contains(&name)),
        "the synced objects are named: {writes:?}"
    );
}

/// An etcd user who may write everything of berth's but the audit trail: etcd's own RBAC, with
/// the user named by the client certificate's CN (`--client-cert-auth`), as an operator might
/// misconfigure it or a quota might refuse it. Only the audit writes fail; nothing is faked.
mod audit_refused {
    use berth::bench::etcd_cluster::TlsFiles;
    use etcd_client::{Certificate, Client, ConnectOptions, Identity, Permission, TlsOptions};

    pub const ROOT_PASSWORD: &str = "root-pw-for-this-test";
    const AUDIT: &str = berth::audit::PREFIX;

    fn tls(t: &TlsFiles) -> TlsOptions {
        let pem = |p: &std::path::Path| std::fs::read(p).unwrap();
        TlsOptions::new()
            .ca_certificate(Certificate::from_pem(pem(&t.ca)))
            .identity(Identity::from_pem(pem(&t.client_cert), pem(&t.client_key)))
    }

    pub async fn admin(endpoint: &str, t: &TlsFiles, as_root: bool) -> Client {
        let mut o = ConnectOptions::new().with_tls(tls(t));
        if as_root {
            o = o.with_user("root", ROOT_PASSWORD);
        }
        Client::connect([endpoint], Some(o)).await.unwrap()
    }

    /// Turn on etcd auth: `root` (password) administers; `berth-client` (the certificate berth
    /// connects with) reads everything and writes everything except the audit prefix.
    pub async fn refuse_audit_writes(c: &mut Client) {
        c.user_add("root", ROOT_PASSWORD, None).await.unwrap();
        c.user_grant_role("root", "root").await.unwrap();
        c.role_add("berth").await.unwrap();
        let mut after_audit = AUDIT.as_bytes().to_vec();
        *after_audit.last_mut().unwrap() += 1;
        for p in [
            Permission::read(vec![0u8]).with_from_key(),
            Permission::write(vec![0u8]).with_range_end(AUDIT),
            Permission::write(after_audit).with_from_key(),
        ] {
            c.role_grant_permission("berth", p).await.unwrap();
        }
        c.user_add("berth-client", "unused-cn-auth", None)
            .await
            .unwrap();
        c.user_grant_role("berth-client", "berth").await.unwrap();
        c.auth_enable().await.unwrap();
    }
}

#[test]
fn a_change_whose_audit_record_cannot_be_stored_is_refused_and_changes_nothing() {
    use berth::bench::etcd_cluster::{EtcdCluster, TlsFiles};
    let tls = TlsFiles::generate().unwrap();
    let cluster = EtcdCluster::start(1, Some(&tls)).unwrap();
    let endpoint = cluster
        .url()
        .replace("etcds://", "https://")
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let b = Berth::up_with(
        Some(cluster.url()),
        vec![
            "--etcd-ca".into(),
            tls.ca.display().to_string(),
            "--etcd-cert".into(),
            tls.client_cert.display().to_string(),
            "--etcd-key".into(),
            tls.client_key.display().to_string(),
        ],
    );
    let kept = unique("kept");
    b.apply(manifest_dir(&[("web.yaml", web_manifest(&kept, 1, "1"))]).path());
    b.wait_running(&kept, 1, Duration::from_secs(90));
    let running = task_ids(&b.running_tasks(&kept));

    rt.block_on(async {
        let mut c = audit_refused::admin(&endpoint, &tls, false).await;
        audit_refused::refuse_audit_writes(&mut c).await;
    });

    // A new service: refused with 503 AuditUnavailable, and not created.
    let fresh = unique("unaudited");
    let dir = manifest_dir(&[("web.yaml", web_manifest(&fresh, 1, "1"))]);
    let out = b.try_apply(dir.path());
    assert!(
        !out.status.success(),
        "an apply whose record cannot be stored must fail: {}",
        stdout(&out)
    );
    let err = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        err.contains("audit"),
        "the error says the audit trail is the reason: {err}"
    );
    let (status, _, body) = http_raw(
        b.port,
        "DELETE",
        &format!("/v1/services/{kept}"),
        &[("authorization".into(), format!("Bearer {}", b.token()))],
        b"",
    )
    .expect("the API answers");
    assert_eq!(status, 503, "delete without an audit record: {body}");
    assert!(body.contains("AuditUnavailable"), "{body}");

    // Nothing changed: the new service does not exist, the old one still runs the same task.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        b.try_get_json(&["services", &fresh]).is_none(),
        "the refused apply created the service"
    );
    let svc = b.get_json(&["services", &kept]);
    assert_eq!(svc["spec"]["desiredCount"], 1, "{svc}");
    assert_eq!(
        task_ids(&b.running_tasks(&kept)),
        running,
        "the refused delete touched the service's tasks"
    );

    // Once the trail can be written again, the same apply goes through: the audit write, and
    // nothing else, was what failed.
    rt.block_on(async {
        let mut root = audit_refused::admin(&endpoint, &tls, true).await;
        root.auth_disable().await.unwrap();
    });
    wait_for("the apply accepted again", Duration::from_secs(30), || {
        b.try_apply(dir.path()).status.success().then_some(())
    });
    b.wait_running(&fresh, 1, Duration::from_secs(90));
}
