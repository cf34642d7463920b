//! The task metadata v4 answers with ECS's field names (the ECS agent's `TaskResponse` and
//! `ContainerResponse`), from the store's task and definition and Docker's inspect.

use bollard::models::ContainerInspectResponse;
use serde_json::{json, Map, Value};

use super::super::docker as d;
use crate::model::{NetworkMode, Task, TaskDefinition};

/// berth's one account (as `api::ecs::arn`, which is a layer above the agent).
const ACCOUNT: &str = "000000000000";

fn arn(region: &str, rest: &str) -> String {
    format!("arn:aws:ecs:{region}:{ACCOUNT}:{rest}")
}

pub fn task_arn(region: &str, task: &Task) -> String {
    arn(
        region,
        &format!("task/{}/{}", task.spec.cluster, task.metadata.name),
    )
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> Value {
    t.map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

fn mode_name(m: NetworkMode) -> &'static str {
    match m {
        NetworkMode::Awsvpc => "awsvpc",
        NetworkMode::Host => "host",
        _ => "bridge",
    }
}

/// One container (`GET /v4/<id>`). `task_ips` are the task's addresses in awsvpc mode (the
/// pause container's), used when the container has none of its own.
pub fn container(
    region: &str,
    task: &Task,
    td: Option<&TaskDefinition>,
    i: &ContainerInspectResponse,
    task_ips: &[String],
) -> Value {
    let o = d::observe(i);
    let labels = i
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    let name = labels.get(d::LABEL_CONTAINER).cloned().unwrap_or_default();
    let def = td.and_then(|td| {
        td.spec
            .container_definitions
            .iter()
            .find(|c| c.name == name)
    });
    let known = match o.state.as_str() {
        "running" | "restarting" | "paused" => "RUNNING",
        "created" => "CREATED",
        "exited" | "dead" | "removing" => "STOPPED",
        _ => "PENDING",
    };
    let mode = td
        .map(|t| t.spec.network_mode())
        .unwrap_or(NetworkMode::Bridge);
    let mut ips = crate::agent::docker::addresses(i);
    if ips.is_empty() {
        ips = task_ips.to_vec();
    }
    let mut v = Map::new();
    v.insert("DockerId".into(), json!(o.id));
    v.insert("Name".into(), json!(name));
    v.insert(
        "DockerName".into(),
        json!(i.name.as_deref().unwrap_or("").trim_start_matches('/')),
    );
    v.insert(
        "Image".into(),
        json!(i.config.as_ref().and_then(|c| c.image.clone())),
    );
    v.insert("ImageID".into(), json!(i.image));
    v.insert("Labels".into(), json!(labels));
    v.insert("DesiredStatus".into(), json!(task.status.desired_status));
    v.insert("KnownStatus".into(), json!(known));
    if let Some(code) = o.exit_code {
        v.insert("ExitCode".into(), json!(code));
    }
    v.insert(
        "Limits".into(),
        json!({"CPU": def.map(|c| c.cpu).unwrap_or(0), "Memory": def.and_then(|c| c.memory).unwrap_or(0)}),
    );
    v.insert("CreatedAt".into(), time(o.created));
    v.insert("StartedAt".into(), time(o.started_at));
    if o.finished_at.is_some() && known == "STOPPED" {
        v.insert("FinishedAt".into(), time(o.finished_at));
    }
    v.insert("Type".into(), json!("NORMAL"));
    v.insert(
        "ContainerARN".into(),
        json!(arn(
            region,
            &format!(
                "container/{}/{}/{name}",
                task.spec.cluster, task.metadata.name
            )
        )),
    );
    v.insert(
        "Networks".into(),
        json!([{"NetworkMode": mode_name(mode), "IPv4Addresses": ips}]),
    );
    if !o.bindings.is_empty() {
        let ports: Vec<Value> = o
            .bindings
            .iter()
            .map(|b| {
                json!({"ContainerPort": b.container_port, "Protocol": b.protocol,
                       "HostPort": b.host_port, "HostIp": b.bind_ip})
            })
            .collect();
        v.insert("Ports".into(), json!(ports));
    }
    if def.is_some_and(|c| c.health_check.is_some()) {
        v.insert("Health".into(), json!({"status": o.health}));
    }
    Value::Object(v)
}

/// The task (`GET /v4/<id>/task`; with `tags`, `/taskWithTags`).
pub fn task(
    region: &str,
    task: &Task,
    td: Option<&TaskDefinition>,
    containers: Vec<Value>,
    tags: bool,
) -> Value {
    let (family, revision) = task
        .spec
        .task_definition
        .rsplit_once(':')
        .unwrap_or((task.spec.task_definition.as_str(), ""));
    let mut v = Map::new();
    v.insert(
        "Cluster".into(),
        json!(arn(region, &format!("cluster/{}", task.spec.cluster))),
    );
    v.insert("TaskARN".into(), json!(task_arn(region, task)));
    v.insert("Family".into(), json!(family));
    v.insert("Revision".into(), json!(revision));
    v.insert("DesiredStatus".into(), json!(task.status.desired_status));
    v.insert("KnownStatus".into(), json!(task.status.last_status));
    if let Some(s) = task.service_name() {
        v.insert("ServiceName".into(), json!(s));
    }
    let cpu = td.and_then(|t| t.spec.cpu).unwrap_or(task.spec.cpu);
    let mem = td.and_then(|t| t.spec.memory).unwrap_or(task.spec.memory);
    // ECS writes task-level CPU in vCPUs.
    v.insert(
        "Limits".into(),
        json!({"CPU": f64::from(cpu) / 1024.0, "Memory": mem}),
    );
    v.insert("PullStartedAt".into(), time(task.status.created_at));
    v.insert("PullStoppedAt".into(), time(task.status.started_at));
    if task.status.stopped_at.is_some() {
        v.insert("ExecutionStoppedAt".into(), time(task.status.stopped_at));
    }
    v.insert("LaunchType".into(), json!("EC2"));
    v.insert("Containers".into(), json!(containers));
    if tags {
        if let Some(ci) = &task.status.container_instance {
            v.insert(
                "ContainerInstanceARN".into(),
                json!(arn(
                    region,
                    &format!("container-instance/{}/{ci}", task.spec.cluster)
                )),
            );
        }
        v.insert("TaskTags".into(), json!(task.metadata.tags));
        v.insert("ContainerInstanceTags".into(), json!({}));
    }
    Value::Object(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, TaskSpec, TaskState};

    #[test]
    fn task_fields_are_ecs_names_and_long_arns() {
        let mut t: Task = Task::new(
            Kind::Task,
            "abc123",
            TaskSpec {
                task_definition: "web:7".into(),
                cluster: "prod".into(),
                group: "service:front".into(),
                started_by: String::new(),
                deployment_id: String::new(),
                placement_strategy: vec![],
                placement_constraints: vec![],
                cpu: 512,
                memory: 256,
            },
        );
        t.status.last_status = TaskState::Running;
        t.status.container_instance = Some("i-1".into());
        let v = task("eu-west-1", &t, None, vec![], true);
        assert_eq!(
            v["TaskARN"],
            "arn:aws:ecs:eu-west-1:000000000000:task/prod/abc123"
        );
        assert_eq!(
            v["Cluster"],
            "arn:aws:ecs:eu-west-1:000000000000:cluster/prod"
        );
        assert_eq!(v["Family"], "web");
        assert_eq!(v["Revision"], "7");
        assert_eq!(v["KnownStatus"], "RUNNING");
        assert_eq!(v["ServiceName"], "front");
        assert_eq!(v["Limits"]["CPU"], 0.5);
        assert_eq!(v["Limits"]["Memory"], 256);
        assert_eq!(v["LaunchType"], "EC2");
        assert!(v["ContainerInstanceARN"]
            .as_str()
            .is_some_and(|a| a.ends_with(":container-instance/prod/i-1")));
        let plain = task("eu-west-1", &t, None, vec![], false);
        assert!(plain.get("TaskTags").is_none());
    }
}
