//! The API's front door: every request except `/healthz` is authenticated, authorized against
//! the caller's role, and audited (allowed or not).
//!
//! Authentication, in order:
//! 1. `Authorization: Bearer <token>`: an identity's token (SHA-256 looked up in the store).
//! 2. `Authorization: AWS4-HMAC-SHA256 …`: SigV4 with an identity's access key, or a task's
//!    temporary key plus `x-amz-security-token`.
//! 3. GET/HEAD only: the dashboard session cookie `berth_session`, or `?token=<token>` once,
//!    which answers 303 to the same URL without the token, setting that cookie (HttpOnly,
//!    SameSite=Strict, Path=/, 12 h): the token stays out of browser history and logs.
//!
//! Failures answer 401; a role that does not allow an action answers 403 naming the action
//! and resource. Both as JSON `{"error", "code", "action", "resource"?, "requestId"}`.

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::audit::{self, AuditRecord};
use crate::auth::actions::{self, Classified, Target};
use crate::auth::crypto::{ct_eq, ServerKey};
use crate::auth::identity;
use crate::auth::policy::{self, Decision};
use crate::auth::sigv4;

use super::auth_state::{AuthState, Caller};
use super::state::MAX_BODY_BYTES;

pub const SESSION_COOKIE: &str = "berth_session";
const SESSION_SECS: i64 = 12 * 3600;
pub const REQUEST_ID_HEADER: &str = "x-berth-request-id";

/// Put authentication, authorization and auditing in front of `router`.
pub fn wrap(router: Router, st: AuthState) -> Router {
    router.layer(axum::middleware::from_fn_with_state(st, authenticate))
}

struct Denial {
    status: StatusCode,
    code: &'static str,
    message: String,
    resource: Option<String>,
    action: Option<String>,
}

impl Denial {
    /// The store could not be read: 503, not a verdict on the credentials.
    fn unavailable<E: std::fmt::Display>(e: E) -> Self {
        Denial {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "Unavailable",
            message: format!("authentication is unavailable: {e}"),
            resource: None,
            action: None,
        }
    }

    fn unauthenticated(message: impl Into<String>) -> Self {
        Denial {
            status: StatusCode::UNAUTHORIZED,
            code: "Unauthenticated",
            message: message.into(),
            resource: None,
            action: None,
        }
    }
}

fn headers_vec(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .filter_map(|(n, v)| {
            v.to_str()
                .ok()
                .map(|v| (n.as_str().to_string(), v.to_string()))
        })
        .collect()
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A session cookie value: `name.expiry.tokenhash16.mac`.
pub fn session_cookie(
    key: &ServerKey,
    identity: &str,
    token_hash: &str,
    now: DateTime<Utc>,
) -> String {
    let exp = now.timestamp() + SESSION_SECS;
    let body = format!("{identity}.{exp}.{}", &token_hash[..16]);
    format!("{body}.{}", key.mac(&body))
}

async fn from_cookie(st: &AuthState, value: &str, now: DateTime<Utc>) -> Result<Caller, Denial> {
    let bad = || Denial::unauthenticated("invalid or expired session; sign in again with ?token=");
    let mut it = value.rsplitn(4, '.');
    let (Some(mac), Some(hash16), Some(exp), Some(name)) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(bad());
    };
    let key = st.key().await.map_err(Denial::unavailable)?;
    let body = format!("{name}.{exp}.{hash16}");
    if !ct_eq(key.mac(&body).as_bytes(), mac.as_bytes()) {
        return Err(bad());
    }
    if exp.parse::<i64>().map_or(true, |e| e <= now.timestamp()) {
        return Err(bad());
    }
    let id = identity::get_identity(&*st.store, name)
        .await
        .map_err(Denial::unavailable)?
        .ok_or_else(bad)?;
    if !id.tokens.iter().any(|t| t.hash.starts_with(hash16)) {
        return Err(bad());
    }
    Ok(Caller {
        identity: id.name,
        role: id.role,
        task: None,
        auth_method: "session",
        access_key_id: None,
    })
}

async fn from_token(st: &AuthState, token: &str, method: &'static str) -> Result<Caller, Denial> {
    match identity::identity_for_token(&*st.store, token.trim()).await {
        Ok(Some(id)) => Ok(Caller {
            identity: id.name,
            role: id.role,
            task: None,
            auth_method: method,
            access_key_id: None,
        }),
        Ok(None) => Err(Denial::unauthenticated("invalid token")),
        Err(e) => Err(Denial::unavailable(e)),
    }
}

/// Verify a SigV4-signed request and find its caller.
/// Before any body is read: the SigV4 header parses, is recent enough, and names an access
/// key that exists and has not expired. What needs the body (its hash, the signature) is
/// checked by [`from_sigv4`] once the caller is known not to be a stranger.
async fn sigv4_known_key(
    st: &AuthState,
    authz: &str,
    headers: &[(String, String)],
    now: DateTime<Utc>,
) -> Result<(), Denial> {
    let un = |e: sigv4::SigError| Denial::unauthenticated(e.to_string());
    let auth = sigv4::parse_authorization(authz).map_err(un)?;
    if let Some(d) = sigv4::header(headers, "x-amz-date") {
        let t = chrono::NaiveDateTime::parse_from_str(d, "%Y%m%dT%H%M%SZ")
            .map(|t| t.and_utc())
            .map_err(|_| Denial::unauthenticated("x-amz-date is not a valid time"))?;
        if (now - t).abs() > sigv4::MAX_SKEW {
            return Err(Denial::unauthenticated(format!(
                "request time {d} is outside the allowed clock skew of 5 minutes (signature expired or replayed)"
            )));
        }
    }
    let known = identity::get_access_key(&*st.store, &auth.access_key_id)
        .await
        .map_err(Denial::unavailable)?;
    match known {
        Some(ak) if ak.expiration.is_none_or(|e| e > now) => Ok(()),
        Some(_) => Err(Denial::unauthenticated("the security token has expired")),
        None => Err(Denial::unauthenticated(
            "the access key id is not known (revoked, expired or never issued)",
        )),
    }
}

#[allow(clippy::too_many_arguments)]
async fn from_sigv4(
    st: &AuthState,
    authz: &str,
    method: &Method,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
    now: DateTime<Utc>,
    read_only: bool,
) -> Result<Caller, Denial> {
    let un = |e: sigv4::SigError| Denial::unauthenticated(e.to_string());
    let auth = sigv4::parse_authorization(authz).map_err(un)?;
    let payload_hash = sigv4::payload_hash_of(headers, body);
    let parts = sigv4::RequestParts {
        method: method.as_str(),
        path,
        query,
        headers,
        payload_hash: &payload_hash,
    };
    let amz_date = sigv4::precheck(&auth, &parts, body, now).map_err(un)?;
    let unavailable = Denial::unavailable::<anyhow::Error>;
    let Some(ak) = identity::get_access_key(&*st.store, &auth.access_key_id)
        .await
        .map_err(unavailable)?
    else {
        return Err(Denial::unauthenticated(
            "the access key id is not known (revoked, expired or never issued)",
        ));
    };
    if ak.expiration.is_some_and(|e| e <= now) {
        return Err(Denial::unauthenticated("the security token has expired"));
    }
    let key = st.key().await.map_err(unavailable)?;
    if let Some(task) = &ak.task {
        let tok = sigv4::header(headers, "x-amz-security-token").unwrap_or("");
        if !ct_eq(
            tok.trim().as_bytes(),
            key.session_token_for(&ak.access_key_id).as_bytes(),
        ) {
            return Err(Denial::unauthenticated("the security token is invalid"));
        }
        let bound = identity::get_task_creds(&*st.store, task)
            .await
            .map_err(unavailable)?;
        let live = bound.is_some_and(|(b, _)| {
            b.access_key_id == ak.access_key_id || b.previous.contains(&ak.access_key_id)
        });
        if !live {
            return Err(Denial::unauthenticated(
                "the task's credentials have been revoked (the task stopped)",
            ));
        }
    }
    sigv4::verify(&auth, &parts, &amz_date, &key.secret_for(&ak.access_key_id)).map_err(un)?;
    if !read_only {
        // A write must sign its body, and may be used once, on any control plane.
        if parts.payload_hash == sigv4::UNSIGNED_PAYLOAD {
            return Err(Denial::unauthenticated(
                "UNSIGNED-PAYLOAD is not accepted for writes: sign the request body (x-amz-content-sha256)",
            ));
        }
        if !st
            .first_use(&auth.signature, now)
            .await
            .map_err(Denial::unavailable)?
        {
            return Err(Denial::unauthenticated(
                "this signed request was already used (replay refused)",
            ));
        }
    }
    let (identity, role) = match (&ak.identity, &ak.task) {
        (Some(name), _) => {
            let id = identity::get_identity(&*st.store, name)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| {
                    Denial::unauthenticated("the identity of this access key was deleted")
                })?;
            (id.name, id.role)
        }
        (None, Some(task)) => (format!("task/{task}"), ak.role.clone()),
        (None, None) => return Err(Denial::unauthenticated("access key has no owner")),
    };
    Ok(Caller {
        identity,
        role,
        task: ak.task.clone(),
        auth_method: "sigv4",
        access_key_id: Some(ak.access_key_id.clone()),
    })
}

/// Evaluate every target for the caller; the first refused one is reported.
async fn authorize(st: &AuthState, caller: &Caller, targets: &[Target]) -> Result<(), Denial> {
    if targets.is_empty() {
        return Ok(());
    }
    let role = identity::get_role(&*st.store, &caller.role)
        .await
        .map_err(|e| Denial {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "Unavailable",
            message: format!("cannot read role {}: {e}", caller.role),
            resource: None,
            action: None,
        })?;
    for t in targets {
        let (ev, t) = policy::evaluate_target(role.as_ref(), t);
        if ev.allowed() {
            continue;
        }
        let why = match (&ev.decision, &role) {
            (Decision::ExplicitDeny, _) => format!(
                " because of an explicit deny ({})",
                ev.statement.as_deref().unwrap_or("a statement")
            ),
            (_, None) => format!(" because role {} does not exist", caller.role),
            _ => " because no statement of its role allows it".to_string(),
        };
        return Err(Denial {
            status: StatusCode::FORBIDDEN,
            code: "AccessDenied",
            message: format!(
                "{} (role {}) is not authorized to perform {} on resource {}{why}",
                caller.identity, caller.role, t.action, t.resource
            ),
            resource: Some(t.resource.clone()),
            action: Some(t.action.clone()),
        });
    }
    Ok(())
}

fn denial_response(d: &Denial, action: &str, request_id: &str) -> Response {
    let mut body = json!({
        "error": d.message,
        "code": d.code,
        "action": d.action.as_deref().unwrap_or(action),
        "requestId": request_id,
    });
    if let Some(r) = &d.resource {
        body["resource"] = json!(r);
    }
    let mut resp = (d.status, Json(body)).into_response();
    if d.status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"berth\""),
        );
    }
    resp
}

/// Read the request body (bounded), once the caller is known; a 413 is audited.
async fn read_body(
    st: &AuthState,
    rec: &mut AuditRecord,
    body: Body,
    request_id: &str,
) -> Result<Bytes, Response> {
    match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => Ok(b),
        Err(_) => {
            let d = Denial {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "PayloadTooLarge",
                message: format!("request body too large (limit {} bytes)", MAX_BODY_BYTES),
                resource: None,
                action: None,
            };
            rec.decision = "rejected".into();
            rec.status = d.status.as_u16();
            rec.error_message = Some(d.message.clone());
            let action = rec.action.clone();
            st.audit.append(rec.clone()).await;
            Err(denial_response(&d, &action, request_id))
        }
    }
}

fn is_read(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

pub async fn authenticate(State(st): State<AuthState>, req: Request, next: Next) -> Response {
    let now = crate::model::now();
    let request_id = crate::model::new_id()[..16].to_string();
    let (mut parts, body) = req.into_parts();
    let mut body = Some(body);
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let source_ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let user_agent: String = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(256)
        .collect();

    let mut rec = AuditRecord {
        event_time: Some(now),
        request_id: request_id.clone(),
        identity: "anonymous".into(),
        auth_method: "none".into(),
        source_ip,
        user_agent,
        method: method.to_string(),
        path: path.clone(),
        ..Default::default()
    };

    // Authorize what the handler will act on: the router decodes each segment, so classify
    // the decoded path, and refuse spellings that could make the two disagree.
    let decoded_path = match crate::util::percent::normalized_path(&path) {
        Ok(p) => p,
        Err(why) => {
            return crate::api::error::ApiError::bad_request(format!("invalid path: {why}"))
                .into_response()
        }
    };
    // `POST /` with `X-Amz-Target`: an ECS JSON 1.1 call (api::ecs), answered in ECS's shape.
    let ecs_op = super::ecs::operation(&method, &decoded_path, &parts.headers);
    let denial_response = |d: &Denial, action: &str, request_id: &str| match &ecs_op {
        Some(_) => super::ecs::error::denial(d.status, d.code, &d.message, request_id),
        None => denial_response(d, action, request_id),
    };
    // An ECS Describe/List is a read sent as POST (a poll may repeat its signature).
    let read_like = is_read(&method) || ecs_op.as_deref().is_some_and(super::ecs::is_read_only);
    // Public routes decide by path alone; everything else is authenticated on its headers
    // before its body is read (a stranger's 16 MiB costs nothing).
    let pre = match &ecs_op {
        Some(op) => Classified::Protected(vec![Target::new(format!("ecs:{op}"), "*")]),
        None => actions::classify(&method, &decoded_path, b""),
    };
    if matches!(pre, Classified::Public) {
        let raw = body.take().unwrap_or_default();
        return next.run(Request::from_parts(parts, raw)).await;
    }
    let mut action = actions::primary(&pre);
    rec.action = action.clone();

    // Authenticate.
    let authz = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}").to_string());
    let mut set_cookie: Option<String> = None;
    let mut body_bytes: Option<Bytes> = None;
    // `Ok(None)`: a SigV4 request from a known key, verified in full once the body is read.
    let caller: Result<Option<Caller>, Denial> = match authz.as_deref() {
        Some(a) if a.len() > 7 && a[..7].eq_ignore_ascii_case("bearer ") => {
            from_token(&st, &a[7..], "bearer").await.map(Some)
        }
        Some(a) if a.starts_with(sigv4::ALGORITHM) => {
            if let Some(akid) = sigv4::parse_authorization(a).ok().map(|p| p.access_key_id) {
                rec.access_key_id = Some(akid);
            }
            // Verified in full below, once the body is read.
            let headers = headers_vec(&parts.headers);
            sigv4_known_key(&st, a, &headers, now).await.map(|()| None)
        }
        Some(_) => Err(Denial::unauthenticated(
            "unsupported Authorization header; use `Bearer <token>` or AWS Signature Version 4",
        )),
        None if is_read(&method) => {
            if let Some(tok) = query_param(query.as_deref(), "token") {
                let c = from_token(&st, tok, "bearer").await;
                if c.is_ok() {
                    if let Ok(key) = st.key().await {
                        let hash = identity::token_hash(tok);
                        let name = c.as_ref().map(|c| c.identity.clone()).unwrap_or_default();
                        set_cookie = Some(session_cookie(&key, &name, &hash, now));
                    }
                }
                c.map(Some)
            } else if let Some(v) = cookie(&parts.headers, SESSION_COOKIE) {
                from_cookie(&st, v, now).await.map(Some)
            } else {
                Err(Denial::unauthenticated(
                    "authentication required: send `Authorization: Bearer <token>` (see `berth auth token`) or sign with AWS SigV4",
                ))
            }
        }
        None => Err(Denial::unauthenticated(
            "authentication required: send `Authorization: Bearer <token>` (see `berth auth token`) or sign with AWS SigV4",
        )),
    };
    let caller = match caller {
        Ok(None) => {
            let raw = body.take().unwrap_or_default();
            let bytes = match read_body(&st, &mut rec, raw, &request_id).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let headers = headers_vec(&parts.headers);
            let a = authz.as_deref().unwrap_or("");
            let c = from_sigv4(
                &st,
                a,
                &method,
                &path,
                query.as_deref().unwrap_or(""),
                &headers,
                &bytes,
                now,
                read_like,
            )
            .await;
            body_bytes = Some(bytes);
            c
        }
        Ok(Some(c)) => Ok(c),
        Err(d) => Err(d),
    };
    let caller = match caller {
        Ok(c) => c,
        Err(d) => {
            rec.decision = if d.status == StatusCode::UNAUTHORIZED {
                "unauthenticated".into()
            } else {
                "error".into()
            };
            rec.status = d.status.as_u16();
            rec.error_message = Some(d.message.clone());
            // Rate-limited per source: anonymous clients cannot flush the trail.
            st.audit.append_unauthenticated(rec).await;
            return denial_response(&d, &action, &request_id);
        }
    };
    let bytes = match body_bytes {
        Some(b) => b,
        None => {
            match read_body(&st, &mut rec, body.take().unwrap_or_default(), &request_id).await {
                Ok(b) => b,
                Err(resp) => return resp,
            }
        }
    };
    // An ECS call is parsed here once; what is authorized is what its handler acts on.
    let mut ecs_call = None;
    let classified = match &ecs_op {
        Some(op) => match super::ecs::parse_call(op, &parts.headers, &bytes) {
            Ok(c) => {
                let t = super::ecs::authz::targets(&c);
                ecs_call = Some(c);
                Classified::Protected(t)
            }
            // Not a JSON object: the handler refuses it (SerializationException).
            Err(_) => Classified::Protected(vec![
                Target::new(format!("ecs:{op}"), "*").aka(super::ecs::authz::UNMAPPED, "*")
            ]),
        },
        None => actions::classify(&method, &decoded_path, &bytes),
    };
    let targets = match &classified {
        Classified::Public => vec![],
        Classified::Protected(t) => t.clone(),
    };
    action = actions::primary(&classified);
    rec.action = action.clone();
    rec.resources = targets
        .iter()
        .map(|t| json!({"action": t.action, "resource": t.resource}))
        .collect();
    rec.request_parameters = audit::request_parameters(query.as_deref(), &bytes);
    rec.identity = caller.identity.clone();
    rec.role = Some(caller.role.clone());
    rec.task = caller.task.clone();
    rec.auth_method = caller.auth_method.to_string();
    if caller.access_key_id.is_some() {
        rec.access_key_id = caller.access_key_id.clone();
    }

    // Authorize.
    if let Err(d) = authorize(&st, &caller, &targets).await {
        rec.decision = if d.status == StatusCode::FORBIDDEN {
            "denied".into()
        } else {
            "error".into()
        };
        rec.status = d.status.as_u16();
        rec.error_message = Some(d.message.clone());
        st.audit.append(rec).await;
        return denial_response(&d, &action, &request_id);
    }

    // `?token=` (the dashboard's sign-in link): exchange it for the session cookie and send the
    // browser to the same URL without it, so the token stays out of its history and of proxy
    // and access logs.
    if let (Some(c), true) = (&set_cookie, matches!(method, Method::GET | Method::HEAD)) {
        let location = without_token(&path, query.as_deref());
        rec.decision = "allowed".into();
        rec.status = StatusCode::SEE_OTHER.as_u16();
        st.audit.append(rec).await;
        let mut resp = StatusCode::SEE_OTHER.into_response();
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&location) {
            h.insert(header::LOCATION, v);
        }
        if let Ok(v) = HeaderValue::from_str(&session_set_cookie(c)) {
            h.append(header::SET_COOKIE, v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            h.insert(REQUEST_ID_HEADER, v);
        }
        return resp;
    }

    parts.extensions.insert(caller);
    if let Some(c) = ecs_call {
        parts.extensions.insert(c);
    }
    rec.decision = "allowed".into();
    if !read_like {
        // A change is recorded before it is made: no record, no change. The final record
        // (status, response) replaces this one under the same key.
        rec.event_time = Some(crate::model::now());
        rec.event_id = crate::model::new_id()[..12].to_string();
        let mut pending = rec.clone();
        pending.error_message = Some("in progress".into());
        if !st.audit.append(pending).await {
            let d = Denial {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "AuditUnavailable",
                message:
                    "the audit trail cannot be written right now; nothing was changed (try again)"
                        .into(),
                resource: None,
                action: None,
            };
            return denial_response(&d, &action, &request_id);
        }
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    let mut resp = next.run(req).await;
    rec.status = resp.status().as_u16();

    if !is_read(&method) {
        // Writes: record the response elements (bounded, secrets redacted).
        let (rp, rb) = resp.into_parts();
        let body = axum::body::to_bytes(rb, MAX_BODY_BYTES)
            .await
            .unwrap_or_default();
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !rp.status.is_success() {
            rec.error_message = v["error"]
                .as_str()
                .or(v["message"].as_str())
                .map(|s| s.chars().take(1024).collect());
        }
        rec.response_elements = audit::bounded(&v);
        resp = Response::from_parts(rp, Body::from(body));
    } else if !resp.status().is_success() {
        rec.error_message = Some(format!("HTTP {}", resp.status().as_u16()));
    }
    st.audit.append(rec).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        if ecs_op.is_some() {
            resp.headers_mut()
                .insert(super::ecs::error::REQUEST_ID_HEADER, v.clone());
        }
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

/// The `Set-Cookie` value of a session cookie.
fn session_set_cookie(c: &str) -> String {
    format!("{SESSION_COOKIE}={c}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}")
}

/// `path?query` without its `token` parameters (the others kept as they were written).
fn without_token(path: &str, query: Option<&str>) -> String {
    // Never a scheme-relative `//host` (an open redirect); the path check refuses those anyway.
    let path = if path.starts_with("//") { "/" } else { path };
    let rest: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some("token"))
        .collect();
    if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", rest.join("&"))
    }
}
