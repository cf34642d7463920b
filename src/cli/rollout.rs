//! `berth rollout status SERVICE`: follow the service's PRIMARY deployment with a live progress
//! line until it completes (exit 0), fails (exit 1) or the timeout passes (exit 2).

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::Client;

fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        width
    } else {
        ((done.min(total) as f64 / total as f64) * width as f64).round() as usize
    };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

pub async fn status(c: &Client, service: &str, timeout: Duration) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let svc = c.get(&format!("/v1/services/{service}")).await?;
    let Some(followed) = svc["status"]["deployments"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["status"] == "PRIMARY"))
        .and_then(|d| d["id"].as_str())
        .map(str::to_string)
    else {
        eprintln!("service {service} has no deployment yet");
        return Ok(ExitCode::from(1));
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut last_line = String::new();
    loop {
        let svc = c.get(&format!("/v1/services/{service}")).await?;
        let deps = svc["status"]["deployments"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let Some(d) = deps.iter().find(|d| d["id"] == followed.as_str()) else {
            println!();
            eprintln!("deployment {followed} is gone from service {service}");
            return Ok(ExitCode::from(1));
        };
        let td = d["taskDefinition"].as_str().unwrap_or("?").to_string();
        let desired = svc["status"]["desiredCount"].as_u64().unwrap_or(0);
        let tasks: Vec<Value> = c
            .get(&format!("/v1/tasks?service={service}&status=active"))
            .await?
            .as_array()
            .cloned()
            .unwrap_or_default();
        let updated: Vec<&Value> = tasks
            .iter()
            .filter(|t| t["spec"]["taskDefinition"] == td.as_str())
            .collect();
        let running = updated
            .iter()
            .filter(|t| t["status"]["lastStatus"] == "RUNNING")
            .count() as u64;
        let healthy = updated
            .iter()
            .filter(|t| {
                t["status"]["lastStatus"] == "RUNNING" && t["status"]["healthStatus"] == "HEALTHY"
            })
            .count() as u64;
        let old = tasks.len() as u64 - updated.len() as u64;
        let state = d["rolloutState"].as_str().unwrap_or("?");
        let line = format!(
            "{} {td}: {}/{desired} updated, {running} running, {healthy} healthy, {old} old remaining  {state}",
            bar(running, desired, 20),
            updated.len()
        );
        if line != last_line {
            if tty {
                print!("\r\x1b[2K{line}");
                let _ = std::io::stdout().flush();
            } else {
                println!("{line}");
            }
            last_line = line;
        }
        match state {
            "COMPLETED" => {
                if tty {
                    println!();
                }
                println!("deployment {followed} of service {service} completed");
                return Ok(ExitCode::SUCCESS);
            }
            "FAILED" => {
                if tty {
                    println!();
                }
                eprintln!(
                    "deployment {followed} of service {service} FAILED: {}",
                    d["rolloutStateReason"].as_str().unwrap_or("")
                );
                if let Some(p) = deps.iter().find(|d| d["status"] == "PRIMARY") {
                    eprintln!(
                        "service {service} is now on deployment {} ({})",
                        p["id"].as_str().unwrap_or("?"),
                        p["taskDefinition"].as_str().unwrap_or("?")
                    );
                }
                return Ok(ExitCode::from(1));
            }
            _ => {}
        }
        if start.elapsed() >= timeout {
            if tty {
                println!();
            }
            eprintln!("timed out after {timeout:?} waiting for deployment {followed} of service {service}");
            return Ok(ExitCode::from(2));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
