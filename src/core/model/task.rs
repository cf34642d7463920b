//! Task: one running copy of a task definition (written by berth, read by everyone).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::kind::Kind;
use super::object::{new_id, now, Object};
use super::service::PlacementStrategy;
use super::taskdef::{PlacementConstraint, TaskDefinition};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    /// Resolved `family:rev`.
    pub task_definition: String,
    pub cluster: String,
    /// `service:NAME` for a service's tasks, else `family:NAME` or as given to run-task.
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub started_by: String,
    /// Deployment id (service tasks).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deployment_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_strategy: Vec<PlacementStrategy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_constraints: Vec<PlacementConstraint>,
    /// CPU units and MiB reserved on the instance (resolved at creation).
    #[serde(default)]
    pub cpu: u32,
    #[serde(default)]
    pub memory: u32,
}

/// ECS task lifecycle states, in order.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum TaskState {
    #[default]
    Provisioning,
    Pending,
    Activating,
    Running,
    Deactivating,
    Stopping,
    Deprovisioning,
    Stopped,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Provisioning => "PROVISIONING",
            TaskState::Pending => "PENDING",
            TaskState::Activating => "ACTIVATING",
            TaskState::Running => "RUNNING",
            TaskState::Deactivating => "DEACTIVATING",
            TaskState::Stopping => "STOPPING",
            TaskState::Deprovisioning => "DEPROVISIONING",
            TaskState::Stopped => "STOPPED",
        }
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DesiredStatus {
    #[default]
    Running,
    Stopped,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HealthStatus {
    Healthy,
    Unhealthy,
    #[default]
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    #[serde(default)]
    pub last_status: TaskState,
    #[serde(default)]
    pub desired_status: DesiredStatus,
    #[serde(default)]
    pub health_status: HealthStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_instance: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<DateTime<Utc>>,
    /// The task's own address (awsvpc network mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_ip: Option<String>,
    /// Why the scheduler could not place it yet (shown by describe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_message: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_id: Option<String>,
    #[serde(default)]
    pub last_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub health_status: HealthStatus,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_bindings: Vec<NetworkBinding>,
    /// In-place restarts under the container's restartPolicy.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restart_count: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBinding {
    pub container_port: u16,
    pub host_port: u16,
    pub bind_ip: String,
    #[serde(default)]
    pub protocol: String,
}

pub type Task = Object<TaskSpec, TaskStatus>;

/// How long a task must run (without becoming healthy) before its death no longer counts as
/// a failure to start.
pub const STARTUP_WINDOW: chrono::Duration = chrono::Duration::seconds(10);

pub mod stop_codes {
    pub const ESSENTIAL_CONTAINER_EXITED: &str = "EssentialContainerExited";
    pub const USER_INITIATED: &str = "UserInitiated";
    pub const SERVICE_SCHEDULER_INITIATED: &str = "ServiceSchedulerInitiated";
    pub const TASK_FAILED_TO_START: &str = "TaskFailedToStart";
    /// Reason prefix of tasks the recovery controller replaces for failing health checks.
    pub const HEALTH_CHECK_REASON: &str = "Task failed container health checks";
}

impl Task {
    /// Not stopped and not asked to stop: counts toward a service's tasks.
    pub fn is_active(&self) -> bool {
        self.status.desired_status == DesiredStatus::Running
            && self.status.last_status != TaskState::Stopped
    }
    pub fn is_stopped(&self) -> bool {
        self.status.last_status == TaskState::Stopped
    }
    /// Holds resources on its instance until it has fully stopped.
    pub fn holds_resources(&self) -> bool {
        self.status.container_instance.is_some() && !self.is_stopped()
    }
    /// Stopped because it failed (could not start, essential container exited, or failed its
    /// health checks) — what circuit breakers and crash-loop back-off count.
    pub fn failed(&self) -> bool {
        self.is_stopped()
            && match self.status.stop_code.as_deref() {
                Some(stop_codes::TASK_FAILED_TO_START)
                | Some(stop_codes::ESSENTIAL_CONTAINER_EXITED) => true,
                _ => self
                    .status
                    .stopped_reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with(stop_codes::HEALTH_CHECK_REASON)),
            }
    }
    /// A failure while starting up: it failed before it was ever healthy and within its
    /// first `STARTUP_WINDOW` of running. A task that served for a while and then died is a
    /// crash to replace at once, not a crash loop to back off from or a bad deployment.
    pub fn failed_to_start(&self) -> bool {
        if !self.failed() || self.status.health_status == HealthStatus::Healthy {
            return false;
        }
        match (self.status.started_at, self.status.stopped_at) {
            (Some(start), Some(stop)) => stop - start < STARTUP_WINDOW,
            _ => true,
        }
    }
    pub fn service_name(&self) -> Option<&str> {
        self.spec.group.strip_prefix("service:")
    }

    /// A new task of `td` (resolved `family:rev`), PROVISIONING and wanted RUNNING: the one
    /// constructor behind run-task and the service controller. Placement comes from `spec`'s
    /// caller; CPU and memory reservations from the task definition.
    pub fn provision(td: &TaskDefinition, cluster: &str, group: &str, started_by: &str) -> Task {
        let id = new_id();
        let mut t = Task::new(
            Kind::Task,
            id.clone(),
            TaskSpec {
                task_definition: td.metadata.name.clone(),
                cluster: cluster.to_string(),
                group: group.to_string(),
                started_by: started_by.to_string(),
                deployment_id: String::new(),
                placement_strategy: vec![],
                placement_constraints: td.spec.placement_constraints.clone(),
                cpu: td.spec.reserved_cpu(),
                memory: td.spec.reserved_memory(),
            },
        );
        let now = now();
        t.metadata.uid = id;
        t.metadata.created_at = Some(now);
        t.status = TaskStatus {
            last_status: TaskState::Provisioning,
            desired_status: DesiredStatus::Running,
            created_at: Some(now),
            ..Default::default()
        };
        t
    }

    /// Ask the task to stop (the agent stops its containers): desired STOPPED with the stop
    /// code and reason, unless it is already stopped or asked to stop (the first reason
    /// stands). Returns whether anything changed — the one "request a stop" of every writer.
    pub fn request_stop(&mut self, code: &str, reason: &str) -> bool {
        if self.is_stopped() || self.status.desired_status == DesiredStatus::Stopped {
            return false;
        }
        self.status.desired_status = DesiredStatus::Stopped;
        if self.status.stop_code.is_none() {
            self.status.stop_code = Some(code.to_string());
            self.status.stopped_reason = Some(reason.to_string());
        }
        true
    }
}
