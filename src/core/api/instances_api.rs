//! Drain and re-activate a container instance (`berth drain` / `berth activate`): ECS's
//! UpdateContainerInstancesState on berth's own API. The write only flips the status; the
//! scheduler stops placing on a DRAINING instance and the service controller moves service
//! tasks off it within each service's min/max bounds.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::Value;

use super::error::ApiError;
use super::state::ApiState;
use crate::objects;

pub async fn drain(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set(&st, &id, "DRAINING").await
}

pub async fn activate(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set(&st, &id, "ACTIVE").await
}

async fn set(st: &ApiState, id: &str, state: &str) -> Result<Json<Value>, ApiError> {
    match objects::set_instance_state(&*st.store, id, state).await? {
        Some(i) => Ok(Json(serde_json::to_value(&i).unwrap_or(Value::Null))),
        None => Err(ApiError::not_found(format!(
            "container instance `{id}` not found (see `berth get instances`)"
        ))),
    }
}
