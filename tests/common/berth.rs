//! Test harness: a real `berth up` process (the built binary) on a free port with its own data
//! dir, config dir and agent instance id, so tests can run side by side on one Docker daemon.
//! Killed and its containers removed on drop.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::manifests::IMAGE;

/// A port free on every address now, from below the kernel's ephemeral range: a port the
/// kernel hands out for `:0` (berth's own endpoints bind those) can then never be the one a
/// test is about to give berth. Ports are taken in turn from a random start, so tests in one
/// process never draw the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768);
    let (from, span) = (10_000u32, low.saturating_sub(10_000).max(1000));
    let _ = NEXT.compare_exchange(
        0,
        1 + uuid::Uuid::new_v4().as_u128() as u32 % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let port = (from + NEXT.fetch_add(1, Ordering::SeqCst) % span) as u16;
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn berth_bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Fail early and clearly when the test image is missing.
pub fn require_image() {
    let out = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "image {IMAGE} is missing: run scripts/build-image.sh first"
    );
}

pub struct Berth {
    pub data: tempfile::TempDir,
    pub config_home: tempfile::TempDir,
    pub port: u16,
    pub instance: String,
    pub store_url: Option<String>,
    pub extra_args: Vec<String>,
    /// Extra environment of the `berth up` process.
    pub extra_env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Berth {
    /// `berth up` with the embedded store (or `store_url`, e.g. an etcd URL).
    pub fn up(store_url: Option<String>) -> Berth {
        Self::up_with(store_url, vec![])
    }

    pub fn up_with(store_url: Option<String>, extra_args: Vec<String>) -> Berth {
        Self::up_with_env(store_url, extra_args, vec![])
    }

    /// [`Berth::up_with`] with extra environment variables for the process.
    pub fn up_with_env(
        store_url: Option<String>,
        extra_args: Vec<String>,
        extra_env: Vec<(String, String)>,
    ) -> Berth {
        require_image();
        let mut b = Berth {
            data: tempfile::Builder::new()
                .prefix("berth-data-")
                .tempdir()
                .unwrap(),
            config_home: tempfile::Builder::new()
                .prefix("berth-cfg-")
                .tempdir()
                .unwrap(),
            port: free_port(),
            instance: unique("it"),
            store_url,
            extra_args,
            extra_env,
            child: None,
        };
        b.spawn();
        b
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.data.path().join("berth.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = Command::new(berth_bin());
        cmd.arg("up");
        // A test may put the data dir elsewhere (e.g. on a tiny tmpfs); logs stay in `data`.
        if !self.extra_args.iter().any(|a| a == "--data-dir") {
            cmd.arg("--data-dir").arg(self.data.path());
        }
        cmd.arg("--api")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--instance-id")
            .arg(&self.instance)
            .arg("--lease-ttl")
            .arg("4s")
            .args(&self.extra_args)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .env("XDG_CONFIG_HOME", self.config_home.path())
            .env(
                "BERTH_LOG",
                std::env::var("IT_BERTH_LOG").unwrap_or_else(|_| "info,berth=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(s) = &self.store_url {
            cmd.arg("--store").arg(s);
        }
        self.child = Some(cmd.spawn().expect("start berth up"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http_get_path(self.port, "/healthz").is_some_and(|b| b.contains(" 200 ")) {
                break;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("berth up exited early ({st}); log:\n{}", self.log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "berth up did not become healthy; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // `berth up` writes the CLI config (endpoint + admin token) right after it listens.
        let cfg = self.config_home.path().join("berth").join("config.json");
        wait_for(
            "berth up to write its CLI config",
            Duration::from_secs(10),
            || {
                let v: Value = serde_json::from_str(&std::fs::read_to_string(&cfg).ok()?).ok()?;
                v["token"].as_str().map(|_| ())
            },
        );
        api_tokens().lock().unwrap().insert(self.port, cfg);
    }

    /// The admin token `berth up` wrote into this instance's CLI config.
    pub fn token(&self) -> String {
        token_for_port(self.port).expect("berth up wrote a token")
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Wait for the process to exit by itself (at most `timeout`): its status, if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return Some(st);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The CLI against this instance, to spawn (e.g. a `--follow` that runs on).
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(berth_bin());
        c.args(args)
            .env("BERTH_ENDPOINT", self.endpoint())
            .env("XDG_CONFIG_HOME", self.config_home.path());
        c
    }

    /// Run the CLI against this instance.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_command(args).output().expect("run berth cli")
    }

    /// Run the CLI and require success; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "berth {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `berth apply -f DIR`, required to succeed; its output.
    pub fn apply(&self, dir: &Path) -> String {
        self.cli_ok(&["apply", "-f", dir.to_str().unwrap()])
    }

    /// `berth apply -f DIR`, success or not.
    pub fn try_apply(&self, dir: &Path) -> Output {
        self.cli(&["apply", "-f", dir.to_str().unwrap()])
    }

    fn get_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        a
    }

    /// `berth get ARGS -o json`, required to succeed.
    pub fn get_json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.cli_ok(&Self::get_args(args))).expect("get -o json prints JSON")
    }

    /// `berth get ARGS -o json`; None when it fails (e.g. not found).
    pub fn try_get_json(&self, args: &[&str]) -> Option<Value> {
        let o = self.cli(&Self::get_args(args));
        o.status
            .success()
            .then(|| serde_json::from_slice(&o.stdout).expect("get -o json prints JSON"))
    }

    /// Poll `berth get ARGS -o json` until `f` holds of it; the object then.
    pub fn wait_json(
        &self,
        what: &str,
        timeout: Duration,
        args: &[&str],
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(what, timeout, || Some(self.get_json(args)).filter(|v| f(v)))
    }

    /// Poll until task `id` is in `status` (e.g. RUNNING); the task then.
    pub fn wait_task(&self, id: &str, status: &str, timeout: Duration) -> Value {
        self.wait_json(
            &format!("task {id} {status}"),
            timeout,
            &["tasks", id],
            |t| t["status"]["lastStatus"] == status,
        )
    }

    /// Non-stopped tasks of a service.
    pub fn active_tasks(&self, service: &str) -> Vec<Value> {
        self.get_json(&["tasks", "--service", service])
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| {
                t["status"]["lastStatus"] != "STOPPED" && t["status"]["desiredStatus"] != "STOPPED"
            })
            .collect()
    }

    pub fn running_tasks(&self, service: &str) -> Vec<Value> {
        self.active_tasks(service)
            .into_iter()
            .filter(|t| t["status"]["lastStatus"] == "RUNNING")
            .collect()
    }

    /// Poll until `service` has exactly `n` active tasks, all RUNNING; those tasks.
    pub fn wait_running(&self, service: &str, n: usize, timeout: Duration) -> Vec<Value> {
        self.wait_running_and(service, n, timeout, || true)
    }

    /// [`Berth::wait_running`], and `also` holds at the same time.
    pub fn wait_running_and(
        &self,
        service: &str,
        n: usize,
        timeout: Duration,
        also: impl Fn() -> bool,
    ) -> Vec<Value> {
        wait_for(&format!("{n} running tasks of {service}"), timeout, || {
            let active = self.active_tasks(service);
            let running = self.running_tasks(service);
            (running.len() == n && active.len() == n && also()).then_some(running)
        })
    }

    /// The running Docker container of task `task` (its container `container`, when named),
    /// waiting up to 30 s for it.
    pub fn container_of(&self, task: &str, container: Option<&str>) -> String {
        let suffix = container.map(|c| format!("-{c}"));
        wait_for(
            &format!("a running container of task {task}"),
            Duration::from_secs(30),
            || {
                self.containers()
                    .into_iter()
                    .find(|c| {
                        c.2 == task
                            && c.1 == "running"
                            && suffix.as_ref().is_none_or(|s| c.0.ends_with(s))
                    })
                    .map(|c| c.0)
            },
        )
    }

    /// Containers Docker runs for this instance (all states), as (name, state, task label).
    pub fn containers(&self) -> Vec<(String, String, String)> {
        containers_with_label(&format!("berth.instance={}", self.instance))
    }

    pub fn running_containers(&self) -> Vec<(String, String, String)> {
        self.containers()
            .into_iter()
            .filter(|c| c.1 == "running")
            .collect()
    }
}

pub fn containers_with_label(label: &str) -> Vec<(String, String, String)> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label={label}"),
            "--format",
            "{{.Names}}\t{{.State}}\t{{.Label \"berth.task\"}}",
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut p = l.split('\t');
            (
                p.next().unwrap_or("").to_string(),
                p.next().unwrap_or("").to_string(),
                p.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

pub fn remove_containers_with_label(label: &str) {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output()
        .expect("docker ps");
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .arg("rm")
            .arg("-f")
            .args(&ids)
            .output();
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        self.kill9();
        remove_containers_with_label(&format!("berth.instance={}", self.instance));
        if std::thread::panicking() {
            eprintln!(
                "---- berth log ({}) ----\n{}",
                self.instance,
                tail(&self.log(), 200)
            );
        }
    }
}

/// Poll until process `pid` holds an established TCP connection to 127.0.0.1:`port` (e.g. a
/// `--follow` or `--watch` CLI has reached the API).
pub fn wait_connected(pid: u32, port: u16, what: &str) {
    wait_for(
        &format!("{what} (pid {pid}) connected to port {port}"),
        Duration::from_secs(10),
        || {
            let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .ok()?
                .flatten()
                .filter_map(|fd| {
                    let link = std::fs::read_link(fd.path()).ok()?;
                    let link = link.to_str()?;
                    Some(
                        link.strip_prefix("socket:[")?
                            .strip_suffix(']')?
                            .to_string(),
                    )
                })
                .collect();
            let port_hex = format!(":{port:04X}");
            let connected = ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
                std::fs::read_to_string(table)
                    .unwrap_or_default()
                    .lines()
                    .skip(1)
                    .any(|l| {
                        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
                        let f: Vec<&str> = l.split_whitespace().collect();
                        f.len() > 9
                            && f[2].ends_with(&port_hex)
                            && f[3] == "01"
                            && inodes.iter().any(|i| i == f[9])
                    })
            });
            connected.then_some(())
        },
    );
}

pub fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Poll `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Host ports of a task's bindings.
pub fn host_ports(task: &Value) -> Vec<u16> {
    let mut out = Vec::new();
    for c in task["status"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for b in c["networkBindings"].as_array().into_iter().flatten() {
            if let Some(p) = b["hostPort"].as_u64() {
                out.push(p as u16);
            }
        }
    }
    out
}

/// GET / on a host port; the whole response.
pub fn http_get(port: u16) -> Option<String> {
    http_get_path(port, "/")
}

/// API ports of running `berth up`s → their CLI config (for the admin token).
fn api_tokens() -> &'static std::sync::Mutex<HashMap<u16, PathBuf>> {
    static M: std::sync::OnceLock<std::sync::Mutex<HashMap<u16, PathBuf>>> =
        std::sync::OnceLock::new();
    M.get_or_init(Default::default)
}

pub fn token_for_port(port: u16) -> Option<String> {
    let cfg = api_tokens().lock().unwrap().get(&port).cloned()?;
    let v: Value = serde_json::from_str(&std::fs::read_to_string(cfg).ok()?).ok()?;
    v["token"].as_str().map(str::to_string)
}

/// One raw HTTP/1.0 request to 127.0.0.1:port with exactly these headers (no token added):
/// (status, head, body).
pub fn http_raw(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Option<(u16, String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.0\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_string(), body.to_string()))
}

/// GET `path` from `addr` (host:port) over HTTP/1.0 with `headers` (complete lines); the whole
/// response.
fn get_from(addr: &str, path: &str, headers: &str, read_timeout: Duration) -> Option<String> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(read_timeout)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n{headers}\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some(buf)
}

fn get_local(port: u16, path: &str, read_timeout: Duration) -> Option<String> {
    // A berth API port gets its admin token (other ports, e.g. containers', get none).
    let auth = token_for_port(port)
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    get_from(&format!("127.0.0.1:{port}"), path, &auth, read_timeout)
}

/// GET a path on 127.0.0.1:port (with the admin token when it is a berth API port); the whole
/// response.
pub fn http_get_path(port: u16, path: &str) -> Option<String> {
    get_local(port, path, Duration::from_secs(2))
}

/// GET / on ip:port (e.g. an awsvpc task's own address); the whole response.
pub fn http_get_ip(ip: &str, port: u16) -> Option<String> {
    get_from(&format!("{ip}:{port}"), "/", "", Duration::from_secs(2))
}

/// GET a path on 127.0.0.1:port: (status, body).
pub fn http_status_body(port: u16, path: &str) -> Option<(u16, String)> {
    let resp = http_get_path(port, path)?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((status, body))
}

pub fn task_ids(tasks: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = tasks
        .iter()
        .filter_map(|t| t["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

pub type Labels = HashMap<String, String>;

/// GET a path of the API and parse the body as JSON (None on any failure).
pub fn api_json(port: u16, path: &str) -> Option<Value> {
    let resp = http_get_path(port, path)?;
    let (_, body) = resp.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

/// GET a path of the API (waiting up to 15 s for a slow answer, e.g. /metrics on a busy
/// machine); the body as text when the status is 200.
pub fn api_text(port: u16, path: &str) -> Option<String> {
    let resp = get_local(port, path, Duration::from_secs(15))?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| body.to_string())
}

/// The name of an object (`metadata.name`), e.g. a task's id.
pub fn name_of(obj: &Value) -> String {
    obj["metadata"]["name"]
        .as_str()
        .expect("an object with a name")
        .to_string()
}

/// The messages of a service's events, newest first.
pub fn service_events(svc: &Value) -> Vec<String> {
    svc["status"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `docker exec CONTAINER CMD…`, success or not.
pub fn docker_exec_output(container: &str, cmd: &[&str]) -> Output {
    Command::new("docker")
        .arg("exec")
        .arg(container)
        .args(cmd)
        .output()
        .expect("docker exec")
}

/// `docker exec CONTAINER sh -c SCRIPT`, success or not.
pub fn docker_sh(container: &str, script: &str) -> Output {
    docker_exec_output(container, &["sh", "-c", script])
}

/// `docker exec` (detached with `detach`); panics when docker refuses.
pub fn docker_exec(container: &str, detach: bool, cmd: &[&str]) -> String {
    let mut args = vec!["exec"];
    if detach {
        args.push("-d");
    }
    args.push(container);
    args.extend_from_slice(cmd);
    let out = Command::new("docker")
        .args(&args)
        .output()
        .expect("docker exec");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where tests leave files for people to look at (screenshots): target/test-output.
pub fn test_output_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|p| p.join("test-output"))
        .unwrap_or_else(|| PathBuf::from("target/test-output"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `docker inspect` of one container (Null when it is gone).
pub fn docker_inspect(id: &str) -> Value {
    let out = Command::new("docker")
        .args(["inspect", id])
        .output()
        .expect("docker inspect");
    serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)[0].clone()
}

/// Samples, every 100 ms until [`CopyWatch::finish`], how many containers run at once on the
/// given instances: "never two copies" is checked at every moment, not only at the end.
pub struct CopyWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    max: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    handle: std::thread::JoinHandle<()>,
}

impl CopyWatch {
    pub fn start(instances: Vec<String>) -> CopyWatch {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let max = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, m) = (stop.clone(), max.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let n = instances
                    .iter()
                    .flat_map(|i| containers_with_label(&format!("berth.instance={i}")))
                    .filter(|c| c.1 == "running")
                    .count();
                m.fetch_max(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        CopyWatch { stop, max, handle }
    }

    /// Stop sampling; the most containers seen running at once.
    pub fn finish(self) -> usize {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.handle.join();
        self.max.load(Ordering::SeqCst)
    }
}
