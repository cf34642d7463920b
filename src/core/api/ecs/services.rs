//! CreateService, DescribeServices, ListServices, UpdateService, DeleteService on berth's
//! Service objects (create and update are applies; delete drains as `berth delete` does).

use axum::extract::{Path, State};
use serde_json::{json, Map, Value};

use super::arn;
use super::ctx::{cluster_of, str_list, Ctx};
use super::error::{EcsError, EcsResult};
use super::shapes::{self, failure, page, with_token};
use crate::api::objects_api;
use crate::model::Kind;

/// ECS request members with the same name and meaning in berth's ServiceSpec.
const SAME: &[&str] = &[
    "desiredCount",
    "deploymentConfiguration",
    "placementStrategy",
    "placementConstraints",
    "healthCheckGracePeriodSeconds",
    "schedulingStrategy",
    "launchType",
];

fn taskdef_ref(v: &Value) -> Option<String> {
    v.as_str().map(|s| arn::name(s).to_string())
}

fn copy_members(req: &Value, spec: &mut Map<String, Value>) -> Result<(), EcsError> {
    for k in SAME {
        if let Some(v) = req.get(*k).filter(|v| !v.is_null()) {
            spec.insert((*k).into(), v.clone());
        }
    }
    if let Some(n) = req.get("desiredCount").and_then(Value::as_i64) {
        if n < 0 {
            return Err(EcsError::invalid("desiredCount must be 0 or more"));
        }
    }
    if let Some(td) = taskdef_ref(&req["taskDefinition"]) {
        spec.insert("taskDefinition".into(), json!(td));
    }
    if let Some(lbs) = req["loadBalancers"].as_array() {
        let lbs: Vec<Value> = lbs
            .iter()
            .map(|l| {
                let tg = l["targetGroupArn"]
                    .as_str()
                    .or(l["targetGroup"].as_str())
                    .map(|t| t.rsplit('/').next().unwrap_or(t))
                    .unwrap_or("");
                json!({"targetGroup": tg, "containerName": l["containerName"],
                       "containerPort": l["containerPort"]})
            })
            .collect();
        spec.insert("loadBalancers".into(), Value::Array(lbs));
    }
    Ok(())
}

async fn find(cx: &Ctx, cluster: &str, name: &str) -> Result<Option<Value>, EcsError> {
    Ok(cx
        .get(Kind::Service, name)
        .await?
        .filter(|s| s["spec"]["cluster"].as_str() == Some(cluster)))
}

fn service_name(req: &Value, k: &str) -> String {
    req[k].as_str().map(arn::name).unwrap_or("").to_string()
}

pub async fn create(cx: &Ctx, req: &Value) -> EcsResult {
    let name = service_name(req, "serviceName");
    if name.is_empty() {
        return Err(EcsError::invalid("serviceName is required"));
    }
    let cluster = cluster_of(req);
    cx.require_cluster(&cluster).await?;
    if cx.get(Kind::Service, &name).await?.is_some() {
        return Err(EcsError::invalid("Creation of service was not idempotent."));
    }
    let Some(td) = taskdef_ref(&req["taskDefinition"]) else {
        return Err(EcsError::invalid("taskDefinition is required"));
    };
    if !super::ctx::taskdefs_exists(cx, &td).await? {
        return Err(EcsError::client(format!("TaskDefinition not found: {td}")));
    }
    let mut spec = Map::new();
    spec.insert("cluster".into(), json!(cluster));
    copy_members(req, &mut spec)?;
    spec.entry("desiredCount").or_insert(json!(0));
    let tags = super::tags::from_request(req)?;
    cx.apply_tagged("Service", &name, Value::Object(spec), &tags)
        .await?;
    let s = cx
        .get(Kind::Service, &name)
        .await?
        .ok_or_else(|| EcsError::server("the created service is not readable"))?;
    Ok(json!({ "service": shapes::service(&cx.region, &s) }))
}

pub async fn describe(cx: &Ctx, req: &Value) -> EcsResult {
    let cluster = cluster_of(req);
    cx.require_cluster(&cluster).await?;
    let mut services = vec![];
    let mut failures = vec![];
    for w in str_list(req, "services") {
        let name = arn::name(&w);
        match find(cx, &cluster, name).await? {
            Some(s) => {
                let mut o = shapes::service(&cx.region, &s);
                if super::tags::wanted(req) {
                    o["tags"] = super::tags::of(&s);
                }
                services.push(o)
            }
            None => failures.push(failure(arn::service(&cx.region, &cluster, name), "MISSING")),
        }
    }
    Ok(json!({ "services": services, "failures": failures }))
}

pub async fn list(cx: &Ctx, req: &Value) -> EcsResult {
    let cluster = cluster_of(req);
    cx.require_cluster(&cluster).await?;
    let mut names: Vec<String> = cx
        .all(Kind::Service)
        .await?
        .iter()
        .filter(|s| s["spec"]["cluster"].as_str() == Some(cluster.as_str()))
        .filter_map(|s| s["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    let (names, next) = page(names, req, 100)?;
    let arns: Vec<String> = names
        .iter()
        .map(|n| arn::service(&cx.region, &cluster, n))
        .collect();
    Ok(with_token(json!({ "serviceArns": arns }), next))
}

pub async fn update(cx: &Ctx, req: &Value) -> EcsResult {
    let cluster = cluster_of(req);
    cx.require_cluster(&cluster).await?;
    let name = service_name(req, "service");
    let Some(s) = find(cx, &cluster, &name).await? else {
        return Err(EcsError::service_not_found(&name));
    };
    if !s["metadata"]["deletionTimestamp"].is_null() {
        return Err(EcsError::new(
            "ServiceNotActiveException",
            "Service was not ACTIVE.",
        ));
    }
    if let Some(td) = taskdef_ref(&req["taskDefinition"]) {
        if !super::ctx::taskdefs_exists(cx, &td).await? {
            return Err(EcsError::client(format!("TaskDefinition not found: {td}")));
        }
    }
    let mut spec = s["spec"].as_object().cloned().unwrap_or_default();
    let before = spec.get("taskDefinition").cloned();
    copy_members(req, &mut spec)?;
    // A new task definition starts a deployment by itself; forcing one of the same revision
    // is not something berth's deployment controller does yet: say so, never a silent no-op.
    if req["forceNewDeployment"].as_bool() == Some(true)
        && spec.get("taskDefinition") == before.as_ref()
    {
        return Err(EcsError::new(
            "UnsupportedFeatureException",
            "berth does not yet force a new deployment of the same task definition; \
             register a new revision and update the service to it",
        ));
    }
    cx.apply("Service", &name, Value::Object(spec)).await?;
    let s = cx
        .get(Kind::Service, &name)
        .await?
        .ok_or_else(|| EcsError::service_not_found(&name))?;
    Ok(json!({ "service": shapes::service(&cx.region, &s) }))
}

pub async fn delete(cx: &Ctx, req: &Value) -> EcsResult {
    let cluster = cluster_of(req);
    cx.require_cluster(&cluster).await?;
    let name = service_name(req, "service");
    let Some(s) = find(cx, &cluster, &name).await? else {
        return Err(EcsError::service_not_found(&name));
    };
    let force = req["force"].as_bool().unwrap_or(false);
    if !force && s["spec"]["desiredCount"].as_u64().unwrap_or(0) > 0 {
        return Err(EcsError::invalid(
            "The service cannot be stopped while it is scaled above 0.",
        ));
    }
    let _deleted = objects_api::delete_one(
        State(cx.st.clone()),
        Path(("services".into(), name.clone())),
    )
    .await
    .map_err(|e| EcsError::from_api(e, "ServiceNotFoundException"))?;
    let out = match cx.get(Kind::Service, &name).await? {
        Some(s) => shapes::service(&cx.region, &s),
        None => {
            let mut o = shapes::service(&cx.region, &s);
            o["status"] = json!("DRAINING");
            o
        }
    };
    Ok(json!({ "service": out }))
}
