//! The iptables NAT rules that send a task's `169.254.170.2:80` to this agent's metadata
//! server, as the ECS agent's DNAT does.
//!
//! Design (several agents may share one host, e.g. tests running several `berth up`): one
//! shared chain `BERTH-TASK-META`, jumped to from `nat PREROUTING` (created idempotently, never
//! removed: another agent may be using it; empty, it matches nothing). In it, one rule **per
//! task address**: `-s <task IP>/32 -d 169.254.170.2/32 -p tcp --dport 80 -j DNAT --to
//! <bridge gateway>:<this agent's port>`, commented `berth-meta <instance> <task>`. So each
//! container reaches exactly the agent that runs it, whichever agents share the bridge. New
//! rules are inserted first, so a stale rule for a reused address (an agent killed with -9)
//! is shadowed; an agent deletes its own rules (by comment) at start and at clean shutdown,
//! and a task's rules when its containers are removed. DNAT to the gateway address (a local
//! address of the host) needs no `route_localnet`.
//!
//! Since an agent starts by deleting every rule of its instance, it knows exactly which rules
//! are its own afterwards (`Metadata` keeps them): adding one is a single `iptables -I` on the
//! path to RUNNING, and removing one a single `-D`, with no listing or check.

use std::net::SocketAddr;

use tokio::process::Command;

pub const CHAIN: &str = "BERTH-TASK-META";
pub const METADATA_IP: &str = "169.254.170.2";
/// Serialises the check-then-create of the shared chain and jump between agents of one host.
pub const LOCK_PATH: &str = "/run/berth-task-meta.lock";

#[derive(Debug, thiserror::Error)]
pub enum DnatError {
    #[error("cannot run iptables: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("host lock {LOCK_PATH}: {0}")]
    Lock(String),
    #[error("iptables {args}: {stderr}")]
    Failed { args: String, stderr: String },
}

async fn iptables(args: &[&str]) -> Result<String, DnatError> {
    let o = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .await?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(DnatError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        })
    }
}

fn comment(instance: &str, task: &str) -> String {
    format!("berth-meta {instance} {task}")
}

/// The shared chain and its jump from PREROUTING (idempotent), and none of this instance's
/// old rules.
pub async fn install(instance: &str) -> Result<(), DnatError> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_PATH)
        .map_err(|e| DnatError::Lock(e.to_string()))?;
    let guard = tokio::task::spawn_blocking(move || f.lock().map(|_| f))
        .await
        .map_err(|e| DnatError::Lock(e.to_string()))?
        .map_err(|e| DnatError::Lock(e.to_string()))?;
    let r = install_locked(instance).await;
    drop(guard);
    r
}

async fn install_locked(instance: &str) -> Result<(), DnatError> {
    if iptables(&["-t", "nat", "-S", CHAIN]).await.is_err() {
        // Another agent may create it at the same moment: only a missing chain is an error.
        if let Err(e) = iptables(&["-t", "nat", "-N", CHAIN]).await {
            iptables(&["-t", "nat", "-S", CHAIN]).await.map_err(|_| e)?;
        }
    }
    let jump = ["-d", "169.254.170.2/32", "-p", "tcp", "-j", CHAIN];
    let mut check = vec!["-t", "nat", "-C", "PREROUTING"];
    check.extend_from_slice(&jump);
    if iptables(&check).await.is_err() {
        let mut add = vec!["-t", "nat", "-I", "PREROUTING", "1"];
        add.extend_from_slice(&jump);
        iptables(&add).await?;
    }
    remove_matching(&format!("berth-meta {instance} ")).await
}

/// The rule routing `ip`'s `169.254.170.2:80` to `to` for `task`.
fn rule(instance: &str, task: &str, ip: &str, to: SocketAddr) -> Vec<String> {
    let c = comment(instance, task);
    [
        "-s",
        &format!("{ip}/32"),
        "-d",
        "169.254.170.2/32",
        "-p",
        "tcp",
        "--dport",
        "80",
        "-m",
        "comment",
        "--comment",
        &c,
        "-j",
        "DNAT",
        "--to-destination",
        &to.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn on_chain(op: &[&str], rule: &[String]) -> Result<(), DnatError> {
    let mut args: Vec<&str> = vec!["-t", "nat"];
    args.extend_from_slice(op);
    args.extend(rule.iter().map(String::as_str));
    iptables(&args).await.map(|_| ())
}

/// Route `ip`'s `169.254.170.2:80` to `to` for `task` (a rule the caller knows is not there).
pub async fn insert(instance: &str, task: &str, ip: &str, to: SocketAddr) -> Result<(), DnatError> {
    on_chain(&["-I", CHAIN, "1"], &rule(instance, task, ip, to)).await
}

/// Remove the rule [`insert`] added.
pub async fn delete(instance: &str, task: &str, ip: &str, to: SocketAddr) -> Result<(), DnatError> {
    on_chain(&["-D", CHAIN], &rule(instance, task, ip, to)).await
}

/// Remove every rule (of any agent) whose source address is not in `live` (the addresses of
/// the host's running containers): what agents killed without a clean shutdown left behind.
pub async fn gc(live: &std::collections::HashSet<String>) -> Result<(), DnatError> {
    let listing = iptables(&["-t", "nat", "-S", CHAIN]).await?;
    for line in listing.lines() {
        let Some(spec) = line.strip_prefix(&format!("-A {CHAIN} ")) else {
            continue;
        };
        let args = split_rule(spec);
        let src = args
            .iter()
            .position(|a| a == "-s")
            .and_then(|i| args.get(i + 1))
            .map(|s| s.trim_end_matches("/32").to_string());
        if src.is_none_or(|ip| live.contains(&ip)) {
            continue;
        }
        let mut del: Vec<&str> = vec!["-t", "nat", "-D", CHAIN];
        del.extend(args.iter().map(String::as_str));
        if let Err(e) = iptables(&del).await {
            tracing::warn!(error = %e, "cannot delete a stale metadata DNAT rule");
        }
    }
    Ok(())
}

/// Remove every rule of this instance (clean shutdown).
pub async fn uninstall(instance: &str) -> Result<(), DnatError> {
    remove_matching(&format!("berth-meta {instance} ")).await
}

/// Delete each rule of the chain whose comment starts with `prefix` (a trailing space ends
/// the instance/task word so `i-1` does not match `i-10`).
async fn remove_matching(prefix: &str) -> Result<(), DnatError> {
    let listing = iptables(&["-t", "nat", "-S", CHAIN]).await?;
    for line in listing.lines() {
        let Some(spec) = line.strip_prefix(&format!("-A {CHAIN} ")) else {
            continue;
        };
        let Some(c) = comment_of(spec) else { continue };
        if !format!("{c} ").starts_with(prefix) {
            continue;
        }
        let args = split_rule(spec);
        let mut del: Vec<&str> = vec!["-t", "nat", "-D", CHAIN];
        del.extend(args.iter().map(String::as_str));
        if let Err(e) = iptables(&del).await {
            tracing::warn!(error = %e, "cannot delete a metadata DNAT rule");
        }
    }
    Ok(())
}

/// The comment of an `iptables -S` rule line (`--comment "a b c"`).
fn comment_of(spec: &str) -> Option<&str> {
    let rest = spec.split_once("--comment \"")?.1;
    rest.split_once('"').map(|(c, _)| c)
}

/// Split an `iptables -S` rule into arguments (double quotes group words).
fn split_rule(spec: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for ch in spec.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_lines_split_and_comments_are_found() {
        let s = r#"-s 172.17.0.5/32 -d 169.254.170.2/32 -p tcp -m tcp --dport 80 -m comment --comment "berth-meta i-1 t1" -j DNAT --to-destination 172.17.0.1:4000"#;
        assert_eq!(comment_of(s), Some("berth-meta i-1 t1"));
        let a = split_rule(s);
        assert!(a.contains(&"berth-meta i-1 t1".to_string()));
        assert_eq!(a.last().map(String::as_str), Some("172.17.0.1:4000"));
        assert!(!"berth-meta i-10 t1 ".starts_with("berth-meta i-1 "));
    }
}
