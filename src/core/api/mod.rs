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
mod metrics_api;
pub mod middleware;
mod objects_api;
mod observe;
mod sources_api;
mod state;
mod tasks_api;

use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
        .route("/v1/sources", get(sources_api::list))
        .route("/v1/sources/{name}", get(sources_api::get_one))
        .route("/v1/sources/{name}/apply", post(sources_api::apply))
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
    let auth = AuthState::new(state.store);
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

/// Serve until `shutdown` (tests pass a listener bound to port 0).
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
