//! The `berth` command line.

pub mod auth;
pub mod client;
pub mod completion;
pub mod compose;
pub mod gitops;
pub mod observe;
pub mod output;
pub mod rollout;
pub mod secrets;
pub mod version;

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
    about = "berth: a self-hosted work-alike of Amazon ECS on Docker",
    after_help = "Exit codes: 0 success; 1 error (or: `diff` found differences, `rollout status` \
                  FAILED, `run-task --wait` a failed container, `auth can-i` no); 2 usage error \
                  (or: `rollout status` timed out, `diff` could not compare).\n\
                  Start here: berth up --manifests manifests/   then   berth get services"
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
    /// With an `etcds://` store: the CA certificate (PEM) that signed etcd's certificate.
    #[arg(long, global = true, env = "BERTH_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// With an `etcds://` store: this client's certificate (PEM), for etcd's client-cert auth.
    #[arg(long, global = true, env = "BERTH_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// With an `etcds://` store: the key (PEM) of `--etcd-cert`.
    #[arg(long, global = true, env = "BERTH_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run everything in one process: embedded store, controllers, an agent and the API.
    #[command(
        after_help = "Examples:\n  berth up --manifests manifests/\n  berth up --data-dir /var/lib/berth --api 0.0.0.0:7400 --agent-join-token-file /run/berth/join-token\n  berth up --store etcd://10.0.0.5:2379 --manifests manifests/ --prune"
    )]
    Up(UpArgs),
    /// Run the control plane (API + controllers): on a shared store (etcd), or on its own
    /// embedded store as the control plane of a small cluster of joined agents.
    #[command(
        after_help = "Examples:\n  berth server --store etcd://etcd-0:2379,etcd-1:2379,etcd-2:2379 --api 0.0.0.0:7400\n  berth server --store etcds://etcd:2379 --etcd-ca ca.pem --etcd-cert client.pem --etcd-key client-key.pem --api 0.0.0.0:7400\n  berth server --data-dir /var/lib/berth --api 0.0.0.0:7400 --agent-join-token-file /run/berth/join-token"
    )]
    Server(ServerArgs),
    /// Run an agent for one container instance: joins through the API (`--server URL
    /// --join-token T`); `--store URL` is the legacy/dev path with raw store access.
    #[command(
        after_help = "Examples:\n  berth agent --server http://10.0.0.5:7400 --join-token-file /run/berth/join-token\n  berth agent --server http://cp-1:7400,http://cp-2:7400 --join-token T --cpu 4096 --memory 8192"
    )]
    Agent(AgentArgs),
    /// Agent join tokens (`berth token create --agent`).
    #[command(
        after_help = "Examples:\n  berth token create --agent --ttl 24h --description rack-3\n  berth token list -o wide\n  berth token revoke-agent host-7"
    )]
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run a load balancer alone (scale-out): listeners and targets follow the store.
    #[command(after_help = "Examples:\n  berth lb --store etcd://10.0.0.5:2379 --bind 0.0.0.0")]
    Lb {
        #[arg(long)]
        store: String,
        /// Address listeners bind on.
        #[arg(long, default_value = "0.0.0.0")]
        bind: std::net::IpAddr,
    },
    /// Apply a manifest file or folder, atomically.
    #[command(
        after_help = "Examples:\n  berth apply -f manifests/\n  berth apply -f manifests/web.yaml --dry-run\n  berth apply -f manifests/ --prune"
    )]
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
    #[command(after_help = "Examples:\n  berth diff -f manifests/ && echo up to date")]
    Diff {
        #[arg(short = 'f', long = "filename")]
        path: PathBuf,
    },
    /// Sources (watched manifest folders, `apply --prune` folders) and their sync status.
    #[command(
        after_help = "Examples:\n  berth sync status\n  berth sync status manifests -o json"
    )]
    #[command(subcommand)]
    Sync(gitops::SyncCommand),
    /// List objects of a kind, or show one.
    #[command(
        after_help = "Examples:\n  berth get services\n  berth get tasks --service web -o wide\n  berth get taskdefinitions web -o yaml\n  berth get services --watch"
    )]
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
    #[command(
        after_help = "Examples:\n  berth describe service web\n  berth describe task 3f2a9c1e"
    )]
    Describe { kind: String, name: String },
    /// Delete an object, or everything named in manifests (`-f`).
    #[command(
        after_help = "Examples:\n  berth delete service web\n  berth delete -f manifests/web.yaml"
    )]
    Delete {
        kind: Option<String>,
        name: Option<String>,
        #[arg(short = 'f', long = "filename")]
        path: Option<PathBuf>,
    },
    /// Run a task definition as a batch job.
    #[command(
        after_help = "Examples:\n  berth run-task hello-job --wait\n  berth run-task hello-job:2 --count 3 -o json"
    )]
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
    #[command(after_help = "Examples:\n  berth stop-task 3f2a9c1e --reason 'stuck'")]
    StopTask {
        task_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Drain a container instance: nothing new is placed on it and its service tasks are
    /// replaced elsewhere within each service's min/max percent (ECS's DRAINING).
    #[command(after_help = "Examples:\n  berth drain host-b\n  berth activate host-b   # undo")]
    Drain { instance: String },
    /// Make a drained container instance ACTIVE again.
    #[command(after_help = "Examples:\n  berth activate host-b")]
    Activate { instance: String },
    /// Follow a service's deployment.
    #[command(after_help = "Examples:\n  berth rollout status web --timeout 10m")]
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Run a Compose file on berth: convert it to manifests, bring it up, take it down.
    #[command(
        after_help = "Examples:\n  berth compose convert -f compose.yaml\n  berth compose up -p shop\n  berth compose down"
    )]
    #[command(subcommand)]
    Compose(compose::ComposeCommand),
    /// Identities, tokens and permissions.
    #[command(
        after_help = "Examples:\n  berth auth token\n  berth auth whoami\n  berth auth identity create ci --role deployer\n  berth auth can-i berth:DeleteService service/web"
    )]
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Query the audit trail (every API call, allowed or denied).
    #[command(
        after_help = "Examples:\n  berth audit --since 1h\n  berth audit --identity ci --decision deny -o json"
    )]
    Audit(auth::AuditArgs),
    /// Benchmarks that print numbers beside the obvious alternative.
    #[command(after_help = "Examples:\n  berth bench converge\n  berth bench lb")]
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    #[command(flatten)]
    Observe(observe::ObserveCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell).
    #[command(after_help = completion::INSTALL)]
    Completion { shell: clap_complete::Shell },
    /// Print berth's version and git commit, and the server's version when it answers.
    #[command(after_help = "Examples:\n  berth version\n  berth version --client -o json")]
    Version {
        /// Only this binary's version: do not ask the server.
        #[arg(long)]
        client: bool,
        #[arg(short = 'o', long = "output")]
        output: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Mint a join token (printed once; the server stores only its hash).
    #[command(
        after_help = "Examples:\n  berth token create --agent\n  berth token create --agent --ttl 24h --description rack-3"
    )]
    Create {
        /// An agent join token (the only kind so far).
        #[arg(long, required = true)]
        agent: bool,
        #[arg(long, default_value = "")]
        description: String,
        /// Expire it after this long (e.g. 24h); default: until deleted.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List join tokens (ids, never the tokens).
    #[command(after_help = "Examples:\n  berth token list\n  berth token list -o json")]
    List {
        #[arg(short = 'o', long = "output")]
        output: Option<String>,
    },
    /// Revoke a join token by id (agents that joined with it keep their credentials; revoke
    /// one with `berth token revoke-agent INSTANCE`).
    #[command(after_help = "Examples:\n  berth token delete 7c1f2e9a0b3d4c5e")]
    Delete { id: String },
    /// Revoke an instance's agent credential (its agent must join again).
    #[command(after_help = "Examples:\n  berth token revoke-agent host-7")]
    RevokeAgent { instance: String },
}

#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Live progress of the PRIMARY deployment; exit 0 COMPLETED, 1 FAILED, 2 timeout.
    #[command(
        after_help = "Examples:\n  berth rollout status web\n  berth rollout status web --timeout 10m || echo \"rollout failed or timed out\""
    )]
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
    /// Use this store instead of the embedded one (etcd://host:2379,... or etcds://… for TLS).
    #[arg(long)]
    pub store: Option<String>,
    /// Mint an agent join token at start and write it to this file (0600), for
    /// `berth agent --server URL --join-token-file FILE` on other hosts.
    #[arg(long)]
    pub agent_join_token_file: Option<PathBuf>,
    /// The key that encrypts Secrets at rest (0600; default: DATA_DIR/secrets.key, created on
    /// first start). Never stored in the store.
    #[arg(long)]
    pub secrets_key_file: Option<PathBuf>,
    #[command(flatten)]
    pub agent: AgentFlags,
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// The store: etcd://host:2379,… or etcds://… (TLS; see --etcd-ca); default: an embedded
    /// store under --data-dir.
    #[arg(long)]
    pub store: Option<String>,
    /// Data directory for the embedded store (default: ~/.local/share/berth).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Mint an agent join token at start and write it to this file (0600).
    #[arg(long)]
    pub agent_join_token_file: Option<PathBuf>,
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
    /// How long an instance may be disconnected before its tasks are replaced elsewhere.
    #[arg(long, default_value = "5m")]
    pub lost_instance_grace: String,
    /// The key that encrypts Secrets at rest (0600), the same file on every control plane of
    /// a cluster; it must exist. Default: DATA_DIR/secrets.key, created on first start.
    #[arg(long)]
    pub secrets_key_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// API server URL(s), comma-separated (failover in order): the agent joins through the API
    /// and never sees the store.
    #[arg(long, conflicts_with = "store", required_unless_present = "store")]
    pub server: Option<String>,
    /// The join token (`berth token create --agent`); needed only for the first join: the
    /// agent keeps its own credential in its data dir.
    #[arg(long, env = "BERTH_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// Read the join token from this file.
    #[arg(long, conflicts_with = "join_token")]
    pub join_token_file: Option<PathBuf>,
    /// Where the agent keeps its credential and container logs (default:
    /// ~/.local/share/berth/agent-ID).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Legacy/dev: raw access to the store (etcd://…). Gives this host full control of the
    /// cluster; use --server with a join token instead.
    #[arg(long)]
    pub store: Option<String>,
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
    /// The cluster's lost-instance grace: an agent that cannot renew its lease for this long
    /// stops its own tasks gracefully, before the control plane replaces them elsewhere.
    #[arg(long, default_value = "5m")]
    pub lost_instance_grace: String,
    /// When images are pulled (ECS_IMAGE_PULL_BEHAVIOR): default (pull, use the cached image
    /// if the pull fails), always (pull, fail if it fails), once (pull unless this agent pulled
    /// it before), prefer-cached (pull only when absent).
    #[arg(long, default_value = "default", env = "ECS_IMAGE_PULL_BEHAVIOR")]
    pub image_pull_behavior: String,
    /// Give up a pull after this long (e.g. 10m).
    #[arg(long, default_value = "10m")]
    pub image_pull_timeout: String,
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
        c.self_fence_after = parse_duration(&self.lost_instance_grace)?;
        c.data_dir = default_data_dir().join(format!("agent-{id}"));
        c.pull = berth_core::agent::pull::PullConfig {
            behavior: self
                .image_pull_behavior
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--image-pull-behavior: {e}"))?,
            timeout: parse_duration(&self.image_pull_timeout)?,
        };
        Ok(c)
    }
}

pub use crate::node::hostname;

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

impl Cli {
    /// TLS settings for an `etcds://` store.
    fn etcd_tls(&self) -> berth_core::store::etcd::EtcdTls {
        berth_core::store::etcd::EtcdTls {
            ca: self.etcd_ca.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
        }
    }
}

async fn run_node(
    store_url: &str,
    tls: &berth_core::store::etcd::EtcdTls,
    cfg: NodeConfig,
    write_config: bool,
    join_token_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if !store_url.starts_with("etcd://") && !store_url.starts_with("etcds://") {
        let dir = store_url.strip_prefix("embedded://").unwrap_or(store_url);
        berth_core::apply::safety::protect(std::path::Path::new(dir));
    }
    if let Some(dir) = client::config_path().parent() {
        berth_core::apply::safety::protect(dir);
    }
    let store = berth_core::store::open_with(store_url, tls).await?;
    let admin_token = match cfg.controllers {
        true => auth::bootstrap(&*store, write_config).await?,
        false => None,
    };
    let n = node::start(store.clone(), cfg).await?;
    if let Some(addr) = n.api_addr {
        tracing::info!(%addr, "berth API listening");
        if let Some(path) = join_token_file {
            write_join_token(&*store, path).await?;
            tracing::info!(
                path = %path.display(),
                "agent join token written; on another host: berth agent --server http://{addr} --join-token-file FILE"
            );
        }
        if write_config {
            let path = client::save_config(&client::CliConfig {
                endpoint: format!("http://{addr}"),
                token: admin_token.clone(),
            })?;
            tracing::info!(path = %path.display(), "wrote CLI config");
        }
    }
    supervise(&store, n).await
}

/// Run a started node until a signal, its own stop, or a store that can no longer write (then
/// exit loudly); a part's failure (e.g. a taken instance id) becomes the exit error.
async fn supervise(store: &berth_core::store::DynStore, n: node::Node) -> anyhow::Result<()> {
    let token = n.token();
    let failed = async {
        loop {
            if let Some(why) = store.failure() {
                return why;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    };
    let mut store_failed = None;
    tokio::select! {
        _ = wait_for_signal() => tracing::info!("shutting down"),
        _ = token.cancelled() => {}
        why = failed => {
            tracing::error!(error = %why, "the store can no longer write; exiting");
            store_failed = Some(why);
        }
    }
    if let Some(why) = store_failed {
        // Loud and non-zero: a supervisor restarts berth and the store replays its log.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), n.shutdown()).await;
        anyhow::bail!(
            "the store can no longer write ({why}); exiting so that a supervisor restarts \
             berth (the store replays its log on start; free disk space first if it is full)"
        );
    }
    let failure = n.failure.clone();
    n.shutdown().await;
    if let Some(why) = failure.lock().unwrap().take() {
        anyhow::bail!(why);
    }
    Ok(())
}

/// Mint an agent join token and write it to `path` (0600).
async fn write_join_token(
    store: &dyn berth_core::store::Store,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (token, _) = berth_core::auth::agent_join::create_join_token(
        store,
        "bootstrap",
        "written at start",
        None,
    )
    .await?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(format!("{token}\n").as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// `berth agent --server URL --join-token T`: join (or reuse the saved credential) and run
/// the agent on the API's view of the store.
async fn run_joined_agent(a: &AgentArgs, servers: &str) -> anyhow::Result<()> {
    let mut cfg = a.agent.config()?;
    if let Some(d) = &a.data_dir {
        cfg.data_dir = d.clone();
    }
    let join_token = match &a.join_token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => a.join_token.clone(),
    };
    let servers = berth_core::store::remote::parse_servers(servers);
    let remote = berth_core::agent::join::connect(
        servers,
        join_token.as_deref(),
        &cfg.instance_id,
        &cfg.data_dir,
        std::time::Duration::from_secs(60),
    )
    .await?;
    cfg.secrets = berth_core::agent::secrets::Secrets::Remote(remote.clone());
    let store: berth_core::store::DynStore = std::sync::Arc::new(remote);
    let n = node::start(
        store.clone(),
        NodeConfig {
            api: None,
            controllers: false,
            agent: Some(cfg),
            manifests: None,
            control: Default::default(),
            secrets_key: None,
        },
    )
    .await?;
    supervise(&store, n).await
}

async fn token_command(c: &Client, cmd: &TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create {
            agent: _,
            description,
            ttl,
        } => {
            let v = c
                .post(
                    "/v1/agent/join-tokens",
                    &json!({"description": description, "ttl": ttl}),
                )
                .await?;
            eprintln!(
                "agent join token {} (shown once; the server stores only its hash). Join with:\n  berth agent --server {} --join-token <TOKEN>",
                v["id"].as_str().unwrap_or(""),
                c.endpoint()
            );
            println!("{}", v["token"].as_str().unwrap_or(""));
        }
        TokenCommand::List { output } => {
            let v = c.get("/v1/agent/join-tokens").await?;
            output::check_format(output.as_deref())?;
            match output.as_deref().filter(|o| *o != "wide") {
                Some(o) => print_value(&v, o)?,
                None => {
                    println!("{:<18} {:<22} {:<12} DESCRIPTION", "ID", "CREATED", "BY");
                    for t in v.as_array().into_iter().flatten() {
                        println!(
                            "{:<18} {:<22} {:<12} {}",
                            t["id"].as_str().unwrap_or(""),
                            t["createdAt"]
                                .as_str()
                                .unwrap_or("")
                                .chars()
                                .take(19)
                                .collect::<String>(),
                            t["createdBy"].as_str().unwrap_or(""),
                            t["description"].as_str().unwrap_or("")
                        );
                    }
                }
            }
        }
        TokenCommand::Delete { id } => {
            c.delete(&format!("/v1/agent/join-tokens/{id}")).await?;
            println!("join token {id} deleted");
        }
        TokenCommand::RevokeAgent { instance } => {
            c.delete(&format!("/v1/agent/instances/{instance}/credential"))
                .await?;
            println!("agent credential of {instance} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
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
                &cli.etcd_tls(),
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
                    control: berth_controllers::ControlConfig {
                        lost_instance_grace: parse_duration(&a.agent.lost_instance_grace)?,
                    },
                    secrets_key: Some(secrets::control_plane_key(
                        a.secrets_key_file.as_deref(),
                        &data_dir,
                    )?),
                },
                true,
                a.agent_join_token_file.as_deref(),
            )
            .await?;
        }
        Command::Server(a) => {
            init_tracing(&cli.log_format);
            let store_url = a.store.clone().unwrap_or_else(|| {
                a.data_dir
                    .clone()
                    .unwrap_or_else(default_data_dir)
                    .join("store")
                    .display()
                    .to_string()
            });
            run_node(
                &store_url,
                &cli.etcd_tls(),
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
                    control: berth_controllers::ControlConfig {
                        lost_instance_grace: parse_duration(&a.lost_instance_grace)?,
                    },
                    secrets_key: Some(secrets::control_plane_key(
                        a.secrets_key_file.as_deref(),
                        &a.data_dir.clone().unwrap_or_else(default_data_dir),
                    )?),
                },
                false,
                a.agent_join_token_file.as_deref(),
            )
            .await?;
        }
        Command::Lb { store, bind } => {
            init_tracing(&cli.log_format);
            let store = berth_core::store::open_with(store, &cli.etcd_tls()).await?;
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
            match (&a.server, &a.store) {
                (Some(servers), _) => run_joined_agent(a, servers).await?,
                (None, Some(store)) => {
                    tracing::warn!("berth agent --store gives this host raw store access (legacy/dev); join with --server URL --join-token T instead");
                    let mut cfg = a.agent.config()?;
                    if let Some(d) = &a.data_dir {
                        cfg.data_dir = d.clone();
                    }
                    run_node(
                        store,
                        &cli.etcd_tls(),
                        NodeConfig {
                            api: None,
                            controllers: false,
                            agent: Some(cfg),
                            manifests: None,
                            control: Default::default(),
                            secrets_key: None,
                        },
                        false,
                        None,
                    )
                    .await?;
                }
                (None, None) => anyhow::bail!("berth agent needs --server URL --join-token T"),
            }
        }
        Command::Token(t) => return token_command(&client(), t).await,
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
            output::check_format(output.as_deref())?;
            return run_task(
                &client(),
                task_definition,
                *count,
                cluster,
                *wait,
                output.as_deref().filter(|o| *o != "wide"),
            )
            .await;
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
        Command::Drain { instance } | Command::Activate { instance } => {
            let verb = if matches!(cli.command, Command::Drain { .. }) {
                "drain"
            } else {
                "activate"
            };
            let i = client()
                .post(&format!("/v1/instances/{instance}/{verb}"), &json!({}))
                .await?;
            println!(
                "container instance {} {}",
                i["metadata"]["name"].as_str().unwrap_or(instance),
                i["status"]["status"].as_str().unwrap_or("?")
            );
        }
        Command::Rollout(RolloutCommand::Status { service, timeout }) => {
            return rollout::status(&client(), service, parse_duration(timeout)?).await
        }
        Command::Compose(c) => return compose::run(&client(), c).await,
        Command::Observe(o) => observe::run(&client(), o).await?,
        Command::Auth(a) => return auth::run(&client(), a).await,
        Command::Audit(a) => return auth::audit(&client(), a).await,
        Command::Completion { shell } => {
            completion::print(*shell, <Cli as clap::CommandFactory>::command())?
        }
        Command::Version {
            client: only,
            output,
        } => return version::run(&client(), *only, output.as_deref()).await,
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
