//! Load balancing: LoadBalancer (listeners and rules) and TargetGroup (health check, draining),
//! plus the runtime records that connect them to tasks.
//!
//! Store layout (written by berth, read by every load balancer process):
//! - `/berth/targets/<targetGroup>/<taskId>`: a [`Target`] registered by the lb_target
//!   controller (state `registered` or `draining`).
//! - `/berth/targethealth/<targetGroup>/<taskId>`: a [`TargetHealth`] written by the load
//!   balancer on health transitions (and `drained` once a draining target has no request in
//!   flight).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::object::Object;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSpec {
    pub listeners: Vec<Listener>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    pub port: u16,
    /// Only HTTP for now.
    #[serde(default = "http")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<Action>,
}

fn http() -> String {
    "HTTP".into()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Lower wins; unique per listener.
    pub priority: u32,
    /// `/api/*` (prefix), `/exact`, or `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_pattern: Option<String>,
    /// Exact host (port ignored), case-insensitive; `*.example.com` for a suffix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_header: Option<String>,
    pub target_group: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Action {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_response: Option<FixedResponse>,
    /// Forward to a target group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FixedResponse {
    pub status_code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_body: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerStatus {
    #[serde(default)]
    pub state: String,
}

pub type LoadBalancer = Object<LoadBalancerSpec, LoadBalancerStatus>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetGroupSpec {
    #[serde(default = "http")]
    pub protocol: String,
    /// Informational: the port is taken from each service's `loadBalancers` entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub health_check: TargetHealthCheck,
    #[serde(default = "default_dereg")]
    pub deregistration_delay_seconds: u32,
    #[serde(default)]
    pub algorithm: Algorithm,
}

impl Default for TargetGroupSpec {
    fn default() -> Self {
        TargetGroupSpec {
            protocol: http(),
            port: None,
            health_check: TargetHealthCheck::default(),
            deregistration_delay_seconds: default_dereg(),
            algorithm: Algorithm::default(),
        }
    }
}

fn default_dereg() -> u32 {
    // ALB's default is 300 s; berth drains in-flight requests and ends early when idle.
    30
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    #[default]
    RoundRobin,
    LeastOutstandingRequests,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetHealthCheck {
    #[serde(default = "slash")]
    pub path: String,
    #[serde(default = "five")]
    pub interval_seconds: u32,
    #[serde(default = "two")]
    pub timeout_seconds: u32,
    #[serde(default = "two")]
    pub healthy_threshold_count: u32,
    #[serde(default = "two")]
    pub unhealthy_threshold_count: u32,
    /// `200`, `200,204`, `200-399`.
    #[serde(default = "matcher")]
    pub matcher: String,
}

impl Default for TargetHealthCheck {
    fn default() -> Self {
        TargetHealthCheck {
            path: slash(),
            interval_seconds: five(),
            timeout_seconds: two(),
            healthy_threshold_count: two(),
            unhealthy_threshold_count: two(),
            matcher: matcher(),
        }
    }
}

fn slash() -> String {
    "/".into()
}
fn five() -> u32 {
    5
}
fn two() -> u32 {
    2
}
fn matcher() -> String {
    "200-399".into()
}

/// Does an HTTP status match a matcher like `200`, `200,204` or `200-399`?
pub fn status_matches(matcher: &str, status: u16) -> bool {
    matcher
        .split(',')
        .map(str::trim)
        .any(|part| match part.split_once('-') {
            Some((a, b)) => match (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
                (Ok(a), Ok(b)) => (a..=b).contains(&status),
                _ => false,
            },
            None => part.parse::<u16>() == Ok(status),
        })
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetGroupStatus {
    #[serde(default)]
    pub registered_targets: u32,
}

pub type TargetGroup = Object<TargetGroupSpec, TargetGroupStatus>;

/// A registered target (written by the lb_target controller).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub target_group: String,
    pub task_id: String,
    pub service: String,
    pub ip: String,
    pub port: u16,
    /// `registered` or `draining`.
    pub state: String,
    pub registered_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining_since: Option<DateTime<Utc>>,
    pub deregistration_delay_seconds: u32,
}

/// A load balancer's view of one target (written on transitions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetHealth {
    /// `initial`, `healthy`, `unhealthy`, `draining`, `drained`.
    pub state: String,
    pub service: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub updated_at: DateTime<Utc>,
}

/// Every target group a load balancer routes to.
pub fn target_groups_of(spec: &LoadBalancerSpec) -> Vec<String> {
    let mut v: Vec<String> = spec
        .listeners
        .iter()
        .flat_map(|l| {
            l.rules.iter().map(|r| r.target_group.clone()).chain(
                l.default_action
                    .iter()
                    .filter_map(|a| a.target_group.clone()),
            )
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

pub mod lb_keys {
    pub const TARGETS: &str = "/berth/targets/";
    pub const TARGET_HEALTH: &str = "/berth/targethealth/";

    pub fn target(tg: &str, task: &str) -> String {
        format!("{TARGETS}{tg}/{task}")
    }
    pub fn target_group_targets(tg: &str) -> String {
        format!("{TARGETS}{tg}/")
    }
    pub fn health(tg: &str, task: &str) -> String {
        format!("{TARGET_HEALTH}{tg}/{task}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers() {
        assert!(status_matches("200-399", 302));
        assert!(!status_matches("200-399", 404));
        assert!(status_matches("200,204", 204));
        assert!(!status_matches("200,204", 201));
    }
}
