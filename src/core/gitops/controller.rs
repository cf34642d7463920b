//! The source controller: keeps the store in line with a watched manifest folder.
//!
//! Level-triggered. Filesystem events (notify) on the folder, on the git `HEAD`, the refs and
//! `packed-refs`, and store events on the kinds a folder holds, only *trigger* a pass; every
//! pass re-reads the whole folder and compares it with the store:
//!
//! - the folder (its documents, or the HEAD commit) changed since the last apply → apply the
//!   whole set atomically ([`crate::apply::apply_source`]), prune if asked, record the result;
//! - otherwise compare (a dry run): objects changed outside the folder are reported OutOfSync,
//!   or put back with `self_heal`;
//! - a folder that does not read or validate is reported with file, document, field and line,
//!   and nothing is applied: the last good state keeps running.
//!
//! A periodic resync covers lost events; failures are retried with back-off.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::git::{self, GitRepo};
use super::record::{self, SourceRecord, SourceSpec};
use super::scan::{self, Scan};
use crate::apply::{self, ApplyError, SourceApplyOptions};
use crate::manifest::ManifestError;
use crate::model::{keys, Kind};
use crate::runtime::WatcherEvent;
use crate::store::{DynStore, KeyValue};

/// `berth up|server --manifests DIR [--prune] [--self-heal]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    pub dir: PathBuf,
    /// The source's name (default: the folder's base name and a short hash of its path; a
    /// folder already recorded under its plain base name keeps that).
    pub name: Option<String>,
    pub prune: bool,
    pub self_heal: bool,
    /// Take over objects another source owns (otherwise the sync is refused and reported).
    pub take_over: bool,
    /// The control plane's data key, which seals the folder's Secrets.
    pub secrets: Option<Arc<crate::auth::secrets_key::SecretsKey>>,
}

impl SourceConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SourceConfig {
            dir: dir.into(),
            name: None,
            prune: false,
            self_heal: false,
            take_over: false,
            secrets: None,
        }
    }

    /// From the command-line flags (None without `--manifests`).
    pub fn from_flags(dir: Option<&PathBuf>, prune: bool, self_heal: bool) -> Option<Self> {
        dir.map(|d| SourceConfig {
            prune,
            self_heal,
            ..SourceConfig::new(d)
        })
    }
}

/// How quickly the controller reacts.
#[derive(Debug, Clone)]
pub struct Timing {
    /// After a filesystem event, wait until the folder has been quiet this long…
    pub quiet: Duration,
    /// …but never longer than this.
    pub max_delay: Duration,
    /// After a store change to an object of the kinds a folder holds.
    pub drift_delay: Duration,
    /// A full pass at least this often (lost events, a folder that was replaced).
    pub resync: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// A plain folder (or a work tree with no commit) prunes only from content that read the
    /// same for at least this long: a file emptied or truncated for a moment (an editor saving,
    /// a copy in progress) must not drain a service.
    pub prune_settle: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            quiet: Duration::from_millis(25),
            max_delay: Duration::from_millis(250),
            drift_delay: Duration::from_millis(200),
            resync: Duration::from_secs(30),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            prune_settle: Duration::from_secs(2),
        }
    }
}

struct SourceController {
    store: DynStore,
    dir: PathBuf,
    name: String,
    repo: Option<GitRepo>,
    prune: bool,
    self_heal: bool,
    take_over: bool,
    secrets: Option<Arc<crate::auth::secrets_key::SecretsKey>>,
    timing: Timing,
    /// (fingerprint, HEAD) of the folder as last applied successfully.
    last_applied: Option<(u64, Option<String>)>,
    /// The store revision of this controller's last transaction: its own writes are not
    /// drift.
    own_revision: Arc<AtomicI64>,
    /// The error set last logged, so a broken folder is logged once, not every retry.
    last_logged: Option<Vec<ManifestError>>,
    /// The folder's content (fingerprint) as last read, and since when it has read so.
    stable: Option<(u64, Instant)>,
    /// A pass sooner than the resync (a prune waiting for the folder to settle).
    next_pass: Option<Duration>,
}

/// Start the source controller. Returns its task and a signal that fires once the first pass
/// (read, validate, apply) is done — successful or not.
pub async fn start(
    store: DynStore,
    cfg: SourceConfig,
    timing: Timing,
    shutdown: CancellationToken,
) -> anyhow::Result<(JoinHandle<()>, oneshot::Receiver<()>)> {
    let dir = std::fs::canonicalize(&cfg.dir)
        .map_err(|e| anyhow::anyhow!("--manifests {}: {e}", cfg.dir.display()))?;
    anyhow::ensure!(
        dir.is_dir(),
        "--manifests {}: not a directory",
        cfg.dir.display()
    );
    let name = match &cfg.name {
        Some(n) => n.clone(),
        None => default_name(&store, &dir).await,
    };
    apply::validate_source_name(&name).map_err(|e| anyhow::anyhow!(e))?;
    let d = dir.clone();
    let repo = match tokio::task::spawn_blocking(move || git::detect(&d)).await? {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "git refuses this folder; watching it as a plain folder");
            None
        }
    };
    tracing::info!(
        source = %name,
        dir = %dir.display(),
        git = repo.is_some(),
        prune = cfg.prune,
        self_heal = cfg.self_heal,
        "watching manifests"
    );
    let ctl = SourceController {
        store,
        dir,
        name,
        repo,
        prune: cfg.prune,
        self_heal: cfg.self_heal,
        take_over: cfg.take_over,
        secrets: cfg.secrets.clone(),
        timing,
        last_applied: None,
        own_revision: Arc::new(AtomicI64::new(0)),
        last_logged: None,
        stable: None,
        next_pass: None,
    };
    let (tx, rx) = oneshot::channel();
    Ok((tokio::spawn(ctl.run(shutdown, tx)), rx))
}

/// The default name of the source watching `dir`: unique per folder
/// ([`apply::default_source_name`]), except that a folder recorded under its plain base name
/// (berth before names were made unique) keeps that name and so its objects.
async fn default_name(store: &DynStore, dir: &Path) -> String {
    let legacy = apply::legacy_source_name(dir);
    if let Ok(Some(kv)) = store.get(&record::source_key(&legacy)).await {
        if let Ok(r) = SourceRecord::from_kv(&kv) {
            if r.spec.kind != "apply" && Path::new(&r.spec.path) == dir {
                return legacy;
            }
        }
    }
    apply::default_source_name(dir)
}

/// Whether a filesystem event can change what a pass reads.
fn relevant(ev: &notify::Event, dir: &Path, repo: Option<&GitRepo>) -> bool {
    match ev.kind {
        // Our own reads open files; only a finished write counts.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    ev.paths.is_empty() || ev.paths.iter().any(|p| path_relevant(p, dir, repo))
}

fn path_relevant(p: &Path, dir: &Path, repo: Option<&GitRepo>) -> bool {
    if let Some(g) = repo {
        for gd in [&g.git_dir, &g.common_dir] {
            if let Ok(rel) = p.strip_prefix(gd) {
                let s = rel.to_string_lossy();
                // HEAD moved (commit, checkout, reset, revert, pull) or a ref it names did.
                return !s.ends_with(".lock")
                    && (s == "HEAD" || s == "packed-refs" || s.starts_with("refs/"));
            }
        }
    }
    match p.strip_prefix(dir) {
        // Hidden files and folders (.git, editor swap files) are never read.
        Ok(rel) => !rel
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.')),
        Err(_) => true,
    }
}

/// The parts of an object a folder sets, hashed: a status-only write is not drift.
fn desired_hash(kv: &KeyValue) -> u64 {
    use std::hash::{Hash, Hasher};
    let v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap_or_default();
    let m = &v["metadata"];
    let projection = serde_json::json!([
        v["spec"],
        m["labels"],
        m["annotations"],
        m["deletionTimestamp"],
        v["status"]["status"],
    ]);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    projection.to_string().hash(&mut h);
    h.finish()
}

impl SourceController {
    fn spec(&self) -> SourceSpec {
        SourceSpec {
            kind: if self.repo.is_some() { "git" } else { "folder" }.into(),
            path: self.dir.display().to_string(),
            prune: self.prune,
            self_heal: self.self_heal,
        }
    }

    fn watch(&self, kick: Arc<Notify>) -> notify::Result<RecommendedWatcher> {
        let dir = self.dir.clone();
        let repo = self.repo.clone();
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            match res {
                Ok(ev) if !relevant(&ev, &dir, repo.as_ref()) => {}
                Ok(ev) => {
                    tracing::trace!(?ev, "manifest folder changed");
                    kick.notify_one();
                }
                // A lost event (queue overflow): rescan to be safe.
                Err(_) => kick.notify_one(),
            }
        })?;
        w.watch(&self.dir, RecursiveMode::Recursive)?;
        if let Some(g) = &self.repo {
            if !g.git_dir.starts_with(&self.dir) {
                w.watch(&g.git_dir, RecursiveMode::NonRecursive)?;
            }
            if g.common_dir != g.git_dir && !g.common_dir.starts_with(&self.dir) {
                w.watch(&g.common_dir, RecursiveMode::NonRecursive)?;
            }
            let refs = g.common_dir.join("refs");
            if !refs.starts_with(&self.dir) && refs.is_dir() {
                w.watch(&refs, RecursiveMode::Recursive)?;
            }
        }
        Ok(w)
    }

    /// Store changes to the kinds a folder holds (not status-only writes, not our own) kick a
    /// comparison.
    fn watch_store(&self, kick: Arc<Notify>, shutdown: CancellationToken) -> JoinHandle<()> {
        let streams: Vec<_> = Kind::APPLYABLE
            .iter()
            .map(|k| crate::runtime::watcher(self.store.clone(), keys::prefix(*k)))
            .collect();
        let own = self.own_revision.clone();
        tokio::spawn(async move {
            let mut events = futures::stream::select_all(streams);
            let mut seen: HashMap<String, u64> = HashMap::new();
            let mut lists = 0usize;
            loop {
                let ev = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    ev = events.next() => match ev { Some(ev) => ev, None => return },
                };
                let changed = match ev {
                    WatcherEvent::Restarted(kvs) => {
                        for kv in &kvs {
                            seen.insert(kv.key.clone(), desired_hash(kv));
                        }
                        lists += 1;
                        // The first listing of each prefix is the starting point, not a change.
                        lists > Kind::APPLYABLE.len()
                    }
                    WatcherEvent::Applied(kv) => {
                        let h = desired_hash(&kv);
                        let before = seen.insert(kv.key.clone(), h);
                        before != Some(h) && kv.mod_revision != own.load(Ordering::Relaxed)
                    }
                    WatcherEvent::Deleted(kv) => {
                        seen.remove(&kv.key);
                        kv.mod_revision != own.load(Ordering::Relaxed)
                    }
                };
                if changed {
                    kick.notify_one();
                }
            }
        })
    }

    async fn run(mut self, shutdown: CancellationToken, first: oneshot::Sender<()>) {
        let fs_kick = Arc::new(Notify::new());
        let store_kick = Arc::new(Notify::new());
        let store_watch = self.watch_store(store_kick.clone(), shutdown.clone());
        let mut watcher: Option<(RecommendedWatcher, Option<u64>)> = None;
        let mut first = Some(first);
        let mut failures = 0u32;
        loop {
            // (Re-)establish the folder watch when there is none or the folder was replaced.
            let ino = dir_inode(&self.dir);
            if watcher.as_ref().is_none_or(|(_, i)| *i != ino) && ino.is_some() {
                watcher = match self.watch(fs_kick.clone()) {
                    Ok(w) => Some((w, ino)),
                    Err(e) => {
                        tracing::warn!(dir = %self.dir.display(), error = %e, "cannot watch the manifest folder; relying on periodic rescans");
                        None
                    }
                };
            }
            self.next_pass = None;
            let ok = self.pass().await;
            if let Some(tx) = first.take() {
                let _ = tx.send(());
            }
            let wait = if ok {
                failures = 0;
                self.timing.resync
            } else {
                failures = failures.saturating_add(1);
                let d = self.timing.retry_min * 2u32.saturating_pow(failures.min(16) - 1);
                d.min(self.timing.retry_max)
            };
            let wait = if watcher.is_none() {
                wait.min(Duration::from_secs(2))
            } else {
                wait
            };
            let wait = self.next_pass.map_or(wait, |n| wait.min(n));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = fs_kick.notified() => {
                    debounce(&fs_kick, self.timing.quiet, self.timing.max_delay).await;
                }
                _ = store_kick.notified() => {
                    tokio::select! {
                        _ = tokio::time::sleep(self.timing.drift_delay) => {}
                        _ = fs_kick.notified() => {
                            debounce(&fs_kick, self.timing.quiet, self.timing.max_delay).await;
                        }
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
        store_watch.abort();
    }

    async fn load_record(&self) -> Option<SourceRecord> {
        match self.store.get(&record::source_key(&self.name)).await {
            Ok(Some(kv)) => match SourceRecord::from_kv(&kv) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(source = %self.name, error = %e, "unreadable source record; replacing it");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(source = %self.name, error = %e, "cannot read the source record");
                None
            }
        }
    }

    async fn write_record(&self, prev: Option<&SourceRecord>, next: &SourceRecord) {
        if !record::differs(prev, next) {
            return;
        }
        match self
            .store
            .put(&record::source_key(&self.name), record::encode(next))
            .await
        {
            Ok(rev) => self.own_revision.store(rev, Ordering::Relaxed),
            Err(e) => {
                tracing::warn!(source = %self.name, error = %e, "cannot write the source status")
            }
        }
    }

    fn log_failure(&mut self, errors: &[ManifestError]) {
        if self.last_logged.as_deref() == Some(errors) {
            return;
        }
        self.last_logged = Some(errors.to_vec());
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        tracing::error!(
            source = %self.name,
            "manifests not applied (the last good state stays):\n{}",
            lines.join("\n")
        );
    }

    /// One level-triggered pass. Returns false when it should be retried.
    async fn pass(&mut self) -> bool {
        let prev = self.load_record().await;
        let base = {
            let mut b = record::new_record(&self.name, self.spec());
            if let Some(p) = &prev {
                b.metadata.created_at = p.metadata.created_at;
            } else {
                b.metadata.created_at = Some(crate::model::now());
            }
            b
        };
        let (dir, repo, name) = (self.dir.clone(), self.repo.clone(), self.name.clone());
        let t0 = std::time::Instant::now();
        let scanned =
            tokio::task::spawn_blocking(move || scan::scan(&dir, repo.as_ref(), &name)).await;
        tracing::debug!(source = %self.name, ms = t0.elapsed().as_secs_f64() * 1e3, "scanned");
        let scan = match scanned {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                // Whatever comes next is a new attempt, even the last applied content again.
                self.last_applied = None;
                self.log_failure(&e.errors);
                let next = record::after_failure(prev.as_ref(), base, e.head, e.dirty, e.errors);
                self.write_record(prev.as_ref(), &next).await;
                return false;
            }
            Err(join) => {
                tracing::error!(error = %join, "manifest scan panicked");
                return false;
            }
        };
        let key = (scan.fingerprint, scan.head.clone());
        if self.stable.is_none_or(|(f, _)| f != scan.fingerprint) {
            self.stable = Some((scan.fingerprint, Instant::now()));
        }
        let new_content = self.last_applied.as_ref() != Some(&key);
        if new_content || self.self_heal {
            self.sync(prev, base, scan, key, new_content).await
        } else {
            self.compare(prev, base, scan).await
        }
    }

    async fn sync(
        &mut self,
        prev: Option<SourceRecord>,
        base: SourceRecord,
        scan: Scan,
        key: (u64, Option<String>),
        new_content: bool,
    ) -> bool {
        // Never prune from content that may be half written: a commit's tree is whole, but
        // only while HEAD stayed put during the read; a plain folder must read the same for
        // `prune_settle` first.
        let settle_left = match (scan.from_commit, self.stable) {
            (true, _) if scan.settled => Duration::ZERO,
            (true, _) => self.timing.quiet,
            (false, Some((_, since))) => self.timing.prune_settle.saturating_sub(since.elapsed()),
            (false, None) => self.timing.prune_settle,
        };
        let prune_now = self.prune && settle_left.is_zero();
        let opts = SourceApplyOptions {
            dry_run: false,
            prune: prune_now,
            take_over: self.take_over,
            secrets: self.secrets.clone(),
        };
        let status_key = record::source_key(&self.name);
        let (head, dirty) = (scan.head.clone(), scan.dirty);
        let waits = self.prune && !prune_now;
        let settle = self.timing.prune_settle;
        let status = |report: &apply::SourceReport| {
            // Withheld, not switched off: say so.
            let mut shown = std::borrow::Cow::Borrowed(report);
            if waits {
                for e in &mut shown.to_mut().extraneous {
                    e.reason = format!(
                        "not in the manifests any more; pruned once the folder has read the same for {}s",
                        settle.as_secs_f64()
                    );
                }
            }
            let next = record::after_apply(
                prev.as_ref(),
                base.clone(),
                head.clone(),
                dirty,
                &shown,
                new_content,
            );
            record::differs(prev.as_ref(), &next)
                .then(|| (status_key.clone(), record::encode(&next)))
        };
        let started = std::time::Instant::now();
        match apply::apply_source(&*self.store, &self.name, &scan.docs, &opts, &status).await {
            Ok(report) => {
                if let Some(rev) = report.committed {
                    self.own_revision.store(rev, Ordering::Relaxed);
                }
                if self.prune && !prune_now && !report.extraneous.is_empty() {
                    // Prune later, if the folder still reads the same then.
                    tracing::info!(
                        source = %self.name,
                        extraneous = report.extraneous.len(),
                        wait_ms = settle_left.as_millis() as u64,
                        "the folder changed a moment ago; pruning waits until it settles"
                    );
                    self.next_pass = Some(settle_left + Duration::from_millis(10));
                    self.last_applied = None;
                } else {
                    self.last_applied = Some(key);
                }
                self.last_logged = None;
                let changes = report.changes();
                if changes > 0 || new_content {
                    for r in report
                        .results
                        .iter()
                        .filter(|r| r.outcome != apply::Outcome::Unchanged)
                    {
                        tracing::info!(source = %self.name, object = %r, "applied");
                    }
                    tracing::info!(
                        source = %self.name,
                        commit = scan.head.as_deref().map(git::short).unwrap_or("-"),
                        dirty = scan.dirty,
                        objects = scan.docs.len(),
                        changes,
                        extraneous = report.extraneous.len(),
                        ms = started.elapsed().as_secs_f64() * 1e3,
                        "synced"
                    );
                }
                true
            }
            Err(e) => {
                let errors = match &e {
                    ApplyError::Invalid(errs) | ApplyError::Owned(errs) => errs.clone(),
                    other => vec![ManifestError::new("(store)", other.to_string())],
                };
                self.last_applied = None;
                self.log_failure(&errors);
                let next =
                    record::after_failure(prev.as_ref(), base, scan.head, scan.dirty, errors);
                self.write_record(prev.as_ref(), &next).await;
                false
            }
        }
    }

    async fn compare(
        &mut self,
        prev: Option<SourceRecord>,
        base: SourceRecord,
        scan: Scan,
    ) -> bool {
        let opts = SourceApplyOptions {
            dry_run: true,
            prune: self.prune,
            take_over: self.take_over,
            secrets: self.secrets.clone(),
        };
        let none = |_: &apply::SourceReport| None;
        match apply::apply_source(&*self.store, &self.name, &scan.docs, &opts, &none).await {
            Ok(report) => {
                let next =
                    record::after_compare(prev.as_ref(), base, scan.head, scan.dirty, &report);
                if next.status.sync != prev.as_ref().map(|p| p.status.sync.as_str()).unwrap_or("") {
                    tracing::info!(source = %self.name, sync = %next.status.sync, "{}", next.status.message);
                }
                self.write_record(prev.as_ref(), &next).await;
                true
            }
            Err(e) => {
                let msg = format!("cannot compare the manifests with the store: {e}");
                let next =
                    record::after_compare_error(prev.as_ref(), base, scan.head, scan.dirty, msg);
                self.write_record(prev.as_ref(), &next).await;
                // A store-side obstacle (e.g. a service still being deleted) clears by itself.
                false
            }
        }
    }
}

/// Wait until `kick` has been quiet for `quiet`, at most `max` in all.
async fn debounce(kick: &Notify, quiet: Duration, max: Duration) {
    let end = Instant::now() + max;
    loop {
        let until = (Instant::now() + quiet).min(end);
        tokio::select! {
            _ = kick.notified() => {
                if Instant::now() >= end {
                    return;
                }
            }
            _ = tokio::time::sleep_until(until) => return,
        }
    }
}

fn dir_inode(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind};

    fn ev(kind: EventKind, p: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from(p))
    }

    #[test]
    fn only_relevant_paths_trigger() {
        let dir = Path::new("/r/manifests");
        let repo = GitRepo {
            toplevel: "/r".into(),
            git_dir: "/r/.git".into(),
            common_dir: "/r/.git".into(),
        };
        let modify = EventKind::Modify(ModifyKind::Any);
        let yes = |p: &str| relevant(&ev(modify, p), dir, Some(&repo));
        assert!(yes("/r/manifests/web.yaml"));
        assert!(yes("/r/manifests/sub/new.json"));
        assert!(!yes("/r/manifests/.web.yaml.swp"));
        assert!(yes("/r/.git/HEAD"));
        assert!(yes("/r/.git/refs/heads/main"));
        assert!(yes("/r/.git/packed-refs"));
        assert!(!yes("/r/.git/refs/heads/main.lock"));
        assert!(!yes("/r/.git/index"));
        assert!(!yes("/r/.git/objects/ab/cdef"));
        assert!(!yes("/r/.git/logs/HEAD"));
        // Reads (ours included) never trigger; a finished write does.
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        assert!(!relevant(
            &ev(open, "/r/manifests/web.yaml"),
            dir,
            Some(&repo)
        ));
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert!(relevant(
            &ev(closed, "/r/manifests/web.yaml"),
            dir,
            Some(&repo)
        ));
        let create = EventKind::Create(CreateKind::File);
        assert!(relevant(&ev(create, "/r/manifests/x.yaml"), dir, None));
    }

    #[test]
    fn status_only_writes_are_not_drift() {
        let kv = |v: serde_json::Value| KeyValue {
            key: "/berth/services/web".into(),
            value: serde_json::to_vec(&v).unwrap(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: 0,
        };
        let a = kv(
            serde_json::json!({"metadata": {"name": "web"}, "spec": {"desiredCount": 2}, "status": {"runningCount": 1}}),
        );
        let b = kv(
            serde_json::json!({"metadata": {"name": "web"}, "spec": {"desiredCount": 2}, "status": {"runningCount": 2}}),
        );
        let c = kv(
            serde_json::json!({"metadata": {"name": "web"}, "spec": {"desiredCount": 3}, "status": {"runningCount": 2}}),
        );
        assert_eq!(desired_hash(&a), desired_hash(&b));
        assert_ne!(desired_hash(&a), desired_hash(&c));
    }

    #[tokio::test]
    async fn a_folder_recorded_under_its_base_name_keeps_it() {
        let d = tempfile::tempdir().unwrap();
        let store: DynStore =
            Arc::new(crate::store::embedded::EmbeddedStore::open(d.path().join("s")).unwrap());
        let dir = std::fs::canonicalize(d.path()).unwrap().join("manifests");
        std::fs::create_dir(&dir).unwrap();
        let fresh = default_name(&store, &dir).await;
        assert!(fresh.starts_with("manifests-"), "{fresh}");
        // Another folder's record under the plain name does not count…
        let spec = |path: &Path| SourceSpec {
            kind: "git".into(),
            path: path.display().to_string(),
            prune: true,
            self_heal: false,
        };
        let other = record::new_record("manifests", spec(Path::new("/elsewhere/manifests")));
        store
            .put(&record::source_key("manifests"), record::encode(&other))
            .await
            .unwrap();
        assert_eq!(default_name(&store, &dir).await, fresh);
        // …this folder's does: it keeps its name and so its objects.
        let mine = record::new_record("manifests", spec(&dir));
        store
            .put(&record::source_key("manifests"), record::encode(&mine))
            .await
            .unwrap();
        assert_eq!(default_name(&store, &dir).await, "manifests");
    }

    #[tokio::test(start_paused = true)]
    async fn debounce_waits_for_quiet_but_not_forever() {
        let n = Arc::new(Notify::new());
        let t0 = Instant::now();
        debounce(&n, Duration::from_millis(20), Duration::from_millis(200)).await;
        assert_eq!(t0.elapsed(), Duration::from_millis(20));
        // A steady stream of events is cut off at the maximum.
        let n2 = n.clone();
        let feeder = tokio::spawn(async move {
            loop {
                n2.notify_one();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let t0 = Instant::now();
        debounce(&n, Duration::from_millis(20), Duration::from_millis(200)).await;
        feeder.abort();
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(220),
            "{took:?}"
        );
    }
}
