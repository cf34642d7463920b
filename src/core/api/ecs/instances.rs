//! ListContainerInstances, DescribeContainerInstances on berth's ContainerInstance records.

use serde_json::{json, Value};

use super::arn;
use super::ctx::{cluster_of, str_list, Ctx};
use super::error::{EcsError, EcsResult};
use super::shapes::{self, failure, page, with_token};
use crate::model::Kind;

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
            Some(i) => out.push(shapes::instance(&cx.region, &i)),
            None => failures.push(failure(
                arn::container_instance(&cx.region, &cluster, id),
                "MISSING",
            )),
        }
    }
    Ok(json!({ "containerInstances": out, "failures": failures }))
}
