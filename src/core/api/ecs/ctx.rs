//! What every operation handler shares: the API state, the caller's region, reads of berth's
//! objects as JSON and one-object applies.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::arn;
use super::error::EcsError;
use crate::api::objects_api::to_json;
use crate::api::state::ApiState;
use crate::apply::{self, ApplyOptions};
use crate::manifest::{Document, Resource, Source};
use crate::model::{keys, Kind, API_VERSION};

/// What every operation handler gets: the API state and the caller's region (from the
/// SigV4 credential scope, for ARNs).
pub struct Ctx {
    pub st: ApiState,
    pub region: String,
    /// The caller's identity name (account settings are per principal).
    pub principal: String,
}

impl Ctx {
    pub async fn all(&self, kind: Kind) -> Result<Vec<Value>, EcsError> {
        let (kvs, _) = self.st.store.range(&keys::prefix(kind)).await?;
        Ok(kvs.iter().filter_map(to_json).collect())
    }

    pub async fn get(&self, kind: Kind, name: &str) -> Result<Option<Value>, EcsError> {
        if name.is_empty() || name.contains('/') {
            return Ok(None);
        }
        let kv = self.st.store.get(&keys::key(kind, name)).await?;
        Ok(kv.as_ref().and_then(to_json))
    }

    /// 400 ClusterNotFoundException unless the cluster exists.
    pub async fn require_cluster(&self, name: &str) -> Result<(), EcsError> {
        match self.get(Kind::Cluster, name).await? {
            Some(_) => Ok(()),
            None => Err(EcsError::cluster_not_found(name)),
        }
    }

    /// Apply one object through berth's apply path (validation, ownership, all checks).
    pub async fn apply(&self, kind: &str, name: &str, spec: Value) -> Result<(), EcsError> {
        self.apply_tagged(kind, name, spec, &BTreeMap::new()).await
    }

    /// [`Ctx::apply`] with ECS tags on a newly created object (`metadata.tags`).
    pub async fn apply_tagged(
        &self,
        kind: &str,
        name: &str,
        spec: Value,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), EcsError> {
        let mut meta = json!({ "name": name });
        if !tags.is_empty() {
            meta["tags"] = json!(tags);
        }
        let doc = json!({"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec});
        let resource: Resource = serde_json::from_value(doc)
            .map_err(|e| EcsError::invalid(format!("invalid {kind}: {e}")))?;
        let doc = Document {
            source: Source {
                file: "(ecs api)".into(),
                document: 1,
            },
            resource,
        };
        apply::apply(&*self.st.store, &[doc], &ApplyOptions::default())
            .await
            .map_err(|e| EcsError::from_api(e.into(), "ClientException"))?;
        Ok(())
    }
}

/// Whether a task definition reference (`family`, `family:rev`) resolves.
pub async fn taskdefs_exists(cx: &Ctx, reference: &str) -> Result<bool, EcsError> {
    Ok(crate::objects::taskdef(&*cx.st.store, reference)
        .await?
        .is_some())
}

/// The cluster a request names (`cluster`: a name or an ARN; default `default`).
pub fn cluster_of(req: &Value) -> String {
    req["cluster"]
        .as_str()
        .map(arn::name)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string()
}

/// Refuse request members berth does not act on (by name), rather than ignore them.
pub fn refuse_unsupported(req: &Value, members: &[&str]) -> Result<(), EcsError> {
    for m in members {
        let set = match &req[*m] {
            Value::Null | Value::Bool(false) => false,
            Value::Object(o) => o.values().any(|v| match v {
                Value::Array(a) => !a.is_empty(),
                Value::Null => false,
                _ => true,
            }),
            Value::Array(a) => !a.is_empty(),
            _ => true,
        };
        if set {
            return Err(EcsError::new(
                "UnsupportedFeatureException",
                format!("berth does not support {m} yet"),
            ));
        }
    }
    Ok(())
}

/// What RunTask and StartTask take that berth does not apply.
pub const UNSUPPORTED_TASK_MEMBERS: &[&str] = &[
    "overrides",
    "networkConfiguration",
    "capacityProviderStrategy",
    "enableExecuteCommand",
    "volumeConfigurations",
];

pub fn str_list(req: &Value, k: &str) -> Vec<String> {
    req[k]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}
