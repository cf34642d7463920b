//! ContainerInstance: a host (or one agent's share of a host) that runs tasks.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::object::Object;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstanceSpec {
    pub cluster: String,
    /// Custom attributes for memberOf constraints (`attribute:NAME`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// The address load balancers and clients use to reach host ports.
    #[serde(default)]
    pub host_ip: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(rename = "CPU", default)]
    pub cpu: u32,
    #[serde(rename = "MEMORY", default)]
    pub memory: u32,
    /// Reserved fixed host ports as "tcp/8080".
    #[serde(rename = "PORTS", default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstanceStatus {
    /// ACTIVE or DRAINING.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub registered_resources: Resources,
    #[serde(default)]
    pub remaining_resources: Resources,
    #[serde(default)]
    pub agent_connected: bool,
    #[serde(default)]
    pub running_tasks_count: u32,
    #[serde(default)]
    pub pending_tasks_count: u32,
    #[serde(default)]
    pub docker_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<DateTime<Utc>>,
    /// Bumped by every placement onto this instance: the compare-and-swap fence.
    #[serde(default)]
    pub placement_generation: u64,
    /// When the agent's lease was first seen missing (cleared when it reconnects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected_at: Option<DateTime<Utc>>,
}

pub type ContainerInstance = Object<ContainerInstanceSpec, ContainerInstanceStatus>;

/// Where a ContainerInstance record says its agent serves logs (`http://host:port`).
pub const LOGS_ENDPOINT_ANNOTATION: &str = "berth.dev/logs-endpoint";
/// The names (comma-separated) of `spec.attributes` put through ECS's PutAttributes: an agent
/// re-registering its configured attributes keeps these.
pub const CUSTOM_ATTRIBUTES_ANNOTATION: &str = "berth.dev/ecs-custom-attributes";
