//! `berth bench lb`: requests/s and p50/p99 straight to the targets, through berth's load
//! balancer and through nginx (Debian package `nginx`; skipped when absent) as a reverse proxy
//! to the same targets, in the same run with the same client (a keep-alive hyper load
//! generator). The targets are small hyper servers started by the bench on loopback, on their
//! own runtime thread, so the proxies are measured, not the targets (a busybox httpd forks per
//! request and was the bottleneck of both proxies). The targets are registered in the store
//! directly (a Target record per server, as an ELB RegisterTargets call would); only the load
//! balancer runs, no controllers and no agent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

use tokio_util::sync::CancellationToken;

use super::harness::{apply_yaml, free_port};
use berth_core::model::lb::{lb_keys, Target, TargetHealth};
use berth_core::store::DynStore;

/// Targets behind both proxies.
const TARGETS: usize = 3;

pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
}

/// `conns` keep-alive connections sending GETs back to back for `duration`, connection `i` to
/// `urls[i % urls.len()]`.
pub async fn load(urls: &[String], conns: usize, duration: Duration) -> LoadResult {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut handles = Vec::new();
    for i in 0..conns {
        let (url, stop) = (urls[i % urls.len()].clone(), stop.clone());
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

/// A minimal HTTP/1.1 keep-alive server answering every request with a short 200, on its own
/// 1-thread runtime (so it is not scheduled behind the proxy or the client). Stops with `stop`.
fn start_target(stop: CancellationToken) -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    std::thread::Builder::new()
        .name(format!("bench-target-{port}"))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("target runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let (conn, _) = tokio::select! {
                        _ = stop.cancelled() => break,
                        c = listener.accept() => match c {
                            Ok(c) => c,
                            Err(_) => continue,
                        },
                    };
                    let _ = conn.set_nodelay(true);
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(|_req| async {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(Bytes::from_static(b"ok\n")),
                            ))
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(conn), svc)
                            .await;
                    });
                }
            });
        })?;
    Ok(port)
}

/// Register the target servers in target group `tg` (what the lb_target controller writes for
/// a service's RUNNING tasks).
async fn register_targets(store: &DynStore, tg: &str, ports: &[u16]) -> anyhow::Result<()> {
    for (i, port) in ports.iter().enumerate() {
        let id = format!("bench-target-{i}");
        let t = Target {
            target_group: tg.to_string(),
            task_id: id.clone(),
            service: "bench-lb".into(),
            ip: "127.0.0.1".into(),
            port: *port,
            state: "registered".into(),
            registered_at: berth_core::model::now(),
            draining_since: None,
            deregistration_delay_seconds: 0,
        };
        store
            .put(&lb_keys::target(tg, &id), serde_json::to_vec(&t)?)
            .await?;
    }
    Ok(())
}

fn rate(r: &LoadResult) -> f64 {
    r.requests as f64 / r.elapsed.as_secs_f64().max(1e-9)
}

pub async fn run(conns: usize, seconds: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store: DynStore = Arc::new(berth_core::store::embedded::EmbeddedStore::open(
        dir.path().join("store"),
    )?);
    let stop = CancellationToken::new();
    let mut ports = Vec::new();
    for _ in 0..TARGETS {
        ports.push(start_target(stop.clone())?);
    }
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
"#
    );
    apply_yaml(&store, &text, "bench-lb.yaml").await?;
    register_targets(&store, "bench", &ports).await?;
    let lb = tokio::spawn(berth_core::lb::run(
        store.clone(),
        berth_core::lb::LbConfig {
            bind_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        },
        stop.clone(),
    ));
    // Wait until berth's load balancer sees every target healthy.
    let deadline = Instant::now() + Duration::from_secs(60);
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
        if healthy >= TARGETS {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "targets did not become healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let build = if cfg!(debug_assertions) {
        "DEBUG build"
    } else {
        "release build"
    };
    println!(
        "lb ({build}): {TARGETS} in-process hyper targets on ports {ports:?}; {conns} keep-alive connections, {seconds} s each"
    );

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
    let direct_urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}/"))
        .collect();
    let berth_url = vec![format!("http://127.0.0.1:{lb_port}/")];
    let nginx_url = vec![format!("http://127.0.0.1:{nginx_port}/")];
    // Warm up, then measure each in turn with the same client.
    load(&berth_url, conns, Duration::from_secs(1)).await;
    let direct = load(&direct_urls, conns, duration).await;
    let b = load(&berth_url, conns, duration).await;
    print("direct to targets", &direct);
    print("berth lb", &b);
    let mut n = None;
    match nginx {
        Ok(mut child) => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            load(&nginx_url, conns, Duration::from_secs(1)).await;
            let r = load(&nginx_url, conns, duration).await;
            print("nginx proxy", &r);
            n = Some(r);
            let _ = child.kill();
            let _ = child.wait();
        }
        Err(e) => println!("nginx skipped ({e}); `apt-get install nginx` to compare"),
    }
    println!(
        "berth / direct: throughput {:.2}x, p99 {:.2}x",
        rate(&b) / rate(&direct).max(1e-9),
        b.p99.as_secs_f64() / direct.p99.as_secs_f64().max(1e-9)
    );
    if let Some(n) = n {
        println!(
            "berth / nginx: throughput {:.2}x, p99 {:.2}x; nginx / direct: throughput {:.2}x",
            rate(&b) / rate(&n).max(1e-9),
            b.p99.as_secs_f64() / n.p99.as_secs_f64().max(1e-9),
            rate(&n) / rate(&direct).max(1e-9)
        );
    }
    stop.cancel();
    let _ = lb.await;
    Ok(())
}
