//! Watching from the terminal: `berth logs`, `berth top`, `berth events`, `berth get --watch`.

use berth_core::util::percent;
use std::io::Write;

use clap::Subcommand;
use futures::StreamExt;
use serde_json::Value;

use super::client::Client;
use super::output;
use berth_core::model::Kind;

#[derive(Subcommand, Debug)]
pub enum ObserveCommand {
    /// Print a task's container logs (stdout and stderr), kept by its agent.
    #[command(
        after_help = "Examples:\n  berth logs 3f2a9c1e\n  berth logs 3f2a9c1e -c web --follow --since 5m"
    )]
    Logs {
        task_id: String,
        /// Only this container of the task.
        #[arg(long, short = 'c')]
        container: Option<String>,
        /// Keep printing new lines until the task stops (or Ctrl-C).
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only lines since this long ago (`5m`) or this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only the last N lines of history.
        #[arg(long)]
        tail: Option<usize>,
        /// Prefix each line with its timestamp.
        #[arg(long, short = 't')]
        timestamps: bool,
    },
    /// CPU and memory of running services or tasks, from the agents' samples.
    #[command(
        after_help = "Examples:\n  berth top services\n  berth top tasks -o wide\n  berth top instances -o json"
    )]
    Top {
        /// services, tasks, clusters, taskdefinitions or instances.
        #[arg(default_value = "services")]
        what: String,
        #[arg(short = 'o', long = "output")]
        output: Option<String>,
    },
    /// Service and task events, oldest first.
    #[command(
        after_help = "Examples:\n  berth events\n  berth events --service web --follow\n  berth events -o json"
    )]
    Events {
        /// Keep printing events as they happen.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only events of this service.
        #[arg(long)]
        service: Option<String>,
        #[arg(short = 'o', long = "output")]
        output: Option<String>,
    },
}

pub async fn run(c: &Client, cmd: &ObserveCommand) -> anyhow::Result<()> {
    match cmd {
        ObserveCommand::Logs {
            task_id,
            container,
            follow,
            since,
            tail,
            timestamps,
        } => {
            let mut q: Vec<(String, String)> = Vec::new();
            if let Some(c) = container {
                q.push(("container".into(), c.clone()));
            }
            if *follow {
                q.push(("follow".into(), "1".into()));
            }
            if let Some(s) = since {
                // Resolve relative times here, against this machine's clock.
                let t = berth_core::agent::logs::parse_since(s).ok_or_else(|| {
                    anyhow::anyhow!("invalid --since {s:?}; write 90s, 5m, 1h or an RFC 3339 time")
                })?;
                q.push((
                    "since".into(),
                    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                ));
            }
            if let Some(n) = tail {
                q.push(("tail".into(), n.to_string()));
            }
            if *timestamps {
                q.push(("timestamps".into(), "1".into()));
            }
            let query = q
                .iter()
                .map(|(k, v)| format!("{k}={}", percent::encode(v, false)))
                .collect::<Vec<_>>()
                .join("&");
            let path = format!("/v1/tasks/{task_id}/logs?{query}");
            stream_to_stdout(c, &path).await
        }
        ObserveCommand::Top { what, output } => top(c, what, output.as_deref()).await,
        ObserveCommand::Events {
            follow,
            service,
            output,
        } => events(c, *follow, service.as_deref(), output.as_deref()).await,
    }
}

/// Open a streaming GET; an API error becomes an error with the server's message.
async fn open(c: &Client, path: &str) -> anyhow::Result<reqwest::Response> {
    let resp = c
        .raw_get(path)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach berth at {}: {e}", c.endpoint()))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("HTTP {status}: {}", text.trim()));
        anyhow::bail!("{msg}");
    }
    Ok(resp)
}

async fn stream_to_stdout(c: &Client, path: &str) -> anyhow::Result<()> {
    let resp = open(c, path).await?;
    let mut body = resp.bytes_stream();
    let mut out = std::io::stdout();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        out.write_all(&chunk)?;
        out.flush()?;
    }
    Ok(())
}

/// Lines of an NDJSON stream, parsed.
async fn ndjson(
    c: &Client,
    path: &str,
    mut each: impl FnMut(Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let resp = open(c, path).await?;
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                each(v)?;
            }
        }
    }
    Ok(())
}

fn pct(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.1}%"))
}

fn mib(v: &Value) -> String {
    v.as_f64()
        .map_or("-".into(), |x| format!("{:.1}Mi", x / 1024.0 / 1024.0))
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        o => o.to_string(),
    }
}

async fn top(c: &Client, what: &str, output: Option<&str>) -> anyhow::Result<()> {
    output::check_format(output)?;
    let v = c.get(&format!("/v1/top/{what}")).await?;
    match output {
        Some("json") => {
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        Some("yaml") => {
            print!("{}", serde_yaml::to_string(&v)?);
            return Ok(());
        }
        _ => {}
    }
    let items = v.as_array().cloned().unwrap_or_default();
    let (header, rows): (Vec<&str>, Vec<Vec<String>>) = if what.starts_with("task") {
        (
            vec![
                "TASK", "SERVICE", "TASKDEF", "INSTANCE", "CPU", "MEMORY", "LIMIT",
            ],
            items
                .iter()
                .map(|t| {
                    vec![
                        s(&t["name"]),
                        s(&t["service"]),
                        s(&t["taskDefinition"]),
                        s(&t["instance"]),
                        if t["sampled"] == true {
                            pct(&t["cpuPercent"])
                        } else {
                            "-".into()
                        },
                        if t["sampled"] == true {
                            mib(&t["memoryBytes"])
                        } else {
                            "-".into()
                        },
                        if t["memoryLimit"].as_u64().unwrap_or(0) > 0 {
                            mib(&t["memoryLimit"])
                        } else {
                            "-".into()
                        },
                    ]
                })
                .collect(),
        )
    } else if what.starts_with("serv") || what == "svc" {
        (
            vec![
                "SERVICE",
                "CLUSTER",
                "RUNNING",
                "CPU%",
                "MEM%",
                "CPU(cores)",
                "MEMORY",
            ],
            items
                .iter()
                .map(|g| {
                    vec![
                        s(&g["name"]),
                        s(&g["cluster"]),
                        format!("{}/{}", s(&g["running"]), s(&g["desired"])),
                        pct(&g["cpuUtilization"]),
                        pct(&g["memoryUtilization"]),
                        g["cpuCores"]
                            .as_f64()
                            .map_or("-".into(), |x| format!("{x:.3}")),
                        mib(&g["memoryBytes"]),
                    ]
                })
                .collect(),
        )
    } else {
        (
            vec!["NAME", "TASKS", "CPU%", "MEM%", "CPU(cores)", "MEMORY"],
            items
                .iter()
                .map(|g| {
                    vec![
                        s(&g["name"]),
                        s(&g["tasks"]),
                        pct(&g["cpuUtilization"]),
                        pct(&g["memoryUtilization"]),
                        g["cpuCores"]
                            .as_f64()
                            .map_or("-".into(), |x| format!("{x:.3}")),
                        mib(&g["memoryBytes"]),
                    ]
                })
                .collect(),
        )
    };
    print!("{}", output::render(&header, &rows));
    Ok(())
}

fn event_line(e: &Value) -> String {
    let t = e["t"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into());
    let who = match e["kind"].as_str() {
        Some("task") => format!(
            "task/{}",
            e["name"]
                .as_str()
                .unwrap_or("?")
                .chars()
                .take(8)
                .collect::<String>()
        ),
        _ => format!("service/{}", e["name"].as_str().unwrap_or("?")),
    };
    format!("{t}  {who:<24} {}", e["message"].as_str().unwrap_or(""))
}

async fn events(
    c: &Client,
    follow: bool,
    service: Option<&str>,
    output: Option<&str>,
) -> anyhow::Result<()> {
    let mut q = Vec::new();
    if follow {
        q.push("follow=1".to_string());
    }
    if let Some(s) = service {
        q.push(format!("service={}", percent::encode(s, false)));
    }
    let path = format!("/v1/events?{}", q.join("&"));
    output::check_format(output)?;
    let print = |e: Value| -> anyhow::Result<()> {
        let mut out = std::io::stdout();
        if output == Some("json") {
            writeln!(out, "{e}")?;
        } else if output == Some("yaml") {
            write!(out, "---\n{}", serde_yaml::to_string(&e)?)?;
        } else {
            writeln!(out, "{}", event_line(&e))?;
        }
        out.flush()?;
        Ok(())
    };
    if follow {
        return ndjson(c, &path, print).await;
    }
    for e in c.get(&path).await?.as_array().cloned().unwrap_or_default() {
        print(e)?;
    }
    Ok(())
}

/// `berth get KIND --watch`: the table once, then one row per change (kubectl-style); with
/// `-o json`, one `{"type", "object"}` line per change.
pub async fn get_watch(
    c: &Client,
    kind: Kind,
    name: Option<&str>,
    output: Option<&str>,
) -> anyhow::Result<()> {
    let path = format!("/v1/watch/{}", kind.plural());
    let mut header_done = false;
    let name = name.map(str::to_string);
    ndjson(c, &path, move |ev| {
        let obj = &ev["object"];
        if let Some(n) = &name {
            if obj["metadata"]["name"].as_str() != Some(n.as_str()) {
                return Ok(());
            }
        }
        let mut out = std::io::stdout();
        match output {
            Some("json") => writeln!(out, "{ev}")?,
            _ => {
                let ty = ev["type"].as_str().unwrap_or("");
                let table = if obj.is_object() {
                    output::table(kind, std::slice::from_ref(obj), output == Some("wide"))
                } else {
                    String::new()
                };
                let mut lines = table.lines();
                let head = lines.next().unwrap_or("");
                if !header_done && !head.is_empty() {
                    writeln!(out, "{:<9}{head}", "EVENT")?;
                    header_done = true;
                }
                match lines.next() {
                    Some(row) => writeln!(out, "{ty:<9}{row}")?,
                    None => writeln!(out, "{ty:<9}{}", s(&ev["key"]))?,
                }
            }
        }
        out.flush()?;
        Ok(())
    })
    .await
}
