//! What the agent checks and adds right before it starts a task: the safe defaults against the
//! task's cluster settings (a setting may have changed since apply) and the task's credentials.

use crate::model::{keys, Cluster, Kind, Task, TaskDefinition};
use crate::store::Store;

/// Right before the agent creates a task's container: re-checks the safe
/// defaults against the task's cluster (a setting may have changed since apply) and returns
/// the extra environment (task credentials URI and token when the task has a role).
pub async fn before_start(
    store: &dyn Store,
    secrets: &super::secrets::Secrets,
    instance: &str,
    task: &Task,
    td: &TaskDefinition,
) -> anyhow::Result<Vec<(String, String)>> {
    let cluster: Option<Cluster> =
        crate::objects::get(store, &keys::key(Kind::Cluster, &task.spec.cluster)).await?;
    let settings = cluster.map(|c| c.spec.settings).unwrap_or_default();
    if let Err(m) = crate::apply::safety::check_against(&td.spec, &task.spec.cluster, &settings) {
        anyhow::bail!("{m}");
    }
    if !settings.allow_host_mounts {
        for v in &td.spec.volumes {
            if let Some(src) = v.host.as_ref().and_then(|h| h.source_path.as_deref()) {
                if let Some(why) = through_symlink(src) {
                    anyhow::bail!(
                        "refused: bind mount of {src}: {why}; berth does not follow symlinks in \
                         host mounts — set spec.settings.allowHostMounts to true on cluster {} \
                         to allow it",
                        task.spec.cluster
                    );
                }
            }
        }
    }
    super::credentials_endpoint::task_env(store, secrets, instance, task, td).await
}

/// On this host, whether mounting `path` would go through a symlink (any existing component,
/// the last included): the path checked at apply is then not the one Docker would mount. A
/// component that does not exist yet is fine (Docker creates it as a directory).
pub fn through_symlink(path: &str) -> Option<String> {
    let norm = crate::apply::safety::normalize(path.trim());
    let mut cur = std::path::PathBuf::from("/");
    for seg in norm.split('/').filter(|s| !s.is_empty()) {
        cur.push(seg);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&cur)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default();
                return Some(format!("{} is a symlink (to {to})", cur.display()));
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::through_symlink;

    #[test]
    fn symlinked_components_are_found_without_following_them() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink("/", d.path().join("r")).unwrap();
        let p = |rel: &str| d.path().join(rel).display().to_string();
        assert_eq!(through_symlink(&p("real")), None);
        assert_eq!(through_symlink(&p("real/not-yet")), None);
        let why = through_symlink(&p("r")).unwrap();
        assert!(why.contains("is a symlink (to /)"), "{why}");
        assert!(through_symlink(&p("r/etc")).is_some());
        assert!(through_symlink(&format!("{}/./r/../r", d.path().display())).is_some());
    }
}
