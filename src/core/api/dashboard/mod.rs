//! The dashboard at `/ui`: HTML/JS/CSS embedded in the binary (no build step, works offline),
//! its snapshot and its Server-Sent-Events feed, both from the live view ([`crate::api::hub`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use crate::api::hub::Hub;
use crate::api::state::ApiState;

/// The dashboard's routes (the hub comes as an extension layered by the API router).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/app.js", get(app_js))
        .route("/ui/app.css", get(app_css))
        .route("/ui/api/snapshot", get(snapshot))
        .route("/ui/api/events", get(sse))
}

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}
async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}
async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

async fn snapshot(Extension(hub): Extension<Arc<Hub>>) -> Response {
    hub.wait_synced().await;
    ([(header::CONTENT_TYPE, "application/json")], hub.snapshot()).into_response()
}

/// The dashboard's live feed: a `snapshot` event, then `batch` (coalesced row changes),
/// `metrics`, `controllers` and `event` events. A client that falls behind gets a fresh
/// snapshot instead of the batches it missed.
async fn sse(
    Extension(hub): Extension<Arc<Hub>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    hub.wait_synced().await;
    let (snap, rx) = hub.snapshot_and_subscribe();
    let first = futures::stream::once(async move {
        Ok::<_, Infallible>(Event::default().event("snapshot").data(snap))
    });
    let live = futures::stream::unfold((rx, hub), |(mut rx, hub)| async move {
        match rx.recv().await {
            Ok(m) => {
                let ev = Event::default().event(m.event).data(&*m.data);
                Some((Ok(ev), (rx, hub)))
            }
            Err(RecvError::Lagged(_)) => {
                rx = rx.resubscribe();
                let ev = Event::default().event("snapshot").data(hub.snapshot());
                Some((Ok(ev), (rx, hub)))
            }
            Err(RecvError::Closed) => None,
        }
    });
    Sse::new(first.chain(live)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
