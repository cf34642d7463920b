//! The HTTP API (axum on hyper). Every write goes through the store; handlers never talk to
//! controllers or agents directly.

mod agent_api;
mod agent_index;
mod auth_api;
mod auth_state;
pub mod dashboard;
mod ecs;
mod error;
pub(crate) mod health;
mod hub;
mod instances_api;
mod metrics_api;
pub mod middleware;
mod objects_api;
mod observe;
mod secrets_api;
mod sources_api;
mod state;
mod tasks_api;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Task records read to answer joined agents (see `agent_index`): for tests of their cost.
pub use agent_index::task_records_read as agent_task_records_read;
pub use auth_state::{AuthState, Caller};
pub use error::ApiError;
pub use state::{ApiState, MAX_BODY_BYTES};

pub fn router(state: ApiState) -> Router {
    let app = Router::new()
        .route("/healthz", get(health::healthz))
        // ECS's JSON 1.1 protocol (`GET /` stays the dashboard).
        .route(
            "/",
            post(ecs::dispatch).get(|| async { axum::response::Redirect::to("/ui") }),
        )
        .route("/v1/apply", post(objects_api::apply))
        .route("/v1/delete", post(objects_api::delete_documents))
        .route("/v1/controllers", get(health::controllers))
        .route("/v1/controllers/leader", get(health::leader))
        .route(
            "/v1/tasks",
            post(tasks_api::run_task).get(objects_api::list_tasks),
        )
        .route("/v1/tasks/{id}/stop", post(tasks_api::stop_task))
        .route("/v1/instances/{id}/drain", post(instances_api::drain))
        .route("/v1/instances/{id}/activate", post(instances_api::activate))
        .route("/v1/sources", get(sources_api::list))
        .route("/v1/sources/{name}", get(sources_api::get_one))
        .route("/v1/sources/{name}/apply", post(sources_api::apply))
        .route("/v1/secrets/{name}/value", get(secrets_api::get_value))
        .route("/v1/{kind}", get(objects_api::list))
        .route(
            "/v1/{kind}/{name}",
            get(objects_api::get_one).delete(objects_api::delete_one),
        )
        .merge(live_routes(&state))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state.clone());
    // The auth endpoints, then authentication, authorization and the audit trail in front of
    // everything (middleware.rs).
    let mut auth = AuthState::new(state.store);
    auth.secrets = state.secrets;
    middleware::wrap(
        app.merge(auth_api::routes(auth.clone()))
            .merge(agent_api::routes(auth.clone())),
        auth,
    )
}

/// The routes served from the live view (one [`hub::Hub`] per router): the dashboard, the
/// observe endpoints and `/metrics`. Plain routes: whatever wraps them authenticates.
pub fn live_routes(state: &ApiState) -> Router<ApiState> {
    Router::new()
        .merge(dashboard::routes())
        .merge(observe::routes())
        .merge(metrics_api::routes())
        .layer(axum::Extension(hub::Hub::start(
            state.store.clone(),
            state.registry.clone(),
            state.leadership.clone(),
        )))
}

/// Connections served at once; more are closed on arrival (counted in the log), so a flood of
/// idle connections cannot exhaust the server. `BERTH_API_MAX_CONNECTIONS` overrides.
pub const MAX_CONNECTIONS: usize = 4096;
/// A client must send its request head within this.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn max_connections() -> usize {
    std::env::var("BERTH_API_MAX_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(MAX_CONNECTIONS)
}

/// Serve until `shutdown` (tests pass a listener bound to port 0), at most
/// [`MAX_CONNECTIONS`] connections at once.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let app = router(state);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections()));
    let mut refused: u64 = 0;
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "API accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(%peer, refused, "API connection limit reached; closing new connections");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            b.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(true);
            b.http2().timer(TokioTimer::new());
            let conn = b.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}
