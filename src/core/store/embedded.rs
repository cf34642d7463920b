//! Embedded store: an in-memory ordered map made durable by an append-only write-ahead log.
//!
//! Layout of the data dir:
//! - `LOCK`: held with an exclusive `flock` while a store has the dir open.
//! - `snapshot`: full state as of the start of log `next_log_seq` (written via temp + rename).
//! - `wal-<seq>.log`: records `[u32 len][u32 crc32(payload)][payload]`, one per committed
//!   transaction / lease grant / lease revoke, fsync'd before the caller is answered.
//!
//! All mutations go through one writer thread. It evaluates a batch of queued requests against
//! the committed state plus an overlay of the batch's own effects, appends all resulting records
//! with a single `fdatasync` (group commit), and only then applies them to the shared state and
//! publishes watch events. Readers therefore never observe a write that is not yet durable.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use futures::Stream;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::{
    Compare, EventKind, KeyValue, Op, Result, Store, StoreError, Txn, TxnResult, WatchEvent,
    WatchStream,
};

const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_TMP: &str = "snapshot.tmp";
const LOCK_FILE: &str = "LOCK";
const SNAPSHOT_MAGIC: &[u8; 8] = b"BSNAPv01";
/// Upper bound for one record; anything larger in a length field is garbage.
const MAX_RECORD_BYTES: usize = 1 << 30;
/// Requests committed together with one fsync at most.
const MAX_BATCH: usize = 512;

/// Tunables; the defaults are what `open` uses. Tests shrink them to exercise edge cases.
#[derive(Debug, Clone)]
struct Options {
    /// Watch history kept in memory (events and key+value bytes, whichever limit hits first).
    history_max_events: usize,
    history_max_bytes: usize,
    /// Revisions a watcher may have buffered but not consumed before it is cut off.
    watch_buffer: usize,
    /// Snapshot once the log exceeds max(this, size of the last snapshot).
    snapshot_min_log_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            history_max_events: 100_000,
            // A put's event holds its value (a delete's, the value removed): 16 MiB is some
            // 10,000 task writes to resume a watch from, and a watcher further behind
            // re-lists. At 64 MiB the history was a quarter of the control plane's memory at
            // 10,000 tasks.
            history_max_bytes: 16 << 20,
            watch_buffer: 16_384,
            snapshot_min_log_bytes: 4 << 20,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Records and their binary encoding
// ---------------------------------------------------------------------------------------------

/// One durable state change. Txn ops are only the effective ones (no-op deletes are dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Record {
    Txn {
        revision: i64,
        ops: Vec<Op>,
    },
    LeaseGrant {
        id: i64,
        ttl_ms: u64,
    },
    /// Revoke (or expiry) of a lease: its keys are deleted at `revision` (unchanged if none).
    LeaseRevoke {
        id: i64,
        revision: i64,
        keys: Vec<String>,
    },
}

const TAG_TXN: u8 = 1;
const TAG_GRANT: u8 = 2;
const TAG_REVOKE: u8 = 3;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Dec { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() - self.pos < n {
            return Err(format!("truncated at byte {}", self.pos));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?).map_err(|_| "key is not UTF-8".to_string())
    }
    fn finish(&self) -> Result<(), String> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes", self.buf.len() - self.pos))
        }
    }
}

impl Record {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Txn { revision, ops } => {
                out.push(TAG_TXN);
                put_i64(out, *revision);
                put_u32(out, ops.len() as u32);
                for op in ops {
                    match op {
                        Op::Put { key, value, lease } => {
                            out.push(OP_PUT);
                            put_bytes(out, key.as_bytes());
                            put_bytes(out, value);
                            put_i64(out, *lease);
                        }
                        Op::Delete { key } => {
                            out.push(OP_DELETE);
                            put_bytes(out, key.as_bytes());
                        }
                    }
                }
            }
            Record::LeaseGrant { id, ttl_ms } => {
                out.push(TAG_GRANT);
                put_i64(out, *id);
                put_u64(out, *ttl_ms);
            }
            Record::LeaseRevoke { id, revision, keys } => {
                out.push(TAG_REVOKE);
                put_i64(out, *id);
                put_i64(out, *revision);
                put_u32(out, keys.len() as u32);
                for k in keys {
                    put_bytes(out, k.as_bytes());
                }
            }
        }
    }

    fn decode(buf: &[u8]) -> Result<Record, String> {
        let mut d = Dec::new(buf);
        let rec = match d.u8()? {
            TAG_TXN => {
                let revision = d.i64()?;
                let n = d.u32()? as usize;
                let mut ops = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    ops.push(match d.u8()? {
                        OP_PUT => Op::Put {
                            key: d.string()?,
                            value: d.bytes()?,
                            lease: d.i64()?,
                        },
                        OP_DELETE => Op::Delete { key: d.string()? },
                        t => return Err(format!("unknown op tag {t}")),
                    });
                }
                Record::Txn { revision, ops }
            }
            TAG_GRANT => Record::LeaseGrant {
                id: d.i64()?,
                ttl_ms: d.u64()?,
            },
            TAG_REVOKE => {
                let id = d.i64()?;
                let revision = d.i64()?;
                let n = d.u32()? as usize;
                let mut keys = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    keys.push(d.string()?);
                }
                Record::LeaseRevoke { id, revision, keys }
            }
            t => return Err(format!("unknown record tag {t}")),
        };
        d.finish()?;
        Ok(rec)
    }

    /// Append `[len][crc][payload]`.
    fn encode_framed(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0u8; 8]);
        self.encode(out);
        let len = (out.len() - start - 8) as u32;
        let crc = crc32fast::hash(&out[start + 8..]);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// The record framed at `pos`, if a complete and intact one is there.
fn parse_frame(data: &[u8], pos: usize) -> Option<(Record, usize)> {
    let header = data.get(pos..pos.checked_add(8)?)?;
    let len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().unwrap());
    if len == 0 || len > MAX_RECORD_BYTES {
        return None;
    }
    let payload = data.get(pos + 8..pos + 8 + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    Record::decode(payload).ok().map(|r| (r, pos + 8 + len))
}

/// Parse a log file. Returns the records and the length of the valid prefix. A bad record is a
/// torn tail (crash mid-append) only if no intact record follows it; otherwise it is corruption.
fn scan_log(data: &[u8], allow_torn_tail: bool) -> Result<(Vec<Record>, usize), String> {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        match parse_frame(data, pos) {
            Some((rec, next)) => {
                records.push(rec);
                pos = next;
            }
            None => {
                if let Some(p) = (pos + 1..data.len()).find(|&p| parse_frame(data, p).is_some()) {
                    return Err(format!(
                        "bad record at byte {pos} followed by an intact record at byte {p}"
                    ));
                }
                if !allow_torn_tail {
                    return Err(format!("bad record at byte {pos}"));
                }
                break;
            }
        }
    }
    Ok((records, pos))
}

// ---------------------------------------------------------------------------------------------
// In-memory state
// ---------------------------------------------------------------------------------------------

/// All events of one revision.
#[derive(Debug)]
struct EventGroup {
    revision: i64,
    events: Vec<WatchEvent>,
}

impl EventGroup {
    fn bytes(&self) -> usize {
        self.events
            .iter()
            .map(|e| {
                e.kv.key.len()
                    + e.kv.value.len()
                    + e.prev.as_ref().map_or(0, |p| p.key.len() + p.value.len())
                    + 64
            })
            .sum()
    }
    fn matches(&self, prefix: &str) -> bool {
        self.events.iter().any(|e| e.kv.key.starts_with(prefix))
    }
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

struct WatcherEntry {
    prefix: String,
    min_revision: i64,
    tx: tokio::sync::mpsc::Sender<Arc<EventGroup>>,
    /// Set to the first revision that did not fit in the buffer.
    overflow: Arc<AtomicI64>,
}

struct State {
    opts: Options,
    kv: BTreeMap<String, KeyValue>,
    /// Current store revision; 1 for an empty store, like etcd.
    revision: i64,
    leases: HashMap<i64, Lease>,
    next_lease_id: i64,
    history: VecDeque<Arc<EventGroup>>,
    history_events: usize,
    history_bytes: usize,
    /// Revisions <= this are not in `history`.
    compacted: i64,
    watchers: HashMap<u64, WatcherEntry>,
    next_watcher_id: u64,
    /// The writer has stopped: no more writes, watch streams have ended.
    closed: bool,
}

fn tombstone(key: String, revision: i64) -> KeyValue {
    KeyValue {
        key,
        value: Vec::new(),
        create_revision: 0,
        mod_revision: revision,
        version: 0,
        lease: 0,
    }
}

impl State {
    fn new(opts: Options) -> Self {
        State {
            opts,
            kv: BTreeMap::new(),
            revision: 1,
            leases: HashMap::new(),
            next_lease_id: 1,
            history: VecDeque::new(),
            history_events: 0,
            history_bytes: 0,
            compacted: 0,
            watchers: HashMap::new(),
            next_watcher_id: 1,
            closed: false,
        }
    }

    fn detach(&mut self, key: &str, lease: i64) {
        if lease != 0 {
            if let Some(l) = self.leases.get_mut(&lease) {
                l.keys.remove(key);
            }
        }
    }

    fn apply_put(
        &mut self,
        key: &str,
        value: &[u8],
        lease: i64,
        rev: i64,
    ) -> Result<WatchEvent, String> {
        if lease != 0 && !self.leases.contains_key(&lease) {
            return Err(format!("put of {key:?} with unknown lease {lease}"));
        }
        // (lease, create revision, version) of the value replaced. A put's event carries no
        // previous value (only a delete's does): cloning it cost a copy per write and doubled
        // the watch history's memory.
        let prev = self
            .kv
            .get(key)
            .map(|p| (p.lease, p.create_revision, p.version));
        if let Some((old_lease, _, _)) = prev {
            if old_lease != lease {
                self.detach(key, old_lease);
            }
        }
        if lease != 0 {
            self.leases
                .get_mut(&lease)
                .unwrap()
                .keys
                .insert(key.to_string());
        }
        let kv = KeyValue {
            key: key.to_string(),
            value: value.to_vec(),
            create_revision: prev.map_or(rev, |p| p.1),
            mod_revision: rev,
            version: prev.map_or(1, |p| p.2 + 1),
            lease,
        };
        self.kv.insert(key.to_string(), kv.clone());
        Ok(WatchEvent {
            kind: EventKind::Put,
            kv,
            prev: None,
        })
    }

    fn apply_delete(&mut self, key: &str, rev: i64) -> Result<WatchEvent, String> {
        let prev = self
            .kv
            .remove(key)
            .ok_or_else(|| format!("delete of missing key {key:?}"))?;
        self.detach(key, prev.lease);
        Ok(WatchEvent {
            kind: EventKind::Delete,
            kv: tombstone(key.to_string(), rev),
            prev: Some(prev),
        })
    }

    fn check_next_revision(&self, revision: i64) -> Result<(), String> {
        if revision != self.revision + 1 {
            return Err(format!(
                "record revision {revision} does not follow store revision {}",
                self.revision
            ));
        }
        Ok(())
    }

    /// Apply one record; returns the events it produced (none for lease grants / empty revokes).
    fn apply(&mut self, rec: &Record, now: Instant) -> Result<Option<EventGroup>, String> {
        match rec {
            Record::Txn { revision, ops } => {
                self.check_next_revision(*revision)?;
                let mut events = Vec::with_capacity(ops.len());
                for op in ops {
                    events.push(match op {
                        Op::Put { key, value, lease } => {
                            self.apply_put(key, value, *lease, *revision)?
                        }
                        Op::Delete { key } => self.apply_delete(key, *revision)?,
                    });
                }
                self.revision = *revision;
                Ok(Some(EventGroup {
                    revision: *revision,
                    events,
                }))
            }
            Record::LeaseGrant { id, ttl_ms } => {
                let ttl = Duration::from_millis(*ttl_ms);
                let lease = Lease {
                    ttl,
                    deadline: now + ttl,
                    keys: BTreeSet::new(),
                };
                if self.leases.insert(*id, lease).is_some() {
                    return Err(format!("lease {id} granted twice"));
                }
                self.next_lease_id = self.next_lease_id.max(id + 1);
                Ok(None)
            }
            Record::LeaseRevoke { id, revision, keys } => {
                if !self.leases.contains_key(id) {
                    return Err(format!("revoke of unknown lease {id}"));
                }
                if keys.is_empty() {
                    self.leases.remove(id);
                    return Ok(None);
                }
                self.check_next_revision(*revision)?;
                let mut events = Vec::with_capacity(keys.len());
                for k in keys {
                    events.push(self.apply_delete(k, *revision)?);
                }
                self.leases.remove(id);
                self.revision = *revision;
                Ok(Some(EventGroup {
                    revision: *revision,
                    events,
                }))
            }
        }
    }

    /// Record events in the history ring and hand them to matching watchers.
    fn publish(&mut self, group: EventGroup) {
        let group = Arc::new(group);
        self.history_events += group.events.len();
        self.history_bytes += group.bytes();
        self.history.push_back(group.clone());
        while (self.history_events > self.opts.history_max_events
            || self.history_bytes > self.opts.history_max_bytes)
            && self.history.len() > 1
        {
            let old = self.history.pop_front().unwrap();
            self.history_events -= old.events.len();
            self.history_bytes -= old.bytes();
            self.compacted = old.revision;
        }
        self.watchers.retain(|_, w| {
            if group.revision < w.min_revision || !group.matches(&w.prefix) {
                return true;
            }
            match w.tx.try_send(group.clone()) {
                Ok(()) => true,
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                    // Never block the writer and never skip silently: cut the watcher off so
                    // its stream ends with Compacted and the caller re-lists.
                    w.overflow.store(group.revision, Ordering::SeqCst);
                    false
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    fn encode_snapshot(&self, next_log_seq: u64) -> Vec<u8> {
        let mut body = Vec::new();
        put_u64(&mut body, next_log_seq);
        put_i64(&mut body, self.revision);
        put_i64(&mut body, self.next_lease_id);
        let mut leases: Vec<_> = self.leases.iter().collect();
        leases.sort_by_key(|(id, _)| **id);
        put_u32(&mut body, leases.len() as u32);
        for (id, l) in leases {
            put_i64(&mut body, *id);
            put_u64(&mut body, l.ttl.as_millis() as u64);
        }
        put_u64(&mut body, self.kv.len() as u64);
        for kv in self.kv.values() {
            put_bytes(&mut body, kv.key.as_bytes());
            put_bytes(&mut body, &kv.value);
            put_i64(&mut body, kv.create_revision);
            put_i64(&mut body, kv.mod_revision);
            put_i64(&mut body, kv.version);
            put_i64(&mut body, kv.lease);
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        put_u32(&mut out, crc32fast::hash(&body));
        out.extend_from_slice(&body);
        out
    }

    /// Returns the state and the sequence number of the first log that follows the snapshot.
    fn decode_snapshot(data: &[u8], opts: Options, now: Instant) -> Result<(State, u64), String> {
        if data.len() < 12 || &data[..8] != SNAPSHOT_MAGIC {
            return Err("not a berth snapshot".into());
        }
        let crc = u32::from_le_bytes(data[8..12].try_into().unwrap());
        let body = &data[12..];
        if crc32fast::hash(body) != crc {
            return Err("snapshot checksum mismatch".into());
        }
        let mut d = Dec::new(body);
        let mut st = State::new(opts);
        let next_log_seq = d.u64()?;
        st.revision = d.i64()?;
        st.next_lease_id = d.i64()?;
        for _ in 0..d.u32()? {
            let id = d.i64()?;
            let ttl = Duration::from_millis(d.u64()?);
            st.leases.insert(
                id,
                Lease {
                    ttl,
                    deadline: now + ttl,
                    keys: BTreeSet::new(),
                },
            );
        }
        for _ in 0..d.u64()? {
            let kv = KeyValue {
                key: d.string()?,
                value: d.bytes()?,
                create_revision: d.i64()?,
                mod_revision: d.i64()?,
                version: d.i64()?,
                lease: d.i64()?,
            };
            if kv.lease != 0 {
                st.leases
                    .get_mut(&kv.lease)
                    .ok_or_else(|| format!("key {:?} has unknown lease {}", kv.key, kv.lease))?
                    .keys
                    .insert(kv.key.clone());
            }
            st.kv.insert(kv.key.clone(), kv);
        }
        d.finish()?;
        Ok((st, next_log_seq))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not wedge the store; the state itself is only mutated by apply().
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Batch evaluation (writer side)
// ---------------------------------------------------------------------------------------------

/// Committed state plus the not-yet-durable effects of the batch being evaluated.
struct Pending<'a> {
    st: &'a State,
    kv: HashMap<String, Option<KeyValue>>,
    /// true = granted in this batch, false = revoked in this batch.
    leases: HashMap<i64, bool>,
    revision: i64,
    next_lease_id: i64,
}

impl<'a> Pending<'a> {
    fn new(st: &'a State) -> Self {
        Pending {
            st,
            kv: HashMap::new(),
            leases: HashMap::new(),
            revision: st.revision,
            next_lease_id: st.next_lease_id,
        }
    }

    fn get(&self, key: &str) -> Option<&KeyValue> {
        match self.kv.get(key) {
            Some(v) => v.as_ref(),
            None => self.st.kv.get(key),
        }
    }

    fn lease_exists(&self, id: i64) -> bool {
        match self.leases.get(&id) {
            Some(exists) => *exists,
            None => self.st.leases.contains_key(&id),
        }
    }

    fn txn(&mut self, txn: Txn) -> Result<(TxnResult, Option<Record>)> {
        let succeeded = txn.compares.iter().all(|c| match c {
            Compare::ModRevision { key, revision } => {
                self.get(key).map_or(0, |kv| kv.mod_revision) == *revision
            }
        });
        let ops = if succeeded { txn.success } else { txn.failure };
        for op in &ops {
            if let Op::Put { lease, .. } = op {
                if *lease != 0 && !self.lease_exists(*lease) {
                    return Err(StoreError::LeaseNotFound(*lease));
                }
            }
        }
        let rev = self.revision + 1;
        let mut effective = Vec::with_capacity(ops.len());
        for op in ops {
            match &op {
                Op::Put { key, value, lease } => {
                    let prev = self.get(key);
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: prev.map_or(rev, |p| p.create_revision),
                        mod_revision: rev,
                        version: prev.map_or(1, |p| p.version + 1),
                        lease: *lease,
                    };
                    self.kv.insert(key.clone(), Some(kv));
                }
                Op::Delete { key } => {
                    if self.get(key).is_none() {
                        continue; // deleting a missing key is a no-op, as in etcd
                    }
                    self.kv.insert(key.clone(), None);
                }
            }
            effective.push(op);
        }
        if effective.is_empty() {
            return Ok((
                TxnResult {
                    succeeded,
                    revision: self.revision,
                },
                None,
            ));
        }
        self.revision = rev;
        Ok((
            TxnResult {
                succeeded,
                revision: rev,
            },
            Some(Record::Txn {
                revision: rev,
                ops: effective,
            }),
        ))
    }

    fn grant(&mut self, ttl: Duration) -> Result<(i64, Record)> {
        let ttl_ms = ttl.as_millis();
        if ttl_ms == 0 || ttl_ms > u64::MAX as u128 {
            return Err(StoreError::Invalid(format!("bad lease TTL {ttl:?}")));
        }
        let id = self.next_lease_id;
        self.next_lease_id += 1;
        self.leases.insert(id, true);
        Ok((
            id,
            Record::LeaseGrant {
                id,
                ttl_ms: ttl_ms as u64,
            },
        ))
    }

    /// Keys currently attached to `id`, taking this batch's writes into account.
    fn lease_keys(&self, id: i64) -> Vec<String> {
        let mut keys = BTreeSet::new();
        if let Some(l) = self.st.leases.get(&id) {
            keys.extend(l.keys.iter().filter(|k| !self.kv.contains_key(*k)).cloned());
        }
        for (k, v) in &self.kv {
            if v.as_ref().is_some_and(|kv| kv.lease == id) {
                keys.insert(k.clone());
            }
        }
        keys.into_iter().collect()
    }

    fn revoke(&mut self, id: i64, expired_only: bool, now: Instant) -> Result<Option<Record>> {
        if !self.lease_exists(id) {
            return if expired_only {
                Ok(None)
            } else {
                Err(StoreError::LeaseNotFound(id))
            };
        }
        if expired_only && self.st.leases.get(&id).is_some_and(|l| l.deadline > now) {
            return Ok(None);
        }
        let keys = self.lease_keys(id);
        for k in &keys {
            self.kv.insert(k.clone(), None);
        }
        self.leases.insert(id, false);
        if !keys.is_empty() {
            self.revision += 1;
        }
        Ok(Some(Record::LeaseRevoke {
            id,
            revision: self.revision,
            keys,
        }))
    }
}

/// Reject what etcd rejects: empty keys and a key put twice or both put and deleted in a branch.
fn validate_txn(txn: &Txn) -> Result<()> {
    for branch in [&txn.success, &txn.failure] {
        let mut puts = HashSet::new();
        let mut dels = HashSet::new();
        for op in branch.iter() {
            let key = op.key();
            if key.is_empty() {
                return Err(StoreError::Invalid("key not provided".into()));
            }
            let dup = match op {
                Op::Put { .. } => !puts.insert(key) || dels.contains(key),
                Op::Delete { .. } => {
                    dels.insert(key);
                    puts.contains(key)
                }
            };
            if dup {
                return Err(StoreError::Invalid(format!(
                    "duplicate key given in txn request: {key:?}"
                )));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Write-ahead log files
// ---------------------------------------------------------------------------------------------

fn log_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("wal-{seq:016x}.log"))
}

fn list_logs(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(hex) = name
            .strip_prefix("wal-")
            .and_then(|s| s.strip_suffix(".log"))
        {
            if let Ok(seq) = u64::from_str_radix(hex, 16) {
                seqs.push(seq);
            }
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

struct Wal {
    dir: PathBuf,
    file: File,
    seq: u64,
    size: u64,
    snapshot_size: u64,
    snapshot_min_log_bytes: u64,
}

impl Wal {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)?;
        self.file.sync_data()?;
        self.size += buf.len() as u64;
        Ok(())
    }

    fn wants_snapshot(&self) -> bool {
        self.size > self.snapshot_min_log_bytes.max(self.snapshot_size)
    }

    /// Write `snapshot` (encoded for log `seq + 1`) and switch to that fresh log. The new log
    /// exists before the snapshot is renamed into place, so every crash point replays correctly.
    fn rotate(&mut self, snapshot: &[u8]) -> io::Result<()> {
        let next = self.seq + 1;
        let new_file = private_file(&log_path(&self.dir, next))?;
        new_file.sync_all()?;
        sync_dir(&self.dir)?;
        let tmp = self.dir.join(SNAPSHOT_TMP);
        {
            let mut f = private_file(&tmp)?;
            f.write_all(snapshot)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join(SNAPSHOT_FILE))?;
        // From here on the snapshot may be the durable truth: always continue in the new log.
        let old = std::mem::replace(&mut self.file, new_file);
        drop(old);
        let old_seq = std::mem::replace(&mut self.seq, next);
        self.size = 0;
        self.snapshot_size = snapshot.len() as u64;
        sync_dir(&self.dir)?;
        if let Err(e) = fs::remove_file(log_path(&self.dir, old_seq)) {
            // Harmless: the next open removes logs older than the snapshot.
            tracing::warn!("removing old write-ahead log {old_seq}: {e}");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Writer thread
// ---------------------------------------------------------------------------------------------

enum Request {
    Txn {
        txn: Txn,
        reply: oneshot::Sender<Result<TxnResult>>,
    },
    Grant {
        ttl: Duration,
        reply: oneshot::Sender<Result<i64>>,
    },
    Revoke {
        id: i64,
        /// Sent by the expiry task: revoke only if still expired, and a missing lease is fine.
        expired_only: bool,
        reply: oneshot::Sender<Result<()>>,
    },
}

enum Reply {
    Txn(oneshot::Sender<Result<TxnResult>>, Result<TxnResult>),
    Grant(oneshot::Sender<Result<i64>>, Result<i64>),
    Revoke(oneshot::Sender<Result<()>>, Result<()>),
}

impl Reply {
    fn send(self) {
        // The caller may have given up waiting; the outcome stands either way.
        match self {
            Reply::Txn(tx, r) => drop(tx.send(r)),
            Reply::Grant(tx, r) => drop(tx.send(r)),
            Reply::Revoke(tx, r) => drop(tx.send(r)),
        }
    }
    fn fail(self, e: StoreError) -> Reply {
        match self {
            Reply::Txn(tx, _) => Reply::Txn(tx, Err(e)),
            Reply::Grant(tx, _) => Reply::Grant(tx, Err(e)),
            Reply::Revoke(tx, _) => Reply::Revoke(tx, Err(e)),
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Set once the writer has failed: nothing more will be written by this process.
    failed: Mutex<Option<String>>,
    /// Wakes the lease expiry task (new lease, or store closing).
    lease_wake: Notify,
}

struct Writer {
    shared: Arc<Shared>,
    wal: Wal,
    /// After an I/O error nothing more is written: the file may hold a partial record.
    failed: Option<String>,
}

/// Marks the store closed when the writer thread exits, even by panic, so watch streams end.
struct CloseOnExit(Arc<Shared>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        let mut st = lock(&self.0.state);
        st.closed = true;
        st.watchers.clear();
        drop(st);
        self.0.lease_wake.notify_one();
    }
}

impl Writer {
    fn fail(&mut self, msg: &str) {
        self.failed = Some(msg.to_string());
        *lock(&self.shared.failed) = Some(msg.to_string());
    }

    fn run(mut self, rx: mpsc::Receiver<Request>) {
        let _close = CloseOnExit(self.shared.clone());
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.process(batch);
        }
    }

    fn process(&mut self, batch: Vec<Request>) {
        let mut replies = Vec::with_capacity(batch.len());
        if let Some(err) = &self.failed {
            let e = StoreError::Io(format!("store is failed after an earlier error: {err}"));
            for req in batch {
                let reply = match req {
                    Request::Txn { reply, .. } => Reply::Txn(reply, Err(e.clone())),
                    Request::Grant { reply, .. } => Reply::Grant(reply, Err(e.clone())),
                    Request::Revoke { reply, .. } => Reply::Revoke(reply, Err(e.clone())),
                };
                reply.send();
            }
            return;
        }

        // 1. Evaluate against committed state + overlay.
        let mut records = Vec::new();
        let now = Instant::now();
        {
            let st = lock(&self.shared.state);
            let mut p = Pending::new(&st);
            for req in batch {
                match req {
                    Request::Txn { txn, reply } => {
                        let r = p.txn(txn).map(|(res, rec)| {
                            records.extend(rec);
                            res
                        });
                        replies.push(Reply::Txn(reply, r));
                    }
                    Request::Grant { ttl, reply } => {
                        let r = p.grant(ttl).map(|(id, rec)| {
                            records.push(rec);
                            id
                        });
                        replies.push(Reply::Grant(reply, r));
                    }
                    Request::Revoke {
                        id,
                        expired_only,
                        reply,
                    } => {
                        let r = p.revoke(id, expired_only, now).map(|rec| {
                            records.extend(rec);
                        });
                        replies.push(Reply::Revoke(reply, r));
                    }
                }
            }
        }

        // 2. Make it durable (one write + one fdatasync for the whole batch).
        if !records.is_empty() {
            let mut buf = Vec::new();
            for rec in &records {
                rec.encode_framed(&mut buf);
            }
            if let Err(e) = self.wal.append(&buf) {
                let msg = format!("write-ahead log append failed: {e}");
                tracing::error!("{msg}");
                self.fail(&msg);
                for r in replies {
                    r.fail(StoreError::Io(msg.clone())).send();
                }
                return;
            }
        }

        // 3. Apply and publish, then answer.
        let mut granted = false;
        {
            let mut st = lock(&self.shared.state);
            let now = Instant::now();
            for rec in &records {
                granted |= matches!(rec, Record::LeaseGrant { .. });
                match st.apply(rec, now) {
                    Ok(Some(group)) => st.publish(group),
                    Ok(None) => {}
                    Err(e) => {
                        // Evaluation and apply disagree: a bug. Stop writing rather than diverge.
                        let msg = format!("internal store error applying committed record: {e}");
                        tracing::error!("{msg}");
                        // (Not `self.fail`: `st` still borrows the shared state.)
                        self.failed = Some(msg.clone());
                        *lock(&self.shared.failed) = Some(msg.clone());
                        replies = replies
                            .into_iter()
                            .map(|r| r.fail(StoreError::Io(msg.clone())))
                            .collect();
                        break;
                    }
                }
            }
        }
        if granted {
            self.shared.lease_wake.notify_one();
        }
        for r in replies {
            r.send();
        }

        if self.wal.wants_snapshot() {
            let began = std::time::Instant::now();
            let snapshot = lock(&self.shared.state).encode_snapshot(self.wal.seq + 1);
            let encoded = began.elapsed();
            if let Err(e) = self.wal.rotate(&snapshot) {
                // The old log is still complete; keep appending and retry after the next batch.
                tracing::warn!("embedded store snapshot failed: {e}");
            }
            tracing::debug!(
                bytes = snapshot.len(),
                encode_ms = encoded.as_millis() as u64,
                total_ms = began.elapsed().as_millis() as u64,
                "embedded store snapshot"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

struct Inner {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    expiry_started: AtomicBool,
    dir: PathBuf,
    /// Held (flock) for the lifetime of the store; released after the writer has exited.
    _lock: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
        self.shared.lease_wake.notify_one();
    }
}

/// The embedded, single-process store (`berth up`). See the module docs for the on-disk format.
///
/// The data dir is locked while open; opening it twice (even in one process) fails. Dropping
/// the store waits for in-flight writes and releases the lock.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

/// What the embedded store holds in memory beside the keys themselves: the watch history is
/// a ring bounded by event count and bytes, so memory follows the cluster's size, not its age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedStats {
    pub keys: usize,
    pub leases: usize,
    pub watchers: usize,
    pub history_events: usize,
    pub history_bytes: usize,
    /// Revisions at or below this are no longer in the history (a watch from them re-lists).
    pub compacted: i64,
    pub revision: i64,
}

impl EmbeddedStore {
    /// Sizes of the in-memory state (for benchmarks and the bound's tests).
    pub fn stats(&self) -> EmbeddedStats {
        let st = lock(&self.inner.shared.state);
        EmbeddedStats {
            keys: st.kv.len(),
            leases: st.leases.len(),
            watchers: st.watchers.len(),
            history_events: st.history_events,
            history_bytes: st.history_bytes,
            compacted: st.compacted,
            revision: st.revision,
        }
    }

    /// Open (creating if needed) the store in `dir`, replaying its snapshot and log.
    /// The directory is made private (0700) and every store file must be (0600): they hold
    /// the server key that every secret is derived from.
    pub fn open(dir: impl AsRef<Path>) -> anyhow::Result<Self> {
        Self::open_with(dir.as_ref(), Options::default())
    }

    fn open_with(dir: &Path, opts: Options) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating store dir {}", dir.display()))?;
        check_private(dir)?;
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .with_context(|| format!("opening {}", dir.join(LOCK_FILE).display()))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                anyhow::bail!("store dir {} is in use by another store", dir.display())
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", dir.display()))
            }
        }
        let _ = fs::remove_file(dir.join(SNAPSHOT_TMP));

        let now = Instant::now();
        let (mut st, next_seq, snapshot_size) = match fs::read(dir.join(SNAPSHOT_FILE)) {
            Ok(data) => {
                let (st, seq) = State::decode_snapshot(&data, opts.clone(), now)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(SNAPSHOT_FILE).display()))?;
                (st, seq, data.len() as u64)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (State::new(opts.clone()), 0, 0),
            Err(e) => return Err(e).context("reading snapshot"),
        };

        let mut live = Vec::new();
        for seq in list_logs(dir)? {
            if seq < next_seq {
                // Fully covered by the snapshot (crash between snapshot and cleanup).
                fs::remove_file(log_path(dir, seq))?;
            } else {
                live.push(seq);
            }
        }
        // Empty logs after the newest non-empty one (left by a failed snapshot attempt) carry
        // nothing; dropping them keeps "only the last log may have a torn tail" true.
        while live.len() > 1 && fs::metadata(log_path(dir, *live.last().unwrap()))?.len() == 0 {
            fs::remove_file(log_path(dir, live.pop().unwrap()))?;
        }
        if live.is_empty() {
            private_file(&log_path(dir, next_seq))?.sync_all()?;
            sync_dir(dir)?;
            live.push(next_seq);
        }
        let mut log_size = 0;
        for (i, &seq) in live.iter().enumerate() {
            let path = log_path(dir, seq);
            let is_last = i + 1 == live.len();
            let data = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let (records, valid) = scan_log(&data, is_last)
                .map_err(|e| anyhow::anyhow!("{} is corrupt: {e}", path.display()))?;
            for rec in &records {
                st.apply(rec, now)
                    .map_err(|e| anyhow::anyhow!("{} is inconsistent: {e}", path.display()))?;
            }
            if valid < data.len() {
                tracing::warn!(
                    "{}: dropping {} bytes of torn tail (crash during a write)",
                    path.display(),
                    data.len() - valid
                );
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(valid as u64)?;
                f.sync_all()?;
            }
            log_size = valid as u64;
        }
        // Watch history does not survive a restart: every revision that produced events is gone
        // (a never-written store, revision 1, has none).
        st.compacted = if st.revision > 1 { st.revision } else { 0 };

        let seq = *live.last().unwrap();
        let file = OpenOptions::new().append(true).open(log_path(dir, seq))?;
        let wal = Wal {
            dir: dir.to_path_buf(),
            file,
            seq,
            size: log_size,
            snapshot_size,
            snapshot_min_log_bytes: opts.snapshot_min_log_bytes,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(st),
            failed: Mutex::new(None),
            lease_wake: Notify::new(),
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            shared: shared.clone(),
            wal,
            failed: None,
        };
        let handle = std::thread::Builder::new()
            .name("berth-store-writer".into())
            .spawn(move || writer.run(rx))?;
        let store = EmbeddedStore {
            inner: Arc::new(Inner {
                shared,
                tx: Some(tx),
                writer: Some(handle),
                expiry_started: AtomicBool::new(false),
                dir: dir.to_path_buf(),
                _lock: lock_file,
            }),
        };
        store.ensure_expiry_task();
        Ok(store)
    }

    /// The lease expiry task needs a tokio runtime; `open` may run outside one, so start it on
    /// first use from async code.
    fn ensure_expiry_task(&self) {
        if self.inner.expiry_started.load(Ordering::Acquire) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            if !self.inner.expiry_started.swap(true, Ordering::AcqRel) {
                rt.spawn(expiry_loop(
                    Arc::downgrade(&self.inner),
                    self.inner.shared.clone(),
                ));
            }
        }
    }

    fn send(&self, req: Request) -> Result<()> {
        self.inner
            .tx
            .as_ref()
            .expect("sender present until drop")
            .send(req)
            .map_err(|_| StoreError::Unavailable("embedded store writer has stopped".into()))
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request,
    ) -> Result<T> {
        self.ensure_expiry_task();
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("embedded store writer has stopped".into()))?
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.shared.state)
    }
}

async fn expiry_loop(inner: Weak<Inner>, shared: Arc<Shared>) {
    loop {
        let now = Instant::now();
        let (expired, next) = {
            let st = lock(&shared.state);
            if st.closed {
                return;
            }
            let mut expired = Vec::new();
            let mut next: Option<Instant> = None;
            for (id, l) in &st.leases {
                if l.deadline <= now {
                    expired.push(*id);
                } else {
                    next = Some(next.map_or(l.deadline, |n| n.min(l.deadline)));
                }
            }
            (expired, next)
        };
        let mut failed = false;
        for id in expired {
            // Hold the store only while enqueueing, so dropping it is never delayed by us.
            let rx = {
                let Some(inner) = inner.upgrade() else { return };
                let (tx, rx) = oneshot::channel();
                let req = Request::Revoke {
                    id,
                    expired_only: true,
                    reply: tx,
                };
                match inner.tx.as_ref().map(|t| t.send(req)) {
                    Some(Ok(())) => rx,
                    _ => return,
                }
            };
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!("expiring lease {id} failed: {e}");
                    failed = true;
                }
                Err(_) => return,
            }
        }
        if inner.strong_count() == 0 {
            return;
        }
        let wake = if failed {
            now + Duration::from_secs(1)
        } else {
            next.unwrap_or(now + Duration::from_secs(3600))
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = shared.lease_wake.notified() => {}
        }
    }
}

/// Unregisters its watcher when the stream is dropped.
struct WatchRegistration {
    shared: Weak<Shared>,
    id: u64,
}

impl Drop for WatchRegistration {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            lock(&shared.state).watchers.remove(&self.id);
        }
    }
}

struct EmbeddedWatch {
    prefix: String,
    backlog: VecDeque<Arc<EventGroup>>,
    rx: tokio::sync::mpsc::Receiver<Arc<EventGroup>>,
    overflow: Arc<AtomicI64>,
    last_revision: i64,
    done: bool,
    _registration: WatchRegistration,
}

impl Stream for EmbeddedWatch {
    type Item = Result<Vec<WatchEvent>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            let group = match this.backlog.pop_front() {
                Some(g) => g,
                None => match this.rx.poll_recv(cx) {
                    Poll::Ready(Some(g)) => g,
                    Poll::Ready(None) => {
                        this.done = true;
                        let dropped = this.overflow.load(Ordering::SeqCst);
                        let err = if dropped > 0 {
                            StoreError::Compacted {
                                requested: this.last_revision + 1,
                                compacted: dropped + 1,
                            }
                        } else {
                            StoreError::Unavailable("embedded store closed".into())
                        };
                        return Poll::Ready(Some(Err(err)));
                    }
                    Poll::Pending => return Poll::Pending,
                },
            };
            let events: Vec<WatchEvent> = group
                .events
                .iter()
                .filter(|e| e.kv.key.starts_with(&this.prefix))
                .cloned()
                .collect();
            if events.is_empty() {
                continue;
            }
            this.last_revision = group.revision;
            return Poll::Ready(Some(Ok(events)));
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn failure(&self) -> Option<String> {
        lock(&self.inner.shared.failed).clone()
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.ensure_expiry_task();
        Ok(self.state().kv.get(key).cloned())
    }

    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        self.ensure_expiry_task();
        let st = self.state();
        let kvs = st
            .kv
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        Ok((kvs, st.revision))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        validate_txn(&txn)?;
        // `BERTH_LOG=berth_core::store::embedded=trace` shows who writes what (write loops).
        for op in &txn.success {
            tracing::trace!(key = op.key(), "write");
        }
        self.request(|reply| Request::Txn { txn, reply }).await
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        self.ensure_expiry_task();
        let mut st = self.state();
        if st.closed {
            return Err(StoreError::Unavailable("embedded store closed".into()));
        }
        let from = if from_revision <= 0 {
            st.revision + 1
        } else {
            from_revision
        };
        if from <= st.compacted {
            return Err(StoreError::Compacted {
                requested: from,
                compacted: st.compacted + 1,
            });
        }
        let start = st.history.partition_point(|g| g.revision < from);
        let backlog: VecDeque<_> = st
            .history
            .iter()
            .skip(start)
            .filter(|g| g.matches(prefix))
            .cloned()
            .collect();
        let (tx, rx) = tokio::sync::mpsc::channel(st.opts.watch_buffer.max(1));
        let overflow = Arc::new(AtomicI64::new(0));
        let id = st.next_watcher_id;
        st.next_watcher_id += 1;
        // History covers everything up to the current revision; live events start after it.
        let min_revision = from.max(st.revision + 1);
        st.watchers.insert(
            id,
            WatcherEntry {
                prefix: prefix.to_string(),
                min_revision,
                tx,
                overflow: overflow.clone(),
            },
        );
        drop(st);
        Ok(Box::pin(EmbeddedWatch {
            prefix: prefix.to_string(),
            backlog,
            rx,
            overflow,
            last_revision: from - 1,
            done: false,
            _registration: WatchRegistration {
                shared: Arc::downgrade(&self.inner.shared),
                id,
            },
        }))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<i64> {
        self.request(|reply| Request::Grant { ttl, reply }).await
    }

    async fn lease_keep_alive(&self, lease: i64) -> Result<()> {
        self.ensure_expiry_task();
        let mut st = self.state();
        let now = Instant::now();
        match st.leases.get_mut(&lease) {
            // Like etcd, an expired lease cannot be renewed even before its keys are gone.
            Some(l) if l.deadline > now => {
                l.deadline = now + l.ttl;
                Ok(())
            }
            _ => Err(StoreError::LeaseNotFound(lease)),
        }
    }

    async fn lease_revoke(&self, lease: i64) -> Result<()> {
        self.request(|reply| Request::Revoke {
            id: lease,
            expired_only: false,
            reply,
        })
        .await
    }

    async fn revision(&self) -> Result<i64> {
        self.ensure_expiry_task();
        Ok(self.state().revision)
    }
}

/// Create (or truncate) a store file readable by its owner only.
fn private_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Make the data directory private and refuse store files others can read: they hold the
/// server key (anyone who reads it can derive every secret and become admin).
fn check_private(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making store dir {} private", dir.display()))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_file() && mode & 0o077 != 0 && entry.file_name() != LOCK_FILE {
            anyhow::bail!(
                "store file {} is readable by other users (mode {mode:o}) and holds the server key; \
                 run `chmod 600 {}/*` (and rotate credentials if others may have read it)",
                entry.path().display(),
                dir.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn put(k: &str, v: &str) -> Op {
        Op::put(k, v.as_bytes().to_vec())
    }

    #[test]
    fn record_roundtrip() {
        let recs = vec![
            Record::Txn {
                revision: 7,
                ops: vec![
                    put("a", "1"),
                    Op::delete("b"),
                    Op::put_with_lease("c", vec![], 3),
                ],
            },
            Record::LeaseGrant {
                id: 3,
                ttl_ms: 2000,
            },
            Record::LeaseRevoke {
                id: 3,
                revision: 8,
                keys: vec!["c".into()],
            },
        ];
        let mut buf = Vec::new();
        for r in &recs {
            r.encode_framed(&mut buf);
        }
        let (got, valid) = scan_log(&buf, true).unwrap();
        assert_eq!(got, recs);
        assert_eq!(valid, buf.len());
    }

    #[test]
    fn torn_tail_is_dropped_but_middle_corruption_is_an_error() {
        let mut buf = Vec::new();
        for i in 0..5 {
            Record::Txn {
                revision: i + 2,
                ops: vec![put(&format!("k{i}"), "value")],
            }
            .encode_framed(&mut buf);
        }
        let full = buf.len();
        // Every possible truncation point inside the last record is a clean torn tail.
        let mut last_start = 0;
        while let Some((_, next)) = parse_frame(&buf, last_start) {
            if next == full {
                break;
            }
            last_start = next;
        }
        for cut in last_start + 1..full {
            let (recs, valid) = scan_log(&buf[..cut], true).unwrap();
            assert_eq!(recs.len(), 4);
            assert_eq!(valid, last_start);
        }
        // Garbage appended after intact records.
        let mut garbage = buf.clone();
        garbage.extend_from_slice(&[0x13, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7]);
        let (recs, valid) = scan_log(&garbage, true).unwrap();
        assert_eq!((recs.len(), valid), (5, full));
        // A flipped byte in the second record, with intact records after it: corruption.
        let mut bad = buf.clone();
        let second = parse_frame(&buf, 0).unwrap().1;
        bad[second + 10] ^= 0xff;
        assert!(scan_log(&bad, true).is_err());
        // A torn tail is only acceptable in the log being appended to.
        assert!(scan_log(&garbage, false).is_err());
    }

    #[tokio::test]
    async fn reopen_replays_and_rejects_corrupt_middle() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = EmbeddedStore::open(dir.path()).unwrap();
            for i in 0..10 {
                s.put(&format!("/k/{i}"), vec![i as u8]).await.unwrap();
            }
            assert_eq!(s.revision().await.unwrap(), 11);
        }
        {
            let s = EmbeddedStore::open(dir.path()).unwrap();
            assert_eq!(s.revision().await.unwrap(), 11);
            assert_eq!(s.range("/k/").await.unwrap().0.len(), 10);
        }
        let path = log_path(dir.path(), 0);
        let mut data = fs::read(&path).unwrap();
        data[20] ^= 0x55;
        fs::write(&path, &data).unwrap();
        let err = EmbeddedStore::open(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("corrupt"), "{err:#}");
    }

    #[tokio::test]
    async fn second_open_of_same_dir_fails() {
        let dir = tempfile::tempdir().unwrap();
        let _s = EmbeddedStore::open(dir.path()).unwrap();
        let err = EmbeddedStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
    }

    #[tokio::test]
    async fn snapshot_rotation_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            snapshot_min_log_bytes: 4096,
            ..Options::default()
        };
        let lease;
        {
            let s = EmbeddedStore::open_with(dir.path(), opts.clone()).unwrap();
            lease = s.lease_grant(Duration::from_secs(60)).await.unwrap();
            for i in 0..200 {
                let op = if i % 10 == 0 {
                    Op::put_with_lease(format!("/l/{i}"), vec![1; 100], lease)
                } else {
                    Op::put(format!("/k/{}", i % 50), vec![i as u8; 100])
                };
                s.txn(Txn::new().and_then(op)).await.unwrap();
            }
            s.delete("/k/3").await.unwrap();
        }
        assert!(dir.path().join(SNAPSHOT_FILE).exists());
        let logs = list_logs(dir.path()).unwrap();
        assert_eq!(logs.len(), 1, "old logs are removed: {logs:?}");
        assert!(logs[0] > 0);
        let s = EmbeddedStore::open_with(dir.path(), opts).unwrap();
        assert_eq!(s.revision().await.unwrap(), 202);
        let (kvs, _) = s.range("/k/").await.unwrap();
        assert_eq!(kvs.len(), 44);
        let k7 = s.get("/k/7").await.unwrap().unwrap();
        assert_eq!(k7.version, 4);
        assert_eq!(k7.value, vec![157; 100]);
        // The lease and its attachments survived; revoking deletes its keys in one revision.
        assert_eq!(s.range("/l/").await.unwrap().0.len(), 20);
        s.lease_revoke(lease).await.unwrap();
        assert_eq!(s.range("/l/").await.unwrap().0.len(), 0);
        assert_eq!(s.revision().await.unwrap(), 203);
        let l2 = s.lease_grant(Duration::from_secs(5)).await.unwrap();
        assert!(l2 > lease, "lease ids are not reused");
    }

    #[tokio::test]
    async fn slow_watcher_is_cut_off_with_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            watch_buffer: 4,
            ..Options::default()
        };
        let s = EmbeddedStore::open_with(dir.path(), opts).unwrap();
        let mut w = s.watch("/a/", 0).await.unwrap();
        for i in 0..10 {
            s.put(&format!("/a/{i}"), vec![]).await.unwrap();
        }
        let mut got = Vec::new();
        let err = loop {
            match w.next().await.unwrap() {
                Ok(evs) => got.push(evs[0].kv.mod_revision),
                Err(e) => break e,
            }
        };
        assert_eq!(got, vec![2, 3, 4, 5]);
        assert!(
            matches!(err, StoreError::Compacted { requested: 6, .. }),
            "{err:?}"
        );
        assert!(w.next().await.is_none());
        // Writers were never blocked, and a new watch from the gap still works (history).
        let mut w2 = s.watch("/a/", 6).await.unwrap();
        assert_eq!(w2.next().await.unwrap().unwrap()[0].kv.mod_revision, 6);
    }

    #[tokio::test]
    async fn history_trim_compacts_old_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            history_max_events: 5,
            ..Options::default()
        };
        let s = EmbeddedStore::open_with(dir.path(), opts).unwrap();
        for i in 0..10 {
            s.put(&format!("/a/{i}"), vec![]).await.unwrap();
        }
        // Revisions 2..=11 written, the last 5 (7..=11) retained.
        let err = s.watch("/a/", 6).await.err().unwrap();
        assert_eq!(
            err,
            StoreError::Compacted {
                requested: 6,
                compacted: 7
            }
        );
        let mut w = s.watch("/a/", 7).await.unwrap();
        assert_eq!(w.next().await.unwrap().unwrap()[0].kv.mod_revision, 7);
    }

    #[tokio::test]
    async fn dropping_a_watch_unregisters_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let w = s.watch("", 0).await.unwrap();
        assert_eq!(s.state().watchers.len(), 1);
        drop(w);
        assert_eq!(s.state().watchers.len(), 0);
    }

    #[tokio::test]
    async fn open_without_runtime_then_leases_expire() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::thread::spawn({
            let p = dir.path().to_path_buf();
            move || EmbeddedStore::open(p).unwrap()
        })
        .join()
        .unwrap();
        let l = s.lease_grant(Duration::from_millis(200)).await.unwrap();
        s.txn(Txn::new().and_then(Op::put_with_lease("/x", vec![], l)))
            .await
            .unwrap();
        for _ in 0..50 {
            if s.get("/x").await.unwrap().is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("lease did not expire");
    }
}
