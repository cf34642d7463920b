//! Deployments, health checks and auto-recovery on real Docker: rolling updates that hold the
//! healthy floor and the task ceiling, the circuit breaker with rollback, unhealthy tasks and
//! lost instances replaced, restart in place.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::berth::*;
use common::etcd::EtcdServer;
use common::manifests::*;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(90);

/// httpd replicas with a health check, a rolling-update window and the circuit breaker.
fn healthy_web(name: &str, replicas: u32, version: &str, min: u32, max: u32) -> String {
    let td = task_definition(
        name,
        [container("httpd", HTTPD)
            .cpu(32)
            .memory(16)
            .port(8080)
            .env(&[("VERSION", version)])
            .with(r#"healthCheck: {command: ["CMD-SHELL", "nc -w 1 127.0.0.1 8080 </dev/null"], interval: 1, timeout: 1, retries: 2}"#)
            .stop_timeout(2)],
    );
    let deployment = format!(
        "deploymentConfiguration:\n    minimumHealthyPercent: {min}\n    maximumPercent: {max}\n    deploymentCircuitBreaker: {{enable: true, rollback: true}}"
    );
    documents(&[
        td.to_string(),
        service(name, name, replicas.into(), &[&deployment]),
    ])
}

fn get_service(b: &Berth, name: &str) -> Value {
    b.get_json(&["services", name])
}

fn primary(svc: &Value) -> Value {
    svc["status"]["deployments"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["status"] == "PRIMARY").cloned())
        .unwrap_or(Value::Null)
}

fn wait_completed(b: &Berth, name: &str, td: &str) {
    wait_for(&format!("{name} COMPLETED on {td}"), CONVERGE, || {
        let p = primary(&get_service(b, name));
        (p["taskDefinition"] == td && p["rolloutState"] == "COMPLETED").then_some(())
    });
}

#[test]
fn rolling_update_holds_floor_and_ceiling() {
    let b = Berth::up(None);
    let name = unique("roll");
    let dir = manifest_dir(&[("web.yaml", healthy_web(&name, 4, "1", 50, 150))]);
    b.apply(dir.path());
    wait_completed(&b, &name, &format!("{name}:1"));

    // Sample the store every 100 ms for the whole rollout.
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Vec<(usize, usize)>>> = Default::default();
    let sampler = {
        let (stop, samples, port, name) = (stop.clone(), samples.clone(), b.port, name.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(tasks) = api_json(port, &format!("/v1/tasks?service={name}")) {
                    let tasks = tasks.as_array().cloned().unwrap_or_default();
                    let live = tasks
                        .iter()
                        .filter(|t| t["status"]["lastStatus"] != "STOPPED")
                        .count();
                    let healthy = tasks
                        .iter()
                        .filter(|t| {
                            t["status"]["lastStatus"] == "RUNNING"
                                && t["status"]["healthStatus"] == "HEALTHY"
                        })
                        .count();
                    samples.lock().unwrap().push((healthy, live));
                }
                // The sampling period, not a wait.
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    wait_for("samples from before the rollout", CONVERGE, || {
        (samples.lock().unwrap().len() >= 3).then_some(())
    });
    write(dir.path(), "web.yaml", &healthy_web(&name, 4, "2", 50, 150));
    let out = b.apply(dir.path());
    assert!(out.contains(&format!("{name}:2 created")), "{out}");
    // The CLI follows the rollout to completion.
    let rs = b.cli(&["rollout", "status", &name, "--timeout", "90s"]);
    assert!(
        rs.status.success(),
        "rollout status: {}\n{}",
        String::from_utf8_lossy(&rs.stdout),
        String::from_utf8_lossy(&rs.stderr)
    );
    assert!(String::from_utf8_lossy(&rs.stdout).contains("completed"));
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();

    let samples = samples.lock().unwrap().clone();
    assert!(samples.len() > 10, "too few samples: {}", samples.len());
    let min_healthy = samples.iter().map(|s| s.0).min().unwrap();
    let max_live = samples.iter().map(|s| s.1).max().unwrap();
    eprintln!(
        "{} samples: min healthy {min_healthy}, max tasks {max_live}",
        samples.len()
    );
    assert!(min_healthy >= 2, "healthy dropped below 2: {samples:?}");
    assert!(max_live <= 6, "more than 6 tasks: {samples:?}");
    let svc = get_service(&b, &name);
    assert!(
        service_events(&svc)[0].ends_with("has reached a steady state."),
        "{:?}",
        service_events(&svc)
    );
    let running = b.running_tasks(&name);
    assert_eq!(running.len(), 4);
    assert!(running
        .iter()
        .all(|t| t["spec"]["taskDefinition"] == format!("{name}:2").as_str()));
}

#[test]
fn circuit_breaker_rolls_back() {
    let b = Berth::up(None);
    let name = unique("cb");
    let dir = manifest_dir(&[("web.yaml", healthy_web(&name, 2, "1", 100, 200))]);
    b.apply(dir.path());
    wait_completed(&b, &name, &format!("{name}:1"));

    // Revision 2 exits 1 at once.
    let broken = healthy_web(&name, 2, "2", 100, 200).replace(
        r#"command: ["httpd", "-f", "-p", "8080", "-h", "/www"]"#,
        r#"command: ["sh", "-c", "exit 1"]"#,
    );
    write(dir.path(), "web.yaml", &broken);
    b.apply(dir.path());
    let rs = b.cli(&["rollout", "status", &name, "--timeout", "90s"]);
    assert_eq!(
        rs.status.code(),
        Some(1),
        "rollout status must report FAILED: {}",
        String::from_utf8_lossy(&rs.stderr)
    );

    // Rolled back to revision 1 at full count.
    wait_completed(&b, &name, &format!("{name}:1"));
    let running = b.wait_running(&name, 2, CONVERGE);
    assert!(running
        .iter()
        .all(|t| t["spec"]["taskDefinition"] == format!("{name}:1").as_str()));
    let svc = get_service(&b, &name);
    let failed = svc["status"]["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["taskDefinition"] == format!("{name}:2").as_str())
        .cloned()
        .expect("the failed deployment stays visible");
    assert_eq!(failed["rolloutState"], "FAILED");
    assert!(failed["failedTasks"].as_u64().unwrap() >= 3);
    let ev = service_events(&svc).join("\n");
    assert!(ev.contains("deployment failed"), "{ev}");
    assert!(ev.contains("rolling back to deployment"), "{ev}");
    // The failed revision is not retried while it is still the one named: time passes on
    // purpose (nothing to wait for), then the primary is still revision 1.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        primary(&get_service(&b, &name))["taskDefinition"],
        format!("{name}:1").as_str()
    );
}

#[test]
fn unhealthy_task_is_replaced() {
    let b = Berth::up(None);
    let name = unique("sick");
    let text = healthy_web(&name, 1, "1", 0, 200)
        .replace(
            r#"command: ["httpd", "-f", "-p", "8080", "-h", "/www"]"#,
            r#"command: ["sh", "-c", "touch /tmp/ok; exec httpd -f -p 8080 -h /www"]"#,
        )
        .replace(r#"nc -w 1 127.0.0.1 8080 </dev/null"#, "test -f /tmp/ok");
    let dir = manifest_dir(&[("web.yaml", text)]);
    b.apply(dir.path());
    wait_completed(&b, &name, &format!("{name}:1"));
    let victim = name_of(&b.running_tasks(&name)[0]);
    let container = b.container_of(&victim, None);
    let out = docker_exec_output(&container, &["rm", "/tmp/ok"]);
    assert!(out.status.success());
    wait_for("a healthy replacement", CONVERGE, || {
        let r = b.running_tasks(&name);
        (r.len() == 1
            && r[0]["metadata"]["name"] != victim.as_str()
            && r[0]["status"]["healthStatus"] == "HEALTHY")
            .then_some(())
    });
    let t = b.wait_task(&victim, "STOPPED", CONVERGE);
    assert!(
        t["status"]["stoppedReason"]
            .as_str()
            .unwrap()
            .starts_with("Task failed container health checks"),
        "{t}"
    );
}

#[test]
fn restart_policy_restarts_in_place() {
    let b = Berth::up(None);
    let fam = unique("rp");
    let td = task_definition(
        &fam,
        [container("flaky", &["sh", "-c", "sleep 2; exit 3"])
            .cpu(10)
            .memory(16)
            .with("restartPolicy: {enabled: true, restartAttemptPeriod: 1}")],
    );
    let dir = manifest_dir(&[("rp.yaml", td.to_string())]);
    b.apply(dir.path());
    let id = b.cli_ok(&["run-task", &fam]).trim().to_string();
    let t = b.wait_json("two restarts in place", CONVERGE, &["tasks", &id], |t| {
        t["status"]["containers"][0]["restartCount"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    });
    assert_eq!(t["status"]["lastStatus"], "RUNNING", "{t}");
    b.cli_ok(&["stop-task", &id]);
}

/// A second agent process sharing the etcd store with `berth up`.
struct Agent {
    child: Child,
    instance: String,
}

impl Agent {
    fn start(store: &str, instance: &str) -> Agent {
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
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Agent {
            child,
            instance: instance.to_string(),
        }
    }
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        remove_containers_with_label(&format!("berth.instance={}", self.instance));
    }
}

#[test]
fn lost_instance_tasks_are_replaced_elsewhere() {
    let etcd = EtcdServer::start();
    // A short lost-instance grace (the default is 5 minutes).
    let b = Berth::up_with(
        Some(etcd.url()),
        vec!["--lost-instance-grace".into(), "2s".into()],
    );
    let other = unique("agent-b");
    let mut agent = Agent::start(&etcd.url(), &other);
    wait_for("second instance connected", Duration::from_secs(20), || {
        let v = b.try_get_json(&["instances", &other])?;
        (v["status"]["agentConnected"] == true).then_some(())
    });
    let name = unique("spread");
    let dir = manifest_dir(&[("web.yaml", web_manifest(&name, 4, "1"))]);
    b.apply(dir.path());
    let tasks = wait_for("4 running over both instances", CONVERGE, || {
        let r = b.running_tasks(&name);
        (r.len() == 4).then_some(r)
    });
    let on_b: Vec<String> = tasks
        .iter()
        .filter(|t| t["status"]["containerInstance"] == other.as_str())
        .map(name_of)
        .collect();
    assert!(
        !on_b.is_empty(),
        "spread placed nothing on the second instance"
    );

    agent.kill9();
    let running = wait_for(
        "tasks of the lost instance replaced on the first",
        CONVERGE,
        || {
            let r = b.running_tasks(&name);
            (r.len() == 4
                && r.iter()
                    .all(|t| t["status"]["containerInstance"] == b.instance.as_str()))
            .then_some(r)
        },
    );
    assert_eq!(running.len(), 4);
    for id in &on_b {
        let t = b.get_json(&["tasks", id]);
        assert_eq!(t["status"]["lastStatus"], "STOPPED");
        assert!(
            t["status"]["stoppedReason"]
                .as_str()
                .unwrap()
                .contains("disconnected"),
            "{t}"
        );
    }
    // The lost agent's containers still run; when it comes back it removes them.
    assert!(!containers_with_label(&format!("berth.instance={other}")).is_empty());
    let _agent = Agent::start(&etcd.url(), &other);
    wait_for(
        "the returning agent stops what is no longer its own",
        CONVERGE,
        || {
            containers_with_label(&format!("berth.instance={other}"))
                .is_empty()
                .then_some(())
        },
    );
    assert_eq!(b.running_tasks(&name).len(), 4);
}

/// Issue 16 item 13: after a crashing revision trips the circuit breaker and rolls back, a
/// container killed by hand is replaced at once: the failed revision's crash-loop back-off
/// does not carry over to the revision rolled back to. (No health check and
/// minimumHealthyPercent 0: the rollback starts fresh tasks, and one killed within its startup
/// window counts as a failed start — right after the failed revision's failed starts.)
#[test]
fn a_rollback_does_not_inherit_the_crash_loop_back_off() {
    let b = Berth::up(None);
    let name = unique("cbk");
    let web = |version: &str, command: &[&str]| {
        let c = container("httpd", command)
            .cpu(32)
            .memory(16)
            .port(8080)
            .env(&[("VERSION", version)])
            .stop_timeout(2);
        let deployment = "deploymentConfiguration:\n    minimumHealthyPercent: 0\n    maximumPercent: 100\n    deploymentCircuitBreaker: {enable: true, rollback: true}";
        documents(&[
            task_definition(&name, [c]).to_string(),
            service(&name, &name, 2, &[deployment]),
        ])
    };
    let dir = manifest_dir(&[("web.yaml", web("1", HTTPD))]);
    b.apply(dir.path());
    wait_completed(&b, &name, &format!("{name}:1"));
    write(dir.path(), "web.yaml", &web("2", &["sh", "-c", "exit 1"]));
    b.apply(dir.path());
    wait_for("the breaker tripped and rolled back", CONVERGE, || {
        let svc = get_service(&b, &name);
        let failed = svc["status"]["deployments"].as_array()?.iter().any(|d| {
            d["taskDefinition"] == format!("{name}:2").as_str() && d["rolloutState"] == "FAILED"
        });
        let p = primary(&svc);
        (failed && p["taskDefinition"] == format!("{name}:1").as_str()).then_some(())
    });
    let tasks = b.wait_running(&name, 2, CONVERGE);
    let event_ids = |svc: &Value| -> Vec<String> {
        svc["status"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["id"].as_str().map(str::to_string))
            .collect()
    };
    let before = event_ids(&get_service(&b, &name));

    let victim = name_of(&tasks[0]);
    let container = b.container_of(&victim, None);
    let out = Command::new("docker")
        .args(["kill", &container])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let t0 = std::time::Instant::now();
    b.wait_running_and(&name, 2, CONVERGE, || {
        !task_ids(&b.running_tasks(&name)).contains(&victim)
    });
    let took = t0.elapsed();
    let svc = get_service(&b, &name);
    let since: Vec<&str> = svc["status"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| !before.iter().any(|id| e["id"] == id.as_str()))
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        !since.iter().any(|m| m.contains("backing off")),
        "the replacement of {victim} waited out the failed revision's back-off ({took:?}): {since:#?}"
    );
}
