//! API errors: a status code and a message, as JSON `{"error": "...", "details": [...]}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::apply::ApplyError;
use crate::objects::ObjectError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub details: Vec<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            details: vec![],
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, m)
    }
    pub fn unprocessable(m: impl Into<String>, details: Vec<serde_json::Value>) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: m.into(),
            details,
        }
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, m)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if !self.details.is_empty() {
            body["details"] = serde_json::Value::Array(self.details);
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            _ => Self::internal(e.to_string()),
        }
    }
}

impl From<ObjectError> for ApiError {
    fn from(e: ObjectError) -> Self {
        match e {
            ObjectError::Conflict(_) => Self::conflict(e.to_string()),
            ObjectError::Store(s) => s.into(),
            ObjectError::Decode { .. } => Self::internal(e.to_string()),
        }
    }
}

/// 422 with every manifest error in `details`, 409 when the store kept changing, the store's
/// status otherwise (one mapping for every endpoint that applies).
impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Invalid(errs) => {
                let n = errs.len();
                let first = errs.first().map(|e| e.to_string()).unwrap_or_default();
                let details = errs
                    .iter()
                    .map(|e| serde_json::to_value(e).unwrap_or(serde_json::Value::Null))
                    .collect();
                ApiError::unprocessable(
                    if n == 1 {
                        first
                    } else {
                        format!("{n} errors; first: {first}")
                    },
                    details,
                )
            }
            ApplyError::Owned(errs) => {
                let n = errs.len();
                let first = errs.first().map(|e| e.to_string()).unwrap_or_default();
                let mut e = ApiError::conflict(if n == 1 {
                    first
                } else {
                    format!("{n} objects belong to other sources; first: {first}")
                });
                e.details = errs
                    .iter()
                    .map(|e| serde_json::to_value(e).unwrap_or(serde_json::Value::Null))
                    .collect();
                e
            }
            ApplyError::Conflict => ApiError::conflict("the store changed during apply; retry"),
            ApplyError::Store(s) => s.into(),
        }
    }
}

/// Decode a JSON body with the field path in the error (never a 500 on bad input).
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty; expected JSON",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::bad_request(format!("malformed JSON body: {inner}"))
        } else {
            ApiError::bad_request(format!("malformed JSON body at {path}: {inner}"))
        }
    })
}
