//! A de-duplicating work queue with delayed adds and "one in flight per key".
//!
//! Like client-go's workqueue: a key that is queued twice is processed once; a key added while
//! it is being processed is marked dirty and re-queued when that processing ends, so two
//! reconciles of one key never overlap and no trigger is lost.
//!
//! A *spaced* add ([`Queue::add_spaced`]) is for triggers that fire in bursts (every task
//! transition of a 10,000-task service): the first after a quiet spell runs at once, later
//! ones wait until `spacing` has passed since the key's last reconcile ended, so a burst costs
//! one reconcile per spacing instead of one per event, and a lone event no latency.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

/// `finished` is pruned of entries older than FINISHED_KEEP once it holds this many.
const FINISHED_PRUNE_AT: usize = 4096;
const FINISHED_KEEP: Duration = Duration::from_secs(60);

#[derive(Default)]
struct State {
    ready: VecDeque<String>,
    queued: HashSet<String>,
    in_flight: HashSet<String>,
    dirty: HashSet<String>,
    /// Keys triggered by a spaced add while in flight: re-queued `spacing` after they end.
    dirty_spaced: HashMap<String, Duration>,
    /// When each key's last reconcile ended (pruned of old entries).
    finished: HashMap<String, Instant>,
    /// Earliest deadline per delayed key, and the same ordered by time.
    delayed: HashMap<String, Instant>,
    timeline: BTreeSet<(Instant, String)>,
    closed: bool,
}

#[derive(Default)]
pub struct Queue {
    state: Mutex<State>,
    notify: Notify,
}

impl Queue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&self, key: &str) {
        let mut s = self.state.lock().unwrap();
        if Self::add_locked(&mut s, key) {
            drop(s);
            self.notify.notify_one();
        }
    }

    fn add_locked(s: &mut State, key: &str) -> bool {
        if s.closed {
            return false;
        }
        if let Some(at) = s.delayed.remove(key) {
            s.timeline.remove(&(at, key.to_string()));
        }
        if s.in_flight.contains(key) {
            s.dirty.insert(key.to_string());
            return false;
        }
        if s.queued.insert(key.to_string()) {
            s.ready.push_back(key.to_string());
            return true;
        }
        false
    }

    /// Add `key` once `delay` has passed (an earlier pending deadline wins).
    pub fn add_after(&self, key: &str, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay;
        let mut s = self.state.lock().unwrap();
        if Self::add_at_locked(&mut s, key, at) {
            drop(s);
            // Wake a waiter so it re-computes its sleep deadline.
            self.notify.notify_one();
        }
    }

    /// Add `key` now if its last reconcile ended at least `spacing` ago, else when it has
    /// (see the module doc).
    pub fn add_spaced(&self, key: &str, spacing: Duration) {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap();
        if s.in_flight.contains(key) {
            if !s.dirty.contains(key) {
                s.dirty_spaced.insert(key.to_string(), spacing);
            }
            return;
        }
        let due = s
            .finished
            .get(key)
            .map(|f| *f + spacing)
            .filter(|at| *at > now);
        let wake = match due {
            None => Self::add_locked(&mut s, key),
            Some(at) => Self::add_at_locked(&mut s, key, at),
        };
        if wake {
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Schedule `key` at `at` (an earlier pending deadline wins). True if a waiter should
    /// look again.
    fn add_at_locked(s: &mut State, key: &str, at: Instant) -> bool {
        if s.closed || s.queued.contains(key) {
            return false;
        }
        match s.delayed.get(key).copied() {
            Some(existing) if existing <= at => return false,
            Some(existing) => {
                s.timeline.remove(&(existing, key.to_string()));
            }
            None => {}
        }
        s.delayed.insert(key.to_string(), at);
        s.timeline.insert((at, key.to_string()));
        true
    }

    /// Wait for the next ready key and mark it in flight. `None` once closed and drained.
    pub async fn pop(&self) -> Option<String> {
        loop {
            let notified = self.notify.notified();
            let next_deadline = {
                let mut s = self.state.lock().unwrap();
                let now = Instant::now();
                // Promote due delayed keys.
                while let Some((at, key)) = s.timeline.first().cloned() {
                    if at > now {
                        break;
                    }
                    s.timeline.pop_first();
                    s.delayed.remove(&key);
                    Self::add_locked(&mut s, &key);
                }
                if let Some(key) = s.ready.pop_front() {
                    s.queued.remove(&key);
                    s.in_flight.insert(key.clone());
                    // Let another waiter look at what is left.
                    if !s.ready.is_empty() {
                        self.notify.notify_one();
                    }
                    return Some(key);
                }
                if s.closed {
                    self.notify.notify_one();
                    return None;
                }
                s.timeline.first().map(|(at, _)| *at)
            };
            match next_deadline {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Processing of `key` finished: re-queue it if it was triggered meanwhile.
    pub fn done(&self, key: &str) {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap();
        s.in_flight.remove(key);
        if s.finished.len() >= FINISHED_PRUNE_AT {
            s.finished
                .retain(|_, at| now.duration_since(*at) < FINISHED_KEEP);
        }
        s.finished.insert(key.to_string(), now);
        let spaced = s.dirty_spaced.remove(key);
        let wake = if s.dirty.remove(key) {
            Self::add_locked(&mut s, key)
        } else if let Some(spacing) = spaced {
            Self::add_at_locked(&mut s, key, now + spacing)
        } else {
            false
        };
        if wake {
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Stop handing out keys; waiting `pop`s return `None`.
    pub fn close(&self) {
        let mut s = self.state.lock().unwrap();
        s.closed = true;
        s.ready.clear();
        s.queued.clear();
        drop(s);
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Keys ready or waiting on a delay.
    pub fn depth(&self) -> usize {
        let s = self.state.lock().unwrap();
        s.ready.len() + s.delayed.len()
    }

    pub fn in_flight(&self) -> usize {
        self.state.lock().unwrap().in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn dedups_queued_keys() {
        let q = Queue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.depth(), 2);
        assert_eq!(q.pop().await.as_deref(), Some("a"));
        assert_eq!(q.pop().await.as_deref(), Some("b"));
        assert_eq!(q.depth(), 0);
    }

    /// A burst of spaced adds costs one reconcile per spacing; the first after a quiet spell
    /// is handed out at once; an add while in flight waits for the spacing after `done`.
    #[tokio::test(start_paused = true)]
    async fn spaced_adds_run_at_once_after_quiet_and_once_per_spacing_in_a_burst() {
        let q = Queue::new();
        let spacing = Duration::from_millis(100);
        q.add_spaced("a", spacing);
        let t0 = Instant::now();
        let k = q.pop().await.unwrap();
        assert_eq!(Instant::now(), t0, "first one at once");
        q.add_spaced("a", spacing); // while in flight
        q.done(&k);
        let done_at = Instant::now();
        for _ in 0..50 {
            q.add_spaced("a", spacing);
        }
        let k = q.pop().await.unwrap();
        assert_eq!(Instant::now() - done_at, spacing, "one after the spacing");
        tokio::time::sleep(Duration::from_millis(30)).await;
        q.done(&k);
        assert_eq!(q.depth(), 0, "the burst was absorbed by that one reconcile");
        // Quiet for longer than the spacing: at once again.
        tokio::time::sleep(Duration::from_millis(150)).await;
        q.add_spaced("a", spacing);
        let t1 = Instant::now();
        q.pop().await.unwrap();
        assert_eq!(Instant::now(), t1);
        // A plain add is never held back by spacing.
        q.done("a");
        q.add("a");
        let t2 = Instant::now();
        q.pop().await.unwrap();
        assert_eq!(Instant::now(), t2);
    }

    #[tokio::test(start_paused = true)]
    async fn key_added_while_in_flight_is_requeued_after_done() {
        let q = Queue::new();
        q.add("a");
        let k = q.pop().await.unwrap();
        q.add("a");
        // Not handed out while in flight.
        assert_eq!(q.depth(), 0);
        let r = tokio::time::timeout(Duration::from_millis(10), q.pop()).await;
        assert!(r.is_err(), "a second pop must not get the in-flight key");
        q.done(&k);
        assert_eq!(q.pop().await.as_deref(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_add_fires_after_delay_and_earliest_wins() {
        let q = std::sync::Arc::new(Queue::new());
        q.add_after("a", Duration::from_secs(10));
        q.add_after("a", Duration::from_secs(5));
        q.add_after("a", Duration::from_secs(20));
        let start = Instant::now();
        let k = q.pop().await.unwrap();
        assert_eq!(k, "a");
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn immediate_add_cancels_delay() {
        let q = Queue::new();
        q.add_after("a", Duration::from_secs(60));
        q.add("a");
        let start = Instant::now();
        assert_eq!(q.pop().await.as_deref(), Some("a"));
        assert!(start.elapsed() < Duration::from_secs(1));
        q.done("a");
        // The delayed copy is gone too.
        let r = tokio::time::timeout(Duration::from_secs(120), q.pop()).await;
        assert!(r.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn close_releases_waiters() {
        let q = std::sync::Arc::new(Queue::new());
        let q2 = q.clone();
        let h = tokio::spawn(async move { q2.pop().await });
        tokio::task::yield_now().await;
        q.close();
        assert_eq!(h.await.unwrap(), None);
    }
}
