//! `/v1/agent/*`: how agents join and reach the store through the API (ARCHITECTURE.md,
//! "Agents join through the API").
//!
//! - `POST /v1/agent/join` `{joinToken, instanceId}` → `{credential, instance}`: a join token
//!   buys a per-instance agent credential. Wrong or missing token → 401; an instance whose
//!   lease is live (another agent holds it) → 409.
//! - `POST /v1/agent/store/{get,range,txn,watch,revision}` and `/v1/agent/store/lease/
//!   {grant,keepalive,revoke}`: the [`crate::store::Store`] trait for `store::remote`, each key
//!   decided by `auth::node_authz` for the credential's instance. A watch is a chunked NDJSON
//!   stream (`{"events":[…]}` per revision, `{"progress":REV}` for a filtered-out revision,
//!   `{"storeError":…}` last).
//! - `GET /v1/agent/tasks/{id}/token`, `POST /v1/agent/tasks/{id}/credentials`: a task's
//!   container token and role credentials, minted here for tasks placed on the caller's
//!   instance (agent hosts hold no server key).
//! - Admin (through the middleware): `POST|GET /v1/agent/join-tokens`,
//!   `DELETE /v1/agent/join-tokens/{id}`, `DELETE /v1/agent/instances/{id}/credential`.
//!
//! Agent requests carry `Authorization: Bearer <agent credential>` and `x-berth-instance`; a
//! credential presented for another instance → 403. Every refusal, join and secret handed out
//! is recorded in the audit trail (identity `agent/<instance>`); allowed store calls are not
//! (they are the agent's steady traffic). An open watch re-checks its credential every 10 s (on
//! its next event) and ends with an error once it is revoked.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::agent::credentials_endpoint;
use crate::audit::AuditRecord;
use crate::auth::agent_join;
use crate::auth::node_authz::{self, Scope, TxnDecision};
use crate::auth::secret_values;
use crate::model::{keys, Kind, Task};
use crate::store::remote::{wire, INSTANCE_HEADER, UNAUTHENTICATED};
use crate::store::{KeyValue, Op, StoreError, Txn};

use super::agent_index::{self, AssignmentIndex, Feed};
use super::auth_state::{AuthState, Caller};
use super::error::ApiError;

/// How long a cached scope (an instance's tasks) is trusted before it is re-read; a refusal
/// on a cached scope is always re-decided on a fresh one.
const SCOPE_TTL: Duration = Duration::from_secs(2);
/// How often an open watch re-checks its agent credential (on its next event).
const CREDENTIAL_RECHECK: Duration = Duration::from_secs(10);
const MIN_LEASE: Duration = Duration::from_secs(1);
const MAX_LEASE: Duration = Duration::from_secs(600);

/// Instance → (when read, its scope).
type ScopeCache = Arc<Mutex<HashMap<String, (Instant, Arc<Scope>)>>>;

#[derive(Clone)]
struct AgentState {
    auth: AuthState,
    scopes: ScopeCache,
    /// Started on the first agent request (there is a runtime then).
    index: Arc<std::sync::OnceLock<AssignmentIndex>>,
}

pub fn routes(auth: AuthState) -> Router {
    let st = AgentState {
        auth,
        scopes: Arc::new(Mutex::new(HashMap::new())),
        index: Arc::new(std::sync::OnceLock::new()),
    };
    Router::new()
        .route("/v1/agent/join", post(join))
        .route("/v1/agent/store/get", post(store_get))
        .route("/v1/agent/store/range", post(store_range))
        .route("/v1/agent/store/txn", post(store_txn))
        .route("/v1/agent/store/watch", post(store_watch))
        .route("/v1/agent/store/revision", post(store_revision))
        .route("/v1/agent/store/lease/grant", post(lease_grant))
        .route("/v1/agent/store/lease/keepalive", post(lease_keep_alive))
        .route("/v1/agent/store/lease/revoke", post(lease_revoke))
        .route("/v1/agent/tasks/{id}/token", get(task_token))
        .route("/v1/agent/tasks/{id}/credentials", post(task_credentials))
        .route("/v1/agent/tasks/{id}/secrets", get(task_secrets))
        .route(
            "/v1/agent/join-tokens",
            post(create_join_token).get(list_join_tokens),
        )
        .route("/v1/agent/join-tokens/{id}", delete(delete_join_token))
        .route(
            "/v1/agent/instances/{id}/credential",
            delete(revoke_credential),
        )
        .with_state(st)
}

/// An answer that is audited: status, body, the audit decision and an error message.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }
    fn denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "AccessDenied", message)
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }
}

/// A store error as the agent routes answer it.
fn store_error(e: &StoreError) -> Response {
    let status = StatusCode::from_u16(wire::status_of(e)).unwrap_or(StatusCode::BAD_GATEWAY);
    (
        status,
        Json(json!({"error": e.to_string(), "storeError": wire::Error::from(e)})),
    )
        .into_response()
}

/// The audit record of an agent request, before its outcome.
fn record(parts: &Parts, action: &str) -> AuditRecord {
    AuditRecord {
        event_time: Some(crate::model::now()),
        request_id: crate::model::new_id()[..16].to_string(),
        identity: "anonymous".into(),
        auth_method: "none".into(),
        source_ip: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_else(|| "unknown".into()),
        user_agent: parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(256)
            .collect(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        action: action.to_string(),
        ..Default::default()
    }
}

impl AgentState {
    /// Record a refusal and answer it.
    async fn refuse(&self, mut rec: AuditRecord, r: Refusal) -> Response {
        rec.status = r.status.as_u16();
        rec.decision = match r.status {
            StatusCode::UNAUTHORIZED => "unauthenticated",
            StatusCode::FORBIDDEN => "denied",
            s if s.is_server_error() => "error",
            _ => "rejected",
        }
        .into();
        rec.error_message = Some(r.message.clone());
        let request_id = rec.request_id.clone();
        tracing::info!(identity = %rec.identity, action = %rec.action, status = rec.status, error = %r.message, "agent request refused");
        self.auth.audit.append(rec).await;
        let mut resp = (
            r.status,
            Json(json!({"error": r.message, "code": r.code, "requestId": request_id})),
        )
            .into_response();
        if r.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"berth-agent\""),
            );
        }
        resp
    }

    /// Authenticate an agent request: its credential names its instance; an
    /// `x-berth-instance` header naming another is refused.
    async fn agent(&self, parts: &Parts, rec: &mut AuditRecord) -> Result<String, Refusal> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|a| (a.len() > 7 && a[..7].eq_ignore_ascii_case("bearer ")).then(|| &a[7..]));
        let Some(cred) = bearer else {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "Unauthenticated",
                "agent routes need `Authorization: Bearer <agent credential>` (from POST /v1/agent/join)",
            ));
        };
        let c = agent_join::credential_for(&*self.auth.store, cred)
            .await
            .map_err(|e| {
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unavailable",
                    format!("authentication is unavailable: {e}"),
                )
            })?
            .ok_or_else(|| {
                Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "Unauthenticated",
                    "unknown or revoked agent credential: join again with a join token",
                )
            })?;
        rec.identity = format!("agent/{}", c.instance);
        rec.auth_method = "agent-credential".into();
        if let Some(claimed) = parts.headers.get(INSTANCE_HEADER) {
            let claimed = claimed.to_str().unwrap_or("\u{0}");
            if claimed != c.instance {
                return Err(Refusal::denied(format!(
                    "this agent credential is instance {}'s, not {claimed:?}'s",
                    c.instance
                )));
            }
        }
        Ok(c.instance)
    }

    /// The process's assignment index, started on first use.
    fn index(&self) -> &AssignmentIndex {
        self.index
            .get_or_init(|| AssignmentIndex::start(self.auth.store.clone()))
    }

    /// The instance's scope: cached up to [`SCOPE_TTL`] and built from the assignment index
    /// (its own tasks only), or read from the store now (`fresh`: every task is listed).
    async fn scope(&self, instance: &str, fresh: bool) -> Result<Arc<Scope>, StoreError> {
        if !fresh {
            if let Some((at, s)) = self.scopes.lock().unwrap().get(instance) {
                if at.elapsed() < SCOPE_TTL {
                    return Ok(s.clone());
                }
            }
        }
        let store = &self.auth.store;
        let rec = store
            .get(&keys::key(Kind::ContainerInstance, instance))
            .await?;
        let indexed = match fresh {
            true => None,
            false => self.index().tasks_of(instance),
        };
        let s = match indexed {
            Some(tasks) => {
                let mut s =
                    Scope::from_values(instance, rec.as_ref().map(|kv| kv.value.as_slice()), &[]);
                s.tasks = tasks;
                Arc::new(s)
            }
            None => {
                let (tasks, _) = store.range(&keys::prefix(Kind::Task)).await?;
                Arc::new(Scope::from_values(
                    instance,
                    rec.as_ref().map(|kv| kv.value.as_slice()),
                    &tasks,
                ))
            }
        };
        let mut m = self.scopes.lock().unwrap();
        if m.len() > 10_000 {
            m.retain(|_, (at, _)| at.elapsed() < SCOPE_TTL);
        }
        m.insert(instance.to_string(), (Instant::now(), s.clone()));
        Ok(s)
    }

    /// Decide a read of `key`: on the cached scope, and if refused, once more on a fresh one.
    async fn may_read(
        &self,
        instance: &str,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<Result<(), String>, StoreError> {
        if key.starts_with(&keys::prefix(Kind::Task)) {
            // Tasks are judged on their own value: no need for the task list.
            return Ok(node_authz::read(&Scope::new(instance), key, value));
        }
        let s = self.scope(instance, false).await?;
        match node_authz::read(&s, key, value) {
            Ok(()) => Ok(Ok(())),
            Err(_) => {
                let s = self.scope(instance, true).await?;
                Ok(node_authz::read(&s, key, value))
            }
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de)
        .map_err(|e| Refusal::bad(format!("malformed JSON body: {e}")))
}

/// Authenticate and decode, or the refusal's response.
async fn begin<T: serde::de::DeserializeOwned>(
    st: &AgentState,
    parts: &Parts,
    body: &[u8],
    action: &str,
) -> Result<(String, AuditRecord, T), Response> {
    let mut rec = record(parts, action);
    rec.request_parameters = crate::audit::request_parameters(parts.uri.query(), body);
    let instance = match st.agent(parts, &mut rec).await {
        Ok(i) => i,
        Err(r) => return Err(st.refuse(rec, r).await),
    };
    match decode::<T>(body) {
        Ok(v) => Ok((instance, rec, v)),
        Err(r) => Err(st.refuse(rec, r).await),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinReq {
    #[serde(default)]
    join_token: String,
    instance_id: String,
}

async fn join(State(st): State<AgentState>, parts: Parts, body: Bytes) -> Response {
    let mut rec = record(&parts, "berth:AgentJoin");
    let req: JoinReq = match decode(&body) {
        Ok(r) => r,
        Err(r) => return st.refuse(rec, r).await,
    };
    rec.identity = format!("agent/{}", req.instance_id);
    rec.auth_method = "join-token".into();
    rec.request_parameters = json!({"instanceId": req.instance_id});
    rec.resources = vec![
        json!({"action": "berth:AgentJoin", "resource": format!("containerinstance/{}", req.instance_id)}),
    ];
    let token = if req.join_token.is_empty() {
        parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("")
            .to_string()
    } else {
        req.join_token.clone()
    };
    if !agent_join::valid_instance_id(&req.instance_id) {
        return st
            .refuse(
                rec,
                Refusal::bad("instanceId must be 1-128 of [A-Za-z0-9._-], not starting with a dot"),
            )
            .await;
    }
    let store = &*st.auth.store;
    let jt = match agent_join::check_join_token(store, &token).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return st
                .refuse(
                    rec,
                    Refusal::new(
                        StatusCode::UNAUTHORIZED,
                        "Unauthenticated",
                        if token.is_empty() {
                            "a join token is required (berth token create --agent)"
                        } else {
                            "invalid, expired or revoked join token"
                        },
                    ),
                )
                .await
        }
        Err(e) => {
            return st
                .refuse(
                    rec,
                    Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Unavailable",
                        e.to_string(),
                    ),
                )
                .await
        }
    };
    match store.get(&keys::instance_lease_key(&req.instance_id)).await {
        Ok(Some(kv)) => {
            return st
                .refuse(
                    rec,
                    Refusal::new(
                        StatusCode::CONFLICT,
                        "InstanceInUse",
                        format!(
                            "instance {} is held by a live agent (lease {}): stop that agent and \
                             wait for its lease to expire, or join with another --instance-id",
                            req.instance_id, kv.lease
                        ),
                    ),
                )
                .await
        }
        Ok(None) => {}
        Err(e) => return store_error(&e),
    }
    let credential = match agent_join::issue_credential(store, &req.instance_id, &jt.id).await {
        Ok(c) => c,
        Err(e) => {
            return st
                .refuse(
                    rec,
                    Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Unavailable",
                        e.to_string(),
                    ),
                )
                .await
        }
    };
    rec.decision = "allowed".into();
    rec.status = 200;
    rec.response_elements = json!({"instance": req.instance_id, "joinToken": jt.id});
    st.auth.audit.append(rec).await;
    tracing::info!(instance = %req.instance_id, join_token = %jt.id, "agent joined");
    Json(json!({"credential": credential, "instance": req.instance_id})).into_response()
}

async fn store_get(State(st): State<AgentState>, parts: Parts, body: Bytes) -> Response {
    let (instance, rec, req) =
        match begin::<wire::KeyReq>(&st, &parts, &body, "berth:AgentStoreGet").await {
            Ok(x) => x,
            Err(r) => return r,
        };
    let kv = match st.auth.store.get(&req.key).await {
        Ok(kv) => kv,
        Err(e) => return store_error(&e),
    };
    match st
        .may_read(
            &instance,
            &req.key,
            kv.as_ref().map(|kv| kv.value.as_slice()),
        )
        .await
    {
        Ok(Ok(())) => Json(wire::GetResp {
            kv: kv.as_ref().map(wire::Kv::from),
        })
        .into_response(),
        Ok(Err(why)) => st.refuse(rec, Refusal::denied(why)).await,
        Err(e) => store_error(&e),
    }
}

async fn store_range(State(st): State<AgentState>, parts: Parts, body: Bytes) -> Response {
    let (instance, _rec, req) =
        match begin::<wire::PrefixReq>(&st, &parts, &body, "berth:AgentStoreRange").await {
            Ok(x) => x,
            Err(r) => return r,
        };
    if req.prefix == keys::prefix(Kind::Task) {
        // Its own tasks from the index: the cost of the agent's tasks, not the cluster's.
        if let Some((kvs, revision)) = st.index().range(&instance) {
            let kvs = kvs.iter().map(wire::Kv::from).collect();
            return Json(wire::RangeResp { kvs, revision }).into_response();
        }
    }
    let (kvs, revision) = match st.auth.store.range(&req.prefix).await {
        Ok(x) => x,
        Err(e) => return store_error(&e),
    };
    let scope = if req.prefix.starts_with(&keys::prefix(Kind::Task)) {
        agent_index::count_read(kvs.len());
        // Tasks are judged on their own values.
        Arc::new(Scope::new(&instance))
    } else if req.prefix.starts_with(crate::model::lb::lb_keys::TARGETS) {
        // Target records (draining) on their task's own record: no task list needed.
        let mut s = Scope::new(&instance);
        let mut checked = BTreeSet::new();
        for kv in &kvs {
            let task = kv.key.rsplit('/').next().unwrap_or("").to_string();
            if task.is_empty() || !checked.insert(task.clone()) {
                continue;
            }
            match st.auth.store.get(&keys::key(Kind::Task, &task)).await {
                Ok(Some(tkv)) => {
                    if let Ok(t) = serde_json::from_slice::<Task>(&tkv.value) {
                        if t.status.container_instance.as_deref() == Some(instance.as_str()) {
                            s.tasks
                                .insert(task, (String::new(), t.spec.cluster.clone()));
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => return store_error(&e),
            }
        }
        Arc::new(s)
    } else {
        // Anything else on the cached scope, or a fresh one if that refuses anything.
        let cached = match st.scope(&instance, false).await {
            Ok(s) => s,
            Err(e) => return store_error(&e),
        };
        let all = kvs
            .iter()
            .all(|kv| node_authz::read(&cached, &kv.key, Some(&kv.value)).is_ok());
        if all {
            cached
        } else {
            match st.scope(&instance, true).await {
                Ok(s) => s,
                Err(e) => return store_error(&e),
            }
        }
    };
    let kvs: Vec<wire::Kv> = kvs
        .iter()
        .filter(|kv| node_authz::read(&scope, &kv.key, Some(&kv.value)).is_ok())
        .map(wire::Kv::from)
        .collect();
    Json(wire::RangeResp { kvs, revision }).into_response()
}

async fn store_txn(State(st): State<AgentState>, parts: Parts, body: Bytes) -> Response {
    let (instance, rec, t) = match begin::<Txn>(&st, &parts, &body, "berth:AgentStoreTxn").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let store = &st.auth.store;
    if t.success.len() + t.compares.len() > crate::store::MAX_TXN_OPS * 2 {
        return st.refuse(rec, Refusal::bad("transaction too large")).await;
    }
    // The current value of every key it names, and which of its leases are this agent's.
    let mut current: HashMap<String, Option<KeyValue>> = HashMap::new();
    let named = t
        .success
        .iter()
        .chain(t.failure.iter())
        .map(|op| op.key().to_string())
        .chain(t.compares.iter().map(|c| {
            let crate::store::Compare::ModRevision { key, .. } = c;
            key.clone()
        }));
    for k in named {
        if current.contains_key(&k) {
            continue;
        }
        match store.get(&k).await {
            Ok(v) => {
                current.insert(k, v);
            }
            Err(e) => return store_error(&e),
        }
    }
    let mut owned = BTreeSet::new();
    for op in t.success.iter().chain(t.failure.iter()) {
        if let Op::Put { lease, .. } = op {
            if *lease != 0 && !owned.contains(lease) {
                match agent_join::lease_owner(&**store, *lease).await {
                    Ok(Some(o)) if o == instance => {
                        owned.insert(*lease);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return st
                            .refuse(
                                rec,
                                Refusal::new(
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "Unavailable",
                                    e.to_string(),
                                ),
                            )
                            .await
                    }
                }
            }
        }
    }
    match node_authz::txn(&Scope::new(&instance), &t, &current, &owned) {
        Err(why) => st.refuse(rec, Refusal::denied(why)).await,
        Ok(TxnDecision::Stale) => match store.revision().await {
            Ok(revision) => Json(wire::TxnResp {
                succeeded: false,
                revision,
            })
            .into_response(),
            Err(e) => store_error(&e),
        },
        Ok(TxnDecision::Run) => match store.txn(t).await {
            Ok(r) => Json(wire::TxnResp {
                succeeded: r.succeeded,
                revision: r.revision,
            })
            .into_response(),
            Err(e) => store_error(&e),
        },
    }
}

async fn store_watch(State(st): State<AgentState>, parts: Parts, body: Bytes) -> Response {
    let (instance, _rec, req) =
        match begin::<wire::WatchReq>(&st, &parts, &body, "berth:AgentStoreWatch").await {
            Ok(x) => x,
            Err(r) => return r,
        };
    let credential = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|a| a[7.min(a.len())..].to_string())
        .unwrap_or_default();
    if req.prefix == keys::prefix(Kind::Task) {
        let from = match req.from_revision {
            r if r <= 0 => st.index().revision() + 1,
            r => r,
        };
        if let Some(feed) = st.index().subscribe(&instance, from) {
            return feed_response(st, instance, credential, from, feed);
        }
    }
    let inner = match st.auth.store.watch(&req.prefix, req.from_revision).await {
        Ok(s) => s,
        Err(e) => return store_error(&e),
    };
    // The credential is checked again now and then: a revoked one ends the watch.
    let checked = Arc::new(Mutex::new(Instant::now()));
    let st2 = st.clone();
    let mut last_progress = Instant::now();
    let lines = inner
        .then(move |item| {
            let st = st2.clone();
            let instance = instance.clone();
            let credential = credential.clone();
            let checked = checked.clone();
            async move {
                let due = {
                    let mut c = checked.lock().unwrap();
                    let due = c.elapsed() >= CREDENTIAL_RECHECK;
                    if due {
                        *c = Instant::now();
                    }
                    due
                };
                if due {
                    if let Some(line) = revoked(&st, &credential, &instance).await {
                        return (line, true, 0);
                    }
                }
                let evs = match item {
                    Ok(evs) => evs,
                    Err(e) => {
                        return (
                            wire::WatchLine {
                                store_error: Some(wire::Error::from(&e)),
                                ..Default::default()
                            },
                            true,
                            0,
                        )
                    }
                };
                let rev = evs.iter().map(|e| e.kv.mod_revision).max().unwrap_or(0);
                let task_prefix = keys::prefix(Kind::Task);
                let only_tasks = evs.iter().all(|e| e.kv.key.starts_with(&task_prefix));
                agent_index::count_read(
                    evs.iter()
                        .filter(|e| e.kv.key.starts_with(&task_prefix))
                        .count(),
                );
                let scope = match only_tasks {
                    // Tasks are judged on their own values.
                    true => Ok(Arc::new(Scope::new(&instance))),
                    false => st.scope(&instance, false).await,
                };
                let scope = match scope {
                    Ok(s) => s,
                    Err(e) => {
                        return (
                            wire::WatchLine {
                                store_error: Some(wire::Error::from(&e)),
                                ..Default::default()
                            },
                            true,
                            rev,
                        )
                    }
                };
                let events: Vec<wire::Event> = evs
                    .iter()
                    .filter(|e| {
                        node_authz::read_event(
                            &scope,
                            &e.kv.key,
                            e.kind == crate::store::EventKind::Delete,
                            &e.kv.value,
                            e.prev.as_ref().map(|p| p.value.as_slice()),
                        )
                    })
                    .map(wire::Event::from)
                    .collect();
                (
                    wire::WatchLine {
                        events,
                        ..Default::default()
                    },
                    false,
                    rev,
                )
            }
        })
        // End the stream after an error line.
        .scan(false, |ended, (line, is_err, rev)| {
            if *ended {
                return futures::future::ready(None);
            }
            *ended = is_err;
            futures::future::ready(Some((line, rev)))
        })
        .filter_map(move |(mut line, rev)| {
            // A revision with nothing for this agent: at most one progress line a second.
            let out = if line.events.is_empty() && line.store_error.is_none() {
                if last_progress.elapsed() >= Duration::from_secs(1) {
                    last_progress = Instant::now();
                    line.progress = Some(rev);
                    Some(line)
                } else {
                    None
                }
            } else {
                Some(line)
            };
            futures::future::ready(out.map(|l| Ok::<Bytes, std::io::Error>(watch_line(&l))))
        });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A watch line ending the watch if the agent's credential was revoked (checked now and then).
async fn revoked(st: &AgentState, credential: &str, instance: &str) -> Option<wire::WatchLine> {
    let valid = agent_join::credential_for(&*st.auth.store, credential)
        .await
        .map(|c| c.is_some_and(|c| c.instance == instance))
        .unwrap_or(true);
    let e = StoreError::Invalid(format!("{UNAUTHENTICATED}the agent credential was revoked"));
    (!valid).then(|| wire::WatchLine {
        store_error: Some(wire::Error::from(&e)),
        ..Default::default()
    })
}

fn watch_line(line: &wire::WatchLine) -> Bytes {
    let mut b = serde_json::to_vec(line).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

type Lines = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Send `b` unless it is not past `last` (counted as read when `count`); false once the
/// client is gone.
async fn send_batch(out: &Lines, b: &agent_index::Batch, last: &mut i64, count: bool) -> bool {
    if b.revision <= *last {
        return true;
    }
    if count {
        agent_index::count_read(b.events.len());
    }
    // A watch line of these events, serialized from the shared batch (no copy of it).
    #[derive(serde::Serialize)]
    struct Events<'a> {
        events: &'a [wire::Event],
    }
    let mut line = serde_json::to_vec(&Events { events: &b.events }).unwrap_or_default();
    line.push(b'\n');
    if out.send(Ok(Bytes::from(line))).await.is_err() {
        return false;
    }
    *last = b.revision;
    true
}

/// An agent's watch of its tasks from the assignment index's feed. It ends when the agent
/// falls behind or the index relists; the agent's store resumes from its last revision, from
/// the index's history or, before it, from a store watch.
fn feed_response(
    st: AgentState,
    instance: String,
    credential: String,
    from: i64,
    feed: Feed,
) -> Response {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let (out, lines) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let Feed { replay, mut live } = feed;
        let mut last = from - 1;
        for b in replay {
            if !send_batch(&out, &b, &mut last, false).await {
                return;
            }
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut checked = Instant::now();
        loop {
            tokio::select! {
                r = live.recv() => match r {
                    Ok(b) => {
                        if !send_batch(&out, &b, &mut last, true).await {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_) | RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    // The credential is checked again now and then: a revoked one ends the watch.
                    if checked.elapsed() >= CREDENTIAL_RECHECK {
                        checked = Instant::now();
                        if let Some(line) = revoked(&st, &credential, &instance).await {
                            let _ = out.send(Ok(watch_line(&line))).await;
                            return;
                        }
                    }
                    // Progress: the index's revision, once what was sent before it is out.
                    let progress = st.index().revision();
                    loop {
                        match live.try_recv() {
                            Ok(b) => {
                                if !send_batch(&out, &b, &mut last, true).await {
                                    return;
                                }
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(_) => return,
                        }
                    }
                    if progress > last {
                        let line = wire::WatchLine {
                            progress: Some(progress),
                            ..Default::default()
                        };
                        if out.send(Ok(watch_line(&line))).await.is_err() {
                            return;
                        }
                        last = progress;
                    }
                }
                _ = out.closed() => return,
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(lines),
        ))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn store_revision(State(st): State<AgentState>, parts: Parts, body: Bytes) -> Response {
    let body = if body.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        body
    };
    let (_instance, _rec, _req) =
        match begin::<Value>(&st, &parts, &body, "berth:AgentStoreRevision").await {
            Ok(x) => x,
            Err(r) => return r,
        };
    match st.auth.store.revision().await {
        Ok(revision) => Json(wire::RevisionResp { revision }).into_response(),
        Err(e) => store_error(&e),
    }
}

async fn lease_grant(State(st): State<AgentState>, parts: Parts, body: Bytes) -> Response {
    let (instance, _rec, req) =
        match begin::<wire::LeaseReq>(&st, &parts, &body, "berth:AgentLeaseGrant").await {
            Ok(x) => x,
            Err(r) => return r,
        };
    let ttl = Duration::from_millis(req.ttl_ms).clamp(MIN_LEASE, MAX_LEASE);
    let store = &st.auth.store;
    let lease = match store.lease_grant(ttl).await {
        Ok(l) => l,
        Err(e) => return store_error(&e),
    };
    let owner = Txn::new().and_then(Op::put_with_lease(
        agent_join::lease_owner_key(lease),
        instance.into_bytes(),
        lease,
    ));
    if let Err(e) = store.txn(owner).await {
        let _ = store.lease_revoke(lease).await;
        return store_error(&e);
    }
    Json(wire::LeaseResp { lease }).into_response()
}

/// The lease of a keep-alive or revoke, if it is this agent's.
async fn own_lease(
    st: &AgentState,
    parts: &Parts,
    body: &[u8],
    action: &str,
) -> Result<i64, Response> {
    let (instance, rec, req) = begin::<wire::LeaseReq>(st, parts, body, action).await?;
    match agent_join::lease_owner(&*st.auth.store, req.lease).await {
        Ok(Some(o)) if o == instance => Ok(req.lease),
        Ok(Some(_)) => Err(st
            .refuse(
                rec,
                Refusal::denied(format!(
                    "lease {} was not granted to instance {instance}",
                    req.lease
                )),
            )
            .await),
        Ok(None) => Err(store_error(&StoreError::LeaseNotFound(req.lease))),
        Err(e) => Err(st
            .refuse(
                rec,
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unavailable",
                    e.to_string(),
                ),
            )
            .await),
    }
}

async fn lease_keep_alive(State(st): State<AgentState>, parts: Parts, body: Bytes) -> Response {
    let lease = match own_lease(&st, &parts, &body, "berth:AgentLeaseKeepAlive").await {
        Ok(l) => l,
        Err(r) => return r,
    };
    match st.auth.store.lease_keep_alive(lease).await {
        Ok(()) => Json(json!({})).into_response(),
        Err(e) => store_error(&e),
    }
}

async fn lease_revoke(State(st): State<AgentState>, parts: Parts, body: Bytes) -> Response {
    let lease = match own_lease(&st, &parts, &body, "berth:AgentLeaseRevoke").await {
        Ok(l) => l,
        Err(r) => return r,
    };
    match st.auth.store.lease_revoke(lease).await {
        Ok(()) => Json(json!({})).into_response(),
        Err(e) => store_error(&e),
    }
}

/// The task, if it is placed on `instance` and not stopped.
async fn own_task(st: &AgentState, instance: &str, id: &str) -> Result<Task, Refusal> {
    let t: Option<Task> = crate::objects::get(&*st.auth.store, &keys::key(Kind::Task, id))
        .await
        .map_err(|e| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                e.to_string(),
            )
        })?;
    match t {
        Some(t) if t.status.container_instance.as_deref() == Some(instance) && !t.is_stopped() => {
            Ok(t)
        }
        Some(_) => Err(Refusal::denied(format!(
            "task {id} is not a running task of instance {instance}"
        ))),
        None => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no task {id}"),
        )),
    }
}

async fn task_token(
    State(st): State<AgentState>,
    Path(id): Path<String>,
    parts: Parts,
) -> Response {
    let mut rec = record(&parts, "berth:AgentGetTaskToken");
    rec.task = Some(id.clone());
    rec.resources = vec![json!({"action": rec.action, "resource": format!("task/{id}")})];
    let instance = match st.agent(&parts, &mut rec).await {
        Ok(i) => i,
        Err(r) => return st.refuse(rec, r).await,
    };
    if let Err(r) = own_task(&st, &instance, &id).await {
        return st.refuse(rec, r).await;
    }
    let key = match st.auth.key().await {
        Ok(k) => k,
        Err(e) => {
            return st
                .refuse(
                    rec,
                    Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Unavailable",
                        e.to_string(),
                    ),
                )
                .await
        }
    };
    rec.decision = "allowed".into();
    rec.status = 200;
    st.auth.audit.append(rec).await;
    Json(json!({"token": key.container_token_for(&id)})).into_response()
}

/// The secret values a task placed on this agent's instance references (its containers'
/// `secrets` and `repositoryCredentials`), opened here: the agent's host never holds the data
/// key, and it gets only what its own tasks name. Audited by secret name, never by value.
async fn task_secrets(
    State(st): State<AgentState>,
    Path(id): Path<String>,
    parts: Parts,
) -> Response {
    let mut rec = record(&parts, "berth:AgentGetTaskSecrets");
    rec.task = Some(id.clone());
    rec.resources = vec![json!({"action": rec.action, "resource": format!("task/{id}")})];
    let instance = match st.agent(&parts, &mut rec).await {
        Ok(i) => i,
        Err(r) => return st.refuse(rec, r).await,
    };
    let task = match own_task(&st, &instance, &id).await {
        Ok(t) => t,
        Err(r) => return st.refuse(rec, r).await,
    };
    let unavailable = |e: String| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", e);
    let td = match crate::objects::taskdef(&*st.auth.store, &task.spec.task_definition).await {
        Ok(Some(td)) => td,
        Ok(None) => {
            let r = Refusal::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("task definition {} not found", task.spec.task_definition),
            );
            return st.refuse(rec, r).await;
        }
        Err(e) => return st.refuse(rec, unavailable(e.to_string())).await,
    };
    let names = secret_values::referenced(&td);
    rec.resources.extend(
        names
            .iter()
            .map(|n| json!({"action": "berth:GetSecretValue", "resource": format!("secret/{n}")})),
    );
    match secret_values::resolve(&*st.auth.store, st.auth.secrets.as_deref(), &td).await {
        Ok(containers) => {
            rec.decision = "allowed".into();
            rec.status = 200;
            st.auth.audit.append(rec).await;
            Json(json!({ "containers": containers })).into_response()
        }
        Err(secret_values::SecretValueError::Store(e)) => {
            st.refuse(rec, unavailable(e.to_string())).await
        }
        Err(e) => {
            let r = Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "SecretUnavailable",
                e.to_string(),
            );
            st.refuse(rec, r).await
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredsReq {
    #[serde(default)]
    authorization: String,
    #[serde(default)]
    source_ip: String,
    #[serde(default)]
    user_agent: String,
}

async fn task_credentials(
    State(st): State<AgentState>,
    Path(id): Path<String>,
    parts: Parts,
    body: Bytes,
) -> Response {
    let mut rec = record(&parts, "berth:GetTaskCredentials");
    rec.task = Some(id.clone());
    rec.resources = vec![json!({"action": rec.action, "resource": format!("task/{id}")})];
    let instance = match st.agent(&parts, &mut rec).await {
        Ok(i) => i,
        Err(r) => return st.refuse(rec, r).await,
    };
    let req: CredsReq = match decode(&body) {
        Ok(r) => r,
        Err(r) => return st.refuse(rec, r).await,
    };
    // Recorded as the container's fetch (as the endpoint on the agent would), via the agent.
    rec.identity = format!("task/{id}");
    rec.auth_method = "task-token".into();
    rec.source_ip = req.source_ip.chars().take(64).collect();
    rec.user_agent = req.user_agent.chars().take(256).collect();
    rec.path = format!("/v2/credentials/{id}");
    rec.method = "GET".into();
    rec.request_parameters = json!({"instance": instance, "via": "agent"});
    let key = st.auth.key().await;
    let ((status, resp, served), decision, err) =
        credentials_endpoint::answer_for(&*st.auth.store, key, &instance, &id, &req.authorization)
            .await;
    rec.status = status.as_u16();
    rec.decision = decision.into();
    rec.error_message = err;
    if let Some((role, akid, exp)) = served {
        rec.role = Some(role);
        rec.access_key_id = Some(akid.clone());
        rec.response_elements = json!({"AccessKeyId": akid, "Expiration": exp});
    }
    st.auth.audit.append(rec).await;
    resp
}

// ---- admin routes (authenticated and authorized by the middleware) ----

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateJoinToken {
    #[serde(default)]
    description: String,
    /// e.g. `24h`; none: no expiry.
    #[serde(default)]
    ttl: Option<String>,
}

async fn create_join_token(
    State(st): State<AgentState>,
    Extension(c): Extension<Caller>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: CreateJoinToken = if body.is_empty() {
        CreateJoinToken::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?
    };
    let ttl = req
        .ttl
        .as_deref()
        .map(crate::util::parse_duration)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("ttl: {e}")))?;
    let (token, rec) =
        agent_join::create_join_token(&*st.auth.store, &c.identity, &req.description, ttl)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut v = rec.public();
    v["token"] = json!(token);
    Ok(Json(v))
}

async fn list_join_tokens(State(st): State<AgentState>) -> Result<Json<Value>, ApiError> {
    let list = agent_join::list_join_tokens(&*st.auth.store)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(Value::Array(
        list.iter().map(|t| t.public()).collect(),
    )))
}

async fn delete_join_token(
    State(st): State<AgentState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if agent_join::delete_join_token(&*st.auth.store, &id)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
    {
        Ok(Json(json!({"deleted": id})))
    } else {
        Err(ApiError::not_found(format!("no join token {id}")))
    }
}

async fn revoke_credential(
    State(st): State<AgentState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if agent_join::revoke_credential(&*st.auth.store, &id)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
    {
        Ok(Json(json!({"revoked": id})))
    } else {
        Err(ApiError::not_found(format!(
            "instance {id} has no agent credential"
        )))
    }
}
