//! RegisterTaskDefinition, DescribeTaskDefinition, ListTaskDefinitions,
//! ListTaskDefinitionFamilies, DeregisterTaskDefinition on berth's TaskDefinition revisions
//! (a registration is an apply of the family: a changed spec is revision N+1).

use axum::extract::{Path, State};
use serde_json::{json, Value};

use super::arn;
use super::ctx::Ctx;
use super::error::{EcsError, EcsResult};
use super::shapes::{self, page, with_token};
use crate::api::objects_api::{self, to_json};
use crate::model::{keys, parse_taskdef_ref, Kind};

/// Request members that are ECS bookkeeping, not part of berth's spec.
const NOT_SPEC: &[&str] = &["family", "tags", "runtimePlatform", "inferenceAccelerators"];

async fn latest(cx: &Ctx, reference: &str) -> Result<Option<Value>, EcsError> {
    let Some((family, rev)) = parse_taskdef_ref(reference) else {
        return Ok(None);
    };
    if family.is_empty() || family.contains('/') {
        return Ok(None);
    }
    let kv = match rev {
        Some(r) => cx.st.store.get(&keys::taskdef_key(family, r)).await?,
        None => {
            // The latest ACTIVE revision, as ECS resolves a bare family.
            let (kvs, _) = cx
                .st
                .store
                .range(&keys::taskdef_family_prefix(family))
                .await?;
            let all: Vec<Value> = kvs.iter().filter_map(to_json).collect();
            return Ok(all
                .iter()
                .rev()
                .find(|t| t["status"]["status"].as_str().unwrap_or("ACTIVE") == "ACTIVE")
                .cloned());
        }
    };
    Ok(kv.as_ref().and_then(to_json))
}

pub async fn register(cx: &Ctx, req: &Value) -> EcsResult {
    let Some(family) = req["family"].as_str().filter(|f| !f.is_empty()) else {
        return Err(EcsError::client("Family is required."));
    };
    let mut spec = req.as_object().cloned().unwrap_or_default();
    for k in NOT_SPEC {
        spec.remove(*k);
    }
    if let Some(role) = spec.remove("taskRoleArn") {
        let name = role.as_str().map(crate::auth::actions::role_name);
        spec.insert("taskRole".into(), json!(name));
    }
    let tags = super::tags::from_request(req)?;
    cx.apply_tagged("TaskDefinition", family, Value::Object(spec), &tags)
        .await?;
    let (kvs, _) = cx
        .st
        .store
        .range(&keys::taskdef_family_prefix(family))
        .await?;
    let td = kvs
        .last()
        .and_then(to_json)
        .ok_or_else(|| EcsError::server("the registered revision is not readable"))?;
    // An unchanged registration stores no new revision: its tags go onto the latest one.
    let td = match kvs.last() {
        Some(kv) if !tags.is_empty() => super::tags::add(&*cx.st.store, &kv.key, &tags).await?,
        _ => td,
    };
    Ok(json!({ "taskDefinition": shapes::taskdef(&cx.region, &td), "tags": super::tags::of(&td) }))
}

pub async fn describe(cx: &Ctx, req: &Value) -> EcsResult {
    let r = req["taskDefinition"].as_str().map(arn::name).unwrap_or("");
    match latest(cx, r).await? {
        Some(td) => {
            let tags = if super::tags::wanted(req) {
                super::tags::of(&td)
            } else {
                json!([])
            };
            Ok(json!({ "taskDefinition": shapes::taskdef(&cx.region, &td), "tags": tags }))
        }
        None => Err(EcsError::client("Unable to describe task definition.")),
    }
}

fn status_filter(req: &Value) -> Result<String, EcsError> {
    let s = req["status"].as_str().unwrap_or("ACTIVE").to_string();
    match s.as_str() {
        "ACTIVE" | "INACTIVE" | "DELETE_IN_PROGRESS" | "ALL" => Ok(s),
        _ => Err(EcsError::invalid(format!("invalid status {s:?}"))),
    }
}

fn status_of(t: &Value) -> &str {
    t["status"]["status"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("ACTIVE")
}

pub async fn list(cx: &Ctx, req: &Value) -> EcsResult {
    let status = status_filter(req)?;
    let prefix = req["familyPrefix"].as_str().unwrap_or("");
    let mut tds: Vec<(String, u64)> = cx
        .all(Kind::TaskDefinition)
        .await?
        .iter()
        .filter(|t| status == "ALL" || status_of(t) == status)
        .filter_map(|t| {
            let f = t["status"]["family"].as_str()?;
            f.starts_with(prefix)
                .then(|| (f.to_string(), t["status"]["revision"].as_u64().unwrap_or(0)))
        })
        .collect();
    tds.sort();
    match req["sort"].as_str().unwrap_or("ASC") {
        "ASC" => {}
        "DESC" => tds.reverse(),
        s => return Err(EcsError::invalid(format!("invalid sort {s:?}"))),
    }
    let (tds, next) = page(tds, req, 100)?;
    let arns: Vec<String> = tds
        .iter()
        .map(|(f, r)| arn::task_definition(&cx.region, &format!("{f}:{r}")))
        .collect();
    Ok(with_token(json!({ "taskDefinitionArns": arns }), next))
}

pub async fn families(cx: &Ctx, req: &Value) -> EcsResult {
    let status = status_filter(req)?;
    let prefix = req["familyPrefix"].as_str().unwrap_or("");
    let all = cx.all(Kind::TaskDefinition).await?;
    let mut fams: Vec<String> = all
        .iter()
        .filter_map(|t| t["status"]["family"].as_str().map(str::to_string))
        .filter(|f| f.starts_with(prefix))
        .collect();
    fams.sort();
    fams.dedup();
    // ACTIVE: a family with an active revision; INACTIVE: one with none.
    fams.retain(|f| {
        let active = all
            .iter()
            .any(|t| t["status"]["family"].as_str() == Some(f) && status_of(t) == "ACTIVE");
        match status.as_str() {
            "ACTIVE" => active,
            "INACTIVE" => !active,
            _ => true,
        }
    });
    let (fams, next) = page(fams, req, 100)?;
    Ok(with_token(json!({ "families": fams }), next))
}

pub async fn deregister(cx: &Ctx, req: &Value) -> EcsResult {
    let r = req["taskDefinition"].as_str().map(arn::name).unwrap_or("");
    if !matches!(parse_taskdef_ref(r), Some((_, Some(_)))) {
        return Err(EcsError::invalid(
            "taskDefinition must name a revision (FAMILY:REVISION or its ARN)",
        ));
    }
    let _deleted = objects_api::delete_one(
        State(cx.st.clone()),
        Path(("taskdefinitions".into(), r.to_string())),
    )
    .await
    .map_err(|e| EcsError::from_api(e, "ClientException"))?;
    let td = latest(cx, r)
        .await?
        .ok_or_else(|| EcsError::client("Unable to describe task definition."))?;
    Ok(json!({ "taskDefinition": shapes::taskdef(&cx.region, &td) }))
}

/// DeleteTaskDefinitions: INACTIVE revisions (deregistered first, as ECS requires) that no
/// task still holds are removed from the store; the answer shows them DELETE_IN_PROGRESS, as
/// ECS does. The others are in `failures[]`.
pub async fn delete_many(cx: &Ctx, req: &Value) -> EcsResult {
    let wanted = super::ctx::str_list(req, "taskDefinitions");
    if wanted.is_empty() || wanted.len() > 10 {
        return Err(EcsError::invalid(
            "taskDefinitions must name between 1 and 10 revisions",
        ));
    }
    let tasks = crate::objects::list_tasks(&*cx.st.store).await?;
    let mut out = vec![];
    let mut failures = vec![];
    for w in &wanted {
        let r = arn::name(w);
        let fail = |reason: &str| shapes::failure(arn::task_definition(&cx.region, r), reason);
        let Some((family, Some(rev))) = parse_taskdef_ref(r) else {
            failures.push(fail("The specified task definition must name a revision"));
            continue;
        };
        let key = keys::taskdef_key(family, rev);
        let Some(kv) = cx.st.store.get(&key).await? else {
            failures.push(fail("MISSING"));
            continue;
        };
        let Some(td) = to_json(&kv) else {
            failures.push(fail("MISSING"));
            continue;
        };
        if status_of(&td) != "INACTIVE" {
            failures.push(fail(
                "The specified task definition is still ACTIVE; deregister it first",
            ));
            continue;
        }
        if tasks
            .iter()
            .any(|t| t.spec.task_definition == r && !t.is_stopped())
        {
            failures.push(fail("The specified task definition is in use by tasks"));
            continue;
        }
        let txn = crate::store::Txn::new()
            .when(crate::store::Compare::mod_revision(&key, kv.mod_revision))
            .and_then(crate::store::Op::delete(key.clone()));
        if !cx.st.store.txn(txn).await?.succeeded {
            failures.push(fail("The task definition changed meanwhile; retry"));
            continue;
        }
        let mut shaped = shapes::taskdef(&cx.region, &td);
        shaped["status"] = json!("DELETE_IN_PROGRESS");
        out.push(shaped);
    }
    Ok(json!({ "taskDefinitions": out, "failures": failures }))
}
