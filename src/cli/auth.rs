//! `berth auth …` and `berth audit`, and SigV4 signing of the CLI's requests.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::Client;
use berth_core::util::percent;

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Print the bearer token this CLI uses (for scripts: `curl -H "Authorization: Bearer $(berth auth token)"`).
    #[command(
        after_help = "Examples:\n  berth auth token\n  curl -H \"Authorization: Bearer $(berth auth token)\" http://127.0.0.1:7400/v1/services"
    )]
    Token,
    /// Show who the server thinks you are.
    #[command(after_help = "Examples:\n  berth auth whoami\n  berth auth whoami -o json")]
    Whoami {
        #[arg(short = 'o', long = "output")]
        output: Option<String>,
    },
    /// Manage identities (people, CI).
    #[command(
        after_help = "Examples:\n  berth auth identity create ci --role deployer\n  berth auth identity list -o wide"
    )]
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Would the server allow ACTION on RESOURCE for you? Prints yes/no; exit 0 yes, 1 no.
    #[command(after_help = "Examples:\n  berth auth can-i berth:DeleteService service/web")]
    CanI {
        /// e.g. berth:DeleteService
        action: String,
        /// e.g. service/web (default *)
        resource: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum IdentityCommand {
    /// Create an identity bound to a role; prints its token (and access key) once.
    #[command(after_help = "Examples:\n  berth auth identity create ci --role deployer")]
    Create {
        name: String,
        #[arg(long)]
        role: String,
        #[arg(short = 'o', long = "output")]
        output: Option<String>,
    },
    /// List identities (never their secrets).
    #[command(
        after_help = "Examples:\n  berth auth identity list\n  berth auth identity list -o yaml"
    )]
    List {
        #[arg(short = 'o', long = "output")]
        output: Option<String>,
    },
    /// Delete an identity; its token and access key stop working at once.
    #[command(after_help = "Examples:\n  berth auth identity delete ci")]
    Delete { name: String },
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only calls by this identity (`admin`, `task/<id>`, `anonymous`).
    #[arg(long)]
    pub identity: Option<String>,
    /// Only this action (wildcards allowed: `berth:Delete*`).
    #[arg(long)]
    pub action: Option<String>,
    /// Only since this time (RFC 3339) or this long ago (`10m`, `2h`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only calls made with (or fetching) this task's credentials.
    #[arg(long)]
    pub task: Option<String>,
    /// allowed, denied or unauthenticated.
    #[arg(long)]
    pub decision: Option<String>,
    /// Newest N records (default 1000).
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(short = 'o', long = "output")]
    pub output: Option<String>,
}

fn print_json(v: &Value, output: Option<&str>) -> anyhow::Result<bool> {
    match output {
        Some("json") => println!("{}", serde_json::to_string_pretty(v)?),
        Some("yaml") => print!("{}", serde_yaml::to_string(v)?),
        None | Some("wide") => return Ok(false),
        Some(o) => anyhow::bail!("unknown output format {o:?}; use json, yaml or wide"),
    }
    Ok(true)
}

pub async fn run(c: &Client, cmd: &AuthCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuthCommand::Token => match c.token() {
            Some(t) => println!("{t}"),
            None => anyhow::bail!(
                "no token: pass --token, set BERTH_TOKEN, or run `berth up` (it writes one to {})",
                super::client::config_path().display()
            ),
        },
        AuthCommand::Whoami { output } => {
            let v = c.get("/v1/auth/whoami").await?;
            if !print_json(&v, output.as_deref())? {
                println!(
                    "{} (role {}, via {})",
                    v["identity"].as_str().unwrap_or("?"),
                    v["role"].as_str().unwrap_or("?"),
                    v["authMethod"].as_str().unwrap_or("?")
                );
            }
        }
        AuthCommand::Identity(IdentityCommand::Create { name, role, output }) => {
            let v = c
                .post("/v1/auth/identities", &json!({"name": name, "role": role}))
                .await?;
            if !print_json(&v, output.as_deref())? {
                println!("identity {name} created with role {role}");
                println!("token: {}", v["token"].as_str().unwrap_or(""));
                println!("accessKeyId: {}", v["accessKeyId"].as_str().unwrap_or(""));
                println!(
                    "secretAccessKey: {}",
                    v["secretAccessKey"].as_str().unwrap_or("")
                );
                eprintln!("(shown once: berth keeps only a hash of the token)");
            }
        }
        AuthCommand::Identity(IdentityCommand::List { output }) => {
            let v = c.get("/v1/auth/identities").await?;
            if !print_json(&v, output.as_deref())? {
                println!("{:<24} {:<16} {:<22} CREATED", "NAME", "ROLE", "ACCESS KEY");
                for i in v.as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<16} {:<22} {}",
                        i["name"].as_str().unwrap_or(""),
                        i["role"].as_str().unwrap_or(""),
                        i["accessKeyId"].as_str().unwrap_or("-"),
                        i["createdAt"].as_str().unwrap_or("")
                    );
                }
            }
        }
        AuthCommand::Identity(IdentityCommand::Delete { name }) => {
            c.delete(&format!(
                "/v1/auth/identities/{}",
                percent::encode(name, false)
            ))
            .await?;
            println!("identity/{name} deleted");
        }
        AuthCommand::CanI { action, resource } => {
            let v = c
                .post(
                    "/v1/auth/can-i",
                    &json!({"action": action, "resource": resource}),
                )
                .await?;
            let yes = v["allowed"].as_bool().unwrap_or(false);
            println!("{}", if yes { "yes" } else { "no" });
            if !yes && v["decision"] == "explicitDeny" {
                eprintln!(
                    "explicitly denied by {}",
                    v["statement"].as_str().unwrap_or("a statement")
                );
            }
            return Ok(if yes {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn audit(c: &Client, a: &AuditArgs) -> anyhow::Result<ExitCode> {
    let mut q = Vec::new();
    for (k, v) in [
        ("identity", &a.identity),
        ("action", &a.action),
        ("since", &a.since),
        ("task", &a.task),
        ("decision", &a.decision),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", percent::encode(v, false)));
        }
    }
    if let Some(l) = a.limit {
        q.push(format!("limit={l}"));
    }
    let path = if q.is_empty() {
        "/v1/audit".to_string()
    } else {
        format!("/v1/audit?{}", q.join("&"))
    };
    let v = c.get(&path).await?;
    if print_json(&v, a.output.as_deref())? {
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<28} {:<16} {:<30} {:<28} {:<6} DECISION",
        "TIME", "IDENTITY", "SOURCE", "ACTION", "RESOURCE", "STATUS"
    );
    for r in v.as_array().into_iter().flatten() {
        let resource = r["resources"][0]["resource"].as_str().unwrap_or("-");
        let time = r["eventTime"].as_str().unwrap_or("");
        println!(
            "{:<24} {:<28} {:<16} {:<30} {:<28} {:<6} {}",
            time.get(..23).unwrap_or(time),
            r["identity"].as_str().unwrap_or(""),
            r["sourceIp"].as_str().unwrap_or(""),
            r["action"].as_str().unwrap_or(""),
            resource,
            r["status"],
            r["decision"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Control-plane start: the server key, the `admin` role and identity. With `local_config`
/// (`berth up`), returns the admin token for the CLI config (the config's own token if it
/// still works). Otherwise (`berth server`) prints the admin token once, when it is created.
pub async fn bootstrap(
    store: &dyn berth_core::store::Store,
    local_config: bool,
) -> anyhow::Result<Option<String>> {
    let existing = if local_config {
        super::client::load_config().and_then(|c| c.token)
    } else {
        None
    };
    let (token, created) =
        berth_core::auth::identity::bootstrap_admin(store, existing.as_deref()).await?;
    if local_config {
        return Ok(Some(token));
    }
    if created {
        println!("admin token (shown once; berth stores only its hash): {token}");
    }
    Ok(None)
}
