//! Opening Secrets: the values a task definition's containers reference (`secrets[].valueFrom`
//! and `repositoryCredentials.credentialsParameter`), resolved when a task starts. Only a
//! control plane holds the data key: the in-process agent of `berth up` calls [`resolve`]
//! itself, a joined agent asks the API (`GET /v1/agent/tasks/{id}/secrets`), which calls it for
//! tasks placed on that agent's instance only.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::secrets_key::{SecretsKey, SecretsKeyError};
use crate::model::{
    keys, parse_secret_ref, secret::DEFAULT_KEY, Kind, SealedSecret, SecretRef, TaskDefinition,
};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SecretValueError {
    #[error("secret {0} not found")]
    NotFound(String),
    #[error("secret {secret} has no key {key} (it has: {have})")]
    NoKey {
        secret: String,
        key: String,
        have: String,
    },
    #[error("secret {secret} has keys {have}: name one as {secret}:KEY")]
    Ambiguous { secret: String, have: String },
    #[error("{0:?} does not name a secret (write SECRET, SECRET:KEY or an ARN ending in :secret:SECRET)")]
    BadReference(String),
    #[error("no secrets key here: only a control plane opens Secrets (a `berth agent --store` cannot; join with --server)")]
    NoDataKey,
    #[error(transparent)]
    Key(#[from] SecretsKeyError),
    #[error("stored secret {0} is not valid")]
    Stored(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A registry login. Never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryLogin {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryLogin({})", self.username)
    }
}

/// What one container gets: environment variables from secrets, and its registry login.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSecrets {
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub registry: Option<RegistryLogin>,
}

impl std::fmt::Debug for ContainerSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ContainerSecrets")
            .field("env", &names)
            .field("registry", &self.registry)
            .finish()
    }
}

/// Container name → what it gets.
pub type TaskSecrets = BTreeMap<String, ContainerSecrets>;

fn parse(s: &str) -> Result<SecretRef, SecretValueError> {
    parse_secret_ref(s).ok_or_else(|| SecretValueError::BadReference(s.to_string()))
}

/// Whether any container of `td` references a secret.
pub fn needs_secrets(td: &TaskDefinition) -> bool {
    td.spec
        .container_definitions
        .iter()
        .any(|c| !c.secrets.is_empty() || c.repository_credentials.is_some())
}

/// The names of the secrets `td` references.
pub fn referenced(td: &TaskDefinition) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for c in &td.spec.container_definitions {
        for s in &c.secrets {
            if let Some(r) = parse_secret_ref(&s.value_from) {
                out.insert(r.name);
            }
        }
        if let Some(r) = c
            .repository_credentials
            .as_ref()
            .and_then(|r| parse_secret_ref(&r.credentials_parameter))
        {
            out.insert(r.name);
        }
    }
    out
}

/// Every value of secret `name`, decrypted.
pub async fn open_secret(
    store: &dyn Store,
    key: Option<&SecretsKey>,
    name: &str,
) -> Result<BTreeMap<String, String>, SecretValueError> {
    let key = key.ok_or(SecretValueError::NoDataKey)?;
    let kv = store
        .get(&keys::key(Kind::Secret, name))
        .await?
        .ok_or_else(|| SecretValueError::NotFound(name.to_string()))?;
    let s = SealedSecret::from_kv(&kv).map_err(|_| SecretValueError::Stored(name.to_string()))?;
    let mut out = BTreeMap::new();
    for (k, v) in &s.spec.data {
        out.insert(k.clone(), key.open(&s.spec.key_id, name, k, v)?);
    }
    Ok(out)
}

/// The value a reference names: its key, or `value`, or the single key.
fn pick(data: &BTreeMap<String, String>, r: &SecretRef) -> Result<String, SecretValueError> {
    let have = || data.keys().cloned().collect::<Vec<_>>().join(", ");
    match &r.key {
        Some(k) => data.get(k).cloned().ok_or_else(|| SecretValueError::NoKey {
            secret: r.name.clone(),
            key: k.clone(),
            have: have(),
        }),
        None => match data.get(DEFAULT_KEY) {
            Some(v) => Ok(v.clone()),
            None if data.len() == 1 => Ok(data.values().next().cloned().unwrap_or_default()),
            None => Err(SecretValueError::Ambiguous {
                secret: r.name.clone(),
                have: have(),
            }),
        },
    }
}

/// Resolve every reference of `td`'s containers (each secret read and opened once).
pub async fn resolve(
    store: &dyn Store,
    key: Option<&SecretsKey>,
    td: &TaskDefinition,
) -> Result<TaskSecrets, SecretValueError> {
    let mut opened: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut out = TaskSecrets::new();
    for c in &td.spec.container_definitions {
        let mut cs = ContainerSecrets::default();
        for s in &c.secrets {
            let r = parse(&s.value_from)?;
            if !opened.contains_key(&r.name) {
                let data = open_secret(store, key, &r.name).await?;
                opened.insert(r.name.clone(), data);
            }
            let data = &opened[&r.name];
            cs.env.push((s.name.clone(), pick(data, &r)?));
        }
        if let Some(rc) = &c.repository_credentials {
            let r = parse(&rc.credentials_parameter)?;
            if !opened.contains_key(&r.name) {
                let data = open_secret(store, key, &r.name).await?;
                opened.insert(r.name.clone(), data);
            }
            let data = &opened[&r.name];
            let field = |k: &str| {
                data.get(k).cloned().ok_or_else(|| SecretValueError::NoKey {
                    secret: r.name.clone(),
                    key: k.to_string(),
                    have: data.keys().cloned().collect::<Vec<_>>().join(", "),
                })
            };
            cs.registry = Some(RegistryLogin {
                username: field("username")?,
                password: field("password")?,
            });
        }
        if !cs.env.is_empty() || cs.registry.is_some() {
            out.insert(c.name.clone(), cs);
        }
    }
    Ok(out)
}
