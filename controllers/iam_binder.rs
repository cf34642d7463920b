//! iam_binder controller: binds each task whose task definition names a `taskRole` to fresh,
//! expiring, per-task credentials; rotates them before they expire; revokes them when the
//! task stops (or disappears).
//!
//! A binding is `/berth/auth/taskcreds/<task>` plus one `/berth/auth/accesskeys/ASIA…` record
//! per live key. No secret is stored: the secret access key and session token are derived
//! from the server key and the access key id, and stop working the moment the records go.
//! Rotation keeps the previous key valid until its own expiry, so a request signed just
//! before a rotation still verifies. Lifetime: `BERTH_TASK_CREDENTIALS_TTL` (default 1h);
//! rotation at a quarter of the lifetime before expiry (at most 15 minutes before).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::time::Duration;

use berth_core::auth::actions::task_role_name;
use berth_core::auth::crypto::random_key_id;
use berth_core::auth::identity::{
    access_key_key, get_task_creds, task_creds_key, AccessKey, TaskCreds, TASK_CREDS,
};
use berth_core::model::{keys, now, Kind, Task};
use berth_core::objects;
use berth_core::runtime::cluster_cache::{ACTIVE, TASKS_BY_PHASE};
use berth_core::runtime::{
    Action, ClusterCache, Controller, ControllerOptions, Reconciler, Trigger,
};
use berth_core::store::{Compare, DynStore, KeyValue, Op, Txn};

pub const TTL_ENV: &str = "BERTH_TASK_CREDENTIALS_TTL";
const DEFAULT_TTL: Duration = Duration::from_secs(3600);

pub struct IamBinder {
    store: DynStore,
    ttl: Duration,
    /// With a shared cache: which tasks may hold credentials, and where to list them from.
    cached: Option<(ClusterCache, Concerns)>,
}

type Concerns = Arc<dyn Fn(&Task) -> bool + Send + Sync>;

/// Credential lifetime from the environment (at least 10 s), else one hour.
pub fn ttl_from_env() -> Duration {
    std::env::var(TTL_ENV)
        .ok()
        .and_then(|v| berth_core::util::parse_duration(&v).ok())
        .map(|d| d.max(Duration::from_secs(10)))
        .unwrap_or(DEFAULT_TTL)
}

impl IamBinder {
    pub fn controller(store: DynStore) -> Controller {
        Self::with_ttl(store, ttl_from_env())
    }

    /// On the process's shared cache: only tasks that may hold credentials are reconciled
    /// (their definition names a role, or they stopped and may need a revocation), instead of
    /// every change of every task.
    pub fn controller_with(store: DynStore, cache: &ClusterCache) -> Controller {
        let c = cache.clone();
        let concerns: Concerns = Arc::new(move |t: &Task| {
            t.is_stopped()
                || c.taskdef(&t.spec.task_definition)
                    .is_none_or(|td| td.spec.task_role.is_some())
        });
        Self::build(
            store,
            ttl_from_env(),
            concerns.clone(),
            Some((cache.clone(), concerns)),
        )
    }

    pub fn with_ttl(store: DynStore, ttl: Duration) -> Controller {
        Self::build(store, ttl, Arc::new(|_: &Task| true), None)
    }

    fn build(
        store: DynStore,
        ttl: Duration,
        concerns: Concerns,
        cached: Option<(ClusterCache, Concerns)>,
    ) -> Controller {
        let r = Arc::new(IamBinder {
            store: store.clone(),
            ttl,
            cached,
        });
        let task_key = move |t: &Task| -> Vec<String> {
            if concerns(t) {
                vec![t.metadata.name.clone()]
            } else {
                vec![]
            }
        };
        let binding_key = |kv: &KeyValue| -> Vec<String> {
            kv.key
                .strip_prefix(TASK_CREDS)
                .map(|n| vec![n.to_string()])
                .unwrap_or_default()
        };
        Controller::new(
            "iam_binder",
            store,
            r,
            ControllerOptions {
                workers: 2,
                resync: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .trigger(Trigger::on::<Task>(keys::prefix(Kind::Task), task_key))
        .trigger(Trigger::new(TASK_CREDS, binding_key))
    }

    fn rotate_before(&self) -> chrono::Duration {
        let quarter = self.ttl / 4;
        chrono::Duration::from_std(quarter.min(Duration::from_secs(900))).unwrap_or_default()
    }

    /// The role the task should hold now: its definition's `taskRole` while it is not stopped.
    async fn wanted_role(&self, task: Option<&Task>) -> anyhow::Result<Option<String>> {
        let Some(t) = task.filter(|t| !t.is_stopped()) else {
            return Ok(None);
        };
        let td = objects::taskdef(&*self.store, &t.spec.task_definition).await?;
        Ok(td
            .and_then(|td| td.spec.task_role)
            .filter(|r| !r.is_empty())
            .map(|r| task_role_name(&r).to_string()))
    }

    fn new_key(&self, task: &str, role: &str, t: DateTime<Utc>) -> AccessKey {
        AccessKey {
            access_key_id: random_key_id("ASIA", 16),
            identity: None,
            task: Some(task.to_string()),
            role: role.to_string(),
            expiration: Some(t + chrono::Duration::from_std(self.ttl).unwrap_or_default()),
            created_at: t,
        }
    }
}

fn json(v: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

#[async_trait]
impl Reconciler for IamBinder {
    async fn reconcile(&self, id: &str) -> anyhow::Result<Action> {
        let task: Option<Task> = objects::get(&*self.store, &keys::key(Kind::Task, id)).await?;
        let role = self.wanted_role(task.as_ref()).await?;
        let bkey = task_creds_key(id);
        let binding = get_task_creds(&*self.store, id).await?;
        let t = now();
        match (role, binding) {
            (None, None) => Ok(Action::Done),
            (None, Some((b, rev))) => {
                // Revoke: the binding and every key it names, atomically.
                let mut txn = Txn::new()
                    .when(Compare::mod_revision(&bkey, rev))
                    .and_then(Op::delete(&bkey))
                    .and_then(Op::delete(access_key_key(&b.access_key_id)));
                for p in &b.previous {
                    txn = txn.and_then(Op::delete(access_key_key(p)));
                }
                if !self.store.txn(txn).await?.succeeded {
                    return Ok(Action::Requeue);
                }
                tracing::info!(task = %id, role = %b.role, "task credentials revoked");
                Ok(Action::Done)
            }
            (Some(role), None) => {
                let ak = self.new_key(id, &role, t);
                let b = TaskCreds {
                    task: id.to_string(),
                    role: role.clone(),
                    access_key_id: ak.access_key_id.clone(),
                    expiration: ak.expiration.unwrap_or(t),
                    issued_at: t,
                    previous: vec![],
                };
                let ok = self
                    .store
                    .txn(
                        Txn::new()
                            .when(Compare::absent(&bkey))
                            .and_then(Op::put(access_key_key(&ak.access_key_id), json(&ak)))
                            .and_then(Op::put(&bkey, json(&b))),
                    )
                    .await?
                    .succeeded;
                if !ok {
                    return Ok(Action::Requeue);
                }
                tracing::info!(task = %id, %role, access_key = %ak.access_key_id, "task credentials issued");
                Ok(Action::RequeueAfter(self.until_rotation(&b, t)))
            }
            (Some(role), Some((mut b, rev))) => {
                let mut txn = Txn::new().when(Compare::mod_revision(&bkey, rev));
                let mut changed = false;
                // Forget previous keys that have expired.
                let mut keep = Vec::new();
                for p in std::mem::take(&mut b.previous) {
                    let live =
                        match berth_core::auth::identity::get_access_key(&*self.store, &p).await? {
                            Some(k) => k.expiration.is_some_and(|e| e > t),
                            None => false,
                        };
                    if live {
                        keep.push(p);
                    } else {
                        txn = txn.and_then(Op::delete(access_key_key(&p)));
                        changed = true;
                    }
                }
                b.previous = keep;
                if b.role != role || b.expiration - t <= self.rotate_before() {
                    let ak = self.new_key(id, &role, t);
                    if b.role == role && b.expiration > t {
                        b.previous.push(b.access_key_id.clone());
                    } else {
                        txn = txn.and_then(Op::delete(access_key_key(&b.access_key_id)));
                    }
                    b.access_key_id = ak.access_key_id.clone();
                    b.expiration = ak.expiration.unwrap_or(t);
                    b.issued_at = t;
                    b.role = role.clone();
                    txn = txn.and_then(Op::put(access_key_key(&ak.access_key_id), json(&ak)));
                    changed = true;
                    tracing::info!(task = %id, %role, access_key = %ak.access_key_id, "task credentials rotated");
                }
                if changed {
                    txn = txn.and_then(Op::put(&bkey, json(&b)));
                    if !self.store.txn(txn).await?.succeeded {
                        return Ok(Action::Requeue);
                    }
                }
                Ok(Action::RequeueAfter(self.until_rotation(&b, t)))
            }
        }
    }

    async fn resync_keys(&self) -> anyhow::Result<Vec<String>> {
        if let Some((cache, concerns)) =
            self.cached.as_ref().filter(|(c, _)| c.informer.is_synced())
        {
            // Tasks that may hold credentials, and every binding's task (which may be gone).
            let mut out: Vec<String> = cache
                .tasks
                .by_index(TASKS_BY_PHASE, ACTIVE)
                .iter()
                .filter(|t| concerns(t))
                .map(|t| t.metadata.name.clone())
                .collect();
            let bindings = match cache.informer.keys(TASK_CREDS) {
                Some(keys) => keys,
                None => {
                    let (kvs, _) = self.store.range(TASK_CREDS).await?;
                    kvs.into_iter().map(|kv| kv.key).collect()
                }
            };
            out.extend(
                bindings
                    .iter()
                    .filter_map(|k| k.strip_prefix(TASK_CREDS).map(str::to_string)),
            );
            out.sort();
            out.dedup();
            return Ok(out);
        }
        let mut out: Vec<String> = objects::list_tasks(&*self.store)
            .await?
            .into_iter()
            .filter(|t| !t.is_stopped())
            .map(|t| t.metadata.name)
            .collect();
        let (kvs, _) = self.store.range(TASK_CREDS).await?;
        out.extend(
            kvs.iter()
                .filter_map(|kv| kv.key.strip_prefix(TASK_CREDS).map(str::to_string)),
        );
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl IamBinder {
    fn until_rotation(&self, b: &TaskCreds, t: DateTime<Utc>) -> Duration {
        (b.expiration - self.rotate_before() - t)
            .to_std()
            .unwrap_or(Duration::from_millis(100))
            .max(Duration::from_millis(100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::model::{
        ContainerDefinition, DesiredStatus, TaskDefinition, TaskDefinitionSpec, TaskSpec, TaskState,
    };
    use berth_core::store::embedded::EmbeddedStore;

    async fn setup() -> (tempfile::TempDir, DynStore) {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let mut td = TaskDefinition::new(
            Kind::TaskDefinition,
            "job:1",
            TaskDefinitionSpec {
                task_role: Some("arn:aws:iam::1:role/reader".into()),
                container_definitions: vec![ContainerDefinition {
                    name: "c".into(),
                    image: "i".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        td.status.family = "job".into();
        td.status.revision = 1;
        td.status.status = "ACTIVE".into();
        store
            .put(&keys::taskdef_key("job", 1), td.to_bytes())
            .await
            .unwrap();
        let mut t = Task::new(
            Kind::Task,
            "t1",
            TaskSpec {
                task_definition: "job:1".into(),
                cluster: "default".into(),
                ..Default::default()
            },
        );
        t.status.desired_status = DesiredStatus::Running;
        store
            .put(&keys::key(Kind::Task, "t1"), t.to_bytes())
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn issue_rotate_revoke() {
        let (_d, store) = setup().await;
        let b = IamBinder {
            store: store.clone(),
            ttl: Duration::from_secs(40),
            cached: None,
        };
        b.reconcile("t1").await.unwrap();
        let (c1, _) = get_task_creds(&*store, "t1").await.unwrap().unwrap();
        assert_eq!(c1.role, "reader");
        assert!(c1.access_key_id.starts_with("ASIA"));
        // Nothing to do yet.
        b.reconcile("t1").await.unwrap();
        assert_eq!(get_task_creds(&*store, "t1").await.unwrap().unwrap().0, c1);

        // Pretend it is close to expiry: rotation keeps the old key as previous.
        let mut near = c1.clone();
        near.expiration = now() + chrono::Duration::seconds(5);
        store
            .put(&task_creds_key("t1"), serde_json::to_vec(&near).unwrap())
            .await
            .unwrap();
        b.reconcile("t1").await.unwrap();
        let (c2, _) = get_task_creds(&*store, "t1").await.unwrap().unwrap();
        assert_ne!(c2.access_key_id, c1.access_key_id);
        assert_eq!(c2.previous, vec![c1.access_key_id.clone()]);

        // The task stops: everything goes.
        let mut t: Task = objects::get(&*store, &keys::key(Kind::Task, "t1"))
            .await
            .unwrap()
            .unwrap();
        t.status.last_status = TaskState::Stopped;
        store
            .put(&keys::key(Kind::Task, "t1"), t.to_bytes())
            .await
            .unwrap();
        b.reconcile("t1").await.unwrap();
        assert!(get_task_creds(&*store, "t1").await.unwrap().is_none());
        for k in [&c1.access_key_id, &c2.access_key_id] {
            assert!(store.get(&access_key_key(k)).await.unwrap().is_none());
        }
    }
}
