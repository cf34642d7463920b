//! Container logs: the agent follows the stdout/stderr of every container it runs (bollard
//! `logs` with `follow`) into per-task files under its data dir, with bounded retention, and
//! serves them over a small HTTP endpoint advertised on its ContainerInstance record (the
//! annotation [`LOGS_ENDPOINT_ANNOTATION`]). The API proxies `GET /v1/tasks/{id}/logs` to it,
//! so logs never pass through the store.
//!
//! On disk: `<dataDir>/logs/<taskId>/<container>.log` (and one rotated `.log.1`), one line per
//! log line: `<RFC 3339 timestamp> <o|e> <message>`. A task's files are capped at
//! [`LogConfig::max_bytes_per_task`] (each of its N containers rotates its file at a 2N-th of it,
//! keeping one rotated file); a task's folder is removed
//! [`LogConfig::retention`] after its last container stopped (ECS keeps stopped tasks about an
//! hour).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bollard::container::LogOutput;
use bollard::query_parameters::{EventsOptions, ListContainersOptions, LogsOptionsBuilder};
use bollard::Docker;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::docker::{LABEL_CONTAINER, LABEL_INSTANCE, LABEL_TASK};
use crate::model::{keys, ContainerInstance, Kind};
use crate::objects::{self, ObjectError};
use crate::store::DynStore;

pub use crate::model::LOGS_ENDPOINT_ANNOTATION;

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub dir: PathBuf,
    pub max_bytes_per_task: u64,
    pub retention: Duration,
}

impl LogConfig {
    pub fn new(dir: PathBuf) -> Self {
        LogConfig {
            dir,
            max_bytes_per_task: 16 << 20,
            retention: Duration::from_secs(3600),
        }
    }
}

/// The agent's log files and who is writing them.
pub struct LogStore {
    cfg: LogConfig,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Container ids being followed.
    following: HashSet<String>,
    /// Writers per task.
    writers: HashMap<String, usize>,
    /// Woken on every append (and when a writer ends) so followers need not poll.
    notify: HashMap<String, Arc<Notify>>,
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && s != "."
        && s != ".."
}

impl LogStore {
    pub fn new(cfg: LogConfig) -> Arc<Self> {
        Arc::new(LogStore {
            cfg,
            inner: Mutex::new(Inner::default()),
        })
    }

    pub fn task_dir(&self, task: &str) -> Option<PathBuf> {
        valid_segment(task).then(|| self.cfg.dir.join(task))
    }

    fn notify(&self, task: &str) -> Arc<Notify> {
        self.inner
            .lock()
            .unwrap()
            .notify
            .entry(task.to_string())
            .or_default()
            .clone()
    }

    pub fn writing(&self, task: &str) -> bool {
        self.inner
            .lock()
            .unwrap()
            .writers
            .get(task)
            .is_some_and(|n| *n > 0)
    }

    /// Claim a container for following; false if someone already follows it.
    fn claim(&self, id: &str, task: &str) -> bool {
        let mut i = self.inner.lock().unwrap();
        if !i.following.insert(id.to_string()) {
            return false;
        }
        *i.writers.entry(task.to_string()).or_default() += 1;
        true
    }

    fn release(&self, id: &str, task: &str) {
        let n = {
            let mut i = self.inner.lock().unwrap();
            i.following.remove(id);
            let n = i.writers.entry(task.to_string()).or_default();
            *n = n.saturating_sub(1);
            let left = *n;
            if left == 0 {
                i.writers.remove(task);
            }
            i.notify.get(task).cloned()
        };
        if let Some(n) = n {
            n.notify_waiters();
        }
    }

    /// Remove task folders nobody writes to whose newest file is older than the retention.
    pub fn sweep(&self) {
        let Ok(rd) = std::fs::read_dir(&self.cfg.dir) else {
            return;
        };
        let now = SystemTime::now();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if self.writing(&name) {
                continue;
            }
            let newest = std::fs::read_dir(e.path())
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|f| f.metadata().ok()?.modified().ok())
                .max()
                .or_else(|| e.metadata().ok()?.modified().ok());
            let old = newest
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > self.cfg.retention);
            if old {
                let _ = std::fs::remove_dir_all(e.path());
                self.inner.lock().unwrap().notify.remove(&name);
            }
        }
    }
}

/// The last timestamp written to a container's log file (to resume without duplicates).
fn last_timestamp(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        .rev()
        .find_map(|l| l.split_once(' ').map(|(ts, _)| ts.to_string()))
        .filter(|ts| DateTime::parse_from_rfc3339(ts).is_ok())
}

/// Follow one container's output into its file until the container stops.
async fn follow_container(
    docker: Docker,
    store: Arc<LogStore>,
    id: String,
    task: String,
    name: String,
) {
    let Some(dir) = store.task_dir(&task) else {
        return;
    };
    let name = if valid_segment(&name) {
        name
    } else {
        "container".into()
    };
    if !store.claim(&id, &task) {
        return;
    }
    let result: anyhow::Result<()> = async {
        tokio::fs::create_dir_all(&dir).await?;
        let path = dir.join(format!("{name}.log"));
        let resume = last_timestamp(&path);
        let since = resume
            .as_deref()
            .and_then(|ts| DateTime::parse_from_rfc3339(ts).ok())
            .map_or(0, |t| t.timestamp() as i32);
        let opts = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .since(since)
            .build();
        let mut stream = docker.logs(&id, Some(opts));
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await?;
        let mut size = file.metadata().await?.len();
        let notify = store.notify(&task);
        // The task's cap shared by its containers: each keeps a live and a rotated file.
        let containers = containers_in(&dir).len().max(1) as u64;
        let rotate_at = (store.cfg.max_bytes_per_task / (2 * containers)).max(4096);
        while let Some(item) = stream.next().await {
            let (tag, msg) = match item? {
                LogOutput::StdOut { message } | LogOutput::Console { message } => ('o', message),
                LogOutput::StdErr { message } => ('e', message),
                LogOutput::StdIn { .. } => continue,
            };
            let text = String::from_utf8_lossy(&msg);
            let mut out = String::with_capacity(text.len() + 4);
            for line in text.split_inclusive('\n') {
                let line = line.strip_suffix('\n').unwrap_or(line);
                let (ts, body) = line.split_once(' ').unwrap_or((line, ""));
                if DateTime::parse_from_rfc3339(ts).is_err() {
                    continue;
                }
                // Resuming: Docker's `since` has one-second resolution; skip what we have.
                if resume.as_deref().is_some_and(|r| ts <= r) {
                    continue;
                }
                out.push_str(ts);
                out.push(' ');
                out.push(tag);
                out.push(' ');
                out.push_str(body.trim_end_matches('\r'));
                out.push('\n');
            }
            if out.is_empty() {
                continue;
            }
            if size + out.len() as u64 > rotate_at {
                file.flush().await?;
                let _ = tokio::fs::rename(&path, dir.join(format!("{name}.log.1"))).await;
                file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .await?;
                size = 0;
            }
            file.write_all(out.as_bytes()).await?;
            // tokio's File writes in the background: wait for it before telling followers.
            file.flush().await?;
            size += out.len() as u64;
            notify.notify_waiters();
        }
        file.flush().await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(container = %id, error = %format!("{e:#}"), "log follow ended");
    }
    store.release(&id, &task);
}

/// Containers of this instance that run now: (id, task, container name).
async fn running(docker: &Docker, instance: &str) -> Vec<(String, String, String)> {
    let mut filters = HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![format!("{LABEL_INSTANCE}={instance}")],
    );
    filters.insert("status".to_string(), vec!["running".to_string()]);
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: false,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .unwrap_or_default();
    list.into_iter()
        .filter_map(|c| {
            let l = c.labels.unwrap_or_default();
            Some((
                c.id?,
                l.get(LABEL_TASK)?.clone(),
                l.get(LABEL_CONTAINER).cloned().unwrap_or_default(),
            ))
        })
        .collect()
}

/// Start a follower for every container of this instance as it starts (Docker events), with a
/// periodic rescan for anything missed.
async fn collect(docker: Docker, store: Arc<LogStore>, instance: String, stop: CancellationToken) {
    let start_all = |docker: Docker, store: Arc<LogStore>, instance: String| async move {
        for (id, task, name) in running(&docker, &instance).await {
            tokio::spawn(follow_container(
                docker.clone(),
                store.clone(),
                id,
                task,
                name,
            ));
        }
    };
    loop {
        let mut filters = HashMap::new();
        filters.insert("type".to_string(), vec!["container".to_string()]);
        filters.insert("event".to_string(), vec!["start".to_string()]);
        filters.insert(
            "label".to_string(),
            vec![format!("{LABEL_INSTANCE}={instance}")],
        );
        let mut events = docker.events(Some(EventsOptions {
            filters: Some(filters),
            ..Default::default()
        }));
        start_all(docker.clone(), store.clone(), instance.clone()).await;
        let mut rescan = tokio::time::interval(Duration::from_secs(15));
        rescan.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = rescan.tick() => {
                    start_all(docker.clone(), store.clone(), instance.clone()).await;
                    store.sweep();
                }
                ev = events.next() => match ev {
                    Some(Ok(ev)) => {
                        let Some(actor) = ev.actor else { continue };
                        let attrs = actor.attributes.unwrap_or_default();
                        let (Some(id), Some(task)) = (actor.id, attrs.get(LABEL_TASK)) else {
                            continue;
                        };
                        let name = attrs.get(LABEL_CONTAINER).cloned().unwrap_or_default();
                        tokio::spawn(follow_container(
                            docker.clone(),
                            store.clone(),
                            id,
                            task.clone(),
                            name,
                        ));
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "docker events (logs) failed; reconnecting");
                        break;
                    }
                    None => break,
                },
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

// ----- reading and serving ---------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct LogQuery {
    pub container: Option<String>,
    #[serde(default)]
    pub follow: Option<String>,
    /// RFC 3339 time or a duration back from now (`5m`).
    pub since: Option<String>,
    #[serde(default)]
    pub timestamps: Option<String>,
    /// Only the last N lines of history.
    pub tail: Option<usize>,
}

fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("1" | "true" | "yes" | ""))
}

pub fn parse_since(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let secs = crate::model::scaling::parse_seconds(s).ok()?;
    Some(Utc::now() - chrono::Duration::milliseconds((secs * 1000.0) as i64))
}

/// One parsed line of a log file.
struct Line {
    ts: String,
    container: String,
    text: String,
}

fn parse_line(container: &str, raw: &str) -> Option<Line> {
    let (ts, rest) = raw.split_once(' ')?;
    let (_tag, text) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(Line {
        ts: ts.to_string(),
        container: container.to_string(),
        text: text.to_string(),
    })
}

/// The container names that have logs in a task folder.
fn containers_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".log")
                .map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

struct Formatter {
    prefix: bool,
    timestamps: bool,
    since: Option<String>,
}

impl Formatter {
    fn keep(&self, l: &Line) -> bool {
        self.since.as_deref().is_none_or(|s| l.ts.as_str() >= s)
    }
    fn format(&self, l: &Line, out: &mut String) {
        if self.timestamps {
            out.push_str(&l.ts);
            out.push(' ');
        }
        if self.prefix {
            out.push('[');
            out.push_str(&l.container);
            out.push_str("] ");
        }
        out.push_str(&l.text);
        out.push('\n');
    }
}

/// Read a file from `offset`; returns complete lines and the new offset.
fn read_from(path: &Path, offset: u64) -> (Vec<String>, u64) {
    let Ok(mut f) = std::fs::File::open(path) else {
        return (vec![], offset);
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    // Rotated underneath us: start over in the new file.
    let offset = if len < offset { 0 } else { offset };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return (vec![], offset);
    }
    let mut r = std::io::BufReader::new(f);
    let mut lines = Vec::new();
    let mut pos = offset;
    loop {
        let mut buf = Vec::new();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if buf.last() != Some(&b'\n') {
                    break; // a partial line: read it next time
                }
                pos += n as u64;
                buf.pop();
                lines.push(String::from_utf8_lossy(&buf).into_owned());
            }
            Err(_) => break,
        }
    }
    (lines, pos)
}

/// Stream a task's logs into `tx`: history first (merged by time), then, when following, new
/// lines as they are written, until the task's containers have all stopped.
async fn stream_logs(
    store: Arc<LogStore>,
    task: String,
    q: LogQuery,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let Some(dir) = store.task_dir(&task) else {
        return;
    };
    let follow = truthy(&q.follow);
    let since = q
        .since
        .as_deref()
        .and_then(parse_since)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
    let notify = store.notify(&task);
    let mut offsets: HashMap<String, u64> = HashMap::new();
    let mut first = true;
    loop {
        let notified = notify.notified();
        let mut names = containers_in(&dir);
        if let Some(c) = &q.container {
            names.retain(|n| n == c);
        }
        let fmt = Formatter {
            prefix: q.container.is_none() && containers_in(&dir).len() > 1,
            timestamps: truthy(&q.timestamps),
            since: since.clone(),
        };
        let mut lines: Vec<Line> = Vec::new();
        for n in &names {
            let path = dir.join(format!("{n}.log"));
            if first {
                let (old, _) = read_from(&dir.join(format!("{n}.log.1")), 0);
                lines.extend(old.iter().filter_map(|l| parse_line(n, l)));
            }
            let off = offsets.get(n).copied().unwrap_or(0);
            let (new, pos) = read_from(&path, off);
            offsets.insert(n.clone(), pos);
            lines.extend(new.iter().filter_map(|l| parse_line(n, l)));
        }
        lines.retain(|l| fmt.keep(l));
        lines.sort_by(|a, b| a.ts.cmp(&b.ts));
        if first {
            if let Some(t) = q.tail {
                let skip = lines.len().saturating_sub(t);
                lines.drain(..skip);
            }
        }
        first = false;
        if !lines.is_empty() {
            let mut out = String::new();
            for l in &lines {
                fmt.format(l, &mut out);
            }
            if tx.send(Ok(Bytes::from(out))).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        let done = !store.writing(&task) && !names.is_empty();
        if done {
            // One more read after the last writer finished, then stop.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut tail = String::new();
            for n in &names {
                let off = offsets.get(n).copied().unwrap_or(0);
                let (new, _) = read_from(&dir.join(format!("{n}.log")), off);
                for l in new.iter().filter_map(|l| parse_line(n, l)) {
                    if fmt.keep(&l) {
                        fmt.format(&l, &mut tail);
                    }
                }
            }
            if !tail.is_empty() {
                let _ = tx.send(Ok(Bytes::from(tail))).await;
            }
            return;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = tx.closed() => return,
        }
    }
}

async fn get_logs(
    State(store): State<Arc<LogStore>>,
    UrlPath(task): UrlPath<String>,
    Query(q): Query<LogQuery>,
) -> Response {
    let Some(dir) = store.task_dir(&task) else {
        return (StatusCode::BAD_REQUEST, "invalid task id\n").into_response();
    };
    if !dir.exists() && !truthy(&q.follow) {
        return (
            StatusCode::NOT_FOUND,
            format!("no logs for task {task} on this instance\n"),
        )
            .into_response();
    }
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(stream_logs(store, task, q, tx));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-content-type-options", "nosniff")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The log endpoint: `/logs/{task}` needs `Authorization: Bearer <secret>`, the secret this
/// agent published for the API server alone (no local user or host-network task reads logs).
pub fn router(store: Arc<LogStore>, secret: Arc<String>) -> Router {
    Router::new()
        .route("/logs/{task}", get(get_logs))
        .route_layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let secret = secret.clone();
                async move {
                    let given = req
                        .headers()
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .unwrap_or("");
                    if !crate::auth::crypto::ct_eq(given.as_bytes(), secret.as_bytes()) {
                        return (
                            StatusCode::UNAUTHORIZED,
                            "logs are served to the berth API only: use `berth logs TASK`\n",
                        )
                            .into_response();
                    }
                    next.run(req).await
                }
            },
        ))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(store)
}

/// A fresh secret for the log endpoint, published where only the API server reads it.
async fn publish_secret(store: &DynStore, instance: &str) -> anyhow::Result<String> {
    let secret = hex::encode(crate::auth::crypto::random_bytes::<32>());
    store
        .put(
            &crate::auth::identity::logs_secret_key(instance),
            secret.clone().into_bytes(),
        )
        .await?;
    Ok(secret)
}

/// Put the log endpoint on this instance's record (CAS, retried).
async fn advertise(store: &DynStore, instance: &str, endpoint: &str) -> anyhow::Result<()> {
    let key = keys::key(Kind::ContainerInstance, instance);
    for _ in 0..50 {
        let Some(mut inst): Option<ContainerInstance> = objects::get(&**store, &key).await? else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if inst
            .metadata
            .annotations
            .get(LOGS_ENDPOINT_ANNOTATION)
            .map(String::as_str)
            == Some(endpoint)
        {
            return Ok(());
        }
        inst.metadata
            .annotations
            .insert(LOGS_ENDPOINT_ANNOTATION.into(), endpoint.into());
        match objects::put_cas(&**store, &key, &inst).await {
            Ok(_) => return Ok(()),
            Err(ObjectError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("could not advertise the log endpoint: too many conflicts")
}

/// Run log collection, retention and the log endpoint until `shutdown`.
pub async fn run(
    store: DynStore,
    docker: Docker,
    instance: String,
    host_ip: String,
    addr: SocketAddr,
    cfg: LogConfig,
    shutdown: CancellationToken,
) {
    if let Err(e) = std::fs::create_dir_all(&cfg.dir) {
        tracing::warn!(dir = %cfg.dir.display(), error = %e, "cannot create the log folder; container logs are not collected");
        return;
    }
    let logs = LogStore::new(cfg);
    logs.sweep();
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot listen for log requests");
            return;
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    let host = if local.ip().is_unspecified() {
        host_ip
    } else {
        local.ip().to_string()
    };
    let endpoint = format!("http://{host}:{}", local.port());
    let secret = match publish_secret(&store, &instance).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot publish the log endpoint's secret; logs are not served");
            return;
        }
    };
    if let Err(e) = advertise(&store, &instance, &endpoint).await {
        tracing::warn!(error = %format!("{e:#}"), "log endpoint not advertised");
    }
    tracing::info!(%endpoint, "serving container logs");
    let server = {
        let app = router(logs.clone(), Arc::new(secret));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        })
    };
    collect(docker, logs, instance, shutdown).await;
    // Followers hold their connections open; do not wait for them.
    server.abort();
}
