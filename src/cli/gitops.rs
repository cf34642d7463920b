//! GitOps on the command line: `berth apply --prune`, `berth diff`, `berth sync status`.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::{Client, ClientError};
use super::output;
use berth_core::apply::{self, Stamp};
use berth_core::gitops::{diff as differ, git};
use berth_core::manifest::{self, Document};

#[derive(Subcommand, Debug)]
pub enum SyncCommand {
    /// Each source's sync status: Synced/OutOfSync, last applied and attempted commit, per-object
    /// results and errors (with file, document, field and line).
    #[command(
        after_help = "Examples:\n  berth sync status\n  berth sync status manifests -o json"
    )]
    Status {
        /// One source, in full detail.
        name: Option<String>,
        #[arg(short = 'o', long = "output")]
        output: Option<String>,
    },
}

fn load(path: &Path) -> Result<Vec<Document>, ExitCode> {
    match manifest::load_path(path) {
        Ok(d) if d.is_empty() => {
            eprintln!("error: no manifests found in {}", path.display());
            Err(ExitCode::from(1))
        }
        Ok(d) => Ok(d),
        Err(errs) => {
            output::print_manifest_errors(&errs);
            Err(ExitCode::from(1))
        }
    }
}

/// The git commit and dirty state of the work tree holding `path` (None, false outside one).
fn git_state(path: &Path) -> (Option<String>, bool) {
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    };
    match git::detect(&dir) {
        Ok(Some(_)) => (
            git::head(&dir).ok().flatten(),
            git::dirty(&dir).unwrap_or(false),
        ),
        _ => (None, false),
    }
}

/// `berth apply -f PATH --prune [--source NAME] [--dry-run]`: apply the folder as a source —
/// stamped with ownership, extraneous objects of the same source pruned — in one transaction.
/// `berth apply`'s flags for a source apply.
pub struct SourceFlags {
    pub dry_run: bool,
    pub prune: bool,
    pub take_over: bool,
}

/// The default source name of `path`: unique per folder, except that a folder recorded by an
/// earlier `apply --prune` under its plain base name keeps that name (and so its objects).
async fn default_name(c: &Client, path: &Path) -> String {
    let legacy = apply::legacy_source_name(path);
    let shown = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if let Ok(v) = c.get(&format!("/v1/sources/{legacy}")).await {
        if v["spec"]["kind"] == "apply" && v["spec"]["path"] == shown.display().to_string() {
            return legacy;
        }
    }
    apply::default_source_name(path)
}

pub async fn apply(
    c: &Client,
    path: &Path,
    flags: &SourceFlags,
    source: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let SourceFlags {
        dry_run,
        prune,
        take_over,
    } = *flags;
    let mut docs = match load(path) {
        Ok(d) => d,
        Err(code) => {
            eprintln!("nothing was applied");
            return Ok(code);
        }
    };
    let name = match source {
        Some(s) => s.to_string(),
        None => default_name(c, path).await,
    };
    if let Err(e) = apply::validate_source_name(&name) {
        eprintln!("error: --source: {e}");
        return Ok(ExitCode::from(1));
    }
    let (commit, dirty) = git_state(path);
    apply::stamp(
        &mut docs,
        &path.display().to_string(),
        &Stamp {
            source: name.clone(),
            commit: commit.clone(),
            dirty,
        },
    );
    let shown = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let body = json!({
        "documents": docs,
        "dryRun": dry_run,
        "prune": prune,
        "path": shown.display().to_string(),
        "commit": commit,
        "dirty": dirty,
        "takeOver": take_over,
    });
    let answer = c.post(&format!("/v1/sources/{name}/apply"), &body).await;
    Ok(output::apply_report(answer, dry_run))
}

/// `berth diff -f PATH`: desired (the manifests) against stored, as a unified diff of YAML.
/// Exit 0: the same; 1: different; 2: an error (bad manifests, server unreachable).
pub async fn diff(c: &Client, path: &Path) -> ExitCode {
    let docs = match load(path) {
        Ok(d) => d,
        Err(_) => return ExitCode::from(2),
    };
    // Services a scaling policy drives: their desiredCount is the policy's, not the manifest's
    // (apply keeps the stored count), so it is not a difference.
    let policies: Vec<Value> = match c.get("/v1/scalingpolicies").await {
        Ok(Value::Array(a)) => a,
        _ => vec![],
    };
    let mut different = 0usize;
    for d in &docs {
        let kind = d.kind();
        let label = format!("{}/{}", kind.as_str().to_ascii_lowercase(), d.name());
        let stored = match c.get(&format!("/v1/{}/{}", kind.plural(), d.name())).await {
            Ok(v) => Some(v),
            Err(ClientError::Api { status: 404, .. }) => None,
            Err(e) => {
                eprintln!("error: {label}: {e}");
                return ExitCode::from(2);
            }
        };
        let mut desired = match serde_json::to_value(&d.resource) {
            Ok(v) => differ::projection(&v),
            Err(e) => {
                eprintln!("error: {}: {e}", d.source);
                return ExitCode::from(2);
            }
        };
        if let (Some(stored), Some(policy)) = (
            stored
                .as_ref()
                .filter(|_| kind == berth_core::model::Kind::Service),
            policies
                .iter()
                .find(|p| p["spec"]["service"].as_str() == Some(d.name())),
        ) {
            let kept = &stored["spec"]["desiredCount"];
            if desired["spec"]["desiredCount"] != *kept {
                eprintln!(
                    "note: {label}: desiredCount is managed by scaling policy {} (stays {kept})",
                    policy["metadata"]["name"].as_str().unwrap_or("?")
                );
                desired["spec"]["desiredCount"] = kept.clone();
            }
        }
        let new_text = differ::to_yaml(&desired);
        let new_name = format!("{label} (desired: {})", d.source);
        let (old_text, old_name, note) = match &stored {
            None => (
                String::new(),
                format!("{label} (stored: none; apply creates it)"),
                None,
            ),
            Some(v) => {
                let inactive = v["kind"] == "TaskDefinition" && v["status"]["status"] == "INACTIVE";
                (
                    differ::to_yaml(&differ::projection(v)),
                    format!(
                        "{label} (stored{})",
                        v["metadata"]["revision"]
                            .as_i64()
                            .map(|r| format!(", revision {r}"))
                            .unwrap_or_default()
                    ),
                    inactive.then(|| {
                        format!(
                            "# {label}: the stored family is INACTIVE (deleted); apply registers a new revision"
                        )
                    }),
                )
            }
        };
        let text = differ::unified(&old_text, &new_text, &old_name, &new_name, 3);
        if !text.is_empty() || note.is_some() {
            different += 1;
            if let Some(n) = note {
                println!("{n}");
            }
            print!("{text}");
        }
    }
    if different > 0 {
        eprintln!(
            "{different} of {} object(s) differ from the store",
            docs.len()
        );
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn ago(at: &Value) -> String {
    let Some(t) = at
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    else {
        return "-".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86400),
    }
}

fn commit(v: &Value) -> String {
    match v["commit"].as_str() {
        Some(c) => format!(
            "{}{}",
            git::short(c),
            if v["dirty"].as_bool() == Some(true) {
                "+dirty"
            } else {
                ""
            }
        ),
        None => "-".into(),
    }
}

fn object_line(o: &Value) -> String {
    let at = match (o["file"].as_str(), o["document"].as_u64()) {
        (Some(f), Some(d)) => format!(" ({f}: document {d})"),
        (Some(f), None) => format!(" ({f})"),
        _ => String::new(),
    };
    let result = o["result"].as_str().unwrap_or("?");
    let what = if o["sync"] == "OutOfSync" {
        match result {
            "created" => "OutOfSync: missing from the store (a sync creates it)".to_string(),
            "configured" => {
                "OutOfSync: differs from its manifest (a sync configures it)".to_string()
            }
            other => format!("OutOfSync ({other})"),
        }
    } else {
        format!("Synced ({result})")
    };
    format!(
        "  {}/{}{at}: {what}",
        o["kind"].as_str().unwrap_or("?").to_ascii_lowercase(),
        o["name"].as_str().unwrap_or("?")
    )
}

/// `berth sync status [NAME] [-o json|yaml|wide]`.
pub async fn sync(c: &Client, cmd: &SyncCommand) -> anyhow::Result<ExitCode> {
    let SyncCommand::Status { name, output } = cmd;
    let v = match name {
        Some(n) => c.get(&format!("/v1/sources/{n}")).await?,
        None => c.get("/v1/sources").await?,
    };
    match output.as_deref() {
        Some("json") => {
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(ExitCode::SUCCESS);
        }
        Some("yaml") => {
            print!("{}", serde_yaml::to_string(&v)?);
            return Ok(ExitCode::SUCCESS);
        }
        None | Some("wide") => {}
        Some(other) => anyhow::bail!("unknown output format {other:?}; use json, yaml or wide"),
    }
    let sources = match &v {
        Value::Array(a) => a.clone(),
        one => vec![one.clone()],
    };
    if sources.is_empty() {
        println!("no sources (start berth with --manifests DIR, or apply a folder with --prune)");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 6]> = sources
        .iter()
        .map(|s| {
            let st = &s["status"];
            let applied = &st["lastApplied"];
            let attempt = &st["lastAttempt"];
            [
                s["metadata"]["name"].as_str().unwrap_or("?").to_string(),
                s["spec"]["kind"].as_str().unwrap_or("?").to_string(),
                st["sync"].as_str().unwrap_or("Unknown").to_string(),
                if applied.is_null() {
                    "-".into()
                } else {
                    format!("{} {}", commit(applied), ago(&applied["at"]))
                },
                if attempt.is_null() {
                    "-".into()
                } else {
                    format!(
                        "{} {} {}",
                        attempt["result"].as_str().unwrap_or("?"),
                        commit(attempt),
                        ago(&attempt["at"])
                    )
                },
                s["spec"]["path"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    let header = [
        "SOURCE",
        "KIND",
        "SYNC",
        "LAST APPLIED",
        "LAST ATTEMPT",
        "PATH",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
    for s in &sources {
        let st = &s["status"];
        let name = s["metadata"]["name"].as_str().unwrap_or("?");
        let objects: Vec<&Value> = st["objects"].as_array().into_iter().flatten().collect();
        let errors: Vec<&Value> = st["lastAttempt"]["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        let failed = st["lastAttempt"]["result"] == "Failed";
        let shown: Vec<&&Value> = objects
            .iter()
            .filter(|o| name_given(cmd) || o["sync"] == "OutOfSync")
            .collect();
        let extraneous: Vec<&Value> = st["extraneous"].as_array().into_iter().flatten().collect();
        let message = st["message"].as_str().unwrap_or("");
        if shown.is_empty() && !failed && extraneous.is_empty() && message.is_empty() {
            continue;
        }
        println!();
        println!(
            "{name}: {}{}",
            st["sync"].as_str().unwrap_or("Unknown"),
            if message.is_empty() {
                String::new()
            } else {
                format!(" — {message}")
            }
        );
        if failed {
            for e in &errors {
                match serde_json::from_value::<manifest::ManifestError>((*e).clone()) {
                    Ok(me) => println!("  error: {me}"),
                    Err(_) => println!("  error: {e}"),
                }
            }
        }
        for o in shown {
            println!("{}", object_line(o));
        }
        for e in extraneous {
            println!(
                "  {}/{}: extraneous: {}",
                e["kind"].as_str().unwrap_or("?").to_ascii_lowercase(),
                e["name"].as_str().unwrap_or("?"),
                e["reason"].as_str().unwrap_or("")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn name_given(cmd: &SyncCommand) -> bool {
    matches!(cmd, SyncCommand::Status { name: Some(_), .. })
}
