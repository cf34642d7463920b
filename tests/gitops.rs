//! GitOps end to end: a real git repository in a temp dir, a real `berth up --manifests DIR`
//! process on the real Docker daemon. Commits, reverts, broken commits, prune, drift and
//! self-heal; `berth diff`, `apply --dry-run` and client-side `apply --prune`; bad folders.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::berth::*;
use common::manifests::*;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(60);
const SYNC: Duration = Duration::from_secs(15);

/// A git repository with the manifests in `manifests/`.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::Builder::new()
            .prefix("berth-gitops-")
            .tempdir()
            .unwrap();
        let r = Repo { dir };
        r.git(&["init", "-q", "-b", "main"]);
        std::fs::create_dir(r.manifests()).unwrap();
        r
    }

    fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    fn arg(&self) -> String {
        self.manifests().display().to_string()
    }

    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.manifests().join(rel), text).unwrap();
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(self.dir.path())
            .args(["-c", "commit.gpgsign=false"])
            .args(args)
            .env("GIT_AUTHOR_NAME", "tester")
            .env("GIT_AUTHOR_EMAIL", "tester@example.invalid")
            .env("GIT_COMMITTER_NAME", "tester")
            .env("GIT_COMMITTER_EMAIL", "tester@example.invalid")
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Commit everything; returns the new HEAD.
    fn commit(&self, msg: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", msg]);
        self.head()
    }

    fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// Commit in another clone and land it here by a fast-forward (what `git pull` does), so
    /// the files and HEAD change together. Returns the new HEAD.
    fn land(&self, msg: &str, change: impl FnOnce(&Path)) -> String {
        let other = tempfile::Builder::new()
            .prefix("berth-gitops-clone-")
            .tempdir()
            .unwrap();
        let clone = other.path().join("c");
        self.git(&["clone", "-q", ".", clone.to_str().unwrap()]);
        change(&clone.join("manifests"));
        let o = Repo { dir: other };
        let run = |args: &[&str]| {
            let mut a = vec!["-C", "c"];
            a.extend_from_slice(args);
            o.git(&a)
        };
        run(&["add", "-A"]);
        run(&["commit", "-q", "-m", msg]);
        self.git(&["fetch", "-q", clone.to_str().unwrap(), "main"]);
        self.git(&["merge", "-q", "--ff-only", "FETCH_HEAD"]);
        self.head()
    }
}

fn up(dir: &str, extra: &[&str]) -> Berth {
    let mut args = vec!["--manifests".to_string(), dir.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Berth::up_with(None, args)
}

/// The watched source's record (`berth sync status -o json`).
fn source(b: &Berth) -> Value {
    let v: Value = serde_json::from_str(&b.cli_ok(&["sync", "status", "-o", "json"])).unwrap();
    v.as_array()
        .into_iter()
        .flatten()
        .find(|s| s["spec"]["kind"] != "apply")
        .cloned()
        .unwrap_or(Value::Null)
}

fn wait_source(b: &Berth, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, SYNC, || {
        let s = source(b);
        f(&s).then_some(s)
    })
}

fn get_service(b: &Berth, name: &str) -> Option<Value> {
    b.try_get_json(&["services", name])
}

fn wait_running(b: &Berth, svc: &str, n: usize) {
    b.wait_running(svc, n, CONVERGE);
}

fn containers_of(svc: &str) -> Vec<(String, String, String)> {
    containers_with_label(&format!("berth.service={svc}"))
}

fn td_only(name: &str, value: &str) -> String {
    task_definition(
        name,
        [container("main", &["true"]).memory(16).env(&[("V", value)])],
    )
    .to_string()
}

#[test]
fn commits_scale_revert_and_a_broken_commit_keeps_the_last_good_state() {
    let repo = Repo::new();
    let svc = unique("gweb");
    repo.write("web.yaml", &web_manifest(&svc, 2, "1"));
    repo.write("README.md", "not a manifest; ignored by extension\n");
    let c1 = repo.commit("two replicas");
    let b = up(&repo.arg(), &["--prune"]);

    wait_running(&b, &svc, 2);
    let s = wait_source(&b, "synced at c1", |s| {
        s["status"]["lastApplied"]["commit"] == c1.as_str()
    });
    assert_eq!(s["status"]["sync"], "Synced", "{s:#}");
    assert_eq!(s["spec"]["kind"], "git");
    assert_eq!(s["status"]["dirty"], false);
    // Ownership annotations on the object.
    let obj = get_service(&b, &svc).unwrap();
    let a = &obj["metadata"]["annotations"];
    // Named after the folder, made unique by a hash of its path (issue 16 item 11).
    assert!(
        a["berth.dev/source"]
            .as_str()
            .is_some_and(|n| n.starts_with("manifests-")),
        "{a}"
    );
    assert_eq!(a["berth.dev/source-file"], "web.yaml");
    assert_eq!(a["berth.dev/source-document"], "2");
    assert_eq!(a["berth.dev/commit"], c1.as_str());

    // Commit 4 replicas: 4 run, and the status shows that commit.
    repo.write("web.yaml", &web_manifest(&svc, 4, "1"));
    let c2 = repo.commit("four replicas");
    wait_running(&b, &svc, 4);
    let s = wait_source(&b, "synced at c2", |s| {
        s["status"]["lastApplied"]["commit"] == c2.as_str() && s["status"]["dirty"] == false
    });
    assert_eq!(s["status"]["sync"], "Synced");
    let text = b.cli_ok(&["sync", "status"]);
    assert!(text.contains(&c2[..12]), "{text}");
    // The task definition did not change: still revision 1.
    let td = b.get_json(&["taskdefinitions", &svc]);
    assert_eq!(td["metadata"]["name"], format!("{svc}:1"));

    // git revert: back to 2.
    repo.git(&["revert", "--no-edit", "HEAD"]);
    let c3 = repo.head();
    wait_running(&b, &svc, 2);
    wait_source(&b, "synced at c3", |s| {
        s["status"]["lastApplied"]["commit"] == c3.as_str()
    });

    // A broken commit (one bad file beside a good change) applies nothing.
    repo.write("web.yaml", &web_manifest(&svc, 3, "1"));
    repo.write(
        "broken.yaml",
        "apiVersion: berth.dev/v1\nkind: TaskDefinition\nmetadata: {name: broken}\nspec:\n  containerDefinitions: [\n",
    );
    let c4 = repo.commit("broken");
    let s = wait_source(&b, "the broken commit reported", |s| {
        s["status"]["lastAttempt"]["commit"] == c4.as_str()
            && s["status"]["lastAttempt"]["result"] == "Failed"
    });
    assert_eq!(s["status"]["sync"], "OutOfSync");
    assert_eq!(s["status"]["lastApplied"]["commit"], c3.as_str(), "{s:#}");
    let err = &s["status"]["lastAttempt"]["errors"][0];
    assert_eq!(err["file"], "broken.yaml", "{s:#}");
    assert!(err["line"].as_u64().is_some(), "a line number: {s:#}");
    let text = b.cli_ok(&["sync", "status"]);
    assert!(
        text.contains("broken.yaml") && text.contains("line "),
        "{text}"
    );
    assert!(
        text.contains(&format!("commit {} is still applied", &c3[..12])),
        "{text}"
    );
    // The previous state keeps running: still 2, desiredCount untouched (time passes on
    // purpose: nothing may change).
    for _ in 0..10 {
        assert_eq!(get_service(&b, &svc).unwrap()["spec"]["desiredCount"], 2);
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_running(&b, &svc, 2);

    // Fix it in the next commit: applied.
    repo.git(&["rm", "-q", "manifests/broken.yaml"]);
    let c5 = repo.commit("fix");
    wait_running(&b, &svc, 3);
    let s = wait_source(&b, "synced at c5", |s| {
        s["status"]["lastApplied"]["commit"] == c5.as_str()
    });
    assert_eq!(s["status"]["lastAttempt"]["result"], "Succeeded");
    assert_eq!(s["status"]["sync"], "Synced");
}

#[test]
fn deleting_a_services_file_with_prune_stops_its_tasks_and_leaves_no_container() {
    let repo = Repo::new();
    let keep = unique("gkeep");
    let gone = unique("ggone");
    repo.write("keep.yaml", &web_manifest(&keep, 1, "1"));
    repo.write("gone.yaml", &web_manifest(&gone, 2, "1"));
    repo.commit("two services");
    let b = up(&repo.arg(), &["--prune"]);
    wait_running(&b, &keep, 1);
    wait_running(&b, &gone, 2);
    assert_eq!(containers_of(&gone).len(), 2);

    repo.git(&["rm", "-q", "manifests/gone.yaml"]);
    let c = repo.commit("remove a service");
    wait_for(
        "the pruned service gone, with its containers",
        CONVERGE,
        || (get_service(&b, &gone).is_none() && containers_of(&gone).is_empty()).then_some(()),
    );
    // Its task definition is INACTIVE but still readable; the other service is untouched.
    let td = b.get_json(&["taskdefinitions", &gone]);
    assert_eq!(td["status"]["status"], "INACTIVE");
    wait_running(&b, &keep, 1);
    let s = wait_source(&b, "synced after the prune", |s| {
        s["status"]["lastApplied"]["commit"] == c.as_str()
    });
    assert_eq!(s["status"]["sync"], "Synced", "{s:#}");
    let names: Vec<&str> = s["status"]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with(&gone)), "{names:?}");
}

#[test]
fn a_change_through_the_api_is_out_of_sync_and_self_heal_restores_it() {
    let repo = Repo::new();
    let svc = unique("gdrift");
    repo.write("web.yaml", &web_manifest(&svc, 1, "1"));
    repo.commit("one replica");
    let mut b = up(&repo.arg(), &["--prune"]);
    wait_running(&b, &svc, 1);
    wait_source(&b, "synced", |s| s["status"]["sync"] == "Synced");

    // Someone applies a changed copy from elsewhere.
    let other = manifest_dir(&[("web.yaml", web_manifest(&svc, 2, "1"))]);
    b.apply(other.path());
    let s = wait_source(&b, "OutOfSync", |s| s["status"]["sync"] == "OutOfSync");
    let drifted: Vec<&Value> = s["status"]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["sync"] == "OutOfSync")
        .collect();
    assert_eq!(drifted.len(), 1, "{s:#}");
    assert_eq!(drifted[0]["kind"], "Service");
    assert_eq!(drifted[0]["file"], "web.yaml");
    let text = b.cli_ok(&["sync", "status"]);
    assert!(text.contains("OutOfSync") && text.contains(&svc), "{text}");
    // Without self-heal the change stays.
    wait_running(&b, &svc, 2);
    assert_eq!(get_service(&b, &svc).unwrap()["spec"]["desiredCount"], 2);
    // berth diff shows it and says "different".
    let d = b.cli(&["diff", "-f", &repo.arg()]);
    assert_eq!(d.status.code(), Some(1));
    let out = String::from_utf8_lossy(&d.stdout);
    assert!(
        out.contains("-  desiredCount: 2") && out.contains("+  desiredCount: 1"),
        "{out}"
    );

    // With self-heal (restarted with the flag; the start itself syncs the folder)…
    b.kill9();
    b.extra_args.push("--self-heal".into());
    b.spawn();
    wait_running(&b, &svc, 1);
    wait_source(&b, "synced with self-heal", |s| {
        s["status"]["sync"] == "Synced" && s["spec"]["selfHeal"] == true
    });
    // …a change through the API is put back by itself.
    b.apply(other.path());
    wait_for("desiredCount restored to 1", SYNC, || {
        (get_service(&b, &svc)?["spec"]["desiredCount"] == 1).then_some(())
    });
    let s = wait_source(&b, "self-healed", |s| {
        s["status"]["sync"] == "Synced"
            && s["status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("self-heal"))
    });
    assert_eq!(s["status"]["lastApplied"]["changes"], 1, "{s:#}");
    // A task definition deregistered through the API comes back as a new ACTIVE revision.
    b.cli_ok(&["delete", "taskdefinitions", &format!("{svc}:1")]);
    wait_for("task definition restored", SYNC, || {
        let td = b.get_json(&["taskdefinitions", &svc]);
        (td["status"]["status"] == "ACTIVE" && td["metadata"]["name"] == format!("{svc}:2"))
            .then_some(())
    });
    wait_running(&b, &svc, 1);
    assert_eq!(b.cli_ok(&["diff", "-f", &repo.arg()]), "");
}

#[test]
fn diff_exit_codes_dry_run_and_client_side_prune() {
    let b = Berth::up(None);
    let svc = unique("gapp");
    let job = unique("gjob");
    let dir = manifest_dir(&[
        ("app.yaml", web_manifest(&svc, 1, "1")),
        ("job.yaml", td_only(&job, "1")),
    ]);
    let path = dir.path().to_str().unwrap();

    // Nothing stored yet: different.
    let d = b.cli(&["diff", "-f", path]);
    assert_eq!(d.status.code(), Some(1), "{d:?}");
    let out = String::from_utf8_lossy(&d.stdout);
    assert!(
        out.contains("apply creates it") && out.contains("+kind: Service"),
        "{out}"
    );

    // A dry run changes nothing.
    let out = b.cli_ok(&["apply", "-f", path, "--prune", "--dry-run"]);
    assert!(
        out.contains(&format!("service/{svc} created (dry run)")),
        "{out}"
    );
    let out = b.cli_ok(&["apply", "-f", path, "--dry-run"]);
    assert!(out.contains("(dry run)"), "{out}");
    assert!(get_service(&b, &svc).is_none());
    assert!(!b.cli(&["get", "taskdefinitions", &job]).status.success());
    assert_eq!(b.cli(&["diff", "-f", path]).status.code(), Some(1));

    // Applied: the same.
    let out = b.cli_ok(&["apply", "-f", path, "--prune"]);
    assert!(out.contains(&format!("service/{svc} created")), "{out}");
    assert!(
        out.contains(&format!("taskdefinition/{job}:1 created")),
        "{out}"
    );
    let d = b.cli(&["diff", "-f", path]);
    assert_eq!(d.status.code(), Some(0), "{d:?}");
    assert!(d.stdout.is_empty());
    // Applying the same folder twice changes nothing (and registers no revision).
    let out = b.cli_ok(&["apply", "-f", path, "--prune"]);
    assert!(
        !out.contains("created") && !out.contains("configured"),
        "{out}"
    );
    wait_running(&b, &svc, 1);

    // A change: different, shown as a diff.
    write(dir.path(), "app.yaml", &web_manifest(&svc, 2, "1"));
    let d = b.cli(&["diff", "-f", path]);
    assert_eq!(d.status.code(), Some(1));
    let out = String::from_utf8_lossy(&d.stdout);
    assert!(
        out.contains("-  desiredCount: 1") && out.contains("+  desiredCount: 2"),
        "{out}"
    );
    // A bad manifest: an error (>1), not "different".
    write(dir.path(), "bad.yaml", "kind: [\n");
    let d = b.cli(&["diff", "-f", path]);
    assert_eq!(d.status.code(), Some(2), "{d:?}");
    std::fs::remove_file(dir.path().join("bad.yaml")).unwrap();
    // Unreachable server: an error too.
    let d = b
        .cli_command(&["diff", "-f", path])
        .env(
            "BERTH_ENDPOINT",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .output()
        .unwrap();
    assert_eq!(d.status.code(), Some(2), "{d:?}");

    // Client-side prune: remove the service's file; it is pruned and drains.
    std::fs::remove_file(dir.path().join("app.yaml")).unwrap();
    let out = b.cli_ok(&["apply", "-f", path, "--prune"]);
    assert!(out.contains(&format!("service/{svc} pruned")), "{out}");
    assert!(
        out.contains(&format!("taskdefinition/{svc} pruned")),
        "{out}"
    );
    assert!(
        out.contains(&format!("taskdefinition/{job}:1 unchanged")),
        "{out}"
    );
    wait_for("the pruned service gone", CONVERGE, || {
        (get_service(&b, &svc).is_none() && containers_of(&svc).is_empty()).then_some(())
    });
    // The source shows up in sync status.
    let v: Value = serde_json::from_str(&b.cli_ok(&["sync", "status", "-o", "json"])).unwrap();
    let base = dir.path().file_name().unwrap().to_str().unwrap();
    let s = v
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("{base}-")))
        })
        .expect("the apply source");
    let name = s["metadata"]["name"].as_str().unwrap();
    assert_eq!(s["spec"]["kind"], "apply");
    assert_eq!(s["status"]["sync"], "Synced");
    // Without --prune, a plain apply from elsewhere does not take ownership or prune.
    let other = manifest_dir(&[("x.yaml", td_only(&job, "1"))]);
    let out = b.apply(other.path());
    assert!(out.contains("unchanged"), "{out}");
    let td = b.get_json(&["taskdefinitions", &job]);
    assert_eq!(td["metadata"]["annotations"]["berth.dev/source"], name);
}

#[test]
fn a_broken_folder_changes_nothing_and_is_reported() {
    let dir = tempfile::Builder::new()
        .prefix("berth-folder-")
        .tempdir()
        .unwrap();
    let root = dir.path();
    let a = unique("gtd");
    write(root, "a.yaml", &td_only(&a, "1"));
    let b = up(root.to_str().unwrap(), &["--prune"]);
    let s = wait_source(&b, "synced", |s| s["status"]["sync"] == "Synced");
    assert_eq!(s["spec"]["kind"], "folder");
    assert!(s["status"]["head"].is_null());
    let td_rev = |b: &Berth| b.get_json(&["taskdefinitions", &a])["metadata"]["name"].clone();
    assert_eq!(td_rev(&b), format!("{a}:1"));

    let bomb = {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            s.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        s
    };
    type Setup = Box<dyn Fn(&Path)>;
    type Undo = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, &str, Setup, Undo)> = vec![
        (
            "a syntax error",
            "syntax.yaml",
            Box::new(|d| write(d, "syntax.yaml", "kind: [\n")),
            Box::new(|d| std::fs::remove_file(d.join("syntax.yaml")).unwrap()),
        ),
        (
            "a .yaml that is not a manifest",
            "notes.yaml",
            Box::new(|d| write(d, "notes.yaml", "shopping: [milk, eggs]\n")),
            Box::new(|d| std::fs::remove_file(d.join("notes.yaml")).unwrap()),
        ),
        (
            "a duplicate name",
            "dup.yaml",
            Box::new({
                let a = a.clone();
                move |d| write(d, "dup.yaml", &td_only(&a, "2"))
            }),
            Box::new(|d| std::fs::remove_file(d.join("dup.yaml")).unwrap()),
        ),
        (
            "a reference to a missing task definition",
            "svc.yaml",
            Box::new(|d| {
                write(
                    d,
                    "svc.yaml",
                    "apiVersion: berth.dev/v1\nkind: Service\nmetadata: {name: orphan}\nspec: {taskDefinition: nosuchfamily, desiredCount: 1}\n",
                )
            }),
            Box::new(|d| std::fs::remove_file(d.join("svc.yaml")).unwrap()),
        ),
        (
            "a symlink loop",
            "loop",
            Box::new(|d| std::os::unix::fs::symlink(d, d.join("loop")).unwrap()),
            Box::new(|d| std::fs::remove_file(d.join("loop")).unwrap()),
        ),
        (
            "a symlink out of the folder",
            "outside.yaml",
            Box::new(|d| {
                std::os::unix::fs::symlink("/etc/hostname", d.join("outside.yaml")).unwrap()
            }),
            Box::new(|d| std::fs::remove_file(d.join("outside.yaml")).unwrap()),
        ),
        (
            "a 100 MB manifest",
            "huge.yaml",
            Box::new(|d| {
                // Sparse: the size is what the loader refuses, before reading.
                let f = std::fs::File::create(d.join("huge.yaml")).unwrap();
                f.set_len(100 << 20).unwrap();
            }),
            Box::new(|d| std::fs::remove_file(d.join("huge.yaml")).unwrap()),
        ),
        (
            "a YAML alias bomb",
            "bomb.yaml",
            Box::new(move |d| write(d, "bomb.yaml", &bomb)),
            Box::new(|d| std::fs::remove_file(d.join("bomb.yaml")).unwrap()),
        ),
        (
            "an empty folder",
            ".",
            Box::new(|d| std::fs::rename(d.join("a.yaml"), d.join("a.yaml.off")).unwrap()),
            Box::new(|d| std::fs::rename(d.join("a.yaml.off"), d.join("a.yaml")).unwrap()),
        ),
    ];
    for (what, file, setup, undo) in cases {
        // Each bad folder also changes the good file (after the bad part is in place): none
        // of it may be applied.
        setup(root);
        let empty = file == ".";
        if !empty {
            write(root, "a.yaml", &td_only(&a, "changed"));
        }
        let s = wait_source(&b, what, |s| {
            s["status"]["lastAttempt"]["result"] == "Failed"
                && s["status"]["lastAttempt"]["errors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e["file"] == file)
        });
        assert_eq!(s["status"]["sync"], "OutOfSync", "{what}: {s:#}");
        assert_eq!(td_rev(&b), format!("{a}:1"), "{what}: nothing applied");
        assert!(get_service(&b, "orphan").is_none());
        // Restore the good file while the folder is still broken, then repair it.
        if !empty {
            write(root, "a.yaml", &td_only(&a, "1"));
        }
        undo(root);
        wait_source(&b, &format!("recovered from {what}"), |s| {
            s["status"]["lastAttempt"]["result"] == "Succeeded" && s["status"]["sync"] == "Synced"
        });
        assert_eq!(
            td_rev(&b),
            format!("{a}:1"),
            "{what}: the good state is unchanged"
        );
    }

    // A file renamed into the folder is picked up at once.
    let staging = tempfile::Builder::new()
        .prefix("berth-staging-")
        .tempdir_in(root.parent().unwrap())
        .unwrap();
    let c = unique("gnew");
    write(staging.path(), "c.yaml", &td_only(&c, "1"));
    std::fs::rename(staging.path().join("c.yaml"), root.join("c.yaml")).unwrap();
    wait_for("the renamed-in manifest applied", SYNC, || {
        b.cli(&["get", "taskdefinitions", &c])
            .status
            .success()
            .then_some(())
    });
}

#[test]
fn a_git_source_on_etcd_applies_prunes_and_records_commits() {
    let etcd = common::etcd::EtcdServer::start();
    let repo = Repo::new();
    let a = unique("getcd");
    let z = unique("getcd");
    repo.write("a.yaml", &td_only(&a, "1"));
    repo.write("z.yaml", &td_only(&z, "1"));
    let c1 = repo.commit("two task definitions");
    let b = Berth::up_with(
        Some(etcd.url()),
        vec!["--manifests".into(), repo.arg(), "--prune".into()],
    );
    wait_source(&b, "synced at c1", |s| {
        s["status"]["lastApplied"]["commit"] == c1.as_str()
    });
    assert_eq!(
        b.get_json(&["taskdefinitions", &a])["metadata"]["annotations"]["berth.dev/commit"],
        c1.as_str()
    );
    let c2 = repo.land("change one, remove one", |m| {
        std::fs::write(m.join("a.yaml"), td_only(&a, "2")).unwrap();
        std::fs::remove_file(m.join("z.yaml")).unwrap();
    });
    let s = wait_source(&b, "synced at c2", |s| {
        s["status"]["lastApplied"]["commit"] == c2.as_str()
    });
    assert_eq!(s["status"]["sync"], "Synced", "{s:#}");
    let td = b.get_json(&["taskdefinitions", &a]);
    assert_eq!(td["metadata"]["name"], format!("{a}:2"));
    assert_eq!(
        td["metadata"]["annotations"]["berth.dev/commit"],
        c2.as_str()
    );
    assert_eq!(td["metadata"]["annotations"]["berth.dev/dirty"], "false");
    assert_eq!(
        b.get_json(&["taskdefinitions", &z])["status"]["status"],
        "INACTIVE"
    );
    drop(b);
    drop(etcd);
}

/// Issue 16 item 10: sample `svc` for `period`: it must stay ACTIVE with exactly the tasks
/// `ids` (none asked to stop), and the source must never fail with "being deleted".
fn assert_undisturbed(b: &Berth, svc: &str, ids: &[String], period: Duration) {
    let end = std::time::Instant::now() + period;
    while std::time::Instant::now() < end {
        let s = get_service(b, svc).expect("the service still exists");
        assert!(
            s["metadata"]["deletionTimestamp"].is_null() && s["status"]["status"] == "ACTIVE",
            "the service was pruned: {s:#}"
        );
        let active = task_ids(&b.active_tasks(svc));
        assert_eq!(active, ids, "a task of {svc} was asked to stop");
        let rec = source(b).to_string();
        assert!(!rec.contains("being deleted"), "{rec}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Empty `file` for 0.4 s and write `text` back, as an editor saving in place may.
fn empty_for_a_moment(path: &Path, text: &str) {
    std::fs::write(path, "").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    std::fs::write(path, text).unwrap();
}

fn sorted_ids(b: &Berth, svc: &str, n: usize) -> Vec<String> {
    task_ids(&b.wait_running(svc, n, CONVERGE))
}

#[test]
fn a_file_emptied_for_a_moment_in_a_git_work_tree_prunes_nothing() {
    let repo = Repo::new();
    let svc = unique("ghalf");
    let text = web_manifest(&svc, 2, "1");
    repo.write("web.yaml", &text);
    repo.write("other.yaml", &td_only(&unique("gother"), "1"));
    let c1 = repo.commit("web and another");
    let b = up(&repo.arg(), &["--prune"]);
    let ids = sorted_ids(&b, &svc, 2);
    wait_source(&b, "synced at c1", |s| {
        s["status"]["lastApplied"]["commit"] == c1.as_str()
    });
    // Uncommitted, half-written content in the work tree is never what is applied.
    empty_for_a_moment(&repo.manifests().join("web.yaml"), &text);
    assert_undisturbed(&b, &svc, &ids, Duration::from_secs(3));
    // Committed content still is.
    repo.write("web.yaml", &web_manifest(&svc, 3, "1"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(get_service(&b, &svc).unwrap()["spec"]["desiredCount"], 2);
    let c2 = repo.commit("three");
    wait_running(&b, &svc, 3);
    wait_source(&b, "synced at c2", |s| {
        s["status"]["lastApplied"]["commit"] == c2.as_str() && s["status"]["sync"] == "Synced"
    });
}

#[test]
fn a_file_emptied_for_a_moment_in_a_plain_folder_prunes_nothing() {
    let dir = tempfile::Builder::new()
        .prefix("berth-folder-")
        .tempdir()
        .unwrap();
    let svc = unique("ghalf");
    let text = web_manifest(&svc, 2, "1");
    write(dir.path(), "web.yaml", &text);
    write(dir.path(), "other.yaml", &td_only(&unique("gother"), "1"));
    let b = up(dir.path().to_str().unwrap(), &["--prune"]);
    let ids = sorted_ids(&b, &svc, 2);
    wait_source(&b, "synced", |s| s["status"]["sync"] == "Synced");
    std::thread::sleep(Duration::from_secs(3)); // long settled
    empty_for_a_moment(&dir.path().join("web.yaml"), &text);
    assert_undisturbed(&b, &svc, &ids, Duration::from_secs(4));
    // A file that stays gone is still pruned.
    std::fs::remove_file(dir.path().join("web.yaml")).unwrap();
    wait_for("the removed service pruned", CONVERGE, || {
        get_service(&b, &svc).is_none().then_some(())
    });
}

#[test]
fn a_pruned_service_restored_before_it_is_gone_is_kept() {
    let repo = Repo::new();
    let svc = unique("gback");
    repo.write("web.yaml", &web_manifest(&svc, 2, "1"));
    repo.write("other.yaml", &td_only(&unique("gother"), "1"));
    repo.commit("web and another");
    let b = up(&repo.arg(), &["--prune"]);
    b.wait_running(&svc, 2, CONVERGE);
    let uid = get_service(&b, &svc).unwrap()["metadata"]["uid"].clone();
    // Removed in one commit (pruned: marked for deletion), back in the next.
    repo.git(&["rm", "-q", "manifests/web.yaml"]);
    repo.commit("remove web");
    wait_for("web marked for deletion", SYNC, || {
        get_service(&b, &svc)
            .filter(|s| !s["metadata"]["deletionTimestamp"].is_null())
            .map(|_| ())
    });
    repo.git(&["revert", "--no-edit", "HEAD"]);
    let c3 = repo.head();
    // The same service (not deleted and created again) comes back to two running tasks, and
    // the sync never fails with "being deleted".
    let end = std::time::Instant::now() + CONVERGE;
    loop {
        let rec = source(&b);
        assert!(
            !rec.to_string().contains("being deleted"),
            "the source failed: {rec:#}"
        );
        let s = get_service(&b, &svc).expect("the service was deleted");
        assert_eq!(
            s["metadata"]["uid"], uid,
            "the service was deleted and re-created"
        );
        let running = b.running_tasks(&svc).len();
        if s["metadata"]["deletionTimestamp"].is_null()
            && running == 2
            && b.active_tasks(&svc).len() == 2
            && rec["status"]["lastApplied"]["commit"] == c3.as_str()
            && rec["status"]["sync"] == "Synced"
        {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "not restored: {s:#} {rec:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A folder `manifests` in a fresh temp dir, holding `files`.
fn folder_named_manifests(files: &[(&str, String)]) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::Builder::new()
        .prefix("berth-twin-")
        .tempdir()
        .unwrap();
    let dir = t.path().join("manifests");
    std::fs::create_dir(&dir).unwrap();
    for (f, text) in files {
        write(&dir, f, text);
    }
    (t, dir)
}

/// Issue 16 item 11: the default source name was the folder's base name, so two folders called
/// `manifests` were one source and pruned each other's objects.
#[test]
fn two_folders_with_the_same_name_are_two_sources() {
    let repo = Repo::new();
    let svc = unique("gtwin");
    repo.write("web.yaml", &web_manifest(&svc, 1, "1"));
    repo.commit("web");
    let b = up(&repo.arg(), &["--prune"]);
    let ids = task_ids(&b.wait_running(&svc, 1, CONVERGE));
    wait_source(&b, "synced", |s| s["status"]["sync"] == "Synced");

    // Another folder, also called `manifests`, applied from a client with --prune.
    let job = unique("gjob");
    let (_t, other) = folder_named_manifests(&[("job.yaml", td_only(&job, "1"))]);
    let other_arg = other.to_str().unwrap();
    let out = b.cli_ok(&["apply", "-f", other_arg, "--prune"]);
    assert!(
        !out.contains("pruned"),
        "it pruned the watched folder's objects: {out}"
    );
    assert_undisturbed(&b, &svc, &ids, Duration::from_secs(2));
    // Two sources, each named after its folder and made unique.
    let v: Value = serde_json::from_str(&b.cli_ok(&["sync", "status", "-o", "json"])).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.iter().all(|n| n.starts_with("manifests-")) && names[0] != names[1],
        "{names:?}"
    );
    let watched = source(&b)["metadata"]["name"].as_str().unwrap().to_string();
    let client_source = names.iter().find(|n| **n != watched).unwrap().to_string();
    assert_eq!(
        get_service(&b, &svc).unwrap()["metadata"]["annotations"]["berth.dev/source"],
        watched.as_str()
    );
    // Applying the same folder again is the same source (stable name): nothing changes.
    let out = b.cli_ok(&["apply", "-f", other_arg, "--prune"]);
    assert!(
        out.contains("unchanged") && !out.contains("created"),
        "{out}"
    );

    // An apply that would take over an object another source owns is refused, naming the
    // owner and the flag that forces it; nothing is written.
    write(&other, "web.yaml", &web_manifest(&svc, 3, "1"));
    let o = b.cli(&["apply", "-f", other_arg, "--prune"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&watched) && err.contains("--take-over") && err.contains(&svc),
        "{err}"
    );
    assert_eq!(get_service(&b, &svc).unwrap()["spec"]["desiredCount"], 1);
    // Between two client-side sources, --take-over moves the object.
    std::fs::remove_file(other.join("web.yaml")).unwrap();
    let (_t3, third) = folder_named_manifests(&[("job.yaml", td_only(&job, "1"))]);
    let third_arg = third.to_str().unwrap();
    let o = b.cli(&["apply", "-f", third_arg, "--prune"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stderr(&o).contains(&client_source), "{}", stderr(&o));
    b.cli_ok(&["apply", "-f", third_arg, "--prune", "--take-over"]);
    let td = b.get_json(&["taskdefinitions", &job]);
    let owner = td["metadata"]["annotations"]["berth.dev/source"]
        .as_str()
        .unwrap();
    assert!(owner.starts_with("manifests-") && owner != client_source && owner != watched);
    // An explicit --source name still works.
    let (_t4, fourth) = folder_named_manifests(&[("x.yaml", td_only(&unique("gx"), "1"))]);
    b.cli_ok(&[
        "apply",
        "-f",
        fourth.to_str().unwrap(),
        "--prune",
        "--source",
        "team-x",
    ]);
    assert!(b.cli_ok(&["sync", "status"]).contains("team-x"));
}

/// Issue 16 item 11, the watched side: a commit holding an object another source owns is
/// refused (reported with the owner and the flag); `--take-over` moves it.
#[test]
fn a_watched_folder_takes_over_another_sources_object_only_when_told() {
    let repo = Repo::new();
    let own = unique("gown");
    let shared = unique("gshared");
    repo.write("own.yaml", &td_only(&own, "1"));
    repo.commit("own");
    let mut b = up(&repo.arg(), &["--prune"]);
    wait_source(&b, "synced", |s| s["status"]["sync"] == "Synced");
    let watched = source(&b)["metadata"]["name"].as_str().unwrap().to_string();

    let (_t, other) = folder_named_manifests(&[("shared.yaml", td_only(&shared, "1"))]);
    b.cli_ok(&["apply", "-f", other.to_str().unwrap(), "--prune"]);
    let owner_of = |b: &Berth| {
        b.get_json(&["taskdefinitions", &shared])["metadata"]["annotations"]["berth.dev/source"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let client_source = owner_of(&b);
    assert_ne!(client_source, watched);

    repo.write("shared.yaml", &td_only(&shared, "1"));
    let c2 = repo.commit("shared");
    let s = wait_source(&b, "the take-over refused", |s| {
        s["status"]["lastAttempt"]["commit"] == c2.as_str()
            && s["status"]["lastAttempt"]["result"] == "Failed"
    });
    let errors = s["status"]["lastAttempt"]["errors"].to_string();
    assert!(
        errors.contains(&client_source) && errors.contains("--take-over"),
        "{errors}"
    );
    assert_eq!(owner_of(&b), client_source, "nothing was taken over");

    b.kill9();
    b.extra_args.push("--take-over".into());
    b.spawn();
    wait_source(&b, "synced with --take-over", |s| {
        s["status"]["lastApplied"]["commit"] == c2.as_str() && s["status"]["sync"] == "Synced"
    });
    assert_eq!(owner_of(&b), watched);
}
