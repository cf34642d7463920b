//! Issue 13 item 2: Secrets. A value reaches the container's environment and nowhere else:
//! not the store's files (embedded) nor etcd, not `get`/`describe`, not the audit trail, not
//! berth's log; a role needs `berth:GetSecretValue` (which `berth:Get*` does not grant) to read
//! one; a missing secret fails the task with a clear reason; the data key is a private file.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::berth::*;
use common::manifests::*;
use serde_json::Value;

fn secret_doc(name: &str, data: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = data.iter().map(|(k, v)| format!("{k}: \"{v}\"")).collect();
    format!(
        "apiVersion: berth.dev/v1\nkind: Secret\nmetadata: {{name: {name}}}\nspec:\n  data: {{{}}}\n",
        pairs.join(", ")
    )
}

/// A service of one `sleep` container with `secrets` lines.
fn app_with_secrets(name: &str, secrets: &str) -> String {
    let td = task_definition(
        name,
        [container("app", &["sleep", "3600"])
            .memory(32)
            .stop_timeout(1)
            .with(&format!("secrets: {secrets}"))],
    );
    documents(&[td.to_string(), service(name, name, 1, &[])])
}

/// Every file under `dir`, recursively, as bytes.
fn all_bytes(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            all_bytes(&p, out);
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p.display().to_string(), b));
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn env_of(container: &str) -> Vec<String> {
    docker_inspect(container)["Config"]["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn status(port: u16, path: &str, token: &str) -> (u16, Value) {
    let h = vec![("Authorization".to_string(), format!("Bearer {token}"))];
    let (s, _, b) = http_raw(port, "GET", path, &h, b"").expect("the API answers");
    (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
}

fn identity_token(b: &Berth, name: &str, role: &str) -> String {
    let v: Value = serde_json::from_str(&b.cli_ok(&[
        "auth", "identity", "create", name, "--role", role, "-o", "json",
    ]))
    .unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// The stopped task of `service` (its first), waiting up to `timeout`.
fn stopped_task(b: &Berth, service: &str, timeout: Duration) -> Value {
    wait_for(&format!("a stopped task of {service}"), timeout, || {
        b.get_json(&["tasks", "--service", service])
            .as_array()?
            .iter()
            .find(|t| t["status"]["lastStatus"] == "STOPPED")
            .cloned()
    })
}

#[test]
fn a_secret_reaches_the_container_env_and_nowhere_else() {
    let b = Berth::up(None);
    let name = unique("sec");
    let db = format!("{name}-db");
    let password = unique("pw-plaintext");
    let user = unique("user-plaintext");
    let secrets = format!(
        "[{{name: DB_PASSWORD, valueFrom: \"{db}:password\"}}, \
         {{name: DB_USER, valueFrom: \"arn:aws:secretsmanager:us-east-1:000000000000:secret:{db}:username::\"}}, \
         {{name: TOKEN, valueFrom: \"{db}-one\"}}]"
    );
    let token_value = unique("tok-plaintext");
    let dir = manifest_dir(&[
        (
            "secret.yaml",
            documents(&[
                secret_doc(&db, &[("password", &password), ("username", &user)]),
                secret_doc(&format!("{db}-one"), &[("token", &token_value)]),
            ]),
        ),
        ("app.yaml", app_with_secrets(&name, &secrets)),
    ]);
    b.apply(dir.path());
    let task = b.wait_running(&name, 1, Duration::from_secs(90)).remove(0);
    let c = b.container_of(&name_of(&task), Some("app"));
    let env = env_of(&c);
    assert!(env.contains(&format!("DB_PASSWORD={password}")), "{env:?}");
    assert!(env.contains(&format!("DB_USER={user}")), "{env:?}");
    assert!(env.contains(&format!("TOKEN={token_value}")), "{env:?}");

    // A re-apply of the same values changes nothing (no new ciphertext).
    let again = b.apply(dir.path());
    assert!(!again.contains("configured"), "{again}");

    // The API shows names and keys, never a value nor a ciphertext.
    let listed = b.cli_ok(&["get", "secrets", "-o", "json"]);
    let one = b.get_json(&["secret", &db]);
    assert_eq!(
        one["spec"]["keys"],
        serde_json::json!(["password", "username"])
    );
    let table = b.cli_ok(&["get", "secrets"]);
    assert!(
        table.contains(&db) && table.contains("password,username"),
        "{table}"
    );
    let described = b.cli_ok(&["describe", "secret", &db]);
    for shown in [&listed, &one.to_string(), &table, &described] {
        assert!(
            !shown.contains(&password) && !shown.contains(&user),
            "{shown}"
        );
        assert!(
            !shown.contains("ciphertext") && !shown.contains("nonce"),
            "{shown}"
        );
    }

    // Values: only with berth:GetSecretValue (admin's berth:* has it; berth:Get* does not).
    let admin = b.token();
    let (s, v) = status(
        b.port,
        &format!("/v1/secrets/{db}/value?key=password"),
        &admin,
    );
    assert_eq!(
        (s, v["value"].as_str()),
        (200, Some(password.as_str())),
        "{v}"
    );
    let roles = "apiVersion: berth.dev/v1\nkind: Role\nmetadata: {name: reader}\nspec:\n  statements:\n    - {effect: Allow, actions: [\"berth:Describe*\", \"berth:List*\", \"berth:Get*\"], resources: [\"*\"]}\n---\napiVersion: berth.dev/v1\nkind: Role\nmetadata: {name: secret-reader}\nspec:\n  statements:\n    - {effect: Allow, actions: [\"berth:GetSecretValue\"], resources: [\"secret/*\"]}\n";
    b.apply(manifest_dir(&[("roles.yaml", roles.to_string())]).path());
    let reader = identity_token(&b, "viewer", "reader");
    let (s, v) = status(b.port, &format!("/v1/secrets/{db}"), &reader);
    assert_eq!(s, 200, "a reader describes a secret: {v}");
    let (s, v) = status(b.port, &format!("/v1/secrets/{db}/value"), &reader);
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["action"], "berth:GetSecretValue", "{v}");
    assert!(!v.to_string().contains(&password));
    let allowed = identity_token(&b, "deployer", "secret-reader");
    let (s, v) = status(b.port, &format!("/v1/secrets/{db}/value"), &allowed);
    assert_eq!(
        (s, v["data"]["username"].as_str()),
        (200, Some(user.as_str())),
        "{v}"
    );

    // The audit trail has the apply of the secret, and never its value.
    let audit = b.cli_ok(&["audit", "-o", "json"]);
    assert!(
        audit.contains(&format!("secret/{db}")),
        "the apply is audited"
    );
    assert!(!audit.contains(&password) && !audit.contains(&user) && !audit.contains(&token_value));

    // Nothing berth wrote in its data dir holds a plaintext: store files, key, log.
    let mut files = Vec::new();
    all_bytes(b.data.path(), &mut files);
    assert!(files.iter().any(|(p, _)| p.contains("store")), "{files:?}");
    for (p, bytes) in &files {
        for plain in [&password, &user, &token_value] {
            assert!(!contains(bytes, plain), "{p} holds a secret value");
        }
    }
    // The data key: a private file beside the store, not in it.
    use std::os::unix::fs::PermissionsExt;
    let key = b.data.path().join("secrets.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let key_hex = std::fs::read_to_string(&key).unwrap();
    for (p, bytes) in files.iter().filter(|(p, _)| p.contains("/store")) {
        assert!(!contains(bytes, key_hex.trim()), "{p} holds the data key");
    }
    remove_containers_with_label(&format!("berth.service={name}"));
}

#[test]
fn a_missing_secret_or_key_fails_the_task_with_a_clear_reason() {
    let b = Berth::up(None);
    let name = unique("nosec");
    let missing = format!("{name}-absent");
    b.apply(
        manifest_dir(&[(
            "app.yaml",
            app_with_secrets(&name, &format!("[{{name: X, valueFrom: {missing}}}]")),
        )])
        .path(),
    );
    let t = stopped_task(&b, &name, Duration::from_secs(60));
    assert_eq!(t["status"]["stopCode"], "TaskFailedToStart", "{t}");
    let reason = t["status"]["stoppedReason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("ResourceInitializationError:")
            && reason.contains(&format!("secret {missing} not found")),
        "{reason}"
    );

    // A key the secret does not have names the keys it has.
    let other = unique("nokey");
    let s = format!("{other}-s");
    b.apply(
        manifest_dir(&[
            ("s.yaml", secret_doc(&s, &[("a", "1"), ("b", "2")])),
            (
                "app.yaml",
                app_with_secrets(&other, &format!("[{{name: X, valueFrom: \"{s}:c\"}}]")),
            ),
        ])
        .path(),
    );
    let t = stopped_task(&b, &other, Duration::from_secs(60));
    let reason = t["status"]["stoppedReason"].as_str().unwrap_or("");
    assert!(
        reason.contains(&format!("secret {s} has no key c (it has: a, b)")),
        "{reason}"
    );

    // Bad manifests are refused with their field.
    let o = b.try_apply(
        manifest_dir(&[(
            "bad.yaml",
            secret_doc(&format!("{other}-bad"), &[("no spaces", "hunter2-plain")]),
        )])
        .path(),
    );
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("spec.data.no spaces") && !err.contains("hunter2-plain"),
        "{err}"
    );

    // Deleted by name: gone from the store.
    b.cli_ok(&["delete", "secret", &s]);
    assert!(b.try_get_json(&["secret", &s]).is_none());
}

#[test]
fn a_readable_key_file_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let key = data.path().join("secrets.key");
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = tempfile::tempdir().unwrap();
    let mut child = Command::new(berth_bin())
        .args(["up", "--data-dir"])
        .arg(data.path())
        .args(["--api", &format!("127.0.0.1:{}", free_port())])
        .args(["--instance-id", &unique("keyperm")])
        .env("XDG_CONFIG_HOME", cfg.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("berth up started with a world-readable secrets key");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!st.success());
    assert!(
        err.contains("secrets key") && err.contains("chmod 600"),
        "{err}"
    );

    // An explicit --secrets-key-file must exist.
    let o = Command::new(berth_bin())
        .args(["server", "--data-dir"])
        .arg(data.path())
        .args(["--api", &format!("127.0.0.1:{}", free_port())])
        .arg("--secrets-key-file")
        .arg(data.path().join("absent.key"))
        .env("XDG_CONFIG_HOME", cfg.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("give every control plane the same file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn etcd_holds_only_ciphertext() {
    let etcd = common::etcd::EtcdServer::start();
    let b = Berth::up(Some(etcd.url()));
    let name = unique("esec");
    let value = unique("etcd-plaintext");
    b.apply(manifest_dir(&[("s.yaml", secret_doc(&name, &[("value", &value)]))]).path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (kvs, _) = rt.block_on(async {
        let store = berth::store::open(&etcd.url()).await.unwrap();
        store.range("/berth/").await.unwrap()
    });
    let stored = kvs
        .iter()
        .find(|kv| kv.key == format!("/berth/secrets/{name}"))
        .expect("the secret is in etcd");
    let v: Value = serde_json::from_slice(&stored.value).unwrap();
    assert!(v["spec"]["data"]["value"]["ciphertext"].is_string(), "{v}");
    for kv in &kvs {
        assert!(
            !contains(&kv.value, &value),
            "{} holds the plaintext",
            kv.key
        );
    }
}

/// A joined agent (`berth agent --server`, no store, no data key) gets its task's values from
/// the API, and only through the task route: the store routes refuse the Secret's key, and
/// another task's secrets are refused.
#[test]
fn a_joined_agent_gets_values_only_for_its_own_tasks() {
    let token_file = tempfile::NamedTempFile::new().unwrap();
    let b = Berth::up_with(
        None,
        vec![
            "--agent-join-token-file".into(),
            token_file.path().display().to_string(),
        ],
    );
    let cluster = unique("joined");
    let instance = unique("ja");
    let data = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(data.path().join("agent.log")).unwrap();
    let mut agent = Command::new(berth_bin())
        .args([
            "agent",
            "--server",
            &b.endpoint(),
            "--instance-id",
            &instance,
        ])
        .args(["--cluster", &cluster, "--lease-ttl", "3s"])
        .arg("--join-token-file")
        .arg(token_file.path())
        .arg("--data-dir")
        .arg(data.path().join("agent"))
        .env_remove("BERTH_JOIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let name = unique("jsec");
    let db = format!("{name}-db");
    let value = unique("joined-plaintext");
    let td = task_definition(
        &name,
        [container("app", &["sleep", "3600"])
            .memory(32)
            .stop_timeout(1)
            .with(&format!("secrets: [{{name: DB, valueFrom: {db}}}]"))],
    );
    let docs = documents(&[
        format!("apiVersion: berth.dev/v1\nkind: Cluster\nmetadata: {{name: {cluster}}}\n"),
        secret_doc(&db, &[("value", &value)]),
        td.to_string(),
        service(&name, &name, 1, &[&format!("cluster: {cluster}")]),
    ]);
    b.apply(manifest_dir(&[("m.yaml", docs)]).path());
    let task = b.wait_running(&name, 1, Duration::from_secs(120)).remove(0);
    assert_eq!(task["status"]["containerInstance"], instance.as_str());
    let c = containers_with_label(&format!("berth.task={}", name_of(&task)))
        .into_iter()
        .find(|c| c.0.ends_with("-app"))
        .expect("the task's container")
        .0;
    assert!(env_of(&c).contains(&format!("DB={value}")));

    // The agent's own credential: no raw read of the Secret, no other task's secrets.
    let cred: Value = serde_json::from_slice(
        &std::fs::read(data.path().join("agent").join("agent-credential.json")).unwrap(),
    )
    .unwrap();
    let cred = cred["credential"].as_str().unwrap().to_string();
    let h = vec![
        ("Authorization".to_string(), format!("Bearer {cred}")),
        ("x-berth-instance".to_string(), instance.clone()),
        ("Content-Type".to_string(), "application/json".to_string()),
    ];
    let body = serde_json::json!({"key": format!("/berth/secrets/{db}")}).to_string();
    let (s, _, v) = http_raw(b.port, "POST", "/v1/agent/store/get", &h, body.as_bytes()).unwrap();
    assert_eq!(s, 403, "{v}");
    let body = serde_json::json!({"prefix": "/berth/secrets/"}).to_string();
    let (s, _, v) = http_raw(b.port, "POST", "/v1/agent/store/range", &h, body.as_bytes()).unwrap();
    assert!(s == 403 || !v.contains("ciphertext"), "{s} {v}");
    // A task of the in-process agent (another instance) with the same secret.
    let other = unique("jother");
    let td = task_definition(
        &other,
        [container("app", &["sleep", "3600"])
            .memory(32)
            .stop_timeout(1)
            .with(&format!("secrets: [{{name: DB, valueFrom: {db}}}]"))],
    );
    b.apply(
        manifest_dir(&[(
            "o.yaml",
            documents(&[td.to_string(), service(&other, &other, 1, &[])]),
        )])
        .path(),
    );
    let theirs = b.wait_running(&other, 1, Duration::from_secs(90)).remove(0);
    let (s, _, v) = http_raw(
        b.port,
        "GET",
        &format!("/v1/agent/tasks/{}/secrets", name_of(&theirs)),
        &h[..2],
        b"",
    )
    .unwrap();
    assert_eq!(s, 403, "{v}");
    assert!(!v.contains(&value));
    let audit = b.cli_ok(&["audit", "-o", "json"]);
    assert!(audit.contains("berth:AgentGetTaskSecrets") && !audit.contains(&value));

    let _ = agent.kill();
    let _ = agent.wait();
    remove_containers_with_label(&format!("berth.instance={instance}"));
    remove_containers_with_label(&format!("berth.service={other}"));
}

/// A watched manifest folder (`berth up --manifests`) seals its Secrets with the same key, and
/// a re-sync of an unchanged folder leaves the stored ciphertext alone.
#[test]
fn a_manifest_folder_applies_secrets_sealed() {
    let name = unique("gsec");
    let db = format!("{name}-db");
    let value = unique("gitops-plaintext");
    let dir = manifest_dir(&[
        ("s.yaml", secret_doc(&db, &[("value", &value)])),
        (
            "app.yaml",
            app_with_secrets(&name, &format!("[{{name: DB, valueFrom: {db}}}]")),
        ),
    ]);
    let b = Berth::up_with(
        None,
        vec!["--manifests".into(), dir.path().display().to_string()],
    );
    let task = b.wait_running(&name, 1, Duration::from_secs(90)).remove(0);
    let c = b.container_of(&name_of(&task), Some("app"));
    assert!(env_of(&c).contains(&format!("DB={value}")));
    let rev = b.get_json(&["secret", &db])["metadata"]["revision"].clone();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(b.get_json(&["secret", &db])["metadata"]["revision"], rev);
    let mut files = Vec::new();
    all_bytes(b.data.path(), &mut files);
    for (p, bytes) in &files {
        assert!(!contains(bytes, &value), "{p} holds the value");
    }
    remove_containers_with_label(&format!("berth.service={name}"));
}
