//! Scale on etcd's default limits (`--max-txn-ops 128`): a 300-replica service gets all its
//! tasks and the scheduler places every one on fake instances (records with leases, no Docker).

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth::controllers::{scheduler::Scheduler, service::ServiceController};
use berth::model::{
    keys, now, ContainerDefinition, Deployment, Kind, Service, ServiceSpec, TaskDefinition,
    TaskDefinitionSpec,
};
use berth::objects;
use berth::store::election::{FencedStore, LEADER_KEY};
use berth::store::DynStore;
use tokio_util::sync::CancellationToken;

const REPLICAS: usize = 300;
const INSTANCES: u32 = 10;

async fn setup(store: &DynStore) {
    common::instances::register(
        store,
        "fake",
        &[(100_000, 100_000); INSTANCES as usize],
        Duration::from_secs(120),
    )
    .await;
    let mut td = TaskDefinition::new(
        Kind::TaskDefinition,
        "web:1",
        TaskDefinitionSpec {
            container_definitions: vec![ContainerDefinition {
                name: "c".into(),
                image: "local/busybox:1".into(),
                cpu: 10,
                memory: Some(16),
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    td.status.family = "web".into();
    td.status.revision = 1;
    td.status.status = "ACTIVE".into();
    store
        .put(&keys::taskdef_key("web", 1), td.to_bytes())
        .await
        .unwrap();
    let mut svc = Service::new(
        Kind::Service,
        "web",
        ServiceSpec {
            cluster: "default".into(),
            task_definition: "web:1".into(),
            desired_count: REPLICAS as u32,
            ..Default::default()
        },
    );
    // The deployment controller's part, done here so only the two controllers under test run.
    svc.status.deployments = vec![Deployment {
        id: "ecs-svc/1".into(),
        status: "PRIMARY".into(),
        task_definition: "web:1".into(),
        desired_count: REPLICAS as u32,
        running_count: 0,
        pending_count: 0,
        failed_tasks: 0,
        rollout_state: "IN_PROGRESS".into(),
        rollout_state_reason: String::new(),
        created_at: now(),
        updated_at: now(),
    }];
    store
        .put(&keys::key(Kind::Service, "web"), svc.to_bytes())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_replicas_start_on_default_etcd() {
    let etcd = common::etcd::EtcdServer::start_async().await;
    let store = berth::store::open(&etcd.url()).await.unwrap();
    three_hundred_replicas(store).await;
}

/// The same through the leader fence every controller write carries under `berth up` and
/// `berth server` (one compare of etcd's 128 is the fence's: a chunk of 127 task creations
/// or placements once failed there for good and nothing was ever placed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_replicas_start_through_the_leader_fence() {
    let etcd = common::etcd::EtcdServer::start_async().await;
    let store = berth::store::open(&etcd.url()).await.unwrap();
    let rev = store
        .txn(berth::store::Txn::new().and_then(berth::store::Op::put(LEADER_KEY, b"{}".to_vec())))
        .await
        .unwrap()
        .revision;
    let fenced: DynStore = Arc::new(FencedStore::new(
        store,
        LEADER_KEY,
        rev,
        CancellationToken::new(),
    ));
    three_hundred_replicas(fenced).await;
}

async fn three_hundred_replicas(store: DynStore) {
    setup(&store).await;
    let stop = CancellationToken::new();
    let svc = tokio::spawn(ServiceController::controller(store.clone()).run(stop.clone()));
    let sched = tokio::spawn(Scheduler::controller(store.clone()).run(stop.clone()));
    let mut placed = 0;
    let mut total = 0;
    for _ in 0..600 {
        let tasks = objects::list_tasks(&*store).await.unwrap();
        total = tasks.len();
        placed = tasks
            .iter()
            .filter(|t| t.status.container_instance.is_some())
            .count();
        if total == REPLICAS && placed == REPLICAS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    let _ = svc.await;
    let _ = sched.await;
    assert_eq!(total, REPLICAS, "tasks created (never more than desired)");
    assert_eq!(placed, REPLICAS, "tasks placed");
    let svc: Service = objects::get(&*store, &keys::key(Kind::Service, "web"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        svc.status
            .events
            .iter()
            .any(|e| e.message.contains("has started")),
        "{:?}",
        svc.status.events
    );
}
