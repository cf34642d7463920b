//! Several hosts for real (issue 15): etcd, two control planes and two agents each in its own
//! network namespace with its own address on one bridge. Partitions are links taken down:
//! - the leading control plane's link: the other leads within 15 s, and the cut-off one steps
//!   down and writes nothing when its link returns;
//! - a singleton's agent's link, past a short grace: the agent stops its copy gracefully, the
//!   task is replaced on the other agent, and two copies never run.

mod common;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::berth::*;
use common::manifests::*;
use common::netns::{Host, Net};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(90);
const GRACE: &str = "6s";

/// A process inside a namespaced host, killed on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(
        host: &Host,
        program: &str,
        args: &[String],
        env: &[(&str, &PathBuf)],
        log: PathBuf,
    ) -> Proc {
        let f = std::fs::File::create(&log).unwrap();
        let mut cmd = host.command(program);
        cmd.args(args)
            .env("BERTH_LOG", "info,berth=debug")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc {
            child: cmd.spawn().expect("spawn in a namespace"),
            log,
        }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `berth up` control plane on its host, its CLI config (admin token) in `config`.
struct ControlPlane {
    host: Host,
    config: tempfile::TempDir,
    _data: tempfile::TempDir,
    _proc: Proc,
}

impl ControlPlane {
    fn start(host: Host, store: &str, instance: &str) -> ControlPlane {
        let config = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let args: Vec<String> = [
            "up",
            "--store",
            store,
            "--api",
            &format!("{}:7400", host.addr),
            "--data-dir",
            data.path().to_str().unwrap(),
            "--instance-id",
            instance,
            "--cpu",
            "128",
            "--lease-ttl",
            "3s",
            "--lost-instance-grace",
            GRACE,
            "--host-ip",
            &host.addr,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let home = config.path().to_path_buf();
        let p = Proc::spawn(
            &host,
            berth_bin(),
            &args,
            &[("XDG_CONFIG_HOME", &home)],
            data.path().join("berth.log"),
        );
        let cp = ControlPlane {
            host,
            config,
            _data: data,
            _proc: p,
        };
        let deadline = Instant::now() + CONVERGE;
        while cp.leadership().is_none() {
            assert!(
                Instant::now() < deadline,
                "the control plane's API did not answer; log:\n{}",
                cp._proc.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        cp
    }
    fn endpoint(&self) -> String {
        format!("http://{}:7400", self.host.addr)
    }
    fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(berth_bin())
            .args(args)
            .env("BERTH_ENDPOINT", self.endpoint())
            .env("XDG_CONFIG_HOME", self.config.path())
            .output()
            .unwrap()
    }
    fn json(&self, args: &[&str]) -> Option<Value> {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        let o = self.cli(&a);
        o.status
            .success()
            .then(|| serde_json::from_slice(&o.stdout).ok())?
    }
    fn leadership(&self) -> Option<Value> {
        let token = std::fs::read_to_string(self.config.path().join("berth").join("config.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())?["token"]
            .as_str()?
            .to_string();
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-m",
                "2",
                "-H",
                &format!("Authorization: Bearer {token}"),
            ])
            .arg(format!("{}/v1/controllers/leader", self.endpoint()))
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }
    fn is_leader(&self) -> bool {
        self.leadership().is_some_and(|l| l["isLeader"] == true)
    }
    fn tasks(&self, service: &str) -> Vec<Value> {
        self.json(&["tasks", "--service", service])
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }
}

fn running_on(cp: &ControlPlane, service: &str, instance: &str) -> Option<Value> {
    cp.tasks(service).into_iter().find(|t| {
        t["status"]["lastStatus"] == "RUNNING"
            && t["status"]["desiredStatus"] == "RUNNING"
            && t["status"]["containerInstance"] == instance
    })
}

fn singleton(name: &str) -> String {
    let td = task_definition(
        name,
        [container(
            "app",
            &[
                "sh",
                "-c",
                "trap 'exit 0' TERM; while true; do sleep 0.2; done",
            ],
        )
        .cpu(256)
        .memory(32)
        .stop_timeout(10)],
    );
    documents(&[td.to_string(), service(name, name, 1, &[])])
}

#[test]
fn namespaced_hosts_survive_partitions_of_a_control_plane_and_an_agent() {
    require_image();
    let mut net = Net::new();
    let etcd_host = net.host(2);
    let etcd_dir = tempfile::tempdir().unwrap();
    let client = format!("http://{}:2379", etcd_host.addr);
    let peer = format!("http://{}:2380", etcd_host.addr);
    let _etcd = Proc::spawn(
        &etcd_host,
        "etcd",
        &[
            "--name",
            "h2",
            "--data-dir",
            etcd_dir.path().join("d").to_str().unwrap(),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("h2={peer}"),
            "--log-level",
            "warn",
        ]
        .map(String::from),
        &[],
        etcd_dir.path().join("etcd.log"),
    );
    let store = format!("etcd://{}:2379", etcd_host.addr);
    let cp1 = ControlPlane::start(net.host(3), &store, &unique("cp1"));
    let cp2 = ControlPlane::start(net.host(4), &store, &unique("cp2"));
    let agents_dir = tempfile::tempdir().unwrap();
    let agent = |host: &Host, id: &str| {
        let home = agents_dir.path().join(id);
        std::fs::create_dir_all(&home).unwrap();
        Proc::spawn(
            host,
            berth_bin(),
            &[
                "agent",
                "--store",
                &store,
                "--instance-id",
                id,
                "--lease-ttl",
                "3s",
                "--lost-instance-grace",
                GRACE,
                "--host-ip",
                &host.addr,
            ]
            .map(String::from),
            &[("XDG_DATA_HOME", &home)],
            agents_dir.path().join(format!("{id}.log")),
        )
    };
    let (a_host, b_host) = (net.host(5), net.host(6));
    let (a_id, b_id) = (unique("host-a"), unique("host-b"));
    let _a = agent(&a_host, &a_id);

    // One leader between the two control planes.
    let (lead, standby) = wait_for("one leader", CONVERGE, || {
        match (cp1.is_leader(), cp2.is_leader()) {
            (true, false) => Some((&cp1, &cp2)),
            (false, true) => Some((&cp2, &cp1)),
            _ => None,
        }
    });
    let name = unique("single");
    let dir = manifest_dir(&[("s.yaml", singleton(&name))]);
    let o = standby.cli(&["apply", "-f", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = wait_for("the singleton running on host a", CONVERGE, || {
        running_on(standby, &name, &a_id)
    });
    let original = name_of(&t);

    // 1. The leader's link goes down: the standby leads within 15 s.
    lead.host.cut();
    let cut_at = Instant::now();
    wait_for("the standby leads", Duration::from_secs(15), || {
        standby.is_leader().then_some(())
    });
    let takeover = cut_at.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    lead.host.heal();
    wait_for("the cut-off control plane steps down", CONVERGE, || {
        let l = lead.leadership()?;
        (l["isLeader"] == false && l["leader"].is_string()).then_some(())
    });
    assert!(standby.is_leader());
    let tasks = standby.tasks(&name);
    assert_eq!(
        tasks.len(),
        1,
        "nothing created twice ({takeover:?} takeover): {tasks:?}"
    );

    // 2. Host a's link goes down past the grace: its agent stops the copy with SIGTERM, the
    //    task is replaced on host b, never two copies at once.
    let _b = agent(&b_host, &b_id);
    wait_for("host b connected", CONVERGE, || {
        let v = standby.json(&["instances", &b_id])?;
        (v["status"]["agentConnected"] == true).then_some(())
    });
    let original_container = wait_for("the original's container", CONVERGE, || {
        containers_with_label(&format!("berth.instance={a_id}"))
            .into_iter()
            .find(|c| c.2 == original && c.1 == "running")
            .map(|c| c.0)
    });
    let copies = CopyWatch::start(vec![a_id.clone(), b_id.clone()]);
    a_host.cut();
    let replacement = wait_for("the replacement running on host b", CONVERGE, || {
        running_on(standby, &name, &b_id)
    });
    let state = docker_inspect(&original_container)["State"].clone();
    assert_eq!(
        state["Running"], false,
        "host a's copy stopped first: {state}"
    );
    assert_eq!(state["ExitCode"], 0, "stopped with SIGTERM: {state}");
    assert_ne!(name_of(&replacement), original);
    assert!(copies.finish() <= 1, "two copies ran at once");
    a_host.heal();
    wait_for(
        "host a cleans up what is no longer its own",
        CONVERGE,
        || {
            containers_with_label(&format!("berth.instance={a_id}"))
                .is_empty()
                .then_some(())
        },
    );
    // Agent b first: a live agent would start the removed replacement again.
    drop(_b);
    remove_containers_with_label(&format!("berth.instance={b_id}"));
}
