//! `berth bench chaos`: services run on a real cluster (a 3-member etcd, two `berth up`
//! control planes with their agents, one more agent, real Docker) while containers, agents,
//! control planes and an etcd member are killed at random; invariants are checked throughout:
//! never more live tasks or containers than the rollout ceiling, every acknowledged write kept,
//! and afterwards desired counts restored with no orphan containers. Exits non-zero on a
//! violation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::Value;

use super::etcd_cluster::EtcdCluster;

const IMAGE: &str = "local/busybox:1";
/// Rollout ceiling of the chaos services (`maximumPercent`).
const MAX_PERCENT: u32 = 200;
const SETTLE: Duration = Duration::from_secs(180);

#[derive(Debug, Clone)]
pub struct Options {
    pub minutes: f64,
    pub services: u32,
    pub replicas: u32,
}

pub async fn run(o: &Options) -> anyhow::Result<()> {
    let o = o.clone();
    tokio::task::spawn_blocking(move || Chaos::new(&o)?.run(&o)).await?
}

/// A berth process of the cluster, restartable with the same arguments.
struct Node {
    args: Vec<String>,
    env: Vec<(String, PathBuf)>,
    log: PathBuf,
    child: Option<Child>,
    /// The API port of a control plane.
    api: Option<u16>,
}

impl Node {
    fn start(&mut self, exe: &Path) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(exe);
        cmd.args(&self.args)
            .env("BERTH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn()?);
        Ok(())
    }
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    fn running(&self) -> bool {
        self.child.is_some()
    }
    /// Whether the process ended by itself (e.g. it could not reach the store at start and
    /// exited loudly, as it should): the bench then restarts it, as a supervisor would.
    fn exited(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(_))) => {
                self.child = None;
                true
            }
            _ => false,
        }
    }
}

#[derive(Default)]
struct Tally {
    actions: BTreeMap<&'static str, u32>,
    acked: Vec<String>,
    write_failures: u32,
    samples: u32,
    violations: Vec<String>,
}

struct Chaos {
    exe: PathBuf,
    id: String,
    dir: tempfile::TempDir,
    etcd: EtcdCluster,
    nodes: Vec<Node>,
    config: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

impl Chaos {
    fn new(o: &Options) -> anyhow::Result<Chaos> {
        anyhow::ensure!(
            Command::new("docker")
                .args(["image", "inspect", IMAGE])
                .output()?
                .status
                .success(),
            "image {IMAGE} is missing: run scripts/build-image.sh"
        );
        anyhow::ensure!(o.services > 0 && o.replicas > 0, "nothing to run");
        let exe = std::env::current_exe()?;
        let id = format!("chaos-{}", &crate::model::new_id()[..6]);
        let dir = tempfile::Builder::new().prefix("berth-chaos-").tempdir()?;
        let etcd = EtcdCluster::start(3, None)?;
        let url = etcd.url();
        let config = dir.path().join("config");
        let mut nodes = Vec::new();
        for i in 1..=2 {
            let port = free_port();
            let data = dir.path().join(format!("cp{i}"));
            nodes.push(Node {
                args: [
                    "up",
                    "--store",
                    &url,
                    "--api",
                    &format!("127.0.0.1:{port}"),
                    "--data-dir",
                    data.to_str().unwrap_or_default(),
                    "--instance-id",
                    &format!("{id}-cp{i}"),
                    "--lease-ttl",
                    "3s",
                    "--lost-instance-grace",
                    "30s",
                ]
                .map(String::from)
                .to_vec(),
                // Both write the same admin token's config: the token lives in the store.
                env: vec![("XDG_CONFIG_HOME".into(), config.clone())],
                log: dir.path().join(format!("cp{i}.log")),
                child: None,
                api: Some(port),
            });
        }
        nodes.push(Node {
            args: [
                "agent",
                "--store",
                &url,
                "--instance-id",
                &format!("{id}-agent"),
                "--lease-ttl",
                "3s",
                "--lost-instance-grace",
                "30s",
            ]
            .map(String::from)
            .to_vec(),
            env: vec![("XDG_DATA_HOME".into(), dir.path().join("agent"))],
            log: dir.path().join("agent.log"),
            child: None,
            api: None,
        });
        let mut c = Chaos {
            exe,
            id,
            dir,
            etcd,
            nodes,
            config,
        };
        // The first control plane bootstraps the admin identity before the second starts.
        c.nodes[0].start(&c.exe)?;
        c.wait_api(Duration::from_secs(60))?;
        for i in 1..c.nodes.len() {
            c.nodes[i].start(&c.exe)?;
        }
        Ok(c)
    }

    fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.running())
            .filter_map(|n| n.api.map(|p| format!("http://127.0.0.1:{p}")))
            .collect()
    }

    /// Run the CLI against the first control plane that answers.
    fn cli(&self, args: &[&str]) -> Option<Vec<u8>> {
        for ep in self.endpoints() {
            let out = Command::new(&self.exe)
                .args(args)
                .env("BERTH_ENDPOINT", &ep)
                .env("XDG_CONFIG_HOME", &self.config)
                .output()
                .ok()?;
            if out.status.success() {
                return Some(out.stdout);
            }
        }
        None
    }

    fn json(&self, args: &[&str]) -> Option<Value> {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_slice(&self.cli(&a)?).ok()
    }

    fn wait_api(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.config.join("berth/config.json").exists() && self.json(&["services"]).is_some()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        anyhow::bail!(
            "the control plane did not come up; see {}",
            self.dir.path().display()
        )
    }

    fn apply(&self, yaml: &str, name: &str) -> bool {
        let d = self.dir.path().join("manifests").join(name);
        if std::fs::create_dir_all(&d).is_err() || std::fs::write(d.join("m.yaml"), yaml).is_err() {
            return false;
        }
        self.cli(&["apply", "-f", d.to_str().unwrap_or_default()])
            .is_some()
    }

    fn service_name(&self, i: u32) -> String {
        format!("{}-s{i}", self.id)
    }

    fn manifests(&self, o: &Options) -> String {
        let mut docs = Vec::new();
        for i in 0..o.services {
            let n = self.service_name(i);
            docs.push(format!(
                "apiVersion: berth.dev/v1\nkind: TaskDefinition\nmetadata: {{name: {n}}}\nspec:\n  containerDefinitions:\n    - name: app\n      image: {IMAGE}\n      command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n      cpu: 16\n      memory: 16\n      stopTimeout: 2\n"
            ));
            docs.push(format!(
                "apiVersion: berth.dev/v1\nkind: Service\nmetadata: {{name: {n}}}\nspec:\n  taskDefinition: {n}\n  desiredCount: {}\n  deploymentConfiguration: {{minimumHealthyPercent: 50, maximumPercent: {MAX_PERCENT}}}\n",
                o.replicas
            ));
        }
        docs.join("---\n")
    }

    /// Running containers of one service, from Docker.
    fn running_containers(&self, service: &str) -> usize {
        Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                &format!("label=berth.service={service}"),
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
            .unwrap_or(0)
    }

    /// Active (not stopped, not asked to stop) tasks of a service, from the API.
    fn active_tasks(&self, service: &str) -> Option<Vec<Value>> {
        let v = self.json(&["tasks", "--service", service])?;
        Some(
            v.as_array()?
                .iter()
                .filter(|t| {
                    t["status"]["lastStatus"] != "STOPPED"
                        && t["status"]["desiredStatus"] != "STOPPED"
                })
                .cloned()
                .collect(),
        )
    }

    fn check(&self, o: &Options, t: &mut Tally) {
        let ceiling = (o.replicas * MAX_PERCENT / 100) as usize;
        for i in 0..o.services {
            let s = self.service_name(i);
            if let Some(active) = self.active_tasks(&s) {
                if active.len() > ceiling {
                    t.violations.push(format!(
                        "{s}: {} live tasks above the ceiling of {ceiling}",
                        active.len()
                    ));
                }
            }
            let running = self.running_containers(&s);
            if running > ceiling {
                t.violations.push(format!(
                    "{s}: {running} running containers above the ceiling of {ceiling}"
                ));
            }
        }
        t.samples += 1;
    }

    /// Every service at its desired count, as many containers as tasks, and no orphan.
    fn settled(&self, o: &Options) -> Result<(), String> {
        for i in 0..o.services {
            let s = self.service_name(i);
            let active = self.active_tasks(&s).ok_or("API unavailable")?;
            let running = active
                .iter()
                .filter(|t| t["status"]["lastStatus"] == "RUNNING")
                .count();
            if running != o.replicas as usize || active.len() != o.replicas as usize {
                return Err(format!("{s}: {running} running of {} active", active.len()));
            }
            let containers = self.running_containers(&s);
            if containers != o.replicas as usize {
                return Err(format!(
                    "{s}: {containers} containers for {} tasks",
                    o.replicas
                ));
            }
        }
        let out = Command::new("docker")
            // (No `-q`: it would override `--format`.)
            .args(["ps", "-a", "--filter", "label=berth.cluster=default"])
            .args(["--filter", "label=berth.task"])
            .args([
                "--format",
                "{{.Label \"berth.instance\"}} {{.Label \"berth.task\"}}",
            ])
            .output()
            .map_err(|e| e.to_string())?;
        let tasks = self.json(&["tasks"]).ok_or("API unavailable")?;
        let live: std::collections::BTreeSet<String> = tasks
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|t| t["status"]["lastStatus"] != "STOPPED")
                    .filter_map(|t| t["metadata"]["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut p = line.split_whitespace();
            let (inst, task) = (p.next().unwrap_or(""), p.next().unwrap_or(""));
            if inst.starts_with(&self.id) && !live.contains(task) {
                return Err(format!("orphan container of task {task} on {inst}"));
            }
        }
        Ok(())
    }

    fn run(mut self, o: &Options) -> anyhow::Result<()> {
        let started = Instant::now();
        anyhow::ensure!(
            self.apply(&self.manifests(o), "services"),
            "could not apply the chaos services"
        );
        let deadline = Instant::now() + SETTLE;
        while let Err(why) = self.settled(o) {
            anyhow::ensure!(Instant::now() < deadline, "services never started: {why}");
            std::thread::sleep(Duration::from_secs(1));
        }
        println!(
            "chaos: {} services × {} replicas running on 3 instances after {:.1} s; chaos for {} min",
            o.services,
            o.replicas,
            started.elapsed().as_secs_f64(),
            o.minutes
        );
        let mut t = Tally::default();
        let mut rng = rand::thread_rng();
        let until = Instant::now() + Duration::from_secs_f64(o.minutes * 60.0);
        let mut next_action = Instant::now();
        let mut down_etcd: Option<(usize, Instant)> = None;
        let mut down_nodes: Vec<(usize, Instant)> = Vec::new();
        let mut mark = 0u32;
        while Instant::now() < until {
            // Bring back what is due.
            let now = Instant::now();
            if let Some((m, at)) = down_etcd {
                if now >= at {
                    self.etcd.restart(m)?;
                    down_etcd = None;
                }
            }
            for i in 0..self.nodes.len() {
                if self.nodes[i].exited() {
                    *t.actions.entry("exits restarted (supervisor)").or_default() += 1;
                    down_nodes.push((i, now + Duration::from_secs(1)));
                }
            }
            for (i, at) in std::mem::take(&mut down_nodes) {
                if now >= at {
                    self.nodes[i].start(&self.exe)?;
                } else {
                    down_nodes.push((i, at));
                }
            }
            if now >= next_action {
                let kinds = [
                    "container",
                    "container",
                    "agent",
                    "control plane",
                    "etcd member",
                ];
                let kind = *kinds.choose(&mut rng).unwrap_or(&"container");
                eprintln!(
                    "chaos: {:.0} s left: kill a random {kind}",
                    (until - now).as_secs_f64().max(0.0)
                );
                match kind {
                    "container" => {
                        let out = Command::new("docker")
                            .args(["ps", "--filter", "label=berth.instance"])
                            .args(["--filter", "label=berth.service"])
                            .args(["--format", "{{.ID}} {{.Label \"berth.instance\"}}"])
                            .output()?;
                        let ours: Vec<String> = String::from_utf8_lossy(&out.stdout)
                            .lines()
                            .filter(|l| l.contains(&self.id))
                            .filter_map(|l| l.split_whitespace().next().map(String::from))
                            .collect();
                        if let Some(c) = ours.choose(&mut rng) {
                            let _ = Command::new("docker").args(["kill", c]).output();
                            *t.actions.entry("container killed").or_default() += 1;
                        }
                    }
                    kind => {
                        let pick = if kind == "agent" { vec![2] } else { vec![0, 1] };
                        let i = *pick.choose(&mut rng).unwrap_or(&2);
                        // Keep one control plane up: the chaos is about recovery, not an outage.
                        let cps_up = self
                            .nodes
                            .iter()
                            .filter(|n| n.api.is_some() && n.running())
                            .count();
                        if kind == "etcd member" {
                            if down_etcd.is_none() {
                                let m = rng.gen_range(0..self.etcd.len());
                                self.etcd.kill(m);
                                down_etcd =
                                    Some((m, now + Duration::from_secs(rng.gen_range(3..10))));
                                *t.actions.entry("etcd member killed").or_default() += 1;
                            }
                        } else if self.nodes[i].running() && (kind == "agent" || cps_up > 1) {
                            self.nodes[i].kill();
                            down_nodes.push((i, now + Duration::from_secs(rng.gen_range(1..5))));
                            *t.actions
                                .entry(if kind == "agent" {
                                    "agent killed"
                                } else {
                                    "control plane killed"
                                })
                                .or_default() += 1;
                        }
                    }
                }
                next_action = now + Duration::from_millis(rng.gen_range(2000..6000));
            }
            // An acknowledged write must survive whatever happens next.
            let name = format!("{}-mark{mark}", self.id);
            let td = format!(
                "apiVersion: berth.dev/v1\nkind: TaskDefinition\nmetadata: {{name: {name}}}\nspec:\n  containerDefinitions:\n    - name: app\n      image: {IMAGE}\n      memory: 8\n"
            );
            if self.apply(&td, &name) {
                t.acked.push(name);
            } else {
                t.write_failures += 1;
            }
            mark += 1;
            self.check(o, &mut t);
            std::thread::sleep(Duration::from_millis(500));
        }
        // Everything back, then the cluster must settle by itself.
        if let Some((m, _)) = down_etcd {
            self.etcd.restart(m)?;
        }
        for (i, _) in down_nodes {
            self.nodes[i].start(&self.exe)?;
        }
        let calm = Instant::now();
        let mut last = String::new();
        let restored = loop {
            for n in self.nodes.iter_mut() {
                if n.exited() {
                    n.start(&self.exe)?;
                }
            }
            match self.settled(o) {
                Ok(()) => break Some(calm.elapsed()),
                Err(why) => last = why,
            }
            if calm.elapsed() > SETTLE {
                break None;
            }
            self.check(o, &mut t);
            std::thread::sleep(Duration::from_secs(1));
        };
        let mut lost = Vec::new();
        for name in &t.acked {
            if self.json(&["taskdefinitions", name]).is_none() {
                lost.push(name.clone());
            }
        }
        let actions: Vec<String> = t.actions.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!("chaos: {}", actions.join(", "));
        println!(
            "chaos: {} writes acknowledged, {} lost; {} refused during faults; {} invariant samples, {} violations",
            t.acked.len(),
            lost.len(),
            t.write_failures,
            t.samples,
            t.violations.len()
        );
        match restored {
            Some(d) => println!(
                "chaos: desired counts restored, no orphan containers, {:.1} s after the last fault",
                d.as_secs_f64()
            ),
            None => println!("chaos: NOT restored within {SETTLE:?}: {last}"),
        }
        for v in t.violations.iter().take(10) {
            println!("chaos: violation: {v}");
        }
        let ok = restored.is_some() && lost.is_empty() && t.violations.is_empty();
        for n in self.nodes.iter_mut() {
            n.kill();
        }
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker ps -aq --filter label=berth.cluster | xargs -r docker inspect --format '{{{{.Id}}}} {{{{index .Config.Labels \"berth.instance\"}}}}' | grep ' {}' | cut -d' ' -f1 | xargs -r docker rm -f",
                self.id
            ))
            .output();
        anyhow::ensure!(
            ok,
            "chaos found problems (lost writes: {lost:?}); logs in {}",
            self.dir.keep().display()
        );
        Ok(())
    }
}
