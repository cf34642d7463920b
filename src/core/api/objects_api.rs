//! Generic object endpoints: list, get, delete, apply.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{decode, ApiError};
use super::state::ApiState;
use crate::apply::{self, ApplyOptions};
use crate::manifest::Document;
use crate::model::{keys, parse_taskdef_ref, Kind, Service, TaskDefinition};
use crate::objects::{self, ObjectError};
use crate::store::KeyValue;

pub fn parse_kind(kind: &str) -> Result<Kind, ApiError> {
    Kind::parse(kind).ok_or_else(|| {
        let all: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
        ApiError::not_found(format!(
            "unknown kind {kind:?}; expected one of: {}",
            all.join(", ")
        ))
    })
}

/// A stored object as JSON, stamped with its store revision.
pub fn to_json(kv: &KeyValue) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(&kv.value).ok()?;
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("revision".into(), json!(kv.mod_revision));
    }
    // A Secret shows its keys, never a value nor a ciphertext.
    if v["kind"] == "Secret" || keys::name_of(&kv.key, Kind::Secret).is_some() {
        v = super::secrets_api::redacted(v);
    }
    Some(v)
}

#[derive(Debug, Deserialize, Default)]
pub struct ListQuery {
    /// Tasks: only those of this service.
    pub service: Option<String>,
    /// Tasks: only those with this lastStatus (e.g. RUNNING) or `active`.
    pub status: Option<String>,
    pub cluster: Option<String>,
}

pub async fn list(
    State(st): State<ApiState>,
    Path(kind): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let kind = parse_kind(&kind)?;
    let (kvs, _) = st.store.range(&keys::prefix(kind)).await?;
    let mut out: Vec<Value> = kvs.iter().filter_map(to_json).collect();
    if kind == Kind::Task {
        out.retain(|t| {
            let group = t["spec"]["group"].as_str().unwrap_or("");
            let last = t["status"]["lastStatus"].as_str().unwrap_or("");
            let desired = t["status"]["desiredStatus"].as_str().unwrap_or("");
            q.service
                .as_ref()
                .is_none_or(|s| group == format!("service:{s}"))
                && q.cluster
                    .as_ref()
                    .is_none_or(|c| t["spec"]["cluster"].as_str() == Some(c))
                && q.status.as_ref().is_none_or(|s| {
                    if s.eq_ignore_ascii_case("active") {
                        last != "STOPPED" && desired != "STOPPED"
                    } else {
                        last.eq_ignore_ascii_case(s)
                    }
                })
        });
    }
    Ok(Json(out))
}

/// `GET /v1/tasks` (its own route because `POST /v1/tasks` is run-task).
pub async fn list_tasks(
    st: State<ApiState>,
    q: Query<ListQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    list(st, Path("tasks".to_string()), q).await
}

async fn get_kv(st: &ApiState, kind: Kind, name: &str) -> Result<KeyValue, ApiError> {
    let kv = if kind == Kind::TaskDefinition {
        let Some((family, rev)) = parse_taskdef_ref(name) else {
            return Err(ApiError::bad_request(format!(
                "invalid task definition reference {name:?}"
            )));
        };
        match rev {
            Some(r) => st.store.get(&keys::taskdef_key(family, r)).await?,
            None => st
                .store
                .range(&keys::taskdef_family_prefix(family))
                .await?
                .0
                .pop(),
        }
    } else {
        st.store.get(&keys::key(kind, name)).await?
    };
    kv.ok_or_else(|| ApiError::not_found(format!("{kind} {name:?} not found")))
}

pub async fn get_one(
    State(st): State<ApiState>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let kind = parse_kind(&kind)?;
    let kv = get_kv(&st, kind, &name).await?;
    to_json(&kv)
        .map(Json)
        .ok_or_else(|| ApiError::internal(format!("stored {kind} {name} is not valid JSON")))
}

/// Delete semantics per kind, ECS-like: a service drains (its tasks stop) and then goes; a
/// task is stopped; a task definition revision is deregistered (INACTIVE, still readable); a
/// cluster goes only when nothing references it.
pub async fn delete_one(
    State(st): State<ApiState>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let kind = parse_kind(&kind)?;
    let store = &*st.store;
    match kind {
        Kind::Service => match objects::delete_service(store, &name).await {
            Ok(Some(_)) => Ok(Json(
                json!({"kind": "Service", "name": name, "result": "deleting"}),
            )),
            Ok(None) => Err(ApiError::not_found(format!("service {name:?} not found"))),
            Err(ObjectError::Conflict(_)) => {
                Err(ApiError::conflict("service is changing too fast; retry"))
            }
            Err(e) => Err(e.into()),
        },
        Kind::Task => {
            let t = super::tasks_api::stop(store, &name, "Task stopped by user").await?;
            Ok(Json(
                json!({"kind": "Task", "name": t.metadata.name, "result": "stopping"}),
            ))
        }
        Kind::TaskDefinition => {
            let kv = get_kv(&st, kind, &name).await?;
            let mut td: TaskDefinition =
                TaskDefinition::from_kv(&kv).map_err(|e| ApiError::internal(e.to_string()))?;
            td.status.status = "INACTIVE".into();
            objects::put_cas(store, &kv.key, &td).await?;
            Ok(Json(
                json!({"kind": "TaskDefinition", "name": td.metadata.name, "result": "deregistered"}),
            ))
        }
        Kind::Cluster => {
            let key = keys::key(kind, &name);
            let Some(kv) = store.get(&key).await? else {
                return Err(ApiError::not_found(format!("cluster {name:?} not found")));
            };
            let services: Vec<Service> = objects::list(store, &keys::prefix(Kind::Service)).await?;
            if let Some(s) = services.iter().find(|s| s.spec.cluster == name) {
                return Err(ApiError::conflict(format!(
                    "cluster {name} still has service {}; delete it first",
                    s.metadata.name
                )));
            }
            objects::delete_cas(store, &key, kv.mod_revision).await?;
            Ok(Json(
                json!({"kind": "Cluster", "name": name, "result": "deleted"}),
            ))
        }
        Kind::LoadBalancer | Kind::TargetGroup => {
            let key = keys::key(kind, &name);
            let Some(kv) = store.get(&key).await? else {
                return Err(ApiError::not_found(format!("{kind} {name:?} not found")));
            };
            if kind == Kind::TargetGroup {
                // Refuse while something still sends traffic to it.
                let services: Vec<Service> =
                    objects::list(store, &keys::prefix(Kind::Service)).await?;
                if let Some(s) = services
                    .iter()
                    .find(|s| s.spec.load_balancers.iter().any(|l| l.target_group == name))
                {
                    return Err(ApiError::conflict(format!(
                        "target group {name} is used by service {}; remove it from the service first",
                        s.metadata.name
                    )));
                }
                let lbs: Vec<crate::model::LoadBalancer> =
                    objects::list(store, &keys::prefix(Kind::LoadBalancer)).await?;
                if let Some(lb) = lbs
                    .iter()
                    .find(|lb| crate::model::lb::target_groups_of(&lb.spec).contains(&name))
                {
                    return Err(ApiError::conflict(format!(
                        "target group {name} is used by load balancer {}; remove the rule first",
                        lb.metadata.name
                    )));
                }
            }
            objects::delete_cas(store, &key, kv.mod_revision).await?;
            Ok(Json(
                json!({"kind": kind.as_str(), "name": name, "result": "deleted"}),
            ))
        }
        Kind::Role | Kind::Secret => {
            let key = keys::key(kind, &name);
            let Some(kv) = store.get(&key).await? else {
                return Err(ApiError::not_found(format!("{kind} {name:?} not found")));
            };
            objects::delete_cas(store, &key, kv.mod_revision).await?;
            Ok(Json(
                json!({"kind": kind.as_str(), "name": name, "result": "deleted"}),
            ))
        }
        Kind::ScalingPolicy => {
            let key = keys::key(kind, &name);
            let Some(kv) = store.get(&key).await? else {
                return Err(ApiError::not_found(format!(
                    "scaling policy {name:?} not found"
                )));
            };
            objects::delete_cas(store, &key, kv.mod_revision).await?;
            Ok(Json(
                json!({"kind": "ScalingPolicy", "name": name, "result": "deleted"}),
            ))
        }
        Kind::ContainerInstance => {
            let key = keys::key(kind, &name);
            let Some(kv) = store.get(&key).await? else {
                return Err(ApiError::not_found(format!(
                    "container instance {name:?} not found"
                )));
            };
            let running = objects::list_tasks(store).await?.iter().any(|t| {
                t.status.container_instance.as_deref() == Some(name.as_str()) && !t.is_stopped()
            });
            if running {
                return Err(ApiError::conflict(format!(
                    "container instance {name} still has tasks; stop them first"
                )));
            }
            objects::delete_cas(store, &key, kv.mod_revision).await?;
            Ok(Json(
                json!({"kind": "ContainerInstance", "name": name, "result": "deregistered"}),
            ))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyRequest {
    pub documents: Vec<Document>,
    #[serde(default)]
    pub dry_run: bool,
}

pub async fn apply(State(st): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: ApplyRequest = decode(&body)?;
    let results = apply::apply(
        &*st.store,
        &req.documents,
        &ApplyOptions {
            dry_run: req.dry_run,
            secrets: st.secrets.clone(),
        },
    )
    .await?;
    Ok(Json(json!({ "results": results, "dryRun": req.dry_run })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteRequest {
    pub documents: Vec<Document>,
}

pub async fn delete_documents(
    State(st): State<ApiState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: DeleteRequest = decode(&body)?;
    let results = apply::delete_documents(&*st.store, &req.documents).await?;
    Ok(Json(json!({ "results": results })))
}
