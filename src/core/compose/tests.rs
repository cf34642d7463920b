//! Conversion tests: what each compose key becomes, what is reported (with its line), and
//! what is refused.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::*;

fn conv(text: &str) -> Conversion {
    convert_text(
        text,
        "compose.yaml",
        Path::new("/srv/app"),
        "app",
        &HashMap::new(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    convert_text(
        text,
        "compose.yaml",
        Path::new("/srv/app"),
        "app",
        &HashMap::new(),
    )
    .expect_err("an error")
    .to_string()
}

fn container(c: &Conversion, unit: &str) -> Value {
    let u = c.units.iter().find(|u| u.compose_name == unit).unwrap();
    u.task_definition["spec"]["containerDefinitions"][0].clone()
}

fn warnings(c: &Conversion) -> Vec<String> {
    c.findings.iter().map(ToString::to_string).collect()
}

#[test]
fn a_service_becomes_a_task_definition_and_a_service_that_berth_parses() {
    let c = conv(
        "services:\n  web:\n    image: local/busybox:1\n    command: httpd -f -p 8080 -h /www\n    ports: [\"8080\", \"80:8081\"]\n    deploy: {replicas: 3}\n  worker:\n    image: local/busybox:1\n    command: [sleep, \"3600\"]\n    depends_on: [web]\n",
    );
    assert_eq!(c.units.len(), 2);
    let web = &c.units[0];
    assert_eq!(web.name, "app-web");
    assert_eq!(web.wave, 0);
    assert_eq!(c.units[1].name, "app-worker");
    assert_eq!(c.units[1].wave, 1);
    let svc = web.service.as_ref().unwrap();
    assert_eq!(svc["spec"]["desiredCount"], 3);
    assert_eq!(svc["spec"]["taskDefinition"], "app-web");
    let ct = container(&c, "web");
    assert_eq!(
        ct["command"],
        serde_json::json!(["httpd", "-f", "-p", "8080", "-h", "/www"])
    );
    assert_eq!(
        ct["portMappings"][0],
        serde_json::json!({"containerPort": 8080})
    );
    assert_eq!(
        ct["portMappings"][1],
        serde_json::json!({"containerPort": 8081, "hostPort": 80})
    );
    assert_eq!(ct["memoryReservation"], 128);
    assert_eq!(
        c.units[1].service.as_ref().unwrap()["metadata"]["annotations"]
            [convert::ANNOTATION_DEPENDS_ON],
        "app-web:service_started"
    );
    // berth's own parser and validation accept the text.
    let text = Conversion::yaml(&c.documents());
    let docs = crate::manifest::parse_str(&text, "converted.yaml")
        .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    assert_eq!(docs.len(), 4);
    assert!(
        crate::manifest::validate(&docs).is_empty(),
        "{:?}",
        crate::manifest::validate(&docs)
    );
    assert!(c.findings.is_empty(), "{:?}", warnings(&c));
}

#[test]
fn unsupported_keys_are_reported_with_their_lines() {
    let c = conv(
        "version: \"3.8\"\nservices:\n  web:\n    image: x\n    build:\n      context: .\n    container_name: w\n    ulimits: {nofile: 10}\n    x-other: ignored\n    deploy:\n      placement: {constraints: [node.role==manager]}\nnetworks:\n  front: {}\nx-anchors: {a: 1}\n",
    );
    let w = warnings(&c);
    let has = |s: &str| w.iter().any(|x| x.starts_with(s));
    assert!(has("compose.yaml:1: version is obsolete"), "{w:?}");
    assert!(
        has("compose.yaml:5: services.web.build is not supported by berth (build images"),
        "{w:?}"
    );
    assert!(
        has("compose.yaml:7: services.web.container_name is not supported"),
        "{w:?}"
    );
    assert!(
        has("compose.yaml:8: services.web.ulimits is not supported"),
        "{w:?}"
    );
    assert!(
        has("compose.yaml:11: services.web.deploy.placement is not supported"),
        "{w:?}"
    );
    assert!(has("compose.yaml:12: networks is not supported"), "{w:?}");
    assert_eq!(w.len(), 6, "{w:?}");
}

#[test]
fn bad_input_is_an_error_with_file_and_line() {
    assert!(err("services:\n  web: [\n").starts_with("compose.yaml:"));
    let e = err("services:\n  web:\n    image: x\n    depends_on: [db]\n");
    assert!(
        e.contains("compose.yaml:4:") && e.contains("`db`, which is not a service"),
        "{e}"
    );
    let e = err("services:\n  web:\n    image: x\n    ports:\n      - \"80:99999\"\n");
    assert!(
        e.contains("compose.yaml:5:") && e.contains("bad port"),
        "{e}"
    );
    let e = err("services:\n  web:\n    image: x\n    healthcheck:\n      test: [CMD, true]\n      interval: 10 seconds\n");
    assert!(
        e.contains("compose.yaml:6:") && e.contains("invalid duration"),
        "{e}"
    );
    let e = err("services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [a]}\n");
    assert!(e.contains("cycle"), "{e}");
    let e = err("services:\n  web:\n    build: .\n");
    assert!(
        e.contains("compose.yaml:2:") && e.contains("no `image`"),
        "{e}"
    );
    let e = err("services:\n  web: {image: x, volumes: [\"data:/d\"]}\n");
    assert!(e.contains("volume `data`"), "{e}");
    let e = err("services:\n  web: {image: x, mem_limit: lots}\n");
    assert!(e.contains("invalid size"), "{e}");
    assert!(err("nothing: here\n").contains("needs `services:`"));
    let e = err("services:\n  web:\n    image: x\n    x-berth: {clustr: a}\n");
    assert!(e.contains("compose.yaml:4:") && e.contains("clustr"), "{e}");
}

#[test]
fn environment_commands_and_resources() {
    let c = conv(
        "services:\n  a:\n    image: x\n    entrypoint: sh -c\n    command: [\"echo $$HOME\"]\n    environment: [A=1, \"B=two words\"]\n    mem_limit: 1g\n    mem_reservation: 256m\n    cpu_shares: 256\n    cpus: 2\n    user: \"1000:1000\"\n    working_dir: /w\n    labels: {com.example.x: y}\n    stop_grace_period: 1m30s\n    cap_add: [NET_ADMIN]\n    cap_drop: [all]\n    init: true\n    read_only: true\n  b:\n    image: x\n    environment: {C: 3, D: true}\n    deploy:\n      mode: global\n      resources:\n        limits: {memory: 64M}\n        reservations: {cpus: \"0.25\", memory: 16M}\n",
    );
    let a = container(&c, "a");
    assert_eq!(a["entryPoint"], serde_json::json!(["sh", "-c"]));
    assert_eq!(a["command"], serde_json::json!(["echo $HOME"]));
    assert_eq!(
        a["environment"][1],
        serde_json::json!({"name": "B", "value": "two words"})
    );
    assert_eq!(a["memory"], 1024);
    assert_eq!(a["memoryReservation"], 256);
    assert_eq!(a["cpu"], 256);
    assert_eq!(a["user"], "1000:1000");
    assert_eq!(a["workingDirectory"], "/w");
    assert_eq!(a["dockerLabels"]["com.example.x"], "y");
    assert_eq!(a["stopTimeout"], 90);
    assert_eq!(
        a["linuxParameters"]["capabilities"],
        serde_json::json!({"add": ["NET_ADMIN"], "drop": ["ALL"]})
    );
    assert_eq!(a["linuxParameters"]["initProcessEnabled"], true);
    assert_eq!(a["readonlyRootFilesystem"], true);
    // cpu_shares wins; the cpus cap is reported as not enforced.
    assert!(
        warnings(&c)
            .iter()
            .any(|w| w.contains("services.a.cpus is a CPU cap")),
        "{:?}",
        warnings(&c)
    );
    let b = container(&c, "b");
    assert_eq!(
        b["environment"],
        serde_json::json!([{"name": "C", "value": "3"}, {"name": "D", "value": "true"}])
    );
    assert_eq!(b["memory"], 64);
    assert_eq!(b["memoryReservation"], 16);
    assert_eq!(b["cpu"], 256);
    let svc = c.units[1].service.as_ref().unwrap();
    assert_eq!(svc["spec"]["schedulingStrategy"], "DAEMON");
    assert!(svc["spec"].get("desiredCount").is_none());
}

#[test]
fn healthchecks_restart_ports_and_network() {
    let c = conv(
        "services:\n  a:\n    image: x\n    healthcheck: {test: \"wget -q -O- localhost\", interval: 5s, timeout: 2s, retries: 4, start_period: 1500ms}\n    restart: always\n    network_mode: host\n    ports:\n      - {target: 8080, published: 80, protocol: udp, name: web}\n      - \"9000-9001:9000-9001\"\n  b:\n    image: x\n    healthcheck: {test: [NONE]}\n    restart: on-failure\n  c:\n    image: x\n    healthcheck: {disable: true}\n    restart: \"no\"\n",
    );
    let a = container(&c, "a");
    assert_eq!(
        a["healthCheck"],
        serde_json::json!({"command": ["CMD-SHELL", "wget -q -O- localhost"], "interval": 5, "timeout": 2, "retries": 4, "startPeriod": 2})
    );
    assert_eq!(a["restartPolicy"], serde_json::json!({"enabled": true}));
    assert_eq!(c.units[0].task_definition["spec"]["networkMode"], "host");
    assert_eq!(
        a["portMappings"][0],
        serde_json::json!({"containerPort": 8080, "hostPort": 80, "protocol": "udp", "name": "web"})
    );
    assert_eq!(a["portMappings"].as_array().unwrap().len(), 3);
    let b = container(&c, "b");
    assert_eq!(b["healthCheck"], serde_json::json!({"command": ["NONE"]}));
    assert_eq!(
        b["restartPolicy"],
        serde_json::json!({"enabled": true, "ignoredExitCodes": [0]})
    );
    assert_eq!(
        container(&c, "c")["healthCheck"]["command"],
        serde_json::json!(["NONE"])
    );
    assert!(warnings(&c)
        .iter()
        .any(|w| w.contains("services.c.restart is `no`")));
}

#[test]
fn volumes_binds_tmpfs_and_secrets() {
    let mut vars = HashMap::new();
    vars.insert("PW".to_string(), "hunter2".to_string());
    let text = "services:\n  db:\n    image: x\n    volumes:\n      - data:/var/lib/db\n      - ./conf:/etc/db:ro\n      - type: bind\n        source: /srv/shared\n        target: /shared\n      - /anon\n    tmpfs: /run:size=64m\n    secrets: [pw, {source: api, target: API_KEY}]\nvolumes:\n  data:\n  ext: {external: true}\nsecrets:\n  pw: {environment: PW}\n  api: {external: true, name: shared-api}\n";
    let c = convert_text(text, "compose.yaml", Path::new("/srv/app"), "app", &vars).unwrap();
    let td = &c.units[0].task_definition["spec"];
    assert_eq!(
        td["volumes"],
        serde_json::json!([
            {"name": "app_data"},
            {"name": "bind-0", "host": {"sourcePath": "/srv/app/conf"}},
            {"name": "bind-1", "host": {"sourcePath": "/srv/shared"}},
        ])
    );
    let db = container(&c, "db");
    assert_eq!(
        db["mountPoints"][1],
        serde_json::json!({"sourceVolume": "bind-0", "containerPath": "/etc/db", "readOnly": true})
    );
    assert_eq!(
        db["linuxParameters"]["tmpfs"],
        serde_json::json!([{"containerPath": "/run", "size": 64}])
    );
    assert_eq!(
        db["secrets"],
        serde_json::json!([
            {"name": "pw", "valueFrom": "app-pw:value"},
            {"name": "API_KEY", "valueFrom": "shared-api:value"},
        ])
    );
    assert_eq!(
        c.secrets,
        vec![
            serde_json::json!({"apiVersion": "berth.dev/v1", "kind": "Secret",
            "metadata": {"name": "app-pw", "labels": {"com.docker.compose.project": "app"}},
            "spec": {"data": {"value": "hunter2"}}})
        ]
    );
    let w = warnings(&c);
    assert!(
        w.iter()
            .any(|w| w.starts_with("compose.yaml:10: services.db.volumes[3] is not supported")),
        "{w:?}"
    );
    assert!(w.iter().any(|w| w.contains("services.db.tmpfs")), "{w:?}");
    let e = err("services:\n  a: {image: x, secrets: [nope]}\n");
    assert!(e.contains("secret `nope`"), "{e}");
}

#[test]
fn run_once_dependencies_and_x_berth() {
    let c = conv(
        "services:\n  migrate: {image: x, command: \"true\"}\n  db:\n    image: x\n    healthcheck: {test: [CMD, pg_isready]}\n  api:\n    image: x\n    ports: [\"8080\"]\n    depends_on:\n      db: {condition: service_healthy}\n      migrate: {condition: service_completed_successfully}\n    x-berth:\n      cluster: prod\n      taskRole: api-reader\n      targetGroup: api\n      placementConstraints: [{type: distinctInstance}]\n      placementStrategy: [{type: spread, field: instanceId}]\n",
    );
    let migrate = c
        .units
        .iter()
        .find(|u| u.compose_name == "migrate")
        .unwrap();
    assert!(migrate.service.is_none());
    let api = c.units.iter().find(|u| u.compose_name == "api").unwrap();
    assert_eq!(api.wave, 1);
    assert_eq!(
        api.depends_on,
        vec![
            ("app-db".to_string(), Condition::Healthy),
            ("app-migrate".to_string(), Condition::CompletedSuccessfully)
        ]
    );
    let s = &api.service.as_ref().unwrap()["spec"];
    assert_eq!(s["cluster"], "prod");
    assert_eq!(
        s["loadBalancers"],
        serde_json::json!([{"targetGroup": "api", "containerName": "api", "containerPort": 8080}])
    );
    assert_eq!(
        s["placementConstraints"],
        serde_json::json!([{"type": "distinctInstance"}])
    );
    assert_eq!(
        s["placementStrategy"],
        serde_json::json!([{"type": "spread", "field": "instanceId"}])
    );
    assert_eq!(api.task_definition["spec"]["taskRole"], "api-reader");
    assert_eq!(c.units.last().unwrap().compose_name, "api");
}

#[test]
fn files_are_found_projects_named_and_variables_read_from_dot_env() {
    let dir = tempfile::tempdir().unwrap();
    let proj = dir.path().join("My_Shop.2");
    std::fs::create_dir(&proj).unwrap();
    std::fs::write(proj.join("docker-compose.yml"), "services:\n  web:\n    image: \"busybox:${TAG}\"\n    environment: [\"MODE=${MODE:-dev}\", \"WHO=${WHO}\"]\n    env_file: web.env\n").unwrap();
    std::fs::write(proj.join(".env"), "TAG=from-dotenv\nMODE=staging\n").unwrap();
    std::fs::write(proj.join("web.env"), "MODE=overridden\nEXTRA=1\n").unwrap();
    let mut env = HashMap::new();
    env.insert("MODE".to_string(), "prod".to_string());
    let opts = Options {
        file: None,
        dir: proj.clone(),
        project: None,
        env,
    };
    let c = load(&opts).unwrap();
    assert_eq!(c.project, "my_shop2");
    assert_eq!(c.units[0].name, "my_shop2-web");
    let ct = &c.units[0].task_definition["spec"]["containerDefinitions"][0];
    assert_eq!(ct["image"], "busybox:from-dotenv");
    // env_file first, `environment` over it; the process environment over `.env`.
    assert_eq!(
        ct["environment"],
        serde_json::json!([{"name": "MODE", "value": "prod"}, {"name": "EXTRA", "value": "1"}, {"name": "WHO", "value": ""}])
    );
    assert!(
        warnings(&c)
            .iter()
            .any(|w| w.contains("variable WHO, which is not set")),
        "{:?}",
        warnings(&c)
    );
    let c = load(&Options {
        project: Some("Other".into()),
        ..opts.clone()
    })
    .unwrap();
    assert_eq!(c.project, "other");
    let mut env = opts.env.clone();
    env.insert("COMPOSE_PROJECT_NAME".into(), "FromEnv".into());
    let c = load(&Options {
        env,
        ..opts.clone()
    })
    .unwrap();
    assert_eq!(c.project, "fromenv");
    assert!(matches!(
        load(&Options {
            dir: dir.path().to_path_buf(),
            ..opts
        }),
        Err(ComposeError::NotFound { .. })
    ));
}

#[test]
fn merge_keys_and_extension_anchors() {
    let c = conv(
        "x-common: &common\n  image: local/busybox:1\n  environment: {TEAM: a}\n  stop_grace_period: 5s\nservices:\n  a:\n    <<: *common\n    command: [sleep, \"1\"]\n  b:\n    <<: *common\n    image: other:2\n",
    );
    let a = container(&c, "a");
    assert_eq!(a["image"], "local/busybox:1");
    assert_eq!(
        a["environment"],
        serde_json::json!([{"name": "TEAM", "value": "a"}])
    );
    assert_eq!(a["stopTimeout"], 5);
    assert_eq!(container(&c, "b")["image"], "other:2");
    assert!(c.findings.is_empty(), "{:?}", warnings(&c));
}
