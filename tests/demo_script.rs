//! `scripts/demo.sh` (issue 14): its set-up path is quiet and installs nothing when everything
//! is present; the demo itself brings berth up on manifests/, prints a dashboard URL and the
//! demo service's URL, both answer, and SIGINT (Ctrl-C) stops it cleanly.
//! Needs Docker and the local image (as the other end-to-end tests do).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn repo() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_ok(url: &str) -> bool {
    Command::new("curl")
        .args(["-fs", "-o", "/dev/null", "--max-time", "3", url])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn setup_path_is_quiet_when_everything_is_there() {
    // deps.sh --check says what a fresh machine would get; here everything should be present.
    let check = Command::new(format!("{}/scripts/deps.sh", repo()))
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "scripts/deps.sh --check: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    let o = Command::new(format!("{}/scripts/demo.sh", repo()))
        .arg("--setup-only")
        .env("BERTH_BIN", env!("CARGO_BIN_EXE_berth"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(
        o.stdout.is_empty() && o.stderr.is_empty(),
        "quiet when nothing is missing: {o:?}"
    );
}

#[test]
fn demo_comes_up_prints_urls_that_answer_and_stops_on_ctrl_c() {
    let data = tempfile::tempdir().unwrap();
    let cfg = tempfile::tempdir().unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let instance = format!("demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut cmd = Command::new(format!("{}/scripts/demo.sh", repo()));
    // Ctrl-C in a terminal reaches a script whose SIGINT is not ignored. A test run started in
    // the background (`cargo test &`) hands SIGINT down ignored, and bash cannot trap a signal
    // ignored on entry: restore the terminal's disposition for the script.
    // SAFETY: `signal` is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = cmd
        .env("BERTH_BIN", env!("CARGO_BIN_EXE_berth"))
        .env("BERTH_DEMO_API", &api)
        .env("BERTH_DEMO_DATA", data.path())
        .env("BERTH_DEMO_INSTANCE", &instance)
        .env("XDG_CONFIG_HOME", cfg.path())
        .env_remove("BERTH_ENDPOINT")
        .env_remove("BERTH_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let (mut dashboard, mut service) = (None, None);
    let mut lines = Vec::new();
    while service.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(l) = rx.recv_timeout(left) else {
            break;
        };
        if let Some(u) = l.strip_prefix("dashboard: ") {
            dashboard = Some(u.trim().to_string());
        }
        if let Some(u) = l.strip_prefix("demo service (web): ") {
            service = Some(u.trim().to_string());
        }
        lines.push(l);
    }
    let result = std::panic::catch_unwind(|| {
        let dashboard = dashboard
            .clone()
            .unwrap_or_else(|| panic!("no dashboard line: {lines:?}"));
        assert!(
            dashboard.starts_with(&format!("http://{api}/ui?token=")),
            "{dashboard}"
        );
        assert!(http_ok(&dashboard), "the dashboard answers: {dashboard}");
        let service = service
            .clone()
            .unwrap_or_else(|| panic!("no service line: {lines:?}"));
        assert!(http_ok(&service), "the demo service answers: {service}");
        assert_eq!(
            service, "http://127.0.0.1:8088/",
            "through manifests/web.yaml's load balancer listener"
        );
    });
    // Ctrl-C: the script's trap stops berth and removes its containers.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let left = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=berth.instance={instance}"),
        ])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout).to_string();
    if !left.trim().is_empty() {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker rm -f {}",
                left.split_whitespace().collect::<Vec<_>>().join(" ")
            ))
            .status();
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    let status = status.expect("the demo stops within 60 s of Ctrl-C");
    assert!(status.success(), "a clean exit on Ctrl-C: {status}");
    assert!(left.trim().is_empty(), "its containers are removed: {left}");
    assert!(
        std::net::TcpStream::connect(&api).is_err(),
        "berth no longer listens on {api}"
    );
}

/// manifests/ is a showcase: a service behind the load balancer with health checks, a batch
/// job, a role and a scaling policy, all parsing and validating together.
#[test]
fn manifests_folder_shows_every_kind_it_promises() {
    use berth::model::Kind;
    let dir = std::path::Path::new(repo()).join("manifests");
    let docs = berth::manifest::load_path(&dir).unwrap_or_else(|e| panic!("{e:?}"));
    let kinds: Vec<Kind> = docs.iter().map(|d| d.kind()).collect();
    for k in [
        Kind::TaskDefinition,
        Kind::Service,
        Kind::TargetGroup,
        Kind::LoadBalancer,
        Kind::Role,
        Kind::ScalingPolicy,
    ] {
        assert!(kinds.contains(&k), "manifests/ has no {k:?}");
    }
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for f in ["web.yaml", "hello-job.yaml", "role.yaml", "scaling.yaml"] {
        assert!(dir.join(f).is_file(), "{f}");
        assert!(readme.contains(f), "manifests/README.md explains {f}");
    }
}
