//! `/v1/auth/*` (identities, whoami, can-i) and `/v1/audit`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::audit;
use crate::auth::identity::{self, IdentityError};

use super::auth_state::{evaluate_for, AuthState, Caller};
use super::error::ApiError;

pub fn routes(st: AuthState) -> Router {
    Router::new()
        .route("/v1/auth/whoami", get(whoami))
        .route("/v1/auth/can-i", post(can_i))
        .route("/v1/auth/identities", post(create).get(list))
        .route("/v1/auth/identities/{name}", get(describe).delete(remove))
        .route("/v1/audit", get(audit_query))
        .with_state(st)
}

/// Decode a JSON body (never a 500 on bad input).
fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

async fn whoami(Extension(c): Extension<Caller>) -> Json<Caller> {
    Json(c)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CanI {
    action: String,
    #[serde(default)]
    resource: Option<String>,
}

async fn can_i(
    State(st): State<AuthState>,
    Extension(c): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q: CanI = decode(&body)?;
    let resource = q.resource.unwrap_or_else(|| "*".into());
    let ev = evaluate_for(&st, &c, &q.action, &resource)
        .await
        .map_err(internal)?;
    Ok(Json(json!({
        "allowed": ev.allowed(),
        "decision": ev.decision,
        "statement": ev.statement,
        "action": q.action,
        "resource": resource,
        "identity": c.identity,
        "role": c.role,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateIdentity {
    name: String,
    role: String,
}

async fn create(
    State(st): State<AuthState>,
    Extension(c): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: CreateIdentity = decode(&body)?;
    if identity::get_role(&*st.store, &req.role)
        .await
        .map_err(internal)?
        .is_none()
    {
        return Err(ApiError::not_found(format!(
            "role {:?} not found; apply a Role first (kind: Role)",
            req.role
        )));
    }
    let key = st.key().await.map_err(internal)?;
    match identity::create_identity(&*st.store, &key, &req.name, &req.role, &c.identity).await {
        Ok(n) => Ok((StatusCode::CREATED, Json(n)).into_response()),
        Err(IdentityError::Exists(n)) => {
            Err(ApiError::conflict(format!("identity {n:?} already exists")))
        }
        Err(IdentityError::Invalid(m)) => Err(ApiError::bad_request(m)),
        Err(IdentityError::Other(e)) => Err(internal(e)),
    }
}

async fn list(State(st): State<AuthState>) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let ids = identity::list_identities(&*st.store)
        .await
        .map_err(internal)?;
    Ok(Json(ids.iter().map(|i| i.public()).collect()))
}

async fn describe(
    State(st): State<AuthState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match identity::get_identity(&*st.store, &name)
        .await
        .map_err(internal)?
    {
        Some(i) => Ok(Json(i.public())),
        None => Err(ApiError::not_found(format!("identity {name:?} not found"))),
    }
}

async fn remove(
    State(st): State<AuthState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if identity::delete_identity(&*st.store, &name)
        .await
        .map_err(internal)?
    {
        Ok(Json(
            json!({"kind": "Identity", "name": name, "result": "deleted"}),
        ))
    } else {
        Err(ApiError::not_found(format!("identity {name:?} not found")))
    }
}

async fn audit_query(
    State(st): State<AuthState>,
    Query(q): Query<audit::Query>,
) -> Result<Json<Vec<audit::AuditRecord>>, ApiError> {
    audit::query(&*st.store, &q)
        .await
        .map(Json)
        .map_err(ApiError::bad_request)
}
