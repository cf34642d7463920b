//! LoadBalancer and TargetGroup checks: listeners, rules, actions and health checks.

use std::collections::{HashMap, HashSet};

use super::problems::Problems;
use crate::model::lb::{Action, LoadBalancerSpec, TargetGroupSpec};

/// Per-object checks of a LoadBalancer: (field path, problem).
pub(super) fn check_load_balancer(spec: &LoadBalancerSpec) -> Problems {
    let mut out = Vec::new();
    if spec.listeners.is_empty() {
        out.push((
            "spec.listeners".into(),
            "needs at least one listener".into(),
        ));
    }
    let mut ports = HashSet::new();
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
        let mut prios: HashMap<u32, usize> = Default::default();
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

fn check_action(a: &Action, f: &str, out: &mut Problems) {
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
pub(super) fn check_target_group(spec: &TargetGroupSpec) -> Problems {
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

/// Is `m` a well-formed matcher?
fn valid_matcher(m: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers() {
        assert!(valid_matcher("200-399"));
        assert!(!valid_matcher("abc"));
        assert!(!valid_matcher("200-"));
    }
}
