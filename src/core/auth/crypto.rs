//! Small crypto helpers: SHA-256, HMAC-SHA256, random tokens, constant-time comparison, and
//! the server key from which every per-task secret is derived.
//!
//! **What is stored.** Bearer tokens are stored only as SHA-256 hashes (they are 32 random
//! bytes, so a fast hash is enough). SigV4 needs the server to know the secret, so access-key
//! secrets, task session tokens and the per-task container token are never stored at all:
//! each is `HMAC-SHA256(server key, purpose | id)`, recomputed when needed. The one secret at
//! rest is the server key, kept in the store under `/berth/auth/server-key`, a key the object
//! API never serves (only `/berth/<kind>/` prefixes are served). Revoking a credential deletes
//! its record; without the record the derived secret authenticates nothing.

use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{Compare, Op, Store, Txn};

pub type HmacSha256 = Hmac<Sha256>;

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha256(data))
}

pub fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// Constant-time equality of two byte strings (length differences return early, which leaks
/// only the length).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// Upper-case base32-like id of `n` characters (AWS access key ids look like this).
pub fn random_key_id(prefix: &str, n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let bytes = random_bytes::<32>();
    let mut s = String::with_capacity(prefix.len() + n);
    s.push_str(prefix);
    for b in bytes.iter().take(n) {
        s.push(ALPHABET[(*b as usize) % ALPHABET.len()] as char);
    }
    s
}

pub const SERVER_KEY: &str = "/berth/auth/server-key";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredKey {
    key: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// The server key: created once (compare-and-swap, so racing servers agree), then read.
#[derive(Clone)]
pub struct ServerKey([u8; 32]);

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey(…)")
    }
}

impl ServerKey {
    pub async fn load_or_create(store: &dyn Store) -> anyhow::Result<ServerKey> {
        for _ in 0..5 {
            if let Some(kv) = store.get(SERVER_KEY).await? {
                let k: StoredKey = serde_json::from_slice(&kv.value)?;
                let raw = hex::decode(&k.key)?;
                let arr: [u8; 32] = raw
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("server key in the store has the wrong length"))?;
                return Ok(ServerKey(arr));
            }
            let k = StoredKey {
                key: hex::encode(random_bytes::<32>()),
                created_at: crate::model::now(),
            };
            store
                .txn(
                    Txn::new()
                        .when(Compare::absent(SERVER_KEY))
                        .and_then(Op::put(SERVER_KEY, serde_json::to_vec(&k)?)),
                )
                .await?;
        }
        anyhow::bail!("could not create or read the server key")
    }

    #[cfg(test)]
    pub fn for_tests(b: u8) -> ServerKey {
        ServerKey([b; 32])
    }

    /// `HMAC(server key, purpose | 0 | id)` as lower-case hex.
    pub fn derive(&self, purpose: &str, id: &str) -> String {
        let mut m = HmacSha256::new_from_slice(&self.0).expect("any key length");
        m.update(purpose.as_bytes());
        m.update(&[0]);
        m.update(id.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    /// The SigV4 secret of an access key id.
    pub fn secret_for(&self, access_key_id: &str) -> String {
        // 40 characters, like an AWS secret access key.
        self.derive("secret-access-key", access_key_id)[..40].to_string()
    }

    /// The session token that must accompany a temporary (task) access key.
    pub fn session_token_for(&self, access_key_id: &str) -> String {
        format!("bst_{}", self.derive("session-token", access_key_id))
    }

    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN` of a task: what the credentials endpoint demands.
    pub fn container_token_for(&self, task_id: &str) -> String {
        self.derive("container-authorization", task_id)
    }

    /// MAC for dashboard session cookies.
    pub fn mac(&self, data: &str) -> String {
        self.derive("session-cookie", data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivations_differ_by_purpose_and_id() {
        let k = ServerKey::for_tests(7);
        assert_ne!(k.secret_for("ASIA1"), k.secret_for("ASIA2"));
        assert_ne!(k.derive("a", "x"), k.derive("b", "x"));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(k.derive("ab", "c"), k.derive("a", "bc"));
        assert_eq!(k.secret_for("ASIA1").len(), 40);
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        let id = random_key_id("ASIA", 16);
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("ASIA"));
    }
}
