//! ECS's JSON 1.1 protocol on the API address: `POST /` with
//! `X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Operation>`, so boto3 and `aws ecs`
//! work against berth. Each operation maps onto berth's own objects through the same apply,
//! run-task and stop paths the REST API uses; the middleware authenticates (SigV4, service
//! `ecs`), parses each call once (`EcsCall`), authorizes it as `ecs:<Operation>` on ECS ARNs
//! (`authz.rs`) and audits it like any other call.

mod account;
pub mod arn;
mod attributes;
pub mod authz;
mod clusters;
mod ctx;
mod deployments;
pub mod error;
mod instances;
mod services;
pub mod shapes;
mod start_task;
mod tags;
mod taskdefs;
mod tasks;

use axum::body::Bytes;
use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::state::ApiState;
use crate::auth::sigv4;
use ctx::Ctx;
use error::{EcsError, EcsResult};

pub const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";

/// The ECS operation a request is, if it is one (`POST /` with an ECS `X-Amz-Target`).
pub fn operation(method: &Method, path: &str, headers: &HeaderMap) -> Option<String> {
    if *method != Method::POST || (path != "/" && !path.is_empty()) {
        return None;
    }
    let t = headers.get("x-amz-target")?.to_str().ok()?;
    t.strip_prefix(TARGET_PREFIX).map(str::to_string)
}

/// Describe/List operations change nothing (the middleware treats them as reads).
pub fn is_read_only(op: &str) -> bool {
    op.starts_with("Describe") || op.starts_with("List")
}

fn region_of(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| sigv4::parse_authorization(a).ok())
        .map(|p| p.region)
        .unwrap_or_else(|| sigv4::DEFAULT_REGION.to_string())
}

/// An ECS call parsed once: the middleware authorizes exactly this (`authz::targets`) and
/// hands it to [`dispatch`] in the request's extensions, so the handler acts on what was
/// authorized, never on a second reading of the body.
#[derive(Debug, Clone)]
pub struct EcsCall {
    pub op: String,
    /// From the SigV4 credential scope: the region of every ARN of the call.
    pub region: String,
    pub req: Arc<Value>,
}

/// Parse an ECS call's body (empty = `{}`; anything but a JSON object is refused).
pub fn parse_call(op: &str, headers: &HeaderMap, body: &[u8]) -> Result<EcsCall, EcsError> {
    let req: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return Err(EcsError::new(
                    "SerializationException",
                    "the body is not a JSON object",
                ))
            }
        }
    };
    Ok(EcsCall {
        op: op.to_string(),
        region: region_of(headers),
        req: Arc::new(req),
    })
}

/// `POST /`: one ECS operation (as the middleware parsed and authorized it).
pub async fn dispatch(
    State(st): State<ApiState>,
    call: Option<Extension<EcsCall>>,
    caller: Option<Extension<super::auth_state::Caller>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(op) = operation(&Method::POST, "/", &headers) else {
        return EcsError::new(
            "UnknownOperationException",
            "POST / expects X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Operation>",
        )
        .into_response();
    };
    let call = match call {
        Some(Extension(c)) if c.op == op => c,
        // Only without the middleware in front (it parses every ECS call it lets through).
        _ => match parse_call(&op, &headers, &body) {
            Ok(c) => c,
            Err(e) => return e.into_response(),
        },
    };
    let cx = Ctx {
        st,
        region: call.region.clone(),
        principal: caller
            .map(|Extension(c)| c.identity)
            .unwrap_or_else(|| "anonymous".into()),
    };
    match run(&cx, &op, &call.req).await {
        Ok(v) => error::json_response(StatusCode::OK, &v),
        Err(e) => e.into_response(),
    }
}

async fn run(cx: &Ctx, op: &str, req: &Value) -> EcsResult {
    match op {
        "ListClusters" => clusters::list(cx, req).await,
        "DescribeClusters" => clusters::describe(cx, req).await,
        "CreateCluster" => clusters::create(cx, req).await,
        "DeleteCluster" => clusters::delete(cx, req).await,
        "UpdateCluster" | "UpdateClusterSettings" => clusters::update(cx, req).await,
        "RegisterTaskDefinition" => taskdefs::register(cx, req).await,
        "DescribeTaskDefinition" => taskdefs::describe(cx, req).await,
        "ListTaskDefinitions" => taskdefs::list(cx, req).await,
        "ListTaskDefinitionFamilies" => taskdefs::families(cx, req).await,
        "DeregisterTaskDefinition" => taskdefs::deregister(cx, req).await,
        "DeleteTaskDefinitions" => taskdefs::delete_many(cx, req).await,
        "CreateService" => services::create(cx, req).await,
        "DescribeServices" => services::describe(cx, req).await,
        "ListServices" => services::list(cx, req).await,
        "UpdateService" => services::update(cx, req).await,
        "DeleteService" => services::delete(cx, req).await,
        "ListServiceDeployments" => deployments::list(cx, req).await,
        "DescribeServiceDeployments" => deployments::describe(cx, req).await,
        "RunTask" => tasks::run(cx, req).await,
        "StartTask" => start_task::start(cx, req).await,
        "StopTask" => tasks::stop(cx, req).await,
        "DescribeTasks" => tasks::describe(cx, req).await,
        "ListTasks" => tasks::list(cx, req).await,
        "ListContainerInstances" => instances::list(cx, req).await,
        "DescribeContainerInstances" => instances::describe(cx, req).await,
        "UpdateContainerInstancesState" => instances::update_state(cx, req).await,
        "DeregisterContainerInstance" => instances::deregister(cx, req).await,
        "PutAttributes" => attributes::put(cx, req).await,
        "ListAttributes" => attributes::list(cx, req).await,
        "DeleteAttributes" => attributes::delete(cx, req).await,
        "ListAccountSettings" => account::list(cx, req).await,
        "PutAccountSetting" => account::put(cx, req).await,
        "PutAccountSettingDefault" => account::put_default(cx, req).await,
        "DeleteAccountSetting" => account::delete(cx, req).await,
        "TagResource" => tags::tag_resource(cx, req).await,
        "UntagResource" => tags::untag_resource(cx, req).await,
        "ListTagsForResource" => tags::list_for_resource(cx, req).await,
        other => Err(EcsError::new(
            "UnsupportedFeatureException",
            format!("berth does not implement the ECS operation {other}"),
        )),
    }
}
