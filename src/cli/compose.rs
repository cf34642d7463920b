//! `berth compose convert|up|down`: a Compose file as berth manifests (`berth_core::compose`),
//! applied through the API as `berth apply` applies, followed as `berth rollout status`
//! follows, removed as `berth delete -f` removes.
//!
//! `up` applies in `depends_on` order: one apply per wave of services whose dependencies are
//! all up (every wave is checked first with a dry run of the whole project, so bad input or a
//! refused setting changes nothing), then waits for that wave's rollouts (and health, for
//! `service_healthy`; exit code 0, for a run-once `service_completed_successfully` service)
//! before the next. Keys berth cannot carry are warnings, as ecs-cli's were; `--strict`
//! refuses instead. `down` removes waves in reverse order and waits for each service to go.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{Client, ClientError};
use super::output;
use berth_core::compose::{self, Condition, Conversion, Unit};

#[derive(Subcommand, Debug)]
pub enum ComposeCommand {
    /// Print the berth manifests a Compose file becomes (warnings on stderr).
    #[command(
        after_help = "Examples:\n  berth compose convert\n  berth compose convert -f app/compose.yaml -p shop -o manifests/"
    )]
    Convert {
        #[command(flatten)]
        file: FileArgs,
        /// Write one file per service (PROJECT-SERVICE.yaml) into this folder instead.
        #[arg(short = 'o', long = "output-dir")]
        output_dir: Option<PathBuf>,
    },
    /// Apply the converted manifests in depends_on order and wait until every service is stable.
    #[command(
        after_help = "Examples:\n  berth compose up\n  berth compose up -f compose.yaml -p shop --timeout 10m"
    )]
    Up {
        #[command(flatten)]
        file: FileArgs,
        /// How long to wait for each service's rollout.
        #[arg(long, default_value = "5m")]
        timeout: String,
        /// Refuse (apply nothing) when a key is not supported, instead of warning.
        #[arg(long)]
        strict: bool,
    },
    /// Remove what `compose up` made: services (dependents first), then task definitions and secrets.
    #[command(
        after_help = "Examples:\n  berth compose down\n  berth compose down -f compose.yaml -p shop"
    )]
    Down {
        #[command(flatten)]
        file: FileArgs,
        /// How long to wait for each service to be gone.
        #[arg(long, default_value = "5m")]
        timeout: String,
    },
}

#[derive(Args, Debug)]
pub struct FileArgs {
    /// The Compose file (default: compose.yaml, compose.yml, docker-compose.yaml or
    /// docker-compose.yml in the current directory).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// The project name (default: COMPOSE_PROJECT_NAME, else the top-level `name:`, else the
    /// file's folder name).
    #[arg(short = 'p', long = "project-name")]
    pub project: Option<String>,
}

fn load(f: &FileArgs, warn: bool) -> Result<Conversion, ExitCode> {
    let opts = compose::Options {
        file: f.file.clone(),
        dir: std::env::current_dir().unwrap_or_else(|_| ".".into()),
        project: f.project.clone(),
        env: std::env::vars().collect(),
    };
    match compose::load(&opts) {
        Ok(c) => {
            if warn {
                for w in &c.findings {
                    eprintln!("warning: {w}");
                }
            }
            Ok(c)
        }
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("error: {line}");
            }
            eprintln!("nothing was converted");
            Err(ExitCode::from(1))
        }
    }
}

/// Documents as the API takes them: the converted text through berth's manifest parser.
fn parse(docs: &[Value], project: &str) -> Result<Vec<berth_core::manifest::Document>, ExitCode> {
    let text = Conversion::yaml(docs);
    berth_core::manifest::parse_str(&text, &format!("compose project {project}")).map_err(|errs| {
        output::print_manifest_errors(&errs);
        ExitCode::from(1)
    })
}

pub async fn run(c: &Client, cmd: &ComposeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ComposeCommand::Convert { file, output_dir } => {
            let conv = match load(file, true) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            check(&conv);
            match output_dir {
                None => print!("{}", Conversion::yaml(&conv.documents())),
                Some(dir) => {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
                    for (name, text) in conv.files() {
                        let path = dir.join(&name);
                        write_file(&path, &text, name.ends_with("-secrets.yaml"))?;
                        println!("wrote {}", path.display());
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ComposeCommand::Up {
            file,
            timeout,
            strict,
        } => {
            let timeout = berth_core::util::parse_duration(timeout)?;
            let conv = match load(file, true) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            if *strict && !conv.findings.is_empty() {
                eprintln!(
                    "error: {} unsupported or changed key(s) (above) and --strict: nothing was applied",
                    conv.findings.len()
                );
                return Ok(ExitCode::from(1));
            }
            up(c, &conv, timeout).await
        }
        ComposeCommand::Down { file, timeout } => {
            let timeout = berth_core::util::parse_duration(timeout)?;
            let conv = match load(file, false) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            down(c, &conv, timeout).await
        }
    }
}

/// What berth's own manifest checks would refuse in the converted documents (a value Compose
/// allows but ECS does not, e.g. a health check interval over 300 s): warnings for `convert`;
/// `up` is refused by the server's dry run. Secrets are left to the server, whose kind they are.
fn check(conv: &Conversion) {
    let docs: Vec<Value> = conv
        .documents()
        .into_iter()
        .filter(|d| d["kind"] != "Secret")
        .collect();
    let label = format!("compose project {}", conv.project);
    let errors = match berth_core::manifest::parse_str(&Conversion::yaml(&docs), &label) {
        Ok(parsed) => berth_core::manifest::validate(&parsed),
        Err(errors) => errors,
    };
    for e in errors {
        let what = e
            .document
            .and_then(|n| docs.get(n.wrapping_sub(1)))
            .map(|d| {
                format!(
                    " ({} {})",
                    d["kind"].as_str().unwrap_or("?"),
                    d["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .unwrap_or_default();
        eprintln!("warning: berth would refuse the converted manifests{what}: {e}");
    }
}

fn write_file(path: &std::path::Path, text: &str, private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn waves(conv: &Conversion) -> Vec<Vec<&Unit>> {
    let mut out: Vec<Vec<&Unit>> = Vec::new();
    for u in &conv.units {
        if out.len() <= u.wave {
            out.resize_with(u.wave + 1, Vec::new);
        }
        out[u.wave].push(u);
    }
    out.retain(|w| !w.is_empty());
    out
}

fn unit_docs(units: &[&Unit]) -> Vec<Value> {
    let mut docs = Vec::new();
    for u in units {
        docs.push(u.task_definition.clone());
        docs.extend(u.service.clone());
    }
    docs
}

async fn up(c: &Client, conv: &Conversion, timeout: Duration) -> anyhow::Result<ExitCode> {
    let all = match parse(&conv.documents(), &conv.project) {
        Ok(d) => d,
        Err(code) => {
            eprintln!("nothing was applied");
            return Ok(code);
        }
    };
    // The whole project first, as a dry run: bad input or a refused setting changes nothing.
    if let Err(e) = c
        .post("/v1/apply", &json!({"documents": all, "dryRun": true}))
        .await
    {
        return Ok(output::apply_report(Err(e), false));
    }
    let waves = waves(conv);
    let needed = |name: &str, cond: Condition| {
        conv.units
            .iter()
            .any(|u| u.depends_on.iter().any(|(n, c)| n == name && *c == cond))
    };
    for (i, wave) in waves.iter().enumerate() {
        let mut docs = if i == 0 { conv.secrets.clone() } else { vec![] };
        docs.extend(unit_docs(wave));
        let docs = match parse(&docs, &conv.project) {
            Ok(d) => d,
            Err(code) => return Ok(code),
        };
        let answer = c
            .post("/v1/apply", &json!({"documents": docs, "dryRun": false}))
            .await;
        let revisions: Vec<String> = answer
            .as_ref()
            .ok()
            .and_then(|v| v["results"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|r| r["kind"] == "TaskDefinition")
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect();
        let code = output::apply_report(answer, false);
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
        for u in wave {
            let rev = revisions
                .iter()
                .find(|r| r.split_once(':').map(|x| x.0) == Some(u.name.as_str()))
                .cloned()
                .unwrap_or_else(|| u.name.clone());
            let ok = match &u.service {
                Some(_) => {
                    follow(c, u, &rev, timeout).await?
                        && (!needed(&u.name, Condition::Healthy)
                            || wait_healthy(c, u, timeout).await?)
                }
                None => run_once(c, u, &rev, timeout).await?,
            };
            if !ok {
                eprintln!(
                    "error: {} did not come up; the services after it were not applied \
                     (`berth compose down` removes what was)",
                    u.name
                );
                return Ok(ExitCode::from(1));
            }
        }
    }
    let names: Vec<&str> = conv
        .units
        .iter()
        .filter(|u| u.service.is_some())
        .map(|u| u.name.as_str())
        .collect();
    println!("project {} is up: {}", conv.project, names.join(", "));
    Ok(ExitCode::SUCCESS)
}

/// Wait until the service's PRIMARY deployment is the revision just applied, then follow it
/// as `berth rollout status` does.
async fn follow(c: &Client, u: &Unit, rev: &str, timeout: Duration) -> anyhow::Result<bool> {
    let start = Instant::now();
    loop {
        let svc = c.get(&format!("/v1/services/{}", u.name)).await?;
        let primary = svc["status"]["deployments"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["status"] == "PRIMARY").cloned());
        if primary.is_some_and(|d| d["taskDefinition"] == rev || !rev.contains(':')) {
            break;
        }
        if start.elapsed() > timeout {
            eprintln!(
                "timed out waiting for service {} to start deploying {rev}",
                u.name
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = timeout.saturating_sub(start.elapsed());
    Ok(super::rollout::status(c, &u.name, left).await? == ExitCode::SUCCESS)
}

/// `service_healthy`: every running task of the service reports HEALTHY.
async fn wait_healthy(c: &Client, u: &Unit, timeout: Duration) -> anyhow::Result<bool> {
    if !u.has_health_check {
        eprintln!(
            "warning: services wait for {} to be healthy, but it has no healthcheck: running is enough",
            u.name
        );
        return Ok(true);
    }
    let start = Instant::now();
    loop {
        let tasks = c
            .get(&format!("/v1/tasks?service={}&status=active", u.name))
            .await?;
        let tasks = tasks.as_array().cloned().unwrap_or_default();
        let running: Vec<&Value> = tasks
            .iter()
            .filter(|t| t["status"]["lastStatus"] == "RUNNING")
            .collect();
        if !running.is_empty()
            && running
                .iter()
                .all(|t| t["status"]["healthStatus"] == "HEALTHY")
        {
            println!("service {} is healthy", u.name);
            return Ok(true);
        }
        if start.elapsed() > timeout {
            eprintln!("timed out waiting for service {} to be healthy", u.name);
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `service_completed_successfully`: run the task once and wait for every container to exit 0.
async fn run_once(c: &Client, u: &Unit, rev: &str, timeout: Duration) -> anyhow::Result<bool> {
    let v = c
        .post(
            "/v1/tasks",
            &json!({"taskDefinition": rev, "count": 1, "cluster": u.cluster}),
        )
        .await?;
    let Some(id) = v["tasks"][0]["metadata"]["name"]
        .as_str()
        .map(str::to_string)
    else {
        eprintln!("run-task of {rev} started no task: {v}");
        return Ok(false);
    };
    println!("task {id} of {rev} started (run once)");
    let start = Instant::now();
    loop {
        let t = c.get(&format!("/v1/tasks/{id}")).await?;
        if t["status"]["lastStatus"] == "STOPPED" {
            let ok = t["status"]["containers"].as_array().is_some_and(|cs| {
                !cs.is_empty() && cs.iter().all(|c| c["exitCode"].as_i64() == Some(0))
            });
            if ok {
                println!("task {id} of {rev} completed successfully");
            } else {
                eprintln!(
                    "task {id} of {rev} failed: {} {}",
                    t["status"]["stoppedReason"].as_str().unwrap_or(""),
                    t["status"]["containers"]
                );
            }
            return Ok(ok);
        }
        if start.elapsed() > timeout {
            eprintln!("timed out waiting for task {id} of {rev} to complete");
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn down(c: &Client, conv: &Conversion, timeout: Duration) -> anyhow::Result<ExitCode> {
    for wave in waves(conv).iter().rev() {
        let docs = match parse(&unit_docs(wave), &conv.project) {
            Ok(d) => d,
            Err(code) => return Ok(code),
        };
        let v = match c.post("/v1/delete", &json!({ "documents": docs })).await {
            Ok(v) => v,
            Err(e) => {
                output::print_api_error(&e);
                return Ok(ExitCode::from(1));
            }
        };
        for r in v["results"].as_array().into_iter().flatten() {
            println!("{}", output::result_line(r, "deleted"));
        }
        for u in wave.iter().filter(|u| u.service.is_some()) {
            if !wait_gone(c, &u.name, timeout).await? {
                eprintln!("timed out waiting for service {} to be removed", u.name);
                return Ok(ExitCode::from(1));
            }
        }
    }
    if !conv.secrets.is_empty() {
        let docs = match parse(&conv.secrets, &conv.project) {
            Ok(d) => d,
            Err(code) => return Ok(code),
        };
        match c.post("/v1/delete", &json!({ "documents": docs })).await {
            Ok(v) => {
                for r in v["results"].as_array().into_iter().flatten() {
                    println!("{}", output::result_line(r, "deleted"));
                }
            }
            Err(e) => {
                output::print_api_error(&e);
                return Ok(ExitCode::from(1));
            }
        }
    }
    println!("project {} is down", conv.project);
    Ok(ExitCode::SUCCESS)
}

/// Until the service's key is gone (its tasks stopped and their containers removed).
async fn wait_gone(c: &Client, name: &str, timeout: Duration) -> anyhow::Result<bool> {
    let start = Instant::now();
    loop {
        match c.get(&format!("/v1/services/{name}")).await {
            Err(ClientError::Api { status: 404, .. }) => break,
            Err(e) => return Err(e.into()),
            Ok(_) if start.elapsed() > timeout => return Ok(false),
            Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    // Its tasks: none left running.
    loop {
        let tasks = c
            .get(&format!("/v1/tasks?service={name}&status=active"))
            .await?;
        if tasks.as_array().is_none_or(|a| a.is_empty()) {
            println!("service {name} removed");
            return Ok(true);
        }
        if start.elapsed() > timeout {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
