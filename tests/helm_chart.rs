//! The Helm chart (`helm/berth`) renders offline for its default values and a values file per
//! mode (embedded single control plane; three control planes on an external etcd over TLS; two
//! on the chart's etcd StatefulSet), and the rendered objects hold together: the kinds, the
//! image, probes on /healthz, Secrets mounted where the args point, and the control plane's and
//! agents' args accepted by the built `berth` (its parser checks every flag and value: the args
//! are given to `berth server|agent … --help`, which exits 2 on an unknown flag or bad value).
//!
//! Rendering uses the Helm library itself (PyPI `helm-python-sdk`: Helm's Go SDK behind a C ABI,
//! no helm binary, no cluster) through `helm/render.py`. The Python environment: the
//! `BERTH_HELM_PYTHON` interpreter, else `python3` if it has helm_python and yaml, else a venv
//! made once in `target/helm-venv` (`pip install helm-python-sdk pyyaml`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn has_helm(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import helm_python, yaml"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn python() -> PathBuf {
    static PY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PY.get_or_init(|| {
        if let Some(p) = std::env::var_os("BERTH_HELM_PYTHON") {
            return PathBuf::from(p);
        }
        let sys = PathBuf::from("python3");
        if has_helm(&sys) {
            return sys;
        }
        let venv = repo().join("target").join("helm-venv");
        let py = venv.join("bin").join("python");
        if !has_helm(&py) {
            let ok = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "python3 -m venv failed (Debian: apt-get install python3-venv)"
            );
            let o = Command::new(venv.join("bin").join("pip"))
                .args(["install", "-q", "helm-python-sdk", "pyyaml"])
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "pip install helm-python-sdk pyyaml: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        py
    })
    .clone()
}

/// `helm template` of the chart with `values` (a file under helm/berth/ci, or none).
fn render(values: Option<&str>) -> Result<Vec<Value>, String> {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("helm/render.py"))
        .arg(repo().join("helm/berth"));
    if let Some(v) = values {
        cmd.arg(v);
    }
    let o = cmd.output().unwrap();
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).to_string());
    }
    let docs: Vec<Value> = serde_json::from_slice(&o.stdout).expect("render.py prints JSON");
    Ok(docs.into_iter().map(|d| d["object"].clone()).collect())
}

fn ci(file: &str) -> String {
    repo()
        .join("helm/berth/ci")
        .join(file)
        .display()
        .to_string()
}

fn kinds(objs: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = objs
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or("").to_string())
        .collect();
    k.sort();
    k
}

fn one<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let v: Vec<&Value> = objs.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(v.len(), 1, "one {kind}");
    v[0]
}

fn container(o: &Value) -> &Value {
    &o["spec"]["template"]["spec"]["containers"][0]
}

fn args(o: &Value) -> Vec<String> {
    container(o)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn arg_after(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .map(|i| args[i + 1].clone())
}

/// The built berth accepts these args: every flag exists and every value parses. `--help` at
/// the end makes clap stop after checking them (exit 0) instead of running the command.
fn berth_accepts(args: &[String]) {
    // What Kubernetes substitutes from the pod's env (`$(VAR)`).
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("$(NODE_NAME)", "node-1")
                .replace("$(HOST_IP)", "10.0.0.11")
        })
        .collect();
    let args = &args[..];
    let o = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "berth rejects the chart's args {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let help = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([&args[0], "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    for a in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(a.as_str()),
            "`berth {} --help` lists {a}",
            args[0]
        );
    }
}

/// Checks every rendering shares: the control plane and the agents, image, probes, Secrets.
fn check_common(objs: &[Value], image: &str) -> (Vec<String>, Vec<String>) {
    let dep = one(objs, "Deployment");
    let ds = one(objs, "DaemonSet");
    let svc = objs
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "rel-berth")
        .expect("the API Service");
    for o in [dep, ds] {
        assert_eq!(container(o)["image"], image);
    }
    let c = container(dep);
    for p in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[p]["httpGet"]["path"], "/healthz", "{p}");
        assert_eq!(c[p]["httpGet"]["port"], "api", "{p}");
    }
    assert!(
        c["resources"]["requests"]["cpu"].is_string(),
        "resource requests"
    );
    assert!(container(ds)["resources"]["requests"]["memory"].is_string());
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "api");
    let sargs = args(dep);
    assert_eq!(sargs[0], "server");
    assert_eq!(arg_after(&sargs, "--api").as_deref(), Some("0.0.0.0:7400"));
    berth_accepts(&sargs);

    // The agent: joins the API Service with the join token Secret, on the node's Docker.
    let aargs = args(ds);
    assert_eq!(aargs[0], "agent");
    assert_eq!(
        arg_after(&aargs, "--server").as_deref(),
        Some("http://rel-berth.berth.svc:7400")
    );
    berth_accepts(&aargs);
    assert_eq!(
        arg_after(&aargs, "--logs-addr").as_deref(),
        Some("$(HOST_IP):7401"),
        "the API reaches the agent's logs on the node's address"
    );
    let env = container(ds)["env"].as_array().unwrap();
    for var in ["NODE_NAME", "HOST_IP"] {
        assert!(
            env.iter().any(|e| e["name"] == var),
            "{var} is set for $({var})"
        );
    }
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(container(ds)["securityContext"]["privileged"], true);
    let vols = pod["volumes"].as_array().unwrap();
    assert!(
        vols.iter()
            .any(|v| v["hostPath"]["path"] == "/var/run/docker.sock"),
        "the Docker socket is mounted"
    );
    let tok = arg_after(&aargs, "--join-token-file").unwrap();
    let mounts = container(ds)["volumeMounts"].as_array().unwrap();
    let m = mounts
        .iter()
        .find(|m| tok.starts_with(m["mountPath"].as_str().unwrap()))
        .expect("the join token file is on a mount");
    let v = vols.iter().find(|v| v["name"] == m["name"]).unwrap();
    assert!(v["secret"]["secretName"].is_string(), "from a Secret");
    (sargs, aargs)
}

/// On etcd, every control plane reads the Secrets data key from one generated Secret, kept on
/// uninstall; the file is the Secret's mount.
fn secrets_key_is_shared(objs: &[Value], sargs: &[String]) {
    let dep = one(objs, "Deployment");
    let file = arg_after(sargs, "--secrets-key-file").expect("--secrets-key-file");
    let mounts = container(dep)["volumeMounts"].as_array().unwrap();
    let m = mounts
        .iter()
        .find(|m| file.starts_with(m["mountPath"].as_str().unwrap()))
        .expect("the secrets key file is on a mount");
    let vols = dep["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    let v = vols.iter().find(|v| v["name"] == m["name"]).unwrap();
    assert_eq!(v["secret"]["secretName"], "rel-berth-secrets-key");
    let s = objs
        .iter()
        .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == "rel-berth-secrets-key")
        .expect("the chart generates the key's Secret");
    assert_eq!(
        s["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let key = s["data"]["key"].as_str().unwrap();
    assert_eq!(key.len(), 88, "64 hex digits, base64: {key}");
}

#[test]
fn default_values_render_an_embedded_control_plane_and_agents() {
    let objs = render(None).unwrap();
    assert_eq!(
        kinds(&objs),
        [
            "DaemonSet",
            "Deployment",
            "PersistentVolumeClaim",
            "Service"
        ]
    );
    let (sargs, _) = check_common(&objs, "berth:0.1.0");
    assert_eq!(
        arg_after(&sargs, "--data-dir").as_deref(),
        Some("/var/lib/berth")
    );
    assert!(!sargs.contains(&"--store".to_string()));
    let dep = one(&objs, "Deployment");
    assert_eq!(dep["spec"]["replicas"], 1);
    assert_eq!(dep["spec"]["strategy"]["type"], "Recreate");
}

#[test]
fn embedded_values_file_renders_a_join_token_secret() {
    let objs = render(Some(&ci("embedded-values.yaml"))).unwrap();
    assert_eq!(
        kinds(&objs),
        [
            "DaemonSet",
            "Deployment",
            "PersistentVolumeClaim",
            "Secret",
            "Service"
        ]
    );
    let (_, aargs) = check_common(&objs, "registry.example/berth:0.1.0");
    assert_eq!(arg_after(&aargs, "--cpu").as_deref(), Some("4096"));
    assert_eq!(arg_after(&aargs, "--memory").as_deref(), Some("8192"));
    let s = one(&objs, "Secret");
    assert_eq!(s["metadata"]["name"], "rel-berth-join-token");
    assert!(s["stringData"]["token"]
        .as_str()
        .unwrap()
        .starts_with("bjt_"));
}

#[test]
fn etcd_ha_with_tls_renders_three_control_planes_and_a_service_monitor() {
    let objs = render(Some(&ci("etcd-ha-values.yaml"))).unwrap();
    assert_eq!(
        kinds(&objs),
        [
            "DaemonSet",
            "Deployment",
            "Secret",
            "Service",
            "ServiceMonitor"
        ]
    );
    let (sargs, _) = check_common(&objs, "registry.example/berth:0.1.0");
    secrets_key_is_shared(&objs, &sargs);
    let dep = one(&objs, "Deployment");
    assert_eq!(dep["spec"]["replicas"], 3);
    assert!(arg_after(&sargs, "--store")
        .unwrap()
        .starts_with("etcds://"));
    // The TLS files come from the Secret's mount.
    let mounts = container(dep)["volumeMounts"].as_array().unwrap();
    let tls = mounts.iter().find(|m| m["name"] == "etcd-tls").unwrap();
    let dir = tls["mountPath"].as_str().unwrap();
    for f in ["--etcd-ca", "--etcd-cert", "--etcd-key"] {
        assert!(arg_after(&sargs, f).unwrap().starts_with(dir), "{f}");
    }
    let vols = dep["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    assert!(vols
        .iter()
        .any(|v| v["secret"]["secretName"] == "berth-etcd-client"));
    let sm = one(&objs, "ServiceMonitor");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(
        sm["spec"]["endpoints"][0]["authorization"]["credentials"]["name"],
        "berth-admin-token"
    );
    let ds = one(&objs, "DaemonSet");
    let vols = ds["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    assert!(vols
        .iter()
        .any(|v| v["secret"]["secretName"] == "berth-join-token"));
}

#[test]
fn etcd_statefulset_values_render_etcd_and_point_the_store_at_its_members() {
    let objs = render(Some(&ci("etcd-statefulset-values.yaml"))).unwrap();
    assert_eq!(
        kinds(&objs),
        [
            "DaemonSet",
            "Deployment",
            "Secret",
            "Secret",
            "Service",
            "Service",
            "StatefulSet"
        ]
    );
    let (sargs, _) = check_common(&objs, "berth:0.1.0");
    secrets_key_is_shared(&objs, &sargs);
    let sts = one(&objs, "StatefulSet");
    assert_eq!(sts["spec"]["replicas"], 3);
    let store = arg_after(&sargs, "--store").unwrap();
    assert_eq!(
        store,
        "etcd://rel-berth-etcd-0.rel-berth-etcd:2379,rel-berth-etcd-1.rel-berth-etcd:2379,rel-berth-etcd-2.rel-berth-etcd:2379"
    );
    let cmd = container(sts)["command"].as_array().unwrap();
    assert!(cmd.iter().any(|c| c == "--max-txn-ops=10000"));
}

#[test]
fn the_chart_refuses_what_berth_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("v.yaml");
    std::fs::write(&bad, "server: {replicas: 2}\n").unwrap();
    let e = render(Some(bad.to_str().unwrap())).unwrap_err();
    assert!(e.contains("embedded store serves one control plane"), "{e}");
    std::fs::write(
        &bad,
        "store: {mode: etcd}\netcd: {external: {url: 'etcds://e:2379'}}\n",
    )
    .unwrap();
    let e = render(Some(bad.to_str().unwrap())).unwrap_err();
    assert!(e.contains("etcd.external.tls.secretName"), "{e}");
}
