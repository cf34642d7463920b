//! One compose service → one container definition (and the task-level pieces it needs:
//! volumes, network mode, namespaces) plus what its berth Service takes (replicas, x-berth).
//! Every key is handled, or reported by name and line.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::duration;
use super::locate::Seg;
use super::mounts::{tmpfs_entry, volumes_of};
use super::ports;
use super::report::Ctx;
use super::source::{key_text, parse_env_text, Project};
use super::units;
use super::values::{command, key_values, one_or_many, scalar, scalar_list, whole};
use crate::model::{
    ContainerDefinition, DeploymentConfiguration, EnvVar, HealthCheck, KernelCapabilities,
    LinuxParameters, NetworkMode, PlacementConstraint, PlacementStrategy, PortMapping,
    RestartPolicy, ServiceLoadBalancer, Volume,
};

/// MiB reserved (soft) for a service that says nothing about memory: berth must reserve some.
pub const DEFAULT_MEMORY_RESERVATION: u32 = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Started,
    Healthy,
    CompletedSuccessfully,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "service_started",
            Condition::Healthy => "service_healthy",
            Condition::CompletedSuccessfully => "service_completed_successfully",
        }
    }
}

/// The `x-berth` extension: what Compose cannot say.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct XBerth {
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub task_role: Option<String>,
    /// Shorthand for one load balancer entry: this container's `containerPort` (default: its
    /// first port) in target group `targetGroup`.
    #[serde(default)]
    pub target_group: Option<String>,
    #[serde(default)]
    pub container_port: Option<u16>,
    #[serde(default)]
    pub load_balancers: Vec<XLoadBalancer>,
    #[serde(default)]
    pub placement_constraints: Vec<PlacementConstraint>,
    #[serde(default)]
    pub placement_strategy: Vec<PlacementStrategy>,
    #[serde(default)]
    pub deployment_configuration: Option<DeploymentConfiguration>,
    #[serde(default)]
    pub health_check_grace_period_seconds: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct XLoadBalancer {
    pub target_group: String,
    pub container_port: u16,
}

/// What one compose service became.
#[derive(Debug, Clone, Default)]
pub struct Converted {
    pub container: ContainerDefinition,
    pub volumes: Vec<Volume>,
    pub network_mode: Option<NetworkMode>,
    pub pid_mode: Option<String>,
    pub ipc_mode: Option<String>,
    pub replicas: u32,
    pub daemon: bool,
    /// (compose service, condition, path of the entry).
    pub depends_on: Vec<(String, Condition, Vec<Seg>)>,
    /// (environment variable, valueFrom).
    pub secrets: Vec<(String, String)>,
    pub x_berth: XBerth,
    pub labels: BTreeMap<String, String>,
    pub load_balancers: Vec<ServiceLoadBalancer>,
}

fn at(base: &[Seg], k: &str) -> Vec<Seg> {
    let mut p = base.to_vec();
    p.push(Seg::key(k));
    p
}

fn idx(base: &[Seg], i: usize) -> Vec<Seg> {
    let mut p = base.to_vec();
    p.push(Seg::Index(i));
    p
}

/// Hints for keys berth does not carry (the rest are reported without one).
fn hint(key: &str) -> &'static str {
    match key {
        "build" => "build images locally and push them; berth runs `image`",
        "container_name" => "berth names containers after their task",
        "networks" | "links" | "external_links" | "extra_hosts" | "dns" | "dns_search"
        | "dns_opt" | "domainname" | "mac_address" => {
            "berth has no per-project networks or service DNS: tasks reach each other through published host ports"
        }
        "ulimits" => "berth's task definitions have no ulimits",
        "expose" => "berth publishes only `ports`; without a project network there is nothing to expose to",
        "profiles" => "berth converts every service; remove the ones you do not want",
        "pull_policy" => "image pulls are the agent's decision",
        "stop_signal" => "berth stops containers with SIGTERM, then SIGKILL",
        "devices" | "device_cgroup_rules" => "berth's agent does not pass host devices",
        _ => "",
    }
}

/// Convert one compose service (its mapping at `path`).
pub(crate) fn convert(
    ctx: &mut Ctx,
    container_name: &str,
    svc: &Mapping,
    path: &[Seg],
    project: &Project,
) -> Converted {
    let problems_before = ctx.problems.len();
    let mut out = Converted {
        replicas: 1,
        ..Default::default()
    };
    let c = &mut out.container;
    c.name = container_name.to_string();
    let mut env_files: Vec<(String, String)> = Vec::new();
    let mut env: Vec<(String, String)> = Vec::new();
    let mut cpu_shares = None;
    let mut cpu_reservation = None;
    let mut cpu_limit: Option<(u32, Vec<Seg>)> = None;
    let mut mem_limit = None;
    let mut mem_reservation = None;
    let mut deploy_replicas = None;
    let mut scale = None;
    let mut linux = LinuxParameters::default();
    let mut caps = KernelCapabilities::default();

    for (k, v) in svc {
        let key = key_text(k);
        let p = at(path, &key);
        match key.as_str() {
            "image" => match scalar(v) {
                Some(s) => c.image = s,
                None => ctx.error(&p, "must be a string"),
            },
            "command" => match command(v) {
                Ok(cmd) => c.command = cmd,
                Err(m) => ctx.error(&p, m),
            },
            "entrypoint" => match command(v) {
                Ok(cmd) => c.entry_point = cmd,
                Err(m) => ctx.error(&p, m),
            },
            "environment" => match key_values(v) {
                Ok(kvs) => {
                    for (k, val, seg) in kvs {
                        match val.or_else(|| project.vars.get(&k).cloned()) {
                            Some(val) => env.push((k, val)),
                            None => {
                                let mut ep = p.clone();
                                ep.push(seg);
                                ctx.warn(&ep, format!("takes {k} from the environment, where it is not set: left out"));
                            }
                        }
                    }
                }
                Err(m) => ctx.error(&p, m),
            },
            "env_file" => env_file(ctx, v, &p, project.dir, &mut env_files),
            "ports" => ports_of(ctx, v, &p, &mut c.port_mappings),
            "volumes" => volumes_of(ctx, v, &p, project, &mut out.volumes, &mut c.mount_points, &mut linux),
            "tmpfs" => match one_or_many(v) {
                Some(list) => {
                    for t in list {
                        linux.tmpfs.push(tmpfs_entry(ctx, &t, None, &p));
                    }
                    ctx.warn(&p, "becomes linuxParameters.tmpfs, which berth's agent accepts but does not mount yet");
                }
                None => ctx.error(&p, "must be a path or a list of paths"),
            },
            "healthcheck" => c.health_check = healthcheck(ctx, v, &p),
            "depends_on" => depends_on(ctx, v, &p, &mut out.depends_on),
            "deploy" => deploy(ctx, v, &p, &mut deploy_replicas, &mut out.daemon, &mut cpu_reservation, &mut cpu_limit, &mut mem_limit, &mut mem_reservation, &mut out.labels),
            "scale" => match whole(v) {
                Some(n) => scale = Some(n as u32),
                None => ctx.error(&p, "must be a whole number"),
            },
            "mem_limit" => size_into(ctx, v, &p, &mut mem_limit),
            "mem_reservation" => size_into(ctx, v, &p, &mut mem_reservation),
            "cpus" => match scalar(v).map(|s| units::cpu_units(&s)) {
                Some(Ok(u)) => {
                    if cpu_limit.is_none() {
                        cpu_limit = Some((u, p.clone()));
                    }
                }
                Some(Err(m)) => ctx.error(&p, m),
                None => ctx.error(&p, "must be a number"),
            },
            "cpu_shares" => match whole(v) {
                Some(n) => cpu_shares = Some(n as u32),
                None => ctx.error(&p, "must be a whole number"),
            },
            "user" => c.user = scalar(v),
            "working_dir" => c.working_directory = scalar(v),
            "hostname" => c.hostname = scalar(v),
            "privileged" => c.privileged = v.as_bool(),
            "read_only" => c.readonly_root_filesystem = v.as_bool(),
            "init" => linux.init_process_enabled = v.as_bool(),
            "shm_size" => {
                let mut m = None;
                size_into(ctx, v, &p, &mut m);
                linux.shared_memory_size = m;
            }
            "labels" => match key_values(v) {
                Ok(kvs) => {
                    for (k, val, _) in kvs {
                        c.docker_labels.insert(k, val.unwrap_or_default());
                    }
                }
                Err(m) => ctx.error(&p, m),
            },
            "logging" => logging(ctx, v, &p, c),
            "restart" => restart(ctx, v, &p, c),
            "stop_grace_period" => match scalar(v).map(|s| duration::parse(&s)) {
                Some(Ok(d)) => c.stop_timeout = Some(duration::ceil_secs(d).min(u32::MAX as u64) as u32),
                Some(Err(m)) => ctx.error(&p, m),
                None => ctx.error(&p, "must be a duration like 10s"),
            },
            "cap_add" | "cap_drop" => match one_or_many(v) {
                Some(list) => {
                    let list = list.into_iter().map(|s| s.to_ascii_uppercase());
                    if key == "cap_add" {
                        caps.add.extend(list)
                    } else {
                        caps.drop.extend(list)
                    }
                }
                None => ctx.error(&p, "must be a list of capability names"),
            },
            "network_mode" => match scalar(v).as_deref() {
                Some("bridge") | Some("default") => out.network_mode = None,
                Some("host") => out.network_mode = Some(NetworkMode::Host),
                Some("none") => out.network_mode = Some(NetworkMode::None),
                Some(other) => ctx.unsupported(&p, &format!("network_mode `{other}` has no berth equivalent: each compose service is its own task; bridge is used")),
                None => ctx.error(&p, "must be a string"),
            },
            "pid" => match scalar(v).as_deref() {
                Some("host") => out.pid_mode = Some("host".into()),
                Some(other) => ctx.unsupported(&p, &format!("pid `{other}`: only `host` has a berth equivalent")),
                None => ctx.error(&p, "must be a string"),
            },
            "ipc" => match scalar(v).as_deref() {
                Some("host") => out.ipc_mode = Some("host".into()),
                Some("none") => out.ipc_mode = Some("none".into()),
                Some("private") | Some("shareable") => out.ipc_mode = Some("task".into()),
                Some(other) => ctx.unsupported(&p, &format!("ipc `{other}`: only host, none and private have berth equivalents")),
                None => ctx.error(&p, "must be a string"),
            },
            "secrets" => secrets_of(ctx, v, &p, project, &mut out.secrets),
            "x-berth" => match serde_yaml::from_value::<XBerth>(v.clone()) {
                Ok(x) => out.x_berth = x,
                Err(e) => ctx.error(&p, format!("invalid x-berth: {e}")),
            },
            k if k.starts_with("x-") => {}
            other => ctx.unsupported(&p, hint(other)),
        }
    }

    if c.image.is_empty() && ctx.problems.len() == problems_before {
        let msg = if svc.contains_key("build") {
            "has `build` but no `image`: berth runs images; build and push it, then name it in `image`"
        } else {
            "has no `image`"
        };
        ctx.error(path, msg);
    }
    // Environment: env_file first, `environment` overrides (as Compose does).
    let mut merged: Vec<EnvVar> = Vec::new();
    for (k, v) in env_files.into_iter().chain(env) {
        match merged.iter_mut().find(|e| e.name == k) {
            Some(e) => e.value = v,
            None => merged.push(EnvVar { name: k, value: v }),
        }
    }
    c.environment = merged;
    // CPU: shares, else the reservation, else the limit (berth has no CPU cap).
    c.cpu = cpu_shares
        .or(cpu_reservation)
        .or(cpu_limit.as_ref().map(|l| l.0))
        .unwrap_or(0);
    if let Some((u, lp)) = &cpu_limit {
        if cpu_shares.is_some() || cpu_reservation.is_some() {
            ctx.warn(lp, format!("is a CPU cap, which berth does not enforce: the container gets {} CPU units from the reservation/shares ({u} not applied)", c.cpu));
        } else {
            ctx.warn(lp, format!("becomes {u} CPU units (reserved for placement and the container's cpu shares); berth does not cap CPU"));
        }
    }
    c.memory = mem_limit;
    c.memory_reservation = mem_reservation;
    if c.memory.is_none() && c.memory_reservation.is_none() {
        c.memory_reservation = Some(DEFAULT_MEMORY_RESERVATION);
    }
    if !caps.add.is_empty() || !caps.drop.is_empty() {
        linux.capabilities = Some(caps);
    }
    if linux != LinuxParameters::default() {
        c.linux_parameters = Some(linux);
    }
    out.replicas = deploy_replicas.or(scale).unwrap_or(1);
    out
}

fn size_into(ctx: &mut Ctx, v: &Value, p: &[Seg], into: &mut Option<u32>) {
    match scalar(v).map(|s| units::mib(&s)) {
        Some(Ok(m)) => *into = Some(m),
        Some(Err(m)) => ctx.error(p, m),
        None => ctx.error(p, "must be a size like 512m"),
    }
}

fn env_file(ctx: &mut Ctx, v: &Value, p: &[Seg], dir: &Path, out: &mut Vec<(String, String)>) {
    let items: Vec<(String, bool, Vec<Seg>)> = match v {
        Value::Sequence(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match item {
                Value::Mapping(m) => {
                    let path = m.get("path").and_then(scalar)?;
                    let required = m.get("required").and_then(Value::as_bool).unwrap_or(true);
                    Some((path, required, idx(p, i)))
                }
                other => scalar(other).map(|s| (s, true, idx(p, i))),
            })
            .collect(),
        other => match scalar(other) {
            Some(s) => vec![(s, true, p.to_vec())],
            None => {
                ctx.error(p, "must be a path or a list of paths");
                return;
            }
        },
    };
    for (file, required, ip) in items {
        let full = dir.join(&file);
        match std::fs::read_to_string(&full) {
            Ok(text) => match parse_env_text(&text) {
                Ok(vars) => out.extend(vars),
                Err((line, m)) => ctx.error(&ip, format!("{}:{line}: {m}", full.display())),
            },
            Err(_) if !required => {}
            Err(e) => ctx.error(&ip, format!("cannot read env file {}: {e}", full.display())),
        }
    }
}

fn ports_of(ctx: &mut Ctx, v: &Value, p: &[Seg], out: &mut Vec<PortMapping>) {
    let Some(list) = v.as_sequence() else {
        ctx.error(p, "must be a list");
        return;
    };
    for (i, item) in list.iter().enumerate() {
        let ip = idx(p, i);
        let parsed = match item {
            Value::Mapping(m) => long_port(ctx, m, &ip),
            other => match scalar(other).map(|s| ports::parse_short(&s)) {
                Some(Ok(ps)) => Some((ps, None, None)),
                Some(Err(m)) => {
                    ctx.error(&ip, m);
                    None
                }
                None => {
                    ctx.error(
                        &ip,
                        "must be a port string like \"8080\" or \"80:8080\", or a mapping",
                    );
                    None
                }
            },
        };
        let Some((ps, name, app)) = parsed else {
            continue;
        };
        if let Some(host_ip) = ps
            .host_ip
            .as_deref()
            .filter(|h| *h != "0.0.0.0" && *h != "::")
        {
            ctx.warn(&ip, format!("binds host address {host_ip}, which berth cannot: berth publishes ports on all addresses (0.0.0.0)"));
        }
        let one = ps.pairs.len() == 1;
        for (cport, hport) in ps.pairs {
            out.push(PortMapping {
                container_port: cport,
                host_port: hport,
                protocol: (ps.protocol != crate::model::Protocol::Tcp).then_some(ps.protocol),
                name: if one { name.clone() } else { None },
                app_protocol: app.clone(),
            });
        }
    }
}

type LongPort = (ports::Ports, Option<String>, Option<String>);

fn long_port(ctx: &mut Ctx, m: &Mapping, p: &[Seg]) -> Option<LongPort> {
    let mut target = None;
    let mut published = None;
    let mut host_ip = None;
    let mut protocol = crate::model::Protocol::Tcp;
    let mut name = None;
    let mut app = None;
    for (k, v) in m {
        let key = key_text(k);
        let kp = at(p, &key);
        match key.as_str() {
            "target" => match scalar(v).map(|s| ports::range(&s, "container")) {
                Some(Ok((a, b))) if a == b => target = Some(a),
                Some(Ok(_)) => ctx.error(&kp, "must be one port"),
                Some(Err(e)) => ctx.error(&kp, e),
                None => ctx.error(&kp, "must be a port number"),
            },
            "published" => match scalar(v) {
                Some(s) if s.is_empty() => {}
                Some(s) => match ports::range(&s, "host") {
                    Ok((a, b)) if a == b => published = Some(a),
                    Ok(_) => ctx.error(&kp, "a range of host ports for one container port is not supported (berth does not pick one)"),
                    Err(e) => ctx.error(&kp, e),
                },
                None => ctx.error(&kp, "must be a port number"),
            },
            "host_ip" => host_ip = scalar(v),
            "protocol" => match scalar(v).map(|s| ports::protocol(&s)) {
                Some(Ok(pr)) => protocol = pr,
                Some(Err(e)) => ctx.error(&kp, e),
                None => ctx.error(&kp, "must be tcp or udp"),
            },
            "mode" => {}
            "name" => name = scalar(v),
            "app_protocol" => app = scalar(v),
            k if k.starts_with("x-") => {}
            _ => ctx.unsupported(&kp, ""),
        }
    }
    let Some(target) = target else {
        ctx.error(p, "a long-syntax port needs `target` (the container port)");
        return None;
    };
    Some((
        ports::Ports {
            host_ip,
            pairs: vec![(target, published)],
            protocol,
        },
        name,
        app,
    ))
}

fn healthcheck(ctx: &mut Ctx, v: &Value, p: &[Seg]) -> Option<HealthCheck> {
    let Some(m) = v.as_mapping() else {
        ctx.error(p, "must be a mapping");
        return None;
    };
    let mut hc = HealthCheck::default();
    let mut disabled = false;
    for (k, val) in m {
        let key = key_text(k);
        let kp = at(p, &key);
        let secs = |ctx: &mut Ctx| -> Option<u32> {
            match scalar(val).map(|s| duration::parse(&s)) {
                Some(Ok(d)) => Some(duration::ceil_secs(d).min(u32::MAX as u64) as u32),
                Some(Err(e)) => {
                    ctx.error(&kp, e);
                    None
                }
                None => {
                    ctx.error(&kp, "must be a duration like 10s");
                    None
                }
            }
        };
        match key.as_str() {
            "test" => match val {
                Value::String(s) => hc.command = vec!["CMD-SHELL".into(), s.clone()],
                Value::Sequence(_) => match scalar_list(val) {
                    Some(list) => match list.first().map(String::as_str) {
                        Some("CMD") | Some("CMD-SHELL") | Some("NONE") => hc.command = list,
                        _ => ctx.error(&kp, "a list test starts with CMD, CMD-SHELL or NONE"),
                    },
                    None => ctx.error(&kp, "must be a string or a list of strings"),
                },
                _ => ctx.error(&kp, "must be a string or a list of strings"),
            },
            "interval" => hc.interval = secs(ctx),
            "timeout" => hc.timeout = secs(ctx),
            "start_period" => hc.start_period = secs(ctx),
            "retries" => match whole(val) {
                Some(n) => hc.retries = Some(n.min(u32::MAX as u64) as u32),
                None => ctx.error(&kp, "must be a whole number"),
            },
            "disable" => disabled = val.as_bool().unwrap_or(false),
            "start_interval" => ctx.unsupported(&kp, "ECS health checks have no start interval"),
            k if k.starts_with("x-") => {}
            _ => ctx.unsupported(&kp, ""),
        }
    }
    if disabled {
        hc.command = vec!["NONE".into()];
    }
    if hc.command.is_empty() {
        ctx.error(p, "a healthcheck needs `test` (or `disable: true`)");
        return None;
    }
    if hc.command == ["NONE"] {
        return Some(HealthCheck {
            command: hc.command,
            ..Default::default()
        });
    }
    Some(hc)
}

fn condition(ctx: &mut Ctx, v: Option<&Value>, p: &[Seg]) -> Condition {
    match v.and_then(scalar).as_deref() {
        None | Some("service_started") => Condition::Started,
        Some("service_healthy") => Condition::Healthy,
        Some("service_completed_successfully") => Condition::CompletedSuccessfully,
        Some(other) => {
            ctx.error(p, format!("unknown condition `{other}`: use service_started, service_healthy or service_completed_successfully"));
            Condition::Started
        }
    }
}

fn depends_on(ctx: &mut Ctx, v: &Value, p: &[Seg], out: &mut Vec<(String, Condition, Vec<Seg>)>) {
    match v {
        Value::Sequence(list) => {
            for (i, item) in list.iter().enumerate() {
                match scalar(item) {
                    Some(s) => out.push((s, Condition::Started, idx(p, i))),
                    None => ctx.error(&idx(p, i), "must be a service name"),
                }
            }
        }
        Value::Mapping(m) => {
            for (k, val) in m {
                let name = key_text(k);
                let kp = at(p, &name);
                let cond = condition(ctx, val.get("condition"), &at(&kp, "condition"));
                if let Some(opts) = val.as_mapping() {
                    for (ok, _) in opts {
                        let o = key_text(ok);
                        if o != "condition" && o != "required" {
                            ctx.unsupported(&at(&kp, &o), "");
                        }
                    }
                }
                if val.get("required").and_then(Value::as_bool) == Some(false) {
                    ctx.warn(
                        &at(&kp, "required"),
                        "is false: berth still waits for the service",
                    );
                }
                out.push((name, cond, kp));
            }
        }
        _ => ctx.error(p, "must be a list of service names or a mapping"),
    }
}

#[allow(clippy::too_many_arguments)]
fn deploy(
    ctx: &mut Ctx,
    v: &Value,
    p: &[Seg],
    replicas: &mut Option<u32>,
    daemon: &mut bool,
    cpu_reservation: &mut Option<u32>,
    cpu_limit: &mut Option<(u32, Vec<Seg>)>,
    mem_limit: &mut Option<u32>,
    mem_reservation: &mut Option<u32>,
    labels: &mut BTreeMap<String, String>,
) {
    let Some(m) = v.as_mapping() else {
        ctx.error(p, "must be a mapping");
        return;
    };
    for (k, val) in m {
        let key = key_text(k);
        let kp = at(p, &key);
        match key.as_str() {
            "replicas" => match whole(val) {
                Some(n) => *replicas = Some(n.min(u32::MAX as u64) as u32),
                None => ctx.error(&kp, "must be a whole number"),
            },
            "mode" => match scalar(val).as_deref() {
                Some("replicated") => {}
                Some("global") => *daemon = true,
                Some(other) => {
                    ctx.unsupported(&kp, &format!("mode `{other}`: use replicated or global"))
                }
                None => ctx.error(&kp, "must be a string"),
            },
            "resources" => {
                let Some(r) = val.as_mapping() else {
                    ctx.error(&kp, "must be a mapping");
                    continue;
                };
                for (rk, rv) in r {
                    let which = key_text(rk);
                    let rp = at(&kp, &which);
                    if which != "limits" && which != "reservations" {
                        ctx.unsupported(&rp, "");
                        continue;
                    }
                    let Some(rm) = rv.as_mapping() else {
                        ctx.error(&rp, "must be a mapping");
                        continue;
                    };
                    for (ek, ev) in rm {
                        let e = key_text(ek);
                        let ep = at(&rp, &e);
                        match e.as_str() {
                            "cpus" => match scalar(ev).map(|s| units::cpu_units(&s)) {
                                Some(Ok(u)) if which == "limits" => *cpu_limit = Some((u, ep)),
                                Some(Ok(u)) => *cpu_reservation = Some(u),
                                Some(Err(m)) => ctx.error(&ep, m),
                                None => ctx.error(&ep, "must be a number"),
                            },
                            "memory" => {
                                if which == "limits" {
                                    size_into(ctx, ev, &ep, mem_limit)
                                } else {
                                    size_into(ctx, ev, &ep, mem_reservation)
                                }
                            }
                            _ => ctx.unsupported(&ep, ""),
                        }
                    }
                }
            }
            "labels" => match key_values(val) {
                Ok(kvs) => {
                    for (k, v, _) in kvs {
                        labels.insert(k, v.unwrap_or_default());
                    }
                }
                Err(m) => ctx.error(&kp, m),
            },
            "placement" => ctx.unsupported(
                &kp,
                "Swarm placement: use x-berth placementConstraints/placementStrategy",
            ),
            "restart_policy" => ctx.unsupported(
                &kp,
                "use `restart`; berth's services replace tasks that stop",
            ),
            "update_config" | "rollback_config" => {
                ctx.unsupported(&kp, "use x-berth deploymentConfiguration")
            }
            k if k.starts_with("x-") => {}
            _ => ctx.unsupported(&kp, ""),
        }
    }
}

fn logging(ctx: &mut Ctx, v: &Value, p: &[Seg], c: &mut ContainerDefinition) {
    let Some(m) = v.as_mapping() else {
        ctx.error(p, "must be a mapping");
        return;
    };
    let mut lc = serde_json::Map::new();
    for (k, val) in m {
        let key = key_text(k);
        match key.as_str() {
            "driver" => {
                if let Some(d) = scalar(val) {
                    lc.insert("logDriver".into(), d.into());
                }
            }
            "options" => {
                let opts: serde_json::Map<String, serde_json::Value> = val
                    .as_mapping()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((key_text(k), scalar(v)?.into())))
                    .collect();
                lc.insert("options".into(), opts.into());
            }
            _ => ctx.unsupported(&at(p, &key), ""),
        }
    }
    c.log_configuration = Some(lc.into());
    ctx.warn(p, "becomes logConfiguration, kept for ECS compatibility only: berth keeps container logs itself (berth logs)");
}

fn restart(ctx: &mut Ctx, v: &Value, p: &[Seg], c: &mut ContainerDefinition) {
    let s = scalar(v).unwrap_or_default();
    match s.as_str() {
        "no" | "false" => ctx.warn(p, "is `no`, but a berth service replaces a task whose essential container stops; nothing restarts in place"),
        "always" | "unless-stopped" => {
            c.restart_policy = Some(RestartPolicy {
                enabled: true,
                ..Default::default()
            })
        }
        s if s == "on-failure" || s.starts_with("on-failure:") => {
            c.restart_policy = Some(RestartPolicy {
                enabled: true,
                ignored_exit_codes: vec![0],
                ..Default::default()
            });
            if s.contains(':') {
                ctx.warn(p, "has a retry count, which ECS restart policies do not have (restarts are unlimited)");
            }
        }
        other => ctx.error(p, format!("unknown restart policy `{other}`: use no, always, on-failure[:N] or unless-stopped")),
    }
}

fn secrets_of(
    ctx: &mut Ctx,
    v: &Value,
    p: &[Seg],
    project: &Project,
    out: &mut Vec<(String, String)>,
) {
    let Some(list) = v.as_sequence() else {
        ctx.error(p, "must be a list");
        return;
    };
    for (i, item) in list.iter().enumerate() {
        let ip = idx(p, i);
        let (source, target) = match item {
            Value::Mapping(m) => {
                for (k, _) in m {
                    let key = key_text(k);
                    if !matches!(key.as_str(), "source" | "target") {
                        ctx.unsupported(
                            &at(&ip, &key),
                            "berth passes a secret as an environment variable, not a file",
                        );
                    }
                }
                (
                    m.get("source").and_then(scalar),
                    m.get("target").and_then(scalar),
                )
            }
            other => (scalar(other), None),
        };
        let Some(source) = source else {
            ctx.error(&ip, "needs the secret's name (`source`)");
            continue;
        };
        let Some(value_from) = project.secrets.get(&source) else {
            ctx.error(
                &ip,
                format!(
                    "refers to secret `{source}`, which the top-level `secrets:` does not declare"
                ),
            );
            continue;
        };
        let env = target.unwrap_or_else(|| source.clone());
        ctx.warn(&ip, format!("becomes environment variable {env} (Compose mounts /run/secrets/{env}; berth injects secrets as ECS does)"));
        out.push((env, value_from.clone()));
    }
}
