//! ListClusters, DescribeClusters, CreateCluster, DeleteCluster on berth's Cluster objects.

use axum::extract::{Path, State};
use serde_json::{json, Value};

use super::arn;
use super::ctx::{cluster_of, str_list, Ctx};
use super::error::{EcsError, EcsResult};
use super::shapes::{failure, page, with_token};
use crate::api::objects_api;
use crate::model::Kind;

pub async fn list(cx: &Ctx, req: &Value) -> EcsResult {
    let mut names: Vec<String> = cx
        .all(Kind::Cluster)
        .await?
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    let (names, next) = page(names, req, 100)?;
    let arns: Vec<String> = names.iter().map(|n| arn::cluster(&cx.region, n)).collect();
    Ok(with_token(json!({ "clusterArns": arns }), next))
}

async fn shape(cx: &Ctx, name: &str) -> EcsResult {
    let tasks = cx.all(Kind::Task).await?;
    let services = cx.all(Kind::Service).await?;
    let instances = cx.all(Kind::ContainerInstance).await?;
    let here = |o: &&Value| o["spec"]["cluster"].as_str() == Some(name);
    let count_tasks = |s: &str| {
        tasks
            .iter()
            .filter(here)
            .filter(|t| t["status"]["lastStatus"].as_str() == Some(s))
            .count()
    };
    Ok(json!({
        "clusterArn": arn::cluster(&cx.region, name),
        "clusterName": name,
        "status": "ACTIVE",
        "registeredContainerInstancesCount": instances.iter().filter(here).count(),
        "runningTasksCount": count_tasks("RUNNING"),
        "pendingTasksCount": count_tasks("PENDING") + count_tasks("PROVISIONING"),
        "activeServicesCount": services.iter().filter(here).count(),
    }))
}

pub async fn describe(cx: &Ctx, req: &Value) -> EcsResult {
    let mut wanted = str_list(req, "clusters");
    if wanted.is_empty() {
        wanted.push("default".into());
    }
    let mut clusters = vec![];
    let mut failures = vec![];
    for w in &wanted {
        let name = arn::name(w);
        if let Some(c) = cx.get(Kind::Cluster, name).await? {
            let mut o = shape(cx, name).await?;
            if super::tags::wanted(req) {
                o["tags"] = super::tags::of(&c);
            }
            if req["include"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == "SETTINGS"))
            {
                o["settings"] = c["spec"]["ecsSettings"]
                    .as_array()
                    .cloned()
                    .map_or(json!([]), Value::Array);
            }
            clusters.push(o);
        } else {
            failures.push(failure(arn::cluster(&cx.region, name), "MISSING"));
        }
    }
    Ok(json!({ "clusters": clusters, "failures": failures }))
}

pub async fn create(cx: &Ctx, req: &Value) -> EcsResult {
    let name = req["clusterName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    // An existing cluster is answered as it is (ECS's CreateCluster is idempotent); its
    // settings stay as they were applied.
    let tags = super::tags::from_request(req)?;
    if cx.get(Kind::Cluster, name).await?.is_none() {
        cx.apply_tagged("Cluster", name, json!({}), &tags).await?;
    }
    let mut out = shape(cx, name).await?;
    if let Some(c) = cx.get(Kind::Cluster, name).await? {
        out["tags"] = super::tags::of(&c);
    }
    Ok(json!({ "cluster": out }))
}

pub async fn delete(cx: &Ctx, req: &Value) -> EcsResult {
    let name = cluster_of(req);
    let mut out = shape(cx, &name).await?;
    match objects_api::delete_one(
        State(cx.st.clone()),
        Path(("clusters".into(), name.clone())),
    )
    .await
    {
        Ok(_) => {
            out["status"] = json!("INACTIVE");
            Ok(json!({ "cluster": out }))
        }
        Err(e) if e.status.as_u16() == 404 => Err(EcsError::cluster_not_found(&name)),
        Err(e) if e.status.as_u16() == 409 => {
            Err(EcsError::new("ClusterContainsServicesException", e.message))
        }
        Err(e) => Err(e.into()),
    }
}

/// UpdateCluster / UpdateClusterSettings: ECS's cluster `settings` (containerInsights) are
/// stored on the Cluster (`spec.ecsSettings`) through the apply path. The parts of
/// UpdateCluster berth has nothing for (execute-command configuration, Service Connect
/// defaults) are refused by name, never ignored.
pub async fn update(cx: &Ctx, req: &Value) -> EcsResult {
    let name = cluster_of(req);
    let Some(c) = cx.get(Kind::Cluster, &name).await? else {
        return Err(EcsError::cluster_not_found(&name));
    };
    for k in ["configuration", "serviceConnectDefaults"] {
        if !req[k].is_null() {
            return Err(EcsError::new(
                "UnsupportedFeatureException",
                format!("berth does not support the cluster's {k}"),
            ));
        }
    }
    let mut spec = c["spec"].clone();
    if let Some(list) = req["settings"].as_array() {
        let mut settings: Vec<Value> = spec["ecsSettings"].as_array().cloned().unwrap_or_default();
        for s in list {
            let (Some(n), Some(v)) = (s["name"].as_str(), s["value"].as_str()) else {
                return Err(EcsError::invalid("each setting needs a name and a value"));
            };
            if n != "containerInsights" || !matches!(v, "enabled" | "disabled" | "enhanced") {
                return Err(EcsError::invalid(format!(
                    "invalid cluster setting {n}={v} (containerInsights: enabled, disabled or enhanced)"
                )));
            }
            settings.retain(|x| x["name"] != n);
            settings.push(json!({"name": n, "value": v}));
        }
        spec["ecsSettings"] = Value::Array(settings);
    } else if req.get("settings").is_some() {
        return Err(EcsError::invalid("settings must be a list"));
    }
    cx.apply("Cluster", &name, spec).await?;
    let mut out = shape(cx, &name).await?;
    if let Some(c) = cx.get(Kind::Cluster, &name).await? {
        out["settings"] = c["spec"]["ecsSettings"].clone();
        out["tags"] = super::tags::of(&c);
    }
    Ok(json!({ "cluster": super::shapes::compact(out) }))
}
