//! Secret: named values kept encrypted at rest (issue 13), used by containers' `secrets` (as
//! environment variables) and `repositoryCredentials` (registry logins).
//!
//! ```yaml
//! apiVersion: berth.dev/v1
//! kind: Secret
//! metadata: {name: registry}
//! spec:
//!   data: {username: ci, password: s3cret}
//! ```
//!
//! Two shapes: [`Secret`] is what a manifest says (plaintext values, only ever in memory and on
//! the wire to the API); [`SealedSecret`] is what the store holds (one AES-256-GCM ciphertext
//! per value, each with its own nonce; see `auth::secrets_key`). No type holds both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::object::Object;

/// The key a reference without `:KEY` names (or the single key of the secret).
pub const DEFAULT_KEY: &str = "value";

#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSpec {
    /// Key → plaintext value. YAML scalars (`pin: 1234`, `on: true`) are taken as written.
    #[serde(default, deserialize_with = "scalar_strings")]
    pub data: BTreeMap<String, String>,
}

/// A map of scalars, each as a string; an error never quotes a value.
fn scalar_strings<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    use serde::de::Error;
    let raw = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            serde_json::Value::Number(n) => Ok((k, n.to_string())),
            serde_json::Value::Bool(b) => Ok((k, b.to_string())),
            _ => Err(D::Error::custom(format!(
                "the value of key {k:?} must be a string"
            ))),
        })
        .collect()
}

/// Never prints a value (documents are logged and shown in errors).
impl std::fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSpec")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretStatus {}

pub type Secret = Object<SecretSpec, SecretStatus>;

/// One encrypted value: a 96-bit nonce and the AES-256-GCM ciphertext with its tag, hex.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SealedValue {
    pub nonce: String,
    pub ciphertext: String,
}

/// What the store holds for a Secret: ciphertexts only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SealedSecretSpec {
    /// Which data key sealed it (a digest of the key, not the key): a server with another key
    /// says so instead of failing to decrypt.
    pub key_id: String,
    pub data: BTreeMap<String, SealedValue>,
}

pub type SealedSecret = Object<SealedSecretSpec, SecretStatus>;

/// A reference to one value: `NAME`, `NAME:KEY`, or an ARN naming the secret
/// (`arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME[:KEY[:…]]`,
/// `arn:aws:ssm:REGION:ACCOUNT:parameter/NAME`). `key: None` means `value` or the single key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub name: String,
    pub key: Option<String>,
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{}:{k}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Parse a `valueFrom` / `credentialsParameter`; None when it names no secret.
pub fn parse_secret_ref(s: &str) -> Option<SecretRef> {
    let s = s.trim();
    let (name, key) = if let Some(rest) = s.strip_prefix("arn:") {
        // partition:service:region:account:resource…
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let resource = *parts.get(4)?;
        if let Some(p) = resource.strip_prefix("parameter/") {
            (p, None)
        } else {
            let r = resource.strip_prefix("secret:")?;
            let mut it = r.split(':');
            let name = it.next()?;
            (name, it.next().filter(|k| !k.is_empty()))
        }
    } else {
        match s.split_once(':') {
            Some((n, k)) => (n, Some(k)),
            None => (s, None),
        }
    };
    if name.is_empty() || key.is_some_and(str::is_empty) {
        return None;
    }
    Some(SecretRef {
        name: name.to_string(),
        key: key.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = |s| parse_secret_ref(s);
        assert_eq!(
            r("db"),
            Some(SecretRef {
                name: "db".into(),
                key: None
            })
        );
        assert_eq!(r("db:password").unwrap().key.as_deref(), Some("password"));
        let arn = r("arn:aws:secretsmanager:eu-west-1:123456789012:secret:db:password::").unwrap();
        assert_eq!(
            (arn.name.as_str(), arn.key.as_deref()),
            ("db", Some("password"))
        );
        let arn = r("arn:aws:secretsmanager:eu-west-1:123456789012:secret:db").unwrap();
        assert_eq!((arn.name.as_str(), arn.key), ("db", None));
        assert_eq!(r("arn:aws:ssm:r:1:parameter/reg").unwrap().name, "reg");
        assert_eq!(r(""), None);
        assert_eq!(r("db:"), None);
        assert_eq!(r("arn:aws:s3:::bucket"), None);
    }

    #[test]
    fn debug_never_prints_values() {
        let s = SecretSpec {
            data: [("password".to_string(), "hunter2".to_string())].into(),
        };
        let d = format!("{s:?}");
        assert!(d.contains("password") && !d.contains("hunter2"), "{d}");
    }
}
