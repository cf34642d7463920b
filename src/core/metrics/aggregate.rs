//! CPU and memory utilization of running tasks, grouped by service, task definition family,
//! cluster and instance — ECS's definitions:
//! - CPU utilization = CPU units used by the group's tasks / CPU units they reserve × 100
//!   (a task that reserves no CPU counts as reserving one core, 1024 units);
//! - memory utilization = memory used / memory reserved × 100 (a task that reserves none is
//!   measured against its containers' hard limits, when they have one).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::sample::InstanceSample;
use crate::model::Task;

/// What the aggregation needs to know about a task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskInfo {
    pub id: String,
    pub service: Option<String>,
    /// `family:rev`.
    pub task_definition: String,
    pub cluster: String,
    pub instance: Option<String>,
    /// Reserved CPU units / MiB (0: none).
    pub cpu_units: u32,
    pub memory_mib: u32,
}

impl TaskInfo {
    pub fn from_task(t: &Task) -> TaskInfo {
        TaskInfo {
            id: t.metadata.name.clone(),
            service: t.service_name().map(str::to_string),
            task_definition: t.spec.task_definition.clone(),
            cluster: t.spec.cluster.clone(),
            instance: t.status.container_instance.clone(),
            cpu_units: t.spec.cpu,
            memory_mib: t.spec.memory,
        }
    }
    pub fn family(&self) -> &str {
        self.task_definition
            .split_once(':')
            .map_or(self.task_definition.as_str(), |(f, _)| f)
    }
}

/// Sums over a group of tasks that have samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// Tasks with a fresh sample.
    pub tasks: u32,
    /// Cores busy (1.0 = one core).
    pub cpu_cores: f64,
    pub cpu_reserved_units: f64,
    pub mem_bytes: f64,
    pub mem_reserved_bytes: f64,
}

impl Group {
    /// Percent of reserved CPU in use (0 when nothing is reserved or sampled).
    pub fn cpu_utilization(&self) -> f64 {
        if self.cpu_reserved_units > 0.0 {
            self.cpu_cores * 1024.0 / self.cpu_reserved_units * 100.0
        } else {
            0.0
        }
    }
    pub fn memory_utilization(&self) -> f64 {
        if self.mem_reserved_bytes > 0.0 {
            self.mem_bytes / self.mem_reserved_bytes * 100.0
        } else {
            0.0
        }
    }
    fn add(&mut self, u: &TaskUsage, cpu_reserved_units: f64, mem_reserved_bytes: f64) {
        self.tasks += 1;
        self.cpu_cores += u.cpu_percent / 100.0;
        self.cpu_reserved_units += cpu_reserved_units;
        self.mem_bytes += u.mem_bytes as f64;
        self.mem_reserved_bytes += mem_reserved_bytes;
    }
}

/// One task's latest usage (all its containers).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskUsage {
    /// Percent of one core.
    pub cpu_percent: f64,
    pub mem_bytes: u64,
    pub mem_limit: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Aggregate {
    pub by_service: BTreeMap<String, Group>,
    pub by_family: BTreeMap<String, Group>,
    pub by_cluster: BTreeMap<String, Group>,
    pub by_instance: BTreeMap<String, Group>,
    pub by_task: HashMap<String, TaskUsage>,
    /// Cluster of each service (for labels).
    pub service_cluster: BTreeMap<String, String>,
}

pub const ONE_CORE_UNITS: f64 = 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

/// Join the latest fresh samples with the tasks they belong to and sum them up.
pub fn aggregate<'a>(
    tasks: impl IntoIterator<Item = &'a TaskInfo>,
    samples: impl IntoIterator<Item = &'a InstanceSample>,
    now_ms: i64,
) -> Aggregate {
    let mut usage: HashMap<&str, TaskUsage> = HashMap::new();
    for s in samples {
        if !s.is_fresh(now_ms) {
            continue;
        }
        for c in &s.containers {
            let u = usage.entry(c.task.as_str()).or_default();
            u.cpu_percent += c.cpu_percent;
            u.mem_bytes += c.mem_bytes;
            u.mem_limit += c.mem_limit;
        }
    }
    let mut out = Aggregate::default();
    for t in tasks {
        let Some(u) = usage.get(t.id.as_str()) else {
            continue;
        };
        let cpu_res = if t.cpu_units > 0 {
            t.cpu_units as f64
        } else {
            ONE_CORE_UNITS
        };
        let mem_res = if t.memory_mib > 0 {
            t.memory_mib as f64 * MIB
        } else {
            u.mem_limit as f64
        };
        if let Some(svc) = &t.service {
            out.by_service
                .entry(svc.clone())
                .or_default()
                .add(u, cpu_res, mem_res);
            out.service_cluster.insert(svc.clone(), t.cluster.clone());
        }
        out.by_family
            .entry(t.family().to_string())
            .or_default()
            .add(u, cpu_res, mem_res);
        out.by_cluster
            .entry(t.cluster.clone())
            .or_default()
            .add(u, cpu_res, mem_res);
        if let Some(i) = &t.instance {
            out.by_instance
                .entry(i.clone())
                .or_default()
                .add(u, cpu_res, mem_res);
        }
        out.by_task.insert(t.id.clone(), u.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::sample::ContainerSample;

    fn task(id: &str, svc: &str, cpu: u32, mem: u32) -> TaskInfo {
        TaskInfo {
            id: id.into(),
            service: Some(svc.into()),
            task_definition: format!("{svc}:3"),
            cluster: "default".into(),
            instance: Some("i1".into()),
            cpu_units: cpu,
            memory_mib: mem,
        }
    }

    fn cs(task: &str, cpu: f64, mem_mib: u64) -> ContainerSample {
        ContainerSample {
            task: task.into(),
            name: "c".into(),
            cpu_percent: cpu,
            mem_bytes: mem_mib * 1024 * 1024,
            mem_limit: 0,
        }
    }

    #[test]
    fn utilization_is_used_over_reserved() {
        let tasks = [task("a", "web", 256, 64), task("b", "web", 256, 64)];
        let s = InstanceSample {
            instance: "i1".into(),
            at_ms: 1000,
            interval_secs: 5.0,
            containers: vec![cs("a", 50.0, 16), cs("b", 0.0, 16), cs("gone", 90.0, 1)],
        };
        let a = aggregate(&tasks, [&s], 2000);
        let web = &a.by_service["web"];
        assert_eq!(web.tasks, 2);
        // Half a core = 512 units of 512 reserved.
        assert!((web.cpu_utilization() - 100.0).abs() < 1e-9);
        assert!((web.memory_utilization() - 25.0).abs() < 1e-9);
        assert_eq!(a.by_family["web"].tasks, 2);
        assert_eq!(a.by_cluster["default"].tasks, 2);
        assert!(!a.by_task.contains_key("gone"));
        // Stale samples are ignored.
        let a = aggregate(&tasks, [&s], 1000 + 60_000);
        assert!(a.by_service.is_empty());
    }

    #[test]
    fn no_reservation_counts_one_core() {
        let tasks = [task("a", "w", 0, 0)];
        let s = InstanceSample {
            instance: "i1".into(),
            at_ms: 0,
            interval_secs: 1.0,
            containers: vec![cs("a", 50.0, 1)],
        };
        let a = aggregate(&tasks, [&s], 0);
        assert!((a.by_service["w"].cpu_utilization() - 50.0).abs() < 1e-9);
        assert_eq!(a.by_service["w"].memory_utilization(), 0.0);
    }
}
