//! Checks over a whole set of documents: each object by its kind, then what only the set can
//! tell (duplicates, services against the task definitions beside them).

use std::collections::HashMap;

use super::cluster::check_cluster;
use super::lb::{check_load_balancer, check_target_group};
use super::metadata::check_metadata;
use super::names::validate_name;
use super::problems::{push, Problems};
use super::role::check_role;
use super::scaling::check_policy;
use super::secret::check_secret;
use super::service::{check_service, check_service_against_taskdef};
use super::taskdef::check_taskdef;
use crate::manifest::document::{Document, Resource, Source};
use crate::manifest::error::ManifestError;
use crate::model::{parse_taskdef_ref, Kind, TaskDefinitionSpec};

/// Check every document and the set as a whole (duplicate objects, services against the task
/// definitions of the same set). Returns every problem found, in document order.
pub fn validate(docs: &[Document]) -> Vec<ManifestError> {
    let mut errors = Vec::new();
    let mut seen: HashMap<(Kind, &str), &Source> = HashMap::new();
    let taskdefs: HashMap<&str, &TaskDefinitionSpec> = docs
        .iter()
        .filter_map(|d| match &d.resource {
            Resource::TaskDefinition(td) => Some((td.metadata.name.as_str(), &td.spec)),
            _ => None,
        })
        .collect();

    for d in docs {
        let mut problems = Problems::new();
        if let Err(m) = validate_name(d.name()) {
            push(&mut problems, "metadata.name", m);
        }
        check_metadata(d.resource.metadata(), &mut problems);
        match &d.resource {
            Resource::Cluster(c) => check_cluster(&c.spec, &mut problems),
            Resource::ScalingPolicy(p) => problems.extend(check_policy(&p.spec)),
            Resource::Role(r) => problems.extend(check_role(&r.spec)),
            Resource::LoadBalancer(lb) => problems.extend(check_load_balancer(&lb.spec)),
            Resource::TargetGroup(tg) => problems.extend(check_target_group(&tg.spec)),
            Resource::TaskDefinition(td) => check_taskdef(&td.spec, &mut problems),
            Resource::Secret(s) => check_secret(&s.spec, &mut problems),
            Resource::Service(svc) => {
                check_service(&svc.spec, &mut problems);
                if let Some((family, None)) = parse_taskdef_ref(&svc.spec.task_definition) {
                    if let Some(td) = taskdefs.get(family) {
                        problems.extend(check_service_against_taskdef(&svc.spec, td, family));
                    }
                }
            }
        }
        if let Some(first) = seen.get(&(d.kind(), d.name())) {
            push(
                &mut problems,
                "metadata.name",
                format!(
                    "duplicate {} `{}`: also defined in {} document {}",
                    d.kind(),
                    d.name(),
                    first.file,
                    first.document
                ),
            );
        } else {
            seen.insert((d.kind(), d.name()), &d.source);
        }
        errors.extend(
            problems
                .into_iter()
                .map(|(field, msg)| ManifestError::at(&d.source, Some(&field), msg)),
        );
    }
    errors
}
