//! The request path: accept (HTTP/1.1 keep-alive or HTTP/2), route, pick a target, forward over
//! a pooled keep-alive connection, retry a failed connect once elsewhere for idempotent
//! requests, and answer 502/503/504 without leaking target details.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;

use super::routing::{route, Route};
use super::table::SharedTable;
use super::targets::{pick, InFlight};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;
pub type Client = hyper_util::client::legacy::Client<HttpConnector, Body>;

/// Request bodies above this are refused with 413.
pub const MAX_REQUEST_BODY: usize = 10 * 1024 * 1024;
/// Request line + headers above this are refused by hyper (431/400).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// A client must send its headers within this (slow-loris guard).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A target must answer within this.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// Tries of an idempotent request without a body whose target gave no response (each on
/// another target).
const ATTEMPTS: u32 = 3;

pub fn client() -> Client {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(2)));
    http.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build(http)
}

pub async fn serve(
    listener: TcpListener,
    port: u16,
    table: SharedTable,
    client: Client,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (table, client, stop) = (table.clone(), client.clone(), shutdown.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let (table, client) = (table.clone(), client.clone());
                async move { Ok::<_, Infallible>(handle(req, peer, port, &table, &client).await) }
            });
            let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            b.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .keep_alive(true);
            b.http2().timer(TokioTimer::new());
            let conn = b.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

fn plain(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{msg}\n")))
            .map_err(|e| -> BoxError { match e {} })
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    r
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    port: u16,
    table: &SharedTable,
    client: &Client,
) -> Response<Body> {
    let t = table.read().unwrap().clone();
    let Some(listener) = t.listeners.get(&port) else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "listener not configured");
    };
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_string();
    let group_name = match route(listener, &host, req.uri().path()) {
        Route::Forward(g) => g,
        Route::Fixed {
            status,
            content_type,
            body,
        } => {
            let mut r = plain(
                StatusCode::from_u16(status).unwrap_or(StatusCode::NOT_FOUND),
                "",
            );
            *r.body_mut() = Full::new(Bytes::from(body))
                .map_err(|e| -> BoxError { match e {} })
                .boxed();
            if let Ok(v) = HeaderValue::from_str(&content_type) {
                r.headers_mut().insert("content-type", v);
            }
            return r;
        }
    };
    let Some(group) = t.groups.get(&group_name).cloned() else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "no healthy targets");
    };

    // Build the upstream request once; the body is buffered only if it may be retried.
    let (mut parts, body) = req.into_parts();
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    let client_ip = peer.ip().to_string();
    let xff = match parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prev) => format!("{prev}, {client_ip}"),
        None => client_ip,
    };
    for (k, v) in [
        ("x-forwarded-for", xff),
        ("x-forwarded-proto", "http".to_string()),
        ("x-forwarded-port", port.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            parts.headers.insert(HeaderName::from_static(k), v);
        }
    }
    let has_body = parts
        .headers
        .get("content-length")
        .is_some_and(|v| v.as_bytes() != b"0")
        || parts.headers.contains_key("transfer-encoding");
    let retryable = idempotent(&parts.method) && !has_body;
    let limited: Body = Limited::new(body, MAX_REQUEST_BODY)
        .map_err(|e| -> BoxError { e })
        .boxed();
    let mut body = Some(limited);
    let mut excluded: Option<SocketAddr> = None;
    for attempt in 0..ATTEMPTS {
        let Some(target) = pick(
            &group.targets,
            group.spec.algorithm,
            &group.cursor,
            excluded.as_ref(),
        ) else {
            return plain(StatusCode::SERVICE_UNAVAILABLE, "no registered targets");
        };
        let guard = InFlight::new(target.clone());
        let uri = format!(
            "http://{}{}",
            target.addr,
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
        );
        let mut up = Request::builder()
            .method(parts.method.clone())
            .uri(uri)
            .version(hyper::Version::HTTP_11);
        for (k, v) in parts.headers.iter() {
            up = up.header(k, v);
        }
        let b: Body = match body.take() {
            Some(b) if attempt == 0 => b,
            _ => Full::new(Bytes::new())
                .map_err(|e| -> BoxError { match e {} })
                .boxed(),
        };
        let up = match up.body(b) {
            Ok(r) => r,
            Err(_) => return plain(StatusCode::BAD_REQUEST, "bad request"),
        };
        match tokio::time::timeout(UPSTREAM_TIMEOUT, client.request(up)).await {
            Ok(Ok(resp)) => {
                let (mut rp, rb) = resp.into_parts();
                for h in HOP_BY_HOP {
                    rp.headers.remove(h);
                }
                // The in-flight count lasts until the body is fully sent (drain-aware).
                let rb = rb
                    .map_frame(move |f| {
                        let _keep = &guard;
                        f
                    })
                    .map_err(|e| -> BoxError { Box::new(e) })
                    .boxed();
                return Response::from_parts(rp, rb);
            }
            Ok(Err(e)) => {
                let connect_failed = e.is_connect();
                if connect_failed && target.eject() {
                    tracing::warn!(target = %target.addr, task = %target.task_id, "ejected after a connection failure");
                }
                // No response came back: refused, or closed before the response head (Docker's
                // userland proxy accepts on a host port whose container is not listening yet).
                // An idempotent request without a body goes to another target, as nginx's
                // default `proxy_next_upstream error` does.
                if retryable && attempt + 1 < ATTEMPTS {
                    excluded = Some(target.addr);
                    continue;
                }
                if format!("{e:?}").contains("length limit exceeded") {
                    return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
                }
                return plain(StatusCode::BAD_GATEWAY, "bad gateway");
            }
            Err(_) => return plain(StatusCode::GATEWAY_TIMEOUT, "gateway timeout"),
        }
    }
    plain(StatusCode::BAD_GATEWAY, "bad gateway")
}

/// The shared table type, re-exported for `berth lb` and tests.
pub type Table = Arc<super::table::Table>;
