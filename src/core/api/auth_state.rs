//! Who is calling, and the state the front door (middleware.rs) and the auth endpoints
//! (auth_api.rs) share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::audit::AuditLog;
use crate::auth::crypto::ServerKey;
use crate::auth::identity;
use crate::auth::policy;
use crate::auth::sigv4;
use crate::store::DynStore;

/// Shared by the middleware and the auth endpoints.
#[derive(Clone)]
pub struct AuthState {
    pub store: DynStore,
    pub audit: AuditLog,
    key: Arc<OnceCell<ServerKey>>,
    /// Signatures of SigV4 writes seen within the skew window (a write is never replayed).
    seen: Arc<Mutex<HashMap<String, DateTime<Utc>>>>,
}

impl AuthState {
    pub fn new(store: DynStore) -> Self {
        AuthState {
            audit: AuditLog::new(store.clone()),
            store,
            key: Arc::new(OnceCell::new()),
            seen: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub async fn key(&self) -> anyhow::Result<ServerKey> {
        self.key
            .get_or_try_init(|| ServerKey::load_or_create(&*self.store))
            .await
            .cloned()
    }

    /// True the first time a signature is seen within the replay window.
    pub(super) fn first_use(&self, signature: &str, now: DateTime<Utc>) -> bool {
        let mut seen = self.seen.lock().unwrap();
        if seen.len() > 10_000 {
            let horizon = now - sigv4::MAX_SKEW * 2;
            seen.retain(|_, t| *t > horizon);
        }
        seen.insert(signature.to_string(), now).is_none()
    }
}

/// Who is calling (inserted into request extensions for handlers).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Caller {
    /// Identity name, or `task/<id>` for task credentials.
    pub identity: String,
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    pub auth_method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
}

/// For `can-i`: evaluate one action for a caller without auditing.
pub async fn evaluate_for(
    st: &AuthState,
    caller: &Caller,
    action: &str,
    resource: &str,
) -> anyhow::Result<policy::Evaluation> {
    let role = identity::get_role(&*st.store, &caller.role).await?;
    Ok(policy::evaluate(role.as_ref(), action, resource))
}
