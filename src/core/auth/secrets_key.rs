//! The data key that encrypts Secret values at rest, and sealing/opening one value.
//!
//! The key is 32 random bytes in a file **outside the store**: `DATA_DIR/secrets.key` for
//! `berth up` (created on first start), or `--secrets-key-file PATH` for control planes that
//! share one key (HA servers on etcd). The file must be readable by its owner only; a key
//! others can read is refused at start, as the store files are. Whoever reads the store (an
//! etcd backup, the embedded WAL) sees only ciphertext; whoever holds the store *and* this file
//! can read every value.
//!
//! Each value is AES-256-GCM with its own random 96-bit nonce, and the associated data binds it
//! to its secret and key (`berth-secret/v1/NAME/KEY`), so a ciphertext moved to another
//! secret or key does not open.

use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

use super::crypto::{random_bytes, sha256_hex};
use crate::model::SealedValue;

#[derive(Debug, thiserror::Error)]
pub enum SecretsKeyError {
    #[error("cannot read the secrets key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot create the secrets key {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the secrets key {path} is readable by other users (mode {mode:o}); run `chmod 600 {path}` \
         (and re-create the secrets if others may have read it)"
    )]
    NotPrivate { path: String, mode: u32 },
    #[error("the secrets key {path} is not 64 hex digits (32 bytes)")]
    Malformed { path: String },
    #[error(
        "secret {secret} was sealed with data key {sealed} but this server holds key {held}: \
         start every control plane with the same --secrets-key-file"
    )]
    WrongKey {
        secret: String,
        sealed: String,
        held: String,
    },
    #[error("secret {secret}: the value of key {key} does not decrypt (corrupt or tampered)")]
    Corrupt { secret: String, key: String },
}

/// The data key. Never printed, never serialized.
#[derive(Clone)]
pub struct SecretsKey {
    cipher: Aes256Gcm,
    id: String,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretsKey({})", self.id)
    }
}

impl PartialEq for SecretsKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for SecretsKey {}

fn aad(secret: &str, key: &str) -> Vec<u8> {
    format!("berth-secret/v1/{secret}/{key}").into_bytes()
}

impl SecretsKey {
    pub fn from_bytes(b: &[u8; 32]) -> Self {
        let mut idin = b"berth secrets key id\n".to_vec();
        idin.extend_from_slice(b);
        SecretsKey {
            cipher: Aes256Gcm::new(b.into()),
            id: sha256_hex(&idin)[..16].to_string(),
        }
    }

    /// A fixed key for tests.
    pub fn for_tests(b: u8) -> Self {
        SecretsKey::from_bytes(&[b; 32])
    }

    /// A short digest naming the key (stored beside the ciphertexts; reveals nothing of it).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Read the key file, or create it (0600, 32 random bytes as hex) when `create` and it is
    /// absent. Refuses a file that group or others can read.
    pub fn load_or_create(path: &Path, create: bool) -> Result<Self, SecretsKeyError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let shown = path.display().to_string();
        if create && !path.exists() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| SecretsKeyError::Create {
                    path: shown.clone(),
                    source,
                })?;
            }
            let tmp = path.with_extension("tmp");
            let key: [u8; 32] = random_bytes();
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(format!("{}\n", hex::encode(key)).as_bytes())?;
                f.sync_all()?;
                // Never replace a key another process created meanwhile.
                std::fs::hard_link(&tmp, path)?;
                std::fs::remove_file(&tmp)
            };
            match write() {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let _ = std::fs::remove_file(&tmp);
                }
                Err(source) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(SecretsKeyError::Create {
                        path: shown,
                        source,
                    });
                }
            }
        }
        let read = |source| SecretsKeyError::Read {
            path: shown.clone(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretsKeyError::NotPrivate { path: shown, mode });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let bytes = hex::decode(text.trim()).map_err(|_| SecretsKeyError::Malformed {
            path: shown.clone(),
        })?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| SecretsKeyError::Malformed { path: shown })?;
        Ok(SecretsKey::from_bytes(&key))
    }

    /// Encrypt one value of `secret` under `key` with a fresh nonce.
    pub fn seal(&self, secret: &str, key: &str, value: &str) -> SealedValue {
        let nonce: [u8; 12] = random_bytes();
        let aad = aad(secret, key);
        // Encryption with a valid key and nonce cannot fail for inputs below 64 GiB.
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        SealedValue {
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ct),
        }
    }

    /// Decrypt one value sealed by [`SecretsKey::seal`] under the same secret and key names.
    pub fn open(
        &self,
        key_id: &str,
        secret: &str,
        key: &str,
        v: &SealedValue,
    ) -> Result<String, SecretsKeyError> {
        if key_id != self.id {
            return Err(SecretsKeyError::WrongKey {
                secret: secret.into(),
                sealed: key_id.into(),
                held: self.id.clone(),
            });
        }
        let corrupt = || SecretsKeyError::Corrupt {
            secret: secret.into(),
            key: key.into(),
        };
        let nonce = hex::decode(&v.nonce).map_err(|_| corrupt())?;
        if nonce.len() != 12 {
            return Err(corrupt());
        }
        let ct = hex::decode(&v.ciphertext).map_err(|_| corrupt())?;
        let aad = aad(secret, key);
        let pt = self
            .cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ct,
                    aad: &aad,
                },
            )
            .map_err(|_| corrupt())?;
        String::from_utf8(pt).map_err(|_| corrupt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open() {
        let k = SecretsKey::for_tests(7);
        let a = k.seal("db", "password", "hunter2");
        let b = k.seal("db", "password", "hunter2");
        assert_ne!(a.nonce, b.nonce, "every value has its own nonce");
        assert!(!a.ciphertext.contains(&hex::encode("hunter2")));
        assert_eq!(k.open(k.id(), "db", "password", &a).unwrap(), "hunter2");
        // Bound to its secret and key.
        assert!(k.open(k.id(), "db", "username", &a).is_err());
        assert!(k.open(k.id(), "other", "password", &a).is_err());
        let other = SecretsKey::for_tests(8);
        let e = other.open(k.id(), "db", "password", &a).unwrap_err();
        assert!(e.to_string().contains("--secrets-key-file"), "{e}");
        assert!(!format!("{k:?}").contains("07"));
    }

    #[test]
    fn key_file_is_created_private_and_refused_when_readable() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secrets.key");
        assert!(SecretsKey::load_or_create(&p, false).is_err());
        let k1 = SecretsKey::load_or_create(&p, true).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k2 = SecretsKey::load_or_create(&p, true).unwrap();
        assert_eq!(k1, k2, "the same key on the next start");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = SecretsKey::load_or_create(&p, true).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&p, "zz").unwrap();
        assert!(matches!(
            SecretsKey::load_or_create(&p, true),
            Err(SecretsKeyError::Malformed { .. })
        ));
    }
}
