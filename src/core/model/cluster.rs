//! Cluster: a named group of container instances, with cluster-wide switches.

use serde::{Deserialize, Serialize};

use super::object::Object;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    #[serde(default)]
    pub settings: ClusterSettings,
    /// ECS's cluster settings (`[{name: containerInsights, value: enabled}]`), as
    /// UpdateCluster / UpdateClusterSettings store them; berth keeps and reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ecs_settings: Vec<EcsClusterSetting>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EcsClusterSetting {
    pub name: String,
    pub value: String,
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
