//! What every API handler shares.

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
}
