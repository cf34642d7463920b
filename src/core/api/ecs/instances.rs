//! ListContainerInstances, DescribeContainerInstances, UpdateContainerInstancesState on berth's ContainerInstance records.

use serde_json::{json, Value};

use super::arn;
use super::ctx::{cluster_of, str_list, Ctx};
use super::error::{EcsError, EcsResult};
use super::shapes::{self, failure, page, with_token};
use crate::model::{keys, stop_codes, Kind};
use crate::objects::{self, ObjectError};

pub async fn list(cx: &Ctx, req: &Value) -> EcsResult {
    let cluster = cluster_of(req);
    cx.require_cluster(&cluster).await?;
    let status = req["status"].as_str();
    if let Some(s) = status {
        if !matches!(
            s,
            "ACTIVE" | "DRAINING" | "REGISTERING" | "DEREGISTERING" | "REGISTRATION_FAILED"
        ) {
            return Err(EcsError::invalid(format!("invalid status {s:?}")));
        }
    }
    let mut ids: Vec<String> = cx
        .all(Kind::ContainerInstance)
        .await?
        .iter()
        .filter(|i| i["spec"]["cluster"].as_str() == Some(cluster.as_str()))
        .filter(|i| {
            let s = i["status"]["status"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("ACTIVE");
            status.is_none_or(|w| w == s)
        })
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    let (ids, next) = page(ids, req, 100)?;
    let arns: Vec<String> = ids
        .iter()
        .map(|i| arn::container_instance(&cx.region, &cluster, i))
        .collect();
    Ok(with_token(json!({ "containerInstanceArns": arns }), next))
}

pub async fn describe(cx: &Ctx, req: &Value) -> EcsResult {
    let cluster = cluster_of(req);
    cx.require_cluster(&cluster).await?;
    let mut out = vec![];
    let mut failures = vec![];
    for w in str_list(req, "containerInstances") {
        let id = arn::name(&w);
        match cx
            .get(Kind::ContainerInstance, id)
            .await?
            .filter(|i| i["spec"]["cluster"].as_str() == Some(cluster.as_str()))
        {
            Some(i) => {
                let mut o = shapes::instance(&cx.region, &i);
                if super::tags::wanted(req) {
                    o["tags"] = super::tags::of(&i);
                }
                out.push(o)
            }
            None => failures.push(failure(
                arn::container_instance(&cx.region, &cluster, id),
                "MISSING",
            )),
        }
    }
    Ok(json!({ "containerInstances": out, "failures": failures }))
}

/// UpdateContainerInstancesState: ACTIVE or DRAINING on each named instance (a CAS write of
/// its record; the scheduler places only on ACTIVE ones). On a drain the service controller
/// replaces the instance's service tasks elsewhere within each service's min/max bounds,
/// as ECS does; run-task tasks are left alone.
pub async fn update_state(cx: &Ctx, req: &Value) -> EcsResult {
    let cluster = cluster_of(req);
    cx.require_cluster(&cluster).await?;
    let status = req["status"].as_str().unwrap_or("");
    if !matches!(status, "ACTIVE" | "DRAINING") {
        return Err(EcsError::invalid("status must be ACTIVE or DRAINING"));
    }
    let store = &*cx.st.store;
    let mut out = vec![];
    let mut failures = vec![];
    for w in str_list(req, "containerInstances") {
        let id = arn::name(&w).to_string();
        let in_cluster = cx
            .get(Kind::ContainerInstance, &id)
            .await?
            .is_some_and(|i| i["spec"]["cluster"] == cluster.as_str());
        if !in_cluster
            || objects::set_instance_state(store, &id, status)
                .await?
                .is_none()
        {
            failures.push(failure(
                arn::container_instance(&cx.region, &cluster, &id),
                "MISSING",
            ));
            continue;
        }
        if let Some(i) = cx.get(Kind::ContainerInstance, &id).await? {
            out.push(shapes::instance(&cx.region, &i));
        }
    }
    Ok(json!({ "containerInstances": out, "failures": failures }))
}

/// DeregisterContainerInstance: the instance's record is removed (the scheduler no longer
/// sees it). With tasks still on it ECS refuses unless `force`; with `force` berth also asks
/// them to stop, so their services start replacements elsewhere.
pub async fn deregister(cx: &Ctx, req: &Value) -> EcsResult {
    let cluster = cluster_of(req);
    cx.require_cluster(&cluster).await?;
    let id = req["containerInstance"]
        .as_str()
        .map(arn::name)
        .unwrap_or("")
        .to_string();
    let force = req["force"].as_bool().unwrap_or(false);
    let store = &*cx.st.store;
    let key = keys::key(Kind::ContainerInstance, &id);
    let Some(before) = cx
        .get(Kind::ContainerInstance, &id)
        .await?
        .filter(|i| i["spec"]["cluster"].as_str() == Some(cluster.as_str()))
    else {
        return Err(EcsError::invalid(format!(
            "Container instance not found: {id}"
        )));
    };
    let tasks: Vec<_> = objects::list_tasks(store)
        .await?
        .into_iter()
        .filter(|t| t.status.container_instance.as_deref() == Some(id.as_str()) && !t.is_stopped())
        .collect();
    if !tasks.is_empty() && !force {
        return Err(EcsError::invalid(format!(
            "Found running tasks on the instance {id}: stop them first or use force"
        )));
    }
    for t in &tasks {
        objects::request_stop(
            store,
            &t.metadata.name,
            stop_codes::SERVICE_SCHEDULER_INITIATED,
            "Container instance deregistered",
        )
        .await?;
    }
    // The instance-status controller rewrites counters as tasks move: retry on a fresh
    // revision (nothing but the record itself is decided on it).
    let mut gone = false;
    for _ in 0..10 {
        let Some(kv) = store.get(&key).await? else {
            gone = true;
            break;
        };
        match objects::delete_cas(store, &key, kv.mod_revision).await {
            Ok(()) => {
                gone = true;
                break;
            }
            Err(ObjectError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if !gone {
        return Err(EcsError::server(
            "the container instance kept changing; retry",
        ));
    }
    let mut out = shapes::instance(&cx.region, &before);
    out["status"] = json!("INACTIVE");
    Ok(json!({ "containerInstance": out }))
}
