//! A reflector's store (kube-runtime's `reflector::Store`, client-go's `Indexer`): the decoded
//! objects of one key prefix with named secondary indexes and an optional aggregate, all
//! updated under one lock so a reader never sees an index that disagrees with the objects.
//!
//! It does no I/O: the [`SharedInformer`](super::informer::SharedInformer) feeds it from the
//! process's one list+watch. Reads count how many lookups were made and how many objects they
//! returned ([`ReadStats`]), so tests can check that a reconcile's work follows what it asks
//! for, not the size of the cluster.

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::store::KeyValue;

/// Index values of one object (an object may sit under several values of one index).
pub type IndexFn<T> = fn(&T) -> Vec<String>;

/// A derived figure kept up to date with the objects (e.g. resources used per instance),
/// so a reader asks for it in O(1) instead of folding over every object.
pub trait Aggregate<T>: Default + Send + Sync + 'static {
    fn add(&mut self, obj: &T);
    fn remove(&mut self, obj: &T);
}

impl<T> Aggregate<T> for () {
    fn add(&mut self, _: &T) {}
    fn remove(&mut self, _: &T) {}
}

/// What happened to one key, with its decoded object (the new one for `Applied`, the last
/// known one for `Deleted`) so handlers need not decode it again.
pub struct Change {
    pub kind: ChangeKind,
    pub kv: KeyValue,
    pub obj: Option<Arc<dyn Any + Send + Sync>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Applied,
    Deleted,
}

/// Lookups made and objects they handed out, since the start.
#[derive(Debug, Default)]
pub struct ReadStats {
    lookups: AtomicU64,
    objects: AtomicU64,
}

impl ReadStats {
    fn count(&self, objects: usize) {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        self.objects.fetch_add(objects as u64, Ordering::Relaxed);
    }
    /// (lookups, objects returned).
    pub fn get(&self) -> (u64, u64) {
        (
            self.lookups.load(Ordering::Relaxed),
            self.objects.load(Ordering::Relaxed),
        )
    }
}

/// The informer's side of a reflector, type-erased so one informer feeds many kinds.
pub trait Sink: Send + Sync + 'static {
    fn prefix(&self) -> &str;
    /// Replace everything with a fresh listing; returns every change this makes (applied
    /// objects and keys that vanished).
    fn replace(&self, kvs: Vec<KeyValue>) -> Vec<Change>;
    fn apply(&self, kv: KeyValue) -> Change;
    fn delete(&self, kv: KeyValue) -> Change;
    /// Every stored object as an `Applied` change (for a handler that subscribes late).
    fn replay(&self, f: &mut dyn FnMut(&Change));
    /// Every stored key.
    fn keys(&self) -> Vec<String>;
}

struct Stored<T> {
    kv: KeyValue,
    obj: Arc<T>,
}

struct State<T, A> {
    objects: HashMap<String, Stored<T>>,
    /// index name → value → keys (ordered, so listings are deterministic).
    indexes: HashMap<&'static str, HashMap<String, BTreeSet<String>>>,
    aggregate: A,
}

pub struct Reflector<T, A = ()> {
    prefix: String,
    decode: fn(&KeyValue) -> Option<T>,
    indexers: Vec<(&'static str, IndexFn<T>)>,
    state: RwLock<State<T, A>>,
    stats: ReadStats,
}

impl<T, A> Reflector<T, A>
where
    T: Send + Sync + 'static,
    A: Aggregate<T>,
{
    pub fn new(prefix: impl Into<String>, decode: fn(&KeyValue) -> Option<T>) -> Self {
        Reflector {
            prefix: prefix.into(),
            decode,
            indexers: Vec::new(),
            state: RwLock::new(State {
                objects: HashMap::new(),
                indexes: HashMap::new(),
                aggregate: A::default(),
            }),
            stats: ReadStats::default(),
        }
    }

    /// Add a named index (before the reflector is fed).
    pub fn index(mut self, name: &'static str, f: IndexFn<T>) -> Self {
        self.indexers.push((name, f));
        self.state
            .get_mut()
            .unwrap()
            .indexes
            .insert(name, HashMap::new());
        self
    }

    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        let o = self
            .state
            .read()
            .unwrap()
            .objects
            .get(key)
            .map(|s| s.obj.clone());
        self.stats.count(o.is_some() as usize);
        o
    }

    /// The object stored under `prefix + name`.
    pub fn get_name(&self, name: &str) -> Option<Arc<T>> {
        self.get(&format!("{}{name}", self.prefix))
    }

    /// With its mod revision (what a compare-and-swap write names).
    pub fn get_with_revision(&self, key: &str) -> Option<(Arc<T>, i64)> {
        let o = self
            .state
            .read()
            .unwrap()
            .objects
            .get(key)
            .map(|s| (s.obj.clone(), s.kv.mod_revision));
        self.stats.count(o.is_some() as usize);
        o
    }

    /// Every object, in key order.
    pub fn list(&self) -> Vec<Arc<T>> {
        let s = self.state.read().unwrap();
        let mut keys: Vec<&String> = s.objects.keys().collect();
        keys.sort();
        let out: Vec<Arc<T>> = keys.iter().map(|k| s.objects[*k].obj.clone()).collect();
        self.stats.count(out.len());
        out
    }

    /// The objects under `value` of index `name`, in key order.
    pub fn by_index(&self, name: &str, value: &str) -> Vec<Arc<T>> {
        let s = self.state.read().unwrap();
        let out: Vec<Arc<T>> = s
            .indexes
            .get(name)
            .and_then(|i| i.get(value))
            .map(|keys| keys.iter().map(|k| s.objects[k].obj.clone()).collect())
            .unwrap_or_default();
        self.stats.count(out.len());
        out
    }

    /// How many objects sit under `value` of index `name` (no object is handed out).
    pub fn index_len(&self, name: &str, value: &str) -> usize {
        self.stats.count(0);
        self.state
            .read()
            .unwrap()
            .indexes
            .get(name)
            .and_then(|i| i.get(value))
            .map_or(0, BTreeSet::len)
    }

    /// The values index `name` currently holds, sorted.
    pub fn index_values(&self, name: &str) -> Vec<String> {
        let s = self.state.read().unwrap();
        let mut v: Vec<String> = s
            .indexes
            .get(name)
            .map(|i| i.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        self.stats.count(v.len());
        v
    }

    pub fn len(&self) -> usize {
        self.state.read().unwrap().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Read the aggregate (under the reflector's lock: keep `f` short).
    pub fn aggregate<R>(&self, f: impl FnOnce(&A) -> R) -> R {
        self.stats.count(1);
        f(&self.state.read().unwrap().aggregate)
    }

    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }

    fn unindex(&self, s: &mut State<T, A>, key: &str, obj: &T) {
        for (name, f) in &self.indexers {
            let idx = s.indexes.get_mut(name).expect("index registered");
            for v in f(obj) {
                if let Some(set) = idx.get_mut(&v) {
                    set.remove(key);
                    if set.is_empty() {
                        idx.remove(&v);
                    }
                }
            }
        }
        s.aggregate.remove(obj);
    }

    fn insert(&self, s: &mut State<T, A>, kv: KeyValue) -> Option<Arc<T>> {
        let key = kv.key.clone();
        if let Some(old) = s.objects.remove(&key) {
            self.unindex(s, &key, &old.obj);
        }
        let Some(obj) = (self.decode)(&kv) else {
            tracing::debug!(%key, "cache: undecodable object left out");
            return None;
        };
        for (name, f) in &self.indexers {
            let idx = s.indexes.get_mut(name).expect("index registered");
            for v in f(&obj) {
                idx.entry(v).or_default().insert(key.clone());
            }
        }
        s.aggregate.add(&obj);
        let obj = Arc::new(obj);
        s.objects.insert(
            key,
            Stored {
                kv,
                obj: obj.clone(),
            },
        );
        Some(obj)
    }
}

fn erased<T: Send + Sync + 'static>(o: Arc<T>) -> Arc<dyn Any + Send + Sync> {
    o
}

impl<T, A> Sink for Reflector<T, A>
where
    T: Send + Sync + 'static,
    A: Aggregate<T>,
{
    fn prefix(&self) -> &str {
        &self.prefix
    }

    fn replace(&self, kvs: Vec<KeyValue>) -> Vec<Change> {
        let mut s = self.state.write().unwrap();
        let mut gone: HashMap<String, Stored<T>> = std::mem::take(&mut s.objects);
        for idx in s.indexes.values_mut() {
            idx.clear();
        }
        s.aggregate = A::default();
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            gone.remove(&kv.key);
            let obj = self.insert(&mut s, kv.clone());
            out.push(Change {
                kind: ChangeKind::Applied,
                kv,
                obj: obj.map(erased),
            });
        }
        for (_, old) in gone {
            out.push(Change {
                kind: ChangeKind::Deleted,
                kv: old.kv,
                obj: Some(erased(old.obj)),
            });
        }
        out
    }

    fn apply(&self, kv: KeyValue) -> Change {
        let mut s = self.state.write().unwrap();
        let obj = self.insert(&mut s, kv.clone());
        Change {
            kind: ChangeKind::Applied,
            kv,
            obj: obj.map(erased),
        }
    }

    fn delete(&self, kv: KeyValue) -> Change {
        let mut s = self.state.write().unwrap();
        let old = s.objects.remove(&kv.key);
        if let Some(old) = &old {
            self.unindex(&mut s, &kv.key, &old.obj);
        }
        match old {
            // Handlers see the last value we knew (the backend's prev value may be absent).
            Some(old) => Change {
                kind: ChangeKind::Deleted,
                kv: KeyValue {
                    mod_revision: kv.mod_revision,
                    ..old.kv
                },
                obj: Some(erased(old.obj)),
            },
            None => Change {
                kind: ChangeKind::Deleted,
                kv,
                obj: None,
            },
        }
    }

    fn replay(&self, f: &mut dyn FnMut(&Change)) {
        let s = self.state.read().unwrap();
        for st in s.objects.values() {
            f(&Change {
                kind: ChangeKind::Applied,
                kv: st.kv.clone(),
                obj: Some(erased(st.obj.clone())),
            });
        }
    }

    fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.state.read().unwrap().objects.keys().cloned().collect();
        k.sort();
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, rev: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: 0,
        }
    }

    #[derive(Default)]
    struct Total(u64);
    impl Aggregate<String> for Total {
        fn add(&mut self, o: &String) {
            self.0 += o.len() as u64;
        }
        fn remove(&mut self, o: &String) {
            self.0 -= o.len() as u64;
        }
    }

    // An index function takes `&T`, here `&String`.
    #[allow(clippy::ptr_arg)]
    fn first_letter(s: &String) -> Vec<String> {
        s.chars()
            .next()
            .map(|c| vec![c.to_string()])
            .unwrap_or_default()
    }

    fn decode(kv: &KeyValue) -> Option<String> {
        String::from_utf8(kv.value.clone())
            .ok()
            .filter(|s| s != "bad")
    }

    #[test]
    fn indexes_and_aggregate_follow_changes() {
        let r: Reflector<String, Total> =
            Reflector::new("/p/", decode).index("first", first_letter);
        r.replace(vec![kv("/p/a", "apple", 1), kv("/p/b", "banana", 2)]);
        assert_eq!(r.by_index("first", "a").len(), 1);
        assert_eq!(r.aggregate(|t| t.0), 11);
        r.apply(kv("/p/a", "avocado", 3));
        assert_eq!(*r.by_index("first", "a")[0], "avocado");
        assert_eq!(r.aggregate(|t| t.0), 13);
        let c = r.delete(kv("/p/b", "", 4));
        assert_eq!(c.kind, ChangeKind::Deleted);
        assert_eq!(c.kv.value, b"banana", "handlers see the last value");
        assert!(r.by_index("first", "b").is_empty());
        assert_eq!(r.index_values("first"), vec!["a".to_string()]);
        // An undecodable value leaves the key out of the cache and its indexes.
        r.apply(kv("/p/a", "bad", 5));
        assert!(r.get("/p/a").is_none());
        assert_eq!(r.aggregate(|t| t.0), 0);
        // A relist reports keys that vanished.
        r.apply(kv("/p/c", "cherry", 6));
        let changes = r.replace(vec![kv("/p/d", "date", 7)]);
        assert!(changes
            .iter()
            .any(|c| c.kind == ChangeKind::Deleted && c.kv.key == "/p/c"));
        assert_eq!(r.keys(), vec!["/p/d".to_string()]);
    }

    #[test]
    fn reads_are_counted() {
        let r: Reflector<String> = Reflector::new("/p/", decode).index("first", first_letter);
        r.replace(vec![kv("/p/a", "apple", 1), kv("/p/b", "banana", 2)]);
        let before = r.stats().get();
        r.by_index("first", "a");
        r.get_name("b");
        let after = r.stats().get();
        assert_eq!((after.0 - before.0, after.1 - before.1), (2, 2));
    }
}
