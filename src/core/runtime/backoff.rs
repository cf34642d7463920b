//! Per-key exponential back-off, reset on success.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct BackoffPolicy {
    pub base: Duration,
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        // Faster first retry than Kubernetes' (5 ms base but 10 s for pod crash loops):
        // most reconcile errors are CAS conflicts that clear at once.
        BackoffPolicy {
            base: Duration::from_millis(50),
            max: Duration::from_secs(30),
        }
    }
}

impl BackoffPolicy {
    /// Delay before retry number `failures` (1-based): base × 2^(failures−1), capped at max.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let exp = (failures - 1).min(31);
        let factor = 1u64 << exp;
        let nanos = (self.base.as_nanos() as u64).saturating_mul(factor);
        Duration::from_nanos(nanos).min(self.max)
    }
}

#[derive(Default)]
pub struct Backoff {
    policy: BackoffPolicy,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff {
            policy,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Record a failure of `key` and return how long to wait before retrying it.
    pub fn fail(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().unwrap();
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        self.policy.delay(*n)
    }

    pub fn reset(&self, key: &str) {
        self.failures.lock().unwrap().remove(key);
    }

    pub fn failures(&self, key: &str) -> u32 {
        self.failures.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_then_caps_and_resets() {
        let b = Backoff::new(BackoffPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        });
        assert_eq!(b.fail("k"), Duration::from_millis(100));
        assert_eq!(b.fail("k"), Duration::from_millis(200));
        assert_eq!(b.fail("k"), Duration::from_millis(400));
        assert_eq!(b.fail("k"), Duration::from_millis(800));
        assert_eq!(b.fail("k"), Duration::from_secs(1));
        assert_eq!(b.fail("other"), Duration::from_millis(100));
        b.reset("k");
        assert_eq!(b.fail("k"), Duration::from_millis(100));
    }

    proptest! {
        #[test]
        fn delay_is_monotonic_and_bounded(base_ms in 1u64..10_000, max_ms in 1u64..1_000_000, n in 1u32..500) {
            let p = BackoffPolicy { base: Duration::from_millis(base_ms), max: Duration::from_millis(max_ms) };
            let d = p.delay(n);
            prop_assert!(d <= p.max);
            prop_assert!(d >= p.base.min(p.max));
            prop_assert!(p.delay(n + 1) >= d);
        }
    }
}
