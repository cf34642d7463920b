//! Many hosts (issue 15): control planes elect one leader and fence its writes; pauses and
//! partitions shorter than the lost-instance grace change nothing; a partitioned agent stops
//! its own copy gracefully before the control plane replaces it; a live instance id cannot be
//! claimed twice. Real etcd, real Docker, real berth processes.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::berth::*;
use common::etcd::EtcdServer;
use common::link::Link;
use common::manifests::*;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(90);

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}

/// `/v1/controllers/leader` of a berth process.
fn leadership(b: &Berth) -> Option<Value> {
    let (status, body) = http_status_body(b.port, "/v1/controllers/leader")?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

fn is_leader(b: &Berth) -> bool {
    leadership(b).is_some_and(|l| l["isLeader"] == true)
}

/// A `berth agent` process with its own data dir (so its own holder id).
struct Agent {
    child: Option<Child>,
    instance: String,
    data: tempfile::TempDir,
    log: PathBuf,
}

impl Agent {
    fn start(store: &str, instance: &str, extra: &[&str]) -> Agent {
        let data = tempfile::Builder::new()
            .prefix("berth-agent-")
            .tempdir()
            .unwrap();
        let log = data.path().join("agent.log");
        let mut a = Agent {
            child: None,
            instance: instance.to_string(),
            data,
            log,
        };
        a.spawn(store, extra);
        a
    }
    fn spawn(&mut self, store: &str, extra: &[&str]) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(berth_bin())
            .args(["agent", "--store", store, "--instance-id", &self.instance])
            .args(["--lease-ttl", "3s"])
            .args(extra)
            .env("XDG_DATA_HOME", self.data.path())
            .env("BERTH_LOG", "info,berth=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }
    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.as_mut().unwrap().try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
        remove_containers_with_label(&format!("berth.instance={}", self.instance));
    }
}

fn wait_connected_instance(b: &Berth, id: &str) {
    wait_for(&format!("instance {id} connected"), CONVERGE, || {
        let v = b.try_get_json(&["instances", id])?;
        (v["status"]["agentConnected"] == true).then_some(())
    });
}

/// Every task of `service` ever created (any state).
fn all_tasks(b: &Berth, service: &str) -> Vec<Value> {
    b.get_json(&["tasks", "--service", service])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The running container `container` of `task` on `instance`.
fn container_on(instance: &str, task: &str, container: &str) -> String {
    wait_for(
        &format!("a running container of task {task} on {instance}"),
        Duration::from_secs(30),
        || {
            containers_with_label(&format!("berth.instance={instance}"))
                .into_iter()
                .find(|c| {
                    c.2 == task && c.1 == "running" && c.0.ends_with(&format!("-{container}"))
                })
                .map(|c| c.0)
        },
    )
}

/// A singleton that exits 0 on SIGTERM, so a graceful stop shows as exit code 0.
fn singleton(name: &str) -> String {
    let td = task_definition(
        name,
        [container(
            "app",
            &[
                "sh",
                "-c",
                "trap 'echo got TERM; exit 0' TERM; while true; do sleep 0.2; done",
            ],
        )
        .cpu(256)
        .memory(32)
        .stop_timeout(10)],
    );
    documents(&[td.to_string(), service(name, name, 1, &[])])
}

/// Running containers of `service`'s tasks across the given instances.
fn running_copies(instances: &[&str], tasks: &BTreeSet<String>) -> usize {
    instances
        .iter()
        .flat_map(|i| containers_with_label(&format!("berth.instance={i}")))
        .filter(|c| c.1 == "running" && tasks.contains(&c.2))
        .count()
}

#[test]
fn one_leader_fails_over_and_a_deposed_leader_steps_down() {
    let etcd = EtcdServer::start();
    let a = Berth::up(Some(etcd.url()));
    let mut b = Berth::up(Some(etcd.url()));
    let (first, second) = wait_for("one elected leader", CONVERGE, || {
        let (la, lb) = (leadership(&a)?, leadership(&b)?);
        let leader = la["leader"].as_str()?;
        (lb["leader"] == leader && (la["isLeader"] != lb["isLeader"])).then(|| {
            if la["isLeader"] == true {
                (0, 1)
            } else {
                (1, 0)
            }
        })
    });
    let both = [&a, &b];
    let ctl: Vec<Value> = serde_json::from_str(
        &http_status_body(both[second].port, "/v1/controllers")
            .unwrap()
            .1,
    )
    .unwrap();
    let svc = ctl
        .iter()
        .find(|c| c["name"] == "service")
        .expect("a standby lists its controllers");
    assert_eq!(svc["active"], false, "{svc}");
    assert!(svc["leader"].is_string(), "{svc}");

    let name = unique("ha");
    let dir = manifest_dir(&[("web.yaml", web_manifest(&name, 2, "1"))]);
    a.apply(dir.path());
    a.wait_running(&name, 2, CONVERGE);

    // Pause the leader past its lease: the standby takes over within 15 s.
    let pid = both[first].pid().unwrap();
    signal(pid, "STOP");
    let paused = Instant::now();
    wait_for("the standby leads", Duration::from_secs(15), || {
        is_leader(both[second]).then_some(())
    });
    let takeover = paused.elapsed();
    // Scaling carries on under the new leader.
    let dir3 = manifest_dir(&[("web.yaml", web_manifest(&name, 3, "1"))]);
    both[second].apply(dir3.path());
    both[second].wait_running(&name, 3, CONVERGE);
    // The deposed leader wakes: it steps down and writes nothing (no task is created twice).
    signal(pid, "CONT");
    wait_for("the woken process steps down", CONVERGE, || {
        let l = leadership(both[first])?;
        (l["isLeader"] == false && l["leader"].is_string()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(5));
    assert!(is_leader(both[second]));
    let created = all_tasks(both[second], &name);
    assert_eq!(
        created.len(),
        3,
        "exactly three tasks ever created (after {takeover:?} of takeover): {created:?}"
    );

    // Kill -9 the leader: the other process leads again within 15 s.
    if second == 1 {
        b.kill9();
        wait_for(
            "the first process leads again",
            Duration::from_secs(15),
            || is_leader(&a).then_some(()),
        );
    } else {
        drop(a);
        wait_for(
            "the second process leads again",
            Duration::from_secs(15),
            || is_leader(&b).then_some(()),
        );
    }
}

#[test]
fn a_second_agent_cannot_claim_a_live_instance_id() {
    let etcd = EtcdServer::start();
    let b = Berth::up(Some(etcd.url()));
    wait_connected_instance(&b, &b.instance);
    let mut impostor = Agent::start(&etcd.url(), &b.instance, &[]);
    let st = impostor
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the impostor keeps running; log:\n{}", impostor.log()));
    assert!(!st.success());
    let log = impostor.log();
    assert!(
        log.contains("is held by another live agent"),
        "a clear refusal: {log}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let inst = b.get_json(&["instances", &b.instance]);
    assert_eq!(inst["status"]["agentConnected"], true, "{inst}");
}

#[test]
fn a_paused_agent_keeps_its_singleton() {
    let etcd = EtcdServer::start();
    // The control plane's own agent is too small for the task: it runs on the second agent.
    let b = Berth::up_with(Some(etcd.url()), vec!["--cpu".into(), "128".into()]);
    let other = unique("paused");
    let agent = Agent::start(&etcd.url(), &other, &[]);
    wait_connected_instance(&b, &other);
    let name = unique("single");
    b.apply(manifest_dir(&[("s.yaml", singleton(&name))]).path());
    let t = wait_for(
        "the singleton running on the second agent",
        CONVERGE,
        || {
            let r = b.running_tasks(&name);
            (r.len() == 1 && r[0]["status"]["containerInstance"] == other.as_str())
                .then(|| r[0].clone())
        },
    );
    let task = name_of(&t);
    let container = container_on(&other, &task, "app");
    let started = docker_started_at(&container);

    // Frozen for 12 s: four lease periods, far less than the 5 minute grace.
    signal(agent.pid(), "STOP");
    let tasks: BTreeSet<String> = [task.clone()].into();
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let active = b.active_tasks(&name);
        assert!(active.len() <= 1, "a second copy while paused: {active:?}");
        assert!(running_copies(&[&b.instance, &other], &tasks) <= 1);
        std::thread::sleep(Duration::from_millis(500));
    }
    signal(agent.pid(), "CONT");
    wait_connected_instance(&b, &other);
    std::thread::sleep(Duration::from_secs(5));
    let created = all_tasks(&b, &name);
    assert_eq!(created.len(), 1, "nothing replaced: {created:?}");
    assert_eq!(created[0]["status"]["lastStatus"], "RUNNING");
    assert_eq!(
        docker_started_at(&container),
        started,
        "the original container was never restarted or killed"
    );
}

#[test]
fn a_partitioned_agent_stops_its_copy_gracefully_before_it_is_replaced() {
    let etcd = EtcdServer::start();
    let grace = "6s";
    let b = Berth::up_with(
        Some(etcd.url()),
        vec![
            "--cpu".into(),
            "128".into(),
            "--lost-instance-grace".into(),
            grace.into(),
        ],
    );
    // The agent reaches etcd through a link the test can cut.
    let link = Link::to(&etcd.endpoint());
    let cut_off = unique("cut");
    let _agent = Agent::start(
        &format!("etcd://{}", link.addr()),
        &cut_off,
        &["--lost-instance-grace", grace],
    );
    wait_connected_instance(&b, &cut_off);
    let name = unique("single");
    b.apply(manifest_dir(&[("s.yaml", singleton(&name))]).path());
    let t = wait_for("the singleton running behind the link", CONVERGE, || {
        let r = b.running_tasks(&name);
        (r.len() == 1 && r[0]["status"]["containerInstance"] == cut_off.as_str())
            .then(|| r[0].clone())
    });
    let original = name_of(&t);
    let original_container = container_on(&cut_off, &original, "app");
    // Somewhere for the replacement to go.
    let spare = unique("spare");
    let _spare = Agent::start(&etcd.url(), &spare, &[]);
    wait_connected_instance(&b, &spare);

    // Watch Docker throughout: never two running copies.
    let copies = CopyWatch::start(vec![cut_off.clone(), spare.clone()]);
    link.cut();
    let replacement = wait_for("a replacement running on the spare", CONVERGE, || {
        let r = b.running_tasks(&name);
        r.iter()
            .find(|t| t["status"]["containerInstance"] == spare.as_str())
            .cloned()
    });
    let state = docker_inspect(&original_container);
    assert_eq!(
        state["State"]["Running"], false,
        "the partitioned copy stopped before its replacement ran"
    );
    assert_eq!(
        state["State"]["ExitCode"], 0,
        "stopped with SIGTERM (the trap exits 0), not killed: {}",
        state["State"]
    );
    let lost = b.get_json(&["tasks", &original]);
    assert_eq!(lost["status"]["lastStatus"], "STOPPED");
    assert_ne!(name_of(&replacement), original);
    assert!(copies.finish() <= 1, "two copies ran at once");
    // The link heals: the returning agent removes what is no longer its own.
    link.heal();
    wait_for("the returning agent cleans up", CONVERGE, || {
        containers_with_label(&format!("berth.instance={cut_off}"))
            .is_empty()
            .then_some(())
    });
    assert_eq!(b.running_tasks(&name).len(), 1);
}

fn docker_started_at(id: &str) -> String {
    docker_inspect(id)["State"]["StartedAt"]
        .as_str()
        .unwrap_or("")
        .to_string()
}
