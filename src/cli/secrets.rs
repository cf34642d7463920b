//! The control plane's Secrets data key, from `--secrets-key-file` or the data directory.

use std::path::Path;
use std::sync::Arc;

use berth_core::auth::secrets_key::SecretsKey;

/// An explicit `--secrets-key-file` must exist (control planes sharing a cluster share one
/// key: a fresh key on one of them would make the others' Secrets unreadable there); the
/// default `DATA_DIR/secrets.key` is created on first start. Refused when others can read it.
pub fn control_plane_key(file: Option<&Path>, data_dir: &Path) -> anyhow::Result<Arc<SecretsKey>> {
    let (path, create) = match file {
        Some(p) => (p.to_path_buf(), false),
        None => (data_dir.join("secrets.key"), true),
    };
    let key = SecretsKey::load_or_create(&path, create).map_err(|e| {
        if !create && !path.exists() {
            anyhow::anyhow!(
                "{e}; create it once (e.g. `umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {}`) and give every control plane the same file",
                path.display()
            )
        } else {
            anyhow::anyhow!("{e}")
        }
    })?;
    tracing::info!(key = %key.id(), path = %path.display(), "secrets key loaded");
    Ok(Arc::new(key))
}
