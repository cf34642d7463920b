//! What a joined agent may read and write: the key decisions behind the agent routes
//! (`api::agent_api`), after Kubernetes' node authorizer and NodeRestriction admission.
//!
//! An agent acts for one instance (its credential's). It may **read** its own instance record,
//! lease key, stats key and credentials-endpoint key; the tasks placed on its instance; the task
//! definitions (by family) and clusters those tasks name, and its cluster; the load-balancer
//! target records of its tasks (draining). It may **write** its instance record (only the
//! registration fields: cluster, host IP, attributes, registered resources, Docker version,
//! `agentConnected`, the logs-endpoint annotation; a new record must start empty of what the
//! scheduler owns), its lease key (on a lease granted to it), its stats and endpoint keys, and
//! **only the status** of tasks placed on it (never spec, metadata, placement, or desired status
//! other than RUNNING → STOPPED while it stops the task; `lastStatus` only moves forward).
//! Writes to a task or the instance record must compare that key's current revision. Anything
//! else is refused. Reads of a prefix are filtered to what may be read; a `get` of a key that
//! may not be read is refused.
//!
//! Everything here is pure: the caller reads the current values and passes them in.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::metrics::sample::stats_key;
use crate::model::lb::lb_keys;
use crate::model::{keys, ContainerInstance, DesiredStatus, Kind, Task, TaskState};
use crate::store::{Compare, KeyValue, Op, Txn};

use super::identity::{self, Endpoint};

/// What an agent's requests are judged against: its instance and the tasks placed on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub instance: String,
    /// The cluster of the instance's record, once registered.
    pub cluster: Option<String>,
    /// Tasks placed on the instance: id → (task definition family, cluster).
    pub tasks: BTreeMap<String, (String, String)>,
}

impl Scope {
    pub fn new(instance: &str) -> Self {
        Scope {
            instance: instance.to_string(),
            ..Default::default()
        }
    }

    /// Build the scope from the instance's record and the task list.
    pub fn from_values(instance: &str, record: Option<&[u8]>, tasks: &[KeyValue]) -> Self {
        let mut s = Scope::new(instance);
        s.cluster = record
            .and_then(|v| serde_json::from_slice::<ContainerInstance>(v).ok())
            .map(|i| i.spec.cluster)
            .filter(|c| !c.is_empty());
        for kv in tasks {
            let Ok(t) = serde_json::from_slice::<Task>(&kv.value) else {
                continue;
            };
            if t.status.container_instance.as_deref() == Some(instance) {
                let family = family_of(&t.spec.task_definition).to_string();
                s.tasks
                    .insert(t.metadata.name.clone(), (family, t.spec.cluster.clone()));
            }
        }
        s
    }

    fn families(&self) -> BTreeSet<&str> {
        self.tasks.values().map(|(f, _)| f.as_str()).collect()
    }

    fn clusters(&self) -> BTreeSet<&str> {
        let mut c: BTreeSet<&str> = self.tasks.values().map(|(_, c)| c.as_str()).collect();
        if let Some(own) = &self.cluster {
            c.insert(own);
        }
        c
    }
}

fn family_of(taskdef: &str) -> &str {
    taskdef.split(':').next().unwrap_or(taskdef)
}

/// Which rule a key falls under for this agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyClass {
    OwnInstance,
    OwnLease,
    OwnStats,
    OwnEndpoint,
    OwnLogsSecret,
    Task,
    TaskDefinition,
    Cluster,
    Target,
    Other,
}

fn classify(scope: &Scope, key: &str) -> KeyClass {
    let me = scope.instance.as_str();
    if key == keys::key(Kind::ContainerInstance, me) {
        KeyClass::OwnInstance
    } else if key == keys::instance_lease_key(me) {
        KeyClass::OwnLease
    } else if key == stats_key(me) {
        KeyClass::OwnStats
    } else if key == identity::endpoint_key(me) {
        KeyClass::OwnEndpoint
    } else if key == identity::logs_secret_key(me) {
        KeyClass::OwnLogsSecret
    } else if keys::name_of(key, Kind::Task).is_some_and(|n| !n.is_empty() && !n.contains('/')) {
        KeyClass::Task
    } else if keys::name_of(key, Kind::TaskDefinition).is_some() {
        KeyClass::TaskDefinition
    } else if keys::name_of(key, Kind::Cluster).is_some_and(|n| !n.contains('/')) {
        KeyClass::Cluster
    } else if key.starts_with(lb_keys::TARGETS) {
        KeyClass::Target
    } else {
        KeyClass::Other
    }
}

fn task_on(value: &[u8], instance: &str) -> Result<Task, String> {
    let t: Task =
        serde_json::from_slice(value).map_err(|e| format!("the stored task is not valid: {e}"))?;
    if t.status.container_instance.as_deref() != Some(instance) {
        return Err(format!(
            "task {} is not placed on instance {instance}",
            t.metadata.name
        ));
    }
    Ok(t)
}

/// May the agent read `key` whose current value is `value` (None: the key does not exist)?
pub fn read(scope: &Scope, key: &str, value: Option<&[u8]>) -> Result<(), String> {
    let me = scope.instance.as_str();
    let deny = || Err(format!("instance {me} may not read {key}"));
    match classify(scope, key) {
        KeyClass::OwnInstance
        | KeyClass::OwnLease
        | KeyClass::OwnStats
        | KeyClass::OwnEndpoint
        | KeyClass::OwnLogsSecret => Ok(()),
        KeyClass::Task => match value {
            // Absent: nothing is revealed (the agent learns of its own deleted tasks).
            None => Ok(()),
            Some(v) => task_on(v, me).map(|_| ()),
        },
        KeyClass::TaskDefinition => {
            let rest = keys::name_of(key, Kind::TaskDefinition).unwrap_or("");
            let family = rest.split('/').next().unwrap_or("");
            if scope.families().contains(family) {
                Ok(())
            } else {
                deny()
            }
        }
        KeyClass::Cluster => {
            let name = keys::name_of(key, Kind::Cluster).unwrap_or("");
            if scope.clusters().contains(name) {
                Ok(())
            } else {
                deny()
            }
        }
        KeyClass::Target => {
            let task = key.rsplit('/').next().unwrap_or("");
            if scope.tasks.contains_key(task) {
                Ok(())
            } else {
                deny()
            }
        }
        KeyClass::Other => deny(),
    }
}

/// May a watch event reach the agent? A put is judged on its new value, a delete on the value
/// before it (a deleted task of another instance, or one whose old value is unknown, is not
/// delivered).
pub fn read_event(
    scope: &Scope,
    key: &str,
    delete: bool,
    value: &[u8],
    prev: Option<&[u8]>,
) -> bool {
    if !delete {
        return read(scope, key, Some(value)).is_ok();
    }
    match classify(scope, key) {
        KeyClass::Task => prev.is_some_and(|p| task_on(p, &scope.instance).is_ok()),
        _ => read(scope, key, prev).is_ok(),
    }
}

/// Keys whose writes must compare their current revision (the check is on the current value).
fn needs_compare(class: KeyClass) -> bool {
    matches!(class, KeyClass::Task | KeyClass::OwnInstance)
}

/// May the agent apply `op`, given the key's `current` value and whether the op's lease (if
/// any) was granted to it?
pub fn write(
    scope: &Scope,
    op: &Op,
    current: Option<&KeyValue>,
    lease_owned: bool,
) -> Result<(), String> {
    let me = scope.instance.as_str();
    let key = op.key();
    let deny = |why: &str| Err(format!("instance {me} may not write {key}: {why}"));
    let (value, lease) = match op {
        Op::Put { value, lease, .. } => (Some(value.as_slice()), *lease),
        Op::Delete { .. } => (None, 0),
    };
    if lease != 0 && !lease_owned {
        return deny(&format!("lease {lease} was not granted to this instance"));
    }
    match classify(scope, key) {
        KeyClass::OwnLease => match value {
            Some(_) if lease == 0 => deny("the instance lease key must be on a lease"),
            _ => Ok(()),
        },
        KeyClass::OwnStats | KeyClass::OwnLogsSecret => Ok(()),
        KeyClass::OwnEndpoint => match value {
            None => Ok(()),
            Some(v) => match serde_json::from_slice::<Endpoint>(v) {
                Ok(ep) if ep.instance == me => Ok(()),
                Ok(_) => deny("the endpoint names another instance"),
                Err(e) => deny(&format!("not an endpoint record: {e}")),
            },
        },
        KeyClass::OwnInstance => {
            let Some(v) = value else {
                return deny("an agent never deletes its instance record");
            };
            instance_write(me, current.map(|kv| kv.value.as_slice()), v).or_else(|w| deny(&w))
        }
        KeyClass::Task => {
            let Some(v) = value else {
                return deny("an agent never deletes a task");
            };
            let Some(cur) = current else {
                return deny("an agent never creates a task");
            };
            task_write(me, &cur.value, v).or_else(|w| deny(&w))
        }
        _ => deny("not a key an agent writes"),
    }
}

/// A task write changes only the status the agent reports.
fn task_write(me: &str, current: &[u8], new: &[u8]) -> Result<(), String> {
    let cur = task_on(current, me)?;
    let new: Task =
        serde_json::from_slice(new).map_err(|e| format!("the new value is not a task: {e}"))?;
    if new.status.container_instance.as_deref() != Some(me) {
        return Err("the task's placement (status.containerInstance) is the scheduler's".into());
    }
    if new.status.last_status < cur.status.last_status {
        return Err(format!(
            "lastStatus may not move back from {} to {}",
            cur.status.last_status, new.status.last_status
        ));
    }
    if new.status.desired_status != cur.status.desired_status {
        let stopping = cur.status.desired_status == DesiredStatus::Running
            && new.status.desired_status == DesiredStatus::Stopped
            && new.status.last_status >= TaskState::Deactivating;
        if !stopping {
            return Err(format!(
                "desiredStatus is not the agent's to change ({:?} → {:?}); an agent may only \
                 mark a task it is stopping (lastStatus DEACTIVATING or later) STOPPED",
                cur.status.desired_status, new.status.desired_status
            ));
        }
    }
    // Everything but the agent's own status fields must stay as it is.
    let mut expected = cur.clone();
    expected.metadata.revision = new.metadata.revision;
    let (e, n) = (&mut expected.status, &new.status);
    e.last_status = n.last_status;
    e.desired_status = n.desired_status;
    e.health_status = n.health_status;
    e.containers = n.containers.clone();
    e.stop_code = n.stop_code.clone();
    e.stopped_reason = n.stopped_reason.clone();
    e.started_at = n.started_at;
    e.stopping_at = n.stopping_at;
    e.stopped_at = n.stopped_at;
    e.task_ip = n.task_ip.clone();
    if expected != new {
        let what = if expected.spec != new.spec {
            "spec"
        } else if expected.metadata != new.metadata {
            "metadata"
        } else {
            "status fields the agent does not own"
        };
        return Err(format!(
            "an agent may change only a task's status, not its {what}"
        ));
    }
    Ok(())
}

/// An instance-record write changes only the registration fields.
fn instance_write(me: &str, current: Option<&[u8]>, new: &[u8]) -> Result<(), String> {
    let new: ContainerInstance = serde_json::from_slice(new)
        .map_err(|e| format!("the new value is not a container instance: {e}"))?;
    if new.metadata.name != me {
        return Err("the record names another instance".into());
    }
    let Some(current) = current else {
        let s = &new.status;
        let fresh = s.remaining_resources == s.registered_resources
            && s.running_tasks_count == 0
            && s.pending_tasks_count == 0
            && s.placement_generation == 0
            && s.status == "ACTIVE";
        return if fresh {
            Ok(())
        } else {
            Err("a new instance record starts ACTIVE with nothing placed on it".into())
        };
    };
    let cur: ContainerInstance = serde_json::from_slice(current)
        .map_err(|e| format!("the stored instance record is not valid: {e}"))?;
    let mut expected = cur.clone();
    expected.metadata.revision = new.metadata.revision;
    expected.spec.cluster = new.spec.cluster.clone();
    expected.spec.host_ip = new.spec.host_ip.clone();
    expected.spec.attributes = new.spec.attributes.clone();
    expected.status.registered_resources = new.status.registered_resources.clone();
    expected.status.docker_version = new.status.docker_version.clone();
    expected.status.agent_connected = new.status.agent_connected;
    let logs = crate::model::LOGS_ENDPOINT_ANNOTATION;
    match new.metadata.annotations.get(logs) {
        Some(v) => expected.metadata.annotations.insert(logs.into(), v.clone()),
        None => expected.metadata.annotations.remove(logs),
    };
    if expected != new {
        return Err(
            "an agent may change only its registration (cluster, host IP, attributes, \
             registered resources, Docker version, connection, logs endpoint)"
                .into(),
        );
    }
    Ok(())
}

/// The outcome of judging a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnDecision {
    /// Run it as it is.
    Run,
    /// A compare names a revision other than the current one: it cannot succeed; answer
    /// "not succeeded" without running it.
    Stale,
}

/// Judge a transaction: `current` holds the current value of every key it names (None:
/// absent), `owned` the leases granted to this agent.
pub fn txn(
    scope: &Scope,
    t: &Txn,
    current: &HashMap<String, Option<KeyValue>>,
    owned: &BTreeSet<i64>,
) -> Result<TxnDecision, String> {
    if !t.failure.is_empty() {
        return Err("an agent's transaction may not have a failure branch".into());
    }
    let written: BTreeSet<&str> = t.success.iter().map(Op::key).collect();
    let mut stale = false;
    for c in &t.compares {
        let Compare::ModRevision { key, revision } = c;
        if !written.contains(key.as_str()) {
            return Err(format!(
                "a transaction may compare only keys it writes ({key} is not written)"
            ));
        }
        let cur = current.get(key).and_then(|v| v.as_ref());
        if cur.map_or(0, |kv| kv.mod_revision) != *revision {
            stale = true;
        }
    }
    for op in &t.success {
        let key = op.key();
        let cur = current.get(key).and_then(|v| v.as_ref());
        let lease = match op {
            Op::Put { lease, .. } => *lease,
            Op::Delete { .. } => 0,
        };
        write(scope, op, cur, lease == 0 || owned.contains(&lease))?;
        if needs_compare(classify(scope, key))
            && !t
                .compares
                .iter()
                .any(|Compare::ModRevision { key: k, .. }| k == key)
        {
            return Err(format!(
                "a write to {key} must compare its revision (compare-and-swap)"
            ));
        }
    }
    Ok(if stale {
        TxnDecision::Stale
    } else {
        TxnDecision::Run
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContainerInstanceSpec, Resources, TaskSpec};

    const ME: &str = "i-a";

    fn task(id: &str, on: Option<&str>) -> Task {
        let mut t = Task::new(
            Kind::Task,
            id,
            TaskSpec {
                task_definition: "web:3".into(),
                cluster: "default".into(),
                ..Default::default()
            },
        );
        t.status.container_instance = on.map(str::to_string);
        t.status.last_status = TaskState::Pending;
        t
    }

    fn kv(key: &str, value: Vec<u8>, rev: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value,
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: 0,
        }
    }

    fn scope_with(tasks: &[Task]) -> Scope {
        let kvs: Vec<KeyValue> = tasks
            .iter()
            .map(|t| kv(&keys::key(Kind::Task, &t.metadata.name), t.to_bytes(), 5))
            .collect();
        let mut inst = ContainerInstance::new(
            Kind::ContainerInstance,
            ME,
            ContainerInstanceSpec {
                cluster: "prod".into(),
                ..Default::default()
            },
        );
        inst.status.status = "ACTIVE".into();
        Scope::from_values(ME, Some(&inst.to_bytes()), &kvs)
    }

    fn cas_txn(key: &str, rev: i64, value: Vec<u8>) -> Txn {
        Txn::new()
            .when(Compare::mod_revision(key, rev))
            .and_then(Op::put(key, value))
    }

    fn current(key: &str, value: Vec<u8>, rev: i64) -> HashMap<String, Option<KeyValue>> {
        HashMap::from([(key.to_string(), Some(kv(key, value, rev)))])
    }

    #[test]
    fn reads_cover_only_the_instances_own_work() {
        let mine = task("t1", Some(ME));
        let other = task("t2", Some("i-b"));
        let s = scope_with(&[mine.clone(), other.clone()]);
        let tk = |id: &str| keys::key(Kind::Task, id);
        assert!(read(&s, &tk("t1"), Some(&mine.to_bytes())).is_ok());
        assert!(read(&s, &tk("t2"), Some(&other.to_bytes())).is_err());
        assert!(read(&s, &tk("gone"), None).is_ok());
        assert!(read(&s, &keys::key(Kind::ContainerInstance, ME), None).is_ok());
        assert!(read(&s, &keys::key(Kind::ContainerInstance, "i-b"), None).is_err());
        assert!(read(&s, &keys::instance_lease_key("i-b"), None).is_err());
        assert!(read(&s, &keys::taskdef_key("web", 3), None).is_ok());
        assert!(read(&s, &keys::taskdef_key("db", 1), None).is_err());
        assert!(read(&s, &keys::key(Kind::Cluster, "default"), None).is_ok());
        assert!(read(&s, &keys::key(Kind::Cluster, "prod"), None).is_ok());
        assert!(read(&s, &keys::key(Kind::Cluster, "other"), None).is_err());
        assert!(read(&s, &lb_keys::target("tg", "t1"), None).is_ok());
        assert!(read(&s, &lb_keys::target("tg", "t2"), None).is_err());
        for k in [
            super::super::crypto::SERVER_KEY,
            "/berth/auth/identities/admin",
            "/berth/auth/taskcreds/t1",
            "/berth/secrets/db",
            "/berth/services/web",
            "/berth/agent/credentials/x",
            "/berth/roles/admin",
        ] {
            assert!(read(&s, k, Some(b"{}")).is_err(), "{k}");
        }
        // Watch events: a put by its new value, a delete by its old one.
        assert!(read_event(&s, &tk("t1"), false, &mine.to_bytes(), None));
        assert!(!read_event(&s, &tk("t2"), false, &other.to_bytes(), None));
        assert!(read_event(&s, &tk("t1"), true, b"", Some(&mine.to_bytes())));
        assert!(!read_event(&s, &tk("t1"), true, b"", None));
    }

    #[test]
    fn task_writes_are_status_only_and_own_tasks_only() {
        let mine = task("t1", Some(ME));
        let s = scope_with(std::slice::from_ref(&mine));
        let key = keys::key(Kind::Task, "t1");
        let cur = current(&key, mine.to_bytes(), 7);
        let owned = BTreeSet::new();
        let mut running = mine.clone();
        running.status.last_status = TaskState::Running;
        running.status.health_status = crate::model::HealthStatus::Healthy;
        assert_eq!(
            txn(&s, &cas_txn(&key, 7, running.to_bytes()), &cur, &owned),
            Ok(TxnDecision::Run)
        );
        // A stale compare is answered without running.
        assert_eq!(
            txn(&s, &cas_txn(&key, 6, running.to_bytes()), &cur, &owned),
            Ok(TxnDecision::Stale)
        );
        // No compare: refused.
        let blind = Txn::new().and_then(Op::put(&key, running.to_bytes()));
        assert!(txn(&s, &blind, &cur, &owned).is_err());
        // Spec, placement and desired status are not the agent's.
        let mut spec = mine.clone();
        spec.spec.task_definition = "evil:1".into();
        assert!(txn(&s, &cas_txn(&key, 7, spec.to_bytes()), &cur, &owned)
            .unwrap_err()
            .contains("spec"));
        let mut moved = mine.clone();
        moved.status.container_instance = Some("i-b".into());
        assert!(txn(&s, &cas_txn(&key, 7, moved.to_bytes()), &cur, &owned).is_err());
        let mut desired = mine.clone();
        desired.status.desired_status = DesiredStatus::Stopped;
        assert!(txn(&s, &cas_txn(&key, 7, desired.to_bytes()), &cur, &owned)
            .unwrap_err()
            .contains("desiredStatus"));
        // ... except marking a task it is stopping STOPPED.
        desired.status.last_status = TaskState::Deactivating;
        assert!(txn(&s, &cas_txn(&key, 7, desired.to_bytes()), &cur, &owned).is_ok());
        // A stopped task cannot be brought back.
        let mut stopped = mine.clone();
        stopped.status.last_status = TaskState::Stopped;
        stopped.status.desired_status = DesiredStatus::Stopped;
        let cur_stopped = current(&key, stopped.to_bytes(), 8);
        let mut revived = stopped.clone();
        revived.status.desired_status = DesiredStatus::Running;
        assert!(txn(
            &s,
            &cas_txn(&key, 8, revived.to_bytes()),
            &cur_stopped,
            &owned
        )
        .is_err());
        revived.status.last_status = TaskState::Running;
        assert!(txn(
            &s,
            &cas_txn(&key, 8, revived.to_bytes()),
            &cur_stopped,
            &owned
        )
        .is_err());
        // Another instance's task, a delete, a create, a failure branch: refused.
        let other = task("t2", Some("i-b"));
        let okey = keys::key(Kind::Task, "t2");
        let ocur = current(&okey, other.to_bytes(), 3);
        let mut o2 = other.clone();
        o2.status.last_status = TaskState::Running;
        assert!(txn(&s, &cas_txn(&okey, 3, o2.to_bytes()), &ocur, &owned).is_err());
        let del = Txn::new()
            .when(Compare::mod_revision(&key, 7))
            .and_then(Op::delete(&key));
        assert!(txn(&s, &del, &cur, &owned).is_err());
        let create = cas_txn(&keys::key(Kind::Task, "new"), 0, mine.to_bytes());
        assert!(txn(&s, &create, &HashMap::new(), &owned).is_err());
        let fb = cas_txn(&key, 7, running.to_bytes()).or_else(Op::delete(&key));
        assert!(txn(&s, &fb, &cur, &owned).is_err());
        // Compares only on written keys (no probing of other keys' revisions).
        let probe = cas_txn(&key, 7, running.to_bytes())
            .when(Compare::mod_revision(super::super::crypto::SERVER_KEY, 1));
        assert!(txn(&s, &probe, &cur, &owned).is_err());
    }

    #[test]
    fn instance_record_writes_are_registration_only() {
        let s = Scope::new(ME);
        let key = keys::key(Kind::ContainerInstance, ME);
        let res = Resources {
            cpu: 2048,
            memory: 1024,
            ports: vec![],
        };
        let mut inst = ContainerInstance::new(
            Kind::ContainerInstance,
            ME,
            ContainerInstanceSpec::default(),
        );
        inst.status.status = "ACTIVE".into();
        inst.status.registered_resources = res.clone();
        inst.status.remaining_resources = res.clone();
        let none = HashMap::new();
        let owned = BTreeSet::new();
        assert!(txn(&s, &cas_txn(&key, 0, inst.to_bytes()), &none, &owned).is_ok());
        let mut greedy = inst.clone();
        greedy.status.remaining_resources.cpu = 99999;
        assert!(txn(&s, &cas_txn(&key, 0, greedy.to_bytes()), &none, &owned).is_err());
        // Existing record: registration fields yes, the scheduler's fields no.
        let cur = current(&key, inst.to_bytes(), 4);
        let mut reg = inst.clone();
        reg.spec.host_ip = "10.0.0.2".into();
        reg.status.docker_version = "27".into();
        reg.status.agent_connected = true;
        reg.metadata.annotations.insert(
            crate::model::LOGS_ENDPOINT_ANNOTATION.into(),
            "http://10.0.0.2:1".into(),
        );
        assert!(txn(&s, &cas_txn(&key, 4, reg.to_bytes()), &cur, &owned).is_ok());
        let mut sched = inst.clone();
        sched.status.remaining_resources.cpu = 0;
        assert!(txn(&s, &cas_txn(&key, 4, sched.to_bytes()), &cur, &owned).is_err());
        let mut drain = inst.clone();
        drain.status.status = "DRAINING".into();
        assert!(txn(&s, &cas_txn(&key, 4, drain.to_bytes()), &cur, &owned).is_err());
        // Another instance's record.
        let okey = keys::key(Kind::ContainerInstance, "i-b");
        let mut other = inst.clone();
        other.metadata.name = "i-b".into();
        assert!(txn(&s, &cas_txn(&okey, 0, other.to_bytes()), &none, &owned).is_err());
    }

    #[test]
    fn leases_and_side_keys() {
        let s = Scope::new(ME);
        let none = HashMap::new();
        let owned = BTreeSet::from([42]);
        let lease_key = keys::instance_lease_key(ME);
        let put = |k: &str, l: i64| Txn::new().and_then(Op::put_with_lease(k, b"x".to_vec(), l));
        assert!(txn(&s, &put(&lease_key, 42), &none, &owned).is_ok());
        assert!(txn(&s, &put(&lease_key, 43), &none, &owned).is_err());
        assert!(txn(&s, &put(&lease_key, 0), &none, &owned).is_err());
        assert!(txn(
            &s,
            &put(&keys::instance_lease_key("i-b"), 42),
            &none,
            &owned
        )
        .is_err());
        assert!(txn(&s, &put(&stats_key(ME), 42), &none, &owned).is_ok());
        assert!(txn(&s, &put(&stats_key("i-b"), 42), &none, &owned).is_err());
        let ep = |inst: &str| {
            serde_json::to_vec(&Endpoint {
                url: "http://x".into(),
                instance: inst.into(),
            })
            .unwrap()
        };
        let ek = identity::endpoint_key(ME);
        assert!(txn(
            &s,
            &Txn::new().and_then(Op::put(&ek, ep(ME))),
            &none,
            &owned
        )
        .is_ok());
        assert!(txn(
            &s,
            &Txn::new().and_then(Op::put(&ek, ep("i-b"))),
            &none,
            &owned
        )
        .is_err());
        let lo = super::super::agent_join::lease_owner_key(42);
        assert!(txn(&s, &put(&lo, 0), &none, &owned).is_err());
    }
}
