//! Per-target runtime state shared by the proxy and the health checker: health, in-flight
//! requests, and the choice of a target by the group's algorithm.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::model::lb::{Algorithm, TargetHealthCheck};

/// Health as this load balancer sees it (the AWS target states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Initial,
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Initial => "initial",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

pub struct TargetRuntime {
    pub target_group: String,
    pub task_id: String,
    pub service: String,
    pub addr: SocketAddr,
    healthy: AtomicBool,
    pub draining: AtomicBool,
    pub in_flight: AtomicUsize,
    successes: AtomicU32,
    failures: AtomicU32,
    pub state: Mutex<Health>,
    /// Reported `drained` for the current drain.
    pub drained_reported: AtomicBool,
}

impl TargetRuntime {
    pub fn new(target_group: &str, task_id: &str, service: &str, addr: SocketAddr) -> Self {
        TargetRuntime {
            target_group: target_group.into(),
            task_id: task_id.into(),
            service: service.into(),
            addr,
            healthy: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            successes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            state: Mutex::new(Health::Initial),
            drained_reported: AtomicBool::new(false),
        }
    }

    /// Takes new requests: healthy and not draining.
    pub fn routable(&self) -> bool {
        self.healthy.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    pub fn health(&self) -> Health {
        *self.state.lock().unwrap()
    }

    /// Record a check result; returns the new state if it changed.
    pub fn observe(&self, ok: bool, hc: &TargetHealthCheck) -> Option<Health> {
        let mut st = self.state.lock().unwrap();
        let next = if ok {
            self.failures.store(0, Ordering::Relaxed);
            let n = self.successes.fetch_add(1, Ordering::Relaxed) + 1;
            if *st != Health::Healthy && n >= hc.healthy_threshold_count.max(1) {
                Health::Healthy
            } else {
                *st
            }
        } else {
            self.successes.store(0, Ordering::Relaxed);
            let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            if *st != Health::Unhealthy && n >= hc.unhealthy_threshold_count.max(1) {
                Health::Unhealthy
            } else {
                *st
            }
        };
        if next == *st {
            return None;
        }
        *st = next;
        self.healthy
            .store(next == Health::Healthy, Ordering::Release);
        Some(next)
    }

    /// Passive ejection: a connection error takes the target out at once.
    pub fn eject(&self) -> bool {
        let mut st = self.state.lock().unwrap();
        self.successes.store(0, Ordering::Relaxed);
        if *st == Health::Unhealthy {
            return false;
        }
        *st = Health::Unhealthy;
        self.healthy.store(false, Ordering::Release);
        true
    }
}

/// Counts a request in flight until dropped (after the response body has been sent).
pub struct InFlight(pub Arc<TargetRuntime>);

impl InFlight {
    pub fn new(t: Arc<TargetRuntime>) -> Self {
        t.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(t)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Choose a routable target, skipping `exclude` (a target that just failed to connect).
///
/// When no registered target is both healthy and taking requests (a new target not yet
/// checked while the old ones drain, a burst of connection errors ejecting every target), the
/// group fails open as an ALB does: any target that is not draining, and failing that any
/// draining one (its containers run until it is drained). A 503 only when nothing is
/// registered.
pub fn pick(
    targets: &[Arc<TargetRuntime>],
    algorithm: Algorithm,
    cursor: &AtomicUsize,
    exclude: Option<&SocketAddr>,
) -> Option<Arc<TargetRuntime>> {
    let candidates = |f: &dyn Fn(&TargetRuntime) -> bool| -> Vec<&Arc<TargetRuntime>> {
        targets
            .iter()
            .filter(|t| Some(&t.addr) != exclude && f(t))
            .collect()
    };
    let mut ok = candidates(&|t| t.routable());
    if ok.is_empty() {
        ok = candidates(&|t| !t.draining.load(Ordering::Acquire));
    }
    if ok.is_empty() {
        ok = candidates(&|_| true);
    }
    if ok.is_empty() {
        return None;
    }
    match algorithm {
        Algorithm::RoundRobin => {
            let i = cursor.fetch_add(1, Ordering::Relaxed);
            Some(ok[i % ok.len()].clone())
        }
        Algorithm::LeastOutstandingRequests => {
            let start = cursor.fetch_add(1, Ordering::Relaxed);
            // Ties rotate so equal targets share the load.
            (0..ok.len())
                .map(|k| ok[(start + k) % ok.len()])
                .min_by_key(|t| t.in_flight.load(Ordering::Relaxed))
                .cloned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(port: u16) -> Arc<TargetRuntime> {
        let t = Arc::new(TargetRuntime::new(
            "tg",
            &format!("t{port}"),
            "s",
            format!("127.0.0.1:{port}").parse().unwrap(),
        ));
        t.observe(
            true,
            &TargetHealthCheck {
                healthy_threshold_count: 1,
                ..Default::default()
            },
        );
        t
    }

    #[test]
    fn thresholds_move_state() {
        let hc = TargetHealthCheck::default();
        let x = TargetRuntime::new("tg", "a", "s", "127.0.0.1:1".parse().unwrap());
        assert_eq!(x.observe(true, &hc), None);
        assert_eq!(x.observe(true, &hc), Some(Health::Healthy));
        assert!(x.routable());
        assert_eq!(x.observe(false, &hc), None);
        assert_eq!(x.observe(false, &hc), Some(Health::Unhealthy));
        assert!(!x.routable());
        assert!(!x.eject());
    }

    #[test]
    fn round_robin_and_least_outstanding() {
        let ts = vec![t(1), t(2), t(3)];
        let c = AtomicUsize::new(0);
        let picks: Vec<u16> = (0..6)
            .map(|_| {
                pick(&ts, Algorithm::RoundRobin, &c, None)
                    .unwrap()
                    .addr
                    .port()
            })
            .collect();
        assert_eq!(picks, vec![1, 2, 3, 1, 2, 3]);
        let _busy = InFlight::new(ts[0].clone());
        let _busy2 = InFlight::new(ts[1].clone());
        let p = pick(&ts, Algorithm::LeastOutstandingRequests, &c, None).unwrap();
        assert_eq!(p.addr.port(), 3);
        ts[2].draining.store(true, Ordering::SeqCst);
        let p = pick(&ts, Algorithm::RoundRobin, &c, Some(&ts[0].addr)).unwrap();
        assert_eq!(p.addr.port(), 2);
    }

    #[test]
    fn fails_open_when_no_target_is_healthy_and_taking_requests() {
        let hc = TargetHealthCheck::default();
        let c = AtomicUsize::new(0);
        // The old target drains while the new one has not been checked yet.
        let old = t(1);
        old.draining.store(true, Ordering::SeqCst);
        let fresh = Arc::new(TargetRuntime::new(
            "tg",
            "new",
            "s",
            "127.0.0.1:2".parse().unwrap(),
        ));
        let ts = vec![old.clone(), fresh.clone()];
        assert_eq!(
            pick(&ts, Algorithm::RoundRobin, &c, None)
                .unwrap()
                .addr
                .port(),
            2
        );
        // A healthy one is preferred as soon as there is one.
        fresh.observe(true, &hc);
        fresh.observe(true, &hc);
        let third = t(3);
        let ts = vec![old.clone(), fresh.clone(), third];
        for _ in 0..4 {
            assert_ne!(
                pick(&ts, Algorithm::RoundRobin, &c, None)
                    .unwrap()
                    .addr
                    .port(),
                1
            );
        }
        // Only draining targets left: still better than a 503.
        let ts = vec![old.clone()];
        assert_eq!(
            pick(&ts, Algorithm::RoundRobin, &c, None)
                .unwrap()
                .addr
                .port(),
            1
        );
        assert!(pick(&ts, Algorithm::RoundRobin, &c, Some(&old.addr)).is_none());
        assert!(pick(&[], Algorithm::RoundRobin, &c, None).is_none());
    }
}
