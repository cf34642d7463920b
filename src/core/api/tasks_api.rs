//! run-task and stop-task.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{decode, ApiError};
use super::state::ApiState;
use crate::model::{keys, parse_taskdef_ref, stop_codes, Cluster, Kind, Task};
use crate::objects;
use crate::store::{Compare, Op, Store, Txn};

/// At most this many tasks per run-task call (ECS allows 10).
pub const MAX_RUN_COUNT: u32 = 100;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunTaskRequest {
    pub task_definition: String,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default = "crate::model::default_cluster")]
    pub cluster: String,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub started_by: Option<String>,
    /// ECS tags for the new tasks (`metadata.tags`).
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

pub async fn run_task(State(st): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: RunTaskRequest = decode(&body)?;
    // `service:NAME` groups belong to the service controller: a run-task counted as a
    // service's would join its target groups, its counts and its crash-loop back-off.
    if let Some(g) = req.group.as_deref() {
        if g.starts_with("service:") {
            return Err(ApiError::bad_request(format!(
                "group {g:?} is reserved for the tasks of a service; choose another group"
            )));
        }
    }
    if req.count == 0 || req.count > MAX_RUN_COUNT {
        return Err(ApiError::bad_request(format!(
            "count must be between 1 and {MAX_RUN_COUNT}, got {}",
            req.count
        )));
    }
    let store = &*st.store;
    if parse_taskdef_ref(&req.task_definition).is_none() {
        return Err(ApiError::bad_request(format!(
            "invalid task definition {:?}; expected FAMILY or FAMILY:REVISION",
            req.task_definition
        )));
    }
    let td = objects::taskdef(store, &req.task_definition).await?;
    let Some(td) = td else {
        return Err(ApiError::not_found(format!(
            "task definition {} not found",
            req.task_definition
        )));
    };
    let cluster: Option<Cluster> =
        objects::get(store, &keys::key(Kind::Cluster, &req.cluster)).await?;
    if cluster.is_none() {
        return Err(ApiError::not_found(format!(
            "cluster {} not found",
            req.cluster
        )));
    }
    if let Some(c) = &cluster {
        crate::apply::safety::check_against(&td.spec, &req.cluster, &c.spec.settings)
            .map_err(|m| ApiError::unprocessable(m, vec![]))?;
    }
    let group = req
        .group
        .clone()
        .unwrap_or_else(|| format!("family:{}", td.status.family));
    let mut txn = Txn::new();
    let mut tasks = Vec::new();
    for _ in 0..req.count {
        let started_by = req.started_by.as_deref().unwrap_or("run-task");
        let mut t = Task::provision(&td, &req.cluster, &group, started_by);
        t.metadata.tags = req.tags.clone();
        let k = keys::key(Kind::Task, &t.metadata.name);
        txn = txn
            .when(Compare::absent(&k))
            .and_then(Op::put(k, t.to_bytes()));
        tasks.push(t);
    }
    let r = store.txn(txn).await?;
    if !r.succeeded {
        return Err(ApiError::conflict("task id collision; retry"));
    }
    let out: Vec<Value> = tasks
        .iter()
        .map(|t| {
            let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
            v["metadata"]["revision"] = json!(r.revision);
            v
        })
        .collect();
    Ok(Json(json!({ "tasks": out })))
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StopTaskRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

pub async fn stop(store: &dyn Store, id: &str, reason: &str) -> Result<Task, ApiError> {
    let t = objects::request_stop(store, id, stop_codes::USER_INITIATED, reason).await?;
    t.ok_or_else(|| ApiError::not_found(format!("task {id:?} not found")))
}

pub async fn stop_task(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: StopTaskRequest = if body.is_empty() {
        StopTaskRequest::default()
    } else {
        decode(&body)?
    };
    let reason = req.reason.unwrap_or_else(|| "Task stopped by user".into());
    let t = stop(&*st.store, &id, &reason).await?;
    Ok(Json(serde_json::to_value(&t).unwrap_or(Value::Null)))
}
