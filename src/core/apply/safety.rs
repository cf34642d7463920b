//! Safe defaults (checked at apply, at run-task and again by the agent before it creates a
//! container): no privileged containers, host PID/IPC/network namespaces, added capabilities
//! or host devices unless the cluster's `settings.allowPrivileged` is true; bind mounts only
//! of paths under [`HOST_PATHS`] (an allow-list: `/etc`, `/root`, berth's data directory and
//! the Docker socket are all outside it) and no working directory under `/proc`, unless
//! `settings.allowHostMounts` is true. The agent re-checks each mount on its own host without
//! following symlinks (`agent::hook`), so a path that spells an allowed place but leads
//! elsewhere is refused too.
//!
//! A TaskDefinition is not tied to a cluster, so applying one that needs a setting is refused
//! unless some cluster (stored, or in the same apply) allows it; a Service, a run-task and
//! the agent check against the task's own cluster.

use std::collections::HashMap;

use crate::manifest::{Document, ManifestError, Resource};
use crate::model::{keys, parse_taskdef_ref, Cluster, ClusterSettings, Kind, TaskDefinitionSpec};
use crate::objects;
use crate::store::Store;

use super::error::ApplyError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Privileged,
    HostMounts,
}

impl Needs {
    pub fn setting(self) -> &'static str {
        match self {
            Needs::Privileged => "settings.allowPrivileged",
            Needs::HostMounts => "settings.allowHostMounts",
        }
    }
    pub fn allowed_by(self, s: &ClusterSettings) -> bool {
        match self {
            Needs::Privileged => s.allow_privileged,
            Needs::HostMounts => s.allow_host_mounts,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Field path inside the task definition's spec, e.g. `containerDefinitions[0].privileged`.
    pub field: String,
    pub message: String,
    pub needs: Needs,
}

/// Lexically normalize an absolute path (`//`, `.`, `..`, trailing `/`).
pub fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

const SOCKETS: [&str; 5] = [
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/podman/podman.sock",
];

/// Host paths a task may bind-mount without `settings.allowHostMounts` (and their subtrees).
pub const HOST_PATHS: [&str; 5] = ["/srv", "/mnt", "/data", "/tmp", "/var/tmp"];

/// Whether a normalized path lies in [`HOST_PATHS`].
pub fn in_host_paths(p: &str) -> bool {
    HOST_PATHS
        .iter()
        .any(|root| p == *root || p.starts_with(&format!("{root}/")))
}

/// berth's own directories on this host (the embedded store with the server key, the agent's
/// data, the CLI config with the admin token), registered by the process at start. Process
/// state on purpose: the checks below run deep in apply and in the agent, and these paths are
/// facts about this host, not about any cluster.
static PROTECTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Never let a task mount `dir` (or anything holding it).
pub fn protect(dir: &std::path::Path) {
    let p = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let n = normalize(&p.to_string_lossy());
    let mut v = PROTECTED.lock().unwrap_or_else(|e| e.into_inner());
    if !v.contains(&n) {
        v.push(n);
    }
}

/// A protected directory that mounting `p` would expose (`p` inside it, or holding it).
fn exposes_protected(p: &str) -> Option<String> {
    let inside = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/")) || b == "/";
    PROTECTED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|d| inside(p, d) || inside(d, p))
        .cloned()
}

/// Why mounting this host path is dangerous, if it is.
pub fn dangerous_host_path(path: &str) -> Option<String> {
    let p = normalize(path.trim());
    let under = |root: &str| p == root || p.starts_with(&format!("{root}/"));
    if let Some(why) = known_dangerous(&p, &under) {
        return Some(why);
    }
    if let Some(dir) = exposes_protected(&p) {
        return Some(format!(
            "bind mount of {p}, which exposes berth's own directory {dir} (the server key, \
             tokens and store)"
        ));
    }
    if !in_host_paths(&p) {
        return Some(format!(
            "bind mount of {p}, outside the host paths tasks may mount by default ({})",
            HOST_PATHS.join(", ")
        ));
    }
    None
}

/// The places named by why they are dangerous (clearer errors than "outside the allow-list").
fn known_dangerous(p: &str, under: &dyn Fn(&str) -> bool) -> Option<String> {
    if p == "/" {
        return Some("bind mount of the host's root filesystem `/`".into());
    }
    if p.ends_with(".sock")
        && (p.contains("docker") || p.contains("containerd") || p.contains("podman"))
    {
        return Some(format!("bind mount of the container runtime socket {p} (it gives the container control of the host)"));
    }
    if let Some(s) = SOCKETS.iter().find(|s| s.starts_with(&format!("{p}/"))) {
        return Some(format!(
            "bind mount of {p}, which holds the Docker socket {s} (it gives the container control of the host)"
        ));
    }
    for root in [
        "/proc",
        "/sys",
        "/dev",
        "/var/lib/docker",
        "/var/lib/containerd",
    ] {
        if under(root) {
            return Some(format!("bind mount of the host's {root} ({p})"));
        }
    }
    None
}

/// Everything in a task definition that needs a cluster setting.
pub fn findings(spec: &TaskDefinitionSpec) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |field: String, message: String, needs: Needs| {
        out.push(Finding {
            field,
            message,
            needs,
        })
    };
    if spec.network_mode() == crate::model::NetworkMode::Host {
        push(
            "networkMode".into(),
            "networkMode host shares the host's network namespace with the task (its ports, \
             interfaces and local services, the agent's included)"
                .into(),
            Needs::Privileged,
        );
    }
    for (mode, field) in [(&spec.pid_mode, "pidMode"), (&spec.ipc_mode, "ipcMode")] {
        if mode
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case("host"))
        {
            push(
                field.into(),
                format!("{field} host shares the host's namespace with the task"),
                Needs::Privileged,
            );
        }
    }
    for (i, v) in spec.volumes.iter().enumerate() {
        if let Some(src) = v.host.as_ref().and_then(|h| h.source_path.as_deref()) {
            if let Some(why) = dangerous_host_path(src) {
                push(
                    format!("volumes[{i}].host.sourcePath"),
                    why,
                    Needs::HostMounts,
                );
            }
        }
    }
    for (i, c) in spec.container_definitions.iter().enumerate() {
        let p = format!("containerDefinitions[{i}]");
        if c.privileged == Some(true) {
            push(
                format!("{p}.privileged"),
                format!(
                    "container {} asks to run privileged (full access to the host)",
                    c.name
                ),
                Needs::Privileged,
            );
        }
        if let Some(lp) = &c.linux_parameters {
            if let Some(caps) = lp.capabilities.as_ref().filter(|k| !k.add.is_empty()) {
                push(
                    format!("{p}.linuxParameters.capabilities.add"),
                    format!(
                        "container {} adds kernel capabilities {}",
                        c.name,
                        caps.add.join(", ")
                    ),
                    Needs::Privileged,
                );
            }
            if !lp.devices.is_empty() {
                push(
                    format!("{p}.linuxParameters.devices"),
                    format!("container {} maps host devices", c.name),
                    Needs::Privileged,
                );
            }
        }
        if let Some(wd) = &c.working_directory {
            let n = normalize(wd);
            if n == "/proc" || n.starts_with("/proc/") {
                push(
                    format!("{p}.workingDirectory"),
                    format!(
                        "container {} has its working directory under /proc ({wd})",
                        c.name
                    ),
                    Needs::Privileged,
                );
            }
        }
    }
    out
}

fn refusal(f: &Finding, scope: &str) -> String {
    format!(
        "refused: {}; this is unsafe by default — set spec.{} to true on {scope} to allow it",
        f.message,
        f.needs.setting()
    )
}

/// Check a task definition against one cluster (run-task, agent).
pub fn check_against(
    spec: &TaskDefinitionSpec,
    cluster: &str,
    s: &ClusterSettings,
) -> Result<(), String> {
    let bad: Vec<String> = findings(spec)
        .iter()
        .filter(|f| !f.needs.allowed_by(s))
        .map(|f| format!("{}: {}", f.field, refusal(f, &format!("cluster {cluster}"))))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; "))
    }
}

/// Settings of every stored cluster.
pub async fn cluster_settings(
    store: &dyn Store,
) -> Result<HashMap<String, ClusterSettings>, crate::store::StoreError> {
    let (kvs, _) = store.range(&keys::prefix(Kind::Cluster)).await?;
    Ok(kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Cluster>(&kv.value).ok())
        .map(|c| (c.metadata.name, c.spec.settings))
        .collect())
}

/// The apply-time check of a set of documents (all errors at once, nothing applied).
pub async fn check_apply(store: &dyn Store, docs: &[Document]) -> Result<(), ApplyError> {
    let needs_check = docs.iter().any(|d| {
        matches!(
            d.resource,
            Resource::TaskDefinition(_) | Resource::Service(_)
        )
    });
    if !needs_check {
        return Ok(());
    }
    let mut clusters = cluster_settings(store).await.map_err(ApplyError::Store)?;
    for d in docs {
        if let Resource::Cluster(c) = &d.resource {
            clusters.insert(c.metadata.name.clone(), c.spec.settings.clone());
        }
    }
    let mut errors = Vec::new();
    for d in docs {
        match &d.resource {
            Resource::TaskDefinition(td) => {
                for f in findings(&td.spec) {
                    if !clusters.values().any(|s| f.needs.allowed_by(s)) {
                        errors.push(
                            ManifestError::at(
                                &d.source,
                                None,
                                refusal(&f, "the cluster that runs it"),
                            )
                            .with_field(format!("spec.{}", f.field)),
                        );
                    }
                }
            }
            Resource::Service(svc) => {
                let Some((family, rev)) = parse_taskdef_ref(&svc.spec.task_definition) else {
                    continue;
                };
                let in_docs = docs.iter().find_map(|o| match &o.resource {
                    Resource::TaskDefinition(t) if t.metadata.name == family && rev.is_none() => {
                        Some(t.spec.clone())
                    }
                    _ => None,
                });
                let spec = match in_docs {
                    Some(s) => Some(s),
                    None => objects::taskdef(store, &svc.spec.task_definition)
                        .await?
                        .map(|t| t.spec),
                };
                let Some(spec) = spec else { continue };
                let settings = clusters.get(&svc.spec.cluster).cloned().unwrap_or_default();
                if let Err(m) = check_against(&spec, &svc.spec.cluster, &settings) {
                    errors.push(
                        ManifestError::at(
                            &d.source,
                            None,
                            format!("task definition {}: {m}", svc.spec.task_definition),
                        )
                        .with_field("spec.taskDefinition"),
                    );
                }
            }
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApplyError::Invalid(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        ContainerDefinition, HostVolume, KernelCapabilities, LinuxParameters, Volume,
    };

    #[test]
    fn paths() {
        assert_eq!(
            normalize("/var//run/./docker.sock/"),
            "/var/run/docker.sock"
        );
        assert_eq!(normalize("/a/../.."), "/");
        for bad in [
            "/",
            "//",
            "/var/run/docker.sock",
            "/run/docker.sock",
            "/var/run",
            "/run",
            "/var",
            "/proc",
            "/proc/1/root",
            "/sys/fs",
            "/var/lib/docker/volumes",
            "/x/../proc",
            "/home/me/.docker/run/docker.sock",
            // Outside the allow-list (issue 16 item 3): the host's configuration, root's home,
            // berth's own data directory (which holds the server key).
            "/etc",
            "/etc/shadow",
            "/root",
            "/root/.local/share/berth",
            "/var/log/app",
            "/home/proc",
            "/tmp/../etc",
        ] {
            assert!(dangerous_host_path(bad).is_some(), "{bad}");
        }
        for ok in [
            "/srv/www",
            "/data",
            "/mnt/disk1",
            "/tmp/scratch",
            "/var/tmp",
        ] {
            assert!(dangerous_host_path(ok).is_none(), "{ok}");
        }
    }

    #[test]
    fn findings_and_settings() {
        let mut spec = TaskDefinitionSpec {
            container_definitions: vec![ContainerDefinition {
                name: "a".into(),
                image: "i".into(),
                privileged: Some(true),
                working_directory: Some("/proc/self/cwd".into()),
                linux_parameters: Some(LinuxParameters {
                    capabilities: Some(KernelCapabilities {
                        add: vec!["SYS_ADMIN".into()],
                        drop: vec![],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            volumes: vec![Volume {
                name: "sock".into(),
                host: Some(HostVolume {
                    source_path: Some("/var/run/docker.sock".into()),
                }),
            }],
            pid_mode: Some("host".into()),
            ..Default::default()
        };
        let f = findings(&spec);
        assert_eq!(f.len(), 5, "{f:?}");
        let none = ClusterSettings::default();
        let e = check_against(&spec, "default", &none).unwrap_err();
        assert!(
            e.contains("privileged") && e.contains("docker.sock") && e.contains("allowHostMounts"),
            "{e}"
        );
        let all = ClusterSettings {
            allow_privileged: true,
            allow_host_mounts: true,
        };
        check_against(&spec, "default", &all).unwrap();
        spec.container_definitions[0] = ContainerDefinition {
            name: "a".into(),
            image: "i".into(),
            ..Default::default()
        };
        spec.volumes.clear();
        spec.pid_mode = Some("task".into());
        assert!(findings(&spec).is_empty());
    }
}
