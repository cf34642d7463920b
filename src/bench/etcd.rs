//! A real single-member etcd server (the `etcd` binary, Debian `etcd-server`) on free
//! 127.0.0.1 ports with a temporary data dir, killed (SIGKILL) on drop: what `berth bench store`
//! measures and what the integration tests run against (tests/common/etcd.rs).
//!
//! ```ignore
//! let etcd = berth::bench::etcd::EtcdServer::start_async().await;
//! let store = berth::store::open(&etcd.url()).await?;
//! ```

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NAME: &str = "berth-test";
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct EtcdServer {
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// `$BERTH_ETCD_BIN`, else `etcd` from PATH.
pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_ETCD_BIN") {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
}

const NO_ETCD: &str = "the `etcd` binary is not on PATH; a real etcd server is needed \
     (Debian/Ubuntu: `apt-get install etcd-server`, or set BERTH_ETCD_BIN=/path/to/etcd)";

fn free_ports() -> (u16, u16) {
    // Hold both listeners at once so the two ports differ.
    let a = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

impl EtcdServer {
    /// Start a fresh server and wait until it reports healthy; panics when it cannot. Blocking;
    /// from async code prefer [`EtcdServer::start_async`].
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Start a fresh server and wait until it reports healthy. Blocking.
    pub fn try_start() -> anyhow::Result<Self> {
        anyhow::ensure!(etcd_binary().is_some(), NO_ETCD);
        let mut last_err = String::new();
        // A port picked here can be grabbed by someone else before etcd binds it: retry.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("berth-etcd-")
                .tempdir()
                .expect("create temp dir for etcd");
            let (client_port, peer_port) = free_ports();
            let mut server = EtcdServer {
                dir,
                client_port,
                peer_port,
                child: None,
            };
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) => last_err = e,
            }
        }
        anyhow::bail!("could not start etcd: {last_err}")
    }

    pub async fn start_async() -> Self {
        tokio::task::spawn_blocking(Self::start)
            .await
            .expect("etcd start task panicked")
    }

    /// Client endpoint, e.g. `http://127.0.0.1:23790`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint()]
    }

    /// Store URL for `berth::store::open` / `--store`.
    pub fn url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.client_port)
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL the server (like a crash) and reap it. The data dir is kept.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kill (if running) and start again on the same data dir and ports; waits until healthy.
    /// Blocking: from a multi-thread tokio test wrap it in `tokio::task::block_in_place`.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn_and_wait() {
            panic!("restarting etcd failed: {e}");
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("open etcd log: {e}"))?;
        let bin = etcd_binary().ok_or(NO_ETCD)?;
        let client_url = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&bin)
            .arg("--name")
            .arg(NAME)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("{NAME}={peer_url}"))
            .arg("--initial-cluster-token")
            .arg(NAME)
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.as_mut().unwrap().try_wait() {
                self.child = None;
                return Err(format!("etcd exited with {status}; log:\n{}", self.log()));
            }
            if healthy(self.client_port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "etcd not healthy after {START_TIMEOUT:?}; log:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// etcd's `/health` (on a client or metrics port) answers `{"health":"true"}` once the
/// member has a leader.
pub(crate) fn healthy(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
