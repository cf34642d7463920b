//! The audit trail: every API call, allowed or denied, and every task-credentials fetch,
//! appended durably as one record in the store (so it survives restarts, is shared by every
//! control-plane replica with etcd, and is queryable by identity, action and time).
//!
//! Records live under `/berth/audit/<20-digit microseconds since the epoch>-<random>`, so a
//! range is in time order. The API answers only after its record is committed (group-committed
//! with concurrent requests). The trail keeps the newest [`max_records`] records (default
//! 50 000; `BERTH_AUDIT_MAX_RECORDS`); older ones are pruned.
//!
//! Secrets are never recorded: request and response elements pass through [`redact`] (any
//! field whose name looks like a token, secret, password or key, and `{name, value}` pairs
//! such as container environment variables whose name does), and are capped in size.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::store::{DynStore, Op, Store, Txn};

pub const PREFIX: &str = "/berth/audit/";
/// Request parameters / response elements larger than this (as JSON) are summarized.
pub const MAX_ELEMENT_BYTES: usize = 8 * 1024;
/// Records per transaction (etcd refuses more than `--max-txn-ops`, default 128).
const MAX_BATCH: usize = 100;
const DEFAULT_MAX_RECORDS: usize = 50_000;
const PRUNE_EVERY: usize = 1_000;
const REDACTED: &str = "[REDACTED]";

pub fn max_records() -> usize {
    std::env::var("BERTH_AUDIT_MAX_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_MAX_RECORDS)
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub event_time: Option<DateTime<Utc>>,
    pub event_id: String,
    pub request_id: String,
    /// Who called: an identity name, `task/<id>` for task credentials, or `anonymous`.
    pub identity: String,
    /// The task whose credentials were used (or fetched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// `bearer`, `sigv4`, `session`, `task-token`, or `none`.
    pub auth_method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    pub source_ip: String,
    #[serde(default)]
    pub user_agent: String,
    pub method: String,
    pub path: String,
    /// The primary action (e.g. `berth:DeleteService`).
    pub action: String,
    /// Every action checked, with its resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Value>,
    /// `allowed`, `denied` (403) or `unauthenticated` (401).
    pub decision: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub request_parameters: Value,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub response_elements: Value,
}

/// The store key of a record at `t`.
pub fn record_key(t: DateTime<Utc>, id: &str) -> String {
    format!("{PREFIX}{:020}-{id}", t.timestamp_micros().max(0))
}

fn since_key(t: DateTime<Utc>) -> String {
    format!("{PREFIX}{:020}", t.timestamp_micros().max(0))
}

fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    // accessKeyId names a key, it is not one.
    if n == "accesskeyid" || n == "access_key_id" || n.ends_with("keyid") {
        return false;
    }
    [
        "token",
        "secret",
        "password",
        "passwd",
        "authorization",
        "credential",
        "cookie",
        "privatekey",
        "private_key",
        "apikey",
        "api_key",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// Replace secret-looking values (recursively).
pub fn redact(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            // An environment-style pair: {"name": "DB_PASSWORD", "value": "..."}.
            let pair_secret = m
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(secret_name)
                && m.contains_key("value");
            let mut out = serde_json::Map::new();
            for (k, val) in m {
                let hide = secret_name(k) || (pair_secret && k == "value");
                out.insert(
                    k.clone(),
                    if hide && !val.is_null() {
                        Value::String(REDACTED.into())
                    } else {
                        redact(val)
                    },
                );
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// Redact and cap a JSON element: larger than [`MAX_ELEMENT_BYTES`] becomes a summary.
pub fn bounded(v: &Value) -> Value {
    let r = redact(v);
    let n = serde_json::to_vec(&r).map(|b| b.len()).unwrap_or(0);
    if n <= MAX_ELEMENT_BYTES {
        return r;
    }
    json!({"truncated": true, "bytes": n, "keys": r.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>())})
}

/// Request parameters from a query string and a JSON body: the query as an object; apply and
/// delete bodies summarized as the documents' kinds and names (the manifests themselves are
/// in the store).
pub fn request_parameters(query: Option<&str>, body: &[u8]) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        let mut m = serde_json::Map::new();
        for pair in q.split('&').filter(|p| !p.is_empty()).take(64) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let val = if secret_name(k) {
                REDACTED.to_string()
            } else {
                v.chars().take(256).collect()
            };
            m.insert(k.chars().take(64).collect(), Value::String(val));
        }
        out.insert("query".into(), Value::Object(m));
    }
    if !body.is_empty() {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => {
                let v = match v.get("documents").and_then(Value::as_array) {
                    Some(docs) => {
                        let list: Vec<Value> = docs
                            .iter()
                            .take(200)
                            .map(|d| {
                                json!({
                                    "kind": d["resource"]["kind"],
                                    "name": d["resource"]["metadata"]["name"],
                                    "file": d["source"]["file"],
                                })
                            })
                            .collect();
                        json!({"documents": list, "count": docs.len(), "dryRun": v["dryRun"]})
                    }
                    None => v,
                };
                out.insert("body".into(), bounded(&v));
            }
            Err(_) => {
                out.insert("body".into(), json!({"notJson": true, "bytes": body.len()}));
            }
        }
    }
    if out.is_empty() {
        Value::Null
    } else {
        Value::Object(out)
    }
}

type Pending = (AuditRecord, oneshot::Sender<bool>);

/// A handle that appends records; cheap to clone. The writer task starts on first use.
#[derive(Clone)]
pub struct AuditLog {
    store: DynStore,
    tx: Arc<OnceLock<mpsc::Sender<Pending>>>,
}

impl AuditLog {
    pub fn new(store: DynStore) -> Self {
        AuditLog {
            store,
            tx: Arc::new(OnceLock::new()),
        }
    }

    fn sender(&self) -> &mpsc::Sender<Pending> {
        self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(4096);
            tokio::spawn(writer(self.store.clone(), rx));
            tx
        })
    }

    /// Append a record and wait (bounded) until it is committed. Returns false if it could
    /// not be written (logged; the request itself is not failed).
    pub async fn append(&self, mut rec: AuditRecord) -> bool {
        if rec.event_time.is_none() {
            rec.event_time = Some(crate::model::now());
        }
        if rec.event_id.is_empty() {
            rec.event_id = crate::model::new_id()[..12].to_string();
        }
        let (ack, done) = oneshot::channel();
        if self.sender().send((rec, ack)).await.is_err() {
            return false;
        }
        matches!(
            tokio::time::timeout(Duration::from_secs(10), done).await,
            Ok(Ok(true))
        )
    }
}

async fn writer(store: DynStore, mut rx: mpsc::Receiver<Pending>) {
    let mut since_prune = PRUNE_EVERY; // prune once soon after start
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut txn = Txn::new();
        for (r, _) in &batch {
            let t = r.event_time.unwrap_or_else(crate::model::now);
            let v = serde_json::to_vec(r).unwrap_or_default();
            txn = txn.and_then(Op::put(record_key(t, &r.event_id), v));
        }
        let ok = match store.txn(txn).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, records = batch.len(), "could not write audit records");
                false
            }
        };
        since_prune += batch.len();
        for (_, ack) in batch {
            let _ = ack.send(ok);
        }
        if since_prune >= PRUNE_EVERY {
            since_prune = 0;
            if let Err(e) = prune(&*store, max_records()).await {
                tracing::warn!(error = %e, "could not prune the audit trail");
            }
        }
    }
}

/// Delete the oldest records beyond `keep`.
pub async fn prune(store: &dyn Store, keep: usize) -> anyhow::Result<usize> {
    let (kvs, _) = store.range(PREFIX).await?;
    if kvs.len() <= keep {
        return Ok(0);
    }
    let excess = kvs.len() - keep;
    for chunk in kvs[..excess].chunks(100) {
        let mut txn = Txn::new();
        for kv in chunk {
            txn = txn.and_then(Op::delete(kv.key.clone()));
        }
        store.txn(txn).await?;
    }
    Ok(excess)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    pub identity: Option<String>,
    /// Exact (case-insensitive) or a wildcard pattern such as `berth:Delete*`.
    pub action: Option<String>,
    /// RFC 3339 time, or a duration ago (`10m`, `2h`).
    pub since: Option<String>,
    pub task: Option<String>,
    /// `allowed`, `denied`, `unauthenticated`.
    pub decision: Option<String>,
    /// Newest N (default 1000, at most 10 000).
    pub limit: Option<usize>,
}

pub fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    match crate::util::parse_duration(s) {
        Ok(d) => Ok(now - chrono::Duration::from_std(d).map_err(|e| e.to_string())?),
        Err(_) => Err(format!(
            "invalid since {s:?}: use an RFC 3339 time (2024-05-01T12:00:00Z) or a duration ago (10m, 2h)"
        )),
    }
}

/// Records matching `q`, oldest first.
pub async fn query(store: &dyn Store, q: &Query) -> Result<Vec<AuditRecord>, String> {
    let since = match &q.since {
        Some(s) => Some(since_key(parse_since(s, crate::model::now())?)),
        None => None,
    };
    let (kvs, _) = store.range(PREFIX).await.map_err(|e| e.to_string())?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let mut out: Vec<AuditRecord> = Vec::new();
    for kv in kvs.iter().rev() {
        if since.as_ref().is_some_and(|s| kv.key < *s) {
            break;
        }
        let Ok(r) = serde_json::from_slice::<AuditRecord>(&kv.value) else {
            continue;
        };
        if q.identity.as_ref().is_some_and(|i| &r.identity != i) {
            continue;
        }
        if q.task.as_ref().is_some_and(|t| r.task.as_ref() != Some(t)) {
            continue;
        }
        if q.decision
            .as_ref()
            .is_some_and(|d| !r.decision.eq_ignore_ascii_case(d))
        {
            continue;
        }
        if let Some(a) = &q.action {
            let hit = crate::auth::policy::action_matches(a, &r.action)
                || r.resources.iter().any(|x| {
                    x["action"]
                        .as_str()
                        .is_some_and(|ra| crate::auth::policy::action_matches(a, ra))
                });
            if !hit {
                continue;
            }
        }
        out.push(r);
        if out.len() >= limit {
            break;
        }
    }
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    #[test]
    fn redaction() {
        let v = json!({
            "name": "ci", "role": "reader", "token": "berth_abc", "secretAccessKey": "x",
            "accessKeyId": "AKIA123",
            "spec": {"containerDefinitions": [{"environment": [
                {"name": "DB_PASSWORD", "value": "hunter2"}, {"name": "MODE", "value": "prod"}]}]}
        });
        let r = redact(&v);
        assert_eq!(r["token"], REDACTED);
        assert_eq!(r["secretAccessKey"], REDACTED);
        assert_eq!(r["accessKeyId"], "AKIA123");
        assert_eq!(r["role"], "reader");
        let env = &r["spec"]["containerDefinitions"][0]["environment"];
        assert_eq!(env[0]["value"], REDACTED);
        assert_eq!(env[1]["value"], "prod");
        let big = json!({"x": "a".repeat(MAX_ELEMENT_BYTES * 2)});
        assert_eq!(bounded(&big)["truncated"], true);
        let p = request_parameters(Some("token=abc&service=web"), b"");
        assert_eq!(p["query"]["token"], REDACTED);
        assert_eq!(p["query"]["service"], "web");
    }

    #[tokio::test]
    async fn append_query_prune() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let log = AuditLog::new(store.clone());
        for i in 0..5 {
            let ok = log
                .append(AuditRecord {
                    identity: if i % 2 == 0 {
                        "admin".into()
                    } else {
                        "ci".into()
                    },
                    action: if i == 4 {
                        "berth:DeleteService".into()
                    } else {
                        "berth:ListServices".into()
                    },
                    decision: "allowed".into(),
                    source_ip: "127.0.0.1".into(),
                    ..Default::default()
                })
                .await;
            assert!(ok);
        }
        let all = query(&*store, &Query::default()).await.unwrap();
        assert_eq!(all.len(), 5);
        assert!(all.windows(2).all(|w| w[0].event_time <= w[1].event_time));
        let admin = query(
            &*store,
            &Query {
                identity: Some("admin".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(admin.len(), 3);
        let del = query(
            &*store,
            &Query {
                action: Some("berth:delete*".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(del.len(), 1);
        let recent = query(
            &*store,
            &Query {
                since: Some("1h".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(recent.len(), 5);
        let future = query(
            &*store,
            &Query {
                since: Some("2999-01-01T00:00:00Z".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(future.is_empty());
        assert!(query(
            &*store,
            &Query {
                since: Some("yesterday".into()),
                ..Default::default()
            }
        )
        .await
        .is_err());
        assert_eq!(prune(&*store, 2).await.unwrap(), 3);
        assert_eq!(query(&*store, &Query::default()).await.unwrap().len(), 2);
    }
}
