//! Crash-loop launch back-off (issue 16 item 13): it belongs to the deployment whose tasks
//! failed. After a failing revision trips the circuit breaker and rolls back, a task of the
//! good revision that dies is replaced at once, not after the failed revision's back-off.

use std::collections::BTreeSet;

use berth_core::model::{stop_codes, TaskState};

use crate::harness::{assert_stopped_with, revision_of, Harness, Mirror, Web};

/// The service's events (newest first) as (id, message).
fn events(m: &Mirror) -> Vec<(String, String)> {
    m.service("web")
        .map(|s| s.status.events)
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.id, e.message))
        .collect()
}

#[tokio::test]
async fn a_rollback_starts_without_the_failed_revisions_back_off() {
    let mut web = Web::new("web", 2).with(|w| w.breaker = true);
    let (mut h, v1) = Harness::launched(2, &web).await;
    let (family, n) = v1.split_once(':').unwrap();
    let next = format!("{family}:{}", n.parse::<u32>().unwrap() + 1);
    h.agent.fail_starts_of(&next);
    web.version = "broken";
    let v2 = revision_of(&h.apply(&web.manifests()).await, "web");
    assert_eq!(v2, next);
    h.mirror
        .wait_until("rolled back to v1 and steady", |m| {
            let svc = m.service("web")?;
            let failed = svc
                .status
                .deployments
                .iter()
                .find(|d| d.task_definition == v2)?;
            (failed.rollout_state == "FAILED"
                && m.primary("web")?.task_definition == v1
                && m.steady_on("web", &v1, 2))
            .then_some(())
        })
        .await;
    let failed_starts = h
        .mirror
        .service_tasks("web")
        .iter()
        .filter(|t| t.spec.task_definition == v2 && t.failed_to_start())
        .count();
    assert!(failed_starts >= 3, "the breaker tripped on {failed_starts}");
    let before: BTreeSet<String> = events(&h.mirror).into_iter().map(|(id, _)| id).collect();

    // A v1 task is killed by hand: replaced at once.
    let alive: BTreeSet<String> = h.mirror.active_names("web");
    let victim = alive.first().cloned().unwrap();
    h.agent.exit_container(&victim, "app", 137);
    let replacement = h
        .mirror
        .wait_until("a replacement running", |m| {
            let dead = m.task(&victim)?;
            let fresh = m
                .active("web")
                .into_iter()
                .find(|t| !alive.contains(&t.metadata.name))?;
            (dead.is_stopped() && fresh.status.last_status == TaskState::Running).then_some(fresh)
        })
        .await;
    assert_eq!(replacement.spec.task_definition, v1);
    assert_stopped_with(
        &h.mirror.task(&victim).unwrap(),
        stop_codes::ESSENTIAL_CONTAINER_EXITED,
    );
    let since: Vec<String> = events(&h.mirror)
        .into_iter()
        .filter(|(id, _)| !before.contains(id))
        .map(|(_, m)| m)
        .collect();
    assert!(
        !since.iter().any(|e| e.contains("backing off")),
        "the replacement waited out the failed revision's back-off: {since:#?}"
    );
    h.stop().await;
}
