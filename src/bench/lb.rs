//! `berth bench lb`: requests/s and p50/p99 through berth's load balancer to 3 busybox httpd
//! targets, beside nginx (Debian package) as a reverse proxy to the same 3 targets, in the same
//! run with the same client (a keep-alive hyper load generator).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

use super::harness::{apply_yaml, free_port, httpd_service, BenchNode};
use berth_core::model::lb::{lb_keys, TargetHealth};
use berth_core::model::{Kind, TaskState};
use berth_core::objects;

pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
}

/// `conns` keep-alive connections sending GETs back to back for `duration`.
pub async fn load(url: &str, conns: usize, duration: Duration) -> LoadResult {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..conns {
        let (url, stop) = (url.to_string(), stop.clone());
        handles.push(tokio::spawn(async move {
            // One client per worker: one pooled keep-alive connection each.
            let client: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .pool_max_idle_per_host(1)
                    .build_http();
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let req = hyper::Request::get(&url)
                    .body(Empty::new())
                    .expect("valid request");
                match client.request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let _ = resp.into_body().collect().await;
                        if ok {
                            lat.push(t0.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        if let Ok((l, e)) = h.await {
            all.extend(l);
            errors += e;
        }
    }
    let elapsed = start.elapsed();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    LoadResult {
        requests: all.len() as u64,
        errors,
        elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn print(name: &str, r: &LoadResult) {
    println!(
        "{name:<22} {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   errors {}",
        r.requests as f64 / r.elapsed.as_secs_f64(),
        r.p50.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3,
        r.errors
    );
}

pub async fn run(conns: usize, seconds: u64, image: &str) -> anyhow::Result<()> {
    let bench = BenchNode::start().await?;
    let store = bench.store.clone();
    let lb_port = free_port()?;
    let text = format!(
        r#"
apiVersion: berth.dev/v1
kind: TargetGroup
metadata: {{name: bench}}
spec:
  healthCheck: {{path: /, intervalSeconds: 5, timeoutSeconds: 2, healthyThresholdCount: 2, unhealthyThresholdCount: 2}}
---
apiVersion: berth.dev/v1
kind: LoadBalancer
metadata: {{name: bench}}
spec:
  listeners:
    - port: {lb_port}
      rules: [{{priority: 1, pathPattern: "*", targetGroup: bench}}]
---
{}"#,
        httpd_service(
            "bench-lb",
            image,
            &["httpd", "-f", "-p", "8080", "-h", "/www"],
            3,
            &[],
            &["loadBalancers: [{targetGroup: bench, containerName: httpd, containerPort: 8080}]"],
        )
    );
    apply_yaml(&store, &text, "bench-lb.yaml").await?;
    // Wait for 3 healthy targets.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (kvs, _) = store
            .range(&format!("{}bench/", lb_keys::TARGET_HEALTH))
            .await?;
        let healthy = kvs
            .iter()
            .filter(|kv| {
                serde_json::from_slice::<TargetHealth>(&kv.value)
                    .is_ok_and(|h| h.state == "healthy")
            })
            .count();
        if healthy >= 3 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "targets did not become healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ports: Vec<u16> = objects::list_tasks(&*store)
        .await?
        .iter()
        .filter(|t| {
            t.status.last_status == TaskState::Running && t.spec.group == "service:bench-lb"
        })
        .flat_map(|t| {
            t.status
                .containers
                .iter()
                .flat_map(|c| c.network_bindings.iter().map(|b| b.host_port))
        })
        .collect();
    let _ = Kind::Service;
    println!("3 busybox httpd targets on host ports {ports:?}; {conns} keep-alive connections, {seconds} s each");

    // nginx as a reverse proxy to the same targets, same keep-alive settings.
    let nginx_port = free_port()?;
    let ndir = tempfile::tempdir()?;
    let upstreams: String = ports
        .iter()
        .map(|p| format!("    server 127.0.0.1:{p};\n"))
        .collect();
    let conf = format!(
        "worker_processes auto;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n  upstream t {{\n{upstreams}    keepalive 64;\n  }}\n  server {{\n    listen 127.0.0.1:{nginx_port};\n    keepalive_requests 100000;\n    location / {{ proxy_pass http://t; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header X-Forwarded-For $remote_addr; }}\n  }}\n}}\n",
        d = ndir.path().display()
    );
    std::fs::write(ndir.path().join("nginx.conf"), conf)?;
    let nginx = std::process::Command::new("nginx")
        .arg("-c")
        .arg(ndir.path().join("nginx.conf"))
        .arg("-p")
        .arg(ndir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let duration = Duration::from_secs(seconds);
    // Warm up both, then measure alternately.
    let berth_url = format!("http://127.0.0.1:{lb_port}/");
    let nginx_url = format!("http://127.0.0.1:{nginx_port}/");
    load(&berth_url, conns, Duration::from_secs(1)).await;
    let direct = load(&format!("http://127.0.0.1:{}/", ports[0]), conns, duration).await;
    let b = load(&berth_url, conns, duration).await;
    print("direct (one target)", &direct);
    print("berth lb", &b);
    match nginx {
        Ok(mut child) => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            load(&nginx_url, conns, Duration::from_secs(1)).await;
            let n = load(&nginx_url, conns, duration).await;
            print("nginx 1.22 proxy", &n);
            println!(
                "berth / nginx: throughput {:.2}x, p99 {:.2}x",
                (b.requests as f64 / b.elapsed.as_secs_f64())
                    / (n.requests as f64 / n.elapsed.as_secs_f64()).max(1e-9),
                b.p99.as_secs_f64() / n.p99.as_secs_f64().max(1e-9)
            );
            let _ = child.kill();
            let _ = child.wait();
        }
        Err(e) => println!("nginx not run ({e}); install Debian's nginx to compare"),
    }
    bench.finish().await;
    Ok(())
}
