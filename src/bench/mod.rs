//! `berth bench …`: numbers beside the obvious alternative, measured in the same run.
//! A layer above `node` (it starts whole nodes) and below `cli` (ARCHITECTURE.md). The shared
//! harness is in `harness` (a node to measure, the raw-Docker side) and `etcd` (an etcd server).

pub mod chaos;
pub mod converge;
pub mod dashboard;
pub mod etcd;
pub mod etcd_cluster;
pub mod gitops;
pub mod harness;
pub mod lb;
pub mod recovery;
pub mod scale;
pub mod store;
pub mod webdriver;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Kill containers, agents, control planes and an etcd member at random while services
    /// run on a real cluster; check the invariants throughout (exit non-zero on a violation).
    Chaos {
        #[arg(long, default_value_t = 2.0)]
        minutes: f64,
        #[arg(long, default_value_t = 3)]
        services: u32,
        #[arg(long, default_value_t = 3)]
        replicas: u32,
    },
    /// The dashboard with N simulated tasks (time to first render, payload size, live update
    /// latency) and the agent's stats sampling cost per 100 containers.
    Dashboard {
        #[arg(long, default_value_t = 1000)]
        tasks: u32,
        /// Real busybox containers for the stats-sampling cost (0: skip).
        #[arg(long, default_value_t = 100)]
        containers: u32,
        /// How long the sampler runs over them.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        #[arg(long, default_value = "local/busybox:1")]
        image: String,
    },
    /// Time from apply to N tasks RUNNING, beside N raw Docker create+start calls.
    Converge {
        #[arg(long, default_value_t = 20)]
        replicas: u32,
        #[arg(long, default_value = "local/busybox:1")]
        image: String,
        /// Rounds of each (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: u32,
    },
    /// Time from a commit (or a file renamed into a plain folder) to the store holding the new
    /// desired state, for a small and a large folder, beside Argo CD's and Flux's polling.
    Gitops {
        /// Changes per scenario (the median is reported).
        #[arg(long, default_value_t = 50)]
        changes: u32,
        #[arg(long, default_value_t = 5)]
        small: usize,
        #[arg(long, default_value_t = 1000)]
        large: usize,
    },
    /// Throughput and latency straight to in-process targets, through berth's load balancer
    /// and through nginx (skipped when not installed), same targets, same run.
    Lb {
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// kill -9 a container of a service; time until the replacement is RUNNING and HEALTHY,
    /// beside a raw `docker run` of the same image.
    Recovery {
        #[arg(long, default_value_t = 5)]
        replicas: u32,
        #[arg(long, default_value_t = 20)]
        runs: u32,
        #[arg(long, default_value = "local/busybox:1")]
        image: String,
    },
    /// The control plane against N simulated instances (fakes, no Docker): time until every
    /// task is placed, placements/s on an empty and on a full cluster, idle CPU, p99 reconcile
    /// time and RSS.
    Scale {
        #[arg(long, default_value_t = 1000)]
        instances: u32,
        #[arg(long, default_value_t = 10000)]
        tasks: u32,
        /// Tasks placed on an empty cluster and again on the full one (the rates compared).
        #[arg(long, default_value_t = 1000)]
        batch: u32,
        /// Batches placed on each of the two clusters (each deleted and drained before the
        /// next, so every one starts from the same running count); the median rate is compared.
        #[arg(long, default_value_t = 3)]
        repeat: u32,
        #[arg(long, default_value = "embedded", value_name = "embedded|etcd")]
        store: String,
        /// Upper bound of each phase, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Quiet window for the idle CPU figure, in seconds. The default is one resync period
        /// of the controllers (30 s): a shorter window catches a resync or misses it, and
        /// reads ~2.5% or ~0.2% by chance.
        #[arg(long, default_value_t = 30)]
        idle: u64,
    },
    /// Store transactions per second, sequential and with N concurrent writers: the embedded
    /// store beside etcd (the URL given, or one started in a temp dir).
    Store {
        /// `embedded`, `etcd` (start one in a temp dir) or an etcd URL (`etcd://host:port`);
        /// repeat to compare. Default: embedded and a started etcd.
        #[arg(long = "store", value_name = "embedded|etcd|URL")]
        stores: Vec<String>,
        /// Transactions per measurement (each a put of a 256-byte value).
        #[arg(long, default_value_t = 2000)]
        ops: u32,
        /// Concurrent writers for the second measurement.
        #[arg(long, default_value_t = 16)]
        writers: u32,
    },
}

pub async fn run(cmd: &BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Chaos {
            minutes,
            services,
            replicas,
        } => {
            self::chaos::run(&self::chaos::Options {
                minutes: *minutes,
                services: *services,
                replicas: *replicas,
            })
            .await
        }
        BenchCommand::Dashboard {
            tasks,
            containers,
            seconds,
            image,
        } => self::dashboard::run(*tasks, *containers, *seconds, image).await,
        BenchCommand::Converge {
            replicas,
            image,
            runs,
        } => self::converge::run(*replicas, image, *runs).await,
        BenchCommand::Gitops {
            changes,
            small,
            large,
        } => self::gitops::run(*changes, *small, *large).await,
        BenchCommand::Lb {
            connections,
            seconds,
        } => self::lb::run(*connections, *seconds).await,
        BenchCommand::Recovery {
            replicas,
            runs,
            image,
        } => self::recovery::run(*replicas, *runs, image).await,
        BenchCommand::Scale {
            instances,
            tasks,
            batch,
            repeat,
            store,
            timeout,
            idle,
        } => {
            self::scale::run(&self::scale::Options {
                instances: *instances,
                tasks: *tasks,
                batch: *batch,
                repeat: (*repeat).max(1),
                store: store.clone(),
                timeout: std::time::Duration::from_secs(*timeout),
                idle: std::time::Duration::from_secs(*idle),
            })
            .await
        }
        BenchCommand::Store {
            stores,
            ops,
            writers,
        } => self::store::run(stores, *ops, *writers).await,
    }
}
