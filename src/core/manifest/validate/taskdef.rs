//! TaskDefinition checks: containers, ports, volumes, health checks, dependencies and the
//! task's CPU and memory, following ECS's own rules where ECS has them.

use std::collections::{BTreeMap, HashMap};

use super::names::validate_name;
use super::placement::check_constraint;
use super::problems::{push, Problems};
use crate::manifest::error::closest;
use crate::model::{
    DependencyCondition, NetworkMode, PlacementConstraintType, Protocol, TaskDefinitionSpec,
};

pub(super) fn check_taskdef(spec: &TaskDefinitionSpec, out: &mut Problems) {
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
    let mut container_ports: HashMap<(u16, Protocol), String> = HashMap::new();
    let mut host_ports: HashMap<(u16, Protocol), String> = HashMap::new();
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
        let mut own: HashMap<(u16, Protocol), usize> = HashMap::new();
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

        // Secrets (resolved when the task starts, as ECS does).
        for (k, sec) in c.secrets.iter().enumerate() {
            let ps = format!("{p}.secrets[{k}]");
            if sec.name.is_empty() || sec.name.contains('=') || sec.name.contains('\0') {
                push(
                    out,
                    format!("{ps}.name"),
                    "must be a non-empty name without `=`",
                );
            } else if env_seen.contains_key(sec.name.as_str()) {
                push(
                    out,
                    format!("{ps}.name"),
                    format!("`{}` is also set in environment", sec.name),
                );
            }
            if crate::model::parse_secret_ref(&sec.value_from).is_none() {
                push(
                    out,
                    format!("{ps}.valueFrom"),
                    format!(
                        "{:?} does not name a secret: write SECRET, SECRET:KEY or an ARN ending in :secret:SECRET",
                        sec.value_from
                    ),
                );
            }
        }
        if let Some(rc) = &c.repository_credentials {
            if crate::model::parse_secret_ref(&rc.credentials_parameter).is_none() {
                push(
                    out,
                    format!("{p}.repositoryCredentials.credentialsParameter"),
                    format!(
                        "{:?} does not name a secret (one with keys username and password)",
                        rc.credentials_parameter
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

#[cfg(test)]
mod tests {
    use super::super::testing::{problems_of, TD};

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
