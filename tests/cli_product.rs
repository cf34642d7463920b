//! The CLI people expect (issue 14): completions for three shells, `berth version` with the
//! crate version and git commit, the server's version in `/healthz`'s `x-berth-version`
//! header (body unchanged), examples in every command's help, usage errors exit 2, `-o` takes
//! json|yaml|wide, and errors that say what to do next.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn berth(args: &[&str], config_home: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("XDG_CONFIG_HOME", config_home)
        .env_remove("BERTH_ENDPOINT")
        .env_remove("BERTH_TOKEN")
        .env_remove("AWS_ACCESS_KEY_ID")
        .output()
        .expect("run berth")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn completions_generate_for_three_shells() {
    let cfg = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F _berth"),
        ("zsh", "#compdef berth"),
        ("fish", "complete -c berth"),
    ] {
        let o = berth(&["completion", shell], cfg.path());
        assert!(o.status.success(), "{shell}: {o:?}");
        let s = String::from_utf8_lossy(&o.stdout);
        assert!(s.contains(marker), "{shell} script lacks {marker:?}");
        assert!(
            s.contains("rollout"),
            "{shell} script completes subcommands"
        );
    }
    let o = berth(&["completion", "tcsh"], cfg.path());
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn version_prints_crate_version_and_commit() {
    let cfg = tempfile::tempdir().unwrap();
    let o = berth(&["version", "--client"], cfg.path());
    assert!(o.status.success(), "{o:?}");
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.starts_with(&format!("berth {}\n", env!("CARGO_PKG_VERSION"))),
        "{s}"
    );
    assert!(s.contains("commit:"), "{s}");
    let o = berth(&["version", "--client", "-o", "json"], cfg.path());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let commit = v["commit"].as_str().unwrap();
    // Built from this work tree: a hex commit (maybe -dirty).
    let hex = commit.trim_end_matches("-dirty");
    assert!(
        hex == "unknown" || (hex.len() >= 7 && hex.chars().all(|c| c.is_ascii_hexdigit())),
        "{commit}"
    );
    if Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert_ne!(
            commit, "unknown",
            "a build from a git work tree knows its commit"
        );
    }
}

#[test]
fn every_command_help_has_examples_and_usage_errors_exit_2() {
    let cfg = tempfile::tempdir().unwrap();
    let top = berth(&["--help"], cfg.path());
    let s = String::from_utf8_lossy(&top.stdout).to_string();
    assert!(s.contains("Exit codes:"), "{s}");
    let commands = [
        "up",
        "server",
        "agent",
        "token",
        "lb",
        "apply",
        "diff",
        "sync",
        "get",
        "describe",
        "delete",
        "run-task",
        "stop-task",
        "drain",
        "activate",
        "compose",
        "rollout",
        "auth",
        "audit",
        "bench",
        "logs",
        "top",
        "events",
        "completion",
        "version",
    ];
    for c in commands {
        let o = berth(&[c, "--help"], cfg.path());
        assert!(o.status.success(), "{c} --help: {o:?}");
        let h = String::from_utf8_lossy(&o.stdout);
        assert!(
            h.contains("Examples:"),
            "`berth {c} --help` has no examples:\n{h}"
        );
        assert!(h.contains(&format!("berth {c}")), "{c}: {h}");
    }
    for sub in [
        &["auth", "token"][..],
        &["auth", "identity", "create"],
        &["token", "create"],
        &["rollout", "status"],
        &["sync", "status"],
        &["compose", "convert"],
        &["compose", "up"],
        &["compose", "down"],
    ] {
        let mut a = sub.to_vec();
        a.push("--help");
        let o = berth(&a, cfg.path());
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Examples:"),
            "{sub:?}"
        );
    }
    let o = berth(&["no-such-command"], cfg.path());
    assert_eq!(o.status.code(), Some(2));
    let o = berth(&["get"], cfg.path());
    assert_eq!(
        o.status.code(),
        Some(2),
        "a missing argument is a usage error"
    );
}

#[test]
fn unreachable_server_names_the_endpoint_and_how_to_set_it() {
    let cfg = tempfile::tempdir().unwrap();
    let ep = format!("http://127.0.0.1:{}", free_port());
    let o = berth(&["get", "services", "--endpoint", &ep], cfg.path());
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains(&ep), "{e}");
    assert!(
        e.contains("--endpoint") && e.contains("BERTH_ENDPOINT"),
        "{e}"
    );
    let o = berth(
        &["get", "services", "-o", "xml", "--endpoint", &ep],
        cfg.path(),
    );
    assert_eq!(o.status.code(), Some(1));
}

fn http(port: u16, path: &str, token: Option<&str>) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A control plane on its own embedded store (no agent, no Docker): `/healthz` keeps its body
/// and names the version in a header; a 401 says how to get a token; `berth version` shows the
/// server's version; list commands take `-o wide`.
#[test]
fn server_version_header_and_401_hint() {
    let data = tempfile::tempdir().unwrap();
    let cfg = tempfile::tempdir().unwrap();
    let port = free_port();
    let api = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["server", "--data-dir"])
        .arg(data.path())
        .args(["--api", &api])
        .env("XDG_CONFIG_HOME", cfg.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let resp = loop {
        if let Some(r) = http(port, "/healthz", None).filter(|r| r.contains("\r\n\r\n")) {
            break r;
        }
        assert!(Instant::now() < deadline, "berth server did not answer");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("x-berth-version: {}", env!("CARGO_PKG_VERSION"))),
        "{head}"
    );
    assert!(body == "ok\n" || body.ends_with("\r\nok\n\r\n0\r\n\r\n") || body.contains("ok\n"));
    assert!(
        !body.contains("version"),
        "the body stays exactly ok: {body:?}"
    );

    let ep = format!("http://{api}");
    let o = berth(&["version", "--endpoint", &ep], cfg.path());
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains(&format!(
            "server:       {} at {ep}",
            env!("CARGO_PKG_VERSION")
        )),
        "{s}"
    );

    let o = berth(
        &[
            "get",
            "services",
            "--endpoint",
            &ep,
            "--token",
            "not-a-token",
        ],
        cfg.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("berth auth token"),
        "a 401 says how to get a token: {e}"
    );
    assert!(e.contains("config.json"), "and names the config file: {e}");
    let _ = child.kill();
    let _ = child.wait();
}
