//! The harness of the fast controller tests: an embedded store in a temp dir, every
//! controller, a simulated agent (no Docker), and a mirror of the store that sees every
//! revision in order so tests can wait on, and check invariants at, each change.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use berth_core::agent::simulated::{SimulatedAgent, SimulatedAgentConfig};
use berth_core::apply::{apply, ApplyOptions};
use berth_core::manifest::parse_str;
use berth_core::model::lb::{lb_keys, Target, TargetHealth};
use berth_core::model::{keys, now, ContainerInstance, Deployment, Kind, Service, Task, TaskState};
use berth_core::runtime::Registry;
use berth_core::store::embedded::EmbeddedStore;
use berth_core::store::{DynStore, EventKind, KeyValue, WatchEvent, WatchStream};
use futures::StreamExt;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Longest any single wait may take before the test fails (tests finish far sooner).
pub const DEADLINE: Duration = Duration::from_secs(10);
/// The lost-instance grace the harness's controllers run with (the product default is 5 min).
pub const LOST_GRACE: Duration = Duration::from_secs(2);

pub struct Harness {
    pub store: DynStore,
    pub agent: SimulatedAgent,
    pub mirror: Mirror,
    shutdown: CancellationToken,
    handles: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// A store, every controller, and a simulated agent with `instances` instances
    /// (`sim-0`, `sim-1`, …) configured by `cfg`.
    pub async fn start(instances: usize, cfg: impl FnOnce(&mut SimulatedAgentConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: DynStore = Arc::new(EmbeddedStore::open(dir.path()).expect("open store"));
        let mirror = Mirror::new(store.clone()).await;
        let shutdown = CancellationToken::new();
        let registry = Registry::default();
        let control = berth_controllers::ControlConfig {
            lost_instance_grace: LOST_GRACE,
        };
        let cache = berth_controllers::cache(store.clone());
        let handles = berth_controllers::all_with(store.clone(), &cache, &registry, &control)
            .into_iter()
            .map(|c| tokio::spawn(c.run(shutdown.clone())))
            .collect();
        let mut c = SimulatedAgentConfig::new("default");
        cfg(&mut c);
        let agent = SimulatedAgent::start(store.clone(), c, shutdown.clone());
        agent
            .add_instances("sim", instances)
            .await
            .expect("register simulated instances");
        Harness {
            store,
            agent,
            mirror,
            shutdown,
            handles,
            _dir: dir,
        }
    }

    /// Apply YAML manifests; returns each object's `kind/name outcome` line.
    pub async fn apply(&self, yaml: &str) -> Vec<String> {
        let docs = parse_str(yaml, "test.yaml").expect("manifests parse");
        apply(&*self.store, &docs, &ApplyOptions::default())
            .await
            .expect("apply")
            .iter()
            .map(|r| r.to_string())
            .collect()
    }

    /// [`Harness::start`] with the default configuration, then [`Harness::launch`].
    pub async fn launched(instances: usize, web: &Web) -> (Self, String) {
        let mut h = Harness::start(instances, |_| {}).await;
        let td = h.launch(web).await;
        (h, td)
    }

    /// Apply the service's manifests and wait until it runs `desired` tasks of the revision
    /// registered; returns that revision (`family:N`).
    pub async fn launch(&mut self, web: &Web) -> String {
        let td = revision_of(&self.apply(&web.manifests()).await, web.name);
        self.mirror
            .wait_steady(web.name, &td, web.desired as usize)
            .await;
        td
    }

    /// Play a load balancer for every target group: a registered target is reported healthy,
    /// a draining one drained (what `lb_target` and the deployment maths wait for).
    pub fn fake_load_balancer(&mut self) {
        let store = self.store.clone();
        let stop = self.shutdown.clone();
        self.handles.push(tokio::spawn(async move {
            let mut m = Mirror::new(store.clone()).await;
            let mut told: BTreeMap<String, String> = BTreeMap::new();
            loop {
                let wanted: Vec<(String, TargetHealth)> = m
                    .targets()
                    .into_iter()
                    .map(|t| {
                        let state = if t.state == "draining" {
                            "drained"
                        } else {
                            "healthy"
                        };
                        let health = TargetHealth {
                            state: state.into(),
                            service: t.service.clone(),
                            reason: String::new(),
                            updated_at: now(),
                        };
                        (lb_keys::health(&t.target_group, &t.task_id), health)
                    })
                    .filter(|(k, h)| told.get(k) != Some(&h.state))
                    .collect();
                for (k, h) in wanted {
                    let v = serde_json::to_vec(&h).expect("encode target health");
                    if store.put(&k, v).await.is_ok() {
                        told.insert(k, h.state);
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = m.step() => if r.is_err() { return },
                }
            }
        }));
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.agent.join().await;
        for h in self.handles {
            let _ = h.await;
        }
    }
}

/// A local copy of everything under `/berth/`, advanced one store revision at a time.
pub struct Mirror {
    kvs: BTreeMap<String, KeyValue>,
    pub revision: i64,
    stream: WatchStream,
    pending: VecDeque<WatchEvent>,
}

impl Mirror {
    pub async fn new(store: DynStore) -> Self {
        let (kvs, revision) = store.range(keys::ROOT).await.expect("range");
        let stream = store.watch(keys::ROOT, revision + 1).await.expect("watch");
        Mirror {
            kvs: kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect(),
            revision,
            stream,
            pending: VecDeque::new(),
        }
    }

    /// Apply the events of the next revision.
    pub async fn step(&mut self) -> anyhow::Result<()> {
        while self.pending.is_empty() {
            match self.stream.next().await {
                Some(batch) => self.pending.extend(batch?),
                None => anyhow::bail!("watch ended"),
            }
        }
        let rev = self.pending[0].kv.mod_revision;
        while self
            .pending
            .front()
            .is_some_and(|e| e.kv.mod_revision == rev)
        {
            let ev = self.pending.pop_front().expect("front exists");
            match ev.kind {
                EventKind::Put => {
                    self.kvs.insert(ev.kv.key.clone(), ev.kv);
                }
                EventKind::Delete => {
                    self.kvs.remove(&ev.kv.key);
                }
            }
        }
        self.revision = rev;
        Ok(())
    }

    /// Evaluate `f` on the current state and after every following revision until it gives
    /// a value; fails the test after [`DEADLINE`] with `what` and the tasks as they are.
    pub async fn wait_until<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&Mirror) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            match tokio::time::timeout_at(deadline, self.step()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("waiting for {what}: {e}"),
                Err(_) => panic!(
                    "timed out waiting for {what}; tasks:\n{}\nservices:\n{}",
                    self.describe_tasks(),
                    self.describe_services()
                ),
            }
        }
    }

    fn decode_all<T: serde::de::DeserializeOwned>(&self, prefix: &str) -> Vec<T> {
        self.kvs
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(_, kv)| serde_json::from_slice(&kv.value).ok())
            .collect()
    }

    pub fn tasks(&self) -> Vec<Task> {
        self.decode_all(&keys::prefix(Kind::Task))
    }

    pub fn task(&self, id: &str) -> Option<Task> {
        let kv = self.kvs.get(&keys::key(Kind::Task, id))?;
        serde_json::from_slice(&kv.value).ok()
    }

    /// Every task of a service, in any state.
    pub fn service_tasks(&self, service: &str) -> Vec<Task> {
        let group = format!("service:{service}");
        self.tasks()
            .into_iter()
            .filter(|t| t.spec.group == group)
            .collect()
    }

    /// Tasks of a service that count toward it (not stopped, not asked to stop).
    pub fn active(&self, service: &str) -> Vec<Task> {
        self.service_tasks(service)
            .into_iter()
            .filter(|t| t.is_active())
            .collect()
    }

    /// Tasks of a service that have not stopped (including those asked to stop).
    pub fn not_stopped(&self, service: &str) -> Vec<Task> {
        self.service_tasks(service)
            .into_iter()
            .filter(|t| !t.is_stopped())
            .collect()
    }

    pub fn service(&self, name: &str) -> Option<Service> {
        let kv = self.kvs.get(&keys::key(Kind::Service, name))?;
        serde_json::from_slice(&kv.value).ok()
    }

    pub fn primary(&self, service: &str) -> Option<Deployment> {
        self.service(service)?
            .status
            .deployments
            .into_iter()
            .find(|d| d.status == "PRIMARY")
    }

    /// Event messages of a service, newest first.
    pub fn events(&self, service: &str) -> Vec<String> {
        self.service(service)
            .map(|s| s.status.events.into_iter().map(|e| e.message).collect())
            .unwrap_or_default()
    }

    pub fn instance(&self, id: &str) -> Option<ContainerInstance> {
        let kv = self.kvs.get(&keys::key(Kind::ContainerInstance, id))?;
        serde_json::from_slice(&kv.value).ok()
    }

    pub fn has_key(&self, key: &str) -> bool {
        self.kvs.contains_key(key)
    }

    pub fn targets(&self) -> Vec<Target> {
        self.decode_all(lb_keys::TARGETS)
    }

    /// The service runs exactly `desired` tasks of `taskdef`, all RUNNING, nothing else is
    /// left, and its PRIMARY deployment on `taskdef` is COMPLETED.
    pub fn steady_on(&self, service: &str, taskdef: &str, desired: usize) -> bool {
        let live = self.not_stopped(service);
        live.len() == desired
            && live.iter().all(|t| {
                t.is_active()
                    && t.status.last_status == TaskState::Running
                    && t.spec.task_definition == taskdef
            })
            && self
                .primary(service)
                .is_some_and(|d| d.task_definition == taskdef && d.rollout_state == "COMPLETED")
    }

    /// Wait until [`Mirror::steady_on`].
    pub async fn wait_steady(&mut self, service: &str, taskdef: &str, desired: usize) {
        let what = format!("{service} steady with {desired} tasks of {taskdef}");
        self.wait_until(&what, |m| {
            m.steady_on(service, taskdef, desired).then_some(())
        })
        .await
    }

    /// Names of the tasks that count toward the service.
    pub fn active_names(&self, service: &str) -> BTreeSet<String> {
        self.active(service)
            .into_iter()
            .map(|t| t.metadata.name)
            .collect()
    }

    fn describe_tasks(&self) -> String {
        self.tasks()
            .iter()
            .map(|t| {
                format!(
                    "  {} {} {} last={} desired={:?} health={:?} on={:?} stop={:?} {:?}",
                    t.metadata.name,
                    t.spec.group,
                    t.spec.task_definition,
                    t.status.last_status,
                    t.status.desired_status,
                    t.status.health_status,
                    t.status.container_instance,
                    t.status.stop_code,
                    t.status.stopped_reason
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn describe_services(&self) -> String {
        self.decode_all::<Service>(&keys::prefix(Kind::Service))
            .iter()
            .map(|s| {
                let deps: Vec<String> = s
                    .status
                    .deployments
                    .iter()
                    .map(|d| {
                        format!(
                            "{} {} {} failed={}",
                            d.status, d.task_definition, d.rollout_state, d.failed_tasks
                        )
                    })
                    .collect();
                let events: Vec<&str> = s
                    .status
                    .events
                    .iter()
                    .take(6)
                    .map(|e| e.message.as_str())
                    .collect();
                format!("  {}: {deps:?}\n    events: {events:#?}", s.metadata.name)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A service and its task definition (and target group), as manifests.
#[derive(Debug, Clone)]
pub struct Web {
    pub name: &'static str,
    pub desired: u32,
    /// An environment value: changing it registers a new task-definition revision.
    pub version: &'static str,
    pub min: u32,
    pub max: u32,
    pub health_check: bool,
    pub breaker: bool,
    /// A non-essential sidecar container next to the essential `app`.
    pub sidecar: bool,
    /// Spread the tasks over instances.
    pub spread: bool,
    /// Put the service behind this target group (also defined by the manifests).
    pub target_group: Option<&'static str>,
}

impl Web {
    pub fn new(name: &'static str, desired: u32) -> Self {
        Web {
            name,
            desired,
            version: "1",
            min: 100,
            max: 200,
            health_check: false,
            breaker: false,
            sidecar: false,
            spread: false,
            target_group: None,
        }
    }

    /// This service with `f` applied to it.
    pub fn with(mut self, f: impl FnOnce(&mut Web)) -> Self {
        f(&mut self);
        self
    }

    /// The manifests, as JSON documents (which are YAML too) separated by `---`.
    pub fn manifests(&self) -> String {
        let mut app = json!({
            "name": "app", "image": "local/busybox:1", "cpu": 64, "memory": 32,
            "portMappings": [{"containerPort": 8080}],
            "environment": [{"name": "VERSION", "value": self.version}],
        });
        if self.health_check {
            app["healthCheck"] = json!({"command": ["CMD-SHELL", "true"], "interval": 1, "timeout": 1, "retries": 1});
        }
        let mut containers = vec![app];
        if self.sidecar {
            containers.push(json!({
                "name": "sidecar", "image": "local/busybox:1", "essential": false, "cpu": 8, "memory": 8,
            }));
        }
        let mut spec = json!({
            "taskDefinition": self.name,
            "desiredCount": self.desired,
            "deploymentConfiguration": {
                "minimumHealthyPercent": self.min,
                "maximumPercent": self.max,
            },
        });
        if self.breaker {
            spec["deploymentConfiguration"]["deploymentCircuitBreaker"] =
                json!({"enable": true, "rollback": true});
        }
        if self.spread {
            spec["placementStrategy"] = json!([{"type": "spread", "field": "instanceId"}]);
        }
        let mut docs = vec![object(
            "TaskDefinition",
            self.name,
            json!({"containerDefinitions": containers}),
        )];
        if let Some(tg) = self.target_group {
            spec["loadBalancers"] =
                json!([{"targetGroup": tg, "containerName": "app", "containerPort": 8080}]);
            docs.push(object(
                "TargetGroup",
                tg,
                json!({"protocol": "HTTP", "deregistrationDelaySeconds": 30}),
            ));
        }
        docs.push(object("Service", self.name, spec));
        docs.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

fn object(kind: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "berth.dev/v1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

/// The `family:N` an apply registered (or found unchanged) for `family`.
pub fn revision_of(applied: &[String], family: &str) -> String {
    let prefix = format!("taskdefinition/{family}:");
    applied
        .iter()
        .find_map(|l| {
            l.strip_prefix("taskdefinition/")?
                .split(' ')
                .next()
                .map(str::to_string)
        })
        .filter(|r| format!("taskdefinition/{r}").starts_with(&prefix))
        .unwrap_or_else(|| panic!("no revision of {family} in {applied:?}"))
}

/// The task stopped with this stop code.
pub fn assert_stopped_with(t: &Task, code: &str) {
    assert!(
        t.is_stopped(),
        "{} is {}",
        t.metadata.name,
        t.status.last_status
    );
    assert_eq!(
        t.status.stop_code.as_deref(),
        Some(code),
        "{}: {:?}",
        t.metadata.name,
        t.status.stopped_reason
    );
}
