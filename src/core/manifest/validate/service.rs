//! Service checks: the task definition reference, deployment bounds, placement and load
//! balancers, and (when the set holds it) the task definition the service runs.

use std::collections::HashSet;

use super::names::validate_name;
use super::placement::check_constraint;
use super::problems::{push, Problems};
use crate::manifest::error::closest;
use crate::model::{
    parse_taskdef_ref, PlacementStrategyType, SchedulingStrategy, ServiceSpec, TaskDefinitionSpec,
};

pub(super) fn check_service(spec: &ServiceSpec, out: &mut Problems) {
    if let Err(m) = validate_name(&spec.cluster) {
        push(out, "spec.cluster", m);
    }
    match parse_taskdef_ref(&spec.task_definition) {
        None => push(
            out,
            "spec.taskDefinition",
            format!(
                "must be `family` or `family:REVISION`, got `{}`",
                spec.task_definition
            ),
        ),
        Some((family, rev)) => {
            if let Err(m) = validate_name(family) {
                push(out, "spec.taskDefinition", m);
            }
            if rev == Some(0) {
                push(out, "spec.taskDefinition", "revisions start at 1");
            }
        }
    }
    let daemon = spec.scheduling_strategy == Some(SchedulingStrategy::Daemon);
    let dc = &spec.deployment_configuration;
    let pd = "spec.deploymentConfiguration";
    if dc.maximum_percent < 100 {
        push(
            out,
            format!("{pd}.maximumPercent"),
            format!("must be at least 100, got {}", dc.maximum_percent),
        );
    }
    if dc.minimum_healthy_percent > 100 {
        push(
            out,
            format!("{pd}.minimumHealthyPercent"),
            format!("must be at most 100, got {}", dc.minimum_healthy_percent),
        );
    }
    if !daemon
        && spec.desired_count > 0
        && dc.maximum_percent >= 100
        && dc.minimum_healthy_percent <= 100
    {
        let d = spec.desired_count as u64;
        let max = d * dc.maximum_percent as u64 / 100; // rounded down
        let min = (d * dc.minimum_healthy_percent as u64).div_ceil(100); // rounded up
        if max <= min {
            push(
                out,
                format!("{pd}.maximumPercent"),
                format!(
                    "with desiredCount {}, minimumHealthyPercent {} and maximumPercent {} a deployment can neither start a new task nor stop an old one; raise maximumPercent or lower minimumHealthyPercent",
                    spec.desired_count, dc.minimum_healthy_percent, dc.maximum_percent
                ),
            );
        }
    }
    if let Some(cb) = &dc.deployment_circuit_breaker {
        if cb.threshold == Some(0) {
            push(
                out,
                format!("{pd}.deploymentCircuitBreaker.threshold"),
                "must be at least 1",
            );
        }
    }
    if daemon && !spec.placement_strategy.is_empty() {
        push(
            out,
            "spec.placementStrategy",
            "DAEMON services run one task per instance and take no placement strategy (as in ECS)",
        );
    }
    if spec.placement_strategy.len() > 5 {
        push(
            out,
            "spec.placementStrategy",
            "at most 5 strategies are allowed",
        );
    }
    for (k, s) in spec.placement_strategy.iter().enumerate() {
        let pf = format!("spec.placementStrategy[{k}].field");
        match (s.kind, s.field.as_deref()) {
            (PlacementStrategyType::Binpack, Some("cpu" | "memory")) => {}
            (PlacementStrategyType::Binpack, f) => push(
                out,
                pf,
                match f {
                    Some(f) => format!("binpack packs by `cpu` or `memory`, got `{f}`"),
                    None => "binpack needs a field: `cpu` or `memory`".to_string(),
                },
            ),
            (PlacementStrategyType::Spread, Some(f)) => {
                let ok = f == "instanceId"
                    || f == "host"
                    || f.strip_prefix("attribute:").is_some_and(|a| !a.is_empty());
                if !ok {
                    push(
                        out,
                        pf,
                        format!("spread needs `instanceId`, `host` or `attribute:NAME`, got `{f}`"),
                    );
                }
            }
            (PlacementStrategyType::Spread, None) => push(
                out,
                pf,
                "spread needs a field: `instanceId`, `host` or `attribute:NAME`",
            ),
            (PlacementStrategyType::Random, Some(_)) => push(out, pf, "random takes no field"),
            (PlacementStrategyType::Random, None) => {}
        }
    }
    if spec.placement_constraints.len() > 10 {
        push(
            out,
            "spec.placementConstraints",
            "at most 10 constraints are allowed",
        );
    }
    for (k, pc) in spec.placement_constraints.iter().enumerate() {
        check_constraint(pc, &format!("spec.placementConstraints[{k}]"), out);
    }
    for (k, lb) in spec.load_balancers.iter().enumerate() {
        let pl = format!("spec.loadBalancers[{k}]");
        if let Err(m) = validate_name(&lb.target_group) {
            push(out, format!("{pl}.targetGroup"), m);
        }
        if lb.container_name.is_empty() {
            push(out, format!("{pl}.containerName"), "must not be empty");
        }
        if lb.container_port == 0 {
            push(
                out,
                format!("{pl}.containerPort"),
                "must be between 1 and 65535",
            );
        }
    }
}

/// A service's load balancers name containers and ports of its task definition.
pub(crate) fn check_service_against_taskdef(
    spec: &ServiceSpec,
    td: &TaskDefinitionSpec,
    td_name: &str,
) -> Problems {
    let mut out = Problems::new();
    let names: HashSet<&str> = td
        .container_definitions
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    for (k, lb) in spec.load_balancers.iter().enumerate() {
        let pl = format!("spec.loadBalancers[{k}]");
        let Some(c) = td
            .container_definitions
            .iter()
            .find(|c| c.name == lb.container_name)
        else {
            let hint = match closest(&lb.container_name, names.iter().copied()) {
                Some(s) => format!("; did you mean `{s}`?"),
                None => String::new(),
            };
            push(
                &mut out,
                format!("{pl}.containerName"),
                format!(
                    "task definition {td_name} has no container named `{}`{hint}",
                    lb.container_name
                ),
            );
            continue;
        };
        if !c
            .port_mappings
            .iter()
            .any(|p| p.container_port == lb.container_port)
        {
            push(
                &mut out,
                format!("{pl}.containerPort"),
                format!(
                    "container `{}` of task definition {td_name} does not map port {}",
                    c.name, lb.container_port
                ),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::{problems_of, TD};

    #[test]
    fn deployment_rounding() {
        let svc = |count: u32, min: u32, max: u32| {
            format!("apiVersion: berth.dev/v1\nkind: Service\nmetadata: {{name: s}}\nspec:\n  taskDefinition: t\n  desiredCount: {count}\n  deploymentConfiguration: {{minimumHealthyPercent: {min}, maximumPercent: {max}}}\n")
        };
        assert!(problems_of(&svc(3, 100, 200)).is_empty());
        assert!(problems_of(&svc(1, 0, 100)).is_empty());
        assert!(problems_of(&svc(0, 100, 100)).is_empty());
        assert!(
            !problems_of(&svc(1, 100, 150)).is_empty(),
            "no room for one task"
        );
        assert!(!problems_of(&svc(4, 100, 100)).is_empty());
        assert!(!problems_of(&svc(4, 50, 90)).is_empty());
        assert!(!problems_of(&svc(4, 120, 200)).is_empty());
    }

    #[test]
    fn load_balancer_must_match_the_task_definition() {
        let text = format!(
            "{}  \n---\napiVersion: berth.dev/v1\nkind: Service\nmetadata: {{name: s}}\nspec:\n  taskDefinition: t\n  loadBalancers: [{{targetGroup: g, containerName: b, containerPort: 80}}]\n",
            TD.replace("memory: 32}", "memory: 32, portMappings: [{containerPort: 81}]}")
        );
        let p = problems_of(&text);
        assert!(
            p.iter()
                .any(|p| p.starts_with("spec.loadBalancers[0].containerName")),
            "{p:?}"
        );
        let p = problems_of(&text.replace("containerName: b", "containerName: a"));
        assert!(
            p.iter()
                .any(|p| p.starts_with("spec.loadBalancers[0].containerPort")),
            "{p:?}"
        );
    }
}
