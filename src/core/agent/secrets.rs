//! Where an agent gets the secrets it hands to containers: a task's container token
//! (`AWS_CONTAINER_AUTHORIZATION_TOKEN`) and its role credentials.
//!
//! - [`Secrets::Local`]: derived here from the server key in the store. Only for the agent
//!   that runs inside a control-plane process (`berth up`) or a legacy `berth agent --store`.
//! - [`Secrets::Remote`]: minted by the API server for tasks placed on this instance
//!   (`GET /v1/agent/tasks/{id}/token`, `POST /v1/agent/tasks/{id}/credentials`): a joined
//!   agent's host never holds the server key.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::auth::secret_values::{self, TaskSecrets};
use crate::auth::secrets_key::SecretsKey;
use crate::model::TaskDefinition;

use crate::auth::crypto::ServerKey;
use crate::store::remote::RemoteStore;
use crate::store::Store;

#[derive(Clone)]
pub enum Secrets {
    /// In a control plane's process: the server key from the store, and the Secrets data key
    /// (none on a legacy `berth agent --store`, whose tasks cannot use Secrets).
    Local(Option<Arc<SecretsKey>>),
    Remote(RemoteStore),
}

impl Default for Secrets {
    fn default() -> Self {
        Secrets::Local(None)
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secrets::Local(_) => f.write_str("Local"),
            Secrets::Remote(r) => write!(f, "Remote({:?})", r.servers()),
        }
    }
}

impl Secrets {
    /// The token a task's containers present to the credentials endpoint.
    pub async fn container_token(&self, store: &dyn Store, task: &str) -> anyhow::Result<String> {
        match self {
            Secrets::Local(_) => Ok(ServerKey::load_or_create(store)
                .await?
                .container_token_for(task)),
            Secrets::Remote(r) => {
                let path = format!(
                    "/v1/agent/tasks/{}/token",
                    crate::util::percent::encode(task, false)
                );
                let v = r
                    .call(reqwest::Method::GET, &path, None)
                    .await
                    .map_err(|e| anyhow::anyhow!("the API server refused the task's token: {e}"))?;
                v["token"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow::anyhow!("the API server sent no token"))
            }
        }
    }

    /// Ask the API server for a task's role credentials on behalf of a container (remote
    /// only): (HTTP status, body to answer the container with).
    pub async fn remote_credentials(
        r: &RemoteStore,
        task: &str,
        authorization: &str,
        source_ip: &str,
        user_agent: &str,
    ) -> (u16, Value) {
        let path = format!(
            "/v1/agent/tasks/{}/credentials",
            crate::util::percent::encode(task, false)
        );
        let body = json!({
            "authorization": authorization,
            "sourceIp": source_ip,
            "userAgent": user_agent,
        });
        match r
            .call_status(reqwest::Method::POST, &path, Some(&body))
            .await
        {
            Ok(x) => x,
            Err(e) => (
                503,
                json!({"code": "Unavailable", "message": format!("the API server is unavailable: {e}")}),
            ),
        }
    }

    /// The secret values `task`'s containers reference (environment variables and registry
    /// logins), opened by this control plane or, for a joined agent, by the API server for a
    /// task placed on this instance only. The error is the reason the task cannot start.
    pub async fn task_secrets(
        &self,
        store: &dyn Store,
        task: &str,
        td: &TaskDefinition,
    ) -> Result<TaskSecrets, String> {
        match self {
            Secrets::Local(k) => secret_values::resolve(store, k.as_deref(), td)
                .await
                .map_err(|e| e.to_string()),
            Secrets::Remote(r) => {
                let path = format!(
                    "/v1/agent/tasks/{}/secrets",
                    crate::util::percent::encode(task, false)
                );
                let (status, v) = r
                    .call_status(reqwest::Method::GET, &path, None)
                    .await
                    .map_err(|e| format!("the API server is unavailable: {e}"))?;
                if status != 200 {
                    return Err(v["error"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("the API server answered {status}")));
                }
                serde_json::from_value(v["containers"].clone())
                    .map_err(|e| format!("the API server sent unreadable secrets: {e}"))
            }
        }
    }
}
