//! Secret values: the one route that answers with them, `GET /v1/secrets/{name}/value`
//! (action `berth:GetSecretValue`, which `berth:Get*` does not grant; see `auth::policy`).
//! Every other answer shows a Secret as its keys only ([`redacted`], used by
//! `objects_api::to_json`): never a value, never a ciphertext.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::state::ApiState;
use crate::auth::secret_values::{open_secret, SecretValueError};

/// A stored Secret as the API shows it: `spec.keys` instead of `spec.data`.
pub fn redacted(mut v: Value) -> Value {
    let keys: Vec<Value> = v["spec"]["data"]
        .as_object()
        .map(|m| m.keys().map(|k| json!(k)).collect())
        .unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("spec".into(), json!({ "keys": keys }));
    }
    v
}

#[derive(Debug, Deserialize, Default)]
pub struct ValueQuery {
    /// Only this key's value.
    pub key: Option<String>,
}

pub async fn get_value(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<ValueQuery>,
) -> Result<Json<Value>, ApiError> {
    let data = open_secret(&*st.store, st.secrets.as_deref(), &name)
        .await
        .map_err(|e| match e {
            SecretValueError::NotFound(_) => ApiError::not_found(e.to_string()),
            SecretValueError::Store(s) => s.into(),
            other => ApiError::internal(other.to_string()),
        })?;
    match q.key {
        Some(k) => match data.get(&k) {
            Some(v) => Ok(Json(json!({"name": name, "key": k, "value": v}))),
            None => Err(ApiError::not_found(format!(
                "secret {name} has no key {k:?}"
            ))),
        },
        None => Ok(Json(json!({"name": name, "data": data}))),
    }
}
