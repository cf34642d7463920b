//! Agents join through berth's API, never the store (issue 15 item 1, issue 11 item 4), against
//! a real `berth server` (embedded store), a real `berth agent --server … --join-token …` and
//! Docker: the joined agent runs a service's task (with a task role: its credentials are minted
//! by the server), holds no store URL, and its credential reaches only its own instance's keys;
//! a missing or wrong join token is 401, another instance's credential 403, a second claimant of
//! a live instance 409, each audited.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth::store::{Compare, Op, Txn};
use common::berth::*;
use common::manifests::*;
use serde_json::{json, Value};

const ROLES: &str = r#"apiVersion: berth.dev/v1
kind: Role
metadata: {name: reader}
spec:
  statements:
    - {effect: Allow, actions: ["berth:Describe*", "berth:List*", "berth:Get*"], resources: ["*"]}
"#;

/// A `berth server` on its own embedded store and a free port; its admin token is read from
/// what it prints at first start, its join token from `--agent-join-token-file`.
struct Server {
    child: Child,
    port: u16,
    data: tempfile::TempDir,
    admin: String,
}

impl Server {
    fn start() -> Server {
        require_image();
        let data = tempfile::Builder::new()
            .prefix("berth-server-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let out = std::fs::File::create(data.path().join("stdout.log")).unwrap();
        let err = std::fs::File::create(data.path().join("server.log")).unwrap();
        let child = Command::new(berth_bin())
            .args([
                "server",
                "--api",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data.path().join("d"))
            .arg("--agent-join-token-file")
            .arg(data.path().join("join-token"))
            .env("BERTH_LOG", "info,berth=debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        let mut s = Server {
            child,
            port,
            data,
            admin: String::new(),
        };
        s.admin = wait_for(
            "berth server to print its admin token",
            Duration::from_secs(30),
            || {
                if let Ok(Some(st)) = s.child.try_wait() {
                    panic!("berth server exited ({st}): {}", s.log());
                }
                let text = std::fs::read_to_string(s.data.path().join("stdout.log")).ok()?;
                let line = text.lines().find(|l| l.starts_with("admin token"))?;
                Some(line.rsplit(' ').next()?.trim().to_string())
            },
        );
        wait_for("the join token file", Duration::from_secs(30), || {
            s.data.path().join("join-token").exists().then_some(())
        });
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn cli(&self, args: &[&str]) -> Output {
        let empty = tempfile::tempdir().unwrap();
        Command::new(berth_bin())
            .args(args)
            .env("BERTH_ENDPOINT", self.url())
            .env("BERTH_TOKEN", &self.admin)
            .env("XDG_CONFIG_HOME", empty.path())
            .output()
            .unwrap()
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "berth {args:?} failed: {}\n{}",
            stderr(&o),
            stdout(&o)
        );
        stdout(&o)
    }

    /// An admin GET of the API, as JSON.
    fn get(&self, path: &str) -> Option<Value> {
        let (s, b) = call(self.port, "GET", path, Some(&self.admin), None, b"");
        (s == 200).then_some(b)
    }

    fn audit(&self, action: &str) -> Vec<Value> {
        let out = self.cli_ok(&["audit", "--action", action, "-o", "json"]);
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `berth agent --server …` process with its own instance id and data dir.
struct Agent {
    child: Child,
    instance: String,
    data: PathBuf,
}

impl Agent {
    fn start(
        server: &Server,
        instance: &str,
        data: &Path,
        join_token_file: Option<&Path>,
    ) -> Agent {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .unwrap();
        let mut c = Command::new(berth_bin());
        c.args([
            "agent",
            "--server",
            &server.url(),
            "--instance-id",
            instance,
        ])
        .arg("--data-dir")
        .arg(data)
        .args(["--lease-ttl", "3s"])
        .env_remove("BERTH_JOIN_TOKEN")
        .env("BERTH_LOG", "info,berth=debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        if let Some(f) = join_token_file {
            // From a file: the token is neither in the process list nor in its environment.
            c.arg("--join-token-file").arg(f);
        }
        Agent {
            child: c.spawn().unwrap(),
            instance: instance.to_string(),
            data: data.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    fn credential(&self) -> String {
        let v: Value = serde_json::from_slice(
            &std::fs::read(self.data.join("agent-credential.json")).expect("saved credential"),
        )
        .unwrap();
        v["credential"].as_str().unwrap().to_string()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        remove_containers_with_label(&format!("berth.instance={}", self.instance));
    }
}

/// One request to the API: (status, JSON body). `instance` sets `x-berth-instance`.
fn call(
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    instance: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    let mut h = vec![];
    if let Some(t) = bearer {
        h.push(("Authorization".to_string(), format!("Bearer {t}")));
    }
    if let Some(i) = instance {
        h.push(("x-berth-instance".to_string(), i.to_string()));
    }
    if !body.is_empty() {
        h.push(("Content-Type".to_string(), "application/json".to_string()));
    }
    let (s, _, b) = http_raw(port, method, path, &h, body).expect("the API answers");
    (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
}

fn agent_call(port: u16, cred: &str, instance: &str, route: &str, body: Value) -> (u16, Value) {
    call(
        port,
        "POST",
        &format!("/v1/agent/store/{route}"),
        Some(cred),
        Some(instance),
        body.to_string().as_bytes(),
    )
}

fn join(port: u16, token: Option<&str>, instance: &str) -> (u16, Value) {
    let mut body = json!({ "instanceId": instance });
    if let Some(t) = token {
        body["joinToken"] = json!(t);
    }
    call(
        port,
        "POST",
        "/v1/agent/join",
        None,
        None,
        body.to_string().as_bytes(),
    )
}

fn read_proc(pid: u32, what: &str) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/{what}")).unwrap_or_default())
        .replace('\0', " ")
}

#[test]
fn a_joined_agent_runs_tasks_through_the_api_with_only_its_own_instance() {
    let s = Server::start();
    let p = s.port;
    let dirs = tempfile::tempdir().unwrap();

    // Join tokens: from the CLI (as admin), and the one `berth server` wrote at start.
    let token = s
        .cli_ok(&["token", "create", "--agent", "--description", "test"])
        .trim()
        .to_string();
    assert!(token.starts_with("bjt_"), "{token}");
    let boot_file = s.data.path().join("join-token");
    let boot = std::fs::read_to_string(&boot_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(boot.starts_with("bjt_"));
    let listed = s.cli_ok(&["token", "list", "-o", "json"]);
    assert!(
        listed.contains("\"test\"") && !listed.contains(&token),
        "{listed}"
    );

    // No token or a wrong one: 401.
    let (st, v) = join(p, None, "nobody");
    assert_eq!(st, 401, "{v}");
    let (st, v) = join(p, Some("bjt_0000"), "nobody");
    assert_eq!(st, 401, "{v}");

    // The agent joins and registers its instance.
    let i1 = unique("aj");
    // With the token `berth server --agent-join-token-file` wrote.
    let mut agent = Agent::start(&s, &i1, &dirs.path().join("a1"), Some(&boot_file));
    wait_for(
        "the joined instance connected",
        Duration::from_secs(60),
        || {
            if let Ok(Some(st)) = agent.child.try_wait() {
                panic!("agent exited ({st}): {}", agent.log());
            }
            let v = s.get(&format!("/v1/containerinstances/{i1}"))?;
            (v["status"]["agentConnected"] == true).then_some(())
        },
    );
    // Its process holds no store URL (nor a join token): only the API server's.
    let pid = agent.child.id();
    let args = read_proc(pid, "cmdline");
    let env = read_proc(pid, "environ");
    let store_dir = s.data.path().join("d").display().to_string();
    for text in [&args, &env] {
        assert!(
            !text.contains("etcd://") && !text.contains("embedded://"),
            "{text}"
        );
        assert!(
            !text.contains("--store") && !text.contains(&store_dir),
            "{text}"
        );
        assert!(!text.contains(&token) && !text.contains(&boot), "{text}");
    }
    assert!(args.contains(&s.url()), "{args}");

    // A second claimant of the live instance is refused: over HTTP, and as a process.
    let (st, v) = join(p, Some(&token), &i1);
    assert_eq!(st, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("live agent"), "{v}");
    let o = Command::new(berth_bin())
        .args([
            "agent",
            "--server",
            &s.url(),
            "--instance-id",
            &i1,
            "--data-dir",
        ])
        .arg(dirs.path().join("dup"))
        .env("BERTH_JOIN_TOKEN", &token)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("live agent"), "{}", stderr(&o));

    // A service with a task role runs on the joined instance.
    let name = unique("ajsvc");
    let app = documents(&[
        task_definition(
            &name,
            [container("app", &["sleep", "3600"])
                .cpu(32)
                .memory(16)
                .stop_timeout(1)],
        )
        .spec("taskRole: reader")
        .to_string(),
        service(&name, &name, 1, &[]),
    ]);
    let dir = manifest_dir(&[("roles.yaml", ROLES.to_string()), ("app.yaml", app)]);
    s.cli_ok(&["apply", "-f", dir.path().to_str().unwrap()]);
    let task = wait_for(
        "the task RUNNING on the joined agent",
        Duration::from_secs(90),
        || {
            let tasks = s.get(&format!("/v1/tasks?service={name}"))?;
            tasks
                .as_array()?
                .iter()
                .find(|t| t["status"]["lastStatus"] == "RUNNING")
                .cloned()
        },
    );
    assert_eq!(task["status"]["containerInstance"], i1.as_str(), "{task}");
    let task_id = name_of(&task);

    // Its role credentials (minted by the server) are fetched from inside the container.
    let ctr = containers_with_label(&format!("berth.task={task_id}"))
        .into_iter()
        .map(|(id, _, _)| id)
        .next()
        .expect("the task's container");
    let o = docker_sh(
        &ctr,
        "wget -q -O - --header \"Authorization: $AWS_CONTAINER_AUTHORIZATION_TOKEN\" \"$AWS_CONTAINER_CREDENTIALS_FULL_URI\"",
    );
    assert!(o.status.success(), "wget failed: {}", stderr(&o));
    let c: Value = serde_json::from_str(&stdout(&o)).expect("credentials JSON");
    assert!(
        c["AccessKeyId"].as_str().unwrap().starts_with("ASIA"),
        "{c}"
    );
    let fetches = s.audit("berth:GetTaskCredentials");
    assert!(
        fetches
            .iter()
            .any(|r| r["task"] == task_id.as_str() && r["decision"] == "allowed"),
        "{fetches:?}"
    );

    // The agent's credential: its own instance's keys only.
    let c1 = agent.credential();
    let task_key = format!("/berth/tasks/{task_id}");
    let (st, v) = agent_call(
        p,
        &c1,
        &i1,
        "get",
        json!({"key": format!("/berth/containerinstances/{i1}")}),
    );
    assert_eq!(st, 200, "{v}");
    assert!(v["kv"].is_object(), "{v}");
    for key in [
        "/berth/auth/server-key",
        "/berth/auth/identities/admin",
        "/berth/services/x",
        "/berth/agent/jointokens/x",
    ] {
        let (st, v) = agent_call(p, &c1, &i1, "get", json!({ "key": key }));
        assert_eq!(st, 403, "{key}: {v}");
    }
    let (st, v) = agent_call(p, &c1, &i1, "range", json!({"prefix": "/berth/"}));
    assert_eq!(st, 200, "{v}");
    let keys: Vec<String> = v["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| kv["key"].as_str().unwrap().to_string())
        .collect();
    assert!(keys.contains(&task_key), "{keys:?}");
    // Exactly its own keys, its task, and what that task needs.
    let own = [
        format!("/berth/auth/endpoints/{i1}"),
        format!("/berth/agent/logs-secret/{i1}"),
        format!("/berth/containerinstances/{i1}"),
        format!("/berth/leases/containerinstances/{i1}"),
        format!("/berth/stats/{i1}"),
        "/berth/clusters/default".to_string(),
        task_key.clone(),
    ];
    for k in &keys {
        assert!(
            own.contains(k) || k.starts_with(&format!("/berth/taskdefinitions/{name}/")),
            "{k} in {keys:?}"
        );
    }
    // ... and not the admin API.
    for path in ["/v1/services", "/v1/tasks", "/v1/auth/identities"] {
        let (st, v) = call(p, "GET", path, Some(&c1), None, b"");
        assert!(st == 401 || st == 403, "{path}: {st} {v}");
    }

    // It cannot change its task's desired status, nor its spec.
    let (_, v) = agent_call(p, &c1, &i1, "get", json!({ "key": task_key }));
    let rev = v["kv"]["modRevision"].as_i64().unwrap();
    let mut t: Value = serde_json::from_str(v["kv"]["value"].as_str().unwrap()).unwrap();
    t["status"]["desiredStatus"] = json!("STOPPED");
    let txn = |t: &Value| {
        serde_json::to_value(
            Txn::new()
                .when(Compare::mod_revision(&task_key, rev))
                .and_then(Op::put(&task_key, t.to_string().into_bytes())),
        )
        .unwrap()
    };
    let (st, v) = agent_call(p, &c1, &i1, "txn", txn(&t));
    assert_eq!(st, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("desiredStatus"),
        "{v}"
    );
    t["status"]["desiredStatus"] = json!("RUNNING");
    t["spec"]["taskDefinition"] = json!("other:1");
    let (st, v) = agent_call(p, &c1, &i1, "txn", txn(&t));
    assert_eq!(st, 403, "{v}");

    // Another instance's credential: 403 for instance I1, and I1's task is invisible to it.
    let i2 = unique("aj2");
    let (st, v) = join(p, Some(&token), &i2);
    assert_eq!(st, 200, "{v}");
    let c2 = v["credential"].as_str().unwrap().to_string();
    let (st, v) = agent_call(
        p,
        &c2,
        &i1,
        "get",
        json!({"key": format!("/berth/containerinstances/{i1}")}),
    );
    assert_eq!(st, 403, "{v}");
    let (st, v) = agent_call(p, &c2, &i2, "get", json!({ "key": task_key }));
    assert_eq!(st, 403, "{v}");
    let (st, v) = agent_call(p, &c2, &i2, "range", json!({"prefix": "/berth/tasks/"}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["kvs"].as_array().unwrap().len(), 0, "{v}");
    // ... nor keep I1's lease alive, nor get I1's task token.
    let (_, v) = agent_call(
        p,
        &c1,
        &i1,
        "get",
        json!({"key": format!("/berth/leases/containerinstances/{i1}")}),
    );
    let lease = v["kv"]["lease"].as_i64().unwrap();
    assert_ne!(lease, 0);
    let (st, v) = agent_call(p, &c2, &i2, "lease/keepalive", json!({ "lease": lease }));
    assert_eq!(st, 403, "{v}");
    let (st, v) = call(
        p,
        "GET",
        &format!("/v1/agent/tasks/{task_id}/token"),
        Some(&c2),
        Some(&i2),
        b"",
    );
    assert_eq!(st, 403, "{v}");

    // The task is untouched.
    let t = s.get(&format!("/v1/tasks/{task_id}")).unwrap();
    assert_eq!(t["status"]["desiredStatus"], "RUNNING", "{t}");
    assert_eq!(
        t["spec"]["taskDefinition"], task["spec"]["taskDefinition"],
        "{t}"
    );

    // Every refusal is in the audit trail.
    let joins = s.audit("berth:AgentJoin");
    assert!(
        joins
            .iter()
            .filter(|r| r["decision"] == "unauthenticated" && r["status"] == 401)
            .count()
            >= 2,
        "{joins:?}"
    );
    assert!(
        joins
            .iter()
            .any(|r| r["status"] == 409 && r["identity"] == format!("agent/{i1}")),
        "{joins:?}"
    );
    let gets = s.audit("berth:AgentStoreGet");
    assert!(
        gets.iter().any(|r| r["decision"] == "denied"
            && r["identity"] == format!("agent/{i1}")
            && r["errorMessage"]
                .as_str()
                .unwrap_or("")
                .contains("server-key")),
        "{gets:?}"
    );
    assert!(
        gets.iter()
            .any(|r| r["decision"] == "denied" && r["identity"] == format!("agent/{i2}")),
        "{gets:?}"
    );
    let txns = s.audit("berth:AgentStoreTxn");
    assert!(
        txns.iter().filter(|r| r["decision"] == "denied").count() >= 2,
        "{txns:?}"
    );
    let keeps = s.audit("berth:AgentLeaseKeepAlive");
    assert!(keeps.iter().any(|r| r["decision"] == "denied"), "{keeps:?}");

    // Revocation: of an instance's credential, and of a join token.
    s.cli_ok(&["token", "revoke-agent", &i2]);
    let (st, v) = agent_call(p, &c2, &i2, "revision", json!({}));
    assert_eq!(st, 401, "{v}");
    let listed: Value = serde_json::from_str(&s.cli_ok(&["token", "list", "-o", "json"])).unwrap();
    let id = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["description"] == "test")
        .and_then(|t| t["id"].as_str())
        .unwrap()
        .to_string();
    s.cli_ok(&["token", "delete", &id]);
    let (st, v) = join(p, Some(&token), &unique("aj3"));
    assert_eq!(st, 401, "{v}");

    // A restart reuses the saved credential: no join token needed.
    agent.kill();
    let mut agent = Agent::start(&s, &i1, &dirs.path().join("a1"), None);
    let started = Instant::now();
    wait_for(
        "the restarted agent connected again",
        Duration::from_secs(60),
        || {
            if let Ok(Some(st)) = agent.child.try_wait() {
                panic!("restarted agent exited ({st}): {}", agent.log());
            }
            let v = s.get(&format!("/v1/containerinstances/{i1}"))?;
            (started.elapsed() > Duration::from_secs(5) && v["status"]["agentConnected"] == true)
                .then_some(())
        },
    );
    assert_eq!(agent.credential(), c1);
    let t = s.get(&format!("/v1/tasks/{task_id}")).unwrap();
    assert_eq!(t["status"]["lastStatus"], "RUNNING", "{t}");
    agent.kill();
}

/// The agent's store over HTTP, in process (no Docker): a watch and a range of the task
/// prefix carry only the instance's own tasks, in revision order; the first, dead server of
/// the list is skipped; leases are the grantee's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_store_sees_only_its_instances_tasks_in_order() {
    use berth::auth::agent_join;
    use berth::model::{keys, Kind, Task, TaskSpec};
    use berth::store::remote::{is_denied, RemoteStore};
    use berth::store::{DynStore, Store, StoreError};
    use futures::StreamExt;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let store: DynStore =
        Arc::new(berth::store::embedded::EmbeddedStore::open(dir.path().join("s")).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(berth::api::serve(
        listener,
        berth::api::ApiState {
            store: store.clone(),
            registry: berth::runtime::Registry::default(),
            leadership: Default::default(),
            secrets: None,
        },
        stop.clone(),
    ));
    let (tok, _) = agent_join::create_join_token(&*store, "test", "", None)
        .await
        .unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let cred = berth::agent::join::join(&[dead.clone(), url.clone()], &tok, "i-x")
        .await
        .unwrap();
    let remote = RemoteStore::new(vec![dead, url], &cred, "i-x").unwrap();

    let put_task = |id: &str, on: &str, n: u32| {
        let mut t = Task::new(
            Kind::Task,
            id,
            TaskSpec {
                task_definition: "web:1".into(),
                cluster: "default".into(),
                cpu: n,
                ..Default::default()
            },
        );
        t.status.container_instance = Some(on.into());
        let store = store.clone();
        let key = keys::key(Kind::Task, id);
        async move { store.put(&key, t.to_bytes()).await.unwrap() }
    };
    let rev0 = remote.revision().await.unwrap();
    let mut w = remote
        .watch(&keys::prefix(Kind::Task), rev0 + 1)
        .await
        .unwrap();
    put_task("t-x1", "i-x", 1).await;
    put_task("t-y1", "i-y", 1).await;
    put_task("t-x2", "i-x", 1).await;
    put_task("t-y1", "i-y", 2).await;
    let last = put_task("t-x1", "i-x", 2).await;
    let mut seen = vec![];
    let mut revs = vec![];
    while seen.len() < 3 {
        let evs = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("watch events")
            .expect("stream open")
            .expect("no error");
        for e in evs {
            revs.push(e.kv.mod_revision);
            seen.push(e.kv.key.rsplit('/').next().unwrap().to_string());
        }
    }
    assert_eq!(seen, ["t-x1", "t-x2", "t-x1"]);
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");
    assert_eq!(*revs.last().unwrap(), last);
    let (kvs, _) = remote.range(&keys::prefix(Kind::Task)).await.unwrap();
    let ids: Vec<&str> = kvs
        .iter()
        .map(|kv| kv.key.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(ids, ["t-x1", "t-x2"]);
    let e = remote
        .get(&keys::key(Kind::Task, "t-y1"))
        .await
        .unwrap_err();
    assert!(is_denied(&e), "{e:?}");
    // Task definitions: those its tasks name (here web), not others.
    store
        .put(&keys::taskdef_key("web", 1), b"{}".to_vec())
        .await
        .unwrap();
    store
        .put(&keys::taskdef_key("db", 1), b"{}".to_vec())
        .await
        .unwrap();
    for _ in 0..2 {
        // Once on whatever scope the server has, once more after its index caught up.
        assert!(remote
            .get(&keys::taskdef_key("web", 1))
            .await
            .unwrap()
            .is_some());
        let e = remote.get(&keys::taskdef_key("db", 1)).await.unwrap_err();
        assert!(is_denied(&e), "{e:?}");
        let (kvs, _) = remote
            .range(&keys::taskdef_family_prefix("web"))
            .await
            .unwrap();
        assert_eq!(kvs.len(), 1);
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    // Load-balancer targets (draining): only those of its own tasks.
    use berth::model::lb::lb_keys;
    for t in ["t-x1", "t-y1"] {
        store
            .put(&lb_keys::target("tg", t), b"{}".to_vec())
            .await
            .unwrap();
    }
    let (kvs, _) = remote.range(lb_keys::TARGETS).await.unwrap();
    let keys_seen: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys_seen, [lb_keys::target("tg", "t-x1")]);
    // Nothing else of the store shows through a wide range.
    let (kvs, _) = remote.range("/").await.unwrap();
    assert!(
        kvs.iter()
            .all(|kv| !kv.key.contains("t-y1") && !kv.key.starts_with("/berth/agent/")),
        "{:?}",
        kvs.iter().map(|kv| &kv.key).collect::<Vec<_>>()
    );

    // Leases: its own, yes; another's (granted outside the agent API), no.
    let l = remote.lease_grant(Duration::from_secs(5)).await.unwrap();
    remote.lease_keep_alive(l).await.unwrap();
    remote.lease_revoke(l).await.unwrap();
    assert_eq!(
        remote.lease_keep_alive(l).await.unwrap_err(),
        StoreError::LeaseNotFound(l)
    );
    let other = store.lease_grant(Duration::from_secs(5)).await.unwrap();
    let e = remote.lease_keep_alive(other).await.unwrap_err();
    assert!(
        matches!(e, StoreError::LeaseNotFound(_)) || is_denied(&e),
        "{e:?}"
    );
    stop.cancel();
}
