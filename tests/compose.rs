//! Issue 13 item 1: `berth compose convert|up|down` on real parts. `convert` prints manifests
//! berth's own parser and validation accept, reports the keys berth cannot carry with their
//! lines, and names the project after the folder (or `-p`); `up` against a real `berth up`
//! brings a two-service project RUNNING in depends_on order (the web page answers on its
//! dynamic host port), `down` removes it and its containers.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::berth::*;
use common::manifests::*;

/// A realistic project: a web service (dynamic port, health check, environment, two
/// replicas), a worker that waits for it to be healthy, a migration that runs once, and keys
/// berth reports (`build`, `networks`, `ulimits`, `expose`).
fn project_text(image: &str) -> String {
    let httpd = HTTPD.join(" ");
    format!(
        r#"# a shop, as developers run it locally
services:
  web:
    image: {image}
    build: ./web
    command: {httpd}
    ports:
      - "8080"
    environment:
      MODE: ${{MODE:-dev}}
      GREETING: hello
    healthcheck:
      test: ["CMD-SHELL", "nc -w 1 127.0.0.1 8080 </dev/null"]
      interval: 1s
      timeout: 1s
      retries: 5
    deploy:
      replicas: 2
      resources:
        limits: {{memory: 32m}}
    stop_grace_period: 1s
    networks: [front]
  worker:
    image: {image}
    command: ["sh", "-c", "echo working; sleep 3600"]
    depends_on:
      web:
        condition: service_healthy
      migrate:
        condition: service_completed_successfully
    ulimits:
      nofile: 1024
    expose: ["9000"]
    mem_limit: 16m
    stop_grace_period: 1s
  migrate:
    image: {image}
    command: ["sh", "-c", "echo migrated"]
    mem_limit: 16m
networks:
  front: {{}}
"#
    )
}

fn berth(args: &[&str], dir: &Path) -> Output {
    Command::new(berth_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("MODE")
        .env_remove("COMPOSE_PROJECT_NAME")
        .output()
        .expect("run berth")
}

fn project_dir(folder: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::Builder::new()
        .prefix("berth-compose-")
        .tempdir()
        .unwrap();
    let dir = root.path().join(folder);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("compose.yaml"), text).unwrap();
    (root, dir)
}

#[test]
fn convert_prints_manifests_berth_accepts_and_reports_what_it_cannot_carry() {
    let (_root, dir) = project_dir("Shop.Front", &project_text(IMAGE));
    // No -f: compose.yaml in the current directory; the project is the folder's name.
    let o = berth(&["compose", "convert"], &dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let docs = berth::manifest::parse_str(&text, "converted.yaml")
        .unwrap_or_else(|e| panic!("berth refuses the converted text: {e:?}\n{text}"));
    assert!(berth::manifest::validate(&docs).is_empty());
    let names: Vec<String> = docs
        .iter()
        .map(|d| format!("{}/{}", d.kind(), d.name()))
        .collect();
    assert_eq!(
        names,
        [
            "TaskDefinition/shopfront-web",
            "Service/shopfront-web",
            "TaskDefinition/shopfront-migrate",
            "TaskDefinition/shopfront-worker",
            "Service/shopfront-worker",
        ],
        "{text}"
    );
    assert!(text.contains("desiredCount: 2"), "{text}");
    assert!(text.contains("berth.dev/compose-depends-on: shopfront-web:service_healthy,shopfront-migrate:service_completed_successfully"), "{text}");
    // ${MODE:-dev} with MODE unset.
    assert!(text.contains("value: dev"), "{text}");
    let err = stderr(&o);
    for want in [
        "compose.yaml:5: services.web.build is not supported by berth (build images locally",
        "compose.yaml:22: services.web.networks is not supported",
        "compose.yaml:31: services.worker.ulimits is not supported",
        "compose.yaml:33: services.worker.expose is not supported",
        "compose.yaml:40: networks is not supported",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }

    // -p overrides; -o writes one file per service, which `berth apply --dry-run`'s parser
    // (load_path) reads as a folder.
    let out = dir.join("out");
    let o = berth(
        &[
            "compose",
            "convert",
            "-f",
            "compose.yaml",
            "-p",
            "Other",
            "-o",
            out.to_str().unwrap(),
        ],
        &dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["other-migrate.yaml", "other-web.yaml", "other-worker.yaml"]
    );
    let docs = berth::manifest::load_path(&out).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(docs.len(), 5);

    // `up --strict` refuses a project with reported keys before it talks to any server.
    let o = berth(
        &[
            "--endpoint",
            "http://127.0.0.1:9",
            "compose",
            "up",
            "--strict",
        ],
        &dir,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--strict: nothing was applied"),
        "{}",
        stderr(&o)
    );

    // A value Compose allows but berth refuses (an interval over 300 s): convert says so.
    std::fs::write(
        dir.join("slow.yaml"),
        "services:\n  a:\n    image: x\n    healthcheck: {test: \"true\", interval: 10m}\n",
    )
    .unwrap();
    let o = berth(&["compose", "convert", "-f", "slow.yaml", "-p", "t"], &dir);
    assert!(
        stderr(&o).contains("berth would refuse the converted manifests (TaskDefinition t-a)")
            && stderr(&o).contains("healthCheck.interval"),
        "{}",
        stderr(&o)
    );

    // Bad input: an error with file and line, non-zero, nothing printed on stdout.
    let bad = project_text(IMAGE).replace("\"8080\"", "\"80:8080:9:9\"");
    std::fs::write(dir.join("bad.yaml"), bad).unwrap();
    let o = berth(&["compose", "convert", "-f", "bad.yaml"], &dir);
    assert!(!o.status.success());
    assert!(stdout(&o).is_empty());
    assert!(
        stderr(&o).contains("bad.yaml:8: services.web.ports[0]: bad port"),
        "{}",
        stderr(&o)
    );
    std::fs::write(
        dir.join("dep.yaml"),
        "services:\n  a:\n    image: x\n    depends_on: [nothere]\n",
    )
    .unwrap();
    let o = berth(&["compose", "convert", "-f", "dep.yaml"], &dir);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("dep.yaml:4:") && stderr(&o).contains("`nothere`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn secrets_become_secret_documents_and_container_secrets() {
    let (_root, dir) = project_dir(
        "app",
        "services:\n  api:\n    image: x\n    secrets: [db_password]\nsecrets:\n  db_password:\n    file: ./pw.txt\n",
    );
    std::fs::write(dir.join("pw.txt"), "s3cret").unwrap();
    let o = berth(&["compose", "convert"], &dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&stdout(&o))
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs[0]["kind"], "Secret");
    assert_eq!(docs[0]["metadata"]["name"], "app-db_password");
    assert_eq!(docs[0]["spec"]["data"]["value"], "s3cret");
    assert_eq!(
        docs[1]["spec"]["containerDefinitions"][0]["secrets"],
        serde_json::json!([{"name": "db_password", "valueFrom": "app-db_password:value"}])
    );
}

#[test]
fn up_runs_the_project_in_order_and_down_removes_it() {
    let b = Berth::up(None);
    let project = unique("cmp").replace('-', "");
    let (_root, dir) = project_dir("shop", &project_text(IMAGE));
    let run = |args: &[&str]| {
        let mut c = b.cli_command(args);
        c.current_dir(&dir);
        c.output().unwrap()
    };
    let o = run(&["compose", "up", "-p", &project, "--timeout", "2m"]);
    assert!(
        o.status.success(),
        "up failed:\n{}\n{}\n{}",
        stdout(&o),
        stderr(&o),
        tail(&b.log(), 40)
    );
    // Reported keys are warnings for `up` too.
    assert!(
        stderr(&o).contains("services.web.build is not supported"),
        "{}",
        stderr(&o)
    );
    let out = stdout(&o);
    assert!(out.contains("completed successfully"), "{out}");
    assert!(out.contains(&format!("project {project} is up")), "{out}");
    // Bind mounts and capabilities go through apply's safety checks: refused, nothing made.
    std::fs::write(
        dir.join("unsafe.yaml"),
        format!(
            "services:\n  ok:\n    image: {IMAGE}\n  snoop:\n    image: {IMAGE}\n    volumes: [\"/etc:/host-etc:ro\"]\n    cap_add: [NET_ADMIN]\n"
        ),
    )
    .unwrap();
    let o = run(&[
        "compose",
        "up",
        "-f",
        "unsafe.yaml",
        "-p",
        &format!("{project}u"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("settings.allowHostMounts") && err.contains("settings.allowPrivileged"),
        "{err}"
    );
    assert!(b
        .try_get_json(&["services", &format!("{project}u-ok")])
        .is_none());
    assert!(b
        .try_get_json(&["taskdefinitions", &format!("{project}u-snoop")])
        .is_none());

    let web = format!("{project}-web");
    let worker = format!("{project}-worker");
    let tasks = b.wait_running(&web, 2, Duration::from_secs(60));
    b.wait_running(&worker, 1, Duration::from_secs(60));
    // The worker started after the web service was healthy.
    let worker_task = &b.running_tasks(&worker)[0];
    for t in &tasks {
        assert_eq!(t["status"]["healthStatus"], "HEALTHY", "{t}");
        assert!(
            t["status"]["startedAt"].as_str() < worker_task["status"]["startedAt"].as_str(),
            "worker started before web: {t} {worker_task}"
        );
    }
    // A dynamic host port that answers with the test image's page.
    for t in &tasks {
        let ports = host_ports(t);
        assert_eq!(ports.len(), 1, "{t}");
        assert_ne!(ports[0], 8080);
        let page = wait_for("the web page", Duration::from_secs(20), || {
            http_get(ports[0])
        });
        assert!(page.contains(" 200 "), "{page}");
    }
    // Environment as converted.
    let td = b.get_json(&["taskdefinitions", &web]);
    assert!(td.to_string().contains("\"GREETING\""), "{td}");
    // `up` again changes nothing and returns.
    let o = run(&["compose", "up", "-p", &project]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("service/{web} unchanged")),
        "{}",
        stdout(&o)
    );

    let o = run(&["compose", "down", "-p", &project]);
    assert!(
        o.status.success(),
        "down failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stdout(&o).contains(&format!("project {project} is down")));
    assert!(b.try_get_json(&["services", &web]).is_none());
    assert!(b.try_get_json(&["services", &worker]).is_none());
    // Every container of the project is gone (stopped and removed), none left behind.
    wait_for(
        "no container of the project left",
        Duration::from_secs(60),
        || b.containers().is_empty().then_some(()),
    );
}

#[test]
fn up_stops_at_a_failed_run_once_service_and_applies_nothing_after_it() {
    let b = Berth::up(None);
    let project = unique("cmpf").replace('-', "");
    let (_root, dir) = project_dir(
        "failing",
        &format!(
            "services:\n  migrate:\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"echo no database; exit 3\"]\n    mem_limit: 16m\n  api:\n    image: {IMAGE}\n    command: [\"sleep\", \"3600\"]\n    mem_limit: 16m\n    depends_on:\n      migrate: {{condition: service_completed_successfully}}\n"
        ),
    );
    let mut c = b.cli_command(&["compose", "up", "-p", &project, "--timeout", "1m"]);
    c.current_dir(&dir);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{project}-migrate")) && err.contains("failed"),
        "{err}"
    );
    assert!(err.contains("did not come up"), "{err}");
    // The dependent was never applied.
    assert!(b
        .try_get_json(&["services", &format!("{project}-api")])
        .is_none());
    assert!(b
        .try_get_json(&["taskdefinitions", &format!("{project}-api")])
        .is_none());
    // `down` cleans up what was applied (the run-once task definition).
    let mut c = b.cli_command(&["compose", "down", "-p", &project]);
    c.current_dir(&dir);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("taskdefinition/{project}-migrate")),
        "{}",
        stdout(&o)
    );
}
