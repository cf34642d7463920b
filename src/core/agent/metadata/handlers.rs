//! The metadata and relative-URI credentials handlers. Each resolves its opaque id to a
//! container of this instance (labels), and answers only a caller whose address is one of
//! that task's (the DNAT keeps the container's source address).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bollard::models::{ContainerInspectResponse, ContainerSummary};
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions};
use futures::StreamExt;
use serde_json::{json, Value};

use super::super::docker as d;
use super::{is_opaque_id, shapes, Metadata, LABEL_CREDENTIALS_ID, LABEL_METADATA_ID};
use crate::auth::sigv4::DEFAULT_REGION;
use crate::model::{keys, Kind, Task, TaskDefinition};

type St = State<Arc<Metadata>>;

#[derive(Debug, thiserror::Error)]
enum MetaError {
    #[error("no such task metadata or credentials id")]
    NotFound,
    #[error("this id belongs to another task")]
    Forbidden,
    #[error("{0}")]
    Unavailable(String),
}

impl IntoResponse for MetaError {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            MetaError::NotFound => (StatusCode::NOT_FOUND, "NotFound"),
            MetaError::Forbidden => (StatusCode::FORBIDDEN, "AccessDenied"),
            MetaError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
        };
        (
            status,
            Json(json!({"code": code, "message": self.to_string()})),
        )
            .into_response()
    }
}

fn unavailable(e: impl std::fmt::Display) -> MetaError {
    MetaError::Unavailable(e.to_string())
}

/// What an id resolves to: the task, the container carrying the id, the task's containers.
struct Resolved {
    task_id: String,
    container_id: String,
    containers: Vec<ContainerSummary>,
}

fn summary_ips(c: &ContainerSummary) -> Vec<String> {
    crate::agent::docker::network_ips(
        c.network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref()),
    )
}

async fn resolve(
    m: &Metadata,
    label: &str,
    id: &str,
    peer: SocketAddr,
) -> Result<Resolved, MetaError> {
    if !is_opaque_id(id) {
        return Err(MetaError::NotFound);
    }
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{}={}", d::LABEL_INSTANCE, m.instance),
            format!("{label}={id}"),
        ],
    )]);
    let found = m
        .docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(unavailable)?;
    let Some(c) = found.into_iter().next() else {
        return Err(MetaError::NotFound);
    };
    let task_id = c
        .labels
        .as_ref()
        .and_then(|l| l.get(d::LABEL_TASK).cloned())
        .ok_or(MetaError::NotFound)?;
    let containers = d::list_task(&m.docker, &m.instance, &task_id)
        .await
        .map_err(unavailable)?;
    let peer_ip = peer.ip().to_canonical().to_string();
    if !containers
        .iter()
        .flat_map(summary_ips)
        .any(|ip| ip == peer_ip)
    {
        tracing::warn!(task = %task_id, source = %peer_ip, "task metadata: refused a caller that is not the task");
        return Err(MetaError::Forbidden);
    }
    Ok(Resolved {
        task_id,
        container_id: c.id.unwrap_or_default(),
        containers,
    })
}

async fn load(m: &Metadata, task_id: &str) -> Result<(Task, Option<TaskDefinition>), MetaError> {
    let task: Task = crate::objects::get(&*m.store, &keys::key(Kind::Task, task_id))
        .await
        .map_err(unavailable)?
        .ok_or(MetaError::NotFound)?;
    let td = crate::objects::taskdef(&*m.store, &task.spec.task_definition)
        .await
        .ok()
        .flatten();
    Ok((task, td))
}

async fn inspect(m: &Metadata, id: &str) -> Result<ContainerInspectResponse, MetaError> {
    m.docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .map_err(unavailable)
}

fn is_pause(c: &ContainerSummary) -> bool {
    c.labels
        .as_ref()
        .and_then(|l| l.get(d::LABEL_CONTAINER))
        .is_some_and(|n| n == d::PAUSE)
}

/// The task's addresses held by its pause container (awsvpc), if any.
fn pause_ips(r: &Resolved) -> Vec<String> {
    r.containers
        .iter()
        .filter(|c| is_pause(c))
        .flat_map(summary_ips)
        .collect()
}

/// The task's own (non-pause) containers' Docker ids.
fn app_ids(r: &Resolved) -> Vec<String> {
    let mut ids: Vec<String> = r
        .containers
        .iter()
        .filter(|c| !is_pause(c))
        .filter_map(|c| c.id.clone())
        .collect();
    ids.sort();
    ids
}

pub async fn container(
    State(m): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    let go = async {
        let r = resolve(&m, LABEL_METADATA_ID, &id, peer).await?;
        let (task, td) = load(&m, &r.task_id).await?;
        let i = inspect(&m, &r.container_id).await?;
        Ok::<_, MetaError>(shapes::container(
            DEFAULT_REGION,
            &task,
            td.as_ref(),
            &i,
            &pause_ips(&r),
        ))
    };
    match go.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn task_answer(m: &Metadata, id: &str, peer: SocketAddr, tags: bool) -> Response {
    let go = async {
        let r = resolve(m, LABEL_METADATA_ID, id, peer).await?;
        let (task, td) = load(m, &r.task_id).await?;
        let ips = pause_ips(&r);
        let mut containers = Vec::new();
        for cid in app_ids(&r) {
            if let Ok(i) = inspect(m, &cid).await {
                containers.push(shapes::container(
                    DEFAULT_REGION,
                    &task,
                    td.as_ref(),
                    &i,
                    &ips,
                ));
            }
        }
        Ok::<_, MetaError>(shapes::task(
            DEFAULT_REGION,
            &task,
            td.as_ref(),
            containers,
            tags,
        ))
    };
    match go.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn task(
    State(m): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    task_answer(&m, &id, peer, false).await
}

pub async fn task_with_tags(
    State(m): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    task_answer(&m, &id, peer, true).await
}

/// Docker's stats JSON for one container (one sample, with `precpu_stats`), as ECS serves it.
async fn stats_of(m: &Metadata, id: &str) -> Value {
    let opts = bollard::query_parameters::StatsOptionsBuilder::default()
        .stream(false)
        .one_shot(false)
        .build();
    match m.docker.stats(id, Some(opts)).next().await {
        Some(Ok(s)) => serde_json::to_value(s).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

pub async fn container_stats(
    State(m): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    match resolve(&m, LABEL_METADATA_ID, &id, peer).await {
        Ok(r) => Json(stats_of(&m, &r.container_id).await).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `{DockerId: stats}` for each of the task's containers.
pub async fn task_stats(
    State(m): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    let r = match resolve(&m, LABEL_METADATA_ID, &id, peer).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let ids = app_ids(&r);
    let samples = futures::future::join_all(ids.iter().map(|c| stats_of(&m, c))).await;
    let out: serde_json::Map<String, Value> = ids.into_iter().zip(samples).collect();
    Json(Value::Object(out)).into_response()
}

/// `GET /v2/credentials/<task's opaque id>`: the task role's credentials, through the
/// credentials endpoint's checks (token, placement, expiry) and audit.
pub async fn credentials(
    State(m): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let r = match resolve(&m, LABEL_CREDENTIALS_ID, &id, peer).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let token = match m.secrets.container_token(&*m.store, &r.task_id).await {
        Ok(t) => t,
        Err(e) => return unavailable(e).into_response(),
    };
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    super::super::credentials_endpoint::fetch_as(&m.creds, peer, &r.task_id, &token, ua).await
}

pub async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"code": "NotFound", "message": "GET /v4/<id>[/task|/taskWithTags|/stats|/task/stats] or /v2/credentials/<id>"})),
    )
        .into_response()
}
