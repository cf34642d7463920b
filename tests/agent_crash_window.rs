//! The agent's crash window: an attempt that created (and started) a task's container died
//! before recording it. The agent's first pass of a task with nothing recorded does not list
//! Docker (see `runner::run_task_with`), so this is the case its create must catch: the next
//! pass adopts the running container, or reports the exited one, and never starts a second.
//! Real Docker, the real task runner, an embedded store.

mod common;

use std::sync::Arc;

use berth::bench::harness::apply_yaml;
use berth_core::agent::docker as d;
use berth_core::agent::runner::TaskRunner;
use berth_core::agent::secrets::Secrets;
use berth_core::model::{keys, stop_codes, Kind, Task, TaskState};
use berth_core::objects;
use berth_core::runtime::Reconciler;
use berth_core::store::DynStore;
use bollard::query_parameters::CreateContainerOptions;

use common::berth::{require_image, unique};
use common::manifests::IMAGE;

struct Case {
    _dir: tempfile::TempDir,
    store: DynStore,
    docker: bollard::Docker,
    instance: String,
    task: Task,
    left: String,
}

/// A task of a one-container definition running `command`, placed on a fresh instance, and
/// the container an earlier attempt created and started for it without recording it.
async fn crashed_attempt(command: &str) -> Case {
    require_image();
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(
        berth_core::store::embedded::EmbeddedStore::open(dir.path().join("store")).unwrap(),
    );
    let family = unique("crashwin");
    let manifest = format!(
        "apiVersion: berth.dev/v1\nkind: TaskDefinition\nmetadata: {{name: {family}}}\nspec:\n  containerDefinitions:\n    - name: app\n      image: {IMAGE}\n      command: [\"sh\", \"-c\", \"{command}\"]\n      memory: 16\n      stopTimeout: 1\n"
    );
    apply_yaml(&store, &manifest, "td.yaml").await.unwrap();
    let td = objects::taskdef(&*store, &format!("{family}:1"))
        .await
        .unwrap()
        .expect("task definition registered");
    let instance = unique("crashwin-host");
    let mut task = Task::provision(&td, "default", &format!("family:{family}"), "test");
    task.status.container_instance = Some(instance.clone());
    task.status.last_status = TaskState::Pending;
    store
        .put(&keys::key(Kind::Task, &task.metadata.name), task.to_bytes())
        .await
        .unwrap();

    let docker = d::connect().await.unwrap();
    let c = &td.spec.container_definitions[0];
    let body = d::create_body(&task, &td, c, &instance, &[]);
    let left = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(d::container_name(&task.metadata.name, &c.name)),
                platform: String::new(),
            }),
            body,
        )
        .await
        .unwrap()
        .id;
    docker
        .start_container(
            &left,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .unwrap();
    Case {
        _dir: dir,
        store,
        docker,
        instance,
        task,
        left,
    }
}

impl Case {
    fn runner(&self) -> TaskRunner {
        TaskRunner::new(
            self.store.clone(),
            self.docker.clone(),
            &self.instance,
            "unused-pause-image",
            Secrets::default(),
        )
    }

    async fn stored(&self) -> Task {
        objects::get(
            &*self.store,
            &keys::key(Kind::Task, &self.task.metadata.name),
        )
        .await
        .unwrap()
        .expect("task still stored")
    }

    async fn containers(&self) -> Vec<String> {
        d::list_task(&self.docker, &self.instance, &self.task.metadata.name)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|c| c.id)
            .collect()
    }

    async fn clean(self) {
        for id in self.containers().await {
            let _ = d::remove(&self.docker, &id).await;
        }
    }
}

#[tokio::test]
async fn a_running_container_left_unrecorded_is_adopted_not_doubled() {
    let case = crashed_attempt("trap 'exit 0' TERM; while true; do sleep 1; done").await;
    let runner = case.runner();
    let id = case.task.metadata.name.clone();
    // Passes until the task is recorded RUNNING (the first one already should).
    for _ in 0..3 {
        runner.reconcile(&id).await.unwrap();
        if case.stored().await.status.last_status == TaskState::Running {
            break;
        }
    }
    let t = case.stored().await;
    let containers = case.containers().await;
    let recorded: Vec<_> = t
        .status
        .containers
        .iter()
        .map(|c| c.docker_id.clone())
        .collect();
    let running = t.status.last_status;
    let left = case.left.clone();
    case.clean().await;
    assert_eq!(running, TaskState::Running, "{:?}", t.status);
    assert_eq!(
        containers,
        vec![left.clone()],
        "one container: the one left behind"
    );
    assert_eq!(
        recorded,
        vec![Some(left)],
        "the task records the adopted container"
    );
}

#[tokio::test]
async fn an_exited_container_left_unrecorded_stops_the_task_with_its_exit_code() {
    let case = crashed_attempt("exit 3").await;
    // Let it exit, as it did while no agent was looking.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let i = common::berth::docker_inspect(&case.left);
        if i["State"]["Running"] == serde_json::Value::Bool(false) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "container never exited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let runner = case.runner();
    let id = case.task.metadata.name.clone();
    for _ in 0..3 {
        runner.reconcile(&id).await.unwrap();
        if case.stored().await.is_stopped() {
            break;
        }
    }
    let t = case.stored().await;
    let containers = case.containers().await;
    case.clean().await;
    assert_eq!(t.status.last_status, TaskState::Stopped, "{:?}", t.status);
    assert_eq!(
        t.status.stop_code.as_deref(),
        Some(stop_codes::ESSENTIAL_CONTAINER_EXITED)
    );
    let reason = t.status.stopped_reason.clone().unwrap_or_default();
    assert!(reason.contains("exit code 3"), "{reason}");
    assert_eq!(t.status.containers[0].exit_code, Some(3), "{:?}", t.status);
    assert!(
        containers.len() <= 1,
        "never a second container: {containers:?}"
    );
}
