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
use crate::store::{Compare, DynStore, Op, Txn};

/// Shared by the middleware and the auth endpoints.
#[derive(Clone)]
pub struct AuthState {
    pub store: DynStore,
    pub audit: AuditLog,
    key: Arc<OnceCell<ServerKey>>,
    /// Signatures of SigV4 writes seen within the skew window (a write is never replayed);
    /// the store holds the shared truth, this is a cache.
    seen: Arc<Mutex<HashMap<String, DateTime<Utc>>>>,
    seen_lease: Arc<Mutex<Option<(i64, i64)>>>,
    /// The data key of Secrets (for the agent route that hands a task its secrets).
    pub secrets: Option<Arc<crate::auth::secrets_key::SecretsKey>>,
}

/// Where claimed SigV4 signatures live (shared by every control plane).
pub const SEEN_PREFIX: &str = "/berth/auth/sigv4-seen/";
const SEEN_BUCKET: std::time::Duration = std::time::Duration::from_secs(300);

impl AuthState {
    pub fn new(store: DynStore) -> Self {
        AuthState {
            audit: AuditLog::new(store.clone()),
            store,
            key: Arc::new(OnceCell::new()),
            seen: Arc::new(Mutex::new(HashMap::new())),
            seen_lease: Arc::default(),
            secrets: None,
        }
    }

    pub async fn key(&self) -> anyhow::Result<ServerKey> {
        self.key
            .get_or_try_init(|| ServerKey::load_or_create(&*self.store))
            .await
            .cloned()
    }

    /// True the first time a signature is seen within the replay window, by any control plane
    /// and across restarts: the signature is claimed in the store (compare-and-swap on its
    /// absence), on a lease that outlives the clock-skew window. A local cache answers repeats
    /// without a store round trip.
    pub(super) async fn first_use(
        &self,
        signature: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, crate::store::StoreError> {
        {
            let mut seen = self.seen.lock().unwrap();
            if seen.len() > 10_000 {
                let horizon = now - sigv4::MAX_SKEW * 2;
                seen.retain(|_, t| *t > horizon);
            }
            if seen.contains_key(signature) {
                return Ok(false);
            }
        }
        let key = format!("{SEEN_PREFIX}{signature}");
        for _ in 0..2 {
            let lease = self.seen_lease(now).await?;
            let txn = Txn::new()
                .when(Compare::absent(&key))
                .and_then(Op::put_with_lease(
                    &key,
                    now.to_rfc3339().into_bytes(),
                    lease,
                ));
            match self.store.txn(txn).await {
                Ok(r) => {
                    self.seen.lock().unwrap().insert(signature.to_string(), now);
                    return Ok(r.succeeded);
                }
                // The bucket's lease lapsed early: take a fresh one.
                Err(crate::store::StoreError::LeaseNotFound(_)) => {
                    *self.seen_lease.lock().unwrap() = None;
                }
                Err(e) => return Err(e),
            }
        }
        Err(crate::store::StoreError::Unavailable(
            "cannot record the signature".into(),
        ))
    }

    /// One lease per [`SEEN_BUCKET`] of time for the claimed signatures, long enough that a
    /// claim outlives the skew window of its request.
    async fn seen_lease(&self, now: DateTime<Utc>) -> Result<i64, crate::store::StoreError> {
        let bucket = now.timestamp() / SEEN_BUCKET.as_secs() as i64;
        if let Some((b, l)) = *self.seen_lease.lock().unwrap() {
            if b == bucket {
                return Ok(l);
            }
        }
        let ttl = SEEN_BUCKET + (sigv4::MAX_SKEW * 2).to_std().unwrap_or_default();
        let l = self.store.lease_grant(ttl).await?;
        *self.seen_lease.lock().unwrap() = Some((bucket, l));
        Ok(l)
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
