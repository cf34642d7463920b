//! Joining the cluster through the API (`berth agent --server URL --join-token T`): trade the
//! join token for a per-instance agent credential once, keep it in the agent's data dir (so a
//! restart reuses it), and reach the store only through [`RemoteStore`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::store::remote::{RemoteStore, UNAUTHENTICATED};
use crate::store::{Store, StoreError};

/// The file in the agent's data dir that holds its credential (0600).
pub const CREDENTIAL_FILE: &str = "agent-credential.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Saved {
    instance: String,
    credential: String,
}

fn load(path: &Path, instance: &str) -> Option<String> {
    let s: Saved = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    (s.instance == instance).then_some(s.credential)
}

fn save(dir: &Path, instance: &str, credential: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let path = dir.join(CREDENTIAL_FILE);
    let tmp = dir.join(format!("{CREDENTIAL_FILE}.tmp"));
    std::fs::write(
        &tmp,
        serde_json::to_vec(&Saved {
            instance: instance.into(),
            credential: credential.into(),
        })?,
    )?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// `POST /v1/agent/join` on the first server that answers.
pub async fn join(servers: &[String], join_token: &str, instance: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut last = anyhow::anyhow!("no API server given");
    for s in servers {
        let resp = http
            .post(format!("{s}/v1/agent/join"))
            .json(&json!({"joinToken": join_token, "instanceId": instance}))
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                last = anyhow::anyhow!("{s}: {e}");
                continue;
            }
        };
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        let msg = v["error"].as_str().unwrap_or("").to_string();
        match status {
            200 => {
                return v["credential"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow::anyhow!("{s} answered the join without a credential"))
            }
            401 => anyhow::bail!("{s} refused the join token: {msg}"),
            409 => anyhow::bail!("{s} refused the join: {msg}"),
            400 | 403 => anyhow::bail!("{s} refused the join (HTTP {status}): {msg}"),
            _ => last = anyhow::anyhow!("{s}: HTTP {status} {msg}"),
        }
    }
    Err(last.context("could not join through any API server"))
}

/// The agent's store through the API: the saved credential if it still works, else a new
/// join with `join_token`. Waits (up to `wait`) for an API server to answer.
pub async fn connect(
    servers: Vec<String>,
    join_token: Option<&str>,
    instance: &str,
    data_dir: &Path,
    wait: Duration,
) -> anyhow::Result<RemoteStore> {
    let path = data_dir.join(CREDENTIAL_FILE);
    let deadline = tokio::time::Instant::now() + wait;
    let mut credential = load(&path, instance);
    let mut joined = false;
    loop {
        let cred = match credential.clone() {
            Some(c) => c,
            None => {
                let Some(t) = join_token.filter(|t| !t.is_empty()) else {
                    anyhow::bail!(
                        "no agent credential for instance {instance} in {} and no join token: \
                         pass --join-token (from `berth token create --agent`)",
                        data_dir.display()
                    );
                };
                let c = match join(&servers, t, instance).await {
                    Ok(c) => c,
                    Err(e) if tokio::time::Instant::now() < deadline && !is_final(&e) => {
                        tracing::warn!(error = %format!("{e:#}"), "join failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let p = save(data_dir, instance, &c)?;
                tracing::info!(%instance, credential = %p.display(), "joined; agent credential saved");
                joined = true;
                credential = Some(c.clone());
                c
            }
        };
        let store = RemoteStore::new(servers.clone(), &cred, instance)?;
        match store.revision().await {
            Ok(_) => return Ok(store),
            Err(StoreError::Invalid(m)) if m.starts_with(UNAUTHENTICATED) && !joined => {
                tracing::warn!(%instance, "the saved agent credential was refused; joining again");
                credential = None;
            }
            Err(e @ StoreError::Unavailable(_)) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "no API server answers yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e @ StoreError::Unavailable(_)) => {
                anyhow::bail!("no API server of {servers:?} answers: {e}")
            }
            Err(e) => anyhow::bail!("the API server refused this agent: {e}"),
        }
    }
}

/// A join refusal that retrying cannot change.
fn is_final(e: &anyhow::Error) -> bool {
    let m = format!("{e:#}");
    m.contains("refused the join")
}
