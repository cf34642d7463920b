//! Store failures are loud (issue 15): an embedded store that hits an I/O error (ENOSPC on a
//! tiny tmpfs) reports it on `/healthz` and makes `berth up` exit non-zero with what to do;
//! after space is freed a restart replays the log with every acknowledged write. A torn record
//! at the log's tail (a crash mid-append) is dropped on open, nothing acknowledged is lost.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use berth::store::embedded::EmbeddedStore;
use berth::store::{DynStore, Store};
use common::berth::*;
use common::manifests::*;

/// A tmpfs of `size` mounted on a fresh temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("berth-tmpfs-")
            .tempdir()
            .unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mounting a tmpfs needs root (CAP_SYS_ADMIN): these fault-injection tests fill a disk"
        );
        Tmpfs { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    /// Fill the file system; returns the filler's path.
    fn fill(&self) -> PathBuf {
        let f = self.path().join("filler");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", f.display()))
            .output();
        f
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn healthz(addr: std::net::SocketAddr) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test]
async fn enospc_fails_the_store_and_healthz_says_so() {
    let fs = Tmpfs::mount("2m");
    let dir = fs.path().join("store");
    let store: DynStore = Arc::new(EmbeddedStore::open(&dir).unwrap());
    store.put("/berth/a", b"kept".to_vec()).await.unwrap();
    let state = berth::api::ApiState {
        store: store.clone(),
        registry: Default::default(),
        leadership: Default::default(),
        secrets: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(berth::api::serve(listener, state, stop.clone()));
    assert_eq!(healthz(addr).await, (200, "ok\n".to_string()));
    assert!(store.failure().is_none());

    let filler = fs.fill();
    let mut failed = None;
    for i in 0..200 {
        if let Err(e) = store.put(&format!("/berth/f{i}"), vec![7; 8 * 1024]).await {
            failed = Some(e);
            break;
        }
    }
    let err = failed.expect("a write on a full disk fails");
    assert!(err.to_string().contains("I/O"), "{err}");
    let why = store.failure().expect("the store reports that it failed");
    assert!(
        why.contains("No space left") || why.contains("space"),
        "{why}"
    );
    let (status, body) = healthz(addr).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store failed"), "{body}");

    // Space freed: this process stays failed (the log may hold a partial record) …
    std::fs::remove_file(filler).unwrap();
    assert!(store.put("/berth/b", b"x".to_vec()).await.is_err());
    stop.cancel();
    let _ = server.await;
    // … and a restart replays the log: every acknowledged write is there, writes work again.
    // (Opened from a copy: this process's failed store still holds the directory's lock.)
    let copy = tempfile::tempdir().unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(&dir)
        .arg(copy.path().join("store"))
        .status()
        .unwrap();
    assert!(st.success());
    let reopened = EmbeddedStore::open(copy.path().join("store")).unwrap();
    assert_eq!(
        reopened.get("/berth/a").await.unwrap().unwrap().value,
        b"kept"
    );
    reopened.put("/berth/b", b"x".to_vec()).await.unwrap();
}

#[tokio::test]
async fn a_torn_record_at_the_tail_is_dropped_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = EmbeddedStore::open(dir.path()).unwrap();
        for i in 0..50 {
            s.put(&format!("/berth/k{i:02}"), format!("v{i}").into_bytes())
                .await
                .unwrap();
        }
    }
    // A crash in the middle of an append leaves part of a record at the end of the newest log.
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    let newest = logs.last().expect("a write-ahead log").clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    let whole = bytes.len();
    // Half of a copy of the last record's frame: length and part of the body.
    let tail: Vec<u8> = bytes[whole.saturating_sub(40)..whole - 20].to_vec();
    bytes.extend_from_slice(&[0xff, 0, 0, 0]);
    bytes.extend_from_slice(&tail);
    std::fs::write(&newest, &bytes).unwrap();

    let s = EmbeddedStore::open(dir.path()).unwrap();
    for i in 0..50 {
        let kv = s.get(&format!("/berth/k{i:02}")).await.unwrap();
        assert_eq!(kv.unwrap().value, format!("v{i}").into_bytes());
    }
    s.put("/berth/after", b"ok".to_vec()).await.unwrap();
    drop(s);
    let s = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(s.get("/berth/after").await.unwrap().unwrap().value, b"ok");
}

#[test]
fn berth_up_exits_non_zero_when_its_store_cannot_write_and_a_restart_recovers() {
    let fs = Tmpfs::mount("3m");
    let data = fs.path().join("data");
    let mut b = Berth::up_with(None, vec!["--data-dir".into(), data.display().to_string()]);
    let name = unique("before");
    let dir = manifest_dir(&[("td.yaml", image_td(&name, IMAGE))]);
    b.apply(dir.path());
    let filler = fs.fill();
    // Writes now fail; the first failed write fails the store and the process must exit.
    let mut exited = None;
    for i in 0..60 {
        let d = manifest_dir(&[("td.yaml", image_td(&format!("{name}-{i}"), IMAGE))]);
        let _ = b.try_apply(d.path());
        if let Some(st) = b.wait_exit(Duration::from_millis(500)) {
            exited = Some(st);
            break;
        }
    }
    let st = exited.unwrap_or_else(|| {
        panic!(
            "berth up kept running on a failed store; log:\n{}",
            tail(&b.log(), 40)
        )
    });
    assert!(!st.success(), "exit status {st}");
    let log = b.log();
    assert!(
        log.contains("the store can no longer write"),
        "the reason is logged: {}",
        tail(&log, 30)
    );
    std::fs::remove_file(filler).unwrap();
    b.spawn();
    let td = b.get_json(&["taskdefinitions", &format!("{name}:1")]);
    assert_eq!(td["metadata"]["name"], format!("{name}:1"), "{td}");
    let after = unique("after");
    b.apply(manifest_dir(&[("td.yaml", image_td(&after, IMAGE))]).path());
}
