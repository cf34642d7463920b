//! StartTask, the custom-scheduler path of ECS (issue 12), with real boto3 against a real
//! `berth up` and two more real `berth agent`s joined to it, all running real containers:
//! a ~30-line boto3 scheduler (tests/ecs/scheduler.py: ListContainerInstances,
//! DescribeContainerInstances' remainingResources, StartTask) places a task where it chooses,
//! and two such schedulers racing over the same three small instances never over-commit one.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::berth::*;
use common::manifests::IMAGE;
use serde_json::Value;

const CPU: u64 = 512;
const MEMORY: u64 = 256;
const TASK_CPU: u64 = 128;
const TASK_MEMORY: u64 = 64;

/// A `berth agent` joined to the `berth up` (its own instance id, same Docker).
struct Agent {
    child: Child,
    instance: String,
    _data: tempfile::TempDir,
}

impl Agent {
    fn start(b: &Berth, token: &str, instance: &str) -> Agent {
        let data = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(data.path().join("agent.log")).unwrap();
        let child = Command::new(berth_bin())
            .args(["agent", "--server", &b.endpoint(), "--join-token", token])
            .args(["--instance-id", instance, "--lease-ttl", "3s"])
            .args(["--cpu", &CPU.to_string(), "--memory", &MEMORY.to_string()])
            .arg("--data-dir")
            .arg(data.path())
            .env_remove("BERTH_JOIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start berth agent");
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

fn scheduler(b: &Berth, ak: &str, sk: &str, family: &str, env: &[(&str, String)]) -> Command {
    let mut c = Command::new("python3");
    c.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/ecs/scheduler.py"
    ))
    .env("BERTH_ENDPOINT", b.endpoint())
    .env("AK", ak)
    .env("SK", sk)
    .env("FAMILY", family)
    .env("CPU", TASK_CPU.to_string())
    .env("MEMORY", TASK_MEMORY.to_string());
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn result(o: &Output) -> Value {
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "scheduler failed:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn id_of(arn: &str) -> String {
    arn.rsplit('/').next().unwrap().to_string()
}

#[test]
fn custom_schedulers_place_with_start_task_and_never_over_commit() {
    let b = Berth::up_with(
        None,
        vec![
            "--cpu".into(),
            CPU.to_string(),
            "--memory".into(),
            MEMORY.to_string(),
        ],
    );
    let created: Value = serde_json::from_str(&b.cli_ok(&[
        "auth", "identity", "create", "sched", "--role", "admin", "-o", "json",
    ]))
    .unwrap();
    let ak = created["accessKeyId"].as_str().unwrap().to_string();
    let sk = created["secretAccessKey"].as_str().unwrap().to_string();
    let token = b.cli_ok(&["token", "create", "--agent"]).trim().to_string();
    let agents: Vec<Agent> = (0..2)
        .map(|i| Agent::start(&b, &token, &unique(&format!("sched{i}"))))
        .collect();
    let mut instances: Vec<String> = agents.iter().map(|a| a.instance.clone()).collect();
    instances.push(b.instance.clone());
    wait_for("three connected instances", Duration::from_secs(60), || {
        let all = b.try_get_json(&["containerinstances"])?;
        let n = all
            .as_array()?
            .iter()
            .filter(|i| instances.contains(&name_of(i)) && i["status"]["agentConnected"] == true)
            .count();
        (n == 3).then_some(())
    });

    let family = unique("sched");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("td.yaml"),
        format!(
            "apiVersion: berth.dev/v1\nkind: TaskDefinition\nmetadata: {{name: {family}}}\n\
             spec:\n  cpu: {TASK_CPU}\n  memory: {TASK_MEMORY}\n  containerDefinitions:\n\
             \x20   - {{name: main, image: {IMAGE}, command: [sleep, '3600'], essential: true}}\n"
        ),
    )
    .unwrap();
    b.apply(dir.path());

    // 1. The scheduler places where it chooses (pinned to the second agent's instance).
    let pin = agents[1].instance.clone();
    let o = scheduler(
        &b,
        &ak,
        &sk,
        &family,
        &[("COUNT", "1".into()), ("PIN", pin.clone())],
    )
    .output()
    .unwrap();
    let r = result(&o);
    let placed = r["placed"].as_array().unwrap();
    assert_eq!(placed.len(), 1, "{r}");
    assert_eq!(id_of(placed[0][1].as_str().unwrap()), pin, "{r}");
    let first = id_of(placed[0][0].as_str().unwrap());
    let t = b.wait_task(&first, "RUNNING", Duration::from_secs(120));
    assert_eq!(t["status"]["containerInstance"], pin.as_str(), "{t}");
    assert_eq!(t["spec"]["startedBy"], "my-scheduler", "{t}");
    assert_eq!(t["metadata"]["tags"]["scheduler"], "s", "{t}");

    // 2. Two schedulers race over the three instances; the room is 3 × (512/128) = 12 tasks,
    // one already taken. Each reads the instances once (both see 11 free), waits for the
    // other, then places on that stale view without re-reading: 22 wanted, 11 fit, and the
    // server's fence must refuse the rest.
    let only = instances.join(",");
    let sync = tempfile::tempdir().unwrap();
    let go = sync.path().join("go");
    let spawn = |name: &str, stale: bool| {
        let mut env = vec![
            ("COUNT", "12".to_string()),
            ("ONLY", only.clone()),
            ("NAME", name.to_string()),
        ];
        if stale {
            env.push(("STALE", "1".into()));
            env.push(("READY", sync.path().join(name).display().to_string()));
            env.push(("GO", go.display().to_string()));
        }
        scheduler(&b, &ak, &sk, &family, &env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, c) = (spawn("a", true), spawn("b", true));
    wait_for(
        "both schedulers read their view",
        Duration::from_secs(60),
        || (sync.path().join("a").exists() && sync.path().join("b").exists()).then_some(()),
    );
    std::fs::write(&go, "").unwrap();
    let (ra, rc) = (
        result(&a.wait_with_output().unwrap()),
        result(&c.wait_with_output().unwrap()),
    );
    let mut placed: Vec<Value> = ra["placed"].as_array().unwrap().clone();
    placed.extend(rc["placed"].as_array().unwrap().iter().cloned());
    let lost: Vec<Value> = ra["failures"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rc["failures"].as_array().unwrap())
        .cloned()
        .collect();
    eprintln!(
        "stale race: {} placed, {} StartTask refusals {:?}",
        placed.len(),
        lost.len(),
        lost
    );
    let capacity = 3 * (CPU / TASK_CPU) as usize;
    assert!(placed.len() < capacity, "{} placed", placed.len());
    assert!(
        !lost.is_empty(),
        "both saw room for 11: someone must be refused"
    );
    assert!(
        lost.iter()
            .all(|f| f.as_str().is_some_and(|s| s.starts_with("RESOURCE:"))),
        "{lost:?}"
    );
    // A scheduler that re-reads after each refusal fills what is left, exactly.
    let r = result(&spawn("c", false).wait_with_output().unwrap());
    let filled = placed.len() + r["placed"].as_array().unwrap().len();
    assert_eq!(filled, capacity - 1, "the room fills: {ra} {rc} {r}");

    // What the store holds: per instance, the reserved cpu and memory of its tasks that hold
    // resources never exceed what it registered.
    let tasks = b.get_json(&["tasks"]);
    let mut used: HashMap<String, (u64, u64, usize)> = HashMap::new();
    for t in tasks.as_array().unwrap() {
        if t["status"]["lastStatus"] == "STOPPED" {
            continue;
        }
        if let Some(i) = t["status"]["containerInstance"].as_str() {
            let e = used.entry(i.to_string()).or_default();
            e.0 += t["spec"]["cpu"].as_u64().unwrap_or(0);
            e.1 += t["spec"]["memory"].as_u64().unwrap_or(0);
            e.2 += 1;
        }
    }
    for i in &instances {
        let (c, m, n) = used.get(i).copied().unwrap_or_default();
        assert!(c <= CPU && m <= MEMORY, "{i}: {n} tasks, {c} cpu, {m} MiB");
    }
    assert_eq!(
        used.values().map(|u| u.2).sum::<usize>(),
        capacity,
        "{used:?}"
    );

    // 3. StartTask onto a full instance fails as ECS does, in failures[].
    let o = Command::new("python3")
        .args([
            "-c",
            "import os,json,boto3;E=os.environ;e=boto3.client('ecs',endpoint_url=E['U'],region_name='us-east-1',aws_access_key_id=E['AK'],aws_secret_access_key=E['SK']);print(json.dumps(e.start_task(cluster='default',taskDefinition=E['F'],containerInstances=[E['I'],'nope'])))",
        ])
        .env("U", b.endpoint())
        .env("AK", &ak)
        .env("SK", &sk)
        .env("F", &family)
        .env("I", &pin)
        .output()
        .unwrap();
    let r = result(&o);
    assert_eq!(r["tasks"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(r["failures"][0]["reason"], "RESOURCE:CPU", "{r}");
    assert_eq!(r["failures"][1]["reason"], "MISSING", "{r}");
    drop(agents);
}
