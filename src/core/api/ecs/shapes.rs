//! berth's stored objects (JSON, camelCase already) in ECS's response shapes, and the
//! pagination every List operation shares.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::arn;
use super::error::EcsError;

/// botocore reads JSON-protocol timestamps as epoch seconds.
pub fn ts(v: &Value) -> Value {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| json!(t.with_timezone(&Utc).timestamp_millis() as f64 / 1000.0))
        .unwrap_or(Value::Null)
}

/// Drop nulls so botocore sees absent members, not `None`s of the wrong type.
pub fn compact(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.retain(|_, x| !x.is_null());
    }
    v
}

/// `maxResults` / `nextToken` over an ordered list (the token is the next index).
pub fn page<T>(
    items: Vec<T>,
    req: &Value,
    max: usize,
) -> Result<(Vec<T>, Option<String>), EcsError> {
    let limit = match req.get("maxResults") {
        None | Some(Value::Null) => max,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n as usize <= max => n as usize,
            _ => {
                return Err(EcsError::invalid(format!(
                    "maxResults must be between 1 and {max}"
                )))
            }
        },
    };
    let start = match req["nextToken"].as_str() {
        None | Some("") => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| EcsError::invalid("Invalid nextToken"))?,
    };
    let total = items.len();
    let out: Vec<T> = items.into_iter().skip(start).take(limit).collect();
    let next = (start + limit < total).then(|| (start + limit).to_string());
    Ok((out, next))
}

pub fn with_token(mut v: Value, next: Option<String>) -> Value {
    if let Some(t) = next {
        v["nextToken"] = json!(t);
    }
    v
}

pub fn failure(arn: String, reason: &str) -> Value {
    json!({"arn": arn, "reason": reason})
}

/// A stored TaskDefinition as ECS's `TaskDefinition`.
pub fn taskdef(region: &str, o: &Value) -> Value {
    let family = o["status"]["family"]
        .as_str()
        .or(o["metadata"]["name"].as_str())
        .unwrap_or("");
    let rev = o["status"]["revision"].as_u64().unwrap_or(0);
    let mut out: Map<String, Value> = o["spec"].as_object().cloned().unwrap_or_default();
    if let Some(role) = out.remove("taskRole") {
        out.insert("taskRoleArn".into(), role);
    }
    for k in ["cpu", "memory"] {
        if let Some(n) = out.get(k).and_then(Value::as_u64) {
            out.insert(k.into(), json!(n.to_string()));
        }
    }
    out.entry("networkMode").or_insert(json!("bridge"));
    out.insert(
        "taskDefinitionArn".into(),
        json!(arn::task_definition(region, &format!("{family}:{rev}"))),
    );
    out.insert("family".into(), json!(family));
    out.insert("revision".into(), json!(rev));
    let status = o["status"]["status"].as_str().unwrap_or("ACTIVE");
    out.insert(
        "status".into(),
        json!(if status.is_empty() { "ACTIVE" } else { status }),
    );
    out.insert("compatibilities".into(), json!(["EC2"]));
    out.insert("registeredAt".into(), ts(&o["status"]["registeredAt"]));
    compact(Value::Object(out))
}

fn deployment(region: &str, d: &Value) -> Value {
    compact(json!({
        "id": d["id"],
        "status": d["status"],
        "taskDefinition": arn::task_definition(region, d["taskDefinition"].as_str().unwrap_or("")),
        "desiredCount": d["desiredCount"].as_u64().unwrap_or(0),
        "runningCount": d["runningCount"].as_u64().unwrap_or(0),
        "pendingCount": d["pendingCount"].as_u64().unwrap_or(0),
        "failedTasks": d["failedTasks"].as_u64().unwrap_or(0),
        "rolloutState": d["rolloutState"],
        "rolloutStateReason": d["rolloutStateReason"],
        "createdAt": ts(&d["createdAt"]),
        "updatedAt": ts(&d["updatedAt"]),
        "launchType": "EC2",
    }))
}

/// A stored Service as ECS's `Service`.
pub fn service(region: &str, o: &Value) -> Value {
    let name = o["metadata"]["name"].as_str().unwrap_or("");
    let spec = &o["spec"];
    let st = &o["status"];
    let cluster = spec["cluster"].as_str().unwrap_or("default");
    let status = match st["status"].as_str() {
        _ if !o["metadata"]["deletionTimestamp"].is_null() => "DRAINING",
        Some("") | None => "ACTIVE",
        Some(s) => s,
    };
    let deployments: Vec<Value> = st["deployments"]
        .as_array()
        // ECS lists the PRIMARY and ACTIVE deployments only (botocore's ServicesStable waiter
        // waits for exactly one).
        .map(|a| {
            a.iter()
                .filter(|d| d["status"] != "INACTIVE")
                .map(|d| deployment(region, d))
                .collect()
        })
        .unwrap_or_default();
    let td = deployments
        .iter()
        .find(|d| d["status"] == "PRIMARY")
        .map(|d| d["taskDefinition"].clone())
        .unwrap_or_else(|| {
            json!(arn::task_definition(
                region,
                spec["taskDefinition"].as_str().unwrap_or("")
            ))
        });
    let events: Vec<Value> = st["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| json!({"id": e["id"], "createdAt": ts(&e["createdAt"]), "message": e["message"]}))
                .collect()
        })
        .unwrap_or_default();
    let lbs: Vec<Value> = spec["loadBalancers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| {
                    json!({"targetGroupArn": l["targetGroup"], "containerName": l["containerName"],
                           "containerPort": l["containerPort"]})
                })
                .collect()
        })
        .unwrap_or_default();
    compact(json!({
        "serviceArn": arn::service(region, cluster, name),
        "serviceName": name,
        "clusterArn": arn::cluster(region, cluster),
        "status": status,
        "desiredCount": spec["desiredCount"].as_u64().unwrap_or(0),
        "runningCount": st["runningCount"].as_u64().unwrap_or(0),
        "pendingCount": st["pendingCount"].as_u64().unwrap_or(0),
        "launchType": "EC2",
        "taskDefinition": td,
        "deploymentConfiguration": spec["deploymentConfiguration"],
        "deployments": deployments,
        "events": events,
        "loadBalancers": lbs,
        "placementStrategy": spec.get("placementStrategy").cloned().unwrap_or(json!([])),
        "placementConstraints": spec.get("placementConstraints").cloned().unwrap_or(json!([])),
        "schedulingStrategy": spec["schedulingStrategy"].as_str().unwrap_or("REPLICA"),
        "healthCheckGracePeriodSeconds": spec["healthCheckGracePeriodSeconds"],
        "createdAt": ts(&o["metadata"]["createdAt"]),
    }))
}

/// A stored Task as ECS's `Task`.
pub fn task(region: &str, o: &Value) -> Value {
    let id = o["metadata"]["name"].as_str().unwrap_or("");
    let spec = &o["spec"];
    let st = &o["status"];
    let cluster = spec["cluster"].as_str().unwrap_or("default");
    let task_arn = arn::task(region, cluster, id);
    let containers: Vec<Value> = st["containers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    compact(json!({
                        "containerArn": arn::arn(region, &format!("container/{cluster}/{id}/{}", c["name"].as_str().unwrap_or(""))),
                        "taskArn": task_arn,
                        "name": c["name"],
                        "runtimeId": c["dockerId"],
                        "lastStatus": c["lastStatus"],
                        "exitCode": c["exitCode"],
                        "reason": c["reason"],
                        "healthStatus": c["healthStatus"],
                        "networkBindings": c.get("networkBindings").cloned().unwrap_or(json!([])),
                    }))
                })
                .collect()
        })
        .unwrap_or_default();
    compact(json!({
        "taskArn": task_arn,
        "clusterArn": arn::cluster(region, cluster),
        "taskDefinitionArn": arn::task_definition(region, spec["taskDefinition"].as_str().unwrap_or("")),
        "containerInstanceArn": st["containerInstance"].as_str().map(|i| arn::container_instance(region, cluster, i)),
        "lastStatus": st["lastStatus"],
        "desiredStatus": st["desiredStatus"],
        "healthStatus": st["healthStatus"],
        "group": spec["group"],
        "startedBy": spec["startedBy"].as_str().filter(|s| !s.is_empty()),
        "cpu": spec["cpu"].as_u64().map(|n| n.to_string()),
        "memory": spec["memory"].as_u64().map(|n| n.to_string()),
        "containers": containers,
        "launchType": "EC2",
        "version": o["metadata"]["revision"],
        "stopCode": st["stopCode"],
        "stoppedReason": st["stoppedReason"],
        "createdAt": ts(&st["createdAt"]).as_f64().map(Value::from).unwrap_or(ts(&o["metadata"]["createdAt"])),
        "startedAt": ts(&st["startedAt"]),
        "stoppingAt": ts(&st["stoppingAt"]),
        "stoppedAt": ts(&st["stoppedAt"]),
    }))
}

fn resources(r: &Value) -> Value {
    let mut out = vec![];
    for k in ["CPU", "MEMORY"] {
        out.push(json!({"name": k, "type": "INTEGER", "integerValue": r[k].as_u64().unwrap_or(0)}));
    }
    let ports: Vec<String> = r["PORTS"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
                .collect()
        })
        .unwrap_or_default();
    out.push(json!({"name": "PORTS", "type": "STRINGSET", "stringSetValue": ports}));
    Value::Array(out)
}

/// A stored ContainerInstance as ECS's `ContainerInstance`.
pub fn instance(region: &str, o: &Value) -> Value {
    let id = o["metadata"]["name"].as_str().unwrap_or("");
    let cluster = o["spec"]["cluster"].as_str().unwrap_or("default");
    let st = &o["status"];
    let attributes: Vec<Value> = o["spec"]["attributes"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| json!({"name": k, "value": v}))
                .collect()
        })
        .unwrap_or_default();
    let status = st["status"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("ACTIVE");
    compact(json!({
        "containerInstanceArn": arn::container_instance(region, cluster, id),
        "ec2InstanceId": id,
        "status": status,
        "agentConnected": st["agentConnected"].as_bool().unwrap_or(false),
        "runningTasksCount": st["runningTasksCount"].as_u64().unwrap_or(0),
        "pendingTasksCount": st["pendingTasksCount"].as_u64().unwrap_or(0),
        "registeredResources": resources(&st["registeredResources"]),
        "remainingResources": resources(&st["remainingResources"]),
        "attributes": attributes,
        "versionInfo": {"dockerVersion": st["dockerVersion"]},
        "version": o["metadata"]["revision"],
        "registeredAt": ts(&st["registeredAt"]),
    }))
}
