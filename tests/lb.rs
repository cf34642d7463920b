//! Load balancing and networking modes on real Docker: path routing between two services,
//! zero failed requests while a service rolls and while a task is stopped by hand, health-check
//! ejection and return, awsvpc isolation, host and none modes.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::berth::*;
use common::manifests::*;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(90);

/// A service whose httpd serves `/www/<path>/index.html` = `body`, `/id.html` = its hostname,
/// and `/health.html`.
fn site(name: &str, replicas: u32, path: &str, body: &str, tg: &str, version: &str) -> String {
    site_with(name, replicas, path, body, tg, version, false)
}

/// [`site`], optionally with a container health check (the task is HEALTHY only once it
/// passes), which changes when the deployment counts a new task.
fn site_with(
    name: &str,
    replicas: u32,
    path: &str,
    body: &str,
    tg: &str,
    version: &str,
    container_check: bool,
) -> String {
    let script = format!(
        "mkdir -p /www/{path} && echo {body} > /www/{path}/index.html && hostname > /www/id.html && echo ok > /www/health.html && exec httpd -f -p 8080 -h /www"
    );
    let td = task_definition(
        name,
        [container("web", &["sh", "-c", &script])
            .cpu(16)
            .memory(16)
            .port(8080)
            .env(&[("VERSION", version)])
            .stop_timeout(1)
            .with(if container_check {
                r#"healthCheck: {command: ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/health.html"], interval: 1, timeout: 1, retries: 2}"#
            } else {
                "essential: true"
            })],
    );
    let lb =
        format!("loadBalancers: [{{targetGroup: {tg}, containerName: web, containerPort: 8080}}]");
    documents(&[
        td.to_string(),
        service(
            name,
            name,
            replicas.into(),
            &[
                "deploymentConfiguration: {minimumHealthyPercent: 100, maximumPercent: 200}",
                &lb,
            ],
        ),
    ])
}

fn target_group(name: &str) -> String {
    target_group_with(name, 2, 5)
}

fn target_group_with(name: &str, healthy_threshold: u32, deregistration_delay: u32) -> String {
    format!(
        r#"apiVersion: berth.dev/v1
kind: TargetGroup
metadata: {{name: {name}}}
spec:
  healthCheck: {{path: /health.html, intervalSeconds: 1, timeoutSeconds: 1, healthyThresholdCount: {healthy_threshold}, unhealthyThresholdCount: 2}}
  deregistrationDelaySeconds: {deregistration_delay}
"#
    )
}

fn load_balancer(name: &str, port: u16, rules: &[(&str, &str, u32)]) -> String {
    let rules: Vec<String> = rules
        .iter()
        .map(|(p, tg, prio)| {
            format!("        - {{priority: {prio}, pathPattern: \"{p}\", targetGroup: {tg}}}")
        })
        .collect();
    format!(
        "apiVersion: berth.dev/v1\nkind: LoadBalancer\nmetadata: {{name: {name}}}\nspec:\n  listeners:\n    - port: {port}\n      rules:\n{}\n      defaultAction: {{fixedResponse: {{statusCode: 404, messageBody: nothing here}}}}\n",
        rules.join("\n")
    )
}

/// GET through the load balancer: (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    http_status_body(port, path)
}

fn wait_serving(port: u16, path: &str, want: &str) {
    wait_for(&format!("{path} to serve {want}"), CONVERGE, || {
        get(port, path)
            .filter(|(s, b)| *s == 200 && b.contains(want))
            .map(|_| ())
    });
}

#[test]
fn path_rules_route_to_their_service() {
    let b = Berth::up(None);
    let (a, bb) = (unique("svca"), unique("svcb"));
    let (tga, tgb) = (format!("{a}-tg"), format!("{bb}-tg"));
    let port = free_port();
    let dir = manifest_dir(&[
        (
            "tg.yaml",
            format!("{}---\n{}", target_group(&tga), target_group(&tgb)),
        ),
        ("a.yaml", site(&a, 2, "a", "service-a", &tga, "1")),
        ("b.yaml", site(&bb, 2, "b", "service-b", &tgb, "1")),
        (
            "lb.yaml",
            load_balancer(
                &unique("front"),
                port,
                &[("/a/*", &tga, 10), ("/b/*", &tgb, 20)],
            ),
        ),
    ]);
    b.apply(dir.path());
    wait_serving(port, "/a/", "service-a");
    wait_serving(port, "/b/", "service-b");
    for _ in 0..30 {
        let (s, body) = get(port, "/a/").unwrap();
        assert_eq!(s, 200);
        assert!(body.contains("service-a"), "/a/ reached {body}");
        let (s, body) = get(port, "/b/").unwrap();
        assert_eq!(s, 200);
        assert!(body.contains("service-b"), "/b/ reached {body}");
    }
    let (s, body) = get(port, "/elsewhere").unwrap();
    assert_eq!(s, 404);
    assert!(body.contains("nothing here"));
    let svc = b.get_json(&["services", &a]);
    let events = service_events(&svc);
    assert!(
        events.iter().any(
            |e| e.contains(&format!("registered 2 targets in target-group {tga}"))
                || e.contains("registered 1 targets")
        ),
        "{events:?}"
    );
}

/// Successes, failures, failure details, and the client thread.
type Hammer = (
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    Arc<Mutex<Vec<String>>>,
    std::thread::JoinHandle<()>,
);

/// Send requests continuously until stopped; count failures.
fn hammer(port: u16, stop: Arc<AtomicBool>) -> Hammer {
    let ok = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    let why = Arc::new(Mutex::new(Vec::new()));
    let (o, b, w) = (ok.clone(), bad.clone(), why.clone());
    let h = std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match get(port, "/r/") {
                Some((200, _)) => {
                    o.fetch_add(1, Ordering::SeqCst);
                }
                other => {
                    b.fetch_add(1, Ordering::SeqCst);
                    w.lock().unwrap().push(format!("{other:?}"));
                }
            }
            // The pace of the client, not a wait.
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    (ok, bad, why, h)
}

#[test]
fn zero_failed_requests_while_rolling_and_stopping() {
    let b = Berth::up(None);
    let name = unique("roll");
    let tg = format!("{name}-tg");
    let port = free_port();
    let dir = manifest_dir(&[
        ("tg.yaml", target_group(&tg)),
        ("svc.yaml", site(&name, 3, "r", "v1", &tg, "1")),
        (
            "lb.yaml",
            load_balancer(&unique("front"), port, &[("/r/*", &tg, 1)]),
        ),
    ]);
    b.apply(dir.path());
    wait_for("3 healthy targets, rollout complete", CONVERGE, || {
        let s = b.get_json(&["services", &name]);
        (s["status"]["deployments"][0]["rolloutState"] == "COMPLETED").then_some(())
    });
    wait_serving(port, "/r/", "v1");

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad, why, h) = hammer(port, stop.clone());
    // Roll to a new revision...
    write(dir.path(), "svc.yaml", &site(&name, 3, "r", "v2", &tg, "2"));
    b.apply(dir.path());
    let rs = b.cli(&["rollout", "status", &name, "--timeout", "120s"]);
    assert!(
        rs.status.success(),
        "{}",
        String::from_utf8_lossy(&rs.stderr)
    );
    wait_serving(port, "/r/", "v2");
    // ...and stop a task by hand.
    let victim = name_of(&b.running_tasks(&name)[0]);
    b.cli_ok(&["stop-task", &victim]);
    wait_for("the stopped task gone and replaced", CONVERGE, || {
        let t = b.get_json(&["tasks", &victim]);
        (t["status"]["lastStatus"] == "STOPPED" && b.running_tasks(&name).len() == 3).then_some(())
    });
    // Keep the client going a little longer on purpose: the stopped target's deregistration
    // must not fail a request either (nothing to wait for).
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    h.join().unwrap();
    let (ok, bad) = (ok.load(Ordering::SeqCst), bad.load(Ordering::SeqCst));
    eprintln!("{ok} requests succeeded, {bad} failed");
    assert!(ok > 100, "too few requests: {ok}");
    assert_eq!(bad, 0, "failed requests: {:?}", why.lock().unwrap());
}

/// Issue 16 item 12: with a container health check, a healthy threshold of 1 and a 3 s
/// deregistration delay, requests failed in one window of the rollout. Every combination of
/// those settings must roll with zero failed requests.
#[test]
fn zero_failed_requests_while_rolling_for_every_combination_of_settings() {
    let b = Berth::up(None);
    for (threshold, delay, container_check) in
        [(1, 3, true), (1, 3, false), (2, 3, true), (1, 0, true)]
    {
        let name = unique("combo");
        let tg = format!("{name}-tg");
        let port = free_port();
        let dir = manifest_dir(&[
            ("tg.yaml", target_group_with(&tg, threshold, delay)),
            (
                "svc.yaml",
                site_with(&name, 3, "r", "v1", &tg, "1", container_check),
            ),
            (
                "lb.yaml",
                load_balancer(&unique("front"), port, &[("/r/*", &tg, 1)]),
            ),
        ]);
        b.apply(dir.path());
        wait_for("rollout complete", CONVERGE, || {
            let s = b.get_json(&["services", &name]);
            (s["status"]["deployments"][0]["rolloutState"] == "COMPLETED").then_some(())
        });
        wait_serving(port, "/r/", "v1");
        let stop = Arc::new(AtomicBool::new(false));
        // Several clients at once, as a real front end sees them.
        let hammers: Vec<Hammer> = (0..6).map(|_| hammer(port, stop.clone())).collect();
        write(
            dir.path(),
            "svc.yaml",
            &site_with(&name, 3, "r", "v2", &tg, "2", container_check),
        );
        b.apply(dir.path());
        let rs = b.cli(&["rollout", "status", &name, "--timeout", "120s"]);
        assert!(
            rs.status.success(),
            "{}",
            String::from_utf8_lossy(&rs.stderr)
        );
        wait_serving(port, "/r/", "v2");
        // The old tasks' deregistration and stop must not fail a request either.
        std::thread::sleep(Duration::from_secs(delay as u64 + 3));
        stop.store(true, Ordering::SeqCst);
        let (mut ok, mut bad, mut why) = (0, 0, Vec::new());
        for (o, b_, w, h) in hammers {
            h.join().unwrap();
            ok += o.load(Ordering::SeqCst);
            bad += b_.load(Ordering::SeqCst);
            why.extend(w.lock().unwrap().drain(..));
        }
        eprintln!("threshold {threshold}, delay {delay}s, container check {container_check}: {ok} ok, {bad} failed");
        assert!(ok > 100, "too few requests: {ok}");
        assert_eq!(
            bad,
            0,
            "threshold {threshold}, delay {delay}s, container check {container_check}: failed requests: {why:?}"
        );
        b.cli_ok(&["delete", "services", &name]);
    }
}

#[test]
fn failing_health_check_takes_a_target_out_and_back() {
    let b = Berth::up(None);
    let name = unique("hc");
    let tg = format!("{name}-tg");
    let port = free_port();
    let dir = manifest_dir(&[
        ("tg.yaml", target_group(&tg)),
        ("svc.yaml", site(&name, 2, "r", "x", &tg, "1")),
        (
            "lb.yaml",
            load_balancer(&unique("front"), port, &[("/*", &tg, 1)]),
        ),
    ]);
    b.apply(dir.path());
    let ids = || -> std::collections::BTreeSet<String> {
        (0..20)
            .filter_map(|_| get(port, "/id.html"))
            .filter(|(s, _)| *s == 200)
            .map(|(_, b)| b.trim().to_string())
            .collect()
    };
    let both = wait_for("both targets serving", CONVERGE, || {
        Some(ids()).filter(|s| s.len() == 2)
    });
    let task = name_of(&b.running_tasks(&name)[0]);
    let container = b.container_of(&task, None);
    let host = stdout(&docker_exec_output(&container, &["hostname"]))
        .trim()
        .to_string();
    assert!(both.contains(&host));
    docker_exec_output(&container, &["rm", "/www/health.html"]);
    // Two failed checks 1 s apart: out within a few seconds.
    wait_for(
        "the sick target out of rotation",
        Duration::from_secs(10),
        || {
            let s = ids();
            (!s.contains(&host) && !s.is_empty()).then_some(())
        },
    );
    for _ in 0..3 {
        assert!(
            !ids().contains(&host),
            "an unhealthy target still gets traffic"
        );
    }
    docker_sh(&container, "echo ok > /www/health.html");
    wait_for(
        "the target back in rotation",
        Duration::from_secs(10),
        || ids().contains(&host).then_some(()),
    );
}

fn one_task(b: &Berth, td: TaskDefinition, fam: &str) -> Value {
    let dir = manifest_dir(&[(&format!("{fam}.yaml"), td.to_string())]);
    b.apply(dir.path());
    let id = b.cli_ok(&["run-task", fam]).trim().to_string();
    b.wait_task(&id, "RUNNING", CONVERGE)
}

fn exec(b: &Berth, task: &Value, container: &str, cmd: &str) -> std::process::Output {
    docker_sh(&b.container_of(&name_of(task), Some(container)), cmd)
}

#[test]
fn awsvpc_host_and_none_modes() {
    let b = Berth::up(None);
    // Host networking is a privileged setting (issue 16 item 3).
    b.apply(
        manifest_dir(&[(
            "cluster.yaml",
            "apiVersion: berth.dev/v1\nkind: Cluster\nmetadata: {name: default}\nspec: {settings: {allowPrivileged: true}}\n".to_string(),
        )])
        .path(),
    );
    let fam = unique("vpc");
    let t1 = one_task(
        &b,
        task_definition(
            &fam,
            [
                container("web", HTTPD).cpu(10).memory(16).port(8080),
                container("side", &["sleep", "3600"])
                    .cpu(10)
                    .memory(16)
                    .with("essential: false"),
            ],
        )
        .spec("networkMode: awsvpc"),
        &fam,
    );
    let ip = t1["status"]["taskIp"]
        .as_str()
        .expect("awsvpc task has its own IP")
        .to_string();
    // Containers of one task share localhost.
    let o = exec(&b, &t1, "side", "nc -w 2 127.0.0.1 8080 </dev/null");
    assert!(
        o.status.success(),
        "side cannot reach web over 127.0.0.1: {o:?}"
    );
    // The host (and so a load balancer) reaches the task's own IP.
    assert!(http_get_ip(&ip, 8080).is_some_and(|r| r.contains("hello from berth")));
    // Another task cannot reach the first task's port.
    let probe = format!("{fam}-2");
    let t2 = one_task(
        &b,
        task_definition(
            &probe,
            [container("probe", &["sleep", "3600"]).cpu(10).memory(16)],
        )
        .spec("networkMode: awsvpc"),
        &probe,
    );
    assert_ne!(t2["status"]["taskIp"], t1["status"]["taskIp"]);
    let o = exec(&b, &t2, "probe", &format!("nc -w 2 {ip} 8080 </dev/null"));
    assert!(
        !o.status.success(),
        "a second task reached the first task's unpublished port"
    );

    // host: the container port is the host port.
    let hp = free_port();
    let host = format!("{fam}-host");
    let hp_text = hp.to_string();
    let th = one_task(
        &b,
        task_definition(
            &host,
            [
                container("web", &["httpd", "-f", "-p", &hp_text, "-h", "/www"])
                    .cpu(10)
                    .memory(16)
                    .port(hp),
            ],
        )
        .spec("networkMode: host"),
        &host,
    );
    let body = wait_for("host-mode httpd", Duration::from_secs(10), || http_get(hp));
    assert!(body.contains("hello from berth"));
    let _ = th;
    // none: no network but loopback.
    let none = format!("{fam}-none");
    let tn = one_task(
        &b,
        task_definition(
            &none,
            [container("box", &["sleep", "3600"]).cpu(10).memory(16)],
        )
        .spec("networkMode: none"),
        &none,
    );
    let o = exec(&b, &tn, "box", "ip -o link | grep -v ' lo:' | wc -l");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "0",
        "none mode has only loopback"
    );
}

#[test]
fn bad_load_balancer_input_is_refused_and_slow_clients_do_not_starve() {
    let b = Berth::up(None);
    let name = unique("bad");
    let tg = format!("{name}-tg");
    let port = free_port();
    let good = manifest_dir(&[
        ("tg.yaml", target_group(&tg)),
        ("svc.yaml", site(&name, 1, "r", "ok", &tg, "1")),
        (
            "lb.yaml",
            load_balancer(&unique("front"), port, &[("/*", &tg, 1)]),
        ),
    ]);
    b.apply(good.path());
    wait_serving(port, "/r/", "ok");
    let before = b.get_json(&["loadbalancers"]);

    let held = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let held_port = held.local_addr().unwrap().port();
    let cases = [
        (
            "prio.yaml",
            load_balancer(
                "dup-prio",
                free_port(),
                &[("/a/*", &tg, 5), ("/b/*", &tg, 5)],
            ),
            "priority",
        ),
        (
            "taken.yaml",
            load_balancer("taken", held_port, &[("/*", &tg, 1)]),
            "in use",
        ),
        (
            "same.yaml",
            load_balancer("same-port", port, &[("/*", &tg, 1)]),
            "another load balancer",
        ),
        (
            "notg.yaml",
            site(&unique("x"), 1, "r", "x", "no-such-tg", "1"),
            "target group `no-such-tg` does not exist",
        ),
        (
            "port.yaml",
            site(&unique("y"), 1, "r", "x", &tg, "1").replace(
                "containerName: web, containerPort: 8080",
                "containerName: web, containerPort: 9999",
            ),
            "does not map port 9999",
        ),
    ];
    for (file, text, why) in cases {
        let d = manifest_dir(&[(file, text)]);
        let out = b.try_apply(d.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file} must be refused");
        assert!(err.contains(file) && err.contains(why), "{file}: {err}");
    }
    assert_eq!(
        before,
        b.get_json(&["loadbalancers"]),
        "nothing was applied"
    );
    drop(held);

    // Slow clients that never finish their headers do not stop others from being served.
    let mut slow = Vec::new();
    for _ in 0..50 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Write;
            let _ = s.write_all(b"GET /r/ HTTP/1.1\r\nHost: x\r\nX-Slow: ");
            slow.push(s);
        }
    }
    for _ in 0..20 {
        let (s, body) = get(port, "/r/").expect("served beside slow clients");
        assert_eq!(s, 200);
        assert!(body.contains("ok"));
    }
    // Oversized headers are refused, not served.
    let huge = "x".repeat(100 * 1024);
    let resp = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ =
            s.write_all(format!("GET /r/ HTTP/1.1\r\nHost: x\r\nX-Big: {huge}\r\n\r\n").as_bytes());
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    assert!(
        !resp.contains(" 200 "),
        "an oversized header block was served: {}",
        &resp[..resp.len().min(80)]
    );
    drop(slow);
}
