//! deployment controller: rolling updates within minimumHealthyPercent / maximumPercent,
//! completion with the steady-state event, and the circuit breaker with rollback.

use std::collections::BTreeSet;

use berth_core::model::{stop_codes, HealthStatus, TaskState};
use tokio::time::Duration;

use crate::harness::{assert_stopped_with, revision_of, Harness, Mirror, Web};

/// Healthy for the deployment maths: counts toward the service, RUNNING and HEALTHY.
fn healthy(m: &Mirror, service: &str) -> usize {
    m.active(service)
        .iter()
        .filter(|t| {
            t.status.last_status == TaskState::Running
                && t.status.health_status == HealthStatus::Healthy
        })
        .count()
}

/// Roll `desired` tasks from revision 1 to 2 and check, at every store revision in between,
/// the healthy floor (rounded up) and the ceiling of tasks not yet stopped (rounded down).
async fn rolls_within_bounds(desired: u32, min: u32, max: u32) {
    let mut h = Harness::start(3, |c| {
        // New tasks take a moment to start and to pass their checks, so the rollout has
        // intermediate states worth checking.
        c.start_delay = Duration::from_millis(20);
        c.healthy_after = Duration::from_millis(30);
    })
    .await;
    let mut web = Web::new("web", desired);
    web.min = min;
    web.max = max;
    web.health_check = true;
    let v1 = revision_of(&h.apply(&web.manifests()).await, "web");
    h.mirror
        .wait_until("v1 steady", |m| {
            (m.steady_on("web", &v1, desired as usize) && healthy(m, "web") == desired as usize)
                .then_some(())
        })
        .await;

    web.version = "2";
    let v2 = revision_of(&h.apply(&web.manifests()).await, "web");
    assert_ne!(v1, v2);
    let floor = (desired * min).div_ceil(100) as usize;
    let ceiling = (desired * max / 100) as usize;
    let (mut lowest, mut highest, mut revisions) = (usize::MAX, 0, 0);
    h.mirror
        .wait_until("v2 rolled out", |m| {
            let (ok, total) = (healthy(m, "web"), m.not_stopped("web").len());
            assert!(
                ok >= floor,
                "revision {}: {ok} healthy < floor {floor}",
                m.revision
            );
            assert!(
                total <= ceiling,
                "revision {}: {total} tasks > ceiling {ceiling}",
                m.revision
            );
            (lowest, highest, revisions) = (lowest.min(ok), highest.max(total), revisions + 1);
            (m.steady_on("web", &v2, desired as usize)
                && m.events("web")
                    .first()
                    .is_some_and(|e| e == "service web has reached a steady state."))
            .then_some(())
        })
        .await;
    assert!(
        revisions > 10,
        "the rollout went through intermediate states"
    );
    assert!(highest > desired as usize || lowest < desired as usize);
    let p = h.mirror.primary("web").unwrap();
    assert_eq!(
        (p.task_definition.as_str(), p.rollout_state.as_str()),
        (v2.as_str(), "COMPLETED")
    );
    let events = h.mirror.events("web");
    let started = events
        .iter()
        .position(|e| e.contains("started deployment") && e.ends_with(&format!("to {v2}.")))
        .expect("a deployment-started event");
    assert!(
        started > 0,
        "steady state is reported after the deployment started"
    );
    // Every v1 task was asked to stop by the scheduler and has stopped.
    for t in h.mirror.service_tasks("web") {
        if t.spec.task_definition == v1 {
            assert_stopped_with(&t, stop_codes::SERVICE_SCHEDULER_INITIATED);
        }
    }
    h.stop().await;
}

#[tokio::test]
async fn rolls_4_tasks_at_50_to_150_percent() {
    rolls_within_bounds(4, 50, 150).await;
}

#[tokio::test]
async fn rolls_3_tasks_at_100_to_200_percent() {
    rolls_within_bounds(3, 100, 200).await;
}

#[tokio::test]
async fn circuit_breaker_rolls_back_when_new_tasks_fail_to_start() {
    let mut web = Web::new("web", 2).with(|w| w.breaker = true);
    let (mut h, v1) = Harness::launched(2, &web).await;
    let v1_tasks = h.mirror.active_names("web");

    // The next revision's tasks cannot start (set before it exists: its first task may
    // start as soon as it is applied).
    let (family, n) = v1.split_once(':').unwrap();
    let next = format!("{family}:{}", n.parse::<u32>().unwrap() + 1);
    h.agent.fail_starts_of(&next);
    web.version = "broken";
    let v2 = revision_of(&h.apply(&web.manifests()).await, "web");
    assert_eq!(v2, next);
    h.mirror
        .wait_until("rolled back to v1 and steady", |m| {
            // minimumHealthyPercent 100: the v1 tasks keep serving throughout.
            let serving: BTreeSet<String> = m
                .active("web")
                .iter()
                .filter(|t| t.spec.task_definition == v1)
                .map(|t| t.metadata.name.clone())
                .collect();
            assert_eq!(serving, v1_tasks, "revision {}", m.revision);
            let svc = m.service("web")?;
            let failed = svc
                .status
                .deployments
                .iter()
                .find(|d| d.task_definition == v2)?;
            (failed.rollout_state == "FAILED" && m.steady_on("web", &v1, 2)).then_some(())
        })
        .await;
    let svc = h.mirror.service("web").unwrap();
    let failed = svc
        .status
        .deployments
        .iter()
        .find(|d| d.task_definition == v2)
        .unwrap();
    assert_ne!(failed.status, "PRIMARY");
    assert!(failed.failed_tasks >= 3, "ECS's threshold for 2 tasks is 3");
    let v2_tasks: Vec<_> = h
        .mirror
        .service_tasks("web")
        .into_iter()
        .filter(|t| t.spec.task_definition == v2)
        .collect();
    assert!(v2_tasks.len() >= 3);
    for t in &v2_tasks {
        assert_stopped_with(t, stop_codes::TASK_FAILED_TO_START);
    }
    let events = h.mirror.events("web");
    assert!(
        events.iter().any(|e| e.contains("deployment failed")),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.contains("rolling back to deployment")),
        "{events:#?}"
    );
    h.stop().await;
}
