//! Manifest text for tests: task definitions and services written the way the examples in
//! manifests/ are (block style), built from a few parts so that each test says only what is
//! particular to it.
//!
//! ```ignore
//! let td = task_definition("web", [container("httpd", HTTPD).cpu(64).memory(32).port(8080)]);
//! let text = format!("{td}---\n{}", service("web", "web", 2, &[]));
//! ```
#![allow(dead_code)]

use std::fmt;
use std::fs;
use std::path::Path;

use berth::manifest::ManifestError;

/// The test image (scripts/build-image.sh): busybox with `/www/index.html`.
pub const IMAGE: &str = "local/busybox:1";

/// busybox httpd serving /www on 8080 in the foreground.
pub const HTTPD: &[&str] = &["httpd", "-f", "-p", "8080", "-h", "/www"];

/// One container definition; fields are written in the order they are added.
#[derive(Clone, Debug)]
pub struct Container {
    name: String,
    lines: Vec<String>,
}

/// A container `name` of [`IMAGE`] running `command`.
pub fn container(name: &str, command: &[&str]) -> Container {
    Container {
        name: name.to_string(),
        lines: vec![
            format!("image: {IMAGE}"),
            format!("command: {}", list(command)),
        ],
    }
}

/// A container `name` of `image` (quoted as given, so that it may be empty or blank) and
/// nothing else.
pub fn container_of_image(name: &str, image: &str) -> Container {
    Container {
        name: name.to_string(),
        lines: vec![format!(
            "image: {}",
            serde_json::to_string(image).expect("strings serialize")
        )],
    }
}

/// A YAML flow list of quoted strings: `["a", "b"]`.
fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| serde_json::to_string(s).expect("strings serialize"))
        .collect();
    format!("[{}]", quoted.join(", "))
}

impl Container {
    /// Any other field, as one line of YAML (e.g. `essential: false`).
    pub fn with(mut self, line: &str) -> Container {
        self.lines.push(line.to_string());
        self
    }

    pub fn cpu(self, units: u32) -> Container {
        self.with(&format!("cpu: {units}"))
    }

    pub fn memory(self, mib: u32) -> Container {
        self.with(&format!("memory: {mib}"))
    }

    /// `portMappings: [{containerPort: port}]`.
    pub fn port(self, port: u16) -> Container {
        self.with(&format!("portMappings: [{{containerPort: {port}}}]"))
    }

    /// `environment: [{name: N, value: "V"}, …]`.
    pub fn env(self, vars: &[(&str, &str)]) -> Container {
        let vars: Vec<String> = vars
            .iter()
            .map(|(n, v)| format!("{{name: {n}, value: \"{v}\"}}"))
            .collect();
        self.with(&format!("environment: [{}]", vars.join(", ")))
    }

    pub fn stop_timeout(self, seconds: u32) -> Container {
        self.with(&format!("stopTimeout: {seconds}"))
    }
}

/// A TaskDefinition document; [`fmt::Display`] writes it.
#[derive(Clone, Debug)]
pub struct TaskDefinition {
    name: String,
    spec: Vec<String>,
    containers: Vec<Container>,
}

pub fn task_definition(
    name: &str,
    containers: impl IntoIterator<Item = Container>,
) -> TaskDefinition {
    TaskDefinition {
        name: name.to_string(),
        spec: vec![],
        containers: containers.into_iter().collect(),
    }
}

impl TaskDefinition {
    /// A line of the spec before `containerDefinitions` (e.g. `networkMode: awsvpc`); may hold
    /// several lines, each indented by two spaces.
    pub fn spec(mut self, line: &str) -> TaskDefinition {
        self.spec.push(line.to_string());
        self
    }
}

impl fmt::Display for TaskDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "apiVersion: berth.dev/v1\nkind: TaskDefinition\nmetadata: {{name: {}}}\nspec:\n",
            self.name
        )?;
        for l in &self.spec {
            writeln!(f, "  {l}")?;
        }
        writeln!(f, "  containerDefinitions:")?;
        for c in &self.containers {
            writeln!(f, "    - name: {}", c.name)?;
            for l in &c.lines {
                writeln!(f, "      {l}")?;
            }
        }
        Ok(())
    }
}

/// A Service document of `replicas` tasks of `task_definition`; `extra` are further lines of
/// its spec (indented by two spaces).
pub fn service(name: &str, task_definition: &str, replicas: i64, extra: &[&str]) -> String {
    let mut s = format!(
        "apiVersion: berth.dev/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  taskDefinition: {task_definition}\n  desiredCount: {replicas}\n"
    );
    for l in extra {
        s.push_str(&format!("  {l}\n"));
    }
    s
}

/// Documents joined into one multi-document YAML text.
pub fn documents(docs: &[String]) -> String {
    docs.join("---\n")
}

/// A TaskDefinition + Service of busybox httpd replicas.
pub fn web_manifest(name: &str, replicas: u32, version: &str) -> String {
    let td = task_definition(
        name,
        [container("httpd", HTTPD)
            .cpu(64)
            .memory(32)
            .port(8080)
            .env(&[("VERSION", version)])
            .stop_timeout(2)],
    );
    documents(&[td.to_string(), service(name, name, replicas.into(), &[])])
}

/// A TaskDefinition of one container `app` of `image`, 64 MiB.
pub fn image_td(name: &str, image: &str) -> String {
    task_definition(name, [container_of_image("app", image).memory(64)]).to_string()
}

// ----- fixtures of the manifest and apply tests --------------------------------------------------

pub const GOOD_YAML: &str = r#"# a comment
apiVersion: berth.dev/v1
kind: Cluster
metadata: {name: prod}
---
---
apiVersion: berth.dev/v1
kind: TaskDefinition
metadata: {name: web, labels: {team: a}}
spec:
  networkMode: bridge
  taskRole: web-reader
  cpu: 256
  memory: 128
  containerDefinitions:
    - name: httpd
      image: local/busybox:1
      command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
      cpu: 128
      memory: 64
      essential: true
      portMappings: [{containerPort: 8080, hostPort: 0}]
      environment: [{name: MODE, value: prod}, {name: PORT, value: 8080}]
      healthCheck: {command: ["CMD-SHELL", "nc -z 127.0.0.1 8080"], interval: 5, timeout: 2, retries: 3}
---
apiVersion: berth.dev/v1
kind: Service
metadata: {name: web}
spec:
  cluster: prod
  taskDefinition: web
  desiredCount: 3
  deploymentConfiguration:
    minimumHealthyPercent: 100
    maximumPercent: 200
    deploymentCircuitBreaker: {enable: true, rollback: true}
  placementStrategy: [{type: spread, field: instanceId}]
  loadBalancers: [{targetGroup: web, containerName: httpd, containerPort: 8080}]
---
apiVersion: berth.dev/v1
kind: TargetGroup
metadata: {name: web}
spec: {healthCheck: {path: /}}
"#;

/// What `aws ecs describe-task-definition --query taskDefinition` prints, more or less.
pub const ECS_JSON: &str = r#"{
  "taskDefinitionArn": "arn:aws:ecs:eu-west-1:123456789012:task-definition/api:7",
  "family": "api",
  "taskRoleArn": "arn:aws:iam::123456789012:role/api-reader",
  "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
  "networkMode": "bridge",
  "revision": 7,
  "status": "ACTIVE",
  "cpu": "256",
  "memory": "512",
  "volumes": [],
  "placementConstraints": [],
  "requiresAttributes": [{"name": "com.amazonaws.ecs.capability.task-iam-role"}],
  "compatibilities": ["EC2"],
  "requiresCompatibilities": ["EC2"],
  "registeredAt": "2024-01-01T00:00:00.000Z",
  "registeredBy": "arn:aws:iam::123456789012:user/me",
  "containerDefinitions": [
    {
      "name": "api",
      "image": "local/busybox:1",
      "cpu": 128,
      "memory": 256,
      "essential": true,
      "portMappings": [{"containerPort": 80, "hostPort": 0, "protocol": "tcp"}],
      "environment": [],
      "mountPoints": [],
      "volumesFrom": [],
      "systemControls": [],
      "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/api"}}
    }
  ]
}"#;

pub fn show(errors: &[ManifestError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The single error (or the first whose field matches) — with file, document and field.
pub fn find<'a>(errors: &'a [ManifestError], field: &str) -> &'a ManifestError {
    errors
        .iter()
        .find(|e| e.field.as_deref() == Some(field))
        .unwrap_or_else(|| panic!("no error for field {field}:\n{}", show(errors)))
}

/// Write a file under `dir` (creating its folders).
pub fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

/// Write files into a fresh temp dir: (relative path, content).
pub fn manifest_dir(files: &[(&str, String)]) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("berth-manifests-")
        .tempdir()
        .unwrap();
    for (p, text) in files {
        write(d.path(), p, text);
    }
    d
}
