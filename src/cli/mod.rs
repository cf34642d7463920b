//! The `berth` command line.

pub mod auth;
pub mod client;
pub mod gitops;
pub mod observe;
pub mod output;
pub mod rollout;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use berth_core::util::parse_duration;
use serde_json::{json, Value};

use crate::node::{self, NodeConfig};
use berth_core::agent::AgentConfig;
use berth_core::model::Kind;
use client::Client;

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "berth: a self-hosted work-alike of Amazon ECS on Docker"
)]
pub struct Cli {
    /// API endpoint (default: from `berth up`'s config, else http://127.0.0.1:7400).
    #[arg(long, global = true, env = "BERTH_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Bearer token for the API.
    #[arg(long, global = true, env = "BERTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Log format for long-running commands: text or json.
    #[arg(long, global = true, default_value = "text")]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run everything in one process: embedded store, controllers, an agent and the API.
    Up(UpArgs),
    /// Run the control plane (API + controllers) against a shared store.
    Server(ServerArgs),
    /// Run an agent for one container instance.
    Agent(AgentArgs),
    /// Run a load balancer alone (scale-out): listeners and targets follow the store.
    Lb {
        #[arg(long)]
        store: String,
        /// Address listeners bind on.
        #[arg(long, default_value = "0.0.0.0")]
        bind: std::net::IpAddr,
    },
    /// Apply a manifest file or folder, atomically.
    Apply {
        #[arg(short = 'f', long = "filename")]
        path: PathBuf,
        /// Validate and show what would change, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply the folder as a source: stamp ownership and prune objects of the same source
        /// that are no longer in it (services drain, task definitions become INACTIVE).
        #[arg(long)]
        prune: bool,
        /// The source's name for ownership and pruning (default: the folder's name and a
        /// short hash of its path).
        #[arg(long)]
        source: Option<String>,
        /// Take over objects another source owns (refused otherwise).
        #[arg(long)]
        take_over: bool,
    },
    /// Show how manifests differ from the store; exit 0 same, 1 different, >1 error.
    Diff {
        #[arg(short = 'f', long = "filename")]
        path: PathBuf,
    },
    /// Sources (watched manifest folders, `apply --prune` folders) and their sync status.
    #[command(subcommand)]
    Sync(gitops::SyncCommand),
    /// List objects of a kind, or show one.
    Get {
        kind: String,
        name: Option<String>,
        #[arg(short = 'o', long = "output")]
        output: Option<String>,
        /// Tasks: only those of this service.
        #[arg(long)]
        service: Option<String>,
        /// Keep printing changes.
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Show one object in detail (services: deployments, tasks and events).
    Describe { kind: String, name: String },
    /// Delete an object, or everything named in manifests (`-f`).
    Delete {
        kind: Option<String>,
        name: Option<String>,
        #[arg(short = 'f', long = "filename")]
        path: Option<PathBuf>,
    },
    /// Run a task definition as a batch job.
    RunTask {
        task_definition: String,
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long, default_value = "default")]
        cluster: String,
        /// Wait for the tasks to stop and exit non-zero if an essential container failed.
        #[arg(long)]
        wait: bool,
        #[arg(short = 'o', long = "output")]
        output: Option<String>,
    },
    /// Stop a task.
    StopTask {
        task_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Follow a service's deployment.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Identities, tokens and permissions.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Query the audit trail (every API call, allowed or denied).
    Audit(auth::AuditArgs),
    /// Benchmarks that print numbers beside the obvious alternative.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    #[command(flatten)]
    Observe(observe::ObserveCommand),
}

#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Live progress of the PRIMARY deployment; exit 0 COMPLETED, 1 FAILED, 2 timeout.
    Status {
        service: String,
        #[arg(long, default_value = "5m")]
        timeout: String,
    },
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Data directory for the embedded store (default: ~/.local/share/berth).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Watch this manifest folder (and its git HEAD) and keep it applied.
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// With --manifests: prune objects the folder applied that are no longer in it.
    #[arg(long, requires = "manifests")]
    pub prune: bool,
    /// With --manifests: put back objects changed outside the folder.
    #[arg(long, requires = "manifests")]
    pub self_heal: bool,
    /// With --manifests: take over objects another source owns (refused otherwise).
    #[arg(long, requires = "manifests")]
    pub take_over: bool,
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub api: SocketAddr,
    /// Use this store instead of the embedded one (etcd://host:2379,...).
    #[arg(long)]
    pub store: Option<String>,
    #[command(flatten)]
    pub agent: AgentFlags,
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    #[arg(long)]
    pub store: String,
    /// Watch this manifest folder (and its git HEAD) and keep it applied.
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// With --manifests: prune objects the folder applied that are no longer in it.
    #[arg(long, requires = "manifests")]
    pub prune: bool,
    /// With --manifests: put back objects changed outside the folder.
    #[arg(long, requires = "manifests")]
    pub self_heal: bool,
    /// With --manifests: take over objects another source owns (refused otherwise).
    #[arg(long, requires = "manifests")]
    pub take_over: bool,
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub api: SocketAddr,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    #[arg(long)]
    pub store: String,
    #[command(flatten)]
    pub agent: AgentFlags,
}

#[derive(Args, Debug, Clone)]
pub struct AgentFlags {
    #[arg(long, default_value = "default")]
    pub cluster: String,
    /// Instance id (default: the host name). Several agents may share one Docker daemon.
    #[arg(long)]
    pub instance_id: Option<String>,
    /// CPU units to offer (default: cores × 1024).
    #[arg(long)]
    pub cpu: Option<u32>,
    /// Memory to offer in MiB (default: the Docker host's).
    #[arg(long)]
    pub memory: Option<u32>,
    /// Address clients use to reach this host's published ports.
    #[arg(long, default_value = "127.0.0.1")]
    pub host_ip: String,
    /// Agent lease TTL (e.g. 10s).
    #[arg(long, default_value = "10s")]
    pub lease_ttl: String,
    /// How often container CPU/memory are sampled (e.g. 5s).
    #[arg(long, default_value = "5s", env = "BERTH_STATS_INTERVAL")]
    pub stats_interval: String,
    /// Where this agent serves container logs to the API (advertised on its instance).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub logs_addr: SocketAddr,
}

impl AgentFlags {
    pub fn config(&self) -> anyhow::Result<AgentConfig> {
        let id = self.instance_id.clone().unwrap_or_else(hostname);
        let mut c = AgentConfig::new(&id, &self.cluster);
        c.cpu = self.cpu;
        c.memory = self.memory;
        c.host_ip = self.host_ip.clone();
        c.lease_ttl = parse_duration(&self.lease_ttl)?;
        c.stats_interval = parse_duration(&self.stats_interval)?;
        c.logs_addr = self.logs_addr;
        c.data_dir = default_data_dir().join(format!("agent-{id}"));
        Ok(c)
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local".into())
}

fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("berth");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| ".".into());
    home.join(".local").join("share").join("berth")
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn run_node(store_url: &str, cfg: NodeConfig, write_config: bool) -> anyhow::Result<()> {
    let store = berth_core::store::open(store_url).await?;
    let admin_token = match cfg.controllers {
        true => auth::bootstrap(&*store, write_config).await?,
        false => None,
    };
    let n = node::start(store, cfg).await?;
    if let Some(addr) = n.api_addr {
        tracing::info!(%addr, "berth API listening");
        if write_config {
            let path = client::save_config(&client::CliConfig {
                endpoint: format!("http://{addr}"),
                token: admin_token.clone(),
            })?;
            tracing::info!(path = %path.display(), "wrote CLI config");
        }
    }
    let token = n.token();
    tokio::select! {
        _ = wait_for_signal() => tracing::info!("shutting down"),
        _ = token.cancelled() => {}
    }
    n.shutdown().await;
    Ok(())
}

/// Entry point; returns the process exit code.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = || Client::new(cli.endpoint.clone(), cli.token.clone());
    match &cli.command {
        Command::Up(a) => {
            init_tracing(&cli.log_format);
            let data_dir = a.data_dir.clone().unwrap_or_else(default_data_dir);
            let store_url = a
                .store
                .clone()
                .unwrap_or_else(|| data_dir.join("store").display().to_string());
            run_node(
                &store_url,
                NodeConfig {
                    api: Some(a.api),
                    controllers: true,
                    agent: Some(AgentConfig {
                        data_dir: data_dir.join("agent"),
                        ..a.agent.config()?
                    }),
                    manifests: berth_core::gitops::SourceConfig::from_flags(
                        a.manifests.as_ref(),
                        a.prune,
                        a.self_heal,
                    )
                    .map(|c| berth_core::gitops::SourceConfig {
                        take_over: a.take_over,
                        ..c
                    }),
                },
                true,
            )
            .await?;
        }
        Command::Server(a) => {
            init_tracing(&cli.log_format);
            run_node(
                &a.store,
                NodeConfig {
                    api: Some(a.api),
                    controllers: true,
                    agent: None,
                    manifests: berth_core::gitops::SourceConfig::from_flags(
                        a.manifests.as_ref(),
                        a.prune,
                        a.self_heal,
                    )
                    .map(|c| berth_core::gitops::SourceConfig {
                        take_over: a.take_over,
                        ..c
                    }),
                },
                false,
            )
            .await?;
        }
        Command::Lb { store, bind } => {
            init_tracing(&cli.log_format);
            let store = berth_core::store::open(store).await?;
            let stop = tokio_util::sync::CancellationToken::new();
            let lb = tokio::spawn(berth_core::lb::run(
                store,
                berth_core::lb::LbConfig { bind_ip: *bind },
                stop.clone(),
            ));
            wait_for_signal().await;
            stop.cancel();
            let _ = lb.await;
        }
        Command::Agent(a) => {
            init_tracing(&cli.log_format);
            run_node(
                &a.store,
                NodeConfig {
                    api: None,
                    controllers: false,
                    agent: Some(a.agent.config()?),
                    manifests: None,
                },
                false,
            )
            .await?;
        }
        Command::Apply {
            path,
            dry_run,
            prune,
            source,
            take_over,
        } => {
            if *prune || source.is_some() || *take_over {
                let opts = gitops::SourceFlags {
                    dry_run: *dry_run,
                    prune: *prune,
                    take_over: *take_over,
                };
                return gitops::apply(&client(), path, &opts, source.as_deref()).await;
            }
            return apply(&client(), path, *dry_run).await;
        }
        Command::Diff { path } => return Ok(gitops::diff(&client(), path).await),
        Command::Sync(cmd) => return gitops::sync(&client(), cmd).await,
        Command::Get {
            kind,
            name,
            output,
            service,
            watch,
        } => {
            if *watch {
                let k = kind_arg(kind)?;
                observe::get_watch(&client(), k, name.as_deref(), output.as_deref()).await?;
                return Ok(ExitCode::SUCCESS);
            }
            get(
                &client(),
                kind,
                name.as_deref(),
                output.as_deref(),
                service.as_deref(),
            )
            .await?
        }
        Command::Describe { kind, name } => describe(&client(), kind, name).await?,
        Command::Delete { kind, name, path } => {
            return delete(&client(), kind.as_deref(), name.as_deref(), path.as_deref()).await
        }
        Command::RunTask {
            task_definition,
            count,
            cluster,
            wait,
            output,
        } => {
            return run_task(
                &client(),
                task_definition,
                *count,
                cluster,
                *wait,
                output.as_deref(),
            )
            .await
        }
        Command::StopTask { task_id, reason } => {
            let body = json!({ "reason": reason });
            let t = client()
                .post(&format!("/v1/tasks/{task_id}/stop"), &body)
                .await?;
            println!(
                "task {} stopping",
                t["metadata"]["name"].as_str().unwrap_or(task_id)
            );
        }
        Command::Rollout(RolloutCommand::Status { service, timeout }) => {
            return rollout::status(&client(), service, parse_duration(timeout)?).await
        }
        Command::Observe(o) => observe::run(&client(), o).await?,
        Command::Auth(a) => return auth::run(&client(), a).await,
        Command::Audit(a) => return auth::audit(&client(), a).await,
        Command::Bench(b) => {
            init_tracing("text");
            crate::bench::run(b).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn apply(c: &Client, path: &std::path::Path, dry_run: bool) -> anyhow::Result<ExitCode> {
    let docs = match berth_core::manifest::load_path(path) {
        Ok(d) => d,
        Err(errs) => {
            output::print_manifest_errors(&errs);
            eprintln!("nothing was applied");
            return Ok(ExitCode::from(1));
        }
    };
    if docs.is_empty() {
        eprintln!("error: no manifests found in {}", path.display());
        return Ok(ExitCode::from(1));
    }
    let body = json!({ "documents": docs, "dryRun": dry_run });
    Ok(output::apply_report(
        c.post("/v1/apply", &body).await,
        dry_run,
    ))
}

fn kind_arg(kind: &str) -> anyhow::Result<Kind> {
    Kind::parse(kind).ok_or_else(|| {
        let all: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
        anyhow::anyhow!("unknown kind {kind:?}; expected one of: {}", all.join(", "))
    })
}

fn print_value(v: &Value, output: &str) -> anyhow::Result<()> {
    match output {
        "json" => println!("{}", serde_json::to_string_pretty(v)?),
        "yaml" => print!("{}", serde_yaml::to_string(v)?),
        other => anyhow::bail!("unknown output format {other:?}; use json, yaml or wide"),
    }
    Ok(())
}

async fn get(
    c: &Client,
    kind: &str,
    name: Option<&str>,
    output: Option<&str>,
    service: Option<&str>,
) -> anyhow::Result<()> {
    let k = kind_arg(kind)?;
    let v = match name {
        Some(n) => c.get(&format!("/v1/{}/{n}", k.plural())).await?,
        None => {
            let q = service.map(|s| format!("?service={s}")).unwrap_or_default();
            c.get(&format!("/v1/{}{q}", k.plural())).await?
        }
    };
    match output {
        Some("json") | Some("yaml") => print_value(&v, output.unwrap())?,
        Some("wide") | None => {
            let items = match &v {
                Value::Array(a) => a.clone(),
                one => vec![one.clone()],
            };
            print!("{}", output::table(k, &items, output == Some("wide")));
        }
        Some(other) => anyhow::bail!("unknown output format {other:?}; use json, yaml or wide"),
    }
    Ok(())
}

async fn describe(c: &Client, kind: &str, name: &str) -> anyhow::Result<()> {
    let k = kind_arg(kind)?;
    let v = c.get(&format!("/v1/{}/{name}", k.plural())).await?;
    let tasks = if k == Kind::Service {
        c.get(&format!("/v1/tasks?service={name}&status=active"))
            .await?
            .as_array()
            .cloned()
            .unwrap_or_default()
    } else {
        vec![]
    };
    print!("{}", output::describe(k, &v, &tasks));
    Ok(())
}

async fn delete(
    c: &Client,
    kind: Option<&str>,
    name: Option<&str>,
    path: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    if let Some(p) = path {
        let docs = match berth_core::manifest::load_path(p) {
            Ok(d) => d,
            Err(errs) => {
                output::print_manifest_errors(&errs);
                return Ok(ExitCode::from(1));
            }
        };
        let v = c.post("/v1/delete", &json!({ "documents": docs })).await?;
        for r in v["results"].as_array().into_iter().flatten() {
            println!("{}", output::result_line(r, "deleted"));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(kind), Some(name)) = (kind, name) else {
        anyhow::bail!("usage: berth delete KIND NAME | berth delete -f PATH");
    };
    let k = kind_arg(kind)?;
    let v = c.delete(&format!("/v1/{}/{name}", k.plural())).await?;
    println!(
        "{}/{} {}",
        k.as_str().to_ascii_lowercase(),
        v["name"].as_str().unwrap_or(name),
        v["result"].as_str().unwrap_or("deleted")
    );
    Ok(ExitCode::SUCCESS)
}

async fn run_task(
    c: &Client,
    td: &str,
    count: u32,
    cluster: &str,
    wait: bool,
    output: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let v = c
        .post(
            "/v1/tasks",
            &json!({ "taskDefinition": td, "count": count, "cluster": cluster }),
        )
        .await?;
    let ids: Vec<String> = v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    if !wait {
        if let Some(o) = output {
            print_value(&v["tasks"], o)?;
        } else {
            for id in &ids {
                println!("{id}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut finals = Vec::new();
    for id in &ids {
        loop {
            let t = c.get(&format!("/v1/tasks/{id}")).await?;
            if t["status"]["lastStatus"] == "STOPPED" {
                finals.push(t);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    let mut ok = true;
    for t in &finals {
        if let Some(o) = output {
            print_value(t, o)?;
        }
        let id = t["metadata"]["name"].as_str().unwrap_or("?");
        for ct in t["status"]["containers"].as_array().into_iter().flatten() {
            let code = &ct["exitCode"];
            if output.is_none() {
                println!(
                    "{id} {} exit code {}",
                    ct["name"].as_str().unwrap_or("?"),
                    code
                );
            }
            if code.as_i64() != Some(0) {
                ok = false;
            }
        }
        if t["status"]["stopCode"] == "TaskFailedToStart" {
            eprintln!(
                "{id}: {}",
                t["status"]["stoppedReason"].as_str().unwrap_or("")
            );
            ok = false;
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
