//! A compose service's mounts: `volumes` (named volumes declared at the top, bind mounts of
//! host paths made absolute, long syntax, tmpfs) and `tmpfs` → the task definition's `volumes`,
//! the container's `mountPoints` and `linuxParameters.tmpfs`. Bind mounts are plain
//! `host.sourcePath` volumes, so apply's host-mount checks judge them like any manifest's.

use std::collections::HashMap;
use std::path::Path;

use serde_yaml::Value;

use super::locate::Seg;
use super::report::Ctx;
use super::source::{key_text, Project};
use super::units;
use super::values::scalar;
use crate::model::{HostVolume, LinuxParameters, MountPoint, Volume};

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

fn lexical(p: &Path) -> String {
    crate::apply::safety::normalize(&p.display().to_string())
}

/// A bind source → absolute host path.
fn host_path(src: &str, dir: &Path, vars: &HashMap<String, String>) -> String {
    if let Some(rest) = src.strip_prefix('~') {
        let home = vars
            .get("HOME")
            .cloned()
            .or_else(|| std::env::var("HOME").ok())
            .unwrap_or_else(|| "/root".into());
        return lexical(&Path::new(&home).join(rest.trim_start_matches('/')));
    }
    if src.starts_with('/') {
        return lexical(Path::new(src));
    }
    let base = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    lexical(&base.join(src))
}

fn is_bind(src: &str) -> bool {
    src.starts_with('/') || src.starts_with('.') || src.starts_with('~')
}

#[allow(clippy::too_many_arguments)]
fn add_mount(
    ctx: &mut Ctx,
    p: &[Seg],
    project: &Project,
    source: &str,
    target: &str,
    read_only: bool,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<MountPoint>,
) {
    if !target.starts_with('/') {
        ctx.error(p, format!("the container path `{target}` must be absolute"));
        return;
    }
    let vol = if is_bind(source) {
        let path = host_path(source, project.dir, project.vars);
        match volumes
            .iter()
            .find(|v| v.host.as_ref().and_then(|h| h.source_path.as_deref()) == Some(path.as_str()))
        {
            Some(v) => v.name.clone(),
            None => {
                let name = format!(
                    "bind-{}",
                    volumes.iter().filter(|v| v.host.is_some()).count()
                );
                volumes.push(Volume {
                    name: name.clone(),
                    host: Some(HostVolume {
                        source_path: Some(path),
                    }),
                });
                name
            }
        }
    } else {
        let Some(docker_name) = project.volumes.get(source) else {
            ctx.error(
                p,
                format!(
                    "refers to volume `{source}`, which the top-level `volumes:` does not declare"
                ),
            );
            return;
        };
        if !volumes.iter().any(|v| &v.name == docker_name) {
            volumes.push(Volume {
                name: docker_name.clone(),
                host: None,
            });
        }
        docker_name.clone()
    };
    mounts.push(MountPoint {
        source_volume: vol,
        container_path: target.to_string(),
        read_only,
    });
}

pub(crate) fn volumes_of(
    ctx: &mut Ctx,
    v: &Value,
    p: &[Seg],
    project: &Project,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<MountPoint>,
    linux: &mut LinuxParameters,
) {
    let Some(list) = v.as_sequence() else {
        ctx.error(p, "must be a list");
        return;
    };
    for (i, item) in list.iter().enumerate() {
        let ip = idx(p, i);
        match item {
            Value::Mapping(m) => {
                let get = |k: &str| m.get(k).and_then(scalar);
                let kind = get("type").unwrap_or_else(|| "volume".into());
                let Some(target) = get("target") else {
                    ctx.error(&ip, "a long-syntax volume needs `target`");
                    continue;
                };
                let ro = m.get("read_only").and_then(Value::as_bool).unwrap_or(false);
                for (k, _) in m {
                    let key = key_text(k);
                    match key.as_str() {
                        "type" | "source" | "target" | "read_only" => {}
                        "tmpfs" if kind == "tmpfs" => {}
                        k if k.starts_with("x-") => {}
                        other => ctx.unsupported(&at(&ip, other), ""),
                    }
                }
                match kind.as_str() {
                    "bind" | "volume" => match get("source") {
                        Some(src) => {
                            let src = if kind == "bind" && !is_bind(&src) { format!("./{src}") } else { src };
                            add_mount(ctx, &ip, project, &src, &target, ro, volumes, mounts)
                        }
                        None => ctx.unsupported(&ip, "an anonymous volume (no `source`): name it in the top-level `volumes:`"),
                    },
                    "tmpfs" => {
                        let size = m
                            .get("tmpfs")
                            .and_then(|t| t.get("size"))
                            .and_then(scalar);
                        linux.tmpfs.push(tmpfs_entry(ctx, &target, size.as_deref(), &ip));
                        ctx.warn(&ip, "becomes linuxParameters.tmpfs, which berth's agent accepts but does not mount yet");
                    }
                    other => ctx.unsupported(&at(&ip, "type"), &format!("volume type `{other}`")),
                }
            }
            other => {
                let Some(s) = scalar(other) else {
                    ctx.error(&ip, "must be SOURCE:TARGET[:MODE] or a mapping");
                    continue;
                };
                let parts: Vec<&str> = s.split(':').collect();
                let (src, target, mode) = match parts.as_slice() {
                    [t] => {
                        ctx.unsupported(
                            &ip,
                            &format!(
                                "an anonymous volume (`{t}`): name it in the top-level `volumes:`"
                            ),
                        );
                        continue;
                    }
                    [s, t] => (*s, *t, ""),
                    [s, t, m] => (*s, *t, *m),
                    _ => {
                        ctx.error(&ip, format!("`{s}` is not SOURCE:TARGET[:MODE]"));
                        continue;
                    }
                };
                let mut ro = false;
                for opt in mode.split(',').filter(|o| !o.is_empty()) {
                    match opt {
                        "ro" => ro = true,
                        "rw" => ro = false,
                        other => ctx.warn(
                            &ip,
                            format!("mount option `{other}` is not supported by berth (ignored)"),
                        ),
                    }
                }
                add_mount(ctx, &ip, project, src, target, ro, volumes, mounts);
            }
        }
    }
}

/// ECS's tmpfs entry: `{containerPath, size (MiB), mountOptions}` from `/run[:size=64m,mode=1777]`.
pub(crate) fn tmpfs_entry(
    ctx: &mut Ctx,
    spec: &str,
    size: Option<&str>,
    p: &[Seg],
) -> serde_json::Value {
    let (path, opts) = spec.split_once(':').unwrap_or((spec, ""));
    let mut entry = serde_json::json!({ "containerPath": path });
    let mut options = Vec::new();
    let mut size = size.map(str::to_string);
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o.strip_prefix("size=") {
            Some(s) => size = Some(s.to_string()),
            None => options.push(serde_json::Value::String(o.to_string())),
        }
    }
    if let Some(s) = size {
        match units::mib(&s) {
            Ok(m) => entry["size"] = m.into(),
            Err(e) => ctx.error(p, e),
        }
    }
    if !options.is_empty() {
        entry["mountOptions"] = options.into();
    }
    entry
}
