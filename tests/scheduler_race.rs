//! Two schedulers racing to place 200 tasks on 3 small instances never over-commit one: every
//! placement is a compare-and-swap on the instance's record. Runs on both store backends.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth::controllers::scheduler::Scheduler;
use berth::model::{keys, DesiredStatus, Kind, Task, TaskSpec, TaskState, TaskStatus};
use berth::objects;
use berth::store::{DynStore, Op, Txn};
use tokio_util::sync::CancellationToken;

const INSTANCES: u32 = 3;
const CPU: u32 = 1000;
const MEMORY: u32 = 1000;
const TASKS: u32 = 200;

async fn setup(store: &DynStore) {
    common::instances::register(
        store,
        "small",
        &[(CPU, MEMORY); INSTANCES as usize],
        Duration::from_secs(60),
    )
    .await;
    // Uneven sizes so the packing is not trivially regular.
    let mut txn = Txn::new();
    for n in 0..TASKS {
        let id = format!("task-{n:04}");
        let mut t = Task::new(
            Kind::Task,
            &id,
            TaskSpec {
                task_definition: "none:1".into(),
                cluster: "default".into(),
                group: format!("family:g{}", n % 7),
                cpu: 40 + (n % 5) * 20,
                memory: 30 + (n % 3) * 25,
                ..Default::default()
            },
        );
        t.status = TaskStatus {
            last_status: TaskState::Provisioning,
            desired_status: DesiredStatus::Running,
            ..Default::default()
        };
        txn = txn.and_then(Op::put(keys::key(Kind::Task, &id), t.to_bytes()));
        if n % 50 == 49 {
            store.txn(std::mem::take(&mut txn)).await.unwrap();
        }
    }
    store.txn(txn).await.unwrap();
}

async fn race(store: DynStore) {
    setup(&store).await;
    let stop = CancellationToken::new();
    let a = tokio::spawn(Scheduler::controller(store.clone()).run(stop.clone()));
    let b = tokio::spawn(Scheduler::controller(store.clone()).run(stop.clone()));
    // Wait until no more placements happen (capacity is exhausted long before 200): the count
    // must hold still for 10 samples in a row, so time passes on purpose here; bounded at 60 s.
    let mut last = usize::MAX;
    let mut stable = 0;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let placed = objects::list_tasks(&*store)
            .await
            .unwrap()
            .iter()
            .filter(|t| t.status.container_instance.is_some())
            .count();
        if placed == last {
            stable += 1;
            if stable >= 10 {
                break;
            }
        } else {
            stable = 0;
            last = placed;
        }
    }
    stop.cancel();
    let _ = a.await;
    let _ = b.await;

    let tasks = objects::list_tasks(&*store).await.unwrap();
    let mut used: BTreeMap<String, (u32, u32, u32)> = BTreeMap::new();
    for t in tasks
        .iter()
        .filter(|t| t.status.container_instance.is_some())
    {
        let e = used
            .entry(t.status.container_instance.clone().unwrap())
            .or_default();
        e.0 += t.spec.cpu;
        e.1 += t.spec.memory;
        e.2 += 1;
        assert_eq!(t.status.last_status, TaskState::Pending);
    }
    let placed: u32 = used.values().map(|u| u.2).sum();
    eprintln!("placed {placed} of {TASKS}: {used:?}");
    assert!(
        placed > 20,
        "the schedulers placed almost nothing: {placed}"
    );
    for (inst, (cpu, mem, _)) in &used {
        assert!(*cpu <= CPU, "{inst} over-committed CPU: {cpu} > {CPU}");
        assert!(
            *mem <= MEMORY,
            "{inst} over-committed memory: {mem} > {MEMORY}"
        );
    }
    // Everything left unplaced says why, and could not have fit anywhere.
    let smallest = tasks
        .iter()
        .filter(|t| t.status.container_instance.is_none())
        .map(|t| (t.spec.cpu, t.spec.memory))
        .min();
    if let Some((c, m)) = smallest {
        assert!(
            used.values()
                .all(|(cpu, mem, _)| cpu + c > CPU || mem + m > MEMORY),
            "a pending task still fits somewhere: {used:?} vs ({c}, {m})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schedulers_never_overcommit_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore =
        Arc::new(berth::store::embedded::EmbeddedStore::open(dir.path()).unwrap());
    race(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schedulers_never_overcommit_etcd() {
    let etcd = common::etcd::EtcdServer::start_async().await;
    let store = berth::store::open(&etcd.url()).await.unwrap();
    race(store).await;
}
