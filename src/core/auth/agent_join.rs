//! Agent join tokens and per-instance agent credentials, as store records under
//! `/berth/agent/` (only hashes; never readable by agents, never served by the object API).
//!
//! - `/berth/agent/jointokens/SHA256(token)`: a join token (`bjt_…`), minted by an admin
//!   (`berth token create --agent`) or by `berth up`/`berth server --agent-join-token-file`;
//!   revocable by its id (the first 16 hex digits of the hash).
//! - `/berth/agent/credentials/SHA256(credential)`: an agent credential (`bac_…`) and the one
//!   instance it acts for, issued by `POST /v1/agent/join`.
//! - `/berth/agent/instances/INSTANCE`: the hash of that instance's current credential (a new
//!   join of the instance replaces, and so revokes, the previous credential).
//! - `/berth/agent/leases/LEASE`: the instance a lease was granted to through the agent API,
//!   attached to the lease itself (it vanishes when the lease expires).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::crypto::{random_bytes, sha256_hex};
use crate::model::now;
use crate::store::{Compare, Op, Store, Txn};

pub const JOIN_TOKENS: &str = "/berth/agent/jointokens/";
pub const CREDENTIALS: &str = "/berth/agent/credentials/";
pub const INSTANCE_CREDENTIALS: &str = "/berth/agent/instances/";
pub const LEASE_OWNERS: &str = "/berth/agent/leases/";

const JOIN_PREFIX: &str = "bjt_";
const CREDENTIAL_PREFIX: &str = "bac_";

pub fn join_token_key(hash: &str) -> String {
    format!("{JOIN_TOKENS}{hash}")
}
pub fn credential_key(hash: &str) -> String {
    format!("{CREDENTIALS}{hash}")
}
pub fn instance_credential_key(instance: &str) -> String {
    format!("{INSTANCE_CREDENTIALS}{instance}")
}
pub fn lease_owner_key(lease: i64) -> String {
    format!("{LEASE_OWNERS}{lease}")
}

/// An instance id an agent may claim: 1-128 of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn valid_instance_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinToken {
    /// The first 16 hex digits of the hash: what list shows and delete takes.
    pub id: String,
    pub hash: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub created_by: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl JoinToken {
    /// What the API shows: no hash.
    pub fn public(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "createdAt": self.created_at,
            "createdBy": self.created_by,
            "description": self.description,
            "expiresAt": self.expires_at,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCredential {
    pub instance: String,
    pub hash: String,
    pub created_at: DateTime<Utc>,
    /// Id of the join token it was issued for.
    #[serde(default)]
    pub join_token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InstanceCredential {
    hash: String,
}

fn hash_of(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// Mint a join token; only its hash is stored. Returns the token (shown once) and its record.
pub async fn create_join_token(
    store: &dyn Store,
    created_by: &str,
    description: &str,
    ttl: Option<std::time::Duration>,
) -> anyhow::Result<(String, JoinToken)> {
    let token = format!("{JOIN_PREFIX}{}", hex::encode(random_bytes::<32>()));
    let hash = hash_of(&token);
    let created_at = now();
    let rec = JoinToken {
        id: hash[..16].to_string(),
        hash: hash.clone(),
        created_at,
        created_by: created_by.to_string(),
        description: description.to_string(),
        expires_at: ttl.map(|t| created_at + chrono::Duration::milliseconds(t.as_millis() as i64)),
    };
    store
        .txn(
            Txn::new()
                .when(Compare::absent(join_token_key(&hash)))
                .and_then(Op::put(join_token_key(&hash), serde_json::to_vec(&rec)?)),
        )
        .await?;
    Ok((token, rec))
}

pub async fn list_join_tokens(store: &dyn Store) -> anyhow::Result<Vec<JoinToken>> {
    let (kvs, _) = store.range(JOIN_TOKENS).await?;
    Ok(kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect())
}

/// Revoke a join token by its id (credentials already issued with it stay valid; revoke
/// those with [`revoke_credential`]). False: no such token.
pub async fn delete_join_token(store: &dyn Store, id: &str) -> anyhow::Result<bool> {
    if id.len() < 8 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(false);
    }
    for t in list_join_tokens(store).await? {
        if t.id == id {
            store.delete(&join_token_key(&t.hash)).await?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// The join token record of `token`, if it is known and not expired.
pub async fn check_join_token(store: &dyn Store, token: &str) -> anyhow::Result<Option<JoinToken>> {
    let token = token.trim();
    if token.is_empty() || token.len() > 256 {
        return Ok(None);
    }
    let Some(kv) = store.get(&join_token_key(&hash_of(token))).await? else {
        return Ok(None);
    };
    let rec: JoinToken = serde_json::from_slice(&kv.value)?;
    if rec.expires_at.is_some_and(|e| e <= now()) {
        return Ok(None);
    }
    Ok(Some(rec))
}

/// Issue a fresh credential for `instance`, replacing (revoking) its previous one.
pub async fn issue_credential(
    store: &dyn Store,
    instance: &str,
    join_token_id: &str,
) -> anyhow::Result<String> {
    let credential = format!("{CREDENTIAL_PREFIX}{}", hex::encode(random_bytes::<32>()));
    let hash = hash_of(&credential);
    let rec = AgentCredential {
        instance: instance.to_string(),
        hash: hash.clone(),
        created_at: now(),
        join_token: join_token_id.to_string(),
    };
    let ix_key = instance_credential_key(instance);
    for _ in 0..20 {
        let prev = store.get(&ix_key).await?;
        let mut txn = Txn::new()
            .when(Compare::mod_revision(
                &ix_key,
                prev.as_ref().map_or(0, |kv| kv.mod_revision),
            ))
            .and_then(Op::put(credential_key(&hash), serde_json::to_vec(&rec)?))
            .and_then(Op::put(
                &ix_key,
                serde_json::to_vec(&InstanceCredential { hash: hash.clone() })?,
            ));
        if let Some(p) = prev
            .as_ref()
            .and_then(|kv| serde_json::from_slice::<InstanceCredential>(&kv.value).ok())
        {
            txn = txn.and_then(Op::delete(credential_key(&p.hash)));
        }
        if store.txn(txn).await?.succeeded {
            return Ok(credential);
        }
    }
    anyhow::bail!("could not issue a credential for {instance}: too many conflicts")
}

/// The credential record of a presented agent credential (None: unknown or revoked).
pub async fn credential_for(
    store: &dyn Store,
    credential: &str,
) -> anyhow::Result<Option<AgentCredential>> {
    let credential = credential.trim();
    if !credential.starts_with(CREDENTIAL_PREFIX) || credential.len() > 256 {
        return Ok(None);
    }
    let hash = hash_of(credential);
    let Some(kv) = store.get(&credential_key(&hash)).await? else {
        return Ok(None);
    };
    let rec: AgentCredential = serde_json::from_slice(&kv.value)?;
    Ok((rec.hash == hash).then_some(rec))
}

/// Revoke the credential of `instance` (its agent must join again). False: none.
pub async fn revoke_credential(store: &dyn Store, instance: &str) -> anyhow::Result<bool> {
    let ix_key = instance_credential_key(instance);
    let Some(kv) = store.get(&ix_key).await? else {
        return Ok(false);
    };
    let p: InstanceCredential = serde_json::from_slice(&kv.value)?;
    store
        .txn(
            Txn::new()
                .and_then(Op::delete(credential_key(&p.hash)))
                .and_then(Op::delete(&ix_key)),
        )
        .await?;
    Ok(true)
}

/// The instance a lease was granted to through the agent API (None: not granted there, or
/// expired).
pub async fn lease_owner(store: &dyn Store, lease: i64) -> anyhow::Result<Option<String>> {
    Ok(store
        .get(&lease_owner_key(lease))
        .await?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    #[tokio::test]
    async fn join_tokens_and_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let (tok, rec) = create_join_token(&store, "admin", "ci", None)
            .await
            .unwrap();
        assert!(tok.starts_with("bjt_"));
        assert_eq!(
            check_join_token(&store, &tok).await.unwrap(),
            Some(rec.clone())
        );
        assert_eq!(check_join_token(&store, "bjt_nope").await.unwrap(), None);
        let c1 = issue_credential(&store, "i-1", &rec.id).await.unwrap();
        assert_eq!(
            credential_for(&store, &c1).await.unwrap().unwrap().instance,
            "i-1"
        );
        // A new join of the same instance revokes the old credential.
        let c2 = issue_credential(&store, "i-1", &rec.id).await.unwrap();
        assert!(credential_for(&store, &c1).await.unwrap().is_none());
        assert!(credential_for(&store, &c2).await.unwrap().is_some());
        assert!(revoke_credential(&store, "i-1").await.unwrap());
        assert!(credential_for(&store, &c2).await.unwrap().is_none());
        assert!(delete_join_token(&store, &rec.id).await.unwrap());
        assert_eq!(check_join_token(&store, &tok).await.unwrap(), None);
        assert!(valid_instance_id("host-1.a_b"));
        assert!(!valid_instance_id("a/b") && !valid_instance_id("") && !valid_instance_id(".x"));
    }
}
