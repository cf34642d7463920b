//! Issue 16 item 14: a DAEMON service runs one task on every instance of its cluster and
//! follows instances as they join (on the instance's own event, not a periodic resync), and
//! `berth get services` shows how many it should run (as ECS reports desiredCount).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::berth::*;
use common::etcd::EtcdServer;
use common::manifests::*;

struct Agent {
    child: Child,
    instance: String,
    _data: tempfile::TempDir,
}

impl Agent {
    fn start(store: &str, instance: &str) -> Agent {
        let data = tempfile::tempdir().unwrap();
        let child = Command::new(berth_bin())
            .args([
                "agent",
                "--store",
                store,
                "--instance-id",
                instance,
                "--lease-ttl",
                "3s",
            ])
            .env("XDG_DATA_HOME", data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Agent {
            child,
            instance: instance.to_string(),
            _data: data,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_containers_with_label(&format!("berth.instance={}", self.instance));
    }
}

fn on_instances(b: &Berth, name: &str) -> Vec<String> {
    let mut v: Vec<String> = b
        .running_tasks(name)
        .iter()
        .filter_map(|t| t["status"]["containerInstance"].as_str().map(String::from))
        .collect();
    v.sort();
    v
}

#[test]
fn a_daemon_service_follows_instances_as_they_join() {
    let etcd = EtcdServer::start();
    let b = Berth::up(Some(etcd.url()));
    let second = unique("daemon-b");
    let _b2 = Agent::start(&etcd.url(), &second);
    let name = unique("daemon");
    let td = task_definition(
        &name,
        [container("app", &["sleep", "3600"]).cpu(8).memory(8)],
    );
    let doc = documents(&[
        td.to_string(),
        service(&name, &name, 0, &["schedulingStrategy: DAEMON"]),
    ]);
    b.apply(manifest_dir(&[("d.yaml", doc)]).path());
    let mut want = vec![b.instance.clone(), second.clone()];
    want.sort();
    wait_for(
        "one task on each of the two instances",
        Duration::from_secs(90),
        || (on_instances(&b, &name) == want).then_some(()),
    );
    let list = b.cli_ok(&["get", "services"]);
    let row = list
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap_or("")
        .to_string();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cols.get(3),
        Some(&"2"),
        "DESIRED shows the instance count: {list}"
    );

    // A third instance joins: it gets its task on its own event (the resync is 30 s).
    let third = unique("daemon-c");
    let joined = Instant::now();
    let _c = Agent::start(&etcd.url(), &third);
    want.push(third.clone());
    want.sort();
    wait_for(
        "a task on the new instance",
        Duration::from_secs(15),
        || (on_instances(&b, &name) == want).then_some(()),
    );
    eprintln!(
        "the joining instance ran its daemon task after {:?}",
        joined.elapsed()
    );
    let svc = b.get_json(&["services", &name]);
    assert_eq!(svc["status"]["desiredCount"], 3, "{svc}");
}
