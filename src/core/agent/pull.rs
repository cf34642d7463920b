//! Image pulls before a task starts, with the ECS agent's `ECS_IMAGE_PULL_BEHAVIOR` values
//! (`--image-pull-behavior`) and a pull timeout (`--image-pull-timeout`):
//!
//! | behaviour       | pulls                                               | pull fails            |
//! |-----------------|-----------------------------------------------------|-----------------------|
//! | `default`       | always                                              | the cached image, if any |
//! | `always`        | always                                              | the task fails        |
//! | `once`          | unless this agent pulled it before and it is cached | the cached image, if any |
//! | `prefer-cached` | only when the image is absent                       | the task fails        |
//!
//! A failed pull is `CannotPullContainerError: <the registry's message>` in the task's
//! `stoppedReason` (the runner's). Credentials come from the container's
//! `repositoryCredentials` Secret (`auth::secret_values::RegistryLogin`).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptions;
use bollard::Docker;
use futures::StreamExt;

use crate::auth::secret_values::RegistryLogin;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullBehavior {
    #[default]
    Default,
    Always,
    Once,
    PreferCached,
}

impl std::str::FromStr for PullBehavior {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "default" => Ok(PullBehavior::Default),
            "always" => Ok(PullBehavior::Always),
            "once" => Ok(PullBehavior::Once),
            "prefer-cached" | "prefer_cached" | "prefercached" => Ok(PullBehavior::PreferCached),
            _ => Err(format!(
                "unknown image pull behavior {s:?} (expected default, always, once or prefer-cached)"
            )),
        }
    }
}

/// How this agent pulls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullConfig {
    pub behavior: PullBehavior,
    /// One pull, from the request to the last layer.
    pub timeout: Duration,
}

impl Default for PullConfig {
    fn default() -> Self {
        PullConfig {
            behavior: PullBehavior::Default,
            timeout: Duration::from_secs(600),
        }
    }
}

/// What [`Puller::ensure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullOutcome {
    /// Used the image already on the instance (no pull asked for).
    Cached,
    Pulled,
    /// The pull failed (message) and the cached image is used.
    CachedAfterFailure(String),
}

/// `name[:tag]` → `name:tag` (`latest` when none; a digest is kept): Docker pulls every tag
/// of a repository asked for without one.
pub fn with_tag(image: &str) -> String {
    if image.contains('@') {
        return image.to_string();
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// The registry an image reference names (`docker.io` when its first component is not a host).
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => "docker.io".into(),
    }
}

/// Layers seen and done in a pull's progress stream.
#[derive(Debug, Default)]
struct Layers {
    seen: HashSet<String>,
    done: HashSet<String>,
}

impl Layers {
    fn note(&mut self, id: Option<&str>, status: &str) -> bool {
        let Some(id) = id.filter(|i| i.len() >= 12 && i.chars().all(|c| c.is_ascii_hexdigit()))
        else {
            return false;
        };
        let mut changed = self.seen.insert(id.to_string());
        if status.starts_with("Pull complete") || status.starts_with("Already exists") {
            changed |= self.done.insert(id.to_string());
        }
        changed
    }
}

pub struct Puller {
    pub docker: Docker,
    pub cfg: PullConfig,
    /// Images this agent has pulled successfully (for `once`).
    pulled: Mutex<HashSet<String>>,
}

impl Puller {
    pub fn new(docker: Docker, cfg: PullConfig) -> Self {
        Puller {
            docker,
            cfg,
            pulled: Mutex::new(HashSet::new()),
        }
    }

    async fn present(&self, image: &str) -> bool {
        self.docker.inspect_image(image).await.is_ok()
    }

    fn pulled_before(&self, image: &str) -> bool {
        self.pulled.lock().is_ok_and(|p| p.contains(image))
    }

    /// Make `image` available as this agent's behaviour says. `progress` is called with lines
    /// like "pulling image X: 2/5 layers". The error is the registry's (or Docker's) message.
    pub async fn ensure(
        &self,
        image: &str,
        login: Option<&RegistryLogin>,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<PullOutcome, String> {
        let present = self.present(image).await;
        let pull = match self.cfg.behavior {
            PullBehavior::PreferCached => !present,
            PullBehavior::Once => !(present && self.pulled_before(image)),
            PullBehavior::Default | PullBehavior::Always => true,
        };
        if !pull {
            return Ok(PullOutcome::Cached);
        }
        match self.pull(image, login, progress).await {
            Ok(()) => {
                if let Ok(mut p) = self.pulled.lock() {
                    p.insert(image.to_string());
                }
                Ok(PullOutcome::Pulled)
            }
            Err(e) => {
                let fallback = matches!(
                    self.cfg.behavior,
                    PullBehavior::Default | PullBehavior::Once
                );
                if fallback && present {
                    tracing::info!(image, error = %e, "pull failed; using the cached image");
                    Ok(PullOutcome::CachedAfterFailure(e))
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn pull(
        &self,
        image: &str,
        login: Option<&RegistryLogin>,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<(), String> {
        let reference = with_tag(image);
        let opts = CreateImageOptions {
            from_image: Some(reference.clone()),
            ..Default::default()
        };
        let creds = login.map(|l| DockerCredentials {
            username: Some(l.username.clone()),
            password: Some(l.password.clone()),
            serveraddress: Some(registry_of(image)),
            ..Default::default()
        });
        progress(format!("pulling image {image}"));
        let run = async {
            let mut stream = self.docker.create_image(Some(opts), None, creds);
            let mut layers = Layers::default();
            let mut last = Instant::now();
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| docker_message(&e))?;
                if let Some(err) = info.error_detail.and_then(|d| d.message).or(info.error) {
                    return Err(err);
                }
                let status = info.status.unwrap_or_default();
                if layers.note(info.id.as_deref(), &status)
                    && last.elapsed() >= Duration::from_millis(500)
                {
                    last = Instant::now();
                    progress(format!(
                        "pulling image {image}: {}/{} layers",
                        layers.done.len(),
                        layers.seen.len()
                    ));
                }
            }
            progress(format!(
                "pulled image {image}: {}/{} layers",
                layers.done.len(),
                layers.seen.len()
            ));
            Ok(())
        };
        match tokio::time::timeout(self.cfg.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "pull of {image} timed out after {}s (--image-pull-timeout)",
                self.cfg.timeout.as_secs()
            )),
        }
    }
}

/// Docker's message for a failed request (the registry's, as the daemon relays it).
fn docker_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(with_tag("busybox"), "busybox:latest");
        assert_eq!(
            with_tag("127.0.0.1:5000/it/bb"),
            "127.0.0.1:5000/it/bb:latest"
        );
        assert_eq!(with_tag("127.0.0.1:5000/it/bb:1"), "127.0.0.1:5000/it/bb:1");
        assert_eq!(with_tag("a/b@sha256:00"), "a/b@sha256:00");
        assert_eq!(registry_of("127.0.0.1:5000/it/bb:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("ghcr.io/x/y"), "ghcr.io");
        assert_eq!(registry_of("library/busybox"), "docker.io");
        assert_eq!(registry_of("busybox"), "docker.io");
    }

    #[test]
    fn behaviours_parse() {
        assert_eq!("prefer-cached".parse(), Ok(PullBehavior::PreferCached));
        assert_eq!("ALWAYS".parse(), Ok(PullBehavior::Always));
        assert!("sometimes".parse::<PullBehavior>().is_err());
    }

    #[test]
    fn layers_count() {
        let mut l = Layers::default();
        assert!(l.note(Some("0123456789ab"), "Pulling fs layer"));
        assert!(l.note(Some("0123456789ac"), "Already exists"));
        assert!(!l.note(Some("latest"), "Pulling from it/bb"));
        assert!(l.note(Some("0123456789ab"), "Pull complete"));
        assert_eq!((l.done.len(), l.seen.len()), (2, 2));
    }
}
