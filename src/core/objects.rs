//! Typed reads and compare-and-swap writes of model objects in the store.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::model::{
    keys, now, parse_taskdef_ref, ContainerInstance, Kind, Object, Service, Task, TaskDefinition,
};
use crate::store::{Compare, Op, Store, StoreError, Txn};

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored object {key} is not valid: {source}")]
    Decode {
        key: String,
        source: serde_json::Error,
    },
    /// The object changed since it was read (optimistic concurrency).
    #[error("conflict: {0} was modified concurrently")]
    Conflict(String),
}

pub type Result<T, E = ObjectError> = std::result::Result<T, E>;

pub async fn get<S, T>(store: &dyn Store, key: &str) -> Result<Option<Object<S, T>>>
where
    S: DeserializeOwned,
    T: DeserializeOwned + Default,
{
    match store.get(key).await? {
        None => Ok(None),
        Some(kv) => Object::from_kv(&kv)
            .map(Some)
            .map_err(|source| ObjectError::Decode {
                key: key.to_string(),
                source,
            }),
    }
}

/// Every object under `prefix`; undecodable entries are skipped with a warning so one bad
/// record cannot stall a controller.
pub async fn list<S, T>(store: &dyn Store, prefix: &str) -> Result<Vec<Object<S, T>>>
where
    S: DeserializeOwned,
    T: DeserializeOwned + Default,
{
    let (kvs, _) = store.range(prefix).await?;
    Ok(kvs
        .iter()
        .filter_map(|kv| match Object::from_kv(kv) {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::warn!(key = %kv.key, error = %e, "skipping undecodable object");
                None
            }
        })
        .collect())
}

/// Compare-and-swap write: succeeds only if the key's mod revision is still
/// `obj.metadata.revision` (0 = must not exist). Returns the new revision.
pub async fn put_cas<S: Serialize, T: Serialize>(
    store: &dyn Store,
    key: &str,
    obj: &Object<S, T>,
) -> Result<i64> {
    let txn = Txn::new()
        .when(Compare::mod_revision(key, obj.metadata.revision))
        .and_then(Op::put(key, obj.to_bytes()));
    let r = store.txn(txn).await?;
    if r.succeeded {
        Ok(r.revision)
    } else {
        Err(ObjectError::Conflict(key.to_string()))
    }
}

pub async fn delete_cas(store: &dyn Store, key: &str, revision: i64) -> Result<()> {
    let txn = Txn::new()
        .when(Compare::mod_revision(key, revision))
        .and_then(Op::delete(key));
    if store.txn(txn).await?.succeeded {
        Ok(())
    } else {
        Err(ObjectError::Conflict(key.to_string()))
    }
}

pub fn task_key(id: &str) -> String {
    keys::key(Kind::Task, id)
}

pub async fn list_tasks(store: &dyn Store) -> Result<Vec<Task>> {
    list(store, &keys::prefix(Kind::Task)).await
}

/// Re-read a task, apply `f`, write it back with CAS; retry on conflict. `f` returns false to
/// leave the task as it is. Returns the task as finally stored (None if it vanished).
pub async fn update_task(
    store: &dyn Store,
    id: &str,
    f: impl FnMut(&mut Task) -> bool,
) -> Result<Option<Task>> {
    update_task_from(store, id, None, f).await
}

/// [`update_task`] starting from `known`, a copy read earlier: its revision guards the first
/// write, so an unchanged task costs one write instead of a read and a write. A stale copy
/// fails that compare and the loop re-reads as usual.
pub async fn update_task_from(
    store: &dyn Store,
    id: &str,
    known: Option<&Task>,
    mut f: impl FnMut(&mut Task) -> bool,
) -> Result<Option<Task>> {
    let key = task_key(id);
    let mut first = known
        .filter(|t| t.metadata.name == id && t.metadata.revision > 0)
        .cloned();
    for _ in 0..20 {
        let from_known = first.is_some();
        let Some(mut t) = (match first.take() {
            Some(t) => Some(t),
            None => get::<_, _>(store, &key).await?,
        }) else {
            return Ok(None);
        };
        let t: &mut Task = &mut t;
        if !f(t) {
            if from_known {
                // Only the store's copy may decide that nothing is to be written.
                continue;
            }
            return Ok(Some(t.clone()));
        }
        match put_cas(store, &key, t).await {
            Ok(rev) => {
                t.metadata.revision = rev;
                return Ok(Some(t.clone()));
            }
            Err(ObjectError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ObjectError::Conflict(key))
}

/// Set a container instance ACTIVE or DRAINING, CAS-retried (the agent and the scheduler
/// rewrite the record too). `Ok(None)`: no such instance. What a drain does to the tasks on
/// it is the service controller's work (it sees the status), not this write's.
pub async fn set_instance_state(
    store: &dyn Store,
    id: &str,
    state: &str,
) -> Result<Option<ContainerInstance>> {
    update(
        store,
        &keys::key(Kind::ContainerInstance, id),
        |i: &mut ContainerInstance| {
            if i.status.status == state {
                return false;
            }
            i.status.status = state.to_string();
            true
        },
    )
    .await
}

/// Delete a service ([`Service::mark_deleted`]), CAS-retried. `Ok(None)`: no such service.
pub async fn delete_service(store: &dyn Store, name: &str) -> Result<Option<Service>> {
    update(store, &keys::key(Kind::Service, name), |s: &mut Service| {
        s.mark_deleted(now())
    })
    .await
}

/// Re-read the object at `key`, apply `f`, write it back with CAS; retry on conflict. `f`
/// returns false to leave the object as it is. Returns it as finally stored (None: no such
/// key). Tasks have their own [`update_task_from`], which may start from a known copy.
pub async fn update<S, T>(
    store: &dyn Store,
    key: &str,
    mut f: impl FnMut(&mut Object<S, T>) -> bool,
) -> Result<Option<Object<S, T>>>
where
    S: Serialize + DeserializeOwned,
    T: Serialize + DeserializeOwned + Default,
{
    for _ in 0..20 {
        let Some(mut o) = get::<S, T>(store, key).await? else {
            return Ok(None);
        };
        if !f(&mut o) {
            return Ok(Some(o));
        }
        match put_cas(store, key, &o).await {
            Ok(rev) => {
                o.metadata.revision = rev;
                return Ok(Some(o));
            }
            Err(ObjectError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ObjectError::Conflict(key.to_string()))
}

/// Ask a task to stop ([`Task::request_stop`]), CAS-retried. `Ok(None)`: no such task.
pub async fn request_stop(
    store: &dyn Store,
    id: &str,
    code: &str,
    reason: &str,
) -> Result<Option<Task>> {
    update_task(store, id, |t| t.request_stop(code, reason)).await
}

/// The one task-definition lookup: `family` → its latest ACTIVE revision (as ECS resolves a
/// family), `family:N` → exactly that revision (ACTIVE or INACTIVE). `None`: no such
/// definition or not a valid reference.
pub async fn taskdef(store: &dyn Store, reference: &str) -> Result<Option<TaskDefinition>> {
    let Some((family, rev)) = parse_taskdef_ref(reference) else {
        return Ok(None);
    };
    if family.is_empty() || family.contains('/') {
        return Ok(None);
    }
    match rev {
        Some(r) => get(store, &keys::taskdef_key(family, r)).await,
        None => {
            let all: Vec<TaskDefinition> =
                list(store, &keys::taskdef_family_prefix(family)).await?;
            Ok(all
                .into_iter()
                .rev()
                .find(|t| t.status.status != "INACTIVE"))
        }
    }
}

/// The newest revision of a family whatever its status (what the next registration follows).
pub async fn latest_revision(store: &dyn Store, family: &str) -> Result<Option<TaskDefinition>> {
    let (kvs, _) = store.range(&keys::taskdef_family_prefix(family)).await?;
    kvs.last()
        .map(|kv| {
            TaskDefinition::from_kv(kv).map_err(|source| ObjectError::Decode {
                key: kv.key.clone(),
                source,
            })
        })
        .transpose()
}
