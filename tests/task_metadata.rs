//! Task metadata v4 and task role credentials at 169.254.170.2 (issue 12, item 4), against a
//! real `berth up` and Docker, in bridge and awsvpc network modes. Inside a task container:
//! `$ECS_CONTAINER_METADATA_URI_V4` (and `/task`, `/taskWithTags`, `/stats`, `/task/stats`)
//! answers the task's own metadata with ECS's field names; the credentials at
//! `169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` sign, with boto3, an ECS call the
//! task role allows (ListClusters) and get AccessDeniedException for one it does not
//! (DeleteService); another task using the first one's metadata or credentials path is
//! refused (403), though it reaches its own.

mod common;

use std::process::Command;
use std::time::Duration;

use common::berth::*;
use common::manifests::*;
use serde_json::Value;

const ROLE: &str = r#"apiVersion: berth.dev/v1
kind: Role
metadata: {name: ecs-lister}
spec:
  statements:
    - {effect: Allow, actions: ["ecs:List*"], resources: ["*"]}
"#;

/// stdout and stderr of a shell script in `container` (busybox wget crashes on an HTTP
/// error, so callers check the output, not the exit code).
fn sh(container: &str, script: &str) -> (String, String) {
    let o = docker_sh(container, script);
    (stdout(&o), stderr(&o))
}

fn json_from(container: &str, script: &str) -> Value {
    let (out, err) = sh(container, script);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{script}: {e}: {out:?} {err:?}"))
}

const BOTO: &str = r#"
import os, boto3, botocore.exceptions
from botocore.config import Config
E = os.environ
c = boto3.client("ecs", endpoint_url=E["BERTH_ENDPOINT"], region_name="us-east-1",
                 aws_access_key_id=E["AK"], aws_secret_access_key=E["SK"],
                 aws_session_token=E["ST"], config=Config(retries={"max_attempts": 1}))
arns = c.list_clusters()["clusterArns"]
assert any(a.endswith(":cluster/default") for a in arns), arns
try:
    c.delete_service(cluster="default", service=E["SERVICE"])
    raise SystemExit("DeleteService was allowed")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "AccessDeniedException", e.response
print("OK")
"#;

fn check(network: Option<&str>) {
    let b = Berth::up(None);
    let fam = unique("meta");
    let mut td = task_definition(
        &fam,
        [container("app", &["sleep", "3600"])
            .cpu(32)
            .memory(16)
            .stop_timeout(1)],
    )
    .spec("taskRole: ecs-lister");
    if let Some(n) = network {
        td = td.spec(&format!("networkMode: {n}"));
    }
    let app = documents(&[td.to_string(), service(&fam, &fam, 2, &[])]);
    let dir = manifest_dir(&[("role.yaml", ROLE.to_string()), ("app.yaml", app)]);
    b.apply(dir.path());
    let tasks = wait_for("two running tasks", Duration::from_secs(90), || {
        let t = b.running_tasks(&fam);
        (t.len() == 2).then_some(t)
    });
    let ids = task_ids(&tasks);
    let (a, other) = (ids[0].clone(), ids[1].clone());
    let ca = b.container_of(&a, Some("app"));
    let cb = b.container_of(&other, Some("app"));

    // The environment SDKs look for.
    let (env, _) = sh(
        &ca,
        "echo $ECS_CONTAINER_METADATA_URI_V4; echo $AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    );
    let mut lines = env.lines();
    let meta_uri = lines.next().unwrap_or("").trim().to_string();
    let rel = lines.next().unwrap_or("").trim().to_string();
    let meta_id = meta_uri
        .strip_prefix("http://169.254.170.2/v4/")
        .unwrap_or_else(|| panic!("{meta_uri}"));
    assert_eq!(meta_id.len(), 32, "{meta_uri}");
    let cred_id = rel
        .strip_prefix("/v2/credentials/")
        .unwrap_or_else(|| panic!("{rel}"));
    assert_eq!(cred_id.len(), 32, "{rel}");
    assert!(
        !meta_uri.contains(&a) && !rel.contains(&a),
        "ids are opaque"
    );

    // The task's own metadata, with ECS's field names.
    let t = json_from(&ca, "wget -qO- \"$ECS_CONTAINER_METADATA_URI_V4/task\"");
    assert!(
        t["TaskARN"].as_str().is_some_and(
            |s| s.starts_with("arn:aws:ecs:") && s.ends_with(&format!(":task/default/{a}"))
        ),
        "{t}"
    );
    assert!(
        t["Cluster"]
            .as_str()
            .unwrap_or("")
            .ends_with(":cluster/default"),
        "{t}"
    );
    assert_eq!(t["Family"], fam.as_str(), "{t}");
    assert_eq!(t["Revision"], "1", "{t}");
    assert_eq!(t["DesiredStatus"], "RUNNING", "{t}");
    assert_eq!(t["KnownStatus"], "RUNNING", "{t}");
    assert_eq!(t["LaunchType"], "EC2", "{t}");
    assert!(t["Limits"]["Memory"].as_u64().is_some(), "{t}");
    let cs = t["Containers"].as_array().expect("Containers");
    assert_eq!(cs.len(), 1, "{t}");
    let c0 = &cs[0];
    assert_eq!(c0["Name"], "app", "{t}");
    assert_eq!(c0["DockerName"], ca.as_str(), "{t}");
    assert_eq!(c0["Image"], IMAGE, "{t}");
    assert_eq!(c0["KnownStatus"], "RUNNING", "{t}");
    assert_eq!(c0["Limits"]["Memory"], 16, "{t}");
    assert_eq!(c0["Labels"]["berth.task"], a.as_str(), "{t}");
    let mode = network.unwrap_or("bridge");
    assert_eq!(c0["Networks"][0]["NetworkMode"], mode, "{t}");
    let ip = c0["Networks"][0]["IPv4Addresses"][0].as_str().unwrap_or("");
    assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{t}");
    let (own_ip, _) = sh(&ca, "ip -4 addr");
    assert!(own_ip.contains(&format!("inet {ip}/")), "{own_ip} vs {t}");
    let docker_id = c0["DockerId"].as_str().unwrap_or("").to_string();
    assert_eq!(docker_id.len(), 64, "{t}");

    let c = json_from(&ca, "wget -qO- \"$ECS_CONTAINER_METADATA_URI_V4\"");
    assert_eq!(c["DockerId"], docker_id.as_str(), "{c}");
    assert_eq!(c["Name"], "app", "{c}");
    let tt = json_from(
        &ca,
        "wget -qO- \"$ECS_CONTAINER_METADATA_URI_V4/taskWithTags\"",
    );
    assert!(tt["TaskTags"].is_object(), "{tt}");
    assert!(tt["ContainerInstanceARN"].as_str().is_some(), "{tt}");
    let s = json_from(&ca, "wget -qO- \"$ECS_CONTAINER_METADATA_URI_V4/stats\"");
    assert!(
        s["memory_stats"].is_object() && s["cpu_stats"].is_object(),
        "{s}"
    );
    let ts = json_from(
        &ca,
        "wget -qO- \"$ECS_CONTAINER_METADATA_URI_V4/task/stats\"",
    );
    assert!(ts[&docker_id]["memory_stats"].is_object(), "{ts}");

    // The role's credentials where SDKs look, used from the host by boto3.
    let cr = json_from(
        &ca,
        "wget -qO- \"http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI\"",
    );
    let ak = cr["AccessKeyId"].as_str().unwrap_or_else(|| panic!("{cr}"));
    assert!(ak.starts_with("ASIA"), "{cr}");
    let out = Command::new("python3")
        .args(["-c", BOTO])
        .env("BERTH_ENDPOINT", b.endpoint())
        .env("AK", ak)
        .env("SK", cr["SecretAccessKey"].as_str().unwrap_or(""))
        .env("ST", cr["Token"].as_str().unwrap_or(""))
        .env("SERVICE", &fam)
        .output()
        .expect("run python3");
    assert!(
        out.status.success() && stdout(&out).contains("OK"),
        "boto3 with the task's credentials:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );

    // Another task reaches its own, and is refused the first task's paths.
    let own = json_from(&cb, "wget -qO- \"$ECS_CONTAINER_METADATA_URI_V4/task\"");
    assert!(
        own["TaskARN"].as_str().unwrap_or("").ends_with(&other),
        "{own}"
    );
    let (out, err) = sh(&cb, &format!("wget -qO- '{meta_uri}/task' 2>&1"));
    assert!(
        !out.contains("TaskARN") && out.contains("403"),
        "{out} {err}"
    );
    let (out, err) = sh(&cb, &format!("wget -qO- 'http://169.254.170.2{rel}' 2>&1"));
    assert!(
        !out.contains("SecretAccessKey") && out.contains("403"),
        "{out} {err}"
    );
    // A made-up id is unknown.
    let (out, _) = sh(
        &cb,
        "wget -qO- http://169.254.170.2/v4/00000000000000000000000000000000/task 2>&1",
    );
    assert!(out.contains("404"), "{out}");

    // Agents sharing the host share one jump to the chain, and route only their own tasks.
    let nat = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .expect("iptables");
    let nat = stdout(&nat);
    let jumps = nat
        .lines()
        .filter(|l| l.starts_with("-A PREROUTING") && l.contains("-j BERTH-TASK-META"))
        .count();
    assert_eq!(jumps, 1, "{nat}");
    let mine = nat
        .lines()
        .filter(|l| l.contains(&format!("berth-meta {} ", b.instance)))
        .count();
    assert!(mine >= 2, "one rule per task address: {nat}");
}

#[test]
fn task_metadata_and_credentials_at_169_254_170_2_in_bridge_mode() {
    check(None);
}

#[test]
fn task_metadata_and_credentials_at_169_254_170_2_in_awsvpc_mode() {
    check(Some("awsvpc"));
}
