//! The revision of a reconciler's latest write of each of its objects. The watch event of that
//! write shows only what the reconcile that made it already acted on (a compare-and-swap write
//! of what it read), so a trigger may skip it; every other change still enqueues the object.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct OwnWrites(Arc<Mutex<HashMap<String, i64>>>);

impl OwnWrites {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This reconciler wrote `name` at `revision`.
    pub fn record(&self, name: &str, revision: i64) {
        self.lock().insert(name.to_string(), revision);
    }

    /// `name` is gone: nothing of it to remember.
    pub fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Whether the change of `name` at `revision` is this reconciler's own latest write.
    pub fn is_own(&self, name: &str, revision: i64) -> bool {
        self.lock().get(name) == Some(&revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_latest_own_revision_is_skipped() {
        let own = OwnWrites::default();
        assert!(!own.is_own("web", 5));
        own.record("web", 5);
        assert!(own.is_own("web", 5));
        assert!(!own.is_own("web", 6), "someone else's later write");
        own.record("web", 7);
        assert!(!own.is_own("web", 5));
        own.forget("web");
        assert!(!own.is_own("web", 7));
    }
}
