//! ListServiceDeployments, DescribeServiceDeployments over a service's `status.deployments`
//! (berth's rollouts: id, PRIMARY/ACTIVE/INACTIVE, rolloutState). ARNs:
//! `service-deployment/CLUSTER/SERVICE/ID`, and for the revision a deployment rolls out,
//! `service-revision/CLUSTER/SERVICE/ID`.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::arn;
use super::ctx::{cluster_of, str_list, Ctx};
use super::error::{EcsError, EcsResult};
use super::shapes::{compact, failure, page, ts, with_token};
use crate::model::Kind;

const STATUSES: &[&str] = &[
    "PENDING",
    "SUCCESSFUL",
    "STOPPED",
    "STOP_REQUESTED",
    "IN_PROGRESS",
    "ROLLBACK_REQUESTED",
    "ROLLBACK_IN_PROGRESS",
    "ROLLBACK_SUCCESSFUL",
    "ROLLBACK_FAILED",
];

/// `arn:…:service-deployment/CLUSTER/SERVICE/ID` → (cluster, service, id).
pub fn parts(a: &str) -> Option<(String, String, String)> {
    let (_, path) = a.split_once(":service-deployment/")?;
    match path.split('/').collect::<Vec<_>>().as_slice() {
        [c, s, i] if !c.is_empty() && !s.is_empty() && !i.is_empty() => {
            Some((c.to_string(), s.to_string(), i.to_string()))
        }
        _ => None,
    }
}

/// A deployment id in an ARN: berth's ids are ECS's `ecs-svc/NNN`; the ARN holds `NNN`.
fn short(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

fn deployment_arn(region: &str, cluster: &str, service: &str, id: &str) -> String {
    arn::arn(
        region,
        &format!("service-deployment/{cluster}/{service}/{}", short(id)),
    )
}

fn revision_arn(region: &str, cluster: &str, service: &str, id: &str) -> String {
    arn::arn(
        region,
        &format!("service-revision/{cluster}/{service}/{}", short(id)),
    )
}

/// A berth deployment's state as ECS's ServiceDeployment status.
fn status(d: &Value) -> &'static str {
    match (d["rolloutState"].as_str(), d["status"].as_str()) {
        (Some("COMPLETED"), _) => "SUCCESSFUL",
        (Some("FAILED"), _) => "ROLLBACK_SUCCESSFUL",
        (_, Some("INACTIVE")) => "STOPPED",
        _ => "IN_PROGRESS",
    }
}

fn finished(d: &Value) -> bool {
    status(d) != "IN_PROGRESS"
}

/// The service's deployments, newest first.
fn deployments(s: &Value) -> Vec<Value> {
    let mut ds: Vec<Value> = s["status"]["deployments"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ds.sort_by(|a, b| {
        b["createdAt"]
            .as_str()
            .unwrap_or("")
            .cmp(a["createdAt"].as_str().unwrap_or(""))
    });
    ds
}

fn brief(region: &str, cluster: &str, svc: &str, d: &Value) -> Value {
    let id = d["id"].as_str().unwrap_or("");
    compact(json!({
        "serviceDeploymentArn": deployment_arn(region, cluster, svc, id),
        "serviceArn": arn::service(region, cluster, svc),
        "clusterArn": arn::cluster(region, cluster),
        "createdAt": ts(&d["createdAt"]),
        "startedAt": ts(&d["createdAt"]),
        "finishedAt": if finished(d) { ts(&d["updatedAt"]) } else { Value::Null },
        "targetServiceRevisionArn": revision_arn(region, cluster, svc, id),
        "status": status(d),
        "statusReason": d["rolloutStateReason"].as_str().filter(|s| !s.is_empty()),
    }))
}

fn revision(region: &str, cluster: &str, svc: &str, d: &Value) -> Value {
    json!({
        "arn": revision_arn(region, cluster, svc, d["id"].as_str().unwrap_or("")),
        "requestedTaskCount": d["desiredCount"].as_u64().unwrap_or(0),
        "runningTaskCount": d["runningCount"].as_u64().unwrap_or(0),
        "pendingTaskCount": d["pendingCount"].as_u64().unwrap_or(0),
    })
}

async fn service(cx: &Ctx, cluster: &str, name: &str) -> Result<Option<Value>, EcsError> {
    Ok(cx
        .get(Kind::Service, name)
        .await?
        .filter(|s| s["spec"]["cluster"].as_str() == Some(cluster)))
}

fn epoch(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn created_secs(d: &Value) -> f64 {
    d["createdAt"]
        .as_str()
        .and_then(|s| s.parse::<DateTime<Utc>>().ok())
        .map(|t| t.timestamp_millis() as f64 / 1000.0)
        .unwrap_or(0.0)
}

pub async fn list(cx: &Ctx, req: &Value) -> EcsResult {
    let cluster = cluster_of(req);
    cx.require_cluster(&cluster).await?;
    let name = req["service"].as_str().map(arn::name).unwrap_or("");
    let Some(s) = service(cx, &cluster, name).await? else {
        return Err(EcsError::service_not_found(name));
    };
    let wanted = str_list(req, "status");
    if let Some(bad) = wanted.iter().find(|w| !STATUSES.contains(&w.as_str())) {
        return Err(EcsError::invalid(format!("invalid status {bad:?}")));
    }
    let after = epoch(&req["createdAt"]["after"]);
    let before = epoch(&req["createdAt"]["before"]);
    let ds: Vec<Value> = deployments(&s)
        .into_iter()
        .filter(|d| wanted.is_empty() || wanted.iter().any(|w| w == status(d)))
        .filter(|d| after.is_none_or(|a| created_secs(d) >= a))
        .filter(|d| before.is_none_or(|b| created_secs(d) <= b))
        .collect();
    let (ds, next) = page(ds, req, 100)?;
    let out: Vec<Value> = ds
        .iter()
        .map(|d| brief(&cx.region, &cluster, name, d))
        .collect();
    Ok(with_token(json!({ "serviceDeployments": out }), next))
}

pub async fn describe(cx: &Ctx, req: &Value) -> EcsResult {
    let wanted = str_list(req, "serviceDeploymentArns");
    if wanted.is_empty() || wanted.len() > 20 {
        return Err(EcsError::invalid(
            "serviceDeploymentArns must name between 1 and 20 deployments",
        ));
    }
    let mut out = vec![];
    let mut failures = vec![];
    for w in &wanted {
        let Some((cluster, svc, id)) = parts(w) else {
            return Err(EcsError::invalid(format!(
                "invalid service deployment ARN {w:?}"
            )));
        };
        let (cluster, svc, id) = (cluster.as_str(), svc.as_str(), id.as_str());
        let found = match service(cx, cluster, svc).await? {
            Some(s) => {
                let ds = deployments(&s);
                ds.iter()
                    .position(|d| short(d["id"].as_str().unwrap_or("")) == id)
                    .map(|i| {
                        let d = &ds[i];
                        let sources: Vec<Value> = ds
                            .get(i + 1)
                            .map(|p| vec![revision(&cx.region, cluster, svc, p)])
                            .unwrap_or_default();
                        let mut v = brief(&cx.region, cluster, svc, d);
                        v["updatedAt"] = ts(&d["updatedAt"]);
                        v["targetServiceRevision"] = revision(&cx.region, cluster, svc, d);
                        v["sourceServiceRevisions"] = json!(sources);
                        v["deploymentConfiguration"] = s["spec"]["deploymentConfiguration"].clone();
                        if status(d) == "ROLLBACK_SUCCESSFUL" {
                            v["rollback"] = compact(json!({
                                "reason": d["rolloutStateReason"],
                                "startedAt": ts(&d["updatedAt"]),
                                "serviceRevisionArn": sources.first().map(|r| r["arn"].clone()),
                            }));
                        }
                        compact(v)
                    })
            }
            None => None,
        };
        match found {
            Some(v) => out.push(v),
            None => failures.push(failure(
                deployment_arn(&cx.region, cluster, svc, id),
                "MISSING",
            )),
        }
    }
    Ok(json!({ "serviceDeployments": out, "failures": failures }))
}
