//! Issue 16 item 6, as an attacker would try it: a stranger's request is refused on its
//! headers, before its body is read (a 16 MiB body announced and never sent still gets its 401
//! at once), and connections beyond the server's cap are closed on arrival.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::berth::*;

fn read_status(s: &mut TcpStream) -> Option<u16> {
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn strangers_are_refused_before_their_body_is_read() {
    let b = Berth::up(None);
    for auth in ["", "Authorization: Bearer not-a-token\r\n", "Authorization: AWS4-HMAC-SHA256 Credential=AKIANOTAKEY0000000/20261202/us-east-1/ecs/aws4_request, SignedHeaders=host;x-amz-date, Signature=00\r\n"] {
        let mut s = TcpStream::connect(("127.0.0.1", b.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // 16 MiB announced; not one byte of it sent.
        write!(
            s,
            "POST /v1/apply HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            16 * 1024 * 1024
        )
        .unwrap();
        assert_eq!(
            read_status(&mut s),
            Some(401),
            "answered on the headers alone ({auth:?})"
        );
    }
    // A known caller's request is still read and handled.
    let (status, _, body) = http_raw(
        b.port,
        "GET",
        "/v1/services",
        &[("Authorization".into(), format!("Bearer {}", b.token()))],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
}

#[test]
fn connections_beyond_the_cap_are_closed() {
    let b = Berth::up_with_env(
        None,
        vec![],
        vec![("BERTH_API_MAX_CONNECTIONS".into(), "16".into())],
    );
    // 16 idle connections hold every slot.
    let idle: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(("127.0.0.1", b.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = TcpStream::connect(("127.0.0.1", b.port)).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    let n = extra.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a connection over the cap is closed, not served");
    // Slots come back as connections close.
    drop(idle);
    wait_for("the API serves again", Duration::from_secs(10), || {
        http_get_path(b.port, "/healthz")
            .filter(|r| r.contains(" 200 "))
            .map(|_| ())
    });
}
