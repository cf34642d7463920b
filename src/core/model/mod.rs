//! The object model: Kubernetes-style envelopes with ECS field names inside.

pub mod instance;
pub mod keys;
pub mod lb;
pub mod role;
pub mod scaling;
pub mod service;
pub mod task;
pub mod taskdef;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use instance::*;
pub use lb::{LoadBalancer, LoadBalancerSpec, TargetGroup, TargetGroupSpec};
pub use role::{Role, RoleSpec};
pub use scaling::{ScalingPolicy, ScalingPolicySpec, ScalingPolicyStatus};
pub use service::*;
pub use task::*;
pub use taskdef::*;

pub const API_VERSION: &str = "berth.dev/v1";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Cluster,
    TaskDefinition,
    Service,
    Task,
    ContainerInstance,
    ScalingPolicy,
    Role,
    LoadBalancer,
    TargetGroup,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Cluster,
        Kind::TaskDefinition,
        Kind::Service,
        Kind::Task,
        Kind::ContainerInstance,
        Kind::ScalingPolicy,
        Kind::Role,
        Kind::LoadBalancer,
        Kind::TargetGroup,
    ];
    /// Kinds a user may apply from manifests (the rest are written by berth).
    pub const APPLYABLE: [Kind; 7] = [
        Kind::Cluster,
        Kind::TaskDefinition,
        Kind::Service,
        Kind::ScalingPolicy,
        Kind::Role,
        Kind::LoadBalancer,
        Kind::TargetGroup,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cluster => "Cluster",
            Kind::TaskDefinition => "TaskDefinition",
            Kind::Service => "Service",
            Kind::Task => "Task",
            Kind::ContainerInstance => "ContainerInstance",
            Kind::ScalingPolicy => "ScalingPolicy",
            Kind::Role => "Role",
            Kind::LoadBalancer => "LoadBalancer",
            Kind::TargetGroup => "TargetGroup",
        }
    }
    /// The plural lower-case name used in URLs, store keys and the CLI.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Cluster => "clusters",
            Kind::TaskDefinition => "taskdefinitions",
            Kind::Service => "services",
            Kind::Task => "tasks",
            Kind::ContainerInstance => "containerinstances",
            Kind::ScalingPolicy => "scalingpolicies",
            Kind::Role => "roles",
            Kind::LoadBalancer => "loadbalancers",
            Kind::TargetGroup => "targetgroups",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        let l = s.to_ascii_lowercase();
        Kind::ALL.into_iter().find(|k| {
            let singular = k.as_str().to_ascii_lowercase();
            l == singular
                || l == k.plural()
                || (k == &Kind::TaskDefinition && (l == "td" || l == "tds"))
                || (k == &Kind::ContainerInstance && (l == "instances" || l == "instance"))
                || (k == &Kind::Service && l == "svc")
                || (k == &Kind::ScalingPolicy && l == "sp")
                || (k == &Kind::LoadBalancer && (l == "lb" || l == "lbs"))
                || (k == &Kind::TargetGroup && (l == "tg" || l == "tgs"))
        })
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    #[serde(default)]
    pub settings: ClusterSettings,
}

/// Cluster-wide switches; the unsafe ones default to off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSettings {
    #[serde(default)]
    pub allow_privileged: bool,
    #[serde(default)]
    pub allow_host_mounts: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    #[serde(default)]
    pub status: String,
}

pub type Cluster = Object<ClusterSpec, ClusterStatus>;

/// Current time, truncated to milliseconds so it round-trips through JSON unchanged.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// A fresh 32-hex-digit id, ECS style.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
