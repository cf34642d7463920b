//! `berth bench store`: transactions per second of the store backends, sequential and with N
//! concurrent writers, side by side: the embedded store (a temp dir) and etcd (the URL given, or
//! a single-member etcd started in a temp dir when the `etcd` binary is installed).

use std::sync::Arc;
use std::time::Instant;

use berth_core::store::DynStore;

use super::etcd::{etcd_binary, EtcdServer};

/// The value written by every transaction.
const VALUE_BYTES: usize = 256;

/// One backend to measure, as named on the command line.
enum Target {
    Embedded,
    /// Start an etcd in a temp dir.
    EtcdLocal,
    /// An etcd already running (`etcd://host:port[,host:port…]` or `http://host:port`).
    EtcdUrl(String),
}

fn targets(stores: &[String]) -> anyhow::Result<Vec<Target>> {
    if stores.is_empty() {
        return Ok(vec![Target::Embedded, Target::EtcdLocal]);
    }
    stores
        .iter()
        .map(|s| match s.as_str() {
            "embedded" => Ok(Target::Embedded),
            "etcd" => Ok(Target::EtcdLocal),
            url if url.starts_with("etcd://") => Ok(Target::EtcdUrl(url.to_string())),
            url if url.starts_with("http://") => Ok(Target::EtcdUrl(format!(
                "etcd://{}",
                url.trim_start_matches("http://")
            ))),
            other => anyhow::bail!("--store {other:?}: expected embedded, etcd or an etcd URL"),
        })
        .collect()
}

struct Row {
    store: String,
    sequential: f64,
    concurrent: f64,
}

/// `ops` puts one after another, then `ops` puts spread over `writers` concurrent writers:
/// transactions per second of each.
async fn measure(store: &DynStore, ops: u32, writers: u32) -> anyhow::Result<(f64, f64)> {
    let value = vec![b'x'; VALUE_BYTES];
    let t = Instant::now();
    for i in 0..ops {
        store.put(&format!("/bench/seq/{i}"), value.clone()).await?;
    }
    let sequential = ops as f64 / t.elapsed().as_secs_f64();

    let per = ops.div_ceil(writers);
    let t = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, value) = (store.clone(), value.clone());
            tokio::spawn(async move {
                for i in 0..per {
                    store
                        .put(&format!("/bench/par/{w}/{i}"), value.clone())
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let concurrent = (per * writers) as f64 / t.elapsed().as_secs_f64();
    Ok((sequential, concurrent))
}

async fn row(target: &Target, ops: u32, writers: u32) -> anyhow::Result<Option<Row>> {
    match target {
        Target::Embedded => {
            let dir = tempfile::Builder::new()
                .prefix("berth-bench-store-")
                .tempdir()?;
            let store: DynStore = Arc::new(berth_core::store::embedded::EmbeddedStore::open(
                dir.path().join("store"),
            )?);
            let (sequential, concurrent) = measure(&store, ops, writers).await?;
            Ok(Some(Row {
                store: "embedded (temp dir)".into(),
                sequential,
                concurrent,
            }))
        }
        Target::EtcdLocal => {
            if etcd_binary().is_none() {
                println!(
                    "etcd: not measured (no `etcd` binary; Debian: etcd-server, or give a URL)"
                );
                return Ok(None);
            }
            let server = tokio::task::spawn_blocking(EtcdServer::try_start).await??;
            let store = berth_core::store::open(&server.url()).await?;
            let (sequential, concurrent) = measure(&store, ops, writers).await?;
            drop(store);
            drop(server);
            Ok(Some(Row {
                store: "etcd (started, temp dir)".into(),
                sequential,
                concurrent,
            }))
        }
        Target::EtcdUrl(url) => {
            let store = berth_core::store::open(url).await?;
            let (sequential, concurrent) = measure(&store, ops, writers).await?;
            Ok(Some(Row {
                store: format!("etcd {url}"),
                sequential,
                concurrent,
            }))
        }
    }
}

pub async fn run(stores: &[String], ops: u32, writers: u32) -> anyhow::Result<()> {
    anyhow::ensure!(
        ops > 0 && writers > 0,
        "--ops and --writers must be positive"
    );
    let targets = targets(stores)?;
    println!(
        "store: {ops} puts of {VALUE_BYTES}-byte values one after another, then {ops} over {writers} concurrent writers"
    );
    let mut rows = Vec::new();
    for t in &targets {
        if let Some(r) = row(t, ops, writers).await? {
            rows.push(r);
        }
    }
    let conc = format!("{writers} writers txn/s");
    println!("{:<28} {:>18} {:>20}", "store", "sequential txn/s", conc);
    for r in &rows {
        println!(
            "{:<28} {:>18.0} {:>20.0}",
            r.store, r.sequential, r.concurrent
        );
    }
    if let [a, b, ..] = rows.as_slice() {
        println!(
            "{} / {}: sequential {:.2}x, concurrent {:.2}x",
            a.store,
            b.store,
            a.sequential / b.sequential.max(1e-9),
            a.concurrent / b.concurrent.max(1e-9)
        );
    }
    Ok(())
}
