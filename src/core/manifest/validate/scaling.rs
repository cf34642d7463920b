//! ScalingPolicy checks: a service to drive, sane capacity bounds, target and interval.

use super::problems::Problems;
use crate::model::ScalingPolicySpec;

/// Problems with a policy spec: (field, message).
pub(super) fn check_policy(spec: &ScalingPolicySpec) -> Problems {
    let mut out = Vec::new();
    if spec.service.trim().is_empty() {
        out.push(("spec.service".into(), "must name a service".into()));
    }
    if spec.max_capacity < spec.min_capacity {
        out.push((
            "spec.maxCapacity".into(),
            format!(
                "must be at least minCapacity ({}), got {}",
                spec.min_capacity, spec.max_capacity
            ),
        ));
    }
    let t = spec.target_tracking.target_value;
    if !(t > 0.0 && t <= 1000.0) {
        out.push((
            "spec.targetTracking.targetValue".into(),
            format!("must be a percentage above 0 (and at most 1000), got {t}"),
        ));
    }
    if spec.evaluation_interval < 0.1 {
        out.push((
            "spec.evaluationInterval".into(),
            "must be at least 100ms".into(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::problems_of;
    use super::*;

    #[test]
    fn rejects_bad_bounds() {
        let mut s = ScalingPolicySpec {
            service: "web".into(),
            min_capacity: 3,
            max_capacity: 2,
            ..Default::default()
        };
        s.target_tracking.target_value = 0.0;
        let p = check_policy(&s);
        assert_eq!(p.len(), 2, "{p:?}");
    }

    #[test]
    fn ecs_names_and_durations_pass_the_checks() {
        // The whole pipeline: ECS's names and duration strings decode (model::scaling) and then
        // pass the checks.
        let policy = "apiVersion: berth.dev/v1\nkind: ScalingPolicy\nmetadata: {name: p}\nspec:\n  service: web\n  minCapacity: 1\n  maxCapacity: 4\n  targetTracking:\n    predefinedMetricType: ECSServiceAverageMemoryUtilization\n    targetValue: 70\n    scaleOutCooldown: 2s\n    scaleInCooldown: 5\n  evaluationInterval: 500ms\n";
        assert_eq!(problems_of(policy), Vec::<String>::new());
    }
}
