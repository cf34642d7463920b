//! The envelope every kind shares (`apiVersion`/`kind`/`metadata`/`spec`/`status`), and the
//! clock and id helpers objects are stamped with.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::kind::Kind;

pub const API_VERSION: &str = "berth.dev/v1";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// ECS resource tags (TagResource, `tags` on Create*/RunTask; key → value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The store's mod revision of this object (read side; 0 in manifests).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// Set when deletion was requested; controllers finish the work and remove the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<DateTime<Utc>>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The envelope shared by every kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object<S, T = serde_json::Value> {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: S,
    #[serde(default)]
    pub status: T,
}

impl<S, T: Default> Object<S, T> {
    pub fn new(kind: Kind, name: impl Into<String>, spec: S) -> Self {
        Object {
            api_version: API_VERSION.to_string(),
            kind: kind.as_str().to_string(),
            metadata: Metadata {
                name: name.into(),
                ..Default::default()
            },
            spec,
            status: T::default(),
        }
    }
}

impl<S: Serialize, T: Serialize> Object<S, T> {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("model objects always serialize")
    }
}

impl<S: DeserializeOwned, T: DeserializeOwned + Default> Object<S, T> {
    /// Decode a stored object and stamp it with the store's mod revision.
    pub fn from_kv(kv: &crate::store::KeyValue) -> Result<Self, serde_json::Error> {
        let mut o: Self = serde_json::from_slice(&kv.value)?;
        o.metadata.revision = kv.mod_revision;
        Ok(o)
    }
}

/// Current time, truncated to milliseconds so it round-trips through JSON unchanged.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// A fresh 32-hex-digit id, ECS style.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
