//! Human output: tables for `get`, a readable page for `describe`, apply reports and errors.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::client::ClientError;
use berth_core::manifest::ManifestError;
use berth_core::model::Kind;

pub fn age(v: &Value) -> String {
    let Some(t) = v
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
    else {
        return "-".into();
    };
    let secs = (Utc::now() - t.with_timezone(&Utc)).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn ports(t: &Value) -> String {
    let mut out = Vec::new();
    for c in t["status"]["containers"].as_array().into_iter().flatten() {
        for b in c["networkBindings"].as_array().into_iter().flatten() {
            out.push(format!("{}->{}", b["hostPort"], b["containerPort"]));
        }
    }
    if out.is_empty() {
        "-".into()
    } else {
        out.join(",")
    }
}

/// Columns and rows for a kind.
pub fn table(kind: Kind, items: &[Value], wide: bool) -> String {
    let (header, rows): (Vec<&str>, Vec<Vec<String>>) = match kind {
        Kind::Service => (
            vec![
                "NAME", "CLUSTER", "TASKDEF", "DESIRED", "RUNNING", "PENDING", "STATUS", "ROLLOUT",
                "AGE",
            ],
            items
                .iter()
                .map(|v| {
                    let primary = v["status"]["deployments"]
                        .as_array()
                        .and_then(|d| d.first())
                        .cloned()
                        .unwrap_or(Value::Null);
                    vec![
                        s(&v["metadata"]["name"]),
                        s(&v["spec"]["cluster"]),
                        if primary.is_null() {
                            s(&v["spec"]["taskDefinition"])
                        } else {
                            s(&primary["taskDefinition"])
                        },
                        // A DAEMON service wants one task per instance: ECS reports that number.
                        if v["spec"]["schedulingStrategy"] == "DAEMON" {
                            s(&v["status"]["desiredCount"])
                        } else {
                            s(&v["spec"]["desiredCount"])
                        },
                        s(&v["status"]["runningCount"]),
                        s(&v["status"]["pendingCount"]),
                        s(&v["status"]["status"]),
                        s(&primary["rolloutState"]),
                        age(&v["metadata"]["createdAt"]),
                    ]
                })
                .collect(),
        ),
        Kind::Task => {
            let mut h = vec![
                "ID", "TASKDEF", "LAST", "DESIRED", "HEALTH", "INSTANCE", "GROUP", "AGE",
            ];
            if wide {
                h.extend(["PORTS", "STOP CODE"]);
            }
            (
                h,
                items
                    .iter()
                    .map(|v| {
                        let mut r = vec![
                            s(&v["metadata"]["name"]),
                            s(&v["spec"]["taskDefinition"]),
                            s(&v["status"]["lastStatus"]),
                            s(&v["status"]["desiredStatus"]),
                            s(&v["status"]["healthStatus"]),
                            s(&v["status"]["containerInstance"]),
                            s(&v["spec"]["group"]),
                            age(&v["metadata"]["createdAt"]),
                        ];
                        if wide {
                            r.push(ports(v));
                            r.push(s(&v["status"]["stopCode"]));
                        }
                        r
                    })
                    .collect(),
            )
        }
        Kind::TaskDefinition => (
            vec![
                "NAME",
                "FAMILY",
                "REVISION",
                "STATUS",
                "CONTAINERS",
                "CPU",
                "MEMORY",
            ],
            items
                .iter()
                .map(|v| {
                    let cs: Vec<String> = v["spec"]["containerDefinitions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| s(&c["name"]))
                        .collect();
                    vec![
                        s(&v["metadata"]["name"]),
                        s(&v["status"]["family"]),
                        s(&v["status"]["revision"]),
                        s(&v["status"]["status"]),
                        cs.join(","),
                        s(&v["spec"]["cpu"]),
                        s(&v["spec"]["memory"]),
                    ]
                })
                .collect(),
        ),
        Kind::ContainerInstance => (
            vec![
                "ID",
                "CLUSTER",
                "STATUS",
                "CONNECTED",
                "CPU FREE/TOTAL",
                "MEM FREE/TOTAL",
                "RUNNING",
                "PENDING",
            ],
            items
                .iter()
                .map(|v| {
                    let st = &v["status"];
                    vec![
                        s(&v["metadata"]["name"]),
                        s(&v["spec"]["cluster"]),
                        s(&st["status"]),
                        s(&st["agentConnected"]),
                        format!(
                            "{}/{}",
                            st["remainingResources"]["CPU"], st["registeredResources"]["CPU"]
                        ),
                        format!(
                            "{}/{}",
                            st["remainingResources"]["MEMORY"], st["registeredResources"]["MEMORY"]
                        ),
                        s(&st["runningTasksCount"]),
                        s(&st["pendingTasksCount"]),
                    ]
                })
                .collect(),
        ),
        Kind::LoadBalancer => (
            vec!["NAME", "LISTENERS", "RULES", "AGE"],
            items
                .iter()
                .map(|v| {
                    let ls = v["spec"]["listeners"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    let ports: Vec<String> = ls.iter().map(|l| s(&l["port"])).collect();
                    let rules: usize = ls
                        .iter()
                        .map(|l| l["rules"].as_array().map_or(0, |r| r.len()))
                        .sum();
                    vec![
                        s(&v["metadata"]["name"]),
                        ports.join(","),
                        rules.to_string(),
                        age(&v["metadata"]["createdAt"]),
                    ]
                })
                .collect(),
        ),
        Kind::TargetGroup => (
            vec!["NAME", "ALGORITHM", "HEALTH PATH", "DEREGISTRATION", "AGE"],
            items
                .iter()
                .map(|v| {
                    vec![
                        s(&v["metadata"]["name"]),
                        s(&v["spec"]["algorithm"]),
                        s(&v["spec"]["healthCheck"]["path"]),
                        format!("{}s", v["spec"]["deregistrationDelaySeconds"]),
                        age(&v["metadata"]["createdAt"]),
                    ]
                })
                .collect(),
        ),
        Kind::Secret => (
            vec!["NAME", "KEYS", "REVISION", "AGE"],
            items
                .iter()
                .map(|v| {
                    let keys: Vec<&str> = v["spec"]["keys"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|k| k.as_str()).collect())
                        .unwrap_or_default();
                    vec![
                        s(&v["metadata"]["name"]),
                        keys.join(","),
                        v["metadata"]["revision"].to_string(),
                        age(&v["metadata"]["createdAt"]),
                    ]
                })
                .collect(),
        ),
        Kind::Role => (
            vec!["NAME", "STATEMENTS", "ACTIONS", "AGE"],
            items
                .iter()
                .map(|v| {
                    let st = v["spec"]["statements"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    let actions: Vec<String> = st
                        .iter()
                        .flat_map(|x| {
                            let effect = x["effect"].as_str().unwrap_or("?").to_string();
                            x["actions"]
                                .as_array()
                                .cloned()
                                .unwrap_or_default()
                                .into_iter()
                                .map(move |a| format!("{effect}:{}", a.as_str().unwrap_or("?")))
                        })
                        .collect();
                    vec![
                        s(&v["metadata"]["name"]),
                        st.len().to_string(),
                        actions.join(","),
                        age(&v["metadata"]["createdAt"]),
                    ]
                })
                .collect(),
        ),
        Kind::ScalingPolicy => (
            vec![
                "NAME", "SERVICE", "METRIC", "TARGET", "CURRENT", "MIN", "MAX", "DESIRED",
                "MESSAGE",
            ],
            items
                .iter()
                .map(|v| {
                    let tt = &v["spec"]["targetTracking"];
                    let metric = match tt["predefinedMetricType"].as_str() {
                        Some("ECSServiceAverageMemoryUtilization") => "memory",
                        _ => "cpu",
                    };
                    vec![
                        s(&v["metadata"]["name"]),
                        s(&v["spec"]["service"]),
                        metric.to_string(),
                        format!("{}%", tt["targetValue"].as_f64().unwrap_or(0.0)),
                        v["status"]["currentMetric"]
                            .as_f64()
                            .map_or("-".into(), |m| format!("{m:.1}%")),
                        s(&v["spec"]["minCapacity"]),
                        s(&v["spec"]["maxCapacity"]),
                        s(&v["status"]["desiredCapacity"]),
                        s(&v["status"]["message"]),
                    ]
                })
                .collect(),
        ),
        Kind::Cluster => (
            vec!["NAME", "STATUS", "AGE"],
            items
                .iter()
                .map(|v| {
                    vec![
                        s(&v["metadata"]["name"]),
                        s(&v["status"]["status"]),
                        age(&v["metadata"]["createdAt"]),
                    ]
                })
                .collect(),
        ),
    };
    render(&header, &rows)
}

pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{:<w$}   ", c, w = widths[i]));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}

/// `describe`: the object as YAML, then for services their deployments and recent events.
pub fn describe(kind: Kind, v: &Value, tasks: &[Value]) -> String {
    let mut out = String::new();
    let mut obj = v.clone();
    if kind == Kind::Service {
        if let Some(st) = obj.get_mut("status").and_then(Value::as_object_mut) {
            st.remove("events");
            st.remove("deployments");
        }
    }
    out.push_str(&serde_yaml::to_string(&obj).unwrap_or_default());
    if kind == Kind::Service {
        out.push_str("\nDeployments:\n");
        let rows: Vec<Vec<String>> = v["status"]["deployments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                vec![
                    s(&d["id"]),
                    s(&d["status"]),
                    s(&d["taskDefinition"]),
                    s(&d["desiredCount"]),
                    s(&d["runningCount"]),
                    s(&d["pendingCount"]),
                    s(&d["failedTasks"]),
                    s(&d["rolloutState"]),
                    age(&d["createdAt"]),
                ]
            })
            .collect();
        out.push_str(&indent(&render(
            &[
                "ID", "STATUS", "TASKDEF", "DESIRED", "RUNNING", "PENDING", "FAILED", "ROLLOUT",
                "AGE",
            ],
            &rows,
        )));
        out.push_str("\nTasks:\n");
        out.push_str(&indent(&table(Kind::Task, tasks, true)));
        out.push_str("\nEvents (newest first):\n");
        for e in v["status"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .take(15)
        {
            out.push_str(&format!(
                "  {:>5}  {}\n",
                age(&e["createdAt"]),
                s(&e["message"])
            ));
        }
    }
    out
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

/// One object of an apply or delete answer: `service/web configured`.
pub fn result_line(r: &Value, missing_outcome: &str) -> String {
    format!(
        "{}/{} {}",
        r["kind"].as_str().unwrap_or("?").to_ascii_lowercase(),
        r["name"].as_str().unwrap_or("?"),
        r["outcome"].as_str().unwrap_or(missing_outcome),
    )
}

pub fn print_manifest_errors(errs: &[ManifestError]) {
    for e in errs {
        eprintln!("error: {e}");
    }
}

/// An API error; a refused apply's manifest errors one per line (file, document, field).
pub fn print_api_error(e: &ClientError) {
    match e {
        ClientError::Api { details, .. } if !details.is_empty() => {
            for d in details {
                match serde_json::from_value::<ManifestError>(d.clone()) {
                    Ok(me) => eprintln!("error: {me}"),
                    Err(_) => eprintln!("error: {d}"),
                }
            }
        }
        other => eprintln!("error: {other}"),
    }
}

/// The answer to `berth apply` (plain or as a source): a line per object, then the
/// extraneous objects left in place; on an error, what was wrong and, when the server
/// refused, that nothing was applied.
pub fn apply_report(answer: Result<Value, ClientError>, dry_run: bool) -> ExitCode {
    match answer {
        Ok(v) => {
            let suffix = if dry_run { " (dry run)" } else { "" };
            for r in v["results"].as_array().into_iter().flatten() {
                println!("{}{suffix}", result_line(r, "?"));
            }
            for e in v["extraneous"].as_array().into_iter().flatten() {
                println!(
                    "{}/{} extraneous: {}",
                    e["kind"].as_str().unwrap_or("?").to_ascii_lowercase(),
                    e["name"].as_str().unwrap_or("?"),
                    e["reason"].as_str().unwrap_or(""),
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_api_error(&e);
            if matches!(e, ClientError::Api { .. }) {
                eprintln!("nothing was applied");
            }
            ExitCode::from(1)
        }
    }
}

/// The `-o` formats every list command takes: `json`, `yaml`, `wide` (the table with more
/// columns where the command has them), or none (the table). Anything else is an error that
/// names them.
pub fn check_format(output: Option<&str>) -> anyhow::Result<()> {
    match output {
        None | Some("json") | Some("yaml") | Some("wide") => Ok(()),
        Some(other) => anyhow::bail!("unknown output format {other:?}; use json, yaml or wide"),
    }
}
