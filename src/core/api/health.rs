//! `/healthz` (unauthenticated, for probes and supervisors) and the controllers' status with
//! the leadership this process sees.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::time::Duration;

use super::state::ApiState;
use crate::runtime::Registry;
use crate::store::election::Leadership;

/// How long `/healthz` waits for the store before calling it unavailable.
const STORE_PROBE: Duration = Duration::from_secs(2);

/// The header `/healthz` names berth's version in (the body stays `ok\n` or the 503 reason).
pub const VERSION_HEADER: &str = "x-berth-version";

/// `ok` while the store answers and can write; 503 with the reason otherwise; either way with
/// berth's version in `x-berth-version`.
pub async fn healthz(State(st): State<ApiState>) -> Response {
    let mut r = health_body(&st).await;
    r.headers_mut().insert(
        VERSION_HEADER,
        axum::http::HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
    );
    r
}

async fn health_body(st: &ApiState) -> Response {
    if let Some(why) = st.store.failure() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store failed: {why}\n"),
        )
            .into_response();
    }
    match tokio::time::timeout(STORE_PROBE, st.store.revision()).await {
        Ok(Ok(_)) => "ok\n".into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: no answer within {STORE_PROBE:?}\n"),
        )
            .into_response(),
    }
}

/// Every controller's status; each entry also says who leads and whether it runs here (a
/// standby control plane lists the controllers it would run).
pub async fn controllers(State(st): State<ApiState>) -> Json<Value> {
    Json(controller_rows(&st.registry, &st.leadership))
}

/// The rows of `/v1/controllers` and of the dashboard's controllers table.
pub fn controller_rows(registry: &Registry, leadership: &Leadership) -> Value {
    let l = leadership.get();
    let rows: Vec<Value> = registry
        .snapshot()
        .into_iter()
        .map(|c| {
            let mut v = json!(c);
            if let Some(o) = v.as_object_mut() {
                let agent = o
                    .get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.starts_with("agent/"));
                if !agent {
                    o.insert("leader".into(), json!(l.leader));
                    o.insert("term".into(), json!(l.term));
                    o.insert("leaderSince".into(), json!(l.since));
                    o.insert("leaderChangedAt".into(), json!(l.last_change));
                    o.insert("active".into(), json!(l.is_leader));
                }
            }
            v
        })
        .collect();
    json!(rows)
}

/// The leadership of the controllers as this process sees it.
pub async fn leader(State(st): State<ApiState>) -> Json<Value> {
    Json(json!(st.leadership.get()))
}
