//! Service: keep `desiredCount` copies of a task definition running.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::object::{new_id, now, Object};
use super::taskdef::PlacementConstraint;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// `family` (latest revision) or `family:N`.
    pub task_definition: String,
    #[serde(default)]
    pub desired_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling_strategy: Option<SchedulingStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<String>,
    #[serde(default)]
    pub deployment_configuration: DeploymentConfiguration,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_strategy: Vec<PlacementStrategy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_constraints: Vec<PlacementConstraint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancers: Vec<ServiceLoadBalancer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_grace_period_seconds: Option<u32>,
}

pub fn default_cluster() -> String {
    "default".to_string()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SchedulingStrategy {
    #[default]
    Replica,
    Daemon,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentConfiguration {
    #[serde(default = "default_min_healthy")]
    pub minimum_healthy_percent: u32,
    #[serde(default = "default_max_percent")]
    pub maximum_percent: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_circuit_breaker: Option<CircuitBreaker>,
}

impl Default for DeploymentConfiguration {
    fn default() -> Self {
        DeploymentConfiguration {
            minimum_healthy_percent: default_min_healthy(),
            maximum_percent: default_max_percent(),
            deployment_circuit_breaker: None,
        }
    }
}

fn default_min_healthy() -> u32 {
    100
}
fn default_max_percent() -> u32 {
    200
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    pub enable: bool,
    #[serde(default)]
    pub rollback: bool,
    /// Failed tasks before the deployment fails (default: ECS's half the desired count,
    /// clamped to 3..=200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlacementStrategy {
    #[serde(rename = "type")]
    pub kind: PlacementStrategyType,
    /// binpack: `cpu` | `memory`; spread: `instanceId` | `attribute:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlacementStrategyType {
    Binpack,
    Spread,
    Random,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceLoadBalancer {
    pub target_group: String,
    pub container_name: String,
    pub container_port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// ACTIVE, DRAINING (being deleted).
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub desired_count: u32,
    #[serde(default)]
    pub running_count: u32,
    #[serde(default)]
    pub pending_count: u32,
    #[serde(default)]
    pub deployments: Vec<Deployment>,
    /// Most recent first, bounded.
    #[serde(default)]
    pub events: Vec<ServiceEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: String,
    /// PRIMARY, ACTIVE, INACTIVE.
    pub status: String,
    pub task_definition: String,
    #[serde(default)]
    pub desired_count: u32,
    #[serde(default)]
    pub running_count: u32,
    #[serde(default)]
    pub pending_count: u32,
    #[serde(default)]
    pub failed_tasks: u32,
    /// IN_PROGRESS, COMPLETED, FAILED.
    pub rollout_state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rollout_state_reason: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub message: String,
}

pub type Service = Object<ServiceSpec, ServiceStatus>;

/// Service events kept on the object (newest first).
pub const MAX_SERVICE_EVENTS: usize = 50;

impl Service {
    /// Mark the service deleted, ECS's DeleteService: it drains (its tasks stop) and the
    /// service controller removes it once nothing runs. Returns whether anything changed —
    /// the one "delete a service" of every writer (API, apply delete, prune).
    pub fn mark_deleted(&mut self, at: DateTime<Utc>) -> bool {
        if self.metadata.deletion_timestamp.is_some() {
            return false;
        }
        self.metadata.deletion_timestamp = Some(at);
        self.status.status = "DRAINING".into();
        true
    }
}

impl ServiceStatus {
    pub fn push_event(&mut self, message: impl Into<String>) {
        let message = message.into();
        self.events.insert(
            0,
            ServiceEvent {
                id: new_id(),
                created_at: now(),
                message,
            },
        );
        self.events.truncate(MAX_SERVICE_EVENTS);
    }
}
