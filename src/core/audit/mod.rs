//! The audit trail: every API call, allowed or denied, and every task-credentials fetch,
//! appended durably as one record in the store (so it survives restarts, is shared by every
//! control-plane replica with etcd, and is queryable by identity, action and time).
//!
//! Records live under `/berth/audit/<20-digit microseconds since the epoch>-<class>-<random>`,
//! so a range is in time order. The API answers only after its record is committed
//! (group-committed with concurrent requests); a change is recorded *before* it is made, and
//! refused (503) when its record cannot be stored.
//!
//! Retention by class, so noise cannot flush what matters: accepted changes (`w`: allowed
//! writes, GitOps syncs, controller writes) are kept for [`WRITE_RETENTION_DAYS`] days and up
//! to [`max_write_records`]; everything else (`o`: reads, denials, anonymous 401s) is capped at
//! [`max_records`] (default 50 000; `BERTH_AUDIT_MAX_RECORDS`). Unauthenticated requests are
//! rate-limited per source address: the first few of a window are recorded one by one, the
//! rest as one aggregate record with a count ([`AuditLog::append_unauthenticated`]).
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
/// Accepted changes are kept this long (and up to [`max_write_records`]).
pub const WRITE_RETENTION_DAYS: i64 = 90;
const DEFAULT_MAX_WRITE_RECORDS: usize = 1_000_000;
/// Unauthenticated records written one by one per source address and window.
const ANON_PER_WINDOW: u32 = 10;
const ANON_WINDOW: Duration = Duration::from_secs(60);
/// Source addresses tracked at once (a spray of addresses shares one "other" bucket).
const ANON_SOURCES: usize = 1024;
const PRUNE_EVERY: usize = 1_000;
const REDACTED: &str = "[REDACTED]";

pub fn max_records() -> usize {
    std::env::var("BERTH_AUDIT_MAX_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_MAX_RECORDS)
}

pub fn max_write_records() -> usize {
    std::env::var("BERTH_AUDIT_MAX_WRITE_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_MAX_WRITE_RECORDS)
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
    /// Requests this record stands for (an aggregate of rate-limited ones); 0 means 1.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub count: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl AuditRecord {
    /// An accepted change (kept by age, apart from the rest).
    pub fn is_change(&self) -> bool {
        self.decision == "allowed"
            && !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS" | "")
    }
}

/// The store key of a record at `t`; `change` selects the retention class.
pub fn record_key(t: DateTime<Utc>, change: bool, id: &str) -> String {
    let class = if change { 'w' } else { 'o' };
    format!("{PREFIX}{:020}-{class}-{id}", t.timestamp_micros().max(0))
}

/// The retention class and time of a record key: (is a change, microseconds).
fn key_class(key: &str) -> (bool, i64) {
    let rest = key.strip_prefix(PREFIX).unwrap_or("");
    let ts = rest.get(..20).and_then(|t| t.parse().ok()).unwrap_or(0);
    (rest.get(20..23) == Some("-w-"), ts)
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

/// Unauthenticated requests seen per source in the current window.
#[derive(Default)]
struct AnonWindow {
    started: Option<std::time::Instant>,
    /// Per source: recorded one by one, and suppressed since (with a sample record).
    sources: std::collections::HashMap<String, (u32, u64, Option<AuditRecord>)>,
}

/// A handle that appends records; cheap to clone. The writer task starts on first use.
#[derive(Clone)]
pub struct AuditLog {
    store: DynStore,
    tx: Arc<OnceLock<mpsc::Sender<Pending>>>,
    anon: Arc<std::sync::Mutex<AnonWindow>>,
}

impl AuditLog {
    pub fn new(store: DynStore) -> Self {
        AuditLog {
            store,
            tx: Arc::new(OnceLock::new()),
            anon: Arc::default(),
        }
    }

    /// Record an unauthenticated request, rate-limited: per source address the first
    /// [`ANON_PER_WINDOW`] of a window are recorded, the rest are counted and written as one
    /// aggregate record (`count`) when the window ends. Anonymous clients cannot flush the
    /// trail, and what they tried stays visible.
    pub async fn append_unauthenticated(&self, rec: AuditRecord) -> bool {
        let (record, flush) = {
            let mut w = self.anon.lock().unwrap();
            let now = std::time::Instant::now();
            let mut flush = Vec::new();
            if w.started
                .is_none_or(|s| now.duration_since(s) >= ANON_WINDOW)
            {
                for (_, (_, suppressed, sample)) in w.sources.drain() {
                    if let (true, Some(mut agg)) = (suppressed > 0, sample) {
                        agg.event_id = String::new();
                        agg.event_time = None;
                        agg.count = suppressed;
                        agg.error_message = Some(format!(
                            "{suppressed} more unauthenticated requests from {} in {}s (rate-limited; last one shown)",
                            agg.source_ip,
                            ANON_WINDOW.as_secs()
                        ));
                        flush.push(agg);
                    }
                }
                w.started = Some(now);
            }
            let src = if w.sources.len() >= ANON_SOURCES && !w.sources.contains_key(&rec.source_ip)
            {
                "other".to_string()
            } else {
                rec.source_ip.clone()
            };
            let e = w.sources.entry(src).or_default();
            if e.0 < ANON_PER_WINDOW {
                e.0 += 1;
                (Some(rec), flush)
            } else {
                e.1 += 1;
                e.2 = Some(rec);
                (None, flush)
            }
        };
        for agg in flush {
            self.append(agg).await;
        }
        match record {
            Some(r) => self.append(r).await,
            None => true,
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
            txn = txn.and_then(Op::put(record_key(t, r.is_change(), &r.event_id), v));
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
            if let Err(e) = prune(&*store, max_records(), max_write_records()).await {
                tracing::warn!(error = %e, "could not prune the audit trail");
            }
        }
    }
}

impl AuditLog {
    /// Queue a record without waiting for it (controller writes: the record must not slow the
    /// control loop). Dropped, with a warning, only if the writer is far behind.
    pub fn record_nowait(&self, mut rec: AuditRecord) {
        if rec.event_time.is_none() {
            rec.event_time = Some(crate::model::now());
        }
        if rec.event_id.is_empty() {
            rec.event_id = crate::model::new_id()[..12].to_string();
        }
        let (ack, _) = oneshot::channel();
        if self.sender().try_send((rec, ack)).is_err() {
            tracing::warn!("audit writer is behind; a controller-write record was dropped");
        }
    }
}

/// A store whose successful writes are audited as made by `source` (the controllers, a GitOps
/// sync): who changed what is in the trail whether or not it came through the API.
pub struct AuditedStore {
    inner: DynStore,
    log: AuditLog,
    source: String,
}

impl AuditedStore {
    pub fn new(inner: DynStore, log: AuditLog, source: &str) -> Self {
        AuditedStore {
            inner,
            log,
            source: source.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl Store for AuditedStore {
    async fn get(&self, key: &str) -> crate::store::Result<Option<crate::store::KeyValue>> {
        self.inner.get(key).await
    }
    async fn range(
        &self,
        prefix: &str,
    ) -> crate::store::Result<(Vec<crate::store::KeyValue>, i64)> {
        self.inner.range(prefix).await
    }
    async fn txn(&self, txn: Txn) -> crate::store::Result<crate::store::TxnResult> {
        let keys: Vec<String> = txn.success.iter().map(|op| op.key().to_string()).collect();
        let res = self.inner.txn(txn).await?;
        // Only changes to berth's objects; the trail itself, stats and leases are not news.
        let objects: Vec<&String> = keys
            .iter()
            .filter(|k| {
                !k.starts_with(PREFIX)
                    && !k.starts_with(crate::metrics::STATS_PREFIX)
                    && !k.starts_with("/berth/leases/")
            })
            .collect();
        if res.succeeded && !objects.is_empty() {
            self.log.record_nowait(AuditRecord {
                identity: self.source.clone(),
                auth_method: "internal".into(),
                source_ip: "-".into(),
                method: "WRITE".into(),
                path: objects[0].clone(),
                action: "berth:StoreWrite".into(),
                resources: objects
                    .iter()
                    .take(20)
                    .map(|k| json!({"action": "berth:StoreWrite", "resource": k}))
                    .collect(),
                decision: "allowed".into(),
                status: 200,
                count: objects.len() as u64,
                ..Default::default()
            });
        }
        Ok(res)
    }
    async fn watch(
        &self,
        prefix: &str,
        from: i64,
    ) -> crate::store::Result<crate::store::WatchStream> {
        self.inner.watch(prefix, from).await
    }
    async fn lease_grant(&self, ttl: Duration) -> crate::store::Result<i64> {
        self.inner.lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: i64) -> crate::store::Result<()> {
        self.inner.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: i64) -> crate::store::Result<()> {
        self.inner.lease_revoke(lease).await
    }
    async fn revision(&self) -> crate::store::Result<i64> {
        self.inner.revision().await
    }
    fn failure(&self) -> Option<String> {
        self.inner.failure()
    }
}

/// Delete the oldest records of each class beyond its cap: `keep` records that are not
/// changes, `keep_changes` changes (and changes older than [`WRITE_RETENTION_DAYS`]).
pub async fn prune(store: &dyn Store, keep: usize, keep_changes: usize) -> anyhow::Result<usize> {
    let (kvs, _) = store.range(PREFIX).await?;
    let cutoff =
        (crate::model::now() - chrono::Duration::days(WRITE_RETENTION_DAYS)).timestamp_micros();
    let (changes, others): (Vec<_>, Vec<_>) = kvs.iter().partition(|kv| key_class(&kv.key).0);
    let mut doomed: Vec<&str> = Vec::new();
    doomed.extend(
        others[..others.len().saturating_sub(keep)]
            .iter()
            .map(|kv| kv.key.as_str()),
    );
    let over = changes.len().saturating_sub(keep_changes);
    doomed.extend(
        changes
            .iter()
            .enumerate()
            .filter(|(i, kv)| *i < over || key_class(&kv.key).1 < cutoff)
            .map(|(_, kv)| kv.key.as_str()),
    );
    for chunk in doomed.chunks(100) {
        let mut txn = Txn::new();
        for k in chunk {
            txn = txn.and_then(Op::delete(*k));
        }
        store.txn(txn).await?;
    }
    Ok(doomed.len())
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
        assert_eq!(prune(&*store, 2, usize::MAX).await.unwrap(), 3);
        assert_eq!(query(&*store, &Query::default()).await.unwrap().len(), 2);
    }

    /// Issue 16 item 5: noise cannot flush accepted changes, and anonymous floods aggregate.
    #[tokio::test]
    async fn changes_outlive_noise_and_anonymous_floods_aggregate() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let log = AuditLog::new(store.clone());
        let change = AuditRecord {
            identity: "admin".into(),
            action: "berth:DeleteService".into(),
            method: "DELETE".into(),
            decision: "allowed".into(),
            ..Default::default()
        };
        assert!(log.append(change).await);
        for _ in 0..500 {
            let anon = AuditRecord {
                identity: "anonymous".into(),
                method: "GET".into(),
                decision: "unauthenticated".into(),
                source_ip: "10.9.9.9".into(),
                status: 401,
                ..Default::default()
            };
            assert!(log.append_unauthenticated(anon).await);
        }
        let all = query(&*store, &Query::default()).await.unwrap();
        assert_eq!(
            all.len(),
            1 + ANON_PER_WINDOW as usize,
            "500 anonymous requests kept as {} records",
            all.len() - 1
        );
        // The rest is counted into one aggregate when the window ends.
        log.anon.lock().unwrap().started = Some(std::time::Instant::now() - ANON_WINDOW);
        log.append_unauthenticated(AuditRecord {
            identity: "anonymous".into(),
            decision: "unauthenticated".into(),
            source_ip: "10.9.9.9".into(),
            ..Default::default()
        })
        .await;
        let all = query(&*store, &Query::default()).await.unwrap();
        let agg = all
            .iter()
            .find(|r| r.count > 0)
            .expect("an aggregate record");
        assert_eq!(agg.count, 500 - ANON_PER_WINDOW as u64);
        // Pruning to 3 "other" records keeps the change.
        prune(&*store, 3, usize::MAX).await.unwrap();
        let left = query(&*store, &Query::default()).await.unwrap();
        assert_eq!(left.len(), 4, "{left:?}");
        assert!(left.iter().any(|r| r.action == "berth:DeleteService"));
    }
}
