//! TaskDefinition: ECS's containerDefinitions and task-level fields, camelCase as in ECS JSON.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use super::object::Object;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    #[default]
    Bridge,
    Host,
    Awsvpc,
    None,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskDefinitionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<NetworkMode>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "taskRoleArn"
    )]
    pub task_role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
    /// Task-level CPU units (ECS JSON writes it as a string, "256"; both accepted).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "num_or_string"
    )]
    pub cpu: Option<u32>,
    /// Task-level memory in MiB (number or string).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "num_or_string"
    )]
    pub memory: Option<u32>,
    pub container_definitions: Vec<ContainerDefinition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires_compatibilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_constraints: Vec<PlacementConstraint>,
    /// `host` shares the host's process namespace (refused unless the cluster allows
    /// privileged tasks); `task` (default) keeps it private.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_mode: Option<String>,
    /// `host` shares the host's IPC namespace (refused unless allowed); `task` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc_mode: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerDefinition {
    pub name: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry_point: Vec<String>,
    /// CPU units reserved for the container (1024 = one core); also its cpu shares.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub cpu: u32,
    /// Hard memory limit in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    /// Soft memory reservation in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<u32>,
    /// Defaults to true, as in ECS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub essential: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<EnvVar>,
    /// Environment variables whose values come from Secrets (`valueFrom: SECRET[:KEY]`),
    /// resolved when the task starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<ContainerSecret>,
    /// The registry login for pulling `image`: a Secret with `username` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_credentials: Option<RepositoryCredentials>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ContainerDependency>,
    /// Seconds between SIGTERM and SIGKILL (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub docker_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_points: Vec<MountPoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly_root_filesystem: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Restart the container in place when it exits (ECS container restart policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// Accepted for ECS compatibility; berth keeps logs itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_configuration: Option<serde_json::Value>,
    /// Kernel capabilities, devices, init, shared memory (ECS `linuxParameters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_parameters: Option<LinuxParameters>,
}

/// ECS `linuxParameters`. Added capabilities and host devices are refused unless the cluster
/// allows privileged tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinuxParameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<KernelCapabilities>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_process_enabled: Option<bool>,
    /// MiB of /dev/shm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_memory_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_swap: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swappiness: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KernelCapabilities {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Device {
    pub host_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<String>,
}

impl ContainerDefinition {
    pub fn is_essential(&self) -> bool {
        self.essential.unwrap_or(true)
    }
    pub fn stop_timeout_secs(&self) -> u32 {
        self.stop_timeout.unwrap_or(30)
    }
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// ECS's container restart policy: restart in place unless the exit code is ignored or the
/// container ran for less than `restartAttemptPeriod` seconds since its last (re)start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestartPolicy {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_exit_codes: Vec<i64>,
    /// Seconds (ECS default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_attempt_period: Option<u32>,
}

impl RestartPolicy {
    pub fn period_secs(&self) -> u32 {
        self.restart_attempt_period.unwrap_or(300)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    pub container_port: u16,
    /// 0 or absent: a dynamic host port in bridge mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// ECS `secrets[]`: `{name: ENV, valueFrom: SECRET[:KEY] | ARN}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerSecret {
    pub name: String,
    pub value_from: String,
}

/// ECS `repositoryCredentials`: the Secret (name or ARN) holding `username` and `password`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepositoryCredentials {
    pub credentials_parameter: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`, as in ECS and Docker.
    pub command: Vec<String>,
    /// Seconds (ECS default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u32>,
    /// Seconds (ECS default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    /// ECS default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Seconds (ECS default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DependencyCondition {
    Start,
    Complete,
    Success,
    Healthy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerDependency {
    pub container_name: String,
    pub condition: DependencyCondition,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostVolume>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostVolume {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountPoint {
    pub source_volume: String,
    pub container_path: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlacementConstraint {
    #[serde(rename = "type")]
    pub kind: PlacementConstraintType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlacementConstraintType {
    #[default]
    #[serde(rename = "distinctInstance")]
    DistinctInstance,
    #[serde(rename = "memberOf")]
    MemberOf,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinitionStatus {
    #[serde(default)]
    pub family: String,
    #[serde(default)]
    pub revision: u32,
    /// ACTIVE or INACTIVE (pruned from its source; still readable).
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<DateTime<Utc>>,
}

pub type TaskDefinition = Object<TaskDefinitionSpec, TaskDefinitionStatus>;

impl TaskDefinitionSpec {
    /// CPU units the task reserves: the task-level value, else the sum of its containers.
    pub fn reserved_cpu(&self) -> u32 {
        self.cpu
            .unwrap_or_else(|| self.container_definitions.iter().map(|c| c.cpu).sum())
    }
    /// MiB the task reserves: task-level memory, else per container the hard limit or the
    /// reservation.
    pub fn reserved_memory(&self) -> u32 {
        self.memory.unwrap_or_else(|| {
            self.container_definitions
                .iter()
                .map(|c| c.memory_reservation.or(c.memory).unwrap_or(0))
                .sum()
        })
    }
    pub fn network_mode(&self) -> NetworkMode {
        self.network_mode.unwrap_or_default()
    }
    /// Host ports the task needs fixed (non-dynamic), with protocol.
    pub fn fixed_host_ports(&self) -> Vec<(u16, Protocol)> {
        // awsvpc tasks have their own address and none has no network: no host port is taken.
        if matches!(self.network_mode(), NetworkMode::Awsvpc | NetworkMode::None) {
            return vec![];
        }
        let host_mode = self.network_mode() == NetworkMode::Host;
        self.container_definitions
            .iter()
            .flat_map(|c| c.port_mappings.iter())
            .filter_map(|p| {
                let proto = p.protocol.unwrap_or_default();
                match p.host_port {
                    Some(h) if h != 0 => Some((h, proto)),
                    _ if host_mode => Some((p.container_port, proto)),
                    _ => None,
                }
            })
            .collect()
    }
}

/// Accepts `256` or `"256"` (ECS JSON writes task cpu/memory as strings).
fn num_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrString {
        Num(u32),
        Str(String),
    }
    match Option::<NumOrString>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrString::Num(n)) => Ok(Some(n)),
        Some(NumOrString::Str(s)) => s.trim().parse::<u32>().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "expected a non-negative whole number (or a string of one), got {s:?}"
            ))
        }),
    }
}

/// Parse `family` or `family:rev`.
pub fn parse_taskdef_ref(s: &str) -> Option<(&str, Option<u32>)> {
    match s.rsplit_once(':') {
        Some((fam, rev)) => rev.parse::<u32>().ok().map(|r| (fam, Some(r))),
        None => Some((s, None)),
    }
    .filter(|(fam, _)| !fam.is_empty())
}
