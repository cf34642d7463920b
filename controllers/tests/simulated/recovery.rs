//! recovery controller: unhealthy tasks, essential-container exits and lost instances are
//! replaced.

use berth_core::model::{stop_codes, HealthStatus, TaskState};

use crate::harness::{assert_stopped_with, Harness, Web, LOST_GRACE};

#[tokio::test]
async fn an_unhealthy_task_is_stopped_and_replaced() {
    let checked = Web::new("web", 2).with(|w| w.health_check = true);
    let (mut h, td) = Harness::launched(1, &checked).await;
    let sick = h.mirror.active("web")[0].metadata.name.clone();
    h.mirror
        .wait_until("2 healthy", |m| {
            let active = m.active("web");
            let healthy = active
                .iter()
                .filter(|t| t.status.health_status == HealthStatus::Healthy);
            (healthy.count() == 2).then_some(())
        })
        .await;
    h.agent.set_health(&sick, None, HealthStatus::Unhealthy);
    h.mirror
        .wait_until("the unhealthy task replaced", |m| {
            (m.task(&sick)?.is_stopped() && m.steady_on("web", &td, 2)).then_some(())
        })
        .await;
    let t = h.mirror.task(&sick).unwrap();
    assert_eq!(t.status.health_status, HealthStatus::Unhealthy);
    assert_stopped_with(&t, stop_codes::SERVICE_SCHEDULER_INITIATED);
    let reason = t.status.stopped_reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with(stop_codes::HEALTH_CHECK_REASON) && reason.contains("app"),
        "{reason}"
    );
    assert_eq!(h.mirror.service_tasks("web").len(), 3);
    h.stop().await;
}

#[tokio::test]
async fn an_essential_container_exit_is_replaced() {
    let web = Web::new("web", 1).with(|w| w.sidecar = true);
    let (mut h, td) = Harness::launched(1, &web).await;
    let first = h.mirror.active("web")[0].metadata.name.clone();

    // A non-essential container exiting leaves the task running.
    h.agent.exit_container(&first, "sidecar", 0);
    h.mirror
        .wait_until("the sidecar reported exited", |m| {
            let t = m.task(&first)?;
            let c = t.status.containers.iter().find(|c| c.name == "sidecar")?;
            (c.last_status == "STOPPED" && c.exit_code == Some(0)).then_some(())
        })
        .await;
    let t = h.mirror.task(&first).unwrap();
    assert!(t.is_active() && t.status.last_status == TaskState::Running);

    h.agent.exit_container(&first, "app", 3);
    let replacement = h
        .mirror
        .wait_until("a replacement running", |m| {
            let fresh = m.active("web").into_iter().next()?;
            (m.task(&first)?.is_stopped()
                && fresh.metadata.name != first
                && fresh.status.last_status == TaskState::Running)
                .then_some(fresh)
        })
        .await;
    assert_eq!(replacement.spec.task_definition, td);
    let t = h.mirror.task(&first).unwrap();
    assert_stopped_with(&t, stop_codes::ESSENTIAL_CONTAINER_EXITED);
    assert_eq!(
        t.status.stopped_reason.as_deref(),
        Some("Essential container in task exited: app (exit code 3)")
    );
    let app = t
        .status
        .containers
        .iter()
        .find(|c| c.name == "app")
        .unwrap();
    assert_eq!(
        (app.exit_code, app.last_status.as_str()),
        (Some(3), "STOPPED")
    );
    assert!(app.network_bindings.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn a_lost_instances_tasks_are_replaced_after_the_grace() {
    let web = Web::new("web", 2).with(|w| w.spread = true);
    let (mut h, td) = Harness::launched(2, &web).await;
    h.mirror
        .wait_until("one task per instance", |m| {
            let on: std::collections::BTreeSet<_> = m
                .active("web")
                .into_iter()
                .filter_map(|t| t.status.container_instance)
                .collect();
            (on.len() == 2).then_some(())
        })
        .await;
    let lost = h
        .mirror
        .active("web")
        .into_iter()
        .find(|t| t.status.container_instance.as_deref() == Some("sim-0"))
        .unwrap()
        .metadata
        .name;
    let cut = berth_core::model::now();
    h.agent.disconnect("sim-0").await.unwrap();
    h.mirror
        .wait_until("the lost task replaced on sim-1", |m| {
            let t = m.task(&lost)?;
            let on_1 = m
                .active("web")
                .iter()
                .filter(|t| {
                    t.status.container_instance.as_deref() == Some("sim-1")
                        && t.status.last_status == TaskState::Running
                })
                .count();
            (t.is_stopped() && on_1 == 2 && m.steady_on("web", &td, 2)).then_some(())
        })
        .await;
    let t = h.mirror.task(&lost).unwrap();
    let reason = t.status.stopped_reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("Task lost: container instance sim-0"),
        "{reason}"
    );
    let waited = (t.status.stopped_at.unwrap() - cut).to_std().unwrap();
    assert!(
        waited >= LOST_GRACE,
        "declared lost after {waited:?}, before the grace {LOST_GRACE:?}"
    );
    let inst = h
        .mirror
        .wait_until("sim-0 shown disconnected", |m| {
            let kv = m.instance("sim-0")?;
            (!kv.status.agent_connected).then_some(kv)
        })
        .await;
    assert!(inst.status.disconnected_at.is_some());
    h.stop().await;
}
