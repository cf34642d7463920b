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

use super::Object;

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

/// Is `m` a well-formed matcher?
pub fn valid_matcher(m: &str) -> bool {
    !m.trim().is_empty()
        && m.split(',').map(str::trim).all(|part| {
            let ok = |s: &str| {
                s.trim()
                    .parse::<u16>()
                    .is_ok_and(|c| (100..=599).contains(&c))
            };
            match part.split_once('-') {
                Some((a, b)) => ok(a) && ok(b),
                None => ok(part),
            }
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

/// Per-object checks of a LoadBalancer: (field path, problem).
pub fn check_load_balancer(spec: &LoadBalancerSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if spec.listeners.is_empty() {
        out.push((
            "spec.listeners".into(),
            "needs at least one listener".into(),
        ));
    }
    let mut ports = std::collections::HashSet::new();
    for (i, l) in spec.listeners.iter().enumerate() {
        let f = format!("spec.listeners[{i}]");
        if l.port == 0 {
            out.push((format!("{f}.port"), "must be between 1 and 65535".into()));
        }
        if !ports.insert(l.port) {
            out.push((
                format!("{f}.port"),
                format!("port {} is used by two listeners", l.port),
            ));
        }
        if !l.protocol.eq_ignore_ascii_case("HTTP") {
            out.push((
                format!("{f}.protocol"),
                format!("unsupported protocol {:?}; only HTTP", l.protocol),
            ));
        }
        let mut prios: std::collections::HashMap<u32, usize> = Default::default();
        for (j, r) in l.rules.iter().enumerate() {
            let rf = format!("{f}.rules[{j}]");
            if let Some(k) = prios.insert(r.priority, j) {
                out.push((
                    format!("{rf}.priority"),
                    format!("priority {} is also used by rules[{k}]; priorities must be unique per listener", r.priority),
                ));
            }
            if r.path_pattern.is_none() && r.host_header.is_none() {
                out.push((rf.clone(), "needs a pathPattern and/or a hostHeader".into()));
            }
            if let Some(p) = &r.path_pattern {
                if !(p == "*" || p.starts_with('/')) || p[..p.len().saturating_sub(1)].contains('*')
                {
                    out.push((
                        format!("{rf}.pathPattern"),
                        format!("{p:?} must start with / and may end with a single *"),
                    ));
                }
            }
            if r.target_group.trim().is_empty() {
                out.push((
                    format!("{rf}.targetGroup"),
                    "must name a target group".into(),
                ));
            }
        }
        if let Some(a) = &l.default_action {
            check_action(a, &format!("{f}.defaultAction"), &mut out);
        }
    }
    out
}

fn check_action(a: &Action, f: &str, out: &mut Vec<(String, String)>) {
    match (&a.fixed_response, &a.target_group) {
        (Some(r), None) => {
            if !(200..=599).contains(&r.status_code) {
                out.push((
                    format!("{f}.fixedResponse.statusCode"),
                    "must be between 200 and 599".into(),
                ));
            }
        }
        (None, Some(_)) => {}
        _ => out.push((
            f.to_string(),
            "needs exactly one of fixedResponse or targetGroup".into(),
        )),
    }
}

/// Per-object checks of a TargetGroup: (field path, problem).
pub fn check_target_group(spec: &TargetGroupSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let h = &spec.health_check;
    if !spec.protocol.eq_ignore_ascii_case("HTTP") {
        out.push((
            "spec.protocol".into(),
            format!("unsupported protocol {:?}; only HTTP", spec.protocol),
        ));
    }
    if !h.path.starts_with('/') {
        out.push(("spec.healthCheck.path".into(), "must start with /".into()));
    }
    if !(1..=300).contains(&h.interval_seconds) {
        out.push((
            "spec.healthCheck.intervalSeconds".into(),
            "must be between 1 and 300".into(),
        ));
    }
    if h.timeout_seconds == 0 || h.timeout_seconds > h.interval_seconds.max(1) {
        out.push((
            "spec.healthCheck.timeoutSeconds".into(),
            "must be at least 1 and at most intervalSeconds".into(),
        ));
    }
    for (name, v) in [
        ("healthyThresholdCount", h.healthy_threshold_count),
        ("unhealthyThresholdCount", h.unhealthy_threshold_count),
    ] {
        if !(1..=10).contains(&v) {
            out.push((
                format!("spec.healthCheck.{name}"),
                "must be between 1 and 10".into(),
            ));
        }
    }
    if !valid_matcher(&h.matcher) {
        out.push((
            "spec.healthCheck.matcher".into(),
            format!("{:?} is not like 200, 200,204 or 200-399", h.matcher),
        ));
    }
    if spec.deregistration_delay_seconds > 3600 {
        out.push((
            "spec.deregistrationDelaySeconds".into(),
            "must be at most 3600".into(),
        ));
    }
    out
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
        assert!(valid_matcher("200-399"));
        assert!(!valid_matcher("abc"));
        assert!(!valid_matcher("200-"));
    }
}
