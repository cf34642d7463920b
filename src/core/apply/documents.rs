//! Applying and deleting a set of documents (`berth apply -f`, `berth delete -f`): plan, then
//! one transaction; re-plan when another writer got in between.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::auth::secrets_key::SecretsKey;

use crate::manifest::{validate, Document};
use crate::store::Store;

use super::commit::{backoff, commit, MAX_ATTEMPTS};
use super::error::ApplyError;
use super::plan::{plan_apply, plan_delete};
use super::reader::Reader;
use super::report::ObjectResult;
use super::safety;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOptions {
    /// Compute the results but write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The control plane's data key, which seals Secrets (none: a Secret is refused).
    #[serde(skip)]
    pub secrets: Option<Arc<SecretsKey>>,
}

/// Apply documents: create what is missing, update what differs, register a new task
/// definition revision when a family's spec changed. All or nothing.
pub async fn apply(
    store: &dyn Store,
    docs: &[Document],
    opts: &ApplyOptions,
) -> Result<Vec<ObjectResult>, ApplyError> {
    let errors = validate(docs);
    if !errors.is_empty() {
        return Err(ApplyError::Invalid(errors));
    }
    safety::check_apply(store, docs).await?;
    for attempt in 0..MAX_ATTEMPTS {
        let mut r = Reader::new(store);
        let plan = plan_apply(&mut r, docs, false, opts.secrets.as_deref()).await?;
        if opts.dry_run || plan.ops.is_empty() {
            return Ok(plan.results);
        }
        if commit(store, r.compares, plan.ops).await? {
            return Ok(plan.results);
        }
        backoff(attempt).await;
    }
    Err(ApplyError::Conflict)
}

/// `berth delete -f`: services are marked for deletion (the service controller stops their
/// tasks and removes the key), clusters are removed when nothing uses them, task definition
/// families become INACTIVE (every revision stays readable). All or nothing.
pub async fn delete_documents(
    store: &dyn Store,
    docs: &[Document],
) -> Result<Vec<ObjectResult>, ApplyError> {
    for attempt in 0..MAX_ATTEMPTS {
        let plan = plan_delete(store, docs).await?;
        if plan.ops.is_empty() {
            return Ok(plan.results);
        }
        if commit(store, plan.compares, plan.ops).await? {
            return Ok(plan.results);
        }
        backoff(attempt).await;
    }
    Err(ApplyError::Conflict)
}
