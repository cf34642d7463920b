//! Garbage collection of STOPPED tasks that no live service owns: tasks of `run-task` and of
//! services that were deleted. A live service's own stopped tasks are collected by the service
//! controller (`service.rs`, `collect_garbage`) after the same retention, so the store's size
//! follows the cluster's, not its history (ARCHITECTURE.md, "Store").

use std::sync::Arc;

use async_trait::async_trait;
use tokio::time::Duration;

use berth_core::model::{keys, now, Kind, Task};
use berth_core::objects::{self, ObjectError};
use berth_core::runtime::cluster_cache::{STOPPED, TASKS_BY_PHASE};
use berth_core::runtime::{
    Action, ClusterCache, Controller, ControllerOptions, Reconciler, Trigger,
};
use berth_core::store::{DynStore, KeyValue};

/// A stopped task stays readable this long (as on ECS, about an hour), as the service
/// controller keeps a live service's.
pub const RETENTION: chrono::Duration = crate::service::STOPPED_TASK_RETENTION;

pub struct GcController {
    store: DynStore,
    retention: chrono::Duration,
    /// When shared, the resync offers the cache's stopped tasks instead of listing the store.
    cache: Option<ClusterCache>,
}

/// The task garbage collector with the default [`RETENTION`].
pub fn controller(store: DynStore) -> Controller {
    GcController::controller(store, RETENTION, None)
}

/// The task garbage collector on the process's shared cache.
pub fn controller_with(store: DynStore, cache: &ClusterCache) -> Controller {
    GcController::controller(store, RETENTION, Some(cache.clone())).shared(&cache.informer)
}

/// A stopped task's id, for the trigger: only stopped tasks concern this controller.
fn stopped_task(kv: &KeyValue) -> Vec<String> {
    serde_json::from_slice::<Task>(&kv.value)
        .ok()
        .filter(|t| t.is_stopped())
        .map(|t| t.metadata.name)
        .into_iter()
        .collect()
}

impl GcController {
    pub fn controller(
        store: DynStore,
        retention: chrono::Duration,
        cache: Option<ClusterCache>,
    ) -> Controller {
        let r = Arc::new(GcController {
            store: store.clone(),
            retention,
            cache,
        });
        Controller::new(
            "gc",
            store,
            r,
            ControllerOptions {
                workers: 1,
                // Stopped tasks are also requeued for their own deadline, so this only covers
                // lost events.
                resync: Duration::from_secs(300),
                ..Default::default()
            },
        )
        .trigger(Trigger::new(keys::prefix(Kind::Task), stopped_task))
    }

    /// Whether a live service owns the task (then the service controller collects it).
    async fn owned_by_live_service(&self, t: &Task) -> anyhow::Result<bool> {
        let Some(service) = t.spec.group.strip_prefix("service:") else {
            return Ok(false);
        };
        Ok(self
            .store
            .get(&keys::key(Kind::Service, service))
            .await?
            .is_some())
    }
}

#[async_trait]
impl Reconciler for GcController {
    async fn reconcile(&self, id: &str) -> anyhow::Result<Action> {
        let key = keys::key(Kind::Task, id);
        let Some(t) = objects::get::<_, _>(&*self.store, &key).await? else {
            return Ok(Action::Done);
        };
        let t: Task = t;
        if !t.is_stopped() || self.owned_by_live_service(&t).await? {
            return Ok(Action::Done);
        }
        // A stopped task without a stop time is aged from its creation; without either, it
        // has no age to wait for.
        let since = t.status.stopped_at.or(t.metadata.created_at);
        if let Some(since) = since {
            let left = since + self.retention - now();
            if left > chrono::Duration::zero() {
                let left = left.to_std().unwrap_or_default() + Duration::from_millis(10);
                return Ok(Action::RequeueAfter(left));
            }
        }
        match objects::delete_cas(&*self.store, &key, t.metadata.revision).await {
            // Changed meanwhile: the write enqueued it again.
            Ok(()) | Err(ObjectError::Conflict(_)) => Ok(Action::Done),
            Err(e) => Err(e.into()),
        }
    }

    async fn resync_keys(&self) -> anyhow::Result<Vec<String>> {
        if let Some(c) = self.cache.as_ref().filter(|c| c.informer.is_synced()) {
            return Ok(c
                .tasks
                .by_index(TASKS_BY_PHASE, STOPPED)
                .iter()
                .map(|t| t.metadata.name.clone())
                .collect());
        }
        let (kvs, _) = self.store.range(&keys::prefix(Kind::Task)).await?;
        Ok(kvs.iter().flat_map(stopped_task).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::model::{DesiredStatus, Service, ServiceSpec, TaskSpec, TaskState, TaskStatus};
    use berth_core::store::embedded::EmbeddedStore;

    fn store() -> (tempfile::TempDir, DynStore) {
        let dir = tempfile::tempdir().unwrap();
        let s: DynStore = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        (dir, s)
    }

    async fn put_task(
        s: &DynStore,
        id: &str,
        group: &str,
        state: TaskState,
        stopped_ago: Option<chrono::Duration>,
    ) {
        let mut t = Task::new(
            Kind::Task,
            id,
            TaskSpec {
                task_definition: "job:1".into(),
                cluster: "default".into(),
                group: group.into(),
                ..Default::default()
            },
        );
        t.metadata.created_at = Some(now() - chrono::Duration::hours(3));
        t.status = TaskStatus {
            last_status: state,
            desired_status: if state == TaskState::Stopped {
                DesiredStatus::Stopped
            } else {
                DesiredStatus::Running
            },
            stopped_at: stopped_ago.map(|a| now() - a),
            ..Default::default()
        };
        s.put(&keys::key(Kind::Task, id), t.to_bytes())
            .await
            .unwrap();
    }

    async fn exists(s: &DynStore, id: &str) -> bool {
        s.get(&keys::key(Kind::Task, id)).await.unwrap().is_some()
    }

    fn gc(s: &DynStore) -> GcController {
        GcController {
            store: s.clone(),
            retention: RETENTION,
            cache: None,
        }
    }

    #[tokio::test]
    async fn old_stopped_run_task_is_deleted_recent_one_waits() {
        let (_d, s) = store();
        let two_hours = Some(chrono::Duration::hours(2));
        put_task(&s, "old", "family:job", TaskState::Stopped, two_hours).await;
        put_task(
            &s,
            "recent",
            "family:job",
            TaskState::Stopped,
            Some(chrono::Duration::minutes(10)),
        )
        .await;
        let g = gc(&s);
        assert_eq!(g.reconcile("old").await.unwrap(), Action::Done);
        assert!(!exists(&s, "old").await);
        match g.reconcile("recent").await.unwrap() {
            Action::RequeueAfter(d) => {
                assert!(d > Duration::from_secs(49 * 60) && d <= Duration::from_secs(50 * 60 + 1))
            }
            other => panic!("expected a requeue at the deadline, got {other:?}"),
        }
        assert!(exists(&s, "recent").await);
    }

    #[tokio::test]
    async fn running_tasks_and_live_services_tasks_are_kept() {
        let (_d, s) = store();
        let svc = Service::new(Kind::Service, "web", ServiceSpec::default());
        objects::put_cas(&*s, &keys::key(Kind::Service, "web"), &svc)
            .await
            .unwrap();
        let old = Some(chrono::Duration::hours(2));
        put_task(&s, "live-svc", "service:web", TaskState::Stopped, old).await;
        put_task(&s, "running", "family:job", TaskState::Running, None).await;
        put_task(&s, "deleted-svc", "service:gone", TaskState::Stopped, old).await;
        let g = gc(&s);
        for id in ["live-svc", "running", "deleted-svc"] {
            assert_eq!(g.reconcile(id).await.unwrap(), Action::Done);
        }
        assert!(
            exists(&s, "live-svc").await,
            "the service controller owns it"
        );
        assert!(exists(&s, "running").await);
        assert!(!exists(&s, "deleted-svc").await, "its service is gone");
        assert_eq!(g.reconcile("no-such-task").await.unwrap(), Action::Done);
    }

    #[tokio::test]
    async fn resync_offers_only_stopped_tasks() {
        let (_d, s) = store();
        put_task(&s, "a", "family:job", TaskState::Stopped, None).await;
        put_task(&s, "b", "family:job", TaskState::Running, None).await;
        assert_eq!(gc(&s).resync_keys().await.unwrap(), vec!["a".to_string()]);
    }

    #[tokio::test]
    async fn collected_once_the_retention_has_passed() {
        let (_d, s) = store();
        let g = GcController {
            store: s.clone(),
            retention: chrono::Duration::milliseconds(200),
            cache: None,
        };
        let zero = Some(chrono::Duration::zero());
        put_task(&s, "job-1", "family:job", TaskState::Stopped, zero).await;
        let Action::RequeueAfter(d) = g.reconcile("job-1").await.unwrap() else {
            panic!("expected a requeue at the deadline");
        };
        assert!(exists(&s, "job-1").await);
        tokio::time::sleep(d).await;
        assert_eq!(g.reconcile("job-1").await.unwrap(), Action::Done);
        assert!(!exists(&s, "job-1").await);
    }
}
