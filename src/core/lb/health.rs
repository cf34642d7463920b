//! Active health checks of every target, and `drained` reports for idle draining targets.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::table::SharedTable;
use super::targets::{Health, TargetRuntime};
use crate::model::lb::{lb_keys, TargetHealth};
use crate::model::lb::{status_matches, TargetHealthCheck};
use crate::model::now;
use crate::store::DynStore;

type CheckClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

pub async fn run(store: DynStore, table: SharedTable, shutdown: CancellationToken) {
    let client: CheckClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build_http();
    let mut next_due: HashMap<usize, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let t = table.read().unwrap().clone();
        let now = Instant::now();
        let mut live = std::collections::HashSet::new();
        for g in t.groups.values() {
            for target in &g.targets {
                let id = Arc::as_ptr(target) as usize;
                live.insert(id);
                report_drained(&store, target).await;
                let due = next_due.entry(id).or_insert(now);
                if *due > now {
                    continue;
                }
                // New targets are checked every 500 ms until they have a verdict, so a fresh
                // task takes traffic as soon as it can serve (ALB makes it wait a full interval).
                let every = if target.health() == Health::Initial {
                    Duration::from_millis(500)
                } else {
                    Duration::from_secs(g.spec.health_check.interval_seconds.max(1) as u64)
                };
                *due = now + every;
                let (client, store, target, hc) = (
                    client.clone(),
                    store.clone(),
                    target.clone(),
                    g.spec.health_check.clone(),
                );
                tokio::spawn(async move { check(&client, &store, &target, &hc).await });
            }
        }
        next_due.retain(|k, _| live.contains(k));
    }
}

async fn check(
    client: &CheckClient,
    store: &DynStore,
    t: &Arc<TargetRuntime>,
    hc: &TargetHealthCheck,
) {
    let uri = format!("http://{}{}", t.addr, hc.path);
    let req = match hyper::Request::get(&uri)
        .header("user-agent", "berth-lb-health/1")
        .body(Empty::new())
    {
        Ok(r) => r,
        Err(_) => return,
    };
    let timeout = Duration::from_secs(hc.timeout_seconds.max(1) as u64);
    let (ok, reason) = match tokio::time::timeout(timeout, client.request(req)).await {
        Ok(Ok(resp)) => {
            let code = resp.status().as_u16();
            if status_matches(&hc.matcher, code) {
                (true, String::new())
            } else {
                (
                    false,
                    format!("Health checks failed with these codes: [{code}]"),
                )
            }
        }
        Ok(Err(e)) => (false, format!("Target.FailedHealthChecks: {e}")),
        Err(_) => (false, "Request timed out".to_string()),
    };
    if let Some(state) = t.observe(ok, hc) {
        tracing::info!(target = %t.addr, task = %t.task_id, group = %t.target_group, state = state.as_str(), %reason, "target health changed");
        report(store, t, state.as_str(), &reason).await;
    }
}

async fn report_drained(store: &DynStore, t: &Arc<TargetRuntime>) {
    if t.draining.load(Ordering::Acquire)
        && t.in_flight.load(Ordering::Acquire) == 0
        && !t.drained_reported.swap(true, Ordering::AcqRel)
    {
        report(store, t, "drained", "no request in flight").await;
    }
}

/// Write a target's health as this load balancer sees it (on transitions only).
pub async fn report(store: &DynStore, t: &TargetRuntime, state: &str, reason: &str) {
    let h = TargetHealth {
        state: state.into(),
        service: t.service.clone(),
        reason: reason.into(),
        updated_at: now(),
    };
    let key = lb_keys::health(&t.target_group, &t.task_id);
    // Only while the target is still registered: a late report must not resurrect a record.
    let txn = crate::store::Txn::new()
        .when(crate::store::Compare::mod_revision(
            lb_keys::target(&t.target_group, &t.task_id),
            0,
        ))
        .or_else(crate::store::Op::put(
            key,
            serde_json::to_vec(&h).unwrap_or_default(),
        ));
    if let Err(e) = store.txn(txn).await {
        tracing::warn!(error = %e, "could not record target health");
    }
}
