//! A [`Store`] over HTTP: what a joined agent uses instead of a store URL (ARCHITECTURE.md,
//! "Agents join through the API").
//!
//! Every call goes to the agent-only routes of a berth API server (`/v1/agent/store/…`) with
//! the agent's per-instance credential as a bearer token and its instance id in
//! [`INSTANCE_HEADER`]; the server decides on each key (`auth::node_authz`) and answers with
//! the same semantics as a local store: ordered, gap-free watches (streamed as NDJSON, one
//! revision's events per line), `Compacted` for a compacted start, `LeaseNotFound` for an
//! expired lease. A server that cannot be reached (or answers 502-504) is skipped for the next
//! URL of the list; a broken watch resumes on the next server from the last revision + 1.
//!
//! Refusals come back as `StoreError::Invalid` whose message starts with [`DENIED`] (403) or
//! [`UNAUTHENTICATED`] (401).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    EventKind, KeyValue, Result, Store, StoreError, Txn, TxnResult, WatchEvent, WatchStream,
};

/// The header naming the instance an agent acts for (must match its credential).
pub const INSTANCE_HEADER: &str = "x-berth-instance";
/// Message prefix of a `StoreError::Invalid` for a 403 answer.
pub const DENIED: &str = "permission denied: ";
/// Message prefix of a `StoreError::Invalid` for a 401 answer.
pub const UNAUTHENTICATED: &str = "unauthenticated: ";

/// True when the server refused the request for this agent (403).
pub fn is_denied(e: &StoreError) -> bool {
    matches!(e, StoreError::Invalid(m) if m.starts_with(DENIED))
}

/// Wire types shared by [`RemoteStore`] and the server's agent routes.
pub mod wire {
    use super::*;

    /// A key-value with its value as UTF-8 text when it is (berth's values are JSON), else hex.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
    #[serde(rename_all = "camelCase")]
    pub struct Kv {
        pub key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub value: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub value_hex: Option<String>,
        pub create_revision: i64,
        pub mod_revision: i64,
        pub version: i64,
        pub lease: i64,
    }

    impl From<&KeyValue> for Kv {
        fn from(kv: &KeyValue) -> Self {
            let (value, value_hex) = match std::str::from_utf8(&kv.value) {
                Ok(s) => (Some(s.to_string()), None),
                Err(_) => (None, Some(hex::encode(&kv.value))),
            };
            Kv {
                key: kv.key.clone(),
                value,
                value_hex,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                version: kv.version,
                lease: kv.lease,
            }
        }
    }

    impl Kv {
        pub fn into_kv(self) -> Result<KeyValue> {
            let value = match (self.value, self.value_hex) {
                (Some(s), _) => s.into_bytes(),
                (None, Some(h)) => hex::decode(h)
                    .map_err(|e| StoreError::Corrupt(format!("bad hex value: {e}")))?,
                (None, None) => Vec::new(),
            };
            Ok(KeyValue {
                key: self.key,
                value,
                create_revision: self.create_revision,
                mod_revision: self.mod_revision,
                version: self.version,
                lease: self.lease,
            })
        }
    }

    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
    #[serde(rename_all = "camelCase")]
    pub struct Event {
        pub delete: bool,
        pub kv: Kv,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub prev: Option<Kv>,
    }

    impl From<&WatchEvent> for Event {
        fn from(e: &WatchEvent) -> Self {
            Event {
                delete: e.kind == EventKind::Delete,
                kv: Kv::from(&e.kv),
                prev: e.prev.as_ref().map(Kv::from),
            }
        }
    }

    impl Event {
        pub fn into_event(self) -> Result<WatchEvent> {
            Ok(WatchEvent {
                kind: if self.delete {
                    EventKind::Delete
                } else {
                    EventKind::Put
                },
                kv: self.kv.into_kv()?,
                prev: self.prev.map(Kv::into_kv).transpose()?,
            })
        }
    }

    /// A store error as JSON (`{"storeError": …}` in an error body, or a watch line).
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
    #[serde(tag = "kind", rename_all = "camelCase")]
    pub enum Error {
        Compacted { requested: i64, compacted: i64 },
        LeaseNotFound { lease: i64 },
        Unavailable { message: String },
        Io { message: String },
        Corrupt { message: String },
        Invalid { message: String },
    }

    impl From<&StoreError> for Error {
        fn from(e: &StoreError) -> Self {
            match e.clone() {
                StoreError::Compacted {
                    requested,
                    compacted,
                } => Error::Compacted {
                    requested,
                    compacted,
                },
                StoreError::LeaseNotFound(lease) => Error::LeaseNotFound { lease },
                StoreError::Unavailable(message) => Error::Unavailable { message },
                StoreError::Io(message) => Error::Io { message },
                StoreError::Corrupt(message) => Error::Corrupt { message },
                StoreError::Invalid(message) => Error::Invalid { message },
            }
        }
    }

    impl From<Error> for StoreError {
        fn from(e: Error) -> Self {
            match e {
                Error::Compacted {
                    requested,
                    compacted,
                } => StoreError::Compacted {
                    requested,
                    compacted,
                },
                Error::LeaseNotFound { lease } => StoreError::LeaseNotFound(lease),
                Error::Unavailable { message } => StoreError::Unavailable(message),
                Error::Io { message } => StoreError::Io(message),
                Error::Corrupt { message } => StoreError::Corrupt(message),
                Error::Invalid { message } => StoreError::Invalid(message),
            }
        }
    }

    /// The HTTP status a store error is answered with.
    pub fn status_of(e: &StoreError) -> u16 {
        match e {
            StoreError::Compacted { .. } => 410,
            StoreError::LeaseNotFound(_) => 404,
            StoreError::Invalid(_) => 400,
            StoreError::Unavailable(_) | StoreError::Io(_) | StoreError::Corrupt(_) => 503,
        }
    }

    /// One line of a watch stream: the events of one revision, an error, or progress (the
    /// revision the server's watch has reached when it filtered a revision out).
    #[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
    #[serde(rename_all = "camelCase")]
    pub struct WatchLine {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub events: Vec<Event>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub store_error: Option<Error>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub progress: Option<i64>,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct KeyReq {
        pub key: String,
    }
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct PrefixReq {
        pub prefix: String,
    }
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct WatchReq {
        pub prefix: String,
        pub from_revision: i64,
    }
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct LeaseReq {
        #[serde(default)]
        pub lease: i64,
        #[serde(default)]
        pub ttl_ms: u64,
    }
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct GetResp {
        pub kv: Option<Kv>,
    }
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct RangeResp {
        pub kvs: Vec<Kv>,
        pub revision: i64,
    }
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct TxnResp {
        pub succeeded: bool,
        pub revision: i64,
    }
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct LeaseResp {
        #[serde(default)]
        pub lease: i64,
    }
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct RevisionResp {
        pub revision: i64,
    }
}

/// The agent's store: the API servers of `servers`, tried in order from the last one that
/// answered.
#[derive(Clone)]
pub struct RemoteStore {
    inner: Arc<Inner>,
}

struct Inner {
    servers: Vec<String>,
    credential: String,
    instance: String,
    http: reqwest::Client,
    /// Index of the server that answered last.
    current: AtomicUsize,
}

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStore")
            .field("servers", &self.inner.servers)
            .field("instance", &self.inner.instance)
            .finish_non_exhaustive()
    }
}

/// `http://a:7400,http://b:7400` (a bare `host:port` gets `http://`) → the URL list.
pub fn parse_servers(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let s = s.trim_end_matches('/');
            if s.contains("://") {
                s.to_string()
            } else {
                format!("http://{s}")
            }
        })
        .collect()
}

fn transport(e: &reqwest::Error) -> StoreError {
    StoreError::Unavailable(format!("API server unreachable: {e}"))
}

/// An error body → a store error (the server's `storeError`, or a refusal).
fn error_of(status: u16, body: &Value) -> StoreError {
    if let Some(e) = body
        .get("storeError")
        .and_then(|v| serde_json::from_value::<wire::Error>(v.clone()).ok())
    {
        return e.into();
    }
    let msg = body["error"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("HTTP {status}"));
    match status {
        401 => StoreError::Invalid(format!("{UNAUTHENTICATED}{msg}")),
        403 => StoreError::Invalid(format!("{DENIED}{msg}")),
        502..=504 => StoreError::Unavailable(msg),
        s if s >= 500 => StoreError::Unavailable(msg),
        _ => StoreError::Invalid(msg),
    }
}

impl RemoteStore {
    pub fn new(servers: Vec<String>, credential: &str, instance: &str) -> anyhow::Result<Self> {
        if servers.is_empty() {
            anyhow::bail!("no API server URL given (--server URL[,URL…])");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()?;
        Ok(RemoteStore {
            inner: Arc::new(Inner {
                servers,
                credential: credential.to_string(),
                instance: instance.to_string(),
                http,
                current: AtomicUsize::new(0),
            }),
        })
    }

    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    pub fn servers(&self) -> &[String] {
        &self.inner.servers
    }

    /// Send one request to the first server that answers (from the last good one); a
    /// server that is unreachable or answers 502-504 is skipped. Returns (status, body).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<(u16, reqwest::Response)> {
        let n = self.inner.servers.len();
        let start = self.inner.current.load(Ordering::Relaxed);
        let mut last = StoreError::Unavailable("no API server".into());
        for i in 0..n {
            let idx = (start + i) % n;
            let url = format!("{}{path}", self.inner.servers[idx]);
            let mut req = self
                .inner
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.inner.credential)
                .header(INSTANCE_HEADER, &self.inner.instance);
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if (502..=504).contains(&status) {
                        last = StoreError::Unavailable(format!("{url}: HTTP {status}"));
                        continue;
                    }
                    self.inner.current.store(idx, Ordering::Relaxed);
                    return Ok((status, resp));
                }
                Err(e) => last = transport(&e),
            }
        }
        Err(last)
    }

    /// A JSON request to an agent route; a non-2xx answer becomes a [`StoreError`].
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let (status, v) = self.call_status(method, path, body).await?;
        if !(200..300).contains(&status) {
            return Err(error_of(status, &v));
        }
        Ok(v)
    }

    /// A JSON request to an agent route: (status, body), whatever the status.
    pub async fn call_status(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let (status, resp) = self
            .send(method, path, body, Some(Duration::from_secs(30)))
            .await?;
        let bytes = resp.bytes().await.map_err(|e| transport(&e))?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, v))
    }

    async fn post<T: serde::de::DeserializeOwned>(&self, path: &str, body: Value) -> Result<T> {
        let v = self.call(reqwest::Method::POST, path, Some(&body)).await?;
        serde_json::from_value(v)
            .map_err(|e| StoreError::Corrupt(format!("unexpected answer from {path}: {e}")))
    }

    /// Open one watch stream from `from` on whichever server answers.
    async fn open_watch(
        &self,
        prefix: &str,
        from: i64,
    ) -> Result<futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>> {
        let body = serde_json::to_value(wire::WatchReq {
            prefix: prefix.to_string(),
            from_revision: from,
        })
        .expect("serializes");
        let (status, resp) = self
            .send(
                reqwest::Method::POST,
                "/v1/agent/store/watch",
                Some(&body),
                None,
            )
            .await?;
        if !(200..300).contains(&status) {
            let bytes = resp.bytes().await.map_err(|e| transport(&e))?;
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(error_of(status, &v));
        }
        Ok(resp.bytes_stream().boxed())
    }
}

#[async_trait]
impl Store for RemoteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let r: wire::GetResp = self
            .post("/v1/agent/store/get", json!({ "key": key }))
            .await?;
        r.kv.map(wire::Kv::into_kv).transpose()
    }

    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        let r: wire::RangeResp = self
            .post("/v1/agent/store/range", json!({ "prefix": prefix }))
            .await?;
        let kvs = r
            .kvs
            .into_iter()
            .map(wire::Kv::into_kv)
            .collect::<Result<Vec<_>>>()?;
        Ok((kvs, r.revision))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let body = serde_json::to_value(&txn)
            .map_err(|e| StoreError::Invalid(format!("transaction does not serialize: {e}")))?;
        let r: wire::TxnResp = self.post("/v1/agent/store/txn", body).await?;
        Ok(TxnResult {
            succeeded: r.succeeded,
            revision: r.revision,
        })
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        // The first connection is made here so that an immediate error (compacted, refused)
        // is this call's error; later breaks resume on any server from the last revision.
        let first = self.open_watch(prefix, from_revision).await?;
        let me = self.clone();
        let prefix = prefix.to_string();
        let state = (
            me,
            prefix,
            from_revision,
            Some(first),
            Vec::<u8>::new(),
            false,
        );
        let s = futures::stream::unfold(
            state,
            |(me, prefix, mut next, mut conn, mut buf, done)| async move {
                if done {
                    return None;
                }
                loop {
                    // A complete line in the buffer?
                    if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=pos).collect();
                        let line = &line[..line.len() - 1];
                        if line.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        let parsed: wire::WatchLine = match serde_json::from_slice(line) {
                            Ok(l) => l,
                            Err(e) => {
                                let err = StoreError::Corrupt(format!("bad watch line: {e}"));
                                return Some((Err(err), (me, prefix, next, None, buf, true)));
                            }
                        };
                        if let Some(e) = parsed.store_error {
                            let err: StoreError = e.into();
                            return Some((Err(err), (me, prefix, next, None, buf, true)));
                        }
                        if let Some(p) = parsed.progress {
                            next = next.max(p + 1);
                        }
                        if parsed.events.is_empty() {
                            continue;
                        }
                        let evs: Result<Vec<WatchEvent>> = parsed
                            .events
                            .into_iter()
                            .map(wire::Event::into_event)
                            .collect();
                        match evs {
                            Ok(evs) => {
                                if let Some(r) = evs.iter().map(|e| e.kv.mod_revision).max() {
                                    next = next.max(r + 1);
                                }
                                return Some((Ok(evs), (me, prefix, next, conn, buf, false)));
                            }
                            Err(e) => return Some((Err(e), (me, prefix, next, None, buf, true))),
                        }
                    }
                    // Read more, reconnecting (from `next`) when the connection broke.
                    let Some(c) = conn.as_mut() else {
                        buf.clear();
                        match me.open_watch(&prefix, next).await {
                            Ok(c) => conn = Some(c),
                            Err(StoreError::Unavailable(e)) => {
                                tracing::debug!(error = %e, "agent watch: no API server; retrying");
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                            Err(e) => return Some((Err(e), (me, prefix, next, None, buf, true))),
                        }
                        continue;
                    };
                    match c.next().await {
                        Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "agent watch broke; resuming");
                            conn = None;
                        }
                        None => conn = None,
                    }
                }
            },
        );
        Ok(s.boxed())
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<i64> {
        let r: wire::LeaseResp = self
            .post(
                "/v1/agent/store/lease/grant",
                json!({ "ttlMs": ttl.as_millis() as u64 }),
            )
            .await?;
        Ok(r.lease)
    }

    async fn lease_keep_alive(&self, lease: i64) -> Result<()> {
        let _: Value = self
            .post("/v1/agent/store/lease/keepalive", json!({ "lease": lease }))
            .await?;
        Ok(())
    }

    async fn lease_revoke(&self, lease: i64) -> Result<()> {
        let _: Value = self
            .post("/v1/agent/store/lease/revoke", json!({ "lease": lease }))
            .await?;
        Ok(())
    }

    async fn revision(&self) -> Result<i64> {
        let r: wire::RevisionResp = self.post("/v1/agent/store/revision", json!({})).await?;
        Ok(r.revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_parse_with_scheme_defaults() {
        assert_eq!(
            parse_servers("a:1, http://b:2/ ,https://c"),
            vec!["http://a:1", "http://b:2", "https://c"]
        );
        assert!(parse_servers(" , ").is_empty());
    }

    #[test]
    fn kv_round_trips_text_and_binary() {
        for value in [b"{\"a\":1}".to_vec(), vec![0xff, 0, 1]] {
            let kv = KeyValue {
                key: "/k".into(),
                value: value.clone(),
                create_revision: 1,
                mod_revision: 2,
                version: 3,
                lease: 4,
            };
            let w = wire::Kv::from(&kv);
            let back: wire::Kv = serde_json::from_value(serde_json::to_value(&w).unwrap()).unwrap();
            assert_eq!(back.into_kv().unwrap(), kv);
        }
    }

    #[test]
    fn refusals_map_to_invalid_with_prefix() {
        let e = error_of(403, &json!({"error": "no"}));
        assert!(is_denied(&e), "{e:?}");
        let e = error_of(
            410,
            &json!({"storeError": {"kind": "compacted", "requested": 1, "compacted": 5}}),
        );
        assert_eq!(
            e,
            StoreError::Compacted {
                requested: 1,
                compacted: 5
            }
        );
    }
}
