//! scaling: target-tracking service auto scaling (ECS Application Auto Scaling's
//! TargetTrackingScaling). Every `evaluationInterval` a policy reads the average CPU or memory
//! utilization of its service's running tasks (from the agents' stats samples), computes
//! `ceil(desiredCount × metric / target)` clamped to [minCapacity, maxCapacity], and changes the
//! service's desiredCount with compare-and-swap, telling why in a service event. Scale-out waits
//! `scaleOutCooldown` after the previous scale-out; scale-in waits `scaleInCooldown` after any
//! scaling activity and only happens below 90% of the target (so it does not flap).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::time::Duration;

use berth_core::metrics::{aggregate, InstanceSample, TaskInfo, STATS_PREFIX};
use berth_core::model::scaling::PredefinedMetric;
use berth_core::model::{keys, now, Kind, ScalingPolicy, Service};
use berth_core::objects::{self, ObjectError};
use berth_core::runtime::{Action, Controller, ControllerOptions, Reconciler};
use berth_core::store::DynStore;

/// Scale in only when the metric is below this share of the target.
pub const SCALE_IN_MARGIN: f64 = 0.9;
/// Even when nothing changes, the policy's status is refreshed this often.
const STATUS_REFRESH: chrono::Duration = chrono::Duration::seconds(30);

pub struct ScalingController {
    store: DynStore,
    cache: berth_core::runtime::ClusterCache,
}

/// What one evaluation decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub desired: u32,
    pub message: String,
    pub scale_out: bool,
    pub scale_in: bool,
}

fn since_secs(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> f64 {
    t.map_or(f64::INFINITY, |t| {
        (now - t).num_milliseconds().max(0) as f64 / 1000.0
    })
}

/// The target-tracking rule, pure: `metric` is the service's average utilization (percent),
/// `None` when there are no fresh samples.
pub fn decide(
    p: &ScalingPolicy,
    current: u32,
    metric: Option<f64>,
    now: DateTime<Utc>,
) -> Decision {
    let s = &p.spec;
    let tt = &s.target_tracking;
    let what = tt.predefined_metric_type.label();
    let keep = |message: String| Decision {
        desired: current,
        message,
        scale_out: false,
        scale_in: false,
    };
    // Bounds first: a count outside [min, max] is corrected whatever the metric says.
    if current < s.min_capacity {
        return Decision {
            desired: s.min_capacity,
            message: format!(
                "raised the desired count from {current} to the minimum capacity {}",
                s.min_capacity
            ),
            scale_out: true,
            scale_in: false,
        };
    }
    if current > s.max_capacity {
        return Decision {
            desired: s.max_capacity,
            message: format!(
                "lowered the desired count from {current} to the maximum capacity {}",
                s.max_capacity
            ),
            scale_out: false,
            scale_in: true,
        };
    }
    let Some(m) = metric else {
        return keep("waiting for utilization samples of the service's running tasks".into());
    };
    let target = tt.target_value;
    let want = ((current.max(1) as f64) * m / target).ceil() as u32;
    let want = want.clamp(s.min_capacity, s.max_capacity);
    let since_out = since_secs(p.status.last_scale_out_at, now);
    let since_any = since_out.min(since_secs(p.status.last_scale_in_at, now));
    if want > current {
        if since_out < tt.scale_out_cooldown {
            return keep(format!(
                "average {what} utilization {m:.1}% is above the target {target}%; scale-out cooldown ({:.0}s left)",
                tt.scale_out_cooldown - since_out
            ));
        }
        return Decision {
            desired: want,
            message: format!(
                "scaled out from {current} to {want} tasks: average {what} utilization {m:.1}% is above the target {target}%"
            ),
            scale_out: true,
            scale_in: false,
        };
    }
    if want < current && m < target * SCALE_IN_MARGIN {
        if tt.disable_scale_in {
            return keep(format!(
                "average {what} utilization {m:.1}% is below the target {target}%; scale-in is disabled"
            ));
        }
        if since_any < tt.scale_in_cooldown {
            return keep(format!(
                "average {what} utilization {m:.1}% is below the target {target}%; scale-in cooldown ({:.0}s left)",
                tt.scale_in_cooldown - since_any
            ));
        }
        return Decision {
            desired: want,
            message: format!(
                "scaled in from {current} to {want} tasks: average {what} utilization {m:.1}% is below the target {target}%"
            ),
            scale_out: false,
            scale_in: true,
        };
    }
    keep(format!(
        "average {what} utilization {m:.1}% is near the target {target}%; holding {current} tasks"
    ))
}

impl ScalingController {
    /// A scaling controller with a cache of its own.
    pub fn controller(store: DynStore) -> Controller {
        let cache = berth_core::runtime::ClusterCache::start(store.clone(), &[]);
        Self::controller_with(store, &cache)
    }

    pub fn controller_with(
        store: DynStore,
        cache: &berth_core::runtime::ClusterCache,
    ) -> Controller {
        Controller::new(
            "scaling",
            store.clone(),
            Arc::new(ScalingController {
                store,
                cache: cache.clone(),
            }),
            ControllerOptions {
                workers: 2,
                resync: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .primary(Kind::ScalingPolicy)
    }

    /// The service's average utilization now, from fresh samples of its running tasks.
    async fn metric(&self, service: &str, which: PredefinedMetric) -> anyhow::Result<Option<f64>> {
        let tasks = crate::common::tasks_of(&self.cache, service);
        let infos: Vec<TaskInfo> = tasks
            .iter()
            .filter(|t| t.is_active())
            .map(|t| TaskInfo::from_task(t))
            .collect();
        let (kvs, _) = self.store.range(STATS_PREFIX).await?;
        let samples: Vec<InstanceSample> = kvs.iter().filter_map(InstanceSample::decode).collect();
        let agg = aggregate(&infos, &samples, berth_core::metrics::sample::now_ms());
        Ok(agg
            .by_service
            .get(service)
            .filter(|g| g.tasks > 0)
            .map(|g| match which {
                PredefinedMetric::Cpu => g.cpu_utilization(),
                PredefinedMetric::Memory => g.memory_utilization(),
            }))
    }

    /// Set the service's desiredCount (CAS, retried) with an event; returns the count it had.
    async fn scale(&self, service: &str, desired: u32, event: &str) -> anyhow::Result<bool> {
        let key = keys::key(Kind::Service, service);
        for _ in 0..10 {
            let Some(mut svc): Option<Service> = objects::get(&*self.store, &key).await? else {
                return Ok(false);
            };
            if svc.metadata.deletion_timestamp.is_some() {
                return Ok(false);
            }
            svc.spec.desired_count = desired;
            svc.status.desired_count = desired;
            svc.status.push_event(event);
            match objects::put_cas(&*self.store, &key, &svc).await {
                Ok(_) => return Ok(true),
                Err(ObjectError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!("service {service} kept changing; will retry")
    }
}

#[async_trait]
impl Reconciler for ScalingController {
    async fn reconcile(&self, name: &str) -> anyhow::Result<Action> {
        let key = keys::key(Kind::ScalingPolicy, name);
        let Some(mut p): Option<ScalingPolicy> = objects::get(&*self.store, &key).await? else {
            return Ok(Action::Done);
        };
        let every = Duration::from_secs_f64(p.spec.evaluation_interval.max(0.1));
        let t = now();
        let svc_key = keys::key(Kind::Service, &p.spec.service);
        let svc: Option<Service> = objects::get(&*self.store, &svc_key).await?;
        let before = p.status.clone();
        match svc {
            None => {
                p.status.message = format!("service {} not found", p.spec.service);
                p.status.current_metric = None;
            }
            Some(svc) if svc.metadata.deletion_timestamp.is_some() => {
                p.status.message = format!("service {} is being deleted", p.spec.service);
            }
            Some(svc) => {
                let current = svc.spec.desired_count;
                let metric = self
                    .metric(
                        &p.spec.service,
                        p.spec.target_tracking.predefined_metric_type,
                    )
                    .await?;
                let d = decide(&p, current, metric, t);
                p.status.current_metric = metric.map(|m| (m * 10.0).round() / 10.0);
                p.status.current_capacity = current;
                p.status.message = d.message.clone();
                if d.desired != current {
                    let event = format!(
                        "service {} {} (scaling policy {name})",
                        p.spec.service, d.message
                    );
                    if self.scale(&p.spec.service, d.desired, &event).await? {
                        tracing::info!(policy = %name, service = %p.spec.service, from = current, to = d.desired, "{}", d.message);
                        p.status.current_capacity = d.desired;
                        if d.scale_out {
                            p.status.last_scale_out_at = Some(t);
                        }
                        if d.scale_in {
                            p.status.last_scale_in_at = Some(t);
                        }
                    }
                }
                p.status.desired_capacity = p.status.current_capacity;
            }
        }
        // Keep store writes low: only when the decision changed, or now and then.
        let stale = before
            .last_evaluated_at
            .is_none_or(|at| t - at > STATUS_REFRESH);
        let mut cmp = before.clone();
        cmp.current_metric = p.status.current_metric;
        cmp.last_evaluated_at = None;
        let mut now_cmp = p.status.clone();
        now_cmp.last_evaluated_at = None;
        let changed = cmp != now_cmp;
        if changed || stale {
            p.status.last_evaluated_at = Some(t);
            match objects::put_cas(&*self.store, &key, &p).await {
                Ok(_) | Err(ObjectError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Action::RequeueAfter(every))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::model::scaling::ScalingPolicySpec;

    fn policy(min: u32, max: u32, target: f64) -> ScalingPolicy {
        let mut spec = ScalingPolicySpec {
            service: "web".into(),
            min_capacity: min,
            max_capacity: max,
            ..Default::default()
        };
        spec.target_tracking.target_value = target;
        spec.target_tracking.scale_out_cooldown = 10.0;
        spec.target_tracking.scale_in_cooldown = 30.0;
        ScalingPolicy::new(Kind::ScalingPolicy, "p", spec)
    }

    #[test]
    fn scales_out_by_the_ratio_within_bounds() {
        let p = policy(1, 4, 50.0);
        let t = now();
        let d = decide(&p, 1, Some(120.0), t);
        assert_eq!((d.desired, d.scale_out), (3, true));
        assert!(
            d.message.contains("scaled out from 1 to 3"),
            "{}",
            d.message
        );
        assert_eq!(decide(&p, 2, Some(400.0), t).desired, 4, "clamped to max");
        assert_eq!(decide(&p, 2, Some(48.0), t).desired, 2, "near target holds");
        assert_eq!(decide(&p, 2, None, t).desired, 2, "no samples holds");
        assert_eq!(decide(&p, 0, None, t).desired, 1, "min enforced");
        assert_eq!(decide(&p, 9, None, t).desired, 4, "max enforced");
    }

    #[test]
    fn cooldowns_and_margin() {
        let mut p = policy(1, 4, 50.0);
        let t = now();
        p.status.last_scale_out_at = Some(t - chrono::Duration::seconds(5));
        let d = decide(&p, 2, Some(200.0), t);
        assert_eq!(d.desired, 2, "scale-out cooldown: {}", d.message);
        assert!(d.message.contains("cooldown"));
        // Scale-in waits for the scale-in cooldown after any activity.
        let d = decide(&p, 3, Some(0.0), t);
        assert_eq!(d.desired, 3, "{}", d.message);
        p.status.last_scale_out_at = Some(t - chrono::Duration::seconds(60));
        let d = decide(&p, 3, Some(0.0), t);
        assert_eq!((d.desired, d.scale_in), (1, true), "{}", d.message);
        // 46% of a 50% target is within the margin: hold.
        assert_eq!(decide(&p, 3, Some(46.0), t).desired, 3);
        p.spec.target_tracking.disable_scale_in = true;
        assert_eq!(decide(&p, 3, Some(0.0), t).desired, 3);
    }
}
