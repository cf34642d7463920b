//! Load balancers: their target groups exist, and no two load balancers share a port.

use crate::apply::codec::decode;
use crate::apply::error::{err, ApplyError};
use crate::apply::reader::Reader;
use crate::manifest::{Document, ManifestError, Resource};
use crate::model::{self, keys, Kind};
use crate::store::StoreError;

/// Check every LoadBalancer document against the set and the store, adding to `errors`.
pub async fn check_load_balancers(
    r: &mut Reader<'_>,
    docs: &[Document],
    errors: &mut Vec<ManifestError>,
) -> Result<(), ApplyError> {
    let stored_lbs: Vec<model::LoadBalancer> = {
        let (kvs, _) = r.store.range(&keys::prefix(Kind::LoadBalancer)).await?;
        kvs.iter().filter_map(|kv| decode(kv).ok()).collect()
    };
    for doc in docs {
        let Resource::LoadBalancer(want) = &doc.resource else {
            continue;
        };
        for tg in model::lb::target_groups_of(&want.spec) {
            if !target_group_exists(r, docs, &tg).await? {
                errors.push(err(
                    doc,
                    "spec.listeners",
                    format!("target group `{tg}` does not exist: define it in the manifests (kind: TargetGroup) or create it first"),
                ));
            }
        }
        for (i, l) in want.spec.listeners.iter().enumerate() {
            let in_set = docs
                .iter()
                .filter(|d| d.name() != want.metadata.name)
                .any(|d| match &d.resource {
                    Resource::LoadBalancer(o) => o.spec.listeners.iter().any(|x| x.port == l.port),
                    _ => false,
                });
            let in_store = stored_lbs.iter().any(|o| {
                o.metadata.name != want.metadata.name
                    && o.spec.listeners.iter().any(|x| x.port == l.port)
            });
            let ours = stored_lbs.iter().any(|o| {
                o.metadata.name == want.metadata.name
                    && o.spec.listeners.iter().any(|x| x.port == l.port)
            });
            if in_set || in_store {
                errors.push(err(
                    doc,
                    &format!("spec.listeners[{i}].port"),
                    format!(
                        "port {} is already used by another load balancer's listener",
                        l.port
                    ),
                ));
            } else if !ours && std::net::TcpListener::bind(("0.0.0.0", l.port)).is_err() {
                // The control plane runs a load balancer: a port something else on this host
                // holds could never be served.
                errors.push(err(
                    doc,
                    &format!("spec.listeners[{i}].port"),
                    format!("port {} is already in use on this host", l.port),
                ));
            }
        }
    }
    Ok(())
}

/// A target group is defined in the set or stored.
pub async fn target_group_exists(
    r: &mut Reader<'_>,
    docs: &[Document],
    name: &str,
) -> Result<bool, StoreError> {
    let in_set = docs
        .iter()
        .any(|d| d.kind() == Kind::TargetGroup && d.name() == name);
    Ok(in_set || r.get(&keys::key(Kind::TargetGroup, name)).await?.is_some())
}
