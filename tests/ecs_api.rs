//! ECS's JSON 1.1 protocol (issue 12) with the real clients against a real `berth up` and
//! Docker: boto3 drives task definitions, a service of real containers, scaling, tasks, errors
//! and pagination (tests/ecs/flow.py); awscli lists clusters with an identity's keys.

mod common;

use std::process::Command;

use common::berth::*;
use common::manifests::IMAGE;
use serde_json::Value;

const READER: &str = r#"apiVersion: berth.dev/v1
kind: Role
metadata: {name: reader}
spec:
  statements:
    - {effect: Allow, actions: ["berth:Describe*", "berth:List*"], resources: ["*"]}
"#;

fn keys(b: &Berth, name: &str, role: &str) -> (String, String) {
    let created: Value = serde_json::from_str(&b.cli_ok(&[
        "auth", "identity", "create", name, "--role", role, "-o", "json",
    ]))
    .unwrap();
    (
        created["accessKeyId"].as_str().unwrap().to_string(),
        created["secretAccessKey"].as_str().unwrap().to_string(),
    )
}

#[test]
fn boto3_and_awscli_speak_ecs_to_berth() {
    let b = Berth::up(None);
    let (ak, sk) = keys(&b, "ecs-user", "admin");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ecs/flow.py");
    let out = Command::new("python3")
        .arg(script)
        .env("BERTH_ENDPOINT", b.endpoint())
        .env("AK", &ak)
        .env("SK", &sk)
        .env("IMAGE", IMAGE)
        .env("FAMILY", unique("ecsfam"))
        .env("SERVICE", unique("ecssvc"))
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("OK"),
        "boto3 flow failed:\n{stdout}\n{stderr}\n--- berth log (tail) ---\n{}",
        b.log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );

    // awscli, with the keys in the environment.
    let out = Command::new("aws")
        .args(["--endpoint-url", &b.endpoint(), "ecs", "list-clusters"])
        .env("AWS_ACCESS_KEY_ID", &ak)
        .env("AWS_SECRET_ACCESS_KEY", &sk)
        .env("AWS_DEFAULT_REGION", "eu-west-1")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("run aws");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "aws ecs list-clusters: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        v["clusterArns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "arn:aws:ecs:eu-west-1:000000000000:cluster/default"),
        "{v}"
    );

    // A reader's keys: ECS reads allowed (berth:List*), a delete refused in ECS's shape.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("roles.yaml"), READER).unwrap();
    b.apply(dir.path());
    let (rak, rsk) = keys(&b, "ecs-reader", "reader");
    let aws = |args: &[&str]| {
        Command::new("aws")
            .args(["--endpoint-url", &b.endpoint(), "ecs"])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &rak)
            .env("AWS_SECRET_ACCESS_KEY", &rsk)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("run aws")
    };
    let o = aws(&["list-services", "--cluster", "default"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = aws(&["delete-service", "--cluster", "default", "--service", "web"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("AccessDeniedException"),
        "{err}"
    );
    assert!(err.contains("berth:DeleteService"), "{err}");

    // The ECS calls are in the audit trail as the berth actions they map onto.
    let audit = b.cli_ok(&["audit", "--action", "berth:Apply", "-o", "json"]);
    assert!(audit.contains("service/"), "{audit}");
}
