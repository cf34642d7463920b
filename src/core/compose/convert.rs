//! A whole compose project → berth documents: per compose service one TaskDefinition and one
//! Service named `PROJECT-SERVICE` (a service others wait on with
//! `service_completed_successfully` becomes a task definition that `compose up` runs once),
//! a `Secret` per top-level secret, and the order `depends_on` asks for.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::{json, Value as Json};
use serde_yaml::{Mapping, Value};

use super::locate::Seg;
use super::report::{ComposeError, Ctx, Finding};
use super::service::{self, Condition};
use super::source::{key_text, Project};
use super::values::scalar;
use crate::model::{ServiceLoadBalancer, ServiceSpec, TaskDefinitionSpec, API_VERSION};

/// Labels berth puts on what it converts (Compose's own label names).
pub const LABEL_PROJECT: &str = "com.docker.compose.project";
pub const LABEL_SERVICE: &str = "com.docker.compose.service";
/// The Service annotation recording its `depends_on` (`db:service_healthy,cache:service_started`).
pub const ANNOTATION_DEPENDS_ON: &str = "berth.dev/compose-depends-on";

/// One converted compose service.
#[derive(Debug, Clone)]
pub struct Unit {
    /// The compose service's name.
    pub compose_name: String,
    /// `PROJECT-SERVICE`: the task definition family and the service.
    pub name: String,
    pub task_definition: Json,
    /// None for a run-once service (others wait for it to complete).
    pub service: Option<Json>,
    /// (berth name of the dependency, condition).
    pub depends_on: Vec<(String, Condition)>,
    /// Apply order: every dependency has a lower wave.
    pub wave: usize,
    pub cluster: String,
    pub has_health_check: bool,
}

/// What a compose file becomes.
#[derive(Debug, Clone)]
pub struct Conversion {
    pub project: String,
    /// In apply order (waves).
    pub units: Vec<Unit>,
    /// `Secret` documents.
    pub secrets: Vec<Json>,
    pub findings: Vec<Finding>,
}

impl Conversion {
    /// Every document, secrets first, then units in apply order.
    pub fn documents(&self) -> Vec<Json> {
        let mut docs = self.secrets.clone();
        for u in &self.units {
            docs.push(u.task_definition.clone());
            docs.extend(u.service.clone());
        }
        docs
    }

    /// YAML text of `docs`, `---` between documents.
    pub fn yaml(docs: &[Json]) -> String {
        docs.iter()
            .map(|d| serde_yaml::to_string(d).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("---\n")
    }

    /// Files for `convert -o DIR`: `PROJECT-SERVICE.yaml` per service, `PROJECT-secrets.yaml`.
    pub fn files(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !self.secrets.is_empty() {
            out.push((
                format!("{}-secrets.yaml", self.project),
                Self::yaml(&self.secrets),
            ));
        }
        for u in &self.units {
            let mut docs = vec![u.task_definition.clone()];
            docs.extend(u.service.clone());
            out.push((format!("{}.yaml", u.name), Self::yaml(&docs)));
        }
        out
    }
}

fn at(base: &[Seg], k: &str) -> Vec<Seg> {
    let mut p = base.to_vec();
    p.push(Seg::key(k));
    p
}

/// A berth name from a compose name: characters berth refuses become `-`.
fn berth_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Convert the parsed (and interpolated) document.
pub(crate) fn convert_document(
    ctx: &mut Ctx,
    doc: &Value,
    project: &str,
    dir: &Path,
    vars: &HashMap<String, String>,
) -> Result<Conversion, ComposeError> {
    let root = doc.as_mapping().cloned().unwrap_or_default();
    let mut services: Option<&Mapping> = None;
    let mut volumes: HashMap<String, String> = HashMap::new();
    let mut secret_refs: HashMap<String, String> = HashMap::new();
    let mut secret_docs = Vec::new();
    for (k, v) in &root {
        let key = key_text(k);
        let p = vec![Seg::key(&key)];
        match key.as_str() {
            "services" => match v.as_mapping() {
                Some(m) => services = Some(m),
                None => ctx.error(&p, "must be a mapping of service names"),
            },
            "version" => ctx.warn(&p, "is obsolete in Compose and ignored"),
            "name" => {}
            "volumes" => top_volumes(ctx, v, &p, project, &mut volumes),
            "secrets" => top_secrets(ctx, v, &p, project, dir, vars, &mut secret_refs, &mut secret_docs),
            "networks" => ctx.unsupported(&p, "berth has no per-project networks or service DNS: tasks reach each other through published host ports"),
            "configs" => ctx.unsupported(&p, "put the content in the image, an environment variable or a secret"),
            k if k.starts_with("x-") => {}
            _ => ctx.unsupported(&p, ""),
        }
    }
    let Some(services) = services else {
        ctx.error(&[], "a compose file needs `services:`");
        return Err(ComposeError::Invalid(std::mem::take(&mut ctx.problems)));
    };
    let proj = Project {
        dir,
        volumes: &volumes,
        secrets: &secret_refs,
        vars,
    };
    // Convert each service.
    let mut converted: Vec<(String, String, service::Converted, Vec<Seg>)> = Vec::new();
    for (k, v) in services {
        let name = key_text(k);
        let path = vec![Seg::key("services"), Seg::key(&name)];
        let Some(m) = v.as_mapping() else {
            ctx.error(&path, "must be a mapping");
            continue;
        };
        let cname = berth_name(&name);
        let bname = format!("{project}-{cname}");
        if let Err(m) = crate::manifest::validate_name(&bname) {
            ctx.error(&path, format!("`{bname}` cannot be a berth name: {m}"));
            continue;
        }
        if cname != name {
            ctx.warn(
                &path,
                format!("is named `{cname}` in berth (letters, digits, `-` and `_` only)"),
            );
        }
        let c = service::convert(ctx, &cname, m, &path, &proj);
        converted.push((name, bname, c, path));
    }
    // Dependencies: known services, no cycles.
    let names: HashMap<&str, usize> = converted
        .iter()
        .enumerate()
        .map(|(i, (n, ..))| (n.as_str(), i))
        .collect();
    let mut deps: Vec<Vec<(usize, Condition)>> = vec![Vec::new(); converted.len()];
    let mut run_once = vec![false; converted.len()];
    for (i, (name, _, c, _)) in converted.iter().enumerate() {
        for (d, cond, p) in &c.depends_on {
            match names.get(d.as_str()) {
                Some(&j) if j == i => ctx.error(p, format!("service `{name}` depends on itself")),
                Some(&j) => {
                    deps[i].push((j, *cond));
                    if *cond == Condition::CompletedSuccessfully {
                        run_once[j] = true;
                    }
                }
                None => ctx.error(
                    p,
                    format!("depends on `{d}`, which is not a service of this file"),
                ),
            }
        }
    }
    let mut wave = vec![usize::MAX; converted.len()];
    for _ in 0..=converted.len() {
        let mut changed = false;
        for i in 0..converted.len() {
            let w = deps[i]
                .iter()
                .map(|(j, _)| wave[*j].checked_add(1))
                .try_fold(0usize, |m, x| x.map(|x| m.max(x)));
            if let Some(w) = w {
                if wave[i] != w {
                    wave[i] = w;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    for (i, (name, .., p)) in converted.iter().enumerate() {
        if wave[i] == usize::MAX && ctx.problems.is_empty() {
            ctx.error(
                &at(p, "depends_on"),
                format!("service `{name}` is part of a depends_on cycle"),
            );
        }
    }
    if !ctx.problems.is_empty() {
        return Err(ComposeError::Invalid(std::mem::take(&mut ctx.problems)));
    }

    let mut units = Vec::new();
    for (i, (name, bname, c, path)) in converted.iter().enumerate() {
        let unit = build_unit(
            ctx,
            project,
            name,
            bname,
            c,
            path,
            &deps[i],
            &converted,
            run_once[i],
            wave[i],
        );
        units.push(unit);
    }
    if !ctx.problems.is_empty() {
        return Err(ComposeError::Invalid(std::mem::take(&mut ctx.problems)));
    }
    units.sort_by_key(|u| u.wave);
    // Findings in file order.
    ctx.findings.sort_by_key(|f| f.line.unwrap_or(usize::MAX));
    Ok(Conversion {
        project: project.to_string(),
        units,
        secrets: secret_docs,
        findings: std::mem::take(&mut ctx.findings),
    })
}

#[allow(clippy::too_many_arguments)]
fn build_unit(
    ctx: &mut Ctx,
    project: &str,
    name: &str,
    bname: &str,
    c: &service::Converted,
    path: &[Seg],
    deps: &[(usize, Condition)],
    all: &[(String, String, service::Converted, Vec<Seg>)],
    run_once: bool,
    wave: usize,
) -> Unit {
    let x = &c.x_berth;
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_PROJECT.to_string(), project.to_string());
    labels.insert(LABEL_SERVICE.to_string(), name.to_string());
    let spec = TaskDefinitionSpec {
        network_mode: c.network_mode,
        task_role: x.task_role.clone(),
        container_definitions: vec![c.container.clone()],
        volumes: c.volumes.clone(),
        pid_mode: c.pid_mode.clone(),
        ipc_mode: c.ipc_mode.clone(),
        ..Default::default()
    };
    let mut spec_json = serde_json::to_value(&spec).unwrap_or(Json::Null);
    if !c.secrets.is_empty() {
        // The `secrets` field of a container (ECS's shape); the Secret kind defines it.
        spec_json["containerDefinitions"][0]["secrets"] = c
            .secrets
            .iter()
            .map(|(env, from)| json!({"name": env, "valueFrom": from}))
            .collect::<Vec<_>>()
            .into();
    }
    let task_definition = json!({
        "apiVersion": API_VERSION,
        "kind": "TaskDefinition",
        "metadata": {"name": bname, "labels": labels},
        "spec": spec_json,
    });
    let cluster = x
        .cluster
        .clone()
        .unwrap_or_else(crate::model::default_cluster);
    let mut lbs: Vec<ServiceLoadBalancer> = x
        .load_balancers
        .iter()
        .map(|l| ServiceLoadBalancer {
            target_group: l.target_group.clone(),
            container_name: c.container.name.clone(),
            container_port: l.container_port,
        })
        .collect();
    if let Some(tg) = &x.target_group {
        match x
            .container_port
            .or_else(|| c.container.port_mappings.first().map(|p| p.container_port))
        {
            Some(port) => lbs.push(ServiceLoadBalancer {
                target_group: tg.clone(),
                container_name: c.container.name.clone(),
                container_port: port,
            }),
            None => ctx.error(
                &at(&at(path, "x-berth"), "targetGroup"),
                "needs containerPort (the service publishes no port)",
            ),
        }
    }
    let depends_on: Vec<(String, Condition)> = deps
        .iter()
        .map(|(j, cond)| (all[*j].1.clone(), *cond))
        .collect();
    let service = (!run_once).then(|| {
        let spec = ServiceSpec {
            cluster: cluster.clone(),
            task_definition: bname.to_string(),
            desired_count: c.replicas,
            scheduling_strategy: c.daemon.then_some(crate::model::SchedulingStrategy::Daemon),
            deployment_configuration: x.deployment_configuration.clone().unwrap_or_default(),
            placement_strategy: x.placement_strategy.clone(),
            placement_constraints: x.placement_constraints.clone(),
            load_balancers: lbs.clone(),
            health_check_grace_period_seconds: x.health_check_grace_period_seconds,
            ..Default::default()
        };
        let mut svc_labels = labels.clone();
        svc_labels.extend(c.labels.clone());
        let mut meta = json!({"name": bname, "labels": svc_labels});
        if !depends_on.is_empty() {
            meta["annotations"] = json!({
                ANNOTATION_DEPENDS_ON: depends_on
                    .iter()
                    .map(|(n, c)| format!("{n}:{}", c.as_str()))
                    .collect::<Vec<_>>()
                    .join(","),
            });
        }
        let mut spec = serde_json::to_value(&spec).unwrap_or(Json::Null);
        if c.daemon {
            // DAEMON services have no desired count of their own.
            if let Some(o) = spec.as_object_mut() {
                o.remove("desiredCount");
            }
        }
        json!({"apiVersion": API_VERSION, "kind": "Service", "metadata": meta, "spec": spec})
    });
    if run_once {
        ctx.warn(path, "is waited on with service_completed_successfully: it becomes a task definition that `berth compose up` runs once (berth run-task), not a service");
        let p = at(path, "deploy");
        if c.replicas != 1 {
            ctx.warn(
                &p,
                "replicas do not apply to a run-once service (one task runs)",
            );
        }
        if !lbs.is_empty() {
            ctx.warn(
                &at(path, "x-berth"),
                "load balancers do not apply to a run-once service",
            );
        }
    }
    Unit {
        compose_name: name.to_string(),
        name: bname.to_string(),
        task_definition,
        service,
        depends_on,
        wave,
        cluster,
        has_health_check: c
            .container
            .health_check
            .as_ref()
            .is_some_and(|h| h.command.first().map(String::as_str) != Some("NONE")),
    }
}

fn top_volumes(
    ctx: &mut Ctx,
    v: &Value,
    p: &[Seg],
    project: &str,
    out: &mut HashMap<String, String>,
) {
    let Some(m) = v.as_mapping() else {
        if !v.is_null() {
            ctx.error(p, "must be a mapping of volume names");
        }
        return;
    };
    for (k, val) in m {
        let name = key_text(k);
        let vp = at(p, &name);
        let mut docker = format!("{project}_{name}");
        if let Some(opts) = val.as_mapping() {
            let external = opts
                .get("external")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let explicit = opts.get("name").and_then(scalar);
            docker = match (explicit, external) {
                (Some(n), _) => n,
                (None, true) => name.clone(),
                (None, false) => docker,
            };
            for (ok, _) in opts {
                let o = key_text(ok);
                match o.as_str() {
                    "external" | "name" => {}
                    k if k.starts_with("x-") => {}
                    _ => ctx.unsupported(
                        &at(&vp, &o),
                        "berth uses Docker's local volumes on each instance",
                    ),
                }
            }
        } else if !val.is_null() {
            ctx.error(&vp, "must be a mapping (or empty)");
            continue;
        }
        if let Err(m) = crate::manifest::validate_name(&docker) {
            ctx.error(&vp, format!("volume name `{docker}`: {m}"));
            continue;
        }
        out.insert(name, docker);
    }
}

#[allow(clippy::too_many_arguments)]
fn top_secrets(
    ctx: &mut Ctx,
    v: &Value,
    p: &[Seg],
    project: &str,
    dir: &Path,
    vars: &HashMap<String, String>,
    refs: &mut HashMap<String, String>,
    docs: &mut Vec<Json>,
) {
    let Some(m) = v.as_mapping() else {
        ctx.error(p, "must be a mapping of secret names");
        return;
    };
    for (k, val) in m {
        let name = key_text(k);
        let sp = at(p, &name);
        let Some(opts) = val.as_mapping() else {
            ctx.error(&sp, "must be a mapping with `file:` or `environment:`");
            continue;
        };
        let get = |k: &str| opts.get(k).and_then(scalar);
        let external = opts
            .get("external")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        for (ok, _) in opts {
            let o = key_text(ok);
            if !matches!(o.as_str(), "file" | "environment" | "external" | "name") {
                ctx.unsupported(&at(&sp, &o), "");
            }
        }
        if external {
            let ext = get("name").unwrap_or_else(|| name.clone());
            ctx.warn(
                &sp,
                format!("is external: berth expects a Secret named `{ext}` with the key `value`"),
            );
            refs.insert(name, format!("{ext}:value"));
            continue;
        }
        let value = if let Some(f) = get("file") {
            let full = dir.join(&f);
            match std::fs::read_to_string(&full) {
                Ok(s) => s,
                Err(e) => {
                    ctx.error(
                        &at(&sp, "file"),
                        format!("cannot read {}: {e}", full.display()),
                    );
                    continue;
                }
            }
        } else if let Some(var) = get("environment") {
            match vars.get(&var) {
                Some(s) => s.clone(),
                None => {
                    ctx.error(
                        &at(&sp, "environment"),
                        format!("variable {var} is not set"),
                    );
                    continue;
                }
            }
        } else {
            ctx.error(&sp, "needs `file:` or `environment:` (or `external: true`)");
            continue;
        };
        let secret = format!("{project}-{}", berth_name(&name));
        refs.insert(name.clone(), format!("{secret}:value"));
        docs.push(json!({
            "apiVersion": API_VERSION,
            "kind": "Secret",
            "metadata": {"name": secret, "labels": {LABEL_PROJECT: project}},
            "spec": {"data": {"value": value}},
        }));
    }
}
