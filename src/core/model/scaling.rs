//! ScalingPolicy: service auto scaling by target tracking (ECS Application Auto Scaling's
//! `TargetTrackingScaling` on `ECSServiceAverageCPUUtilization` / `…MemoryUtilization`).
//!
//! ```yaml
//! apiVersion: berth.dev/v1
//! kind: ScalingPolicy
//! metadata: {name: web-cpu}
//! spec:
//!   service: web
//!   minCapacity: 1
//!   maxCapacity: 6
//!   targetTracking:
//!     predefinedMetricType: ECSServiceAverageCPUUtilization
//!     targetValue: 50          # percent of the tasks' reserved CPU units
//!     scaleOutCooldown: 60     # seconds, or "60s", "2m"
//!     scaleInCooldown: 300
//!     disableScaleIn: false
//!   evaluationInterval: 15s    # how often the policy looks at the metric
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use super::object::Object;
use super::service::default_cluster;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScalingPolicySpec {
    /// The service whose desiredCount this policy drives.
    #[serde(alias = "serviceName")]
    pub service: String,
    /// The service's cluster (informational; services are named uniquely).
    #[serde(default = "default_cluster")]
    pub cluster: String,
    pub min_capacity: u32,
    pub max_capacity: u32,
    #[serde(alias = "targetTrackingScalingPolicyConfiguration")]
    pub target_tracking: TargetTracking,
    /// Seconds between evaluations (default 15).
    #[serde(
        default = "default_evaluation",
        deserialize_with = "seconds",
        skip_serializing_if = "is_default_evaluation"
    )]
    pub evaluation_interval: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetTracking {
    #[serde(default, alias = "metric")]
    pub predefined_metric_type: PredefinedMetric,
    /// The utilization (percent) to hold the service at.
    pub target_value: f64,
    /// Seconds after a scale-out before another scale-out (default 300, as ECS).
    #[serde(default = "default_cooldown", deserialize_with = "seconds")]
    pub scale_out_cooldown: f64,
    /// Seconds after any scaling activity before a scale-in (default 300, as ECS).
    #[serde(default = "default_cooldown", deserialize_with = "seconds")]
    pub scale_in_cooldown: f64,
    #[serde(default)]
    pub disable_scale_in: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PredefinedMetric {
    #[default]
    #[serde(
        rename = "ECSServiceAverageCPUUtilization",
        alias = "cpu",
        alias = "CPU"
    )]
    Cpu,
    #[serde(
        rename = "ECSServiceAverageMemoryUtilization",
        alias = "memory",
        alias = "MEMORY"
    )]
    Memory,
}

impl PredefinedMetric {
    pub fn label(self) -> &'static str {
        match self {
            PredefinedMetric::Cpu => "CPU",
            PredefinedMetric::Memory => "memory",
        }
    }
}

fn default_cooldown() -> f64 {
    300.0
}

fn default_evaluation() -> f64 {
    15.0
}

fn is_default_evaluation(v: &f64) -> bool {
    *v == default_evaluation()
}

/// A number of seconds, or a duration string like `90s`, `2m`, `500ms`.
fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(f64),
        S(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) if n >= 0.0 && n.is_finite() => Ok(n),
        Raw::N(n) => Err(serde::de::Error::custom(format!(
            "must be a non-negative number of seconds, got {n}"
        ))),
        Raw::S(s) => parse_seconds(&s).map_err(serde::de::Error::custom),
    }
}

pub fn parse_seconds(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration `{s}`; write it like 90s, 2m, 1h"))?;
    let mult = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("invalid duration unit in `{s}`; use ms, s, m or h")),
    };
    Ok(n * mult)
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicyStatus {
    /// The metric as last evaluated (percent), if there were samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_metric: Option<f64>,
    #[serde(default)]
    pub current_capacity: u32,
    #[serde(default)]
    pub desired_capacity: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_out_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_in_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluated_at: Option<DateTime<Utc>>,
    /// What the policy last decided, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

pub type ScalingPolicy = Object<ScalingPolicySpec, ScalingPolicyStatus>;

impl Default for ScalingPolicySpec {
    fn default() -> Self {
        ScalingPolicySpec {
            service: String::new(),
            cluster: default_cluster(),
            min_capacity: 1,
            max_capacity: 1,
            target_tracking: TargetTracking {
                predefined_metric_type: PredefinedMetric::Cpu,
                target_value: 50.0,
                scale_out_cooldown: default_cooldown(),
                scale_in_cooldown: default_cooldown(),
                disable_scale_in: false,
            },
            evaluation_interval: default_evaluation(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ecs_names_and_durations() {
        let s: ScalingPolicySpec = serde_yaml::from_str(
            "service: web\nminCapacity: 1\nmaxCapacity: 4\ntargetTracking:\n  predefinedMetricType: ECSServiceAverageMemoryUtilization\n  targetValue: 70\n  scaleOutCooldown: 2s\n  scaleInCooldown: 5\nevaluationInterval: 500ms\n",
        )
        .unwrap();
        assert_eq!(
            s.target_tracking.predefined_metric_type,
            PredefinedMetric::Memory
        );
        assert_eq!(s.target_tracking.scale_out_cooldown, 2.0);
        assert_eq!(s.target_tracking.scale_in_cooldown, 5.0);
        assert_eq!(s.evaluation_interval, 0.5);
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(
            back["targetTracking"]["predefinedMetricType"],
            "ECSServiceAverageMemoryUtilization"
        );
    }
}
