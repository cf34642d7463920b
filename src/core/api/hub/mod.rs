//! The live view behind the dashboard, `/metrics`, `berth top` and `berth events`: one store
//! watch of `/berth/` mirrored into compact rows, changes coalesced per key and broadcast every
//! [`FLUSH`] as one batch, utilization aggregated from the agents' samples with a few minutes of
//! history for the charts, controller status from the process's runtime registry, and a ring
//! of recent service and task events.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

mod rows;
use crate::metrics::{self, aggregate, Aggregate, InstanceSample, TaskInfo, STATS_PREFIX};
use crate::runtime::{watcher, Registry, WatcherEvent};
use crate::store::election::Leadership;
use crate::store::{DynStore, KeyValue};

/// How often coalesced changes go out.
pub const FLUSH: Duration = Duration::from_millis(100);
/// Chart history kept (points are at most one per second).
pub const HISTORY_POINTS: usize = 600;
const SERVICE_HISTORY_POINTS: usize = 180;
const MAX_EVENTS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cat {
    Cluster,
    Instance,
    Service,
    Task,
    Policy,
    Sync,
}

impl Cat {
    fn of(key: &str) -> Option<(Cat, &str)> {
        let rest = key.strip_prefix("/berth/")?;
        let (kind, name) = rest.split_once('/')?;
        let cat = match kind {
            "clusters" => Cat::Cluster,
            "containerinstances" => Cat::Instance,
            "services" => Cat::Service,
            "tasks" => Cat::Task,
            "scalingpolicies" => Cat::Policy,
            "sources" | "sync" | "gitops" => Cat::Sync,
            _ => return None,
        };
        Some((cat, name))
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Cat::Cluster => "clusters",
            Cat::Instance => "instances",
            Cat::Service => "services",
            Cat::Task => "tasks",
            Cat::Policy => "policies",
            Cat::Sync => "sync",
        }
    }
    const ALL: [Cat; 6] = [
        Cat::Cluster,
        Cat::Instance,
        Cat::Service,
        Cat::Task,
        Cat::Policy,
        Cat::Sync,
    ];
}

/// A message for every live client: an SSE event name and its JSON data.
#[derive(Debug, Clone)]
pub struct Message {
    pub event: &'static str,
    pub data: Arc<str>,
}

#[derive(Default)]
struct State {
    seq: u64,
    synced: bool,
    rows: HashMap<Cat, BTreeMap<String, Value>>,
    /// Raw task fields the aggregation needs.
    infos: HashMap<String, TaskInfo>,
    samples: BTreeMap<String, InstanceSample>,
    pending: BTreeSet<(Cat, String)>,
    resnapshot: bool,
    stats_dirty: bool,
    /// Last aggregation and the metrics message cut from it.
    aggregate: Aggregate,
    metrics: Value,
    history: VecDeque<Value>,
    svc_history: HashMap<String, VecDeque<Value>>,
    events: VecDeque<Value>,
    /// Newest service event id seen per service.
    seen_events: HashMap<String, String>,
    controllers: Value,
}

pub struct Hub {
    state: Mutex<State>,
    tx: broadcast::Sender<Message>,
    events_tx: broadcast::Sender<Value>,
    registry: Registry,
    leadership: Leadership,
    synced: watch::Sender<bool>,
}

fn ms_now() -> i64 {
    metrics::sample::now_ms()
}

impl Hub {
    /// Start mirroring the store. Background work stops once the hub is dropped.
    pub fn start(store: DynStore, registry: Registry, leadership: Leadership) -> Arc<Hub> {
        let (tx, _) = broadcast::channel(512);
        let (events_tx, _) = broadcast::channel(1024);
        let (synced, _) = watch::channel(false);
        let hub = Arc::new(Hub {
            state: Mutex::new(State::default()),
            tx,
            events_tx,
            registry,
            leadership,
            synced,
        });
        let weak = Arc::downgrade(&hub);
        tokio::spawn(mirror(store, weak.clone()));
        tokio::spawn(ticker(weak));
        hub
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<Value> {
        self.events_tx.subscribe()
    }

    /// Wait (bounded) for the first full listing.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| *v)).await;
    }

    /// Subscribe and take a snapshot atomically: every batch after it is in the receiver.
    pub fn snapshot_and_subscribe(&self) -> (String, broadcast::Receiver<Message>) {
        let st = self.state.lock().unwrap();
        let rx = self.tx.subscribe();
        (snapshot_json(&st), rx)
    }

    pub fn snapshot(&self) -> String {
        snapshot_json(&self.state.lock().unwrap())
    }

    /// Recompute the aggregation now (a scrape should not lag the samples).
    pub fn fresh_aggregate(&self) -> Aggregate {
        let mut st = self.state.lock().unwrap();
        let agg = aggregate(st.infos.values(), st.samples.values(), ms_now());
        st.aggregate = agg.clone();
        agg
    }

    pub fn recent_events(&self) -> Vec<Value> {
        self.state.lock().unwrap().events.iter().cloned().collect()
    }

    pub fn rows(&self, cat: Cat) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .rows
            .get(&cat)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn apply(&self, ev: WatcherEvent) {
        let mut st = self.state.lock().unwrap();
        match ev {
            WatcherEvent::Restarted(kvs) => {
                let first = !st.synced;
                st.rows.clear();
                st.infos.clear();
                st.samples.clear();
                for kv in &kvs {
                    put(&mut st, kv, false);
                }
                if first {
                    seed_events(&mut st);
                }
                st.synced = true;
                st.pending.clear();
                st.resnapshot = !first;
                st.stats_dirty = true;
                drop(st);
                self.synced.send_replace(true);
            }
            WatcherEvent::Applied(kv) => {
                let events = put(&mut st, &kv, true);
                self.push_events(&mut st, events);
            }
            WatcherEvent::Deleted(kv) => {
                if let Some(inst) = kv.key.strip_prefix(STATS_PREFIX) {
                    st.samples.remove(inst);
                    st.stats_dirty = true;
                } else if let Some((cat, name)) = Cat::of(&kv.key) {
                    let name = name.to_string();
                    if let Some(m) = st.rows.get_mut(&cat) {
                        m.remove(&name);
                    }
                    if cat == Cat::Task {
                        st.infos.remove(&name);
                    }
                    st.pending.insert((cat, name));
                }
            }
        }
    }

    fn push_events(&self, st: &mut State, events: Vec<Value>) {
        for e in events {
            st.events.push_back(e.clone());
            while st.events.len() > MAX_EVENTS {
                st.events.pop_front();
            }
            let _ = self.events_tx.send(e.clone());
            let _ = self.tx.send(Message {
                event: "event",
                data: e.to_string().into(),
            });
        }
    }

    /// Send the coalesced changes (called every FLUSH).
    fn flush(&self) {
        let mut st = self.state.lock().unwrap();
        if st.resnapshot {
            st.resnapshot = false;
            st.pending.clear();
            st.seq += 1;
            let data = snapshot_json(&st);
            let _ = self.tx.send(Message {
                event: "snapshot",
                data: data.into(),
            });
            return;
        }
        if st.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut st.pending);
        let mut changes = Vec::with_capacity(pending.len());
        for (cat, name) in pending {
            let row = st
                .rows
                .get(&cat)
                .and_then(|m| m.get(&name))
                .cloned()
                .unwrap_or(Value::Null);
            changes.push(json!([cat.as_str(), name, row]));
        }
        st.seq += 1;
        let data = json!({"seq": st.seq, "d": changes}).to_string();
        let _ = self.tx.send(Message {
            event: "batch",
            data: data.into(),
        });
    }

    /// Aggregate utilization when samples (or tasks) changed; at most once a second.
    fn tick_metrics(&self, force: bool) {
        let mut st = self.state.lock().unwrap();
        if !st.stats_dirty && !force {
            return;
        }
        st.stats_dirty = false;
        let now = ms_now();
        let agg = aggregate(st.infos.values(), st.samples.values(), now);
        let pct = |x: f64| (x * 10.0).round() / 10.0;
        let grp = |g: &metrics::Group| {
            json!([
                pct(g.cpu_utilization()),
                pct(g.memory_utilization()),
                (g.cpu_cores * 1000.0).round() / 1000.0,
                g.mem_bytes.round()
            ])
        };
        let svc: serde_json::Map<String, Value> = agg
            .by_service
            .iter()
            .map(|(k, g)| (k.clone(), grp(g)))
            .collect();
        let cl: serde_json::Map<String, Value> = agg
            .by_cluster
            .iter()
            .map(|(k, g)| (k.clone(), grp(g)))
            .collect();
        let inst: serde_json::Map<String, Value> = agg
            .by_instance
            .iter()
            .map(|(k, g)| (k.clone(), grp(g)))
            .collect();
        let task: serde_json::Map<String, Value> = agg
            .by_task
            .iter()
            .map(|(k, u)| (k.clone(), json!([pct(u.cpu_percent), u.mem_bytes])))
            .collect();
        let cores: f64 = agg.by_cluster.values().map(|g| g.cpu_cores).sum();
        let mem: f64 = agg.by_cluster.values().map(|g| g.mem_bytes).sum();
        let point = json!([now, (cores * 1000.0).round() / 1000.0, mem.round()]);
        st.history.push_back(point.clone());
        while st.history.len() > HISTORY_POINTS {
            st.history.pop_front();
        }
        let mut svc_points = serde_json::Map::new();
        for (name, g) in &agg.by_service {
            let p = json!([now, pct(g.cpu_utilization()), pct(g.memory_utilization())]);
            let h = st.svc_history.entry(name.clone()).or_default();
            h.push_back(p.clone());
            while h.len() > SERVICE_HISTORY_POINTS {
                h.pop_front();
            }
            svc_points.insert(name.clone(), p);
        }
        let live: BTreeSet<&String> = agg.by_service.keys().collect();
        let services = st.rows.get(&Cat::Service).cloned().unwrap_or_default();
        st.svc_history
            .retain(|k, _| live.contains(k) || services.contains_key(k));
        let msg = json!({
            "t": now, "svc": svc, "cl": cl, "inst": inst, "task": task,
            "point": point, "svcPoints": svc_points,
        });
        st.metrics = msg.clone();
        st.aggregate = agg;
        drop(st);
        let _ = self.tx.send(Message {
            event: "metrics",
            data: msg.to_string().into(),
        });
    }

    fn tick_controllers(&self) {
        let snap = crate::api::health::controller_rows(&self.registry, &self.leadership);
        let mut st = self.state.lock().unwrap();
        if st.controllers == snap {
            return;
        }
        st.controllers = snap.clone();
        drop(st);
        let _ = self.tx.send(Message {
            event: "controllers",
            data: snap.to_string().into(),
        });
    }
}

fn snapshot_json(st: &State) -> String {
    let mut out = serde_json::Map::new();
    out.insert("seq".into(), json!(st.seq));
    out.insert("now".into(), json!(ms_now()));
    out.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    for cat in Cat::ALL {
        let rows: Vec<&Value> = st
            .rows
            .get(&cat)
            .map(|m| m.values().collect())
            .unwrap_or_default();
        out.insert(cat.as_str().into(), json!(rows));
    }
    out.insert("controllers".into(), st.controllers.clone());
    out.insert("metrics".into(), st.metrics.clone());
    out.insert("history".into(), json!(st.history));
    out.insert("svcHistory".into(), json!(st.svc_history));
    let n = st.events.len();
    let recent: Vec<&Value> = st.events.iter().skip(n.saturating_sub(60)).collect();
    out.insert("events".into(), json!(recent));
    Value::Object(out).to_string()
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// Mirror one changed key; with `live`, describe what happened as events.
fn put(st: &mut State, kv: &KeyValue, live: bool) -> Vec<Value> {
    let mut events = Vec::new();
    if let Some(inst) = kv.key.strip_prefix(STATS_PREFIX) {
        if let Some(s) = InstanceSample::decode(kv) {
            st.samples.insert(inst.to_string(), s);
            st.stats_dirty = true;
        }
        return events;
    }
    let Some((cat, name)) = Cat::of(&kv.key) else {
        return events;
    };
    // Task definitions keep one key per revision under the family; never a dashboard row.
    if name.contains('/') && cat != Cat::Sync {
        return events;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&kv.value) else {
        return events;
    };
    let row = match cat {
        Cat::Cluster => rows::cluster(&v),
        Cat::Instance => rows::instance(&v),
        Cat::Service => rows::service(&v),
        Cat::Task => rows::task(&v),
        Cat::Policy => rows::policy(&v),
        Cat::Sync => rows::sync(&kv.key, &v),
    };
    if cat == Cat::Task {
        if let Ok(t) = serde_json::from_value::<crate::model::Task>(v.clone()) {
            let info = TaskInfo::from_task(&t);
            if t.is_stopped() {
                st.infos.remove(name);
            } else {
                st.infos.insert(name.to_string(), info);
            }
        }
        if live {
            let before = st
                .rows
                .get(&cat)
                .and_then(|m| m.get(name))
                .map(|r| r["ls"].clone());
            let now_ls = row["ls"].clone();
            if before.as_ref() != Some(&now_ls) {
                let svc = row["svc"].as_str().unwrap_or("");
                let mut msg = format!(
                    "task {} {}",
                    short(name),
                    now_ls.as_str().unwrap_or("PROVISIONING")
                );
                if let Some(r) = row["sr"].as_str().filter(|_| now_ls == "STOPPED") {
                    msg.push_str(&format!(": {r}"));
                }
                events.push(json!({
                    "t": chrono::Utc::now(),
                    "kind": "task",
                    "name": name,
                    "service": if svc.is_empty() { Value::Null } else { json!(svc) },
                    "message": msg,
                }));
            }
        }
    }
    if cat == Cat::Service {
        events.extend(service_events(st, name, &v, live));
    }
    st.rows
        .entry(cat)
        .or_default()
        .insert(name.to_string(), row);
    if live {
        st.pending.insert((cat, name.to_string()));
    }
    events
}

/// New service events (those after the newest one seen), oldest first.
fn service_events(st: &mut State, name: &str, v: &Value, live: bool) -> Vec<Value> {
    let evs = v["status"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let Some(newest) = evs.first().and_then(|e| e["id"].as_str()) else {
        return vec![];
    };
    let prev = st.seen_events.insert(name.to_string(), newest.to_string());
    if !live {
        return vec![];
    }
    let mut out: Vec<Value> = evs
        .iter()
        .take_while(|e| prev.as_deref() != e["id"].as_str())
        .map(|e| {
            json!({"t": e["createdAt"], "kind": "service", "name": name, "service": name,
                   "message": e["message"]})
        })
        .collect();
    out.reverse();
    out
}

/// The events ring starts with the services' stored events, oldest first.
fn seed_events(st: &mut State) {
    let mut all: Vec<Value> = Vec::new();
    // Rows keep each service's five newest events.
    let services = st.rows.get(&Cat::Service).cloned().unwrap_or_default();
    for (name, row) in &services {
        for e in row["ev"].as_array().into_iter().flatten() {
            all.push(
                json!({"t": e["t"], "kind": "service", "name": name, "service": name,
                            "message": e["m"]}),
            );
        }
    }
    all.sort_by(|a, b| a["t"].as_str().cmp(&b["t"].as_str()));
    st.events = all.into_iter().collect();
    while st.events.len() > MAX_EVENTS {
        st.events.pop_front();
    }
}

async fn mirror(store: DynStore, hub: Weak<Hub>) {
    let mut events = watcher(store, "/berth/".to_string());
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if hub.strong_count() == 0 { return; }
                continue;
            }
        };
        let Some(ev) = ev else { return };
        let Some(h) = hub.upgrade() else { return };
        h.apply(ev);
    }
}

async fn ticker(hub: Weak<Hub>) {
    let mut tick = tokio::time::interval(FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        let Some(h) = hub.upgrade() else { return };
        h.flush();
        n += 1;
        if n.is_multiple_of(10) {
            h.tick_metrics(n.is_multiple_of(100));
            h.tick_controllers();
        }
    }
}
