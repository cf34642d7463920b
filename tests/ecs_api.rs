//! ECS's JSON 1.1 protocol (issue 12) with the real clients against a real `berth up` and
//! Docker: boto3 drives task definitions, a service of real containers, scaling, tasks, errors
//! and pagination (tests/ecs/flow.py); tags, attributes and memberOf, settings, service
//! deployments, DeleteTaskDefinitions and the waiters (tests/ecs/extras.py); authorization as
//! `ecs:<Operation>` on ECS ARNs (tests/ecs/authz.py). awscli lists clusters, tags one and
//! prints account settings as a table with an identity's keys. StartTask and custom
//! schedulers: tests/ecs_scheduler.rs.

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

    // awscli: tags and account settings (the table output of a paginated list).
    let aws_admin = |args: &[&str]| {
        let o = Command::new("aws")
            .args(["--endpoint-url", &b.endpoint(), "ecs"])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &ak)
            .env("AWS_SECRET_ACCESS_KEY", &sk)
            .env("AWS_DEFAULT_REGION", "eu-west-1")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("run aws");
        assert!(
            o.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let carn = "arn:aws:ecs:eu-west-1:000000000000:cluster/default";
    aws_admin(&[
        "tag-resource",
        "--resource-arn",
        carn,
        "--tags",
        "key=env,value=ci",
    ]);
    let tags = aws_admin(&["list-tags-for-resource", "--resource-arn", carn]);
    assert!(
        tags.contains("\"env\"") && tags.contains("\"ci\""),
        "{tags}"
    );
    let table = aws_admin(&[
        "list-account-settings",
        "--effective-settings",
        "--max-items",
        "3",
        "--output",
        "table",
    ]);
    assert!(table.contains("serviceLongArnFormat"), "{table}");

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
    assert!(err.contains("ecs:DeleteService"), "{err}");

    // The ECS calls are in the audit trail as the ECS actions they are, on ECS ARNs.
    let audit = b.cli_ok(&["audit", "--action", "ecs:CreateService", "-o", "json"]);
    assert!(audit.contains(":service/default/"), "{audit}");
}

fn run_script(b: &Berth, script: &str, env: &[(&str, &str)]) {
    let mut c = Command::new("python3");
    c.arg(format!("{}/tests/ecs/{script}", env!("CARGO_MANIFEST_DIR")))
        .env("BERTH_ENDPOINT", b.endpoint())
        .env("IMAGE", IMAGE);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK"),
        "{script} failed:\n{stdout}\n{}\n--- berth log (tail) ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(&b.log(), 40)
    );
}

/// Tags, attributes and memberOf, account and cluster settings, service deployments,
/// DeleteTaskDefinitions, the waiters, and an unimplemented operation (tests/ecs/extras.py).
#[test]
fn boto3_tags_attributes_settings_deployments_and_waiters() {
    let b = Berth::up(None);
    let (ak, sk) = keys(&b, "ecs-extras", "admin");
    let (fam, svc) = (unique("ecsx"), unique("ecsxsvc"));
    run_script(
        &b,
        "extras.py",
        &[
            ("AK", &ak),
            ("SK", &sk),
            ("IDENTITY", "ecs-extras"),
            ("FAMILY", &fam),
            ("SERVICE", &svc),
        ],
    );
    // Tags put through ECS are on berth's own objects.
    let c = b.get_json(&["clusters", "default"]);
    assert_eq!(c["metadata"]["tags"]["team"], "a", "{c}");
}

/// `ecs:<Operation>` on ECS ARNs decides: a Deny of ecs:DeleteService on one service's ARN,
/// and a reader of ecs:Describe*/ecs:List*; the audit trail names the ECS action and ARN.
#[test]
fn ecs_calls_are_authorized_as_ecs_actions_on_arns() {
    let b = Berth::up(None);
    let (sa, sb) = (unique("keep"), unique("gone"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("roles.yaml"),
        format!(
            "apiVersion: berth.dev/v1\nkind: Role\nmetadata: {{name: ecs-no-delete}}\nspec:\n  statements:\n\
             \x20   - {{effect: Allow, actions: [\"ecs:*\"], resources: [\"*\"]}}\n\
             \x20   - {{effect: Deny, actions: [\"ecs:DeleteService\"], resources: [\"arn:aws:ecs:*:*:service/default/{sa}\"]}}\n\
             ---\napiVersion: berth.dev/v1\nkind: Role\nmetadata: {{name: ecs-reader}}\nspec:\n  statements:\n\
             \x20   - {{effect: Allow, actions: [\"ecs:Describe*\", \"ecs:List*\"], resources: [\"*\"]}}\n"
        ),
    )
    .unwrap();
    b.apply(dir.path());
    let (ak, sk) = keys(&b, "ecs-admin", "admin");
    let (lak, lsk) = keys(&b, "ecs-limited", "ecs-no-delete");
    let (rak, rsk) = keys(&b, "ecs-read", "ecs-reader");
    run_script(
        &b,
        "authz.py",
        &[
            ("AK", &ak),
            ("SK", &sk),
            ("LAK", &lak),
            ("LSK", &lsk),
            ("RAK", &rak),
            ("RSK", &rsk),
            ("FAMILY", &unique("ecsz")),
            ("SA", &sa),
            ("SB", &sb),
        ],
    );
    // Objects made through ECS are berth's: the kept service shows in `berth get`.
    assert_eq!(name_of(&b.get_json(&["services", &sa])), sa);
    let audit: Value =
        serde_json::from_str(&b.cli_ok(&["audit", "--action", "ecs:DeleteService", "-o", "json"]))
            .unwrap();
    let records = audit.as_array().expect("audit records");
    let on = |svc: &str, decision: &str| {
        records.iter().any(|r| {
            r["decision"] == decision
                && r["identity"] == "ecs-limited"
                && r.to_string().contains(&format!(":service/default/{svc}"))
        })
    };
    assert!(on(&sa, "denied") && on(&sb, "allowed"), "{audit:#}");
}
