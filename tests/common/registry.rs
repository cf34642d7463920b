//! Test harness: a real private registry, Debian's `docker-registry` (distribution 2.8), on
//! 127.0.0.1:<free port> with htpasswd (bcrypt) auth and storage in a tempdir; killed on drop,
//! with every image tagged or pulled from it removed from the local Docker. Docker allows plain
//! http to 127.0.0.0/8 registries by default. The docker CLI logs in with its own temporary
//! `DOCKER_CONFIG`, so the machine's credentials are never touched.
#![allow(dead_code)]

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::berth::{free_port, unique};
use super::manifests::IMAGE;

pub struct Registry {
    pub port: u16,
    pub user: String,
    pub password: String,
    dir: tempfile::TempDir,
    docker_config: tempfile::TempDir,
    child: Option<Child>,
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run a command")
}

fn ok(what: &str, o: Output) -> Output {
    assert!(
        o.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

impl Registry {
    /// Start a registry with one user (`user`, a fresh password).
    pub fn start() -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let user = "ci".to_string();
        let password = unique("pw");
        let htpasswd = ok(
            "htpasswd (apache2-utils)",
            run(Command::new("htpasswd").args(["-Bbn", &user, &password])),
        );
        let htfile = dir.path().join("htpasswd");
        std::fs::write(&htfile, &htpasswd.stdout).unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                storage.display(),
                htfile.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry (Debian package docker-registry)");
        let r = Registry {
            port,
            user,
            password,
            dir,
            docker_config: tempfile::tempdir().unwrap(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen: {}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r.docker_login();
        r
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_CONFIG", self.docker_config.path());
        c
    }

    fn docker_login(&self) {
        use std::io::Write;
        let mut child = self
            .docker()
            .args(["login", &self.host(), "-u", &self.user, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(self.password.as_bytes())
            .unwrap();
        ok("docker login", child.wait_with_output().unwrap());
    }

    /// Push the test image as `HOST/it/busybox:<tag>` and remove it locally: only the
    /// registry has it then. The image reference.
    pub fn push_test_image(&self, tag: &str) -> String {
        let image = format!("{}/it/busybox:{tag}", self.host());
        ok(
            "docker tag",
            run(self.docker().args(["tag", IMAGE, &image])),
        );
        ok("docker push", run(self.docker().args(["push", &image])));
        self.remove_local(&image);
        image
    }

    /// Remove `image` from the local Docker (fine when it is not there).
    pub fn remove_local(&self, image: &str) {
        let _ = run(self.docker().args(["rmi", "-f", image]));
    }

    pub fn present_locally(image: &str) -> bool {
        run(Command::new("docker").args(["image", "inspect", image]))
            .status
            .success()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Every local image of this registry (tagged here or pulled by berth).
        let o =
            run(Command::new("docker").args(["images", "--format", "{{.Repository}}:{{.Tag}}"]));
        let prefix = format!("{}/", self.host());
        for img in String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with(&prefix))
        {
            self.remove_local(img);
        }
    }
}
