//! Planning a set of documents: the writes that make the store match it, or every error in it.

use std::collections::{BTreeMap, HashMap};

use crate::apply::error::ApplyError;
use crate::apply::reader::Reader;
use crate::apply::report::{ObjectResult, Outcome};
use crate::auth::secrets_key::SecretsKey;
use crate::manifest::{Document, Resource};
use crate::model::{self, Kind};
use crate::store::Op;

use super::cluster::{plan_cluster, DEFAULT_CLUSTER};
use super::lb::check_load_balancers;
use super::secret::plan_secret;
use super::service::{plan_services, SetContext};
use super::simple::plan_simple;
use super::taskdef::{plan_taskdef, FamilyAfter};

pub struct Plan {
    pub results: Vec<ObjectResult>,
    pub ops: Vec<Op>,
    pub compares: BTreeMap<String, i64>,
}

/// Plan applying `docs`. `stamped`: they carry their source's ownership annotations (a
/// source apply), so a different owner is a change. `key` seals Secrets (none: a Secret in the
/// set is refused).
pub async fn plan_apply(
    r: &mut Reader<'_>,
    docs: &[Document],
    stamped: bool,
    key: Option<&SecretsKey>,
) -> Result<Plan, ApplyError> {
    let now = model::now();
    let mut results: Vec<Option<ObjectResult>> = vec![None; docs.len()];
    let mut ops = Vec::new();
    let mut errors = Vec::new();
    let mut families: HashMap<String, FamilyAfter> = HashMap::new();

    // Clusters and task definitions first: services refer to them.
    for (i, doc) in docs.iter().enumerate() {
        results[i] = match &doc.resource {
            Resource::Cluster(want) => {
                Some(plan_cluster(r, doc, want, stamped, now, &mut ops).await?)
            }
            Resource::TaskDefinition(want) => {
                let (result, after) = plan_taskdef(r, doc, want, stamped, now, &mut ops).await?;
                families.insert(want.metadata.name.clone(), after);
                Some(result)
            }
            Resource::Service(_) => None,
            Resource::ScalingPolicy(want) => {
                Some(plan_simple(r, doc, Kind::ScalingPolicy, want, stamped, now, &mut ops).await?)
            }
            Resource::Role(want) => {
                Some(plan_simple(r, doc, Kind::Role, want, stamped, now, &mut ops).await?)
            }
            Resource::LoadBalancer(want) => {
                Some(plan_simple(r, doc, Kind::LoadBalancer, want, stamped, now, &mut ops).await?)
            }
            Resource::TargetGroup(want) => {
                Some(plan_simple(r, doc, Kind::TargetGroup, want, stamped, now, &mut ops).await?)
            }
            Resource::Secret(want) => {
                Some(plan_secret(r, doc, want, key, stamped, now, &mut ops).await?)
            }
        };
    }

    check_load_balancers(r, docs, &mut errors).await?;
    let cx = SetContext {
        docs,
        stamped,
        now,
        families: &families,
    };
    let created_default = plan_services(r, &cx, &mut results, &mut ops, &mut errors).await?;

    if !errors.is_empty() {
        return Err(ApplyError::Invalid(errors));
    }
    let mut results: Vec<ObjectResult> = results.into_iter().flatten().collect();
    if created_default {
        results.insert(
            0,
            ObjectResult {
                kind: Kind::Cluster,
                name: DEFAULT_CLUSTER.to_string(),
                outcome: Outcome::Created,
                source: None,
            },
        );
    }
    // The compares stay in the reader: the caller decides which of them the transaction needs.
    Ok(Plan {
        results,
        ops,
        compares: BTreeMap::new(),
    })
}
