//! etcd done properly (issue 15): TLS with client-certificate authentication (`etcds://`,
//! `--etcd-ca/--etcd-cert/--etcd-key`), and a 3-member cluster that loses a member (berth
//! carries on) and then all of them for 20 s (containers keep running; berth recovers by
//! itself once a majority is back).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use berth::bench::etcd_cluster::{EtcdCluster, TlsFiles};
use common::berth::*;
use common::manifests::*;

const CONVERGE: Duration = Duration::from_secs(90);

fn tls_args(t: &TlsFiles) -> Vec<String> {
    vec![
        "--etcd-ca".into(),
        t.ca.display().to_string(),
        "--etcd-cert".into(),
        t.client_cert.display().to_string(),
        "--etcd-key".into(),
        t.client_key.display().to_string(),
    ]
}

#[test]
fn berth_talks_to_etcd_over_tls_with_a_client_certificate() {
    let tls = TlsFiles::generate().unwrap();
    let cluster = EtcdCluster::start(1, Some(&tls)).unwrap();
    assert!(cluster.url().starts_with("etcds://"));

    // Without a client certificate etcd refuses the connection: berth says so and exits.
    let out = Command::new(berth_bin())
        .args(["server", "--store", &cluster.url(), "--api", "127.0.0.1:0"])
        .args(["--etcd-ca", tls.ca.to_str().unwrap()])
        .env("BERTH_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "no client certificate must not connect"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("etcd"), "a clear error naming etcd: {err}");
    // Plain etcd:// against a TLS-only member fails too.
    let plain = cluster.url().replace("etcds://", "etcd://");
    let out = Command::new(berth_bin())
        .args(["server", "--store", &plain, "--api", "127.0.0.1:0"])
        .env("BERTH_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());

    // With CA, certificate and key everything works.
    let b = Berth::up_with(Some(cluster.url()), tls_args(&tls));
    let name = unique("tls");
    b.apply(manifest_dir(&[("web.yaml", web_manifest(&name, 2, "1"))]).path());
    b.wait_running(&name, 2, CONVERGE);
}

#[test]
fn a_three_member_cluster_loses_one_member_then_all_and_berth_recovers() {
    let mut cluster = EtcdCluster::start(3, None).unwrap();
    let b = Berth::up(Some(cluster.url()));
    let name = unique("quorum");
    b.apply(manifest_dir(&[("web.yaml", web_manifest(&name, 2, "1"))]).path());
    b.wait_running(&name, 2, CONVERGE);

    // One member dies: everything carries on (scale up through the two that are left).
    cluster.kill(0);
    b.apply(manifest_dir(&[("web.yaml", web_manifest(&name, 3, "1"))]).path());
    b.wait_running(&name, 3, CONVERGE);

    // All members down for 20 s: the containers keep running, berth keeps running.
    let before: Vec<String> = b.running_containers().into_iter().map(|c| c.0).collect();
    assert_eq!(before.len(), 3, "{before:?}");
    cluster.kill(1);
    cluster.kill(2);
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        let now: Vec<String> = b.running_containers().into_iter().map(|c| c.0).collect();
        assert_eq!(now, before, "containers changed while the store was down");
        std::thread::sleep(Duration::from_secs(1));
    }
    let (status, body) = http_status_body(b.port, "/healthz").unwrap();
    assert_eq!(
        status, 503,
        "healthz reports the store is unreachable: {body}"
    );

    // A majority returns: berth recovers by itself.
    cluster.restart(1).unwrap();
    cluster.restart(2).unwrap();
    cluster.wait_all_healthy().unwrap();
    wait_for("healthz ok again", CONVERGE, || {
        http_status_body(b.port, "/healthz")
            .filter(|(s, _)| *s == 200)
            .map(|_| ())
    });
    b.apply(manifest_dir(&[("web.yaml", web_manifest(&name, 1, "1"))]).path());
    b.wait_running(&name, 1, CONVERGE);
    wait_for(
        "scaled in to one container after recovering",
        CONVERGE,
        || (b.running_containers().len() == 1).then_some(()),
    );
}
