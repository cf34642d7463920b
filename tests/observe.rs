//! Watching berth live, end to end on the real Docker daemon: the dashboard in a real headless
//! Chromium (WebDriver), /metrics moving with a CPU-burning container, a target-tracking policy
//! scaling a service out and back in, `berth logs --follow` latency, `berth events` and
//! `berth get --watch`.
//!
//! The tests burn CPU on purpose, so they take turns (a 2-core machine).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berth::bench::webdriver::Browser;
use common::berth::*;
use common::manifests::*;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(60);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `berth up` sampling stats every second.
fn up() -> Berth {
    Berth::up_with(None, vec!["--stats-interval".into(), "1s".into()])
}

fn api_get(b: &Berth, path: &str) -> Option<String> {
    api_text(b.port, path)
}

fn wait_running(b: &Berth, service: &str, n: usize) -> Vec<Value> {
    b.wait_running(service, n, CONVERGE)
}

/// A service whose one container idles (so CPU can be burnt into it with `docker exec`).
fn idle_manifest(name: &str, replicas: u32, extra: &str) -> String {
    let td = task_definition(
        name,
        [container("app", &["sleep", "3600"])
            .cpu(256)
            .memory(64)
            .stop_timeout(1)],
    );
    format!(
        "{}{extra}",
        documents(&[td.to_string(), service(name, name, replicas.into(), &[])])
    )
}

/// The Docker container of a task (by its `berth.task` label).
fn container_of(b: &Berth, task_id: &str) -> String {
    b.container_of(task_id, None)
}

fn burn(container: &str) {
    docker_exec(container, true, &["sh", "-c", "while :; do :; done"]);
}

fn stop_burning(container: &str) {
    // PID 1 is `sleep`; every `sh` is a burner.
    let _ = docker_exec_output(container, &["killall", "-9", "sh"]);
}

// ----- Prometheus text: a small parser ---------------------------------------------------------

/// One sample: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parse Prometheus / OpenMetrics text strictly enough to catch malformed output: every line a
/// comment (HELP, TYPE, UNIT, EOF) or `name{label="value",…} number`; every sample belongs to a
/// family declared by a TYPE line; one TYPE line per family; `# EOF` last.
fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    if lines.last() != Some(&"# EOF") {
        return Err("does not end with # EOF".into());
    }
    for (i, line) in lines.iter().enumerate() {
        let err = |m: &str| Err(format!("line {}: {m}: {line}", i + 1));
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match parts.next() {
                Some("TYPE") => {
                    let (Some(name), Some(ty)) = (parts.next(), parts.next()) else {
                        return err("bad TYPE");
                    };
                    if !valid_name(name) {
                        return err("bad metric name");
                    }
                    if ![
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "info",
                        "unknown",
                        "stateset",
                        "gaugehistogram",
                    ]
                    .contains(&ty)
                    {
                        return err("unknown type");
                    }
                    if types.insert(name.to_string(), ty.to_string()).is_some() {
                        return err("second TYPE for a family");
                    }
                }
                Some("HELP") | Some("UNIT") => {}
                Some("EOF") if i == lines.len() - 1 => {}
                _ => return err("unknown comment"),
            }
            continue;
        }
        if line.is_empty() {
            return err("empty line");
        }
        // name{labels} value
        let (name, rest) = match line.find(['{', ' ']) {
            Some(p) => line.split_at(p),
            None => return err("no value"),
        };
        if !valid_name(name) {
            return err("bad sample name");
        }
        let mut labels = HashMap::new();
        let rest = if let Some(body) = rest.strip_prefix('{') {
            let Some(end) = body.find("} ") else {
                return err("unterminated labels");
            };
            let (ls, after) = body.split_at(end);
            // label="value" pairs; values may hold escaped quotes.
            let mut s = ls;
            while !s.is_empty() {
                let Some(eq) = s.find("=\"") else {
                    return err("bad label");
                };
                let key = &s[..eq];
                if !valid_name(key) {
                    return err("bad label name");
                }
                let v = &s[eq + 2..];
                let mut val = String::new();
                let mut chars = v.char_indices();
                let mut end_at = None;
                while let Some((j, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                val.push(match n {
                                    'n' => '\n',
                                    o => o,
                                });
                            }
                        }
                        '"' => {
                            end_at = Some(j);
                            break;
                        }
                        o => val.push(o),
                    }
                }
                let Some(j) = end_at else {
                    return err("unterminated label value");
                };
                labels.insert(key.to_string(), val);
                s = &v[j + 1..];
                s = s.strip_prefix(',').unwrap_or(s);
            }
            &after[1..]
        } else {
            rest
        };
        let value_str = rest.trim().split(' ').next().unwrap_or("");
        let value: f64 = match value_str {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .map_err(|_| format!("line {}: bad value: {line}", i + 1))?,
        };
        let family = ["_total", "_bucket", "_sum", "_count", "_created", "_info"]
            .iter()
            .find_map(|suf| name.strip_suffix(suf).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        if !types.contains_key(family) {
            return err("sample of an undeclared family");
        }
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(out)
}

fn scrape(b: &Berth) -> Vec<Sample> {
    let text = api_get(b, "/metrics").expect("GET /metrics");
    parse_prometheus(&text).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"))
}

fn metric(samples: &[Sample], name: &str, label: (&str, &str)) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && s.labels.get(label.0).map(String::as_str) == Some(label.1))
        .map(|s| s.value)
}

#[test]
fn prometheus_parser_rejects_garbage() {
    assert!(parse_prometheus("# TYPE a gauge\na 1\n# EOF").is_ok());
    assert!(parse_prometheus("a 1\n# EOF").is_err(), "undeclared family");
    assert!(parse_prometheus("# TYPE a gauge\na{x=\"1} 1\n# EOF").is_err());
    assert!(parse_prometheus("# TYPE a gauge\na one\n# EOF").is_err());
    assert!(parse_prometheus("# TYPE a gauge\n# TYPE a gauge\n# EOF").is_err());
    let s = parse_prometheus("# TYPE c counter\nc_total{k=\"a\\\"b\"} 3\n# EOF").unwrap();
    assert_eq!(s[0].labels["k"], "a\"b");
}

// ----- the tests -------------------------------------------------------------------------------

#[test]
fn metrics_parse_and_service_cpu_moves_with_a_burning_container() {
    let _g = serial();
    let b = up();
    let svc = unique("burn");
    let dir = manifest_dir(&[("s.yaml", idle_manifest(&svc, 1, ""))]);
    b.apply(dir.path());
    let task = name_of(&wait_running(&b, &svc, 1)[0]);
    let container = container_of(&b, &task);

    // Idle first: a sample exists and shows (almost) nothing.
    let idle = wait_for("an idle CPU sample of the service", CONVERGE, || {
        let s = scrape(&b);
        metric(
            &s,
            "berth_service_cpu_utilization_percent",
            ("service", &svc),
        )
    });
    assert!(idle < 20.0, "an idle service uses {idle}% of its CPU");
    let s = scrape(&b);
    let mem = metric(&s, "berth_service_memory_bytes", ("service", &svc)).unwrap();
    assert!(mem > 0.0, "memory in use is reported");
    assert!(metric(
        &s,
        "berth_service_memory_utilization_percent",
        ("service", &svc)
    )
    .is_some());
    assert!(metric(
        &s,
        "berth_taskdefinition_cpu_utilization_percent",
        ("family", &svc)
    )
    .is_some());
    assert!(metric(
        &s,
        "berth_cluster_cpu_utilization_percent",
        ("cluster", "default")
    )
    .is_some());
    assert_eq!(
        metric(&s, "berth_service_running_tasks", ("service", &svc)),
        Some(1.0)
    );
    // Controller metrics: counters, queue depths, duration histograms.
    for c in ["service", "scheduler", "scaling"] {
        assert!(
            metric(&s, "berth_controller_reconciles_total", ("controller", c)).is_some(),
            "reconcile count of {c}"
        );
        assert!(metric(&s, "berth_controller_queue_depth", ("controller", c)).is_some());
        assert!(metric(
            &s,
            "berth_controller_reconcile_errors_total",
            ("controller", c)
        )
        .is_some());
    }
    assert!(s.iter().any(
        |x| x.name == "berth_controller_reconcile_duration_seconds_bucket"
            && x.labels.get("le").map(String::as_str) == Some("+Inf")
    ));

    burn(&container);
    // One busy core is 1024 units against 256 reserved: far above 100%.
    let hot = wait_for("the service's CPU to climb", CONVERGE, || {
        let s = scrape(&b);
        metric(
            &s,
            "berth_service_cpu_utilization_percent",
            ("service", &svc),
        )
        .filter(|v| *v > 100.0)
    });
    let s = scrape(&b);
    let cores = metric(&s, "berth_service_cpu_cores", ("service", &svc)).unwrap();
    assert!(
        cores > 0.25,
        "burning container uses {cores} cores ({hot}%)"
    );

    // The terminal view agrees.
    let top = b.cli_ok(&["top", "services"]);
    let line = top
        .lines()
        .find(|l| l.contains(&svc))
        .unwrap_or_else(|| panic!("{top}"));
    assert!(line.contains('%'), "{top}");
    let top_tasks = b.cli_ok(&["top", "tasks"]);
    assert!(top_tasks.contains(&task), "{top_tasks}");

    stop_burning(&container);
    wait_for("the service's CPU to fall back", CONVERGE, || {
        let s = scrape(&b);
        metric(
            &s,
            "berth_service_cpu_utilization_percent",
            ("service", &svc),
        )
        .filter(|v| *v < 20.0)
    });
}

#[test]
fn target_tracking_scales_a_cpu_burning_service_out_and_in() {
    let _g = serial();
    let b = up();
    let svc = unique("hot");
    let policy = format!(
        r#"---
apiVersion: berth.dev/v1
kind: ScalingPolicy
metadata: {{name: {svc}-cpu}}
spec:
  service: {svc}
  minCapacity: 1
  maxCapacity: 3
  evaluationInterval: 1s
  targetTracking:
    predefinedMetricType: ECSServiceAverageCPUUtilization
    targetValue: 50
    scaleOutCooldown: 2s
    scaleInCooldown: 4s
"#
    );
    let dir = manifest_dir(&[("s.yaml", idle_manifest(&svc, 1, &policy))]);
    let out = b.apply(dir.path());
    assert!(
        out.contains(&format!("scalingpolicy/{svc}-cpu created")),
        "{out}"
    );
    let task = name_of(&wait_running(&b, &svc, 1)[0]);
    let container = container_of(&b, &task);
    // Idle: the policy holds at the minimum.
    wait_for("the policy to see samples", CONVERGE, || {
        let p = b.get_json(&["scalingpolicies", &format!("{svc}-cpu")]);
        p["status"]["currentMetric"].as_f64()
    });
    assert_eq!(b.get_json(&["services", &svc])["spec"]["desiredCount"], 1);

    burn(&container);
    b.wait_json(
        "scale-out to the maximum",
        CONVERGE,
        &["services", &svc],
        |s| s["spec"]["desiredCount"] == 3,
    );
    wait_running(&b, &svc, 3);
    let s = b.get_json(&["services", &svc]);
    let events = service_events(&s);
    assert!(
        events
            .iter()
            .any(|m| m.contains("scaled out from 1 to 3") && m.contains("CPU utilization")),
        "a service event says why: {events:?}"
    );

    stop_burning(&container);
    b.wait_json(
        "scale-in to the minimum",
        CONVERGE,
        &["services", &svc],
        |s| s["spec"]["desiredCount"] == 1,
    );
    wait_running(&b, &svc, 1);
    let ev = b.cli_ok(&["events", "--service", &svc]);
    assert!(ev.contains("scaled in from 3 to 1"), "{ev}");
    let table = b.cli_ok(&["get", "scalingpolicies"]);
    assert!(table.contains(&format!("{svc}-cpu")), "{table}");
}

/// Seconds since boot, as the container's `/proc/uptime` says it (same kernel, same clock).
fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn logs_follow_shows_lines_within_a_second_and_outlive_the_task() {
    let _g = serial();
    let b = up();
    let name = unique("talk");
    let manifest = task_definition(
        &name,
        [container(
            "talker",
            &[
                "sh",
                "-c",
                "echo hello from the talker; echo oops >&2; while :; do read up idle </proc/uptime; echo tick $up; sleep 0.7; done",
            ],
        )
        .memory(32)
        .stop_timeout(1)],
    )
    .to_string();
    let dir = manifest_dir(&[("t.yaml", manifest)]);
    b.apply(dir.path());
    let id = b.cli_ok(&["run-task", &name]).trim().to_string();
    b.wait_task(&id, "RUNNING", CONVERGE);

    let mut child = b
        .cli_command(&["logs", &id, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(f64, String)>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((uptime(), line)).is_err() {
                break;
            }
        }
    });
    let mut first = Vec::new();
    let mut lags = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while lags.len() < 6 {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, line) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no log lines; got {first:?}"));
        first.push(line.clone());
        if let Some(up) = line.strip_prefix("tick ") {
            let written: f64 = up.trim().parse().unwrap();
            // History comes first; only lines written after following began measure latency.
            if first.len() > 3 {
                lags.push(at - written);
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        first.iter().any(|l| l == "hello from the talker"),
        "{first:?}"
    );
    assert!(first.iter().any(|l| l == "oops"), "stderr too: {first:?}");
    let worst = lags.iter().cloned().fold(0.0, f64::max);
    println!("log follow latency: {lags:?}");
    assert!(
        worst < 1.0,
        "a line took {worst:.2}s to show up in `berth logs --follow` ({lags:?})"
    );

    // --tail and --since.
    let tail = b.cli_ok(&["logs", &id, "--tail", "2"]);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    let none = b.cli_ok(&["logs", &id, "--since", "0s"]);
    assert!(none.lines().count() <= 1, "{none}");
    let ts = b.cli_ok(&["logs", &id, "--tail", "1", "--timestamps"]);
    assert!(ts.starts_with("20"), "timestamped: {ts}");

    // A stopped task's logs stay readable, and following them ends by itself.
    b.cli_ok(&["stop-task", &id]);
    b.wait_task(&id, "STOPPED", CONVERGE);
    let after = b.cli_ok(&["logs", &id]);
    assert!(after.contains("hello from the talker"), "{after}");
    let started = Instant::now();
    let out = b.cli(&["logs", &id, "--follow", "--container", "talker"]);
    assert!(out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "follow of a stopped task ends"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("tick"));

    let missing = b.cli(&["logs", "no-such-task"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
}

#[test]
fn events_and_get_watch_stream_changes() {
    let _g = serial();
    let b = up();
    let svc = unique("watched");
    let mut child = b
        .cli_command(&["get", "services", "--watch"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut events = b
        .cli_command(&["events", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = |out: std::process::ChildStdout| {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let watch = lines(child.stdout.take().unwrap());
    let ev = lines(events.stdout.take().unwrap());
    wait_connected(child.id(), b.port, "`berth get services --watch`");
    wait_connected(events.id(), b.port, "`berth events --follow`");
    let dir = manifest_dir(&[("w.yaml", idle_manifest(&svc, 1, ""))]);
    b.apply(dir.path());
    let wait_line =
        |rx: &std::sync::mpsc::Receiver<String>, what: &str, f: &dyn Fn(&str) -> bool| {
            let deadline = Instant::now() + CONVERGE;
            let mut seen = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(l) if f(&l) => return l,
                    Ok(l) => seen.push(l),
                    Err(_) => panic!("no line with {what}; saw {seen:?}"),
                }
            }
        };
    wait_line(&watch, "ADDED service", &|l| {
        l.starts_with("ADDED") && l.contains(&svc)
    });
    wait_running(&b, &svc, 1);
    wait_line(&watch, "MODIFIED service", &|l| {
        l.starts_with("MODIFIED") && l.contains(&svc)
    });
    wait_line(&ev, "a task event", &|l| {
        l.contains("task/") && l.contains("RUNNING")
    });
    let _ = child.kill();
    let _ = events.kill();
    let _ = child.wait();
    let _ = events.wait();
    let json = b.cli_ok(&["events", "-o", "json"]);
    assert!(
        json.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "{json}"
    );
}

/// Wait until the page has drawn two more frames (what it shows is on screen).
async fn next_frames(browser: &Browser) {
    browser
        .eval("return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))")
        .await
        .expect("the page draws frames");
}

#[test]
fn dashboard_in_headless_chromium_updates_live() {
    let _g = serial();
    let b = up();
    let svc = unique("dash");
    let dir = manifest_dir(&[("web.yaml", web_manifest(&svc, 1, "1"))]);
    b.apply(dir.path());
    wait_running(&b, &svc, 1);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let browser = Browser::start(1440, 1000).await.expect("headless Chromium via chromedriver");
        let url = format!("{}/ui?token={}", b.endpoint(), b.token());
        browser.goto(&url).await.unwrap();
        let sel = format!("[data-service=\"{svc}\"]");
        browser
            .wait_for(
                &format!("return document.body.dataset.ready === '1' && !!document.querySelector('{sel}')"),
                Duration::from_secs(20),
            )
            .await
            .expect("the dashboard lists the running service");
        let running = browser
            .eval(&format!("return document.querySelector('{sel}').dataset.running"))
            .await
            .unwrap();
        assert_eq!(running, "1");
        let text = browser
            .eval(&format!("return document.querySelector('{sel}').innerText"))
            .await
            .unwrap();
        assert!(text.as_str().unwrap().contains(&svc), "{text}");
        browser.eval("window.__notReloaded = 42; return 1").await.unwrap();

        // Scale 1 → 3: the page follows without reloading, within 2 s of the store.
        write(dir.path(), "web.yaml", &web_manifest(&svc, 3, "1"));
        b.apply(dir.path());
        let deadline = Instant::now() + CONVERGE;
        let (mut api_at, mut page_at) = (None, None);
        while api_at.is_none() || page_at.is_none() {
            assert!(Instant::now() < deadline, "scale never showed: api {api_at:?} page {page_at:?}");
            if api_at.is_none() {
                let s: Value = api_get(&b, &format!("/v1/services/{svc}"))
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default();
                if s["status"]["runningCount"] == 3 {
                    api_at = Some(Instant::now());
                }
            }
            if page_at.is_none() {
                let r = browser
                    .eval(&format!("return document.querySelector('{sel}').dataset.running"))
                    .await
                    .unwrap();
                if r == "3" {
                    page_at = Some(Instant::now());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let lag = page_at.unwrap().saturating_duration_since(api_at.unwrap());
        println!("dashboard lag behind the API: {lag:?}");
        assert!(lag <= Duration::from_secs(2), "the page showed running=3 {lag:?} after the API");
        let marker = browser.eval("return window.__notReloaded").await.unwrap();
        assert_eq!(marker, 42, "the page was not reloaded");
        let rows = browser
            .eval(&format!(
                "return [...document.querySelectorAll('#tasks tbody tr')].filter(r => !r.hidden && r.children[1].textContent === '{svc}').length"
            ))
            .await
            .unwrap();
        assert_eq!(rows, 3, "three task rows");
        let ctl = browser
            .eval("return document.querySelectorAll('#controllers tbody tr[data-controller]').length")
            .await
            .unwrap();
        assert!(ctl.as_u64().unwrap() >= 3, "controllers listed: {ctl}");
        let inst = browser
            .eval(&format!("return !!document.querySelector('[data-instance=\"{}\"]')", b.instance))
            .await
            .unwrap();
        assert_eq!(inst, true, "the instance is listed");

        // Let a few stats samples reach the page and draw the charts (counted on a second feed
        // of the same events), then take a full-page screenshot.
        browser
            .eval(
                "window.__points = 0; const t = new URLSearchParams(location.search).get('token');\
                 window.__feed = new EventSource('/ui/api/events' + (t ? '?token=' + encodeURIComponent(t) : ''));\
                 window.__feed.addEventListener('metrics', e => { if (JSON.parse(e.data).point) window.__points++; });\
                 return 1",
            )
            .await
            .unwrap();
        browser
            .wait_for("return window.__points >= 3", CONVERGE)
            .await
            .expect("three stats samples reach the page");
        browser.eval("window.__feed.close(); return 1").await.unwrap();
        next_frames(&browser).await;
        let h = browser
            .eval("return document.documentElement.scrollHeight")
            .await
            .unwrap()
            .as_u64()
            .unwrap_or(1000) as u32;
        browser.resize(1440, (h + 120).clamp(800, 4000)).await.unwrap();
        next_frames(&browser).await;
        let png = browser.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = test_output_dir().join("dashboard.png");
        std::fs::write(&path, &png).unwrap();
        println!("screenshot: {}", path.display());
        browser.close().await;
    });
}
