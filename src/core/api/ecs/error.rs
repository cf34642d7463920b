//! ECS errors as botocore parses them: `{"__type": "ClusterNotFoundException", "message": …}`,
//! 400 for client errors, 500 for `ServerException`, `x-amzn-RequestId` on every answer (the
//! middleware sets it).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::api::error::ApiError;

pub const REQUEST_ID_HEADER: &str = "x-amzn-requestid";
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

#[derive(Debug)]
pub struct EcsError {
    pub kind: &'static str,
    pub message: String,
}

pub type EcsResult = Result<Value, EcsError>;

impl EcsError {
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        EcsError {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("InvalidParameterException", message)
    }
    pub fn client(message: impl Into<String>) -> Self {
        Self::new("ClientException", message)
    }
    pub fn cluster_not_found(name: &str) -> Self {
        Self::new(
            "ClusterNotFoundException",
            format!("Cluster not found: {name}"),
        )
    }
    pub fn service_not_found(name: &str) -> Self {
        Self::new(
            "ServiceNotFoundException",
            format!("Service not found: {name}"),
        )
    }
    pub fn server(message: impl Into<String>) -> Self {
        Self::new("ServerException", message)
    }

    /// A REST handler's error in ECS terms: `not_found` names what a 404 means here.
    pub fn from_api(e: ApiError, not_found: &'static str) -> Self {
        let kind = match e.status.as_u16() {
            404 => not_found,
            400 | 409 | 413 | 422 => "InvalidParameterException",
            403 => "AccessDeniedException",
            _ => "ServerException",
        };
        let mut message = e.message;
        if let Some(first) = e.details.first().and_then(|d| d["message"].as_str()) {
            if !message.contains(first) {
                message = format!("{message}: {first}");
            }
        }
        EcsError::new(kind, message)
    }

    fn status(&self) -> StatusCode {
        if self.kind == "ServerException" {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_REQUEST
        }
    }
}

impl From<ApiError> for EcsError {
    fn from(e: ApiError) -> Self {
        EcsError::from_api(e, "ClientException")
    }
}

impl From<crate::store::StoreError> for EcsError {
    fn from(e: crate::store::StoreError) -> Self {
        EcsError::server(e.to_string())
    }
}

impl From<crate::objects::ObjectError> for EcsError {
    fn from(e: crate::objects::ObjectError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<anyhow::Error> for EcsError {
    fn from(e: anyhow::Error) -> Self {
        EcsError::server(e.to_string())
    }
}

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

impl IntoResponse for EcsError {
    fn into_response(self) -> Response {
        json_response(
            self.status(),
            &json!({"__type": self.kind, "message": self.message}),
        )
    }
}

/// The middleware's refusals (authentication, authorization, audit) in ECS's shape.
pub fn denial(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    let kind = match status.as_u16() {
        401 => "UnrecognizedClientException",
        403 => "AccessDeniedException",
        413 => "InvalidParameterException",
        _ => "ServerException",
    };
    let _ = code;
    // ECS answers AccessDeniedException with HTTP 400, as botocore's model has it.
    let status = if status == StatusCode::FORBIDDEN {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    let mut resp = json_response(status, &json!({"__type": kind, "message": message}));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}
