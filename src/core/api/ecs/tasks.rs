//! RunTask, StopTask, DescribeTasks, ListTasks on berth's Task objects (through the REST
//! API's run-task and stop paths).

use axum::body::Bytes;
use axum::extract::State;
use serde_json::{json, Value};

use super::arn;
use super::ctx::{cluster_of, str_list, Ctx};
use super::error::{EcsError, EcsResult};
use super::shapes::{self, failure, page, with_token};
use crate::api::tasks_api;
use crate::model::Kind;

pub async fn run(cx: &Ctx, req: &Value) -> EcsResult {
    let cluster = cluster_of(req);
    cx.require_cluster(&cluster).await?;
    let Some(td) = req["taskDefinition"].as_str().map(arn::name) else {
        return Err(EcsError::invalid("taskDefinition is required"));
    };
    super::ctx::refuse_unsupported(req, super::ctx::UNSUPPORTED_TASK_MEMBERS)?;
    let count = req["count"].as_u64().unwrap_or(1);
    if !(1..=10).contains(&count) {
        return Err(EcsError::invalid("count must be between 1 and 10"));
    }
    let mut body = json!({"taskDefinition": td, "count": count, "cluster": cluster});
    for k in ["group", "startedBy"] {
        if let Some(v) = req[k].as_str() {
            body[k] = json!(v);
        }
    }
    let tags = super::tags::from_request(req)?;
    if !tags.is_empty() {
        body["tags"] = json!(tags);
    }
    let out = tasks_api::run_task(State(cx.st.clone()), Bytes::from(body.to_string()))
        .await
        .map_err(|e| {
            if e.status.as_u16() == 404 && e.message.starts_with("task definition") {
                EcsError::client(format!("TaskDefinition not found: {td}"))
            } else {
                EcsError::from_api(e, "ClientException")
            }
        })?;
    let tasks: Vec<Value> = out.0["tasks"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| {
                    let mut o = shapes::task(&cx.region, t);
                    o["tags"] = super::tags::of(t);
                    o
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(json!({ "tasks": tasks, "failures": [] }))
}

async fn find(cx: &Ctx, cluster: &str, id: &str) -> Result<Option<Value>, EcsError> {
    Ok(cx
        .get(Kind::Task, id)
        .await?
        .filter(|t| t["spec"]["cluster"].as_str() == Some(cluster)))
}

pub async fn stop(cx: &Ctx, req: &Value) -> EcsResult {
    let cluster = cluster_of(req);
    cx.require_cluster(&cluster).await?;
    let id = req["task"].as_str().map(arn::name).unwrap_or("");
    if find(cx, &cluster, id).await?.is_none() {
        return Err(EcsError::invalid("The referenced task was not found."));
    }
    let reason = req["reason"].as_str().unwrap_or("Task stopped by user");
    tasks_api::stop(&*cx.st.store, id, reason)
        .await
        .map_err(|e| EcsError::from_api(e, "InvalidParameterException"))?;
    let t = find(cx, &cluster, id)
        .await?
        .ok_or_else(|| EcsError::invalid("The referenced task was not found."))?;
    Ok(json!({ "task": shapes::task(&cx.region, &t) }))
}

pub async fn describe(cx: &Ctx, req: &Value) -> EcsResult {
    let cluster = cluster_of(req);
    cx.require_cluster(&cluster).await?;
    let mut tasks = vec![];
    let mut failures = vec![];
    for w in str_list(req, "tasks") {
        let id = arn::name(&w);
        match find(cx, &cluster, id).await? {
            Some(t) => {
                let mut o = shapes::task(&cx.region, &t);
                if super::tags::wanted(req) {
                    o["tags"] = super::tags::of(&t);
                }
                tasks.push(o)
            }
            None => failures.push(failure(arn::task(&cx.region, &cluster, id), "MISSING")),
        }
    }
    Ok(json!({ "tasks": tasks, "failures": failures }))
}

pub async fn list(cx: &Ctx, req: &Value) -> EcsResult {
    let cluster = cluster_of(req);
    cx.require_cluster(&cluster).await?;
    let service = req["serviceName"].as_str().map(arn::name);
    let family = req["family"].as_str();
    let instance = req["containerInstance"].as_str().map(arn::name);
    let started_by = req["startedBy"].as_str();
    let desired = req["desiredStatus"].as_str().unwrap_or("RUNNING");
    if !matches!(desired, "RUNNING" | "PENDING" | "STOPPED") {
        return Err(EcsError::invalid(format!(
            "invalid desiredStatus {desired:?}"
        )));
    }
    let mut tasks: Vec<Value> = cx
        .all(Kind::Task)
        .await?
        .into_iter()
        .filter(|t| {
            let spec = &t["spec"];
            let st = &t["status"];
            let td = spec["taskDefinition"].as_str().unwrap_or("");
            let desired_now = st["desiredStatus"].as_str().unwrap_or("RUNNING");
            let desired_ok = match desired {
                // ECS: PENDING lists tasks whose desired status is RUNNING and are not yet.
                "PENDING" => {
                    desired_now == "RUNNING"
                        && !matches!(st["lastStatus"].as_str(), Some("RUNNING" | "STOPPED"))
                }
                d => desired_now == d,
            };
            spec["cluster"].as_str() == Some(cluster.as_str())
                && desired_ok
                && service.is_none_or(|s| spec["group"].as_str() == Some(&format!("service:{s}")))
                && family.is_none_or(|f| td.split(':').next() == Some(f))
                && instance.is_none_or(|i| st["containerInstance"].as_str() == Some(i))
                && started_by.is_none_or(|s| spec["startedBy"].as_str() == Some(s))
        })
        .collect();
    tasks.sort_by(|a, b| {
        let k = |t: &Value| t["metadata"]["name"].as_str().unwrap_or("").to_string();
        k(a).cmp(&k(b))
    });
    let (tasks, next) = page(tasks, req, 100)?;
    let arns: Vec<String> = tasks
        .iter()
        .map(|t| {
            arn::task(
                &cx.region,
                &cluster,
                t["metadata"]["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    Ok(with_token(json!({ "taskArns": arns }), next))
}
