//! lb_target controller: RUNNING tasks registered into the service's target group at the
//! instance's address and the task's host port; deregistered (draining) before they stop.

use std::collections::{BTreeMap, BTreeSet};

use berth_core::model::lb::lb_keys;
use berth_core::model::TaskState;
use tokio::time::Duration;

use crate::harness::{revision_of, Harness, Mirror, Web};

#[tokio::test]
async fn running_tasks_are_registered_and_drained_before_they_stop() {
    let mut h = Harness::start(2, |c| {
        c.host_ip = "10.0.0.7".into();
        c.start_delay = Duration::from_millis(20);
    })
    .await;
    h.fake_load_balancer();
    let mut web = Web::new("web", 2);
    web.target_group = Some("web");
    let td = revision_of(&h.apply(&web.manifests()).await, "web");

    let mut seen = Seen::default();
    h.mirror
        .wait_until("2 targets and a steady service", |m| {
            seen.check(m);
            (m.targets().len() == 2 && m.steady_on("web", &td, 2)).then_some(())
        })
        .await;
    let running = h.mirror.active_names("web");
    assert_eq!(seen.registered, running);
    // The event follows the registration (a separate write).
    h.mirror
        .wait_until("the registration event", |m| {
            m.events("web")
                .iter()
                .any(|e| e.starts_with("service web registered") && e.ends_with("target-group web"))
                .then_some(())
        })
        .await;

    web.desired = 1;
    h.apply(&web.manifests()).await;
    h.mirror
        .wait_until("scaled to 1 behind the target group", |m| {
            seen.check(m);
            (m.targets().len() == 1 && m.steady_on("web", &td, 1)).then_some(())
        })
        .await;
    let stopped: Vec<String> = h
        .mirror
        .service_tasks("web")
        .iter()
        .filter(|t| t.is_stopped())
        .map(|t| t.metadata.name.clone())
        .collect();
    assert_eq!(stopped.len(), 1);
    let gone = &stopped[0];
    assert_eq!(
        seen.drained_while_running.get(gone),
        Some(&true),
        "the stopped task's target was drained first"
    );
    assert!(!h.mirror.has_key(&lb_keys::target("web", gone)));
    assert!(!h.mirror.has_key(&lb_keys::health("web", gone)));
    let left = h.mirror.targets();
    assert_eq!(left[0].state, "registered");
    assert_ne!(&left[0].task_id, gone);
    h.mirror
        .wait_until("the deregistration event", |m| {
            m.events("web")
                .iter()
                .any(|e| e == "service web deregistered 1 targets in target-group web")
                .then_some(())
        })
        .await;
    h.stop().await;
}

/// What the targets looked like at every revision.
#[derive(Default)]
struct Seen {
    registered: BTreeSet<String>,
    drained_while_running: BTreeMap<String, bool>,
}

impl Seen {
    /// A target appears only for a RUNNING task, at the instance's host IP and the task's
    /// published host port; no STOPPED task keeps one.
    fn check(&mut self, m: &Mirror) {
        for target in m.targets() {
            let t = m.task(&target.task_id).expect("a target's task exists");
            assert!(
                !t.is_stopped(),
                "revision {}: STOPPED task {} still has a target",
                m.revision,
                target.task_id
            );
            if target.state == "draining" {
                self.drained_while_running
                    .insert(target.task_id.clone(), true);
            }
            if self.registered.insert(target.task_id.clone()) {
                assert_eq!(t.status.last_status, TaskState::Running);
                assert!(t.is_active());
                let port = t.status.containers[0].network_bindings[0].host_port;
                assert_eq!((target.ip.as_str(), target.port), ("10.0.0.7", port));
                assert_eq!(
                    (target.state.as_str(), target.service.as_str()),
                    ("registered", "web")
                );
            }
        }
    }
}
