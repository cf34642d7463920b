//! TagResource, UntagResource, ListTagsForResource, and the `tags` members of Create*,
//! Register*, RunTask and StartTask. Tags live on the object itself (`metadata.tags`), so
//! berth's own API shows them too; each change is a compare-and-swap of the object's record.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::ctx::Ctx;
use super::error::{EcsError, EcsResult};
use crate::model::{keys, parse_taskdef_ref, Kind};
use crate::store::{Compare, Op, Store, Txn};

/// ECS: at most 50 tags per resource, keys of 1–128 and values of 0–256 characters.
const MAX_TAGS: usize = 50;
const MAX_KEY: usize = 128;
const MAX_VALUE: usize = 256;
const ATTEMPTS: usize = 10;

/// The request's `tags` (`[{key, value}]`), validated.
pub fn from_request(req: &Value) -> Result<BTreeMap<String, String>, EcsError> {
    parse(&req["tags"])
}

fn parse(v: &Value) -> Result<BTreeMap<String, String>, EcsError> {
    let mut out = BTreeMap::new();
    let Some(list) = v.as_array() else {
        return match v {
            Value::Null => Ok(out),
            _ => Err(EcsError::invalid("tags must be a list of {key, value}")),
        };
    };
    for t in list {
        let Some(k) = t["key"].as_str() else {
            return Err(EcsError::invalid("each tag needs a key"));
        };
        let val = t["value"].as_str().unwrap_or("");
        check(k, val)?;
        out.insert(k.to_string(), val.to_string());
    }
    if out.len() > MAX_TAGS {
        return Err(EcsError::invalid(format!(
            "a resource has at most {MAX_TAGS} tags"
        )));
    }
    Ok(out)
}

fn check(k: &str, v: &str) -> Result<(), EcsError> {
    if k.is_empty() || k.chars().count() > MAX_KEY {
        return Err(EcsError::invalid(format!(
            "tag keys have 1 to {MAX_KEY} characters"
        )));
    }
    if v.chars().count() > MAX_VALUE {
        return Err(EcsError::invalid(format!(
            "tag values have at most {MAX_VALUE} characters"
        )));
    }
    if k.to_ascii_lowercase().starts_with("aws:") {
        return Err(EcsError::invalid(
            "tag keys starting with aws: are reserved",
        ));
    }
    Ok(())
}

/// Stored tags (`metadata.tags` of a JSON object) in ECS's shape.
pub fn of(o: &Value) -> Value {
    let tags: Vec<Value> = o["metadata"]["tags"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect()
        })
        .unwrap_or_default();
    Value::Array(tags)
}

/// Whether a Describe request asked for tags (`include: ["TAGS"]`).
pub fn wanted(req: &Value) -> bool {
    req["include"]
        .as_array()
        .is_some_and(|a| a.iter().any(|v| v == "TAGS"))
}

/// The store key an ECS resource ARN names, checked to be in the cluster it says.
async fn key_of(cx: &Ctx, resource_arn: &str) -> Result<String, EcsError> {
    let bad = || EcsError::invalid(format!("invalid resource ARN {resource_arn:?}"));
    let rest = resource_arn
        .strip_prefix("arn:")
        .and_then(|r| r.splitn(5, ':').nth(4))
        .ok_or_else(bad)?;
    let (ty, path) = rest.split_once('/').ok_or_else(bad)?;
    let parts: Vec<&str> = path.split('/').collect();
    let missing = || {
        EcsError::new(
            "ResourceNotFoundException",
            "The specified resource could not be found.",
        )
    };
    let (kind, cluster, name) = match (ty, parts.as_slice()) {
        ("cluster", [n]) => (Kind::Cluster, None, *n),
        ("service", [c, n]) => (Kind::Service, Some(*c), *n),
        ("task", [c, n]) => (Kind::Task, Some(*c), *n),
        ("container-instance", [c, n]) => (Kind::ContainerInstance, Some(*c), *n),
        ("task-definition", [fr]) => {
            let Some((family, Some(rev))) = parse_taskdef_ref(fr) else {
                return Err(bad());
            };
            if family.is_empty() || family.contains('/') {
                return Err(bad());
            }
            return Ok(keys::taskdef_key(family, rev));
        }
        _ => return Err(bad()),
    };
    let o = cx.get(kind, name).await?.ok_or_else(missing)?;
    if let Some(c) = cluster {
        if o["spec"]["cluster"].as_str() != Some(c) {
            return Err(missing());
        }
    }
    Ok(keys::key(kind, name))
}

/// Change the tags of the object at `key` (CAS on its record; retried on a conflict).
pub async fn update(
    store: &dyn Store,
    key: &str,
    change: impl Fn(&mut BTreeMap<String, String>),
) -> Result<Value, EcsError> {
    for _ in 0..ATTEMPTS {
        let Some(kv) = store.get(key).await? else {
            return Err(EcsError::new(
                "ResourceNotFoundException",
                "The specified resource could not be found.",
            ));
        };
        let mut o: Value = serde_json::from_slice(&kv.value)
            .map_err(|e| EcsError::server(format!("stored object is not JSON: {e}")))?;
        let mut tags: BTreeMap<String, String> =
            serde_json::from_value(o["metadata"]["tags"].clone()).unwrap_or_default();
        let before = tags.clone();
        change(&mut tags);
        if tags.len() > MAX_TAGS {
            return Err(EcsError::invalid(format!(
                "a resource has at most {MAX_TAGS} tags"
            )));
        }
        if tags == before {
            return Ok(o);
        }
        let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) else {
            return Err(EcsError::server("stored object has no metadata"));
        };
        if tags.is_empty() {
            meta.remove("tags");
        } else {
            meta.insert("tags".into(), json!(tags));
        }
        meta.remove("revision");
        let txn = Txn::new()
            .when(Compare::mod_revision(key, kv.mod_revision))
            .and_then(Op::put(key.to_string(), o.to_string().into_bytes()));
        if store.txn(txn).await?.succeeded {
            return Ok(o);
        }
    }
    Err(EcsError::server("the resource kept changing; retry"))
}

/// Add `tags` to the object at `key` (the `tags` of a Create* / Register* request).
pub async fn add(
    store: &dyn Store,
    key: &str,
    tags: &BTreeMap<String, String>,
) -> Result<Value, EcsError> {
    update(store, key, |t| {
        t.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())))
    })
    .await
}

pub async fn tag_resource(cx: &Ctx, req: &Value) -> EcsResult {
    let arn = req["resourceArn"].as_str().unwrap_or("");
    let tags = from_request(req)?;
    if tags.is_empty() {
        return Err(EcsError::invalid("tags must name at least one tag"));
    }
    let key = key_of(cx, arn).await?;
    add(&*cx.st.store, &key, &tags).await?;
    Ok(json!({}))
}

pub async fn untag_resource(cx: &Ctx, req: &Value) -> EcsResult {
    let arn = req["resourceArn"].as_str().unwrap_or("");
    let Some(names) = req["tagKeys"].as_array() else {
        return Err(EcsError::invalid("tagKeys is required"));
    };
    let names: Vec<String> = names
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let key = key_of(cx, arn).await?;
    update(&*cx.st.store, &key, |t| {
        for k in &names {
            t.remove(k);
        }
    })
    .await?;
    Ok(json!({}))
}

pub async fn list_for_resource(cx: &Ctx, req: &Value) -> EcsResult {
    let arn = req["resourceArn"].as_str().unwrap_or("");
    let key = key_of(cx, arn).await?;
    let kv = cx.st.store.get(&key).await?.ok_or_else(|| {
        EcsError::new(
            "ResourceNotFoundException",
            "The specified resource could not be found.",
        )
    })?;
    let o: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
    Ok(json!({ "tags": of(&o) }))
}
