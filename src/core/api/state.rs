//! What every API handler shares.

use std::sync::Arc;

use crate::auth::secrets_key::SecretsKey;
use crate::runtime::Registry;
use crate::store::election::Leadership;
use crate::store::DynStore;

/// Request bodies above this are refused with 413 before parsing.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

#[derive(Clone)]
pub struct ApiState {
    pub store: DynStore,
    pub registry: Registry,
    /// Who leads the controllers (this process or another control plane).
    pub leadership: Leadership,
    /// The data key that seals and opens Secrets (a file outside the store; none: Secrets
    /// cannot be applied or read here).
    pub secrets: Option<Arc<SecretsKey>>,
}
