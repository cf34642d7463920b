//! `berth bench gitops`: time from a change landing in a watched manifest folder — a commit
//! (`git merge --ff-only`, what a `git pull` does) in a git work tree, or a file renamed into a
//! plain folder — to the
//! store holding the new desired state. A small folder and a large one (task definitions: no
//! containers needed), on a node running the controllers with no agent and the embedded store.
//! Beside it: the default polling intervals of Argo CD and Flux.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::node::{self, NodeConfig};
use berth_core::gitops::SourceConfig;
use berth_core::model::keys;
use berth_core::store::{DynStore, WatchStream};

/// Argo CD's default `timeout.reconciliation` (its git polling interval).
const ARGO_CD_POLL: Duration = Duration::from_secs(180);
/// Flux's usual `GitRepository` `.spec.interval`.
const FLUX_POLL: Duration = Duration::from_secs(60);
/// How long one change may take before the bench gives up.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.invalid")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.invalid")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn manifest(family: &str, marker: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1\nkind: TaskDefinition\nmetadata: {{name: {family}}}\nspec:\n  containerDefinitions:\n    - name: main\n      image: local/busybox:1\n      command: [\"true\"]\n      memory: 16\n      environment: [{{name: MARK, value: \"{marker}\"}}]\n"
    )
}

fn family(i: usize) -> String {
    format!("bench-td-{i:04}")
}

struct Stats {
    commit: Vec<Duration>,
    git_own: Vec<Duration>,
    rename: Vec<Duration>,
    initial: Duration,
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Wait on the store's watch until a task definition of `family` carrying `marker` is stored.
async fn wait_stored(events: &mut WatchStream, family: &str, marker: &str) -> anyhow::Result<()> {
    let prefix = keys::taskdef_family_prefix(family);
    let needle = format!("\"value\":\"{marker}\"");
    let deadline = tokio::time::Instant::now() + CHANGE_TIMEOUT;
    loop {
        let batch = tokio::time::timeout_at(deadline, events.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!("{family} with {marker} was not stored in {CHANGE_TIMEOUT:?}")
            })?
            .ok_or_else(|| anyhow::anyhow!("store watch ended"))??;
        for ev in batch {
            if ev.kv.key.starts_with(&prefix)
                && ev
                    .kv
                    .value
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes())
            {
                return Ok(());
            }
        }
    }
}

/// A node on a fresh embedded store at `store_dir` watching `dir` (with prune), after its
/// initial sync of `n` task definitions: the node, a watch on task definitions from then on,
/// and how long the initial sync took.
async fn watch_folder(
    dir: &Path,
    store_dir: &Path,
    n: usize,
) -> anyhow::Result<(node::Node, WatchStream, Duration)> {
    let store: DynStore = Arc::new(berth_core::store::embedded::EmbeddedStore::open(store_dir)?);
    let mut src = SourceConfig::new(dir);
    src.prune = true;
    let t0 = Instant::now();
    let node = node::start(
        store.clone(),
        NodeConfig {
            api: None,
            controllers: true,
            agent: None,
            manifests: Some(src),
            control: Default::default(),
            secrets_key: None,
        },
    )
    .await?;
    let initial = t0.elapsed();
    let (stored, _) = store
        .range(&keys::prefix(berth_core::model::Kind::TaskDefinition))
        .await?;
    anyhow::ensure!(
        stored.len() == n,
        "the initial sync stored {} of {n} task definitions",
        stored.len()
    );
    let from = store.revision().await? + 1;
    let events = store
        .watch(&keys::prefix(berth_core::model::Kind::TaskDefinition), from)
        .await?;
    Ok((node, events, initial))
}

async fn scenario(n: usize, changes: u32) -> anyhow::Result<Stats> {
    let tmp = tempfile::Builder::new()
        .prefix("berth-bench-gitops-")
        .tempdir()?;
    let repo = tmp.path().join("repo");
    let dir = repo.join("manifests");
    let work = tmp.path().join("work");
    let staging = tmp.path().join("staging");
    std::fs::create_dir_all(&dir)?;
    std::fs::create_dir_all(&staging)?;
    git(&repo, &["init", "-q", "-b", "main"])?;
    for i in 0..n {
        std::fs::write(
            dir.join(format!("{}.yaml", family(i))),
            manifest(&family(i), "initial"),
        )?;
    }
    git(&repo, &["add", "-A"])?;
    git(&repo, &["commit", "-q", "-m", "initial"])?;
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            repo.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    )?;

    // The commits to land, prepared in another clone and fetched (objects only) beforehand.
    let mut commits = Vec::new();
    for c in 0..changes as usize {
        let i = (c * 7919) % n;
        let marker = format!("commit-{c}");
        std::fs::write(
            work.join("manifests").join(format!("{}.yaml", family(i))),
            manifest(&family(i), &marker),
        )?;
        git(&work, &["commit", "-q", "-am", &marker])?;
        commits.push((git(&work, &["rev-parse", "HEAD"])?, family(i), marker));
    }
    git(&repo, &["fetch", "-q", work.to_str().unwrap(), "main"])?;

    let (node, mut events, initial) = watch_folder(&dir, &tmp.path().join("store"), n).await?;
    let settle = || tokio::time::sleep(Duration::from_millis(80));
    settle().await;

    let mut stats = Stats {
        commit: vec![],
        git_own: vec![],
        rename: vec![],
        initial,
    };
    for (sha, fam, marker) in &commits {
        let t = Instant::now();
        git(&repo, &["merge", "-q", "--ff-only", sha])?;
        let git_done = t.elapsed();
        wait_stored(&mut events, fam, marker).await?;
        stats.commit.push(t.elapsed());
        stats.git_own.push(git_done);
        settle().await;
    }
    node.shutdown().await;

    // A file renamed into a plain folder (in a git work tree only commits count: berth applies
    // the HEAD commit, never files not committed yet).
    let plain = tmp.path().join("plain").join("manifests");
    std::fs::create_dir_all(&plain)?;
    for i in 0..n {
        let name = format!("{}.yaml", family(i));
        std::fs::copy(dir.join(&name), plain.join(&name))?;
    }
    let dir = plain;
    let (node, mut events, _) = watch_folder(&dir, &tmp.path().join("store-plain"), n).await?;
    settle().await;
    for c in 0..changes as usize {
        let i = (c * 104_729 + 1) % n;
        let marker = format!("rename-{c}");
        let name = format!("{}.yaml", family(i));
        std::fs::write(staging.join(&name), manifest(&family(i), &marker))?;
        let t = Instant::now();
        std::fs::rename(staging.join(&name), dir.join(&name))?;
        wait_stored(&mut events, &family(i), &marker).await?;
        stats.rename.push(t.elapsed());
        settle().await;
    }
    node.shutdown().await;
    Ok(stats)
}

pub async fn run(changes: u32, small: usize, large: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        changes > 0 && small > 0 && large > 0,
        "counts must be positive"
    );
    println!(
        "gitops: time from a change landing in the watched folder to the store holding the new desired state"
    );
    println!(
        "({changes} changes each; embedded store; controllers running, no agent; median / p90 / max)"
    );
    let mut medians = Vec::new();
    for n in [small, large] {
        let s = scenario(n, changes).await?;
        println!(
            "  {n} manifests (initial sync of all {n}: {})",
            ms(s.initial)
        );
        println!(
            "    commit landing (git merge --ff-only)  {:>9} / {:>9} / {:>9}   (git itself: median {})",
            ms(pct(&s.commit, 0.5)),
            ms(pct(&s.commit, 0.9)),
            ms(pct(&s.commit, 1.0)),
            ms(pct(&s.git_own, 0.5)),
        );
        println!(
            "    file renamed into the folder          {:>9} / {:>9} / {:>9}",
            ms(pct(&s.rename, 0.5)),
            ms(pct(&s.rename, 0.9)),
            ms(pct(&s.rename, 1.0)),
        );
        medians.push((n, pct(&s.commit, 0.5)));
    }
    println!(
        "  for comparison, polling: Argo CD every {} s (default), Flux every {} s (typical interval);",
        ARGO_CD_POLL.as_secs(),
        FLUX_POLL.as_secs()
    );
    println!(
        "  a commit waits on average half an interval there: {} s and {} s.",
        ARGO_CD_POLL.as_secs() / 2,
        FLUX_POLL.as_secs() / 2
    );
    for (n, m) in medians {
        println!(
            "  {n} manifests: median commit-to-store {} = {:.0}x faster than Flux's mean wait, {:.0}x than Argo CD's",
            ms(m),
            (FLUX_POLL.as_secs_f64() / 2.0) / m.as_secs_f64(),
            (ARGO_CD_POLL.as_secs_f64() / 2.0) / m.as_secs_f64()
        );
    }
    Ok(())
}
