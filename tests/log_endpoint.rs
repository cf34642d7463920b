//! Issue 16 item 4, as a local user or a host-network task would try it: the agent's log
//! endpoint answers only the berth API (a secret the agent publishes for the server alone);
//! `berth logs` still works.

mod common;

use std::time::Duration;

use common::berth::*;
use common::manifests::*;

#[test]
fn the_agents_log_endpoint_refuses_anyone_but_the_api() {
    let b = Berth::up(None);
    let name = unique("talker");
    let td = task_definition(
        &name,
        [container("app", &["sh", "-c", "echo secret-line-42; sleep 30"]).memory(16)],
    );
    b.apply(manifest_dir(&[("t.yaml", td.to_string())]).path());
    let id = b.cli_ok(&["run-task", &name]).trim().to_string();
    b.wait_task(&id, "RUNNING", Duration::from_secs(60));
    let logs = wait_for("berth logs shows the line", Duration::from_secs(20), || {
        let out = b.cli(&["logs", &id]);
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.contains("secret-line-42").then_some(s)
    });
    assert!(logs.contains("secret-line-42"));

    let inst = b.get_json(&["instances", &b.instance]);
    let endpoint = inst["metadata"]["annotations"]["berth.dev/logs-endpoint"]
        .as_str()
        .expect("the instance advertises its log endpoint")
        .to_string();
    let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    // Straight to the agent, as any local user could: refused, and nothing of the log leaks.
    for headers in [
        vec![],
        vec![("Authorization".to_string(), "Bearer guess".to_string())],
        vec![("Authorization".to_string(), format!("Bearer {}", b.token()))],
    ] {
        let (status, _, body) =
            http_raw(port, "GET", &format!("/logs/{id}"), &headers, b"").unwrap();
        assert_eq!(status, 401, "{body}");
        assert!(!body.contains("secret-line-42"));
    }
    b.cli_ok(&["stop-task", &id]);
}
