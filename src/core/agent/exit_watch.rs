//! Notice the end of a task's essential container the moment its process ends.
//!
//! Docker's `die` event comes only after containerd has deleted the task (unmounts, cgroup and
//! shim teardown): 130–170 ms after a `kill -9` on this kind of machine, all of it on the path
//! to a replacement. A pidfd (Linux ≥ 5.3) on the container's main process becomes readable
//! when that process exits, so the agent can mark the task stopping (and the service start its
//! replacement) while Docker is still cleaning up. Only that early mark comes from here: exit
//! codes and the STOPPED record still come from Docker's own state, once it has caught up.
//!
//! A PID is trusted only when its process is in the container's cgroup (checked after the
//! pidfd pins it): an agent in another PID namespace, or a PID reused between inspect and
//! open, watches nothing and falls back to Docker's events.

use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;

/// The main process of `container` (task `task`, container definition `name`) has exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exited {
    pub task: String,
    pub name: String,
    pub container: String,
}

/// One watch per container id while its process lives. Dropping the set (its agent
/// stopping) ends every watch: an agent that is gone reports no more exits, and an embedded
/// agent restarted in the same process does not leave descriptors behind.
pub struct ExitWatch {
    tx: mpsc::UnboundedSender<Exited>,
    watched: std::sync::Arc<Mutex<HashMap<String, tokio::task::AbortHandle>>>,
}

impl ExitWatch {
    /// A watch set and the receiver of its exits.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Exited>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let w = ExitWatch {
            tx,
            watched: Default::default(),
        };
        (w, rx)
    }

    /// Watch `container`'s main process `pid` unless it is watched already. Returns whether a
    /// watch is in place (false: no pidfd, or the PID is not that container's).
    pub fn ensure(&self, task: &str, name: &str, container: &str, pid: i64) -> bool {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        if watched.contains_key(container) {
            return true;
        }
        let Some(fd) = open_verified(pid, container) else {
            return false;
        };
        // SAFETY: the descriptor is owned by the AsyncFd, so it stays open while registered.
        let Ok(fd) = (unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }) else {
            return false;
        };
        let ev = Exited {
            task: task.to_string(),
            name: name.to_string(),
            container: container.to_string(),
        };
        let (tx, map) = (self.tx.clone(), self.watched.clone());
        let handle = tokio::spawn(async move {
            // Readable exactly when the process has exited; an error means the same for us.
            let _ = fd.readable().await;
            map.lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&ev.container);
            let _ = tx.send(ev);
        });
        watched.insert(container.to_string(), handle.abort_handle());
        true
    }

    pub fn len(&self) -> usize {
        self.watched.lock().map(|w| w.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        for (_, handle) in watched.drain() {
            handle.abort();
        }
    }
}

/// A pidfd for `pid`, only if that process belongs to `container`'s cgroup.
fn open_verified(pid: i64, container: &str) -> Option<OwnedFd> {
    if pid <= 0 || container.len() < 12 {
        return None;
    }
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return None;
    }
    // SAFETY: a non-negative return is a descriptor we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    // The descriptor pins the process: if it is the container's now, it is the one we watch.
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    in_container_cgroup(&cgroup, container).then_some(fd)
}

/// Whether a `/proc/PID/cgroup` text names `container` (full id) in any of its paths: Docker's
/// cgroupfs driver (`/docker/<id>`) and systemd driver (`docker-<id>.scope`) both do.
fn in_container_cgroup(cgroup: &str, container: &str) -> bool {
    cgroup
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .any(|path| path.contains(container))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "b03030d6174993c0a7f6ed735eefe2d3d5bb389c7c2f7983389fea99047cbba8";

    #[test]
    fn cgroup_paths_of_both_drivers_name_the_container() {
        assert!(in_container_cgroup(&format!("0::/docker/{ID}\n"), ID));
        assert!(in_container_cgroup(
            &format!("0::/system.slice/docker-{ID}.scope\n"),
            ID
        ));
        assert!(!in_container_cgroup("0::/user.slice/session-1.scope\n", ID));
        assert!(!in_container_cgroup("", ID));
    }

    #[tokio::test]
    async fn a_process_outside_the_container_is_not_watched() {
        let (w, _rx) = ExitWatch::new();
        // This test process is in no container of that id.
        assert!(!w.ensure("t", "c", ID, std::process::id() as i64));
        assert!(!w.ensure("t", "c", ID, 0));
        assert!(w.is_empty());
    }

    /// A child process in this test's own cgroup, standing in for a container: its PID and
    /// the cgroup path to name it by. None (and no child left) at the root cgroup ("/").
    fn child_in_own_cgroup() -> Option<(std::process::Child, i64, String)> {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id() as i64;
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let name = cgroup
            .lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .map(str::to_string)
            .find(|p| p.len() >= 12);
        if name.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        name.map(|n| (child, pid, n))
    }

    #[tokio::test]
    async fn an_exit_is_reported_once() {
        // A child in our own cgroup stands in for a container: watch it under our cgroup's
        // name, kill it, expect one exit.
        let Some((mut child, pid, name)) = child_in_own_cgroup() else {
            return;
        };
        let (w, mut rx) = ExitWatch::new();
        assert!(w.ensure("t1", "web", &name, pid));
        assert!(
            w.ensure("t1", "web", &name, pid),
            "a second ensure is a no-op"
        );
        assert_eq!(w.len(), 1);
        child.kill().unwrap();
        let ev = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("exit seen")
            .unwrap();
        assert_eq!((ev.task.as_str(), ev.name.as_str()), ("t1", "web"));
        let _ = child.wait();
        assert!(w.is_empty());
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn dropping_the_set_ends_its_watches() {
        let Some((mut child, pid, name)) = child_in_own_cgroup() else {
            return;
        };
        let (w, mut rx) = ExitWatch::new();
        assert!(w.ensure("t1", "web", &name, pid));
        drop(w);
        child.kill().unwrap();
        let _ = child.wait();
        // The watch task was aborted: its sender is gone without a report.
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("the channel closes");
        assert_eq!(got, None);
    }
}
