//! Metrics: the agent's stats samples ([`sample`]), their aggregation by service, task
//! definition family, cluster and instance ([`aggregate`]), and the Prometheus / OpenMetrics
//! text served at `/metrics` (encoded with `prometheus-client`), controller metrics included.

pub mod aggregate;
pub mod sample;

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

pub use aggregate::{aggregate, Aggregate, Group, TaskInfo, TaskUsage};
pub use sample::{InstanceSample, STATS_PREFIX};

use crate::runtime::ControllerStatus;

/// The content type of what [`render`] produces.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Default)]
pub struct ServiceCounts {
    pub name: String,
    pub cluster: String,
    pub desired: u32,
    pub running: u32,
    pub pending: u32,
}

#[derive(Debug, Clone, Default)]
pub struct InstanceInfo {
    pub id: String,
    pub cluster: String,
    pub connected: bool,
    pub cpu_registered: u32,
    pub cpu_remaining: u32,
    pub memory_registered: u32,
    pub memory_remaining: u32,
    pub running_tasks: u32,
}

/// Everything one scrape shows.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub controllers: Vec<ControllerStatus>,
    pub durations: Vec<(String, Histogram)>,
    pub aggregate: Aggregate,
    pub services: Vec<ServiceCounts>,
    pub instances: Vec<InstanceInfo>,
    /// Task count by lastStatus.
    pub tasks_by_state: BTreeMap<String, u64>,
    /// Who leads the controllers, as this process sees it.
    pub leadership: Option<crate::store::election::LeaderStatus>,
}

/// Encode a snapshot as OpenMetrics text.
pub fn render(s: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(s));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    out
}

type Labels = Vec<(&'static str, String)>;

fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        m.encode_family(labels)?.encode_gauge(v)?;
    }
    Ok(())
}

fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        m.encode_family(labels)?
            .encode_counter::<NoLabelSet, u64, f64>(v, None)?;
    }
    Ok(())
}

/// The four utilization gauges of one grouping.
fn groups(
    enc: &mut DescriptorEncoder,
    prefix: &str,
    what: &str,
    rows: &[(Labels, &Group)],
) -> Result<(), std::fmt::Error> {
    let pick = |f: &dyn Fn(&Group) -> f64| -> Vec<(Labels, f64)> {
        rows.iter().map(|(l, g)| (l.clone(), f(g))).collect()
    };
    gauges(
        enc,
        &format!("{prefix}_cpu_utilization_percent"),
        &format!(
            "CPU units used by the running tasks of each {what}, percent of the units they reserve"
        ),
        &pick(&|g| g.cpu_utilization()),
    )?;
    gauges(
        enc,
        &format!("{prefix}_memory_utilization_percent"),
        &format!(
            "Memory used by the running tasks of each {what}, percent of the memory they reserve"
        ),
        &pick(&|g| g.memory_utilization()),
    )?;
    gauges(
        enc,
        &format!("{prefix}_cpu_cores"),
        &format!("CPU in use by the running tasks of each {what}, in cores"),
        &pick(&|g| g.cpu_cores),
    )?;
    gauges(
        enc,
        &format!("{prefix}_memory_bytes"),
        &format!("Memory in use by the running tasks of each {what}, in bytes"),
        &pick(&|g| g.mem_bytes),
    )?;
    gauges(
        enc,
        &format!("{prefix}_sampled_tasks"),
        &format!("Running tasks of each {what} with a fresh stats sample"),
        &pick(&|g| g.tasks as f64),
    )
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = |s: &ControllerStatus| vec![("controller", s.name.clone())];
        counters(
            &mut enc,
            "berth_controller_reconciles",
            "Reconciles run by each controller",
            &self
                .controllers
                .iter()
                .map(|s| (c(s), s.reconciles_total))
                .collect::<Vec<_>>(),
        )?;
        counters(
            &mut enc,
            "berth_controller_reconcile_errors",
            "Reconciles that failed (and were retried with back-off)",
            &self
                .controllers
                .iter()
                .map(|s| (c(s), s.errors_total))
                .collect::<Vec<_>>(),
        )?;
        gauges(
            &mut enc,
            "berth_controller_queue_depth",
            "Keys waiting in each controller's queue",
            &self
                .controllers
                .iter()
                .map(|s| (c(s), s.queue_depth as f64))
                .collect::<Vec<_>>(),
        )?;
        gauges(
            &mut enc,
            "berth_controller_in_flight",
            "Reconciles running right now",
            &self
                .controllers
                .iter()
                .map(|s| (c(s), s.in_flight as f64))
                .collect::<Vec<_>>(),
        )?;
        gauges(
            &mut enc,
            "berth_controller_last_reconcile_timestamp_seconds",
            "When each controller last finished a reconcile (Unix time)",
            &self
                .controllers
                .iter()
                .filter_map(|s| {
                    s.last_reconcile_at
                        .map(|t| (c(s), t.timestamp_millis() as f64 / 1000.0))
                })
                .collect::<Vec<_>>(),
        )?;
        if let Some(l) = &self.leadership {
            let me = vec![("candidate", l.me.clone())];
            gauges(
                &mut enc,
                "berth_leader_is_self",
                "1 while this process is the elected leader of the controllers",
                &[(me.clone(), if l.is_leader { 1.0 } else { 0.0 })],
            )?;
            gauges(
                &mut enc,
                "berth_leader_term",
                "The current leadership term (the leader key's revision; 0: no leader)",
                &[(me.clone(), l.term as f64)],
            )?;
            counters(
                &mut enc,
                "berth_leader_changes",
                "Leadership changes this process has seen",
                &[(me, l.changes)],
            )?;
        }
        if !self.durations.is_empty() {
            let mut m = enc.encode_descriptor(
                "berth_controller_reconcile_duration_seconds",
                "Time each reconcile took",
                None,
                MetricType::Histogram,
            )?;
            for (name, h) in &self.durations {
                let labels = vec![("controller", name.clone())];
                h.encode(m.encode_family(&labels)?)?;
            }
        }

        let svc_labels = |name: &str, cluster: &str| {
            vec![
                ("service", name.to_string()),
                ("cluster", cluster.to_string()),
            ]
        };
        let rows: Vec<(Labels, &Group)> = self
            .aggregate
            .by_service
            .iter()
            .map(|(name, g)| {
                let cluster = self
                    .aggregate
                    .service_cluster
                    .get(name)
                    .map_or("", String::as_str);
                (svc_labels(name, cluster), g)
            })
            .collect();
        groups(&mut enc, "berth_service", "service", &rows)?;
        let rows: Vec<(Labels, &Group)> = self
            .aggregate
            .by_family
            .iter()
            .map(|(f, g)| (vec![("family", f.clone())], g))
            .collect();
        groups(
            &mut enc,
            "berth_taskdefinition",
            "task definition family",
            &rows,
        )?;
        let rows: Vec<(Labels, &Group)> = self
            .aggregate
            .by_cluster
            .iter()
            .map(|(cl, g)| (vec![("cluster", cl.clone())], g))
            .collect();
        groups(&mut enc, "berth_cluster", "cluster", &rows)?;

        for (metric, help, f) in [
            (
                "berth_service_desired_tasks",
                "desiredCount of each service",
                (|s: &ServiceCounts| s.desired) as fn(&ServiceCounts) -> u32,
            ),
            (
                "berth_service_running_tasks",
                "RUNNING tasks of each service",
                |s: &ServiceCounts| s.running,
            ),
            (
                "berth_service_pending_tasks",
                "PENDING tasks of each service",
                |s: &ServiceCounts| s.pending,
            ),
        ] {
            let rows: Vec<(Labels, f64)> = self
                .services
                .iter()
                .map(|s| (svc_labels(&s.name, &s.cluster), f(s) as f64))
                .collect();
            gauges(&mut enc, metric, help, &rows)?;
        }

        let inst =
            |i: &InstanceInfo| vec![("instance", i.id.clone()), ("cluster", i.cluster.clone())];
        for (metric, help, f) in [
            (
                "berth_instance_agent_connected",
                "1 while the instance's agent holds its lease",
                (|i: &InstanceInfo| i.connected as u32) as fn(&InstanceInfo) -> u32,
            ),
            (
                "berth_instance_cpu_registered_units",
                "CPU units the instance offers",
                |i: &InstanceInfo| i.cpu_registered,
            ),
            (
                "berth_instance_cpu_remaining_units",
                "CPU units not reserved by tasks",
                |i: &InstanceInfo| i.cpu_remaining,
            ),
            (
                "berth_instance_memory_registered_mib",
                "Memory the instance offers, MiB",
                |i: &InstanceInfo| i.memory_registered,
            ),
            (
                "berth_instance_memory_remaining_mib",
                "Memory not reserved by tasks, MiB",
                |i: &InstanceInfo| i.memory_remaining,
            ),
            (
                "berth_instance_running_tasks",
                "Tasks running on the instance",
                |i: &InstanceInfo| i.running_tasks,
            ),
        ] {
            let rows: Vec<(Labels, f64)> = self
                .instances
                .iter()
                .map(|i| (inst(i), f(i) as f64))
                .collect();
            gauges(&mut enc, metric, help, &rows)?;
        }
        let rows: Vec<(Labels, f64)> = self
            .tasks_by_state
            .iter()
            .map(|(st, n)| (vec![("last_status", st.clone())], *n as f64))
            .collect();
        gauges(&mut enc, "berth_tasks", "Tasks by lastStatus", &rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openmetrics_with_controller_histograms() {
        let h = Histogram::new([0.01, 0.1, 1.0]);
        h.observe(0.05);
        let mut agg = Aggregate::default();
        agg.by_service.insert(
            "web".into(),
            Group {
                tasks: 1,
                cpu_cores: 0.5,
                cpu_reserved_units: 512.0,
                mem_bytes: 1.0,
                mem_reserved_bytes: 4.0,
            },
        );
        agg.service_cluster.insert("web".into(), "default".into());
        let text = render(Snapshot {
            leadership: None,
            controllers: vec![ControllerStatus {
                name: "service".into(),
                queue_depth: 2,
                in_flight: 0,
                reconciles_total: 7,
                errors_total: 1,
                last_reconcile_at: None,
                last_reconcile_ms: 0.0,
                last_error: None,
                last_error_at: None,
            }],
            durations: vec![("service".into(), h)],
            aggregate: agg,
            ..Default::default()
        });
        assert!(
            text.contains("berth_controller_reconciles_total{controller=\"service\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("berth_controller_queue_depth{controller=\"service\"} 2.0"),
            "{text}"
        );
        assert!(text.contains("berth_controller_reconcile_duration_seconds_bucket{le=\"0.1\",controller=\"service\"} 1"), "{text}");
        assert!(
            text.contains(
                "berth_service_cpu_utilization_percent{service=\"web\",cluster=\"default\"} 100.0"
            ),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"));
        // One TYPE line per family.
        assert_eq!(
            text.matches("# TYPE berth_controller_reconcile_duration_seconds ")
                .count(),
            1
        );
    }
}
