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
