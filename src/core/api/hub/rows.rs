//! Compact rows the dashboard shows, cut from stored objects (read loosely as JSON so that a
//! field added by another part of berth never breaks the view).

use serde_json::{json, Map, Value};

fn str_of(v: &Value) -> Value {
    match v {
        Value::String(s) if !s.is_empty() => Value::String(s.clone()),
        _ => Value::Null,
    }
}

/// Insert only non-null values, to keep the payload small.
fn put(m: &mut Map<String, Value>, k: &str, v: Value) {
    if !v.is_null() {
        m.insert(k.to_string(), v);
    }
}

pub fn task(v: &Value) -> Value {
    let st = &v["status"];
    let sp = &v["spec"];
    let mut m = Map::new();
    put(&mut m, "id", str_of(&v["metadata"]["name"]));
    let group = sp["group"].as_str().unwrap_or("");
    put(
        &mut m,
        "svc",
        group
            .strip_prefix("service:")
            .map_or(Value::Null, |s| json!(s)),
    );
    put(&mut m, "td", str_of(&sp["taskDefinition"]));
    put(&mut m, "cl", str_of(&sp["cluster"]));
    put(&mut m, "inst", str_of(&st["containerInstance"]));
    put(&mut m, "ls", str_of(&st["lastStatus"]));
    put(&mut m, "ds", str_of(&st["desiredStatus"]));
    put(&mut m, "h", str_of(&st["healthStatus"]));
    put(&mut m, "at", str_of(&st["startedAt"]));
    put(&mut m, "sa", str_of(&st["stoppedAt"]));
    put(&mut m, "sr", str_of(&st["stoppedReason"]));
    let ports: Vec<String> = st["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["networkBindings"].as_array().cloned().unwrap_or_default())
        .filter_map(|b| {
            Some(format!(
                "{}→{}",
                b["hostPort"].as_u64()?,
                b["containerPort"].as_u64()?
            ))
        })
        .collect();
    if !ports.is_empty() {
        m.insert("p".into(), json!(ports.join(",")));
    }
    if sp["cpu"].as_u64().is_some_and(|c| c > 0) {
        m.insert("cpu".into(), sp["cpu"].clone());
    }
    if sp["memory"].as_u64().is_some_and(|c| c > 0) {
        m.insert("mem".into(), sp["memory"].clone());
    }
    Value::Object(m)
}

pub fn service(v: &Value) -> Value {
    let st = &v["status"];
    let sp = &v["spec"];
    let deployments: Vec<Value> = st["deployments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            json!({
                "id": d["id"].as_str().map(|s| s.chars().take(8).collect::<String>()),
                "st": d["status"],
                "td": d["taskDefinition"],
                "d": d["desiredCount"],
                "r": d["runningCount"],
                "p": d["pendingCount"],
                "f": d["failedTasks"],
                "ro": d["rolloutState"],
                "rr": str_of(&d["rolloutStateReason"]),
            })
        })
        .collect();
    let events: Vec<Value> = st["events"]
        .as_array()
        .into_iter()
        .flatten()
        .take(5)
        .map(|e| json!({"t": e["createdAt"], "m": e["message"]}))
        .collect();
    let mut m = Map::new();
    put(&mut m, "name", str_of(&v["metadata"]["name"]));
    put(&mut m, "cl", str_of(&sp["cluster"]));
    put(&mut m, "td", str_of(&sp["taskDefinition"]));
    m.insert(
        "desired".into(),
        json!(sp["desiredCount"].as_u64().unwrap_or(0)),
    );
    m.insert(
        "running".into(),
        json!(st["runningCount"].as_u64().unwrap_or(0)),
    );
    m.insert(
        "pending".into(),
        json!(st["pendingCount"].as_u64().unwrap_or(0)),
    );
    put(&mut m, "status", str_of(&st["status"]));
    if v["metadata"]["deletionTimestamp"].is_string() {
        m.insert("deleting".into(), json!(true));
    }
    m.insert("deps".into(), json!(deployments));
    m.insert("ev".into(), json!(events));
    Value::Object(m)
}

pub fn instance(v: &Value) -> Value {
    let st = &v["status"];
    json!({
        "id": v["metadata"]["name"],
        "cl": v["spec"]["cluster"],
        "up": st["agentConnected"].as_bool().unwrap_or(false),
        "status": st["status"],
        "cpu": [st["registeredResources"]["CPU"], st["remainingResources"]["CPU"]],
        "mem": [st["registeredResources"]["MEMORY"], st["remainingResources"]["MEMORY"]],
        "run": st["runningTasksCount"],
        "pend": st["pendingTasksCount"],
    })
}

pub fn cluster(v: &Value) -> Value {
    json!({"name": v["metadata"]["name"], "status": v["status"]["status"]})
}

pub fn policy(v: &Value) -> Value {
    let tt = &v["spec"]["targetTracking"];
    let metric = match tt["predefinedMetricType"].as_str() {
        Some("ECSServiceAverageMemoryUtilization") => "memory",
        _ => "cpu",
    };
    json!({
        "name": v["metadata"]["name"],
        "svc": v["spec"]["service"],
        "metric": metric,
        "target": tt["targetValue"],
        "min": v["spec"]["minCapacity"],
        "max": v["spec"]["maxCapacity"],
        "cur": v["status"]["currentMetric"],
        "desired": v["status"]["desiredCapacity"],
        "msg": v["status"]["message"],
    })
}

/// A GitOps source's sync status (`/berth/sources/NAME`): the commit last applied (or the
/// folder's HEAD), Synced/OutOfSync, the last result, its time and the folder.
pub fn sync(key: &str, v: &Value) -> Value {
    let st = &v["status"];
    if st["sync"].is_string() || st["lastApplied"].is_object() {
        let applied = &st["lastApplied"];
        let attempt = &st["lastAttempt"];
        let commit = [&applied["commit"], &st["head"], &attempt["commit"]]
            .into_iter()
            .find(|c| c.is_string())
            .cloned()
            .unwrap_or(Value::Null);
        let failed = attempt["result"].as_str() == Some("Failed");
        return json!({
            "name": key.rsplit('/').next().unwrap_or(key),
            "commit": commit,
            "state": st["sync"],
            "dirty": st["dirty"],
            "msg": if failed { attempt["errors"][0]["message"].clone() } else { str_of(&st["message"]) },
            "at": if applied.is_object() { applied["at"].clone() } else { attempt["at"].clone() },
            "src": v["spec"]["path"],
        });
    }
    let pick = |names: &[&str]| -> Value {
        for n in names {
            for base in [&v["status"], v] {
                let x = &base[*n];
                if !x.is_null() && !x.is_object() && !x.is_array() {
                    return x.clone();
                }
            }
        }
        Value::Null
    };
    json!({
        "name": v["metadata"]["name"].as_str().map(str::to_string)
            .unwrap_or_else(|| key.rsplit('/').next().unwrap_or(key).to_string()),
        "commit": pick(&["commit", "commitSha", "sha", "revision", "lastAppliedCommit"]),
        "state": pick(&["state", "phase", "status", "result"]),
        "msg": pick(&["message", "error", "lastError"]),
        "at": pick(&["lastSyncAt", "lastSyncedAt", "syncedAt", "lastAppliedAt", "updatedAt"]),
        "src": pick(&["source", "path", "repo", "dir"]),
    })
}
