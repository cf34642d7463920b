//! Where an agent gets the secrets it hands to containers: a task's container token
//! (`AWS_CONTAINER_AUTHORIZATION_TOKEN`) and its role credentials.
//!
//! - [`Secrets::Local`]: derived here from the server key in the store. Only for the agent
//!   that runs inside a control-plane process (`berth up`) or a legacy `berth agent --store`.
//! - [`Secrets::Remote`]: minted by the API server for tasks placed on this instance
//!   (`GET /v1/agent/tasks/{id}/token`, `POST /v1/agent/tasks/{id}/credentials`): a joined
//!   agent's host never holds the server key.

use serde_json::{json, Value};

use crate::auth::crypto::ServerKey;
use crate::store::remote::RemoteStore;
use crate::store::Store;

#[derive(Clone, Default)]
pub enum Secrets {
    #[default]
    Local,
    Remote(RemoteStore),
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secrets::Local => f.write_str("Local"),
            Secrets::Remote(r) => write!(f, "Remote({:?})", r.servers()),
        }
    }
}

impl Secrets {
    /// The token a task's containers present to the credentials endpoint.
    pub async fn container_token(&self, store: &dyn Store, task: &str) -> anyhow::Result<String> {
        match self {
            Secrets::Local => Ok(ServerKey::load_or_create(store)
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
}
