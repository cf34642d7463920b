//! Security acceptance (issue 6), against a real `berth up` and Docker:
//! authentication (bearer, SigV4 incl. expiry, tampering and replay), authorization by Role
//! (403 naming the action), the audit trail (every refusal with its source IP), per-task
//! credentials fetched from inside a container, and the safe defaults at apply time.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use berth::auth::sigv4::{self, Credentials};
use chrono::{DateTime, Utc};
use common::berth::*;
use common::manifests::*;
use serde_json::Value;

const ROLES: &str = r#"apiVersion: berth.dev/v1
kind: Role
metadata: {name: reader}
spec:
  statements:
    - {effect: Allow, actions: ["berth:Describe*", "berth:List*", "berth:Get*"], resources: ["*"]}
"#;

/// The CLI as someone else: no config of `berth up`'s, only these variables.
fn cli_env(b: &Berth, envs: &[(&str, &str)], args: &[&str]) -> Output {
    let empty = tempfile::tempdir().unwrap();
    let mut c = Command::new(berth_bin());
    c.args(args)
        .env("BERTH_ENDPOINT", b.endpoint())
        .env("XDG_CONFIG_HOME", empty.path())
        .env_remove("BERTH_TOKEN")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("run berth")
}

fn bearer(t: &str) -> Vec<(String, String)> {
    vec![("Authorization".into(), format!("Bearer {t}"))]
}

/// SigV4-sign a request to this berth with `creds` as of `at`.
fn signed(
    port: u16,
    creds: &Credentials,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    at: DateTime<Utc>,
) -> Vec<(String, String)> {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut h = vec![("host".to_string(), format!("127.0.0.1:{port}"))];
    if !body.is_empty() {
        h.push(("content-type".into(), "application/json".into()));
    }
    sigv4::sign(
        creds,
        "us-east-1",
        method,
        path,
        query,
        &mut h,
        Some(body),
        at,
    );
    h
}

fn status(
    port: u16,
    method: &str,
    path: &str,
    h: &[(String, String)],
    body: &[u8],
) -> (u16, Value) {
    let (s, _, b) = http_raw(port, method, path, h, body).expect("the API answers");
    (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
}

fn audit(b: &Berth, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["audit"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    serde_json::from_str::<Value>(&b.cli_ok(&a))
        .expect("audit -o json prints JSON")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn apply_text(b: &Berth, name: &str, text: &str) -> Output {
    let dir = manifest_dir(&[(name, text.to_string())]);
    b.try_apply(dir.path())
}

#[test]
fn api_refuses_unauthenticated_and_unauthorized_calls_and_audits_them() {
    let b = Berth::up(None);
    let p = b.port;
    let admin = b.token();

    // The harness's probe needs none; everything else does.
    assert_eq!(status(p, "GET", "/healthz", &[], b"").0, 200);
    let (s, v) = status(p, "GET", "/v1/services", &[], b"");
    assert_eq!(s, 401, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("authentication required"),
        "{v}"
    );
    assert_eq!(v["action"], "berth:ListServices");
    assert_eq!(
        status(p, "GET", "/v1/services", &bearer("berth_0000"), b"").0,
        401
    );
    assert_eq!(
        status(
            p,
            "GET",
            "/v1/services",
            &[("Authorization".into(), "Basic YWRtaW46YWRtaW4=".into())],
            b""
        )
        .0,
        401
    );
    assert_eq!(status(p, "GET", "/metrics", &[], b"").0, 401);
    assert_eq!(
        status(p, "GET", "/v1/services", &bearer(&admin), b"").0,
        200
    );

    // `berth auth token` prints the CLI's token; whoami knows the admin.
    assert_eq!(b.cli_ok(&["auth", "token"]).trim(), admin);
    assert!(b.cli_ok(&["auth", "whoami"]).contains("admin (role admin"));

    // A reader identity: describe yes, delete no (403 naming the action).
    let o = apply_text(&b, "roles.yaml", ROLES);
    assert!(o.status.success(), "{}", stderr(&o));
    let created: Value = serde_json::from_str(&b.cli_ok(&[
        "auth", "identity", "create", "viewer", "--role", "reader", "-o", "json",
    ]))
    .unwrap();
    let viewer_token = created["token"].as_str().unwrap().to_string();
    let viewer = Credentials {
        access_key_id: created["accessKeyId"].as_str().unwrap().into(),
        secret_access_key: created["secretAccessKey"].as_str().unwrap().into(),
        session_token: None,
    };
    assert!(viewer.access_key_id.starts_with("AKIA"));
    let listed = b.cli_ok(&["auth", "identity", "list", "-o", "json"]);
    assert!(listed.contains("viewer") && !listed.contains(&viewer_token));
    assert!(!listed.contains(&viewer.secret_access_key));

    assert_eq!(
        status(p, "GET", "/v1/services", &bearer(&viewer_token), b"").0,
        200
    );
    let (s, v) = status(p, "DELETE", "/v1/services/web", &bearer(&viewer_token), b"");
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["action"], "berth:DeleteService");
    assert_eq!(v["resource"], "service/web");
    assert!(
        v["error"].as_str().unwrap().contains("berth:DeleteService"),
        "{v}"
    );
    // Escalation: a reader cannot apply (e.g. itself a new role) nor create identities.
    let o = cli_env(
        &b,
        &[("BERTH_TOKEN", &viewer_token)],
        &["auth", "identity", "create", "x", "--role", "admin"],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("berth:CreateIdentity"),
        "{}",
        stderr(&o)
    );

    // can-i answers for the caller.
    let o = cli_env(
        &b,
        &[("BERTH_TOKEN", &viewer_token)],
        &["auth", "can-i", "berth:DeleteService", "service/web"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o).trim(), "no");
    let o = cli_env(
        &b,
        &[("BERTH_TOKEN", &viewer_token)],
        &["auth", "can-i", "berth:DescribeService", "service/web"],
    );
    assert!(o.status.success());
    assert_eq!(stdout(&o).trim(), "yes");

    // SigV4 with the viewer's access key.
    let now = Utc::now();
    let h = signed(p, &viewer, "GET", "/v1/services?cluster=default", b"", now);
    let (s, v) = status(p, "GET", "/v1/services?cluster=default", &h, b"");
    assert_eq!(s, 200, "{v}");
    // Tampered: the same signature on another path, or a flipped signature digit.
    let (s, v) = status(p, "GET", "/v1/tasks?cluster=default", &h, b"");
    assert_eq!(s, 401, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("signature does not match"),
        "{v}"
    );
    let flipped: Vec<(String, String)> = h
        .iter()
        .map(|(n, v)| {
            if n == "authorization" {
                let last = if v.ends_with('0') { "1" } else { "0" };
                (n.clone(), format!("{}{last}", &v[..v.len() - 1]))
            } else {
                (n.clone(), v.clone())
            }
        })
        .collect();
    assert_eq!(
        status(p, "GET", "/v1/services?cluster=default", &flipped, b"").0,
        401
    );
    // Wrong secret.
    let wrong = Credentials {
        secret_access_key: "not-the-secret".into(),
        ..viewer.clone()
    };
    let hw = signed(p, &wrong, "GET", "/v1/services", b"", now);
    assert_eq!(status(p, "GET", "/v1/services", &hw, b"").0, 401);
    // Expired / replayed outside the 5-minute window (and dated in the future).
    for skew in [-6i64, 6] {
        let at = now + chrono::Duration::minutes(skew);
        let hx = signed(p, &viewer, "GET", "/v1/services", b"", at);
        let (s, v) = status(p, "GET", "/v1/services", &hx, b"");
        assert_eq!(s, 401, "{v}");
        assert!(v["error"].as_str().unwrap().contains("clock skew"), "{v}");
    }
    // A signed write is accepted once; its replay is refused.
    let body = br#"{"action":"berth:ListServices"}"#;
    let hp = signed(p, &viewer, "POST", "/v1/auth/can-i", body, now);
    assert_eq!(status(p, "POST", "/v1/auth/can-i", &hp, body).0, 200);
    let (s, v) = status(p, "POST", "/v1/auth/can-i", &hp, body);
    assert_eq!(s, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("replay"), "{v}");
    // The body is part of the signature.
    let hb = signed(p, &viewer, "POST", "/v1/auth/can-i", body, now);
    let other = br#"{"action":"berth:DeleteService"}"#;
    assert_eq!(status(p, "POST", "/v1/auth/can-i", &hb, other).0, 401);

    // The CLI signs with SigV4 when AWS_* are set and no token is given.
    let aws = [
        ("AWS_ACCESS_KEY_ID", viewer.access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", viewer.secret_access_key.as_str()),
    ];
    let o = cli_env(&b, &aws, &["get", "services", "-o", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cli_env(&b, &aws, &["auth", "whoami"]);
    assert!(
        stdout(&o).contains("viewer (role reader, via sigv4)"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let o = cli_env(&b, &aws, &["stop-task", "nope"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("berth:StopTask"), "{}", stderr(&o));

    // The dashboard: ?token= once, then a session cookie.
    let (_, head, _) = http_raw(p, "GET", &format!("/ui?token={admin}"), &[], b"").unwrap();
    assert!(!head.contains(" 401 "), "{head}");
    let cookie = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("berth_session="), "{cookie}");
    let (s, _, _) = http_raw(
        p,
        "GET",
        "/v1/services",
        &[("Cookie".into(), cookie.clone())],
        b"",
    )
    .unwrap();
    assert_eq!(s, 200);
    // Not for writes (no cross-site requests riding on the cookie).
    let (s, _, _) = http_raw(
        p,
        "DELETE",
        "/v1/services/web",
        &[("Cookie".into(), cookie)],
        b"",
    )
    .unwrap();
    assert_eq!(s, 401);

    // Every refusal is in the audit trail, with its source IP; secrets are not.
    let unauth = audit(&b, &["--decision", "unauthenticated"]);
    assert!(unauth.len() >= 8, "{unauth:?}");
    assert!(unauth
        .iter()
        .all(|r| r["sourceIp"] == "127.0.0.1" && r["status"] == 401));
    assert!(unauth
        .iter()
        .any(|r| r["accessKeyId"] == viewer.access_key_id.as_str()
            && r["errorMessage"]
                .as_str()
                .unwrap_or("")
                .contains("clock skew")));
    assert!(unauth
        .iter()
        .any(|r| r["errorMessage"].as_str().unwrap_or("").contains("replay")));
    let denied = audit(
        &b,
        &["--identity", "viewer", "--action", "berth:DeleteService"],
    );
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["decision"], "denied");
    assert_eq!(denied[0]["status"], 403);
    assert_eq!(denied[0]["sourceIp"], "127.0.0.1");
    let stops = audit(&b, &["--identity", "viewer", "--action", "berth:Stop*"]);
    assert!(stops
        .iter()
        .any(|r| r["authMethod"] == "sigv4" && r["status"] == 403));
    let created = audit(&b, &["--action", "berth:CreateIdentity", "--since", "10m"]);
    assert!(created.iter().any(|r| r["identity"] == "admin"
        && r["status"] == 201
        && r["responseElements"]["token"] == "[REDACTED]"));
    let everything = b.cli_ok(&["audit", "-o", "json", "--limit", "10000"]);
    for secret in [&viewer_token, &viewer.secret_access_key, &admin] {
        assert!(
            !everything.contains(secret.as_str()),
            "a secret leaked into the audit trail"
        );
    }
    let table = b.cli_ok(&["audit", "--decision", "denied"]);
    assert!(
        table.contains("berth:DeleteService") && table.contains("viewer"),
        "{table}"
    );
}

fn exec(container: &str, script: &str) -> Output {
    docker_sh(container, script)
}

/// The credentials endpoint's answer to a raw request from inside `container` (busybox nc).
fn nc_from(container: &str, url: &str, path: &str, auth: Option<&str>) -> String {
    let hostport = url.trim_start_matches("http://").split('/').next().unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\\r\\n"))
        .unwrap_or_default();
    let o = exec(
        container,
        // hyper closes on a half-closed request: keep nc's input open while it answers.
        &format!(
            "(printf 'GET {path} HTTP/1.0\\r\\n{auth}\\r\\n'; sleep 2) | nc -w 3 {host} {port}"
        ),
    );
    stdout(&o)
}

#[test]
fn task_role_credentials_are_fetched_inside_the_container_and_revoked_on_stop() {
    let b = Berth::up(None);
    let p = b.port;
    let app = documents(&[
        task_definition(
            "creds",
            [container("app", &["sleep", "3600"])
                .cpu(32)
                .memory(16)
                .stop_timeout(1)],
        )
        .spec("taskRole: reader")
        .to_string(),
        service("creds", "creds", 2, &[]),
    ]);
    let dir = manifest_dir(&[("roles.yaml", ROLES.to_string()), ("app.yaml", app)]);
    b.apply(dir.path());
    let tasks = wait_for("two running tasks", Duration::from_secs(60), || {
        let t = b.running_tasks("creds");
        (t.len() == 2).then_some(t)
    });
    let ids = task_ids(&tasks);
    let (a, other) = (ids[0].clone(), ids[1].clone());
    let ca = b.container_of(&a, None);
    let cb = b.container_of(&other, None);

    // The container has the URI and its token, and fetches its credentials with wget.
    let env = stdout(&exec(
        &ca,
        "echo $AWS_CONTAINER_CREDENTIALS_FULL_URI; echo $AWS_CONTAINER_AUTHORIZATION_TOKEN",
    ));
    let mut lines = env.lines();
    let url = lines.next().unwrap().trim().to_string();
    let token_a = lines.next().unwrap().trim().to_string();
    assert!(
        url.starts_with("http://") && url.ends_with(&format!("/v2/credentials/{a}")),
        "{url}"
    );
    assert!(token_a.len() >= 32);
    let o = exec(
        &ca,
        "wget -q -O - --header \"Authorization: $AWS_CONTAINER_AUTHORIZATION_TOKEN\" \"$AWS_CONTAINER_CREDENTIALS_FULL_URI\"",
    );
    assert!(o.status.success(), "wget failed: {}", stderr(&o));
    let c: Value = serde_json::from_str(&stdout(&o)).expect("credentials JSON");
    let creds = Credentials {
        access_key_id: c["AccessKeyId"].as_str().unwrap().into(),
        secret_access_key: c["SecretAccessKey"].as_str().unwrap().into(),
        session_token: Some(c["Token"].as_str().unwrap().into()),
    };
    assert!(creds.access_key_id.starts_with("ASIA"));
    let exp = DateTime::parse_from_rfc3339(c["Expiration"].as_str().unwrap()).unwrap();
    assert!(exp > Utc::now());

    // Another task's token, or none, gets nothing.
    let path = format!("/v2/credentials/{a}");
    let with_b = exec(&cb, "echo $AWS_CONTAINER_AUTHORIZATION_TOKEN");
    let token_b = stdout(&with_b).trim().to_string();
    assert_ne!(token_a, token_b);
    let r = nc_from(&cb, &url, &path, Some(&token_b));
    assert!(
        r.starts_with("HTTP/1.0 403") && !r.contains("SecretAccessKey"),
        "{r}"
    );
    let r = nc_from(&cb, &url, &path, None);
    assert!(
        r.starts_with("HTTP/1.0 401") && !r.contains("SecretAccessKey"),
        "{r}"
    );
    let r = nc_from(&cb, &url, &path, Some(&token_a));
    assert!(
        r.starts_with("HTTP/1.0 200"),
        "the right token works from anywhere: {r}"
    );

    // The credentials act with exactly the role's permissions.
    let now = Utc::now();
    let h = signed(p, &creds, "GET", "/v1/services/creds", b"", now);
    let (s, v) = status(p, "GET", "/v1/services/creds", &h, b"");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["metadata"]["name"], "creds");
    let h = signed(p, &creds, "DELETE", "/v1/services/creds", b"", now);
    let (s, v) = status(p, "DELETE", "/v1/services/creds", &h, b"");
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["action"], "berth:DeleteService");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains(&format!("task/{a} (role reader)")),
        "{v}"
    );
    // Without the session token they are worthless.
    let no_session = Credentials {
        session_token: None,
        ..creds.clone()
    };
    let h = signed(p, &no_session, "GET", "/v1/services", b"", now);
    assert_eq!(status(p, "GET", "/v1/services", &h, b"").0, 401);
    // The CLI with the task's credentials in the environment.
    let aws = [
        ("AWS_ACCESS_KEY_ID", creds.access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", creds.secret_access_key.as_str()),
        ("AWS_SESSION_TOKEN", creds.session_token.as_deref().unwrap()),
    ];
    let o = cli_env(&b, &aws, &["describe", "services", "creds"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cli_env(&b, &aws, &["delete", "services", "creds"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("berth:DeleteService"), "{}", stderr(&o));

    // The audit trail shows which task used which role, and every fetch.
    let trail = audit(&b, &["--task", &a]);
    let fetches: Vec<&Value> = trail
        .iter()
        .filter(|r| r["action"] == "berth:GetTaskCredentials")
        .collect();
    assert!(
        fetches.iter().any(|r| r["status"] == 200
            && r["identity"] == format!("task/{a}").as_str()
            && r["role"] == "reader"
            && r["sourceIp"].as_str().unwrap().starts_with("172.")),
        "{fetches:?}"
    );
    assert!(fetches.iter().any(|r| r["status"] == 403), "{fetches:?}");
    assert!(trail.iter().any(|r| r["action"] == "berth:DescribeService"
        && r["identity"] == format!("task/{a}").as_str()
        && r["status"] == 200));
    assert!(trail
        .iter()
        .any(|r| r["action"] == "berth:DeleteService" && r["decision"] == "denied"));
    let text = serde_json::to_string(&trail).unwrap();
    assert!(!text.contains(&creds.secret_access_key) && !text.contains(&token_a));

    // After the task stops its credentials are rejected.
    b.cli_ok(&["stop-task", &a]);
    wait_for("task credentials revoked", Duration::from_secs(30), || {
        let h = signed(p, &creds, "GET", "/v1/services/creds", b"", Utc::now());
        let (s, v) = status(p, "GET", "/v1/services/creds", &h, b"");
        (s == 401).then_some(v)
    });
    let r = nc_from(&cb, &url, &path, Some(&token_a));
    assert!(
        !r.starts_with("HTTP/1.0 200"),
        "a stopped task's credentials are still served: {r}"
    );
}

#[test]
fn unsafe_task_definitions_are_refused_unless_the_cluster_allows_them() {
    let b = Berth::up(None);
    let td = |name: &str, extra_spec: &str, extra_container: &str| {
        let mut app = container("app", &["sleep", "5"]).memory(16);
        if !extra_container.is_empty() {
            app = app.with(extra_container);
        }
        let mut td = task_definition(name, [app]);
        if !extra_spec.is_empty() {
            td = td.spec(extra_spec);
        }
        td.to_string()
    };
    let cases = [
        ("priv", td("priv", "", "privileged: true"), "privileged"),
        (
            "sock",
            td(
                "sock",
                "volumes: [{name: docker, host: {sourcePath: /var/run/docker.sock}}]",
                "mountPoints: [{sourceVolume: docker, containerPath: /var/run/docker.sock}]",
            ),
            "/var/run/docker.sock",
        ),
        (
            "root",
            td("root", "volumes: [{name: r, host: {sourcePath: /}}]", ""),
            "root filesystem",
        ),
        ("pid", td("pid", "pidMode: host", ""), "pidMode host"),
        (
            "caps",
            td(
                "caps",
                "",
                "linuxParameters: {capabilities: {add: [SYS_ADMIN]}}",
            ),
            "SYS_ADMIN",
        ),
        (
            "wd",
            td("wd", "", "workingDirectory: /proc/self/root"),
            "/proc",
        ),
    ];
    for (name, text, needle) in &cases {
        let o = apply_text(&b, &format!("{name}.yaml"), text);
        let err = stderr(&o);
        assert!(!o.status.success(), "{name} was accepted");
        assert!(err.contains(needle), "{name}: {err}");
        assert!(
            err.contains("refused") && err.contains("settings.allow"),
            "{name}: {err}"
        );
        assert!(
            err.contains(&format!("{name}.yaml")),
            "the error names the file: {err}"
        );
    }
    let stored = b.get_json(&["taskdefinitions"]);
    assert_eq!(stored.as_array().map(Vec::len), Some(0), "{stored}");

    // A cluster that allows privileged containers makes the task definition acceptable, but a
    // task on a strict cluster is still refused at run time.
    let clusters = r#"apiVersion: berth.dev/v1
kind: Cluster
metadata: {name: lab}
spec: {settings: {allowPrivileged: true}}
---
apiVersion: berth.dev/v1
kind: Cluster
metadata: {name: strict}
"#;
    let o = apply_text(&b, "clusters.yaml", clusters);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = apply_text(&b, "priv.yaml", &cases[0].1);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = b.cli(&["run-task", "priv", "--cluster", "strict"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cluster strict"), "{}", stderr(&o));
    // Mounts are a separate switch: still refused.
    let o = apply_text(&b, "sock.yaml", &cases[1].1);
    assert!(!o.status.success());
}
