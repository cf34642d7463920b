//! Task definitions by reference, through the one lookup in `objects`.

use crate::manifest::validate_name;
use crate::model::TaskDefinition;
use crate::objects;
use crate::store::{Store, StoreError};

use super::error::store_error;

/// The latest stored revision of a task definition family (whatever its status): what the
/// next registration follows.
pub async fn latest_taskdef(
    store: &dyn Store,
    family: &str,
) -> Result<Option<TaskDefinition>, StoreError> {
    if validate_name(family).is_err() {
        return Ok(None);
    }
    objects::latest_revision(store, family)
        .await
        .map_err(store_error)
}

/// Resolve `family` (its latest ACTIVE revision) or `family:N` (exactly that revision).
pub async fn resolve_taskdef(
    store: &dyn Store,
    reference: &str,
) -> Result<Option<TaskDefinition>, StoreError> {
    let valid = crate::model::parse_taskdef_ref(reference)
        .is_some_and(|(family, _)| validate_name(family).is_ok());
    if !valid {
        return Ok(None);
    }
    objects::taskdef(store, reference)
        .await
        .map_err(store_error)
}
