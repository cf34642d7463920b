//! PutAttributes, ListAttributes, DeleteAttributes: custom attributes of container instances,
//! stored in the instance's `spec.attributes` (what `memberOf` placement constraints read,
//! `attribute:NAME == VALUE`). Their names are kept in the annotation [`CUSTOM`], so an agent
//! that re-registers its own configured attributes keeps them.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::arn;
use super::ctx::{cluster_of, Ctx};
use super::error::{EcsError, EcsResult};
use super::shapes::{page, with_token};
use crate::model::{keys, ContainerInstance, Kind, CUSTOM_ATTRIBUTES_ANNOTATION as CUSTOM};
use crate::objects::{self, ObjectError};

const TARGET_TYPE: &str = "container-instance";
/// ECS: at most 10 attributes per call; names of 1–128, values of 1–128 characters.
const MAX_PER_CALL: usize = 10;
const MAX_LEN: usize = 128;

struct Attr {
    name: String,
    value: Option<String>,
    target: String,
}

/// ECS allows a name alone (a flag attribute): berth stores it with an empty value.
fn parse(req: &Value) -> Result<Vec<Attr>, EcsError> {
    let Some(list) = req["attributes"].as_array().filter(|a| !a.is_empty()) else {
        return Err(EcsError::invalid("attributes is required"));
    };
    if list.len() > MAX_PER_CALL {
        return Err(EcsError::invalid(format!(
            "at most {MAX_PER_CALL} attributes per call"
        )));
    }
    let mut out = vec![];
    for a in list {
        let name = a["name"].as_str().unwrap_or("");
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars().count() <= MAX_LEN
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./@:".contains(c))
        };
        if !ok(name) {
            return Err(EcsError::invalid(format!(
                "invalid attribute name {name:?}"
            )));
        }
        let value = a["value"].as_str().map(str::to_string);
        if let Some(v) = &value {
            if v.is_empty() || v.chars().count() > MAX_LEN {
                return Err(EcsError::invalid(format!(
                    "invalid value of attribute {name}"
                )));
            }
        }
        if let Some(t) = a["targetType"].as_str() {
            if t != TARGET_TYPE {
                return Err(EcsError::invalid("targetType must be container-instance"));
            }
        }
        let target = a["targetId"].as_str().map(arn::name).unwrap_or("");
        if target.is_empty() {
            return Err(EcsError::invalid(
                "targetId (a container instance) is required",
            ));
        }
        out.push(Attr {
            name: name.to_string(),
            value,
            target: target.to_string(),
        });
    }
    Ok(out)
}

fn shape(region: &str, cluster: &str, id: &str, name: &str, value: &str) -> Value {
    let mut a = json!({"name": name, "targetType": TARGET_TYPE,
        "targetId": arn::container_instance(region, cluster, id)});
    if !value.is_empty() {
        a["value"] = json!(value);
    }
    a
}

/// Apply `change` to each named instance's attributes (CAS on its record).
async fn change(cx: &Ctx, req: &Value, put: bool) -> EcsResult {
    let cluster = cluster_of(req);
    cx.require_cluster(&cluster).await?;
    let attrs = parse(req)?;
    let mut by_target: BTreeMap<String, Vec<&Attr>> = BTreeMap::new();
    for a in &attrs {
        by_target.entry(a.target.clone()).or_default().push(a);
    }
    let store = &*cx.st.store;
    for (id, list) in &by_target {
        let key = keys::key(Kind::ContainerInstance, id);
        let mut done = false;
        for _ in 0..10 {
            let Some(mut i): Option<ContainerInstance> = objects::get(store, &key).await? else {
                break;
            };
            if i.spec.cluster != cluster {
                break;
            }
            let mut custom: Vec<String> = i
                .metadata
                .annotations
                .get(CUSTOM)
                .map(|s| {
                    s.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            for a in list {
                if put {
                    i.spec
                        .attributes
                        .insert(a.name.clone(), a.value.clone().unwrap_or_default());
                    if !custom.contains(&a.name) {
                        custom.push(a.name.clone());
                    }
                } else {
                    if !custom.contains(&a.name) {
                        // ECS: only custom attributes can be deleted.
                        continue;
                    }
                    i.spec.attributes.remove(&a.name);
                    custom.retain(|c| c != &a.name);
                }
            }
            custom.sort();
            if custom.is_empty() {
                i.metadata.annotations.remove(CUSTOM);
            } else {
                i.metadata
                    .annotations
                    .insert(CUSTOM.to_string(), custom.join(","));
            }
            match objects::put_cas(store, &key, &i).await {
                Ok(_) => {
                    done = true;
                    break;
                }
                Err(ObjectError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if !done {
            return Err(EcsError::new(
                "TargetNotFoundException",
                format!("Could not find container instance {id} in cluster {cluster}"),
            ));
        }
    }
    let out: Vec<Value> = attrs
        .iter()
        .map(|a| {
            shape(
                &cx.region,
                &cluster,
                &a.target,
                &a.name,
                a.value.as_deref().unwrap_or(""),
            )
        })
        .collect();
    Ok(json!({ "attributes": out }))
}

pub async fn put(cx: &Ctx, req: &Value) -> EcsResult {
    change(cx, req, true).await
}

pub async fn delete(cx: &Ctx, req: &Value) -> EcsResult {
    change(cx, req, false).await
}

pub async fn list(cx: &Ctx, req: &Value) -> EcsResult {
    let cluster = cluster_of(req);
    cx.require_cluster(&cluster).await?;
    if req["targetType"].as_str() != Some(TARGET_TYPE) {
        return Err(EcsError::invalid("targetType must be container-instance"));
    }
    let name = req["attributeName"].as_str();
    let value = req["attributeValue"].as_str();
    if value.is_some() && name.is_none() {
        return Err(EcsError::invalid("attributeValue needs attributeName"));
    }
    let mut out: Vec<(String, String, String)> = vec![];
    for i in cx.all(Kind::ContainerInstance).await? {
        if i["spec"]["cluster"].as_str() != Some(cluster.as_str()) {
            continue;
        }
        let id = i["metadata"]["name"].as_str().unwrap_or("").to_string();
        if let Some(m) = i["spec"]["attributes"].as_object() {
            for (k, v) in m {
                let v = v.as_str().unwrap_or("");
                if name.is_none_or(|n| n == k) && value.is_none_or(|w| w == v) {
                    out.push((id.clone(), k.clone(), v.to_string()));
                }
            }
        }
    }
    out.sort();
    let (out, next) = page(out, req, 100)?;
    let attrs: Vec<Value> = out
        .iter()
        .map(|(id, k, v)| shape(&cx.region, &cluster, id, k, v))
        .collect();
    Ok(with_token(json!({ "attributes": attrs }), next))
}
