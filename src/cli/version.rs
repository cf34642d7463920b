//! `berth version`: this binary's version and commit, and the server's when it answers.

use std::process::ExitCode;

use serde_json::{json, Value};

use super::client::Client;

/// The git commit this binary was built from (`build.rs`), if it was built from a work tree.
pub const GIT_COMMIT: Option<&str> = option_env!("BERTH_GIT_COMMIT");

/// The JSON 1.1 target prefix the API speaks at `POST /`.
const ECS_PROTOCOL: &str = "AmazonEC2ContainerServiceV20141113";

/// This binary's version facts.
pub fn client_info() -> Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": GIT_COMMIT.unwrap_or("unknown"),
        "api": "/v1",
        "ecsProtocol": ECS_PROTOCOL,
        "stores": ["embedded", "etcd://", "etcds://"],
    })
}

/// `berth version [--client] [-o json|yaml]`.
pub async fn run(c: &Client, client_only: bool, output: Option<&str>) -> anyhow::Result<ExitCode> {
    super::output::check_format(output)?;
    let mut v = client_info();
    if !client_only {
        v["server"] = server_version(c).await;
    }
    match output {
        Some("json") => println!("{}", serde_json::to_string_pretty(&v)?),
        Some("yaml") => print!("{}", serde_yaml::to_string(&v)?),
        _ => {
            println!("berth {}", v["version"].as_str().unwrap_or(""));
            println!("commit:       {}", v["commit"].as_str().unwrap_or(""));
            println!("api:          /v1 and ECS JSON 1.1 ({ECS_PROTOCOL}) at POST /");
            println!("stores:       embedded (WAL + snapshot), etcd:// and etcds:// (etcd v3)");
            if !client_only {
                let s = &v["server"];
                match s["version"].as_str() {
                    Some(ver) => println!(
                        "server:       {ver} at {}",
                        s["endpoint"].as_str().unwrap_or("")
                    ),
                    None => println!(
                        "server:       {} ({})",
                        s["error"].as_str().unwrap_or("unknown"),
                        s["endpoint"].as_str().unwrap_or("")
                    ),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The server's version from the `x-berth-version` header of its `/healthz` (2 s at most).
async fn server_version(c: &Client) -> Value {
    let endpoint = c.endpoint().to_string();
    let probe = tokio::time::timeout(std::time::Duration::from_secs(2), c.raw_get("/healthz"));
    match probe.await {
        Ok(Ok(r)) => match r
            .headers()
            .get("x-berth-version")
            .and_then(|h| h.to_str().ok())
        {
            Some(ver) => json!({"version": ver, "endpoint": endpoint}),
            None => json!({"error": "answered without a version", "endpoint": endpoint}),
        },
        Ok(Err(_)) | Err(_) => json!({
            "error": "not reachable (set --endpoint or BERTH_ENDPOINT)",
            "endpoint": endpoint,
        }),
    }
}
