//! Rolling-replacement arithmetic (ECS semantics) and the crash-loop count behind the launch
//! back-off, kept pure so they can be property-tested.
//!
//! Invariants each step keeps, given the current counts:
//! - total active tasks never exceed floor(desired × maximumPercent / 100);
//! - healthy tasks never drop below ceil(desired × minimumHealthyPercent / 100) because of a
//!   stop this step decides (tasks that die on their own are outside our control).

use berth_core::model::{HealthStatus, Task, TaskState, STARTUP_WINDOW};
use chrono::{DateTime, Utc};

/// Lower bound of healthy tasks during a deployment (rounded up).
pub fn min_healthy(desired: u32, minimum_healthy_percent: u32) -> u32 {
    ((desired as u64 * minimum_healthy_percent as u64).div_ceil(100)) as u32
}

/// Upper bound of running + pending tasks during a deployment (rounded down, at least
/// `desired` so a steady service can always run its full count).
pub fn max_total(desired: u32, maximum_percent: u32) -> u32 {
    ((desired as u64 * maximum_percent as u64 / 100) as u32).max(desired)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Active tasks of the primary (newest) revision.
    pub new_total: u32,
    pub new_healthy: u32,
    /// Active tasks of older revisions.
    pub old_total: u32,
    pub old_healthy: u32,
    /// Tasks asked to stop that have not stopped yet: they still hold a slot under the ceiling.
    pub stopping: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Step {
    /// New-revision tasks to start.
    pub start: u32,
    /// Primary tasks to stop because there are more than desired (unhealthy ones first).
    pub stop_new: u32,
    /// Old-revision tasks to stop that are not healthy (always allowed).
    pub stop_old_unhealthy: u32,
    /// Old-revision healthy tasks to stop (bounded by the healthy floor).
    pub stop_old_healthy: u32,
}

pub fn step(desired: u32, min_pct: u32, max_pct: u32, c: Counts) -> Step {
    let floor = min_healthy(desired, min_pct);
    let ceiling = max_total(desired, max_pct);
    let mut s = Step {
        stop_new: c.new_total.saturating_sub(desired),
        // Unhealthy old tasks serve nobody: always stop them.
        stop_old_unhealthy: c.old_total - c.old_healthy,
        ..Step::default()
    };
    // Stopping tasks keep their slot until they are gone, so count everything not stopped.
    let holding = c.new_total + c.old_total + c.stopping;
    s.start = desired
        .saturating_sub(c.new_total)
        .min(ceiling.saturating_sub(holding));
    // Healthy tasks left after the surplus primaries go (the unhealthy ones go first).
    let new_unhealthy = c.new_total - c.new_healthy;
    let new_healthy_stopped = s.stop_new.saturating_sub(new_unhealthy);
    let healthy_left = c.new_healthy - new_healthy_stopped + c.old_healthy;
    let budget = healthy_left.saturating_sub(floor);
    // Old healthy tasks go only as far as the floor allows, and only as many as are not
    // needed to reach the desired count together with the primaries (started or starting) —
    // plus as many as the ceiling needs freed so the missing primaries can start.
    let surplus = (c.new_total - s.stop_new + s.start + c.old_healthy).saturating_sub(desired);
    let blocked = desired.saturating_sub(c.new_total) - s.start;
    s.stop_old_healthy = budget.min(c.old_healthy).min(surplus + blocked);
    s
}

/// Failed tasks that trip a deployment's circuit breaker: the configured value, else ECS's
/// half the desired count (rounded up) clamped to 3..=200.
pub fn breaker_threshold(desired: u32, configured: Option<u32>) -> u32 {
    configured
        .filter(|t| *t > 0)
        .unwrap_or_else(|| desired.div_ceil(2).clamp(3, 200))
}

/// Delay before launching again after `consecutive` failed tasks in a row: none for the first
/// failure (a single crash is replaced at once), then 0.5 s doubling, capped at 60 s.
pub fn launch_backoff(consecutive: u32) -> std::time::Duration {
    if consecutive <= 1 {
        return std::time::Duration::ZERO;
    }
    let exp = (consecutive - 2).min(16);
    std::time::Duration::from_millis(500u64 << exp).min(std::time::Duration::from_secs(60))
}

/// Failed starts in a row that the launch back-off counts, newest first until a task that did
/// not fail. Only tasks of the primary deployment's revision (`primary_td`) that stopped after
/// the later of
/// - the primary deployment's creation (`deployment_created`): a new revision or a rollback
///   starts afresh, so a failed revision's crash loop never slows its replacement down;
/// - the start of any task of the service that is running as a success now (HEALTHY, or past
///   its startup window): once tasks run again, earlier failures are history.
pub fn crash_loop_failures<T: std::borrow::Borrow<Task>>(
    tasks: &[T],
    primary_td: &str,
    deployment_created: DateTime<Utc>,
    now: DateTime<Utc>,
) -> u32 {
    let recovered = tasks
        .iter()
        .map(|t| t.borrow())
        .filter(|t| t.is_active() && t.status.last_status == TaskState::Running)
        .filter_map(|t| {
            let started = t.status.started_at?;
            (t.status.health_status == HealthStatus::Healthy || now - started >= STARTUP_WINDOW)
                .then_some(started)
        })
        .max();
    let since = recovered.map_or(deployment_created, |r| r.max(deployment_created));
    let mut stopped: Vec<&Task> = tasks
        .iter()
        .map(|t| t.borrow())
        .filter(|t| {
            t.is_stopped()
                && t.spec.task_definition == primary_td
                && t.status.stopped_at.is_some_and(|s| s > since)
        })
        .collect();
    stopped.sort_by_key(|t| std::cmp::Reverse(t.status.stopped_at));
    stopped.iter().take_while(|t| t.failed_to_start()).count() as u32
}

/// Nothing to do this step although the service is not at its target, and nothing in flight
/// that could change that: the bounds leave no room to move.
pub fn is_stuck(desired: u32, c: Counts, s: Step) -> bool {
    let done = c.new_total == desired && c.old_total == 0;
    let idle = s == Step::default();
    !done && idle && c.stopping == 0 && c.new_total == c.new_healthy && c.old_total == c.old_healthy
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn task(td: &str, state: TaskState, started: i64, stopped: Option<i64>, failed: bool) -> Task {
        use berth_core::model::{stop_codes, DesiredStatus, Kind, TaskSpec, TaskStatus};
        let t0 = chrono::DateTime::from_timestamp(1_000_000, 0).unwrap();
        let mut t = Task::new(
            Kind::Task,
            berth_core::model::new_id(),
            TaskSpec {
                task_definition: td.into(),
                group: "service:web".into(),
                ..Default::default()
            },
        );
        t.status = TaskStatus {
            last_status: state,
            desired_status: if stopped.is_some() {
                DesiredStatus::Stopped
            } else {
                DesiredStatus::Running
            },
            started_at: Some(t0 + chrono::Duration::seconds(started)),
            stopped_at: stopped.map(|s| t0 + chrono::Duration::seconds(s)),
            stop_code: failed.then(|| stop_codes::ESSENTIAL_CONTAINER_EXITED.to_string()),
            ..Default::default()
        };
        t
    }

    #[test]
    fn a_new_primary_or_tasks_running_again_reset_the_crash_loop_count() {
        let at = |s: i64| chrono::DateTime::from_timestamp(1_000_000 + s, 0).unwrap();
        let crash = |td: &str, t: i64| task(td, TaskState::Stopped, t, Some(t + 1), true);
        // A healthy v1 runs since 0; v2 crash-loops from 100 to 110; rollback to v1 at 111.
        let mut tasks = vec![task("web:1", TaskState::Running, 0, None, false)];
        tasks.extend((0..5).map(|i| crash("web:2", 100 + 2 * i)));
        assert_eq!(crash_loop_failures(&tasks, "web:2", at(99), at(111)), 5);
        // A v1 task killed right after the rollback is replaced at once.
        tasks.push(crash("web:1", 112));
        assert_eq!(crash_loop_failures(&tasks, "web:1", at(111), at(114)), 1);
        assert!(launch_backoff(1).is_zero());

        // The same revision crash-loops (200..210), then a task starts at 220 and runs.
        let mut tasks: Vec<Task> = (0..5).map(|i| crash("web:1", 200 + 2 * i)).collect();
        assert_eq!(crash_loop_failures(&tasks, "web:1", at(0), at(211)), 5);
        tasks.push(task("web:1", TaskState::Running, 220, None, false));
        // Still within its startup window: it may yet crash, the loop still counts.
        assert_eq!(crash_loop_failures(&tasks, "web:1", at(0), at(221)), 5);
        // Past it (or HEALTHY): the service runs again; a new crash starts a new count.
        tasks.push(crash("web:1", 235));
        assert_eq!(crash_loop_failures(&tasks, "web:1", at(0), at(240)), 1);
        let mut healthy = task("web:1", TaskState::Running, 236, None, false);
        healthy.status.health_status = HealthStatus::Healthy;
        let mut tasks2: Vec<Task> = (0..5).map(|i| crash("web:1", 200 + 2 * i)).collect();
        tasks2.push(healthy);
        tasks2.push(crash("web:1", 237));
        assert_eq!(crash_loop_failures(&tasks2, "web:1", at(0), at(239)), 1);
    }

    #[test]
    fn bounds_round_like_ecs() {
        assert_eq!(min_healthy(4, 50), 2);
        assert_eq!(min_healthy(3, 50), 2);
        assert_eq!(max_total(4, 150), 6);
        assert_eq!(max_total(3, 150), 4);
        assert_eq!(max_total(3, 100), 3);
    }

    #[test]
    fn fresh_service_starts_everything() {
        let s = step(3, 100, 200, Counts::default());
        assert_eq!(s.start, 3);
    }

    #[test]
    fn rolling_4_at_50_150() {
        // 4 old healthy, nothing new yet: start 2 (room to 6), stop 2 old (floor 2).
        let s = step(
            4,
            50,
            150,
            Counts {
                new_total: 0,
                new_healthy: 0,
                old_total: 4,
                old_healthy: 4,
                stopping: 0,
            },
        );
        assert_eq!(s.start, 2);
        assert_eq!(s.stop_old_healthy, 2);
    }

    #[test]
    fn min_100_waits_for_new_healthy() {
        let s = step(
            2,
            100,
            200,
            Counts {
                new_total: 2,
                new_healthy: 0,
                old_total: 2,
                old_healthy: 2,
                stopping: 0,
            },
        );
        assert_eq!(s, Step::default());
        let s = step(
            2,
            100,
            200,
            Counts {
                new_total: 2,
                new_healthy: 1,
                old_total: 2,
                old_healthy: 2,
                stopping: 0,
            },
        );
        assert_eq!(s.stop_old_healthy, 1);
    }

    #[test]
    fn scale_down_and_to_zero() {
        let s = step(
            1,
            100,
            200,
            Counts {
                new_total: 3,
                new_healthy: 3,
                old_total: 0,
                old_healthy: 0,
                stopping: 0,
            },
        );
        assert_eq!(s.stop_new, 2);
        let s = step(
            0,
            100,
            200,
            Counts {
                new_total: 0,
                new_healthy: 0,
                old_total: 2,
                old_healthy: 2,
                stopping: 0,
            },
        );
        assert_eq!(s.stop_old_healthy, 2);
    }

    #[test]
    fn cannot_move_when_floor_meets_ceiling() {
        let c = Counts {
            new_total: 0,
            new_healthy: 0,
            old_total: 2,
            old_healthy: 2,
            stopping: 0,
        };
        let s = step(2, 100, 100, c);
        assert_eq!(s, Step::default());
        assert!(is_stuck(2, c, s));
        assert!(!is_stuck(2, c, step(2, 50, 100, c)));
    }

    #[test]
    fn breaker_threshold_like_ecs() {
        assert_eq!(breaker_threshold(1, None), 3);
        assert_eq!(breaker_threshold(10, None), 5);
        assert_eq!(breaker_threshold(1000, None), 200);
        assert_eq!(breaker_threshold(4, Some(2)), 2);
    }

    proptest! {
        #[test]
        fn breaker_threshold_in_bounds(desired in 0u32..100_000) {
            let t = breaker_threshold(desired, None);
            prop_assert!((3..=200).contains(&t));
            prop_assert!(t >= desired.div_ceil(2).min(200));
        }

        #[test]
        fn launch_backoff_grows_and_caps(n in 0u32..10_000) {
            let d = launch_backoff(n);
            prop_assert!(d <= std::time::Duration::from_secs(60));
            prop_assert!(launch_backoff(n + 1) >= d);
            if n <= 1 { prop_assert!(d.is_zero()); }
        }
    }

    proptest! {
        /// Simulate a rollout where started tasks become healthy next round: it always
        /// completes, and no step breaks the floor or the ceiling.
        #[test]
        fn rollout_converges_within_bounds(desired in 0u32..30, min_pct in 0u32..=100, extra in 0u32..=100, old in 0u32..40) {
            let max_pct = 100 + extra.max(if min_pct == 100 { 1 } else { 0 });
            let floor = min_healthy(desired, min_pct);
            let ceiling = max_total(desired, max_pct);
            // floor == ceiling leaves no room to replace anything: that case is reported as
            // stuck (see `cannot_move_when_floor_meets_ceiling`), not converged.
            prop_assume!(!(desired > 0 && old > 0 && floor >= ceiling));
            let mut c = Counts { new_total: 0, new_healthy: 0, old_total: old, old_healthy: old, stopping: 0 };
            for _round in 0..200 {
                let s = step(desired, min_pct, max_pct, c);
                let healthy_before = c.new_healthy + c.old_healthy;
                // Stops happen first.
                c.old_total -= s.stop_old_unhealthy + s.stop_old_healthy;
                c.old_healthy -= s.stop_old_healthy;
                let new_unhealthy = c.new_total - c.new_healthy;
                let unhealthy_stopped = s.stop_new.min(new_unhealthy);
                c.new_total -= s.stop_new;
                c.new_healthy -= s.stop_new - unhealthy_stopped;
                let healthy_after = c.new_healthy + c.old_healthy;
                prop_assert!(healthy_after >= floor.min(healthy_before), "floor broken: {c:?} {s:?}");
                c.new_total += s.start;
                // Stopped tasks are still "stopping" at this instant.
                let holding = c.new_total + c.old_total + s.stop_new + s.stop_old_unhealthy + s.stop_old_healthy;
                prop_assert!(s.start == 0 || holding <= ceiling, "ceiling broken: {c:?} {s:?}");
                // Everything started becomes healthy by the next round.
                c.new_healthy = c.new_total;
                if c.new_total == desired && c.old_total == 0 {
                    break;
                }
            }
            prop_assert_eq!(c.new_total, desired);
            prop_assert_eq!(c.old_total, 0);
        }
    }
}
