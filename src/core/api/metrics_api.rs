//! `/metrics`: OpenMetrics text from the live view ([`crate::api::hub`]) and the controllers'
//! runtime registry.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::Value;

use crate::api::hub::{Cat, Hub};
use crate::api::state::ApiState;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/metrics", get(prometheus))
}

fn u32_of(v: &Value) -> u32 {
    v.as_u64().unwrap_or(0) as u32
}

async fn prometheus(
    axum::extract::State(st): axum::extract::State<ApiState>,
    Extension(hub): Extension<Arc<Hub>>,
) -> Response {
    hub.wait_synced().await;
    let services = hub
        .rows(Cat::Service)
        .iter()
        .map(|s| crate::metrics::ServiceCounts {
            name: s["name"].as_str().unwrap_or("").to_string(),
            cluster: s["cl"].as_str().unwrap_or("").to_string(),
            desired: u32_of(&s["desired"]),
            running: u32_of(&s["running"]),
            pending: u32_of(&s["pending"]),
        })
        .collect();
    let instances = hub
        .rows(Cat::Instance)
        .iter()
        .map(|i| crate::metrics::InstanceInfo {
            id: i["id"].as_str().unwrap_or("").to_string(),
            cluster: i["cl"].as_str().unwrap_or("").to_string(),
            connected: i["up"].as_bool().unwrap_or(false),
            cpu_registered: u32_of(&i["cpu"][0]),
            cpu_remaining: u32_of(&i["cpu"][1]),
            memory_registered: u32_of(&i["mem"][0]),
            memory_remaining: u32_of(&i["mem"][1]),
            running_tasks: u32_of(&i["run"]),
        })
        .collect();
    let mut tasks_by_state: BTreeMap<String, u64> = BTreeMap::new();
    for t in hub.rows(Cat::Task) {
        *tasks_by_state
            .entry(t["ls"].as_str().unwrap_or("PROVISIONING").to_string())
            .or_default() += 1;
    }
    let text = crate::metrics::render(crate::metrics::Snapshot {
        controllers: hub.registry().snapshot(),
        durations: hub.registry().durations(),
        aggregate: hub.fresh_aggregate(),
        services,
        instances,
        tasks_by_state,
        leadership: Some(st.leadership.get()),
    });
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}
