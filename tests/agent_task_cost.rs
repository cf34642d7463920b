//! What the API server does for one joined agent costs that agent's tasks, not the cluster's
//! (issue 11, "agents see only their own work"): its task range and task watch are served from
//! the assignment index, one watch of the task prefix shared by every agent. Counted in task
//! records read for agents (`api::agent_task_records_read`), not timed. Its own test binary:
//! the counter is process-wide.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::auth::agent_join;
use berth::model::{keys, Kind, Task, TaskSpec};
use berth::store::remote::RemoteStore;
use berth::store::{DynStore, Op, Store, Txn};
use futures::StreamExt;

fn task(id: &str, on: &str) -> (String, Vec<u8>) {
    let mut t = Task::new(
        Kind::Task,
        id,
        TaskSpec {
            task_definition: "web:1".into(),
            cluster: "default".into(),
            cpu: 1,
            ..Default::default()
        },
    );
    t.status.container_instance = Some(on.into());
    (keys::key(Kind::Task, id), t.to_bytes())
}

/// Put `n` tasks spread over 100 other instances, 100 per transaction.
async fn others(store: &DynStore, from: usize, n: usize) -> i64 {
    let mut rev = 0;
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(100) {
        let txn = Txn {
            success: chunk
                .iter()
                .map(|i| {
                    let (key, value) = task(&format!("t-other-{i}"), &format!("i-{}", i % 100));
                    Op::Put {
                        key,
                        value,
                        lease: 0,
                    }
                })
                .collect(),
            ..Default::default()
        };
        rev = store.txn(txn).await.unwrap().revision;
    }
    rev
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_task_reads_cost_its_own_tasks_not_the_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore =
        Arc::new(berth::store::embedded::EmbeddedStore::open(dir.path().join("s")).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(berth::api::serve(
        listener,
        berth::api::ApiState {
            store: store.clone(),
            registry: berth::runtime::Registry::default(),
            leadership: Default::default(),
            secrets: None,
        },
        stop.clone(),
    ));
    let (tok, _) = agent_join::create_join_token(&*store, "test", "", None)
        .await
        .unwrap();
    let cred = berth::agent::join::join(std::slice::from_ref(&url), &tok, "i-x")
        .await
        .unwrap();
    let remote = RemoteStore::new(vec![url], &cred, "i-x").unwrap();
    let prefix = keys::prefix(Kind::Task);

    for id in ["t-x1", "t-x2"] {
        let (k, v) = task(id, "i-x");
        store.put(&k, v).await.unwrap();
    }
    others(&store, 0, 2000).await;

    // The first ranges may come before the index has listed (then the server reads the whole
    // prefix); once it has, a range reads the agent's two tasks.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (rev, per_range) = loop {
        let before = berth::api::agent_task_records_read();
        let (kvs, rev) = remote.range(&prefix).await.unwrap();
        let read = berth::api::agent_task_records_read() - before;
        let ids: Vec<&str> = kvs
            .iter()
            .map(|kv| kv.key.rsplit('/').next().unwrap())
            .collect();
        assert_eq!(ids, ["t-x1", "t-x2"]);
        if read <= 2 || Instant::now() > deadline {
            break (rev, read);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(per_range, 2, "a range of 2 own tasks among 2,002");

    // Five times the cluster: the same cost.
    others(&store, 2000, 8000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = berth::api::agent_task_records_read();
    let (kvs, _) = remote.range(&prefix).await.unwrap();
    assert_eq!(kvs.len(), 2);
    assert_eq!(berth::api::agent_task_records_read() - before, 2);

    // A watch from before the 8,000 others: their events are not read for this agent; its own
    // next change arrives, with nothing else.
    let before = berth::api::agent_task_records_read();
    let mut w = remote.watch(&prefix, rev + 1).await.unwrap();
    others(&store, 10_000, 1000).await;
    let (k, v) = task("t-x3", "i-x");
    let own = store.put(&k, v).await.unwrap();
    let evs = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("the agent's own event")
        .expect("stream open")
        .expect("no error");
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].kv.key, k);
    assert_eq!(evs[0].kv.mod_revision, own);
    let read = berth::api::agent_task_records_read() - before;
    assert!(
        read <= 2,
        "{read} task records read for one own event among 9,001"
    );
    stop.cancel();
}
