//! Issue 16 item 14: a DAEMON service runs one task on every instance of its cluster and
//! follows instances as they join (on the instance's own event, not a periodic resync), are
//! drained (`berth drain`) and leave (the agent goes away: after the lost-instance grace its
//! task is not owed any more); `berth get services` shows how many it should run (as ECS
//! reports desiredCount). A drain also moves a REPLICA service's tasks off the instance
//! within its minimumHealthyPercent.

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

impl Agent {
    /// The agent process dies; its containers stay (a host that went away).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

fn desired_of(b: &Berth, name: &str) -> u64 {
    b.get_json(&["services", name])["status"]["desiredCount"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn a_daemon_service_follows_a_drain_and_a_leaving_instance() {
    let etcd = EtcdServer::start();
    let b = Berth::up_with(
        Some(etcd.url()),
        vec!["--lost-instance-grace".into(), "3s".into()],
    );
    let second = unique("daemon-b");
    let third = unique("daemon-c");
    let mut agent_b = Agent::start(&etcd.url(), &second);
    let _c = Agent::start(&etcd.url(), &third);
    let name = unique("daemon");
    let td = task_definition(
        &name,
        [container("app", &["sleep", "3600"])
            .cpu(8)
            .memory(8)
            .stop_timeout(2)],
    );
    let doc = documents(&[
        td.to_string(),
        service(&name, &name, 0, &["schedulingStrategy: DAEMON"]),
    ]);
    b.apply(manifest_dir(&[("d.yaml", doc)]).path());
    let mut all = vec![b.instance.clone(), second.clone(), third.clone()];
    all.sort();
    wait_for(
        "one task on each of three instances",
        Duration::from_secs(90),
        || (on_instances(&b, &name) == all).then_some(()),
    );

    // Drain the third: its daemon task stops, nothing replaces it anywhere, desired is 2.
    let out = b.cli_ok(&["drain", &third]);
    assert!(out.contains("DRAINING"), "{out}");
    let without_third: Vec<String> = all.iter().filter(|i| **i != third).cloned().collect();
    wait_for(
        "the drained instance's task stopped",
        Duration::from_secs(30),
        || (on_instances(&b, &name) == without_third && desired_of(&b, &name) == 2).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        on_instances(&b, &name),
        without_third,
        "nothing went back on it"
    );
    let tasks = b.get_json(&["tasks"]);
    let pending = tasks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| {
            t["spec"]["group"] == format!("service:{name}").as_str()
                && t["status"]["desiredStatus"] == "RUNNING"
                && t["status"]["lastStatus"] != "RUNNING"
        })
        .count();
    assert_eq!(pending, 0, "no replacement waits for an instance: {tasks}");

    // Activate it again: the daemon task comes back.
    let out = b.cli_ok(&["activate", &third]);
    assert!(out.contains("ACTIVE"), "{out}");
    wait_for(
        "the task is back on the activated instance",
        Duration::from_secs(30),
        || (on_instances(&b, &name) == all).then_some(()),
    );

    // The second leaves (its agent is gone for good): after the lease lapses and the grace
    // passes, its task is lost and not owed any more.
    agent_b.kill();
    let without_second: Vec<String> = all.iter().filter(|i| **i != second).cloned().collect();
    wait_for(
        "the leaving instance is no longer counted",
        Duration::from_secs(60),
        || (on_instances(&b, &name) == without_second && desired_of(&b, &name) == 2).then_some(()),
    );
    wait_for(
        "the service is steady again",
        Duration::from_secs(60),
        || {
            let svc = b.get_json(&["services", &name]);
            (svc["status"]["deployments"][0]["rolloutState"] == "COMPLETED").then_some(())
        },
    );
}

#[test]
fn a_drain_moves_replica_tasks_within_minimum_healthy_percent() {
    let etcd = EtcdServer::start();
    let b = Berth::up(Some(etcd.url()));
    let second = unique("drain-b");
    let _b2 = Agent::start(&etcd.url(), &second);
    let name = unique("drain");
    let td = task_definition(
        &name,
        [container("app", &["sleep", "3600"]).cpu(8).memory(8)],
    );
    let doc = documents(&[td.to_string(), service(&name, &name, 2, &[])]);
    b.apply(manifest_dir(&[("r.yaml", doc)]).path());
    b.wait_running(&name, 2, Duration::from_secs(60));
    wait_for("both instances registered", Duration::from_secs(30), || {
        let list = b.cli_ok(&["get", "instances"]);
        list.contains(&second).then_some(())
    });
    // Drain whichever instance holds tasks (both, if they are spread: drain the first).
    let hosts = on_instances(&b, &name);
    let drained = hosts[0].clone();
    let keep = if drained == second {
        b.instance.clone()
    } else {
        second.clone()
    };
    b.cli_ok(&["drain", &drained]);
    let mut lowest = usize::MAX;
    wait_for(
        "every task moved off the drained instance",
        Duration::from_secs(60),
        || {
            let running = b.running_tasks(&name);
            lowest = lowest.min(running.len());
            (on_instances(&b, &name) == vec![keep.clone(), keep.clone()]).then_some(())
        },
    );
    assert!(
        lowest >= 2,
        "minimumHealthyPercent 100 held: lowest running {lowest}"
    );
    // The status is written by the next reconcile after the move.
    wait_for(
        "the service reports 2 running",
        Duration::from_secs(30),
        || {
            let svc = b.get_json(&["services", &name]);
            (svc["status"]["runningCount"] == 2).then_some(())
        },
    );
}
