//! Issue 16 item 3, as an attacker would try it: host mounts are checked against an allow-list
//! (not by spelling), the agent refuses a path that goes through a symlink (a task mounting
//! `/tmp/x` makes `/tmp/x/r → /`, a second task mounts `/tmp/x/r`), and host networking needs
//! the privileged setting like the other host namespaces.

mod common;

use std::process::Output;
use std::time::Duration;

use common::berth::*;
use common::manifests::*;

fn apply_text(b: &Berth, name: &str, text: &str) -> Output {
    let dir = manifest_dir(&[(name, text.to_string())]);
    b.try_apply(dir.path())
}

fn mounting(name: &str, path: &str, command: &[&str]) -> String {
    task_definition(
        name,
        [container("app", command)
            .memory(16)
            .with("mountPoints: [{sourceVolume: h, containerPath: /w}]")],
    )
    .spec(&format!(
        "volumes: [{{name: h, host: {{sourcePath: \"{path}\"}}}}]"
    ))
    .to_string()
}

#[test]
fn host_mounts_outside_the_allow_list_and_host_networking_are_refused() {
    let b = Berth::up(None);
    let data_dir = b.data.path().display().to_string();
    for (i, path) in ["/etc", "/root", "/tmp/../etc", &data_dir, "/home"]
        .iter()
        .enumerate()
    {
        let name = format!("m{i}");
        let o = apply_text(&b, "m.yaml", &mounting(&name, path, &["true"]));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "{path} was accepted");
        assert!(
            err.contains("refused") && err.contains("settings.allowHostMounts"),
            "{path}: {err}"
        );
    }
    let host = task_definition("hostnet", [container("app", &["true"]).memory(16)])
        .spec("networkMode: host")
        .to_string();
    let o = apply_text(&b, "h.yaml", &host);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "networkMode host was accepted");
    assert!(
        err.contains("networkMode host") && err.contains("settings.allowPrivileged"),
        "{err}"
    );
    let stored = b.get_json(&["taskdefinitions"]);
    assert_eq!(stored.as_array().map(Vec::len), Some(0), "{stored}");
}

#[test]
fn a_mount_through_a_symlink_is_refused_by_the_agent() {
    let b = Berth::up(None);
    let dir = tempfile::Builder::new()
        .prefix("berth-mount-")
        .tempdir_in("/tmp")
        .unwrap();
    let base = dir.path().display().to_string();
    // The first task may mount its directory under /tmp, and plants a symlink to / in it.
    b.apply(
        manifest_dir(&[(
            "a.yaml",
            mounting("planter", &base, &["sh", "-c", "ln -s / /w/r && sleep 30"]),
        )])
        .path(),
    );
    let id = b.cli_ok(&["run-task", "planter"]).trim().to_string();
    b.wait_task(&id, "RUNNING", Duration::from_secs(60));
    wait_for("the symlink planted", Duration::from_secs(20), || {
        std::fs::symlink_metadata(dir.path().join("r"))
            .ok()
            .filter(|m| m.file_type().is_symlink())
            .map(|_| ())
    });
    // The second spells a path under /tmp too, but it leads to the host's root.
    let through = format!("{base}/r");
    b.apply(
        manifest_dir(&[(
            "b.yaml",
            mounting("climber", &through, &["cat", "/w/etc/hostname"]),
        )])
        .path(),
    );
    let id2 = b.cli_ok(&["run-task", "climber"]).trim().to_string();
    let t = b.wait_task(&id2, "STOPPED", Duration::from_secs(60));
    let reason = t["status"]["stoppedReason"].as_str().unwrap_or("");
    assert!(reason.contains("symlink"), "{t}");
    let started = t["status"]["containers"]
        .as_array()
        .map(|cs| cs.iter().any(|c| c["exitCode"].is_number()))
        .unwrap_or(false);
    assert!(!started, "the container never ran: {t}");
    b.cli_ok(&["stop-task", &id]);
}
