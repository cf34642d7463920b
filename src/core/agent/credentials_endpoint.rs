//! The task credentials endpoint (the ECS agent's `169.254.170.2` service, berth style).
//!
//! Each agent serves `GET /v2/credentials/<taskId>` on the Docker bridge gateway (e.g.
//! `172.17.0.1`, reachable from bridge-network containers; falls back to `0.0.0.0`) on an
//! ephemeral port (`BERTH_CREDENTIALS_ADDR=IP:PORT` overrides), and advertises the URL in the
//! store. Containers of a task whose definition names a `taskRole` are started with
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI` (that URL) and `AWS_CONTAINER_AUTHORIZATION_TOKEN`
//! (derived from the server key and the task id, so it is never stored).
//!
//! A joined agent ([`Secrets::Remote`]) holds no server key: it asks the API server for the
//! token and forwards each fetch to it (`api::agent_api`), which makes the same checks with
//! [`answer_for`] and audits the fetch.
//!
//! The endpoint answers `{AccessKeyId, SecretAccessKey, Token, Expiration, RoleArn}` only to
//! a request whose `Authorization` header is that task's token, only for a task placed on this
//! instance and not stopped, and records every fetch (served or refused) in the audit trail
//! with the task.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bollard::Docker;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::secrets::Secrets;
use crate::audit::{AuditLog, AuditRecord};
use crate::auth::crypto::{ct_eq, ServerKey};
use crate::auth::identity::{self, Endpoint};
use crate::model::{keys, Kind, Task, TaskDefinition};
use crate::store::{DynStore, Store};

pub const ADDR_ENV: &str = "BERTH_CREDENTIALS_ADDR";
pub const ENV_FULL_URI: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
pub const ENV_AUTH_TOKEN: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN";
/// How long a fetch waits for the iam_binder to issue a new task's first credentials.
const ISSUE_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct EndpointState {
    store: DynStore,
    instance: String,
    key: Arc<OnceCell<ServerKey>>,
    audit: AuditLog,
    secrets: Secrets,
}

impl EndpointState {
    pub fn new(store: DynStore, instance: String, secrets: Secrets) -> Self {
        EndpointState {
            audit: AuditLog::new(store.clone()),
            store,
            instance,
            key: Arc::new(OnceCell::new()),
            secrets,
        }
    }
}

/// The Docker bridge network's gateway address (what containers reach the host at).
pub async fn bridge_gateway(docker: &Docker) -> Option<Ipv4Addr> {
    let net = docker
        .inspect_network(
            "bridge",
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .ok()?;
    let configs = net.ipam?.config?;
    for c in &configs {
        if let Some(ip) = c
            .gateway
            .as_deref()
            .and_then(|g| g.parse::<Ipv4Addr>().ok())
        {
            return Some(ip);
        }
    }
    // Docker's default: the first address of the subnet.
    for c in &configs {
        let Some((net, _)) = c.subnet.as_deref().and_then(|s| s.split_once('/')) else {
            continue;
        };
        if let Ok(ip) = net.parse::<Ipv4Addr>() {
            return Some(Ipv4Addr::from(u32::from(ip) + 1));
        }
    }
    None
}

/// Bind, advertise and serve until `shutdown`. Errors are logged, not fatal: tasks with a
/// role then fail to start with a clear reason.
pub async fn serve_for_agent(
    store: DynStore,
    docker: Docker,
    instance: String,
    secrets: Secrets,
    shutdown: CancellationToken,
) {
    if let Err(e) = serve_inner(store, docker, instance, secrets, shutdown).await {
        tracing::error!(error = %format!("{e:#}"), "task credentials endpoint failed");
    }
}

async fn serve_inner(
    store: DynStore,
    docker: Docker,
    instance: String,
    secrets: Secrets,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let gateway = bridge_gateway(&docker).await;
    let wanted: SocketAddr = match std::env::var(ADDR_ENV).ok().filter(|v| !v.is_empty()) {
        Some(a) => a
            .parse()
            .map_err(|e| anyhow::anyhow!("{ADDR_ENV}={a:?} is not IP:PORT: {e}"))?,
        None => SocketAddr::new(
            gateway
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            0,
        ),
    };
    let listener = match TcpListener::bind(wanted).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(addr = %wanted, error = %e, "cannot bind the credentials endpoint there; using 0.0.0.0");
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, wanted.port())).await?
        }
    };
    let bound = listener.local_addr()?;
    let advertised_ip = if bound.ip().is_unspecified() {
        gateway.map(IpAddr::V4).unwrap_or(bound.ip())
    } else {
        bound.ip()
    };
    let url = format!("http://{}", SocketAddr::new(advertised_ip, bound.port()));
    let ep = Endpoint {
        url: url.clone(),
        instance: instance.clone(),
    };
    store
        .put(&identity::endpoint_key(&instance), serde_json::to_vec(&ep)?)
        .await?;
    tracing::info!(%url, bound = %bound, "task credentials endpoint listening");
    let st = EndpointState::new(store, instance, secrets);
    let app = Router::new()
        .route("/v2/credentials/{task}", get(fetch))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"code": "NotFound", "message": "GET /v2/credentials/<taskId>"})),
            )
        })
        .with_state(st)
        .into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

async fn fetch(
    State(st): State<EndpointState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(task_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let authz = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    fetch_as(&st, peer, &task_id, authz, ua).await
}

/// Serve `task_id`'s credentials to `peer` presenting `authz` (the task token): the checks,
/// the audit record. Also used by the metadata server's `/v2/credentials/<opaque id>`, which
/// has resolved the id and checked the caller's address first.
pub async fn fetch_as(
    st: &EndpointState,
    peer: SocketAddr,
    task_id: &str,
    authz: &str,
    ua: &str,
) -> Response {
    let task_id = task_id.to_string();
    if let Secrets::Remote(r) = &st.secrets {
        // The API server checks the token, the task and its placement, and audits the fetch.
        let (status, body) =
            Secrets::remote_credentials(r, &task_id, authz, &peer.ip().to_string(), ua).await;
        tracing::info!(task = %task_id, status, source = %peer.ip(), "task credentials fetch (via the API server)");
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        return (status, Json(body)).into_response();
    }
    let mut rec = AuditRecord {
        request_id: crate::model::new_id()[..16].to_string(),
        identity: format!("task/{task_id}"),
        task: Some(task_id.clone()),
        auth_method: "task-token".into(),
        source_ip: peer.ip().to_string(),
        user_agent: ua.chars().take(256).collect(),
        method: "GET".into(),
        path: format!("/v2/credentials/{task_id}"),
        action: "berth:GetTaskCredentials".into(),
        resources: vec![
            json!({"action": "berth:GetTaskCredentials", "resource": format!("task/{task_id}")}),
        ],
        request_parameters: json!({"instance": st.instance}),
        ..Default::default()
    };
    let token = authz;
    let key = st
        .key
        .get_or_try_init(|| ServerKey::load_or_create(&*st.store))
        .await
        .cloned();
    let (resp, decision, err) = answer_for(&*st.store, key, &st.instance, &task_id, token).await;
    rec.status = resp.0.as_u16();
    rec.decision = decision.into();
    rec.error_message = err;
    if let Some(v) = &resp.2 {
        rec.role = Some(v.0.clone());
        rec.access_key_id = Some(v.1.clone());
        rec.response_elements = json!({"AccessKeyId": v.1, "Expiration": v.2});
    }
    tracing::info!(task = %task_id, status = rec.status, source = %rec.source_ip, "task credentials fetch");
    st.audit.append(rec).await;
    resp.1
}

/// ((status, response, (role, access key id, expiration) when served), audit decision, error).
pub type Answer = (
    (StatusCode, Response, Option<(String, String, String)>),
    &'static str,
    Option<String>,
);

/// Answer a fetch of `task_id`'s credentials presenting `authorization` (the header's value)
/// on `instance`: the checks, in order, of the endpoint (also made by the API server for a
/// joined agent's fetch).
pub async fn answer_for(
    store: &dyn Store,
    key: anyhow::Result<ServerKey>,
    instance: &str,
    task_id: &str,
    authorization: &str,
) -> Answer {
    let deny = |status: StatusCode, code: &str, msg: &str, decision: &'static str| -> Answer {
        (
            (status, refuse(status, code, msg), None),
            decision,
            Some(msg.to_string()),
        )
    };
    let token = authorization
        .strip_prefix("Bearer ")
        .unwrap_or(authorization)
        .trim();
    if token.is_empty() {
        return deny(
            StatusCode::UNAUTHORIZED,
            "NoCredentials",
            "missing Authorization header (the task's AWS_CONTAINER_AUTHORIZATION_TOKEN)",
            "unauthenticated",
        );
    }
    let key = match key {
        Ok(k) => k,
        Err(e) => {
            return deny(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                &format!("server key unavailable: {e}"),
                "error",
            )
        }
    };
    if !ct_eq(
        token.as_bytes(),
        key.container_token_for(task_id).as_bytes(),
    ) {
        return deny(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "the authorization token is not this task's",
            "denied",
        );
    }
    let task: Option<Task> = crate::objects::get(store, &keys::key(Kind::Task, task_id))
        .await
        .ok()
        .flatten();
    let Some(task) = task.filter(|t| !t.is_stopped()) else {
        return deny(
            StatusCode::NOT_FOUND,
            "NotFound",
            "no such running task",
            "denied",
        );
    };
    if task.status.container_instance.as_deref() != Some(instance) {
        return deny(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "the task does not run on this instance",
            "denied",
        );
    }
    let deadline = tokio::time::Instant::now() + ISSUE_WAIT;
    let creds = loop {
        match identity::get_task_creds(store, task_id).await {
            Ok(Some((c, _))) if c.expiration > crate::model::now() => break c,
            _ if tokio::time::Instant::now() >= deadline => {
                return deny(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "NotIssued",
                    "credentials for this task are not issued yet; retry",
                    "error",
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let exp = creds
        .expiration
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let body = json!({
        "AccessKeyId": creds.access_key_id,
        "SecretAccessKey": key.secret_for(&creds.access_key_id),
        "Token": key.session_token_for(&creds.access_key_id),
        "Expiration": exp,
        "RoleArn": format!("arn:berth:iam::role/{}", creds.role),
    });
    (
        (
            StatusCode::OK,
            (StatusCode::OK, Json(body)).into_response(),
            Some((creds.role.clone(), creds.access_key_id.clone(), exp)),
        ),
        "allowed",
        None,
    )
}

/// Extra environment for a task's containers: the credentials URI and the task's token when
/// its definition names a `taskRole`, else nothing. Waits briefly for this instance's endpoint
/// to be advertised (it starts alongside the agent).
pub async fn task_env(
    store: &dyn Store,
    secrets: &Secrets,
    instance: &str,
    task: &Task,
    td: &TaskDefinition,
) -> anyhow::Result<Vec<(String, String)>> {
    if td.spec.task_role.as_deref().is_none_or(str::is_empty) {
        return Ok(vec![]);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let ep: Endpoint = loop {
        if let Some(kv) = store.get(&identity::endpoint_key(instance)).await? {
            break serde_json::from_slice(&kv.value)?;
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "task role {:?}: this instance has no task credentials endpoint",
                td.spec.task_role
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = &task.metadata.name;
    let token = secrets.container_token(store, id).await?;
    Ok(vec![
        (
            ENV_FULL_URI.to_string(),
            format!("{}/v2/credentials/{id}", ep.url),
        ),
        (ENV_AUTH_TOKEN.to_string(), token),
    ])
}
