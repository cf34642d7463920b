//! Defects an attacker would try against the real API (issue 16):
//! - item 1: authorization decides on the path the handler acts on — a Deny on `service/web`
//!   holds however the path spells `web`, and spellings that could make authorization and the
//!   router disagree (encoded slashes, dot segments) are refused;
//! - item 2: run-task cannot put a task in a service's group;
//! - item 8: the dashboard's `?token=` is exchanged for the session cookie and a redirect to the
//!   same URL without it (it stays out of browser history and proxy logs).

mod common;

use common::berth::*;
use serde_json::Value;

const ROLE: &str = r#"apiVersion: berth.dev/v1
kind: Role
metadata: {name: all-but-web}
spec:
  statements:
    - {effect: Allow, actions: ["berth:*"], resources: ["*"]}
    - {effect: Deny, actions: ["berth:*"], resources: ["service/web"]}
"#;

fn call(port: u16, token: &str, method: &str, path: &str) -> u16 {
    let auth = vec![("Authorization".to_string(), format!("Bearer {token}"))];
    http_raw(port, method, path, &auth, b"")
        .unwrap_or_else(|| panic!("{method} {path}: no answer"))
        .0
}

#[test]
fn an_explicit_deny_holds_for_every_spelling_of_the_path() {
    let b = Berth::up(None);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("role.yaml"), ROLE).unwrap();
    b.apply(dir.path());
    let created: Value = serde_json::from_str(&b.cli_ok(&[
        "auth",
        "identity",
        "create",
        "mallory",
        "--role",
        "all-but-web",
        "-o",
        "json",
    ]))
    .unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    let port = b.port;

    // The plain spelling is denied...
    assert_eq!(call(port, &token, "DELETE", "/v1/services/web"), 403);
    assert_eq!(call(port, &token, "GET", "/v1/services/web"), 403);
    // ...and so is every encoding of it (before the fix: classified as service/w%65b, allowed).
    for p in [
        "/v1/services/w%65b",
        "/v1/services/%77%65%62",
        "/v1/services/web/",
    ] {
        assert_eq!(call(port, &token, "DELETE", p), 403, "DELETE {p}");
    }
    // Spellings that could make authorization and the router disagree are refused outright.
    for p in [
        "/v1/services/a%2Fb",
        "/v1/services/a%2fweb",
        "/v1/services/..",
        "/v1/%2e%2e/v1/services/web",
        "/v1//services/web",
    ] {
        assert_eq!(call(port, &token, "DELETE", p), 400, "DELETE {p}");
    }
    // Another service is still allowed (the role is not simply broken).
    assert_eq!(call(port, &token, "GET", "/v1/services/other"), 404);
}

#[test]
fn run_task_cannot_join_a_service() {
    let b = Berth::up(None);
    let token = b.token();
    let auth = vec![
        ("Authorization".to_string(), format!("Bearer {token}")),
        ("Content-Type".to_string(), "application/json".to_string()),
    ];
    let body = br#"{"taskDefinition": "web", "group": "service:web"}"#;
    let (status, _, text) = http_raw(b.port, "POST", "/v1/tasks", &auth, body).unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("reserved"), "{text}");
    let tasks = b.get_json(&["tasks"]);
    assert_eq!(tasks.as_array().map(Vec::len), Some(0), "{tasks}");
}

/// Item 7: the store's files hold the server key: private on disk, and a store whose files
/// others can read is refused with what to do.
#[test]
fn store_files_are_private_and_readable_ones_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = berth::store::embedded::EmbeddedStore::open(&data).unwrap();
        use berth::store::Store;
        s.put("/berth/x", b"secret".to_vec()).await.unwrap();
    });
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    let files: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("LOCK") && !p.to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(!files.is_empty());
    for f in &files {
        assert_eq!(mode(f) & 0o077, 0, "{} is mode {:o}", f.display(), mode(f));
    }
    std::fs::set_permissions(&files[0], std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = rt
        .block_on(async { berth::store::embedded::EmbeddedStore::open(&data).map(|_| ()) })
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("readable by other users"),
        "{err:#}"
    );
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

#[test]
fn the_dashboard_token_leaves_the_url_for_a_cookie() {
    let b = Berth::up(None);
    let token = b.token();
    let port = b.port;
    let get = |path: &str, headers: &[(String, String)]| {
        http_raw(port, "GET", path, headers, b"").unwrap_or_else(|| panic!("GET {path}: no answer"))
    };

    let (status, head, _) = get(&format!("/ui/?tab=tasks&token={token}&x=a%20b"), &[]);
    assert_eq!(status, 303, "{head}");
    assert!(!head.contains(&token), "the token is echoed back: {head}");
    let location = header(&head, "location").expect("a Location header");
    assert_eq!(location, "/ui/?tab=tasks&x=a%20b");
    let set_cookie = header(&head, "set-cookie").expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let pair = set_cookie.split(';').next().unwrap().to_string();
    assert!(pair.starts_with("berth_session="), "{pair}");

    // Following the redirect with the cookie works, for the page and its data.
    let cookie = vec![("Cookie".to_string(), pair)];
    let (status, head, body) = get(location, &cookie);
    assert_eq!(status, 200, "{head}");
    assert!(
        body.contains("<html") || body.contains("<!doctype"),
        "{body}"
    );
    let (status, head, _) = get("/ui/api/snapshot", &cookie);
    assert_eq!(status, 200, "{head}");

    // Only the token goes: no other parameter, no '?'.
    let (status, head, _) = get(&format!("/ui?token={token}"), &[]);
    assert_eq!(status, 303, "{head}");
    assert_eq!(header(&head, "location"), Some("/ui"));

    // A bad token is still refused, with no cookie.
    let (status, head, _) = get("/ui/?token=not-a-token", &[]);
    assert_eq!(status, 401, "{head}");
    assert!(header(&head, "set-cookie").is_none(), "{head}");
    // And without any credentials the page is refused.
    let (status, _, _) = get("/ui/", &[]);
    assert_eq!(status, 401);
}
