//! Security: identities and API authentication (bearer tokens, AWS SigV4, dashboard sessions),
//! IAM-style authorization by Role, per-task credentials and their endpoint, and the safe
//! defaults checked before anything runs. The audit trail is in [`crate::audit`].
//!
//! - [`identity`]: identities, tokens (hashed), access keys, task credential bindings.
//! - [`crypto`]: hashing, HMAC, the server key and the secrets derived from it.
//! - [`sigv4`]: Signature Version 4 signing and verification.
//! - [`policy`]: statement evaluation (explicit Deny wins, default deny).
//! - [`actions`]: which action/resource an API request is.
//! - [`middleware`]: the axum layer that authenticates, authorizes and audits every request.
//! - [`credentials_endpoint`]: what a task's containers fetch their credentials from.
//! - [`safety`]: privileged containers, host namespaces, dangerous mounts.

pub mod actions;
pub mod api;
pub mod credentials_endpoint;
pub mod crypto;
pub mod identity;
pub mod middleware;
pub mod policy;
pub mod safety;
pub mod sigv4;

pub use middleware::{wrap, Caller};

use crate::model::{keys, Cluster, Kind, Task, TaskDefinition};
use crate::store::Store;

/// Called by the agent right before it creates a task's container: re-checks the safe
/// defaults against the task's cluster (a setting may have changed since apply) and returns
/// the extra environment (task credentials URI and token when the task has a role).
pub async fn agent_hook(
    store: &dyn Store,
    instance: &str,
    task: &Task,
    td: &TaskDefinition,
) -> anyhow::Result<Vec<(String, String)>> {
    let cluster: Option<Cluster> =
        crate::objects::get(store, &keys::key(Kind::Cluster, &task.spec.cluster)).await?;
    let settings = cluster.map(|c| c.spec.settings).unwrap_or_default();
    if let Err(m) = safety::check_against(&td.spec, &task.spec.cluster, &settings) {
        anyhow::bail!("{m}");
    }
    credentials_endpoint::task_env(store, instance, task, td).await
}
