//! Semantic checks: what serde's types cannot say. ECS's own rules where ECS has them.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::error::closest;
use super::{Document, ManifestError, Resource};
use crate::model::{
    self, DependencyCondition, NetworkMode, PlacementConstraint, PlacementConstraintType,
    PlacementStrategyType, SchedulingStrategy, ServiceSpec, TaskDefinitionSpec,
};

/// Longest name ECS accepts for families, services, clusters and containers.
const MAX_NAME: usize = 255;

/// Check a name: 1..=255 of `[A-Za-z0-9_-]` (ECS's rule for families, services, clusters and
/// containers; also safe as a store key segment).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.chars().count() > MAX_NAME {
        return Err(format!("must be at most {MAX_NAME} characters"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "`{name}` is not a valid name: only letters, digits, `-` and `_` are allowed (found {bad:?})"
        ));
    }
    Ok(())
}

/// Problems found in one object: (field path, message).
type Problems = Vec<(String, String)>;

fn push(out: &mut Problems, field: impl Into<String>, msg: impl Into<String>) {
    out.push((field.into(), msg.into()));
}

/// Check every document and the set as a whole (duplicate objects, services against the task
/// definitions of the same set). Returns every problem found, in document order.
pub fn validate(docs: &[Document]) -> Vec<ManifestError> {
    let mut errors = Vec::new();
    let mut seen: HashMap<(model::Kind, &str), &super::Source> = HashMap::new();
    let taskdefs: HashMap<&str, &TaskDefinitionSpec> = docs
        .iter()
        .filter_map(|d| match &d.resource {
            Resource::TaskDefinition(td) => Some((td.metadata.name.as_str(), &td.spec)),
            _ => None,
        })
        .collect();

    for d in docs {
        let mut problems = Problems::new();
        if let Err(m) = validate_name(d.name()) {
            push(&mut problems, "metadata.name", m);
        }
        check_metadata(d.resource.metadata(), &mut problems);
        match &d.resource {
            Resource::Cluster(_) => {}
            Resource::ScalingPolicy(p) => problems.extend(model::scaling::check_policy(&p.spec)),
            Resource::Role(r) => problems.extend(model::role::check_role(&r.spec)),
            Resource::LoadBalancer(lb) => problems.extend(model::lb::check_load_balancer(&lb.spec)),
            Resource::TargetGroup(tg) => problems.extend(model::lb::check_target_group(&tg.spec)),
            Resource::TaskDefinition(td) => check_taskdef(&td.spec, &mut problems),
            Resource::Service(svc) => {
                check_service(&svc.spec, &mut problems);
                if let Some((family, None)) = model::parse_taskdef_ref(&svc.spec.task_definition) {
                    if let Some(td) = taskdefs.get(family) {
                        problems.extend(check_service_against_taskdef(&svc.spec, td, family));
                    }
                }
            }
        }
        if let Some(first) = seen.get(&(d.kind(), d.name())) {
            push(
                &mut problems,
                "metadata.name",
                format!(
                    "duplicate {} `{}`: also defined in {} document {}",
                    d.kind(),
                    d.name(),
                    first.file,
                    first.document
                ),
            );
        } else {
            seen.insert((d.kind(), d.name()), &d.source);
        }
        errors.extend(
            problems
                .into_iter()
                .map(|(field, msg)| ManifestError::at(&d.source, Some(&field), msg)),
        );
    }
    errors
}

fn check_metadata(m: &model::Metadata, out: &mut Problems) {
    for (what, map) in [("labels", &m.labels), ("annotations", &m.annotations)] {
        for k in map.keys() {
            if k.trim().is_empty() {
                push(out, format!("metadata.{what}"), "keys must not be empty");
            } else if k.len() > 253 || k.chars().any(char::is_whitespace) {
                push(
                    out,
                    format!("metadata.{what}"),
                    format!("key `{k}` must be at most 253 characters with no whitespace"),
                );
            }
        }
    }
}

fn check_taskdef(spec: &TaskDefinitionSpec, out: &mut Problems) {
    let mode = spec.network_mode();
    let shared_ns = matches!(mode, NetworkMode::Host | NetworkMode::Awsvpc);
    let containers = &spec.container_definitions;
    if containers.is_empty() {
        push(
            out,
            "spec.containerDefinitions",
            "at least one container definition is required",
        );
    }
    if let Some(cpu) = spec.cpu {
        if !(128..=196_608).contains(&cpu) {
            push(
                out,
                "spec.cpu",
                format!("must be between 128 and 196608 CPU units (1024 = one vCPU), got {cpu}"),
            );
        }
    }
    if let Some(mem) = spec.memory {
        if mem < 6 {
            push(
                out,
                "spec.memory",
                format!("must be at least 6 MiB, got {mem}"),
            );
        }
    }
    if let Some(role) = &spec.task_role {
        if role.trim().is_empty() {
            push(
                out,
                "spec.taskRole",
                "must not be empty (leave it out for no role)",
            );
        }
    }

    // Volumes.
    let mut volumes: HashMap<&str, usize> = HashMap::new();
    for (k, v) in spec.volumes.iter().enumerate() {
        let p = format!("spec.volumes[{k}]");
        if let Err(m) = validate_name(&v.name) {
            push(out, format!("{p}.name"), m);
        }
        if let Some(j) = volumes.insert(v.name.as_str(), k) {
            push(
                out,
                format!("{p}.name"),
                format!(
                    "duplicate volume name `{}` (also spec.volumes[{j}])",
                    v.name
                ),
            );
        }
        if let Some(src) = v.host.as_ref().and_then(|h| h.source_path.as_deref()) {
            if !src.starts_with('/') {
                push(
                    out,
                    format!("{p}.host.sourcePath"),
                    format!("must be an absolute path, got `{src}`"),
                );
            }
        }
    }

    // Containers.
    let by_name: HashMap<&str, usize> = containers
        .iter()
        .enumerate()
        .rev()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let mut container_ports: HashMap<(u16, model::Protocol), String> = HashMap::new();
    let mut host_ports: HashMap<(u16, model::Protocol), String> = HashMap::new();
    for (i, c) in containers.iter().enumerate() {
        let p = format!("spec.containerDefinitions[{i}]");
        if let Err(m) = validate_name(&c.name) {
            push(out, format!("{p}.name"), m);
        }
        if let Some(&first) = by_name.get(c.name.as_str()) {
            if first != i {
                push(
                    out,
                    format!("{p}.name"),
                    format!(
                        "duplicate container name `{}` (also spec.containerDefinitions[{first}])",
                        c.name
                    ),
                );
            }
        }
        if c.image.trim().is_empty() {
            push(out, format!("{p}.image"), "must not be empty");
        } else if c.image.chars().any(char::is_whitespace) {
            push(
                out,
                format!("{p}.image"),
                format!("`{}` must not contain whitespace", c.image),
            );
        }
        if let Some(m) = c.memory {
            if m < 6 {
                push(
                    out,
                    format!("{p}.memory"),
                    format!("must be at least 6 MiB (Docker's minimum), got {m}"),
                );
            }
        }
        if let Some(r) = c.memory_reservation {
            if r == 0 {
                push(
                    out,
                    format!("{p}.memoryReservation"),
                    "must be at least 1 MiB",
                );
            }
            if let Some(m) = c.memory {
                if r > m {
                    push(
                        out,
                        format!("{p}.memoryReservation"),
                        format!("{r} MiB must not exceed the container's memory limit ({m} MiB)"),
                    );
                }
            }
        }
        if spec.memory.is_none() && c.memory.is_none() && c.memory_reservation.is_none() {
            push(
                out,
                format!("{p}.memory"),
                "set memory or memoryReservation (MiB) for the container, or memory for the task: \
                 berth must know how much memory to reserve (as ECS requires)",
            );
        }
        if let (Some(task_mem), Some(m)) = (spec.memory, c.memory) {
            if m > task_mem {
                push(
                    out,
                    format!("{p}.memory"),
                    format!("{m} MiB is more than the task's memory ({task_mem} MiB)"),
                );
            }
        }
        if let Some(t) = c.stop_timeout {
            if t > 120 {
                push(
                    out,
                    format!("{p}.stopTimeout"),
                    format!("must be at most 120 seconds, got {t}"),
                );
            }
        }

        // Ports.
        let mut own: HashMap<(u16, model::Protocol), usize> = HashMap::new();
        for (j, pm) in c.port_mappings.iter().enumerate() {
            let pp = format!("{p}.portMappings[{j}]");
            let proto = pm.protocol.unwrap_or_default();
            if mode == NetworkMode::None {
                push(
                    out,
                    pp.clone(),
                    "network mode `none` has no network to map ports from",
                );
                continue;
            }
            if pm.container_port == 0 {
                push(
                    out,
                    format!("{pp}.containerPort"),
                    "must be between 1 and 65535",
                );
                continue;
            }
            let host = pm.host_port.filter(|h| *h != 0);
            if shared_ns {
                if let Some(h) = host {
                    if h != pm.container_port {
                        push(
                            out,
                            format!("{pp}.hostPort"),
                            format!(
                                "in {} network mode the host port must equal the container port ({}) or be left out, got {h}",
                                mode_name(mode),
                                pm.container_port
                            ),
                        );
                    }
                }
            }
            let key = (pm.container_port, proto);
            if let Some(k) = own.insert(key, j) {
                push(
                    out,
                    format!("{pp}.containerPort"),
                    format!(
                        "container port {}/{} is mapped twice (also {p}.portMappings[{k}])",
                        pm.container_port,
                        proto.as_str()
                    ),
                );
            } else if shared_ns {
                // One network namespace for the whole task: a port can be used once.
                if let Some(other) = container_ports.get(&key) {
                    push(
                        out,
                        format!("{pp}.containerPort"),
                        format!(
                            "container port {}/{} is already mapped by {other} (containers share one network namespace in {} mode)",
                            pm.container_port,
                            proto.as_str(),
                            mode_name(mode)
                        ),
                    );
                } else {
                    container_ports.insert(key, pp.clone());
                }
            } else if let Some(h) = host {
                let hk = (h, proto);
                if let Some(other) = host_ports.get(&hk) {
                    push(
                        out,
                        format!("{pp}.hostPort"),
                        format!(
                            "host port {h}/{} is already used by {other} in this task",
                            proto.as_str()
                        ),
                    );
                } else {
                    host_ports.insert(hk, pp.clone());
                }
            }
        }

        // Environment.
        let mut env_seen: HashMap<&str, usize> = HashMap::new();
        for (k, e) in c.environment.iter().enumerate() {
            let pe = format!("{p}.environment[{k}].name");
            if e.name.is_empty() {
                push(out, pe, "must not be empty");
            } else if e.name.contains('=') || e.name.contains('\0') {
                push(out, pe, format!("`{}` must not contain `=`", e.name));
            } else if let Some(j) = env_seen.insert(e.name.as_str(), k) {
                push(
                    out,
                    pe,
                    format!(
                        "duplicate environment variable `{}` (also environment[{j}])",
                        e.name
                    ),
                );
            }
        }

        // Health check.
        if let Some(hc) = &c.health_check {
            let ph = format!("{p}.healthCheck");
            match hc.command.first().map(String::as_str) {
                None => push(
                    out,
                    format!("{ph}.command"),
                    "must not be empty: start it with CMD, CMD-SHELL or NONE",
                ),
                Some("NONE") => {}
                Some(first @ ("CMD" | "CMD-SHELL")) => {
                    if hc.command.len() < 2 || hc.command[1..].iter().all(|s| s.trim().is_empty()) {
                        push(
                            out,
                            format!("{ph}.command"),
                            format!("{first} must be followed by the command to run"),
                        );
                    }
                }
                Some(other) => push(
                    out,
                    format!("{ph}.command"),
                    format!(
                        "must start with CMD, CMD-SHELL or NONE (got `{other}`); e.g. [\"CMD-SHELL\", \"{}\"]",
                        hc.command.join(" ")
                    ),
                ),
            }
            for (field, v, lo, hi) in [
                ("interval", hc.interval, 1, 300),
                ("timeout", hc.timeout, 1, 120),
                ("retries", hc.retries, 1, 10),
                ("startPeriod", hc.start_period, 0, 300),
            ] {
                if let Some(v) = v {
                    if !(lo..=hi).contains(&v) {
                        push(
                            out,
                            format!("{ph}.{field}"),
                            format!("must be between {lo} and {hi}, got {v}"),
                        );
                    }
                }
            }
        }

        // Dependencies.
        for (k, dep) in c.depends_on.iter().enumerate() {
            let pd = format!("{p}.dependsOn[{k}].containerName");
            if dep.container_name == c.name {
                push(out, pd, "a container cannot depend on itself");
                continue;
            }
            let Some(&t) = by_name.get(dep.container_name.as_str()) else {
                let names = containers.iter().map(|c| c.name.as_str());
                let hint = match closest(&dep.container_name, names) {
                    Some(s) => format!("; did you mean `{s}`?"),
                    None => String::new(),
                };
                push(
                    out,
                    pd,
                    format!(
                        "no container named `{}` in this task definition{hint}",
                        dep.container_name
                    ),
                );
                continue;
            };
            let target = &containers[t];
            match dep.condition {
                DependencyCondition::Healthy if target.health_check.is_none() => push(
                    out,
                    format!("{p}.dependsOn[{k}].condition"),
                    format!(
                        "HEALTHY needs container `{}` to have a healthCheck",
                        target.name
                    ),
                ),
                DependencyCondition::Complete | DependencyCondition::Success
                    if target.is_essential() =>
                {
                    push(
                        out,
                        format!("{p}.dependsOn[{k}].condition"),
                        format!(
                            "COMPLETE and SUCCESS wait for container `{}` to exit, so it must have `essential: false` (as in ECS)",
                            target.name
                        ),
                    )
                }
                _ => {}
            }
        }

        // Mounts.
        for (k, m) in c.mount_points.iter().enumerate() {
            let pm = format!("{p}.mountPoints[{k}]");
            if !volumes.contains_key(m.source_volume.as_str()) {
                push(
                    out,
                    format!("{pm}.sourceVolume"),
                    format!("no volume named `{}` in spec.volumes", m.source_volume),
                );
            }
            if !m.container_path.starts_with('/') {
                push(
                    out,
                    format!("{pm}.containerPath"),
                    format!("must be an absolute path, got `{}`", m.container_path),
                );
            }
        }

        for label in c.docker_labels.keys() {
            if label.starts_with("berth.") {
                push(
                    out,
                    format!("{p}.dockerLabels"),
                    format!("`{label}` is reserved: berth sets the `berth.*` labels itself"),
                );
            }
        }
    }

    if !containers.is_empty() && !containers.iter().any(|c| c.is_essential()) {
        push(
            out,
            "spec.containerDefinitions",
            "at least one container must be essential (`essential` defaults to true)",
        );
    }
    if let Some(cycle) = dependency_cycle(spec) {
        let first = by_name.get(cycle[0].as_str()).copied().unwrap_or(0);
        push(
            out,
            format!("spec.containerDefinitions[{first}].dependsOn"),
            format!("dependency cycle: {}", cycle.join(" -> ")),
        );
    }
    if let Some(task_cpu) = spec.cpu {
        let sum: u64 = containers.iter().map(|c| c.cpu as u64).sum();
        if sum > task_cpu as u64 {
            push(
                out,
                "spec.cpu",
                format!("the containers reserve {sum} CPU units in total, more than the task's {task_cpu}"),
            );
        }
    }
    if let Some(task_mem) = spec.memory {
        let sum: u64 = containers
            .iter()
            .map(|c| c.memory_reservation.or(c.memory).unwrap_or(0) as u64)
            .sum();
        if sum > task_mem as u64 {
            push(
                out,
                "spec.memory",
                format!("the containers reserve {sum} MiB in total, more than the task's {task_mem} MiB"),
            );
        }
    }
    for (k, pc) in spec.placement_constraints.iter().enumerate() {
        let pp = format!("spec.placementConstraints[{k}]");
        if pc.kind == PlacementConstraintType::DistinctInstance {
            push(
                out,
                format!("{pp}.type"),
                "distinctInstance belongs on a service (or run-task), not in a task definition (as in ECS)",
            );
        } else {
            check_constraint(pc, &pp, out);
        }
    }
}

fn mode_name(mode: NetworkMode) -> &'static str {
    match mode {
        NetworkMode::Bridge => "bridge",
        NetworkMode::Host => "host",
        NetworkMode::Awsvpc => "awsvpc",
        NetworkMode::None => "none",
    }
}

/// A cycle in `dependsOn`, as container names (first repeated at the end).
fn dependency_cycle(spec: &TaskDefinitionSpec) -> Option<Vec<String>> {
    let deps: BTreeMap<&str, Vec<&str>> = spec
        .container_definitions
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.depends_on
                    .iter()
                    .map(|d| d.container_name.as_str())
                    .collect(),
            )
        })
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done
    let mut state: HashMap<&str, u8> = HashMap::new();
    fn dfs<'a>(
        n: &'a str,
        deps: &BTreeMap<&'a str, Vec<&'a str>>,
        state: &mut HashMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        state.insert(n, 1);
        stack.push(n);
        for &m in deps.get(n).map(Vec::as_slice).unwrap_or(&[]) {
            if m == n || !deps.contains_key(m) {
                continue; // reported elsewhere
            }
            match state.get(m).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|s| *s == m).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        stack[start..].iter().map(|s| s.to_string()).collect();
                    cycle.push(m.to_string());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = dfs(m, deps, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n, 2);
        None
    }
    for &n in deps.keys() {
        if state.get(n).copied().unwrap_or(0) == 0 {
            if let Some(c) = dfs(n, &deps, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn check_constraint(pc: &PlacementConstraint, pp: &str, out: &mut Problems) {
    match pc.kind {
        PlacementConstraintType::MemberOf => {
            if pc.expression.as_deref().is_none_or(|e| e.trim().is_empty()) {
                push(
                    out,
                    format!("{pp}.expression"),
                    "memberOf needs an expression (ECS cluster query language, e.g. `attribute:stack == prod`)",
                );
            }
        }
        PlacementConstraintType::DistinctInstance => {
            if pc.expression.is_some() {
                push(
                    out,
                    format!("{pp}.expression"),
                    "distinctInstance takes no expression",
                );
            }
        }
    }
}

fn check_service(spec: &ServiceSpec, out: &mut Problems) {
    if let Err(m) = validate_name(&spec.cluster) {
        push(out, "spec.cluster", m);
    }
    match model::parse_taskdef_ref(&spec.task_definition) {
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
    use super::*;
    use crate::manifest::parse_str;

    fn problems_of(yaml: &str) -> Vec<String> {
        let docs = parse_str(yaml, "t.yaml").unwrap_or_else(|e| panic!("{e:?}"));
        validate(&docs)
            .into_iter()
            .map(|e| format!("{}: {}", e.field.unwrap_or_default(), e.message))
            .collect()
    }

    const TD: &str = "apiVersion: berth.dev/v1\nkind: TaskDefinition\nmetadata: {name: t}\nspec:\n  containerDefinitions:\n    - {name: a, image: i, memory: 32}\n";

    #[test]
    fn names() {
        assert!(validate_name("web-1_x").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("web:1").is_err());
        assert!(validate_name(&"a".repeat(255)).is_ok());
        assert!(validate_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn a_minimal_task_definition_is_fine() {
        assert!(problems_of(TD).is_empty());
    }

    #[test]
    fn memory_is_required_somewhere() {
        let p = problems_of(&TD.replace(", memory: 32", ""));
        assert!(
            p[0].starts_with("spec.containerDefinitions[0].memory:"),
            "{p:?}"
        );
        assert!(problems_of(
            &TD.replace(", memory: 32", "")
                .replace("spec:\n", "spec:\n  memory: 64\n")
        )
        .is_empty());
    }

    #[test]
    fn task_level_limits() {
        let p = problems_of(&TD.replace("spec:\n", "spec:\n  cpu: 64\n"));
        assert!(p.iter().any(|p| p.starts_with("spec.cpu:")), "{p:?}");
        let p = problems_of(&TD.replace("spec:\n", "spec:\n  memory: 16\n"));
        assert!(
            p.iter().any(|p| p.contains("more than the task's memory")),
            "{p:?}"
        );
    }

    #[test]
    fn health_check_command() {
        for (cmd, ok) in [
            ("[CMD-SHELL, 'true']", true),
            ("[CMD, /bin/true]", true),
            ("[NONE]", true),
            ("[CMD]", false),
            ("[]", false),
            ("[/bin/true]", false),
        ] {
            let text = TD.replace(
                "memory: 32}",
                &format!("memory: 32, healthCheck: {{command: {cmd}}}}}"),
            );
            let p = problems_of(&text);
            assert_eq!(p.is_empty(), ok, "{cmd}: {p:?}");
        }
    }

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

    #[test]
    fn reserved_labels_and_mounts() {
        let text = TD.replace(
            "memory: 32}",
            "memory: 32, dockerLabels: {berth.task: x}, mountPoints: [{sourceVolume: v, containerPath: data}]}",
        );
        let p = problems_of(&text);
        assert!(p.iter().any(|p| p.contains("reserved")), "{p:?}");
        assert!(p.iter().any(|p| p.contains("no volume named `v`")), "{p:?}");
        assert!(p.iter().any(|p| p.contains("absolute path")), "{p:?}");
    }
}
