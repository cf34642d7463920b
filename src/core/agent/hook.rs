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
    super::credentials_endpoint::task_env(store, secrets, instance, task, td).await
}
