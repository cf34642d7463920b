//! Issue 16 item 9 (confirmed: the replay cache lived in one process): a signed write is
//! accepted once across every control plane and across restarts, and a write must sign its
//! body (`UNSIGNED-PAYLOAD` is refused for writes).

mod common;

use berth::auth::sigv4::{self, Credentials};
use common::berth::*;
use common::etcd::EtcdServer;
use serde_json::Value;

fn signed(
    port: u16,
    creds: &Credentials,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Vec<(String, String)> {
    let mut h = vec![("host".to_string(), format!("127.0.0.1:{port}"))];
    sigv4::sign(
        creds,
        "us-east-1",
        method,
        path,
        "",
        &mut h,
        body,
        chrono::Utc::now(),
    );
    h
}

fn keys(b: &Berth, name: &str) -> Credentials {
    let created: Value = serde_json::from_str(&b.cli_ok(&[
        "auth", "identity", "create", name, "--role", "admin", "-o", "json",
    ]))
    .unwrap();
    Credentials {
        access_key_id: created["accessKeyId"].as_str().unwrap().into(),
        secret_access_key: created["secretAccessKey"].as_str().unwrap().into(),
        session_token: None,
    }
}

#[test]
fn a_signed_write_is_used_once_on_every_control_plane_and_must_sign_its_body() {
    let etcd = EtcdServer::start();
    let a = Berth::up(Some(etcd.url()));
    let mut b = Berth::up(Some(etcd.url()));
    let creds = keys(&a, "ci");
    let path = "/v1/tasks/no-such-task/stop";
    let h = signed(a.port, &creds, "POST", path, Some(b""));
    let (first, _, body) = http_raw(a.port, "POST", path, &h, b"").unwrap();
    assert_ne!(first, 401, "the signed write is accepted once: {body}");
    // Captured and replayed against the other control plane: refused.
    let (again, _, body) = http_raw(b.port, "POST", path, &h, b"").unwrap();
    assert_eq!(again, 401, "{body}");
    assert!(body.contains("replay"), "{body}");
    // And against the same one after a restart.
    b.kill9();
    b.spawn();
    let (after, _, body) = http_raw(b.port, "POST", path, &h, b"").unwrap();
    assert_eq!(after, 401, "{body}");
    // A write that does not sign its body is refused; a read may.
    let unsigned = signed(a.port, &creds, "POST", path, None);
    let (s, _, body) = http_raw(a.port, "POST", path, &unsigned, b"").unwrap();
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("UNSIGNED-PAYLOAD"), "{body}");
    let read = signed(a.port, &creds, "GET", "/v1/services", None);
    let (s, _, body) = http_raw(a.port, "GET", "/v1/services", &read, b"").unwrap();
    assert_eq!(s, 200, "{body}");
}
