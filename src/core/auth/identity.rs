//! Identities (people, CI) and access keys, as store records under `/berth/auth/` (never
//! served by the object API, never holding a secret in the clear).
//!
//! - `/berth/auth/identities/NAME`: name, role, the SHA-256 hashes of its bearer tokens, its
//!   access key id.
//! - `/berth/auth/tokens/SHA256(token)`: the identity a bearer token belongs to.
//! - `/berth/auth/accesskeys/AKID`: who an access key id belongs to (an identity, or a task
//!   with an expiry); its secret is derived from the server key (see [`super::crypto`]).
//! - `/berth/auth/taskcreds/TASK`: a task's current credentials (written by the iam_binder).
//! - `/berth/auth/endpoints/INSTANCE`: the credentials endpoint URL an agent serves.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::crypto::{random_bytes, random_key_id, sha256_hex, ServerKey};
use crate::model::{keys, now, Kind, Role, RoleSpec};
use crate::store::{Compare, Op, Store, Txn};

pub const IDENTITIES: &str = "/berth/auth/identities/";
pub const TOKENS: &str = "/berth/auth/tokens/";
pub const ACCESS_KEYS: &str = "/berth/auth/accesskeys/";
pub const TASK_CREDS: &str = "/berth/auth/taskcreds/";
pub const ENDPOINTS: &str = "/berth/auth/endpoints/";

pub const ADMIN: &str = "admin";
/// Tokens `berth up` adds to `admin` when a CLI config lacks a valid one; older ones expire.
const MAX_BOOTSTRAP_TOKENS: usize = 8;
const TOKEN_PREFIX: &str = "berth_";

pub fn identity_key(name: &str) -> String {
    format!("{IDENTITIES}{name}")
}
pub fn token_key(hash: &str) -> String {
    format!("{TOKENS}{hash}")
}
pub fn access_key_key(akid: &str) -> String {
    format!("{ACCESS_KEYS}{akid}")
}
pub fn task_creds_key(task: &str) -> String {
    format!("{TASK_CREDS}{task}")
}
pub fn endpoint_key(instance: &str) -> String {
    format!("{ENDPOINTS}{instance}")
}
/// The secret an agent's log endpoint requires (written by the agent, read only by the API
/// server: other agents and API callers never see it).
pub fn logs_secret_key(instance: &str) -> String {
    format!("/berth/agent/logs-secret/{instance}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRef {
    pub hash: String,
    pub created_at: DateTime<Utc>,
    /// `created`, `bootstrap` (written by `berth up`).
    #[serde(default)]
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub name: String,
    pub role: String,
    #[serde(default)]
    pub tokens: Vec<TokenRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub created_by: String,
}

impl Identity {
    /// What the API shows: no hashes.
    pub fn public(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "role": self.role,
            "accessKeyId": self.access_key_id,
            "tokens": self.tokens.len(),
            "createdAt": self.created_at,
            "createdBy": self.created_by,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenIndex {
    pub identity: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKey {
    pub access_key_id: String,
    /// The identity it belongs to (permanent keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The task it belongs to (temporary keys; they need the session token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A task's credentials binding (iam_binder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskCreds {
    pub task: String,
    pub role: String,
    /// The current access key id (its secret and session token are derived).
    pub access_key_id: String,
    pub expiration: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
    /// Earlier keys still valid until their own expiry (rotation overlap).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub url: String,
    pub instance: String,
}

pub fn new_token() -> String {
    format!("{TOKEN_PREFIX}{}", hex::encode(random_bytes::<32>()))
}

pub fn token_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

async fn get_json<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> anyhow::Result<Option<(T, i64)>> {
    match store.get(key).await? {
        None => Ok(None),
        Some(kv) => Ok(Some((serde_json::from_slice(&kv.value)?, kv.mod_revision))),
    }
}

pub async fn get_identity(store: &dyn Store, name: &str) -> anyhow::Result<Option<Identity>> {
    Ok(get_json(store, &identity_key(name)).await?.map(|(i, _)| i))
}

/// The identity a bearer token belongs to (its hash must still be listed on the identity).
pub async fn identity_for_token(
    store: &dyn Store,
    token: &str,
) -> anyhow::Result<Option<Identity>> {
    if token.len() > 256 {
        return Ok(None);
    }
    let hash = token_hash(token);
    let Some((ix, _)) = get_json::<TokenIndex>(store, &token_key(&hash)).await? else {
        return Ok(None);
    };
    let Some(id) = get_identity(store, &ix.identity).await? else {
        return Ok(None);
    };
    Ok(id.tokens.iter().any(|t| t.hash == hash).then_some(id))
}

pub async fn get_access_key(store: &dyn Store, akid: &str) -> anyhow::Result<Option<AccessKey>> {
    Ok(get_json(store, &access_key_key(akid))
        .await?
        .map(|(k, _)| k))
}

pub async fn get_task_creds(
    store: &dyn Store,
    task: &str,
) -> anyhow::Result<Option<(TaskCreds, i64)>> {
    get_json(store, &task_creds_key(task)).await
}

pub async fn get_role(store: &dyn Store, name: &str) -> anyhow::Result<Option<RoleSpec>> {
    match store.get(&keys::key(Kind::Role, name)).await? {
        None => Ok(None),
        Some(kv) => Ok(Some(serde_json::from_slice::<Role>(&kv.value)?.spec)),
    }
}

/// What creating an identity returns, once.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewIdentity {
    pub name: String,
    pub role: String,
    pub token: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity {0:?} already exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<crate::store::StoreError> for IdentityError {
    fn from(e: crate::store::StoreError) -> Self {
        IdentityError::Other(e.into())
    }
}

/// Create an identity bound to `role` with one bearer token and one access key.
pub async fn create_identity(
    store: &dyn Store,
    key: &ServerKey,
    name: &str,
    role: &str,
    created_by: &str,
) -> Result<NewIdentity, IdentityError> {
    crate::manifest::validate_name(name)
        .map_err(|m| IdentityError::Invalid(format!("invalid identity name {name:?}: {m}")))?;
    crate::manifest::validate_name(role)
        .map_err(|m| IdentityError::Invalid(format!("invalid role name {role:?}: {m}")))?;
    let token = new_token();
    let hash = token_hash(&token);
    let akid = random_key_id("AKIA", 16);
    let t = now();
    let id = Identity {
        name: name.to_string(),
        role: role.to_string(),
        tokens: vec![TokenRef {
            hash: hash.clone(),
            created_at: t,
            origin: "created".into(),
        }],
        access_key_id: Some(akid.clone()),
        created_at: t,
        created_by: created_by.to_string(),
    };
    let ak = AccessKey {
        access_key_id: akid.clone(),
        identity: Some(name.to_string()),
        task: None,
        role: role.to_string(),
        expiration: None,
        created_at: t,
    };
    let ik = identity_key(name);
    let r = store
        .txn(
            Txn::new()
                .when(Compare::absent(&ik))
                .and_then(Op::put(
                    &ik,
                    serde_json::to_vec(&id).map_err(anyhow::Error::from)?,
                ))
                .and_then(Op::put(
                    token_key(&hash),
                    serde_json::to_vec(&TokenIndex {
                        identity: name.to_string(),
                    })
                    .map_err(anyhow::Error::from)?,
                ))
                .and_then(Op::put(
                    access_key_key(&akid),
                    serde_json::to_vec(&ak).map_err(anyhow::Error::from)?,
                )),
        )
        .await?;
    if !r.succeeded {
        return Err(IdentityError::Exists(name.to_string()));
    }
    Ok(NewIdentity {
        name: name.to_string(),
        role: role.to_string(),
        token,
        secret_access_key: key.secret_for(&akid),
        access_key_id: akid,
    })
}

/// Delete an identity, its token index entries and its access key. Returns false if absent.
pub async fn delete_identity(store: &dyn Store, name: &str) -> anyhow::Result<bool> {
    let Some((id, rev)) = get_json::<Identity>(store, &identity_key(name)).await? else {
        return Ok(false);
    };
    let mut txn = Txn::new()
        .when(Compare::mod_revision(identity_key(name), rev))
        .and_then(Op::delete(identity_key(name)));
    for t in &id.tokens {
        txn = txn.and_then(Op::delete(token_key(&t.hash)));
    }
    if let Some(a) = &id.access_key_id {
        txn = txn.and_then(Op::delete(access_key_key(a)));
    }
    Ok(store.txn(txn).await?.succeeded)
}

pub async fn list_identities(store: &dyn Store) -> anyhow::Result<Vec<Identity>> {
    let (kvs, _) = store.range(IDENTITIES).await?;
    Ok(kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect())
}

/// Make sure the `admin` role exists (created once; an operator may change it later).
pub async fn ensure_admin_role(store: &dyn Store) -> anyhow::Result<()> {
    let k = keys::key(Kind::Role, ADMIN);
    if store.get(&k).await?.is_some() {
        return Ok(());
    }
    let mut role = Role::new(Kind::Role, ADMIN, RoleSpec::admin());
    role.metadata.uid = crate::model::new_id();
    role.metadata.created_at = Some(now());
    store
        .txn(
            Txn::new()
                .when(Compare::absent(&k))
                .and_then(Op::put(&k, role.to_bytes())),
        )
        .await?;
    Ok(())
}

/// Startup of a control plane: the server key, the `admin` role and the `admin` identity.
///
/// `existing`: a token a local CLI config already holds. If it still authenticates, it is
/// returned as is; otherwise a fresh token is added to `admin` (only its hash is stored) and
/// returned, so the caller can write it into the CLI config. Returns (token, created) where
/// `created` says the admin identity did not exist before.
pub async fn bootstrap_admin(
    store: &dyn Store,
    existing: Option<&str>,
) -> anyhow::Result<(String, bool)> {
    let key = ServerKey::load_or_create(store).await?;
    ensure_admin_role(store).await?;
    if let Some(tok) = existing {
        if identity_for_token(store, tok).await?.is_some() {
            return Ok((tok.to_string(), false));
        }
    }
    for _ in 0..10 {
        match get_json::<Identity>(store, &identity_key(ADMIN)).await? {
            None => match create_identity(store, &key, ADMIN, ADMIN, "berth").await {
                Ok(n) => return Ok((n.token, true)),
                Err(IdentityError::Exists(_)) => continue,
                Err(e) => return Err(anyhow::anyhow!("{e}")),
            },
            Some((mut id, rev)) => {
                let token = new_token();
                let hash = token_hash(&token);
                id.tokens.push(TokenRef {
                    hash: hash.clone(),
                    created_at: now(),
                    origin: "bootstrap".into(),
                });
                let mut txn = Txn::new().when(Compare::mod_revision(identity_key(ADMIN), rev));
                // Keep the newest bootstrap tokens only.
                let boots: Vec<String> = id
                    .tokens
                    .iter()
                    .filter(|t| t.origin == "bootstrap")
                    .map(|t| t.hash.clone())
                    .collect();
                if boots.len() > MAX_BOOTSTRAP_TOKENS {
                    let drop: Vec<String> = boots[..boots.len() - MAX_BOOTSTRAP_TOKENS].to_vec();
                    id.tokens.retain(|t| !drop.contains(&t.hash));
                    for h in &drop {
                        txn = txn.and_then(Op::delete(token_key(h)));
                    }
                }
                txn = txn
                    .and_then(Op::put(identity_key(ADMIN), serde_json::to_vec(&id)?))
                    .and_then(Op::put(
                        token_key(&hash),
                        serde_json::to_vec(&TokenIndex {
                            identity: ADMIN.into(),
                        })?,
                    ));
                if store.txn(txn).await?.succeeded {
                    return Ok((token, false));
                }
            }
        }
    }
    anyhow::bail!("could not bootstrap the admin identity (the store kept changing)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    #[tokio::test]
    async fn identities_tokens_and_bootstrap() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let (tok, created) = bootstrap_admin(&store, None).await.unwrap();
        assert!(created);
        assert_eq!(
            identity_for_token(&store, &tok)
                .await
                .unwrap()
                .unwrap()
                .name,
            ADMIN
        );
        // Only the hash is stored.
        let (kvs, _) = store.range("/berth/").await.unwrap();
        for kv in &kvs {
            assert!(
                !String::from_utf8_lossy(&kv.value).contains(&tok),
                "token stored in the clear under {}",
                kv.key
            );
        }
        // A valid existing token is kept; an invalid one gets a fresh token.
        let (same, _) = bootstrap_admin(&store, Some(&tok)).await.unwrap();
        assert_eq!(same, tok);
        let (fresh, created) = bootstrap_admin(&store, Some("berth_nope")).await.unwrap();
        assert!(!created);
        assert_ne!(fresh, tok);
        assert!(identity_for_token(&store, &tok).await.unwrap().is_some());
        assert!(identity_for_token(&store, &fresh).await.unwrap().is_some());
        assert!(identity_for_token(&store, "berth_nope")
            .await
            .unwrap()
            .is_none());

        let key = ServerKey::load_or_create(&store).await.unwrap();
        let n = create_identity(&store, &key, "ci", "reader", "admin")
            .await
            .unwrap();
        assert!(matches!(
            create_identity(&store, &key, "ci", "reader", "admin").await,
            Err(IdentityError::Exists(_))
        ));
        assert_eq!(key.secret_for(&n.access_key_id), n.secret_access_key);
        assert!(delete_identity(&store, "ci").await.unwrap());
        assert!(identity_for_token(&store, &n.token)
            .await
            .unwrap()
            .is_none());
        assert!(get_access_key(&store, &n.access_key_id)
            .await
            .unwrap()
            .is_none());
    }
}
