//! The observe endpoints behind the CLI: `berth events` (`/v1/events`), `berth get --watch`
//! (`/v1/watch/{kind}`), `berth top` (`/v1/top/{what}`) and task logs (`/v1/tasks/{id}/logs`,
//! proxied to the agent that runs the task).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::api::error::ApiError;
use crate::api::hub::{Cat, Hub};
use crate::api::state::ApiState;
use crate::model::{keys, ContainerInstance, Kind, Task};
use crate::objects;
use crate::runtime::WatcherEvent;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/events", get(events))
        .route("/v1/watch/{kind}", get(watch_kind))
        .route("/v1/top/{what}", get(top))
        .route("/v1/tasks/{id}/logs", get(task_logs))
}

#[derive(Debug, Default, Deserialize)]
struct EventsQuery {
    follow: Option<String>,
    service: Option<String>,
}

fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("1" | "true" | "yes" | ""))
}

fn ndjson(rx: tokio::sync::mpsc::Receiver<Value>) -> Response {
    let body = tokio_stream::wrappers::ReceiverStream::new(rx).map(|v| {
        let mut line = v.to_string();
        line.push('\n');
        Ok::<_, Infallible>(Bytes::from(line))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `GET /v1/events[?follow=1][&service=S]`: recent service and task events (oldest first);
/// following streams them as NDJSON as they happen.
async fn events(Extension(hub): Extension<Arc<Hub>>, Query(q): Query<EventsQuery>) -> Response {
    hub.wait_synced().await;
    let keep = move |e: &Value| {
        q.service
            .as_deref()
            .is_none_or(|s| e["service"].as_str() == Some(s))
    };
    let mut live = hub.subscribe_events();
    let recent: Vec<Value> = hub.recent_events().into_iter().filter(&keep).collect();
    if !truthy(&q.follow) {
        return Json(recent).into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        for e in recent {
            if tx.send(e).await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                r = live.recv() => match r {
                    Ok(e) if keep(&e) => {
                        if tx.send(e).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
    ndjson(rx)
}

fn to_json(kv: &crate::store::KeyValue) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(&kv.value).ok()?;
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("revision".into(), json!(kv.mod_revision));
    }
    Some(v)
}

/// `GET /v1/watch/{kind}`: NDJSON `{"type": "ADDED|MODIFIED|DELETED", "object": …}`, the
/// current objects first (as ADDED), then every change.
async fn watch_kind(State(st): State<ApiState>, Path(kind): Path<String>) -> Response {
    let Some(kind) = Kind::parse(&kind) else {
        return ApiError::not_found(format!("unknown kind {kind:?}")).into_response();
    };
    let mut stream = crate::runtime::watcher(st.store.clone(), keys::prefix(kind));
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        let mut known: HashSet<String> = HashSet::new();
        loop {
            let ev = tokio::select! {
                _ = tx.closed() => return,
                ev = stream.next() => match ev { Some(ev) => ev, None => return },
            };
            let mut out = Vec::new();
            match ev {
                WatcherEvent::Restarted(kvs) => {
                    let now: HashSet<String> = kvs.iter().map(|kv| kv.key.clone()).collect();
                    for k in known.difference(&now) {
                        out.push(json!({"type": "DELETED", "key": k}));
                    }
                    for kv in &kvs {
                        let ty = if known.contains(&kv.key) {
                            "MODIFIED"
                        } else {
                            "ADDED"
                        };
                        if let Some(o) = to_json(kv) {
                            out.push(json!({"type": ty, "object": o}));
                        }
                    }
                    known = now;
                }
                WatcherEvent::Applied(kv) => {
                    let ty = if known.insert(kv.key.clone()) {
                        "ADDED"
                    } else {
                        "MODIFIED"
                    };
                    if let Some(o) = to_json(&kv) {
                        out.push(json!({"type": ty, "object": o}));
                    }
                }
                WatcherEvent::Deleted(kv) => {
                    known.remove(&kv.key);
                    let o = to_json(&kv).unwrap_or(Value::Null);
                    out.push(json!({"type": "DELETED", "key": kv.key, "object": o}));
                }
            }
            for v in out {
                if tx.send(v).await.is_err() {
                    return;
                }
            }
        }
    });
    ndjson(rx)
}

/// `GET /v1/top/services|tasks|clusters|taskdefinitions|instances`: utilization now.
async fn top(Extension(hub): Extension<Arc<Hub>>, Path(what): Path<String>) -> Response {
    hub.wait_synced().await;
    let agg = hub.fresh_aggregate();
    let group = |g: &crate::metrics::Group| {
        json!({
            "tasks": g.tasks,
            "cpuUtilization": g.cpu_utilization(),
            "memoryUtilization": g.memory_utilization(),
            "cpuCores": g.cpu_cores,
            "memoryBytes": g.mem_bytes,
        })
    };
    let out: Vec<Value> = match what.as_str() {
        "services" | "service" | "svc" => hub
            .rows(Cat::Service)
            .into_iter()
            .map(|s| {
                let name = s["name"].as_str().unwrap_or("").to_string();
                let mut v = agg
                    .by_service
                    .get(&name)
                    .map(group)
                    .unwrap_or_else(|| group(&crate::metrics::Group::default()));
                v["name"] = json!(name);
                v["cluster"] = s["cl"].clone();
                v["desired"] = s["desired"].clone();
                v["running"] = s["running"].clone();
                v
            })
            .collect(),
        "tasks" | "task" => hub
            .rows(Cat::Task)
            .into_iter()
            .filter(|t| t["ls"] != "STOPPED")
            .map(|t| {
                let id = t["id"].as_str().unwrap_or("").to_string();
                let u = agg.by_task.get(&id).cloned().unwrap_or_default();
                json!({
                    "name": id, "service": t["svc"], "taskDefinition": t["td"],
                    "instance": t["inst"], "lastStatus": t["ls"],
                    "cpuPercent": u.cpu_percent, "memoryBytes": u.mem_bytes,
                    "memoryLimit": u.mem_limit, "sampled": agg.by_task.contains_key(&id),
                })
            })
            .collect(),
        "clusters" | "cluster" => agg
            .by_cluster
            .iter()
            .map(|(k, g)| {
                let mut v = group(g);
                v["name"] = json!(k);
                v
            })
            .collect(),
        "taskdefinitions" | "td" | "families" => agg
            .by_family
            .iter()
            .map(|(k, g)| {
                let mut v = group(g);
                v["name"] = json!(k);
                v
            })
            .collect(),
        "instances" | "containerinstances" => agg
            .by_instance
            .iter()
            .map(|(k, g)| {
                let mut v = group(g);
                v["name"] = json!(k);
                v
            })
            .collect(),
        other => {
            return ApiError::not_found(format!(
                "cannot top {other:?}; use services, tasks, clusters, taskdefinitions or instances"
            ))
            .into_response()
        }
    };
    Json(out).into_response()
}

/// `GET /v1/tasks/{id}/logs?container=&follow=&since=&tail=&timestamps=`: proxied to the
/// log endpoint of the agent that runs (or ran) the task.
async fn task_logs(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    match proxy_logs(&st, &id, q.as_deref().unwrap_or("")).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn proxy_logs(st: &ApiState, id: &str, query: &str) -> Result<Response, ApiError> {
    let store = &*st.store;
    let task: Option<Task> = objects::get(store, &keys::key(Kind::Task, id)).await?;
    let Some(task) = task else {
        return Err(ApiError::not_found(format!("task {id:?} not found")));
    };
    let Some(instance) = task.status.container_instance.clone() else {
        return Err(ApiError::not_found(format!(
            "task {id} has not been placed on an instance yet; no logs"
        )));
    };
    let ci: Option<ContainerInstance> =
        objects::get(store, &keys::key(Kind::ContainerInstance, &instance)).await?;
    let endpoint = ci
        .as_ref()
        .and_then(|c| {
            c.metadata
                .annotations
                .get(crate::model::LOGS_ENDPOINT_ANNOTATION)
        })
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "instance {instance} does not advertise a log endpoint (is its agent running?)"
                ),
            )
        })?;
    let url = if query.is_empty() {
        format!("{endpoint}/logs/{id}")
    } else {
        format!("{endpoint}/logs/{id}?{query}")
    };
    let secret = store
        .get(&crate::auth::identity::logs_secret_key(&instance))
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .unwrap_or_default();
    let resp = reqwest::Client::new()
        .get(&url)
        .bearer_auth(secret)
        .send()
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("cannot reach the agent of instance {instance} at {endpoint}: {e}"),
            )
        })?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(ApiError::new(
            StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
            text.trim().to_string(),
        ));
    }
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(resp.bytes_stream()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}
