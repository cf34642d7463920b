//! The compact stats sample an agent writes to the store: ONE key per container instance,
//! overwritten every sampling interval (`/berth/stats/<instanceId>`), so the store sees one
//! small write per agent per interval however many containers it runs.

use serde::{Deserialize, Serialize};

use crate::store::KeyValue;

pub const STATS_PREFIX: &str = "/berth/stats/";

pub fn stats_key(instance: &str) -> String {
    format!("{STATS_PREFIX}{instance}")
}

/// Everything one agent measured in one sampling pass.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceSample {
    /// Instance id.
    #[serde(rename = "i")]
    pub instance: String,
    /// When the pass finished, milliseconds since the Unix epoch.
    #[serde(rename = "t")]
    pub at_ms: i64,
    /// The sampling interval in seconds (how stale a sample may be before it is ignored).
    #[serde(rename = "w")]
    pub interval_secs: f64,
    #[serde(rename = "c", default)]
    pub containers: Vec<ContainerSample>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerSample {
    /// Task id.
    #[serde(rename = "k")]
    pub task: String,
    /// Container name in the task definition.
    #[serde(rename = "n")]
    pub name: String,
    /// CPU used over the last interval, percent of one core (100 = one core busy).
    #[serde(rename = "c")]
    pub cpu_percent: f64,
    /// Memory in use (bytes, page cache excluded, as `docker stats` shows it).
    #[serde(rename = "m")]
    pub mem_bytes: u64,
    /// The container's memory limit in bytes (0: none).
    #[serde(rename = "l", default)]
    pub mem_limit: u64,
}

impl InstanceSample {
    pub fn decode(kv: &KeyValue) -> Option<InstanceSample> {
        serde_json::from_slice(&kv.value).ok()
    }

    /// A sample older than three intervals (plus slack) belongs to a stalled or dead agent.
    pub fn is_fresh(&self, now_ms: i64) -> bool {
        let max_age = (self.interval_secs * 3.0 * 1000.0) as i64 + 5_000;
        now_ms - self.at_ms <= max_age
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
