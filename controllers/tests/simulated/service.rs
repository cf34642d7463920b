//! service controller: exact task counts while scaling, and replacement of a task that dies.

use berth_core::model::{stop_codes, TaskState};

use crate::harness::{assert_stopped_with, revision_of, Harness, Web};

/// Scale to `web.desired` and wait for it; fails if more tasks than that were ever not
/// stopped at once, or if any task but the missing ones was created.
async fn scale_up(h: &mut Harness, web: &Web) -> String {
    let td = revision_of(&h.apply(&web.manifests()).await, "web");
    let n = web.desired as usize;
    let mut most = 0;
    h.mirror
        .wait_until("scaled up", |m| {
            most = most.max(m.not_stopped("web").len());
            m.steady_on("web", &td, n).then_some(())
        })
        .await;
    assert_eq!(most, n, "more tasks than desired while scaling to {n}");
    assert_eq!(h.mirror.service_tasks("web").len(), n, "tasks created: {n}");
    td
}

#[tokio::test]
async fn scales_3_to_5_to_1_with_exact_counts() {
    let mut h = Harness::start(2, |_| {}).await;
    let mut web = Web::new("web", 3);
    scale_up(&mut h, &web).await;
    web.desired = 5;
    let td = scale_up(&mut h, &web).await;

    web.desired = 1;
    h.apply(&web.manifests()).await;
    h.mirror.wait_steady("web", &td, 1).await;
    let all = h.mirror.service_tasks("web");
    assert_eq!(all.len(), 5, "scaling down starts nothing");
    let stopped: Vec<_> = all.iter().filter(|t| t.is_stopped()).collect();
    assert_eq!(stopped.len(), 4);
    for t in stopped {
        // Asked to stop by the service scheduler, then stopped by the agent.
        assert_stopped_with(t, stop_codes::SERVICE_SCHEDULER_INITIATED);
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
    let td = h.launch(&Web::new("web", 2)).await;
    let before = h.mirror.active_names("web");
    let victim = before.first().cloned().unwrap();
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
    assert_stopped_with(&dead, stop_codes::ESSENTIAL_CONTAINER_EXITED);
    assert_eq!(dead.status.containers[0].exit_code, Some(137));
    h.stop().await;
}
