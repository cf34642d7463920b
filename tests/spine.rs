//! The spine end to end, on a real Docker daemon, with both store backends: manifests → API →
//! store → controllers → agent → containers, and back.

mod common;

use std::time::Duration;

use common::berth::*;
use common::etcd::EtcdServer;
use common::manifests::*;

const CONVERGE: Duration = Duration::from_secs(60);

/// `n` tasks running, and as many containers.
fn wait_running(b: &Berth, service: &str, n: usize) -> Vec<serde_json::Value> {
    b.wait_running_and(service, n, CONVERGE, || b.running_containers().len() == n)
}

fn scale_up_down_delete(b: &Berth) {
    let svc = unique("web");
    let dir = manifest_dir(&[("web.yaml", web_manifest(&svc, 3, "1"))]);
    let out = b.apply(dir.path());
    assert!(out.contains(&format!("service/{svc} created")), "{out}");
    let tasks = wait_running(b, &svc, 3);
    // Every replica serves HTTP on its own dynamic host port.
    let mut ports: Vec<u16> = tasks.iter().flat_map(host_ports).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "three distinct host ports: {ports:?}");
    for p in ports {
        let body = wait_for("httpd answering", Duration::from_secs(10), || http_get(p));
        assert!(body.contains("hello from berth"), "port {p}: {body}");
    }

    write(dir.path(), "web.yaml", &web_manifest(&svc, 5, "1"));
    let out = b.apply(dir.path());
    assert!(out.contains("configured"), "{out}");
    assert!(
        out.contains("unchanged"),
        "the task definition did not change: {out}"
    );
    wait_running(b, &svc, 5);

    write(dir.path(), "web.yaml", &web_manifest(&svc, 1, "1"));
    b.apply(dir.path());
    wait_running(b, &svc, 1);

    b.cli_ok(&["delete", "-f", dir.path().to_str().unwrap()]);
    wait_for("service gone and no container left", CONVERGE, || {
        let gone = !b.cli(&["get", "services", &svc]).status.success();
        (gone && b.containers().is_empty()).then_some(())
    });
}

fn survives_kill9(mut b: Berth) {
    let svc = unique("web");
    let dir = manifest_dir(&[("web.yaml", web_manifest(&svc, 3, "1"))]);
    b.apply(dir.path());
    let before = task_ids(&wait_running(&b, &svc, 3));
    let mut containers_before: Vec<String> = b.containers().into_iter().map(|c| c.0).collect();
    containers_before.sort();

    b.kill9();
    // The containers keep running without berth.
    assert_eq!(b.running_containers().len(), 3);
    b.spawn();

    // Same tasks, same containers, no duplicates, and it stays that way (time passes on
    // purpose: nothing may change).
    let after = task_ids(&wait_running(&b, &svc, 3));
    assert_eq!(before, after);
    for _ in 0..10 {
        let mut names: Vec<String> = b.containers().into_iter().map(|c| c.0).collect();
        names.sort();
        assert_eq!(names, containers_before, "containers changed after restart");
        std::thread::sleep(Duration::from_millis(300));
    }
    // And it still converges on a change.
    write(dir.path(), "web.yaml", &web_manifest(&svc, 4, "1"));
    b.apply(dir.path());
    let now = task_ids(&wait_running(&b, &svc, 4));
    assert!(before.iter().all(|t| now.contains(t)));
}

fn replaces_killed_container(b: &Berth) {
    let svc = unique("web");
    let dir = manifest_dir(&[("web.yaml", web_manifest(&svc, 2, "1"))]);
    b.apply(dir.path());
    let tasks = wait_running(b, &svc, 2);
    let victim_task = name_of(&tasks[0]);
    let victim = b
        .containers()
        .into_iter()
        .find(|c| c.2 == victim_task)
        .expect("container of the task");
    let out = std::process::Command::new("docker")
        .args(["kill", &victim.0])
        .output()
        .unwrap();
    assert!(out.status.success());
    let running = wait_for("a replacement", CONVERGE, || {
        let r = b.running_tasks(&svc);
        (r.len() == 2 && !task_ids(&r).contains(&victim_task) && b.running_containers().len() == 2)
            .then_some(r)
    });
    assert_eq!(running.len(), 2);
    let stopped = b.get_json(&["tasks", &victim_task]);
    assert_eq!(stopped["status"]["lastStatus"], "STOPPED");
    assert_eq!(stopped["status"]["stopCode"], "EssentialContainerExited");
    assert_eq!(stopped["status"]["containers"][0]["exitCode"], 137);
}

fn bad_manifests_change_nothing(b: &Berth) {
    let svc = unique("web");
    let dir = manifest_dir(&[("web.yaml", web_manifest(&svc, 1, "1"))]);
    b.apply(dir.path());
    let before_svc = b.get_json(&["services", &svc]);
    let before_tds = b.get_json(&["taskdefinitions"]);

    // A good change beside a broken file: nothing of the folder may land.
    write(dir.path(), "web.yaml", &web_manifest(&svc, 4, "2"));
    write(
        dir.path(),
        "broken.yaml",
        "apiVersion: berth.dev/v1\nkind: TaskDefinition\nmetadata: {name: broken}\nspec:\n  containerDefinitions:\n    - name: x\n      cpu: 10\n",
    );
    let out = b.try_apply(dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.yaml"), "error names the file: {err}");
    assert!(err.contains("image"), "error names the field: {err}");

    // Other kinds of bad input, each refused.
    for (name, text) in [
        ("syntax.yaml", "apiVersion: berth.dev/v1\nkind: Service\nmetadata: {name: x\n".to_string()),
        ("kind.yaml", "apiVersion: berth.dev/v1\nkind: Servise\nmetadata: {name: x}\nspec: {}\n".to_string()),
        (
            "negative.yaml",
            format!("apiVersion: berth.dev/v1\nkind: Service\nmetadata: {{name: {svc}}}\nspec: {{taskDefinition: {svc}, desiredCount: -1}}\n"),
        ),
        (
            "missing-td.yaml",
            "apiVersion: berth.dev/v1\nkind: Service\nmetadata: {name: orphan}\nspec: {taskDefinition: does-not-exist, desiredCount: 1}\n".to_string(),
        ),
    ] {
        let d = manifest_dir(&[(name, text)]);
        let out = b.try_apply(d.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} must be refused");
        assert!(err.contains(name), "{name}: error names the file: {err}");
    }

    let after_svc = b.get_json(&["services", &svc]);
    assert_eq!(before_svc["spec"], after_svc["spec"]);
    assert_eq!(before_tds, b.get_json(&["taskdefinitions"]));
    assert!(!b.cli(&["get", "services", "orphan"]).status.success());
}

fn run_task_records_exit_codes(b: &Berth) {
    let fam = unique("job");
    let job = task_definition(
        &fam,
        [
            container("main", &["sh", "-c", "echo working; exit 3"])
                .cpu(10)
                .memory(16),
            container("side", &["sh", "-c", "exit 0"])
                .with("essential: false")
                .cpu(10)
                .memory(16),
        ],
    );
    let dir = manifest_dir(&[("job.yaml", job.to_string())]);
    b.apply(dir.path());
    let out = b.cli(&["run-task", &fam, "--wait"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "exit 3 makes run-task --wait fail: {stdout}"
    );
    assert!(stdout.contains("main exit code 3"), "{stdout}");
    assert!(stdout.contains("side exit code 0"), "{stdout}");
    // The task record keeps both exit codes; no container is left behind.
    let tasks = b.get_json(&["tasks"]);
    let t = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            t["spec"]["taskDefinition"]
                .as_str()
                .unwrap_or("")
                .starts_with(&fam)
        })
        .unwrap()
        .clone();
    assert_eq!(t["status"]["stopCode"], "EssentialContainerExited");
    wait_for("job containers removed", Duration::from_secs(20), || {
        b.containers()
            .iter()
            .all(|c| c.2 != t["metadata"]["name"].as_str().unwrap())
            .then_some(())
    });
}

macro_rules! both_stores {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn embedded() {
                let b = Berth::up(None);
                ($body)(b);
            }
            #[test]
            fn etcd() {
                let etcd = EtcdServer::start();
                let b = Berth::up(Some(etcd.url()));
                ($body)(b);
                drop(etcd);
            }
        }
    };
}

both_stores!(scale_3_5_1_then_delete, |b: Berth| scale_up_down_delete(&b));
both_stores!(kill9_and_restart_adopts_containers, survives_kill9);
both_stores!(killed_container_is_replaced, |b: Berth| {
    replaces_killed_container(&b)
});
both_stores!(bad_manifests_change_nothing, |b: Berth| {
    bad_manifests_change_nothing(&b)
});
both_stores!(run_task_records_exit_codes, |b: Berth| {
    run_task_records_exit_codes(&b)
});
