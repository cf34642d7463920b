//! service controller: exact task counts while scaling, and replacement of a task that dies.

use berth_core::model::{stop_codes, TaskState};

use crate::harness::{revision_of, Harness, Web};

#[tokio::test]
async fn scales_3_to_5_to_1_with_exact_counts() {
    let mut h = Harness::start(2, |_| {}).await;
    let mut web = Web::new("web", 3);
    let td = revision_of(&h.apply(&web.yaml()).await, "web");
    // Never more tasks than asked for, at any revision.
    let mut most = 0;
    h.mirror
        .wait_until("3 running", |m| {
            most = most.max(m.not_stopped("web").len());
            m.steady_on("web", &td, 3).then_some(())
        })
        .await;
    assert_eq!(most, 3, "more tasks than desired while scaling to 3");
    assert_eq!(
        h.mirror.service_tasks("web").len(),
        3,
        "no task created twice"
    );

    web.desired = 5;
    h.apply(&web.yaml()).await;
    h.mirror
        .wait_until("5 running", |m| {
            most = most.max(m.not_stopped("web").len());
            m.steady_on("web", &td, 5).then_some(())
        })
        .await;
    assert_eq!(most, 5, "more tasks than desired while scaling to 5");
    assert_eq!(h.mirror.service_tasks("web").len(), 5, "only 2 tasks added");

    web.desired = 1;
    h.apply(&web.yaml()).await;
    h.mirror
        .wait_until("1 running", |m| m.steady_on("web", &td, 1).then_some(()))
        .await;
    let all = h.mirror.service_tasks("web");
    assert_eq!(all.len(), 5, "scaling down starts nothing");
    let stopped: Vec<_> = all.iter().filter(|t| t.is_stopped()).collect();
    assert_eq!(stopped.len(), 4);
    for t in stopped {
        // Asked to stop by the service scheduler, then stopped by the agent.
        assert_eq!(
            t.status.stop_code.as_deref(),
            Some(stop_codes::SERVICE_SCHEDULER_INITIATED)
        );
        assert!(
            t.status
                .stopped_reason
                .as_deref()
                .is_some_and(|r| r.starts_with("Scaling activity initiated by")),
            "{:?}",
            t.status.stopped_reason
        );
        assert!(t.status.stopped_at.is_some());
    }
    // The service's counts follow (written by the reconcile after the last stop).
    h.mirror
        .wait_until("service counts 1/1", |m| {
            let s = m.service("web")?.status;
            (s.desired_count, s.running_count, s.pending_count)
                .eq(&(1, 1, 0))
                .then_some(())
        })
        .await;
    h.stop().await;
}

#[tokio::test]
async fn a_task_that_dies_is_replaced() {
    let mut h = Harness::start(1, |_| {}).await;
    let td = revision_of(&h.apply(&Web::new("web", 2).yaml()).await, "web");
    h.mirror
        .wait_until("2 running", |m| m.steady_on("web", &td, 2).then_some(()))
        .await;
    let before: Vec<String> = h
        .mirror
        .active("web")
        .iter()
        .map(|t| t.metadata.name.clone())
        .collect();
    let victim = before[0].clone();
    h.agent.exit_container(&victim, "app", 137);
    let replacement = h
        .mirror
        .wait_until("a replacement running", |m| {
            let dead = m.task(&victim)?;
            let fresh = m
                .active("web")
                .into_iter()
                .find(|t| !before.contains(&t.metadata.name))?;
            (dead.is_stopped()
                && fresh.status.last_status == TaskState::Running
                && m.active("web").len() == 2)
                .then_some(fresh)
        })
        .await;
    assert_eq!(replacement.spec.task_definition, td);
    assert_eq!(
        h.mirror.service_tasks("web").len(),
        3,
        "exactly one replacement"
    );
    let dead = h.mirror.task(&victim).unwrap();
    assert_eq!(
        dead.status.stop_code.as_deref(),
        Some(stop_codes::ESSENTIAL_CONTAINER_EXITED)
    );
    assert_eq!(dead.status.containers[0].exit_code, Some(137));
    h.stop().await;
}
