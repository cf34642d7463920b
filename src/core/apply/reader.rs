//! The plan's view of the store.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::model::{keys, Kind};
use crate::store::{KeyValue, Store, StoreError};

/// Reads through one plan, remembering every key's mod revision for the transaction.
pub struct Reader<'a> {
    pub store: &'a dyn Store,
    gets: HashMap<String, Option<KeyValue>>,
    families: HashMap<String, Vec<KeyValue>>,
    pub compares: BTreeMap<String, i64>,
    /// The key compared for each family read (its latest revision, or revision 1 absent).
    pub family_keys: HashMap<String, String>,
    /// Keys read (not written) whose values the writes depend on: a written service's cluster
    /// and task definition family. A source apply compares only these and the written keys.
    pub deps: HashSet<String>,
}

impl<'a> Reader<'a> {
    pub fn new(store: &'a dyn Store) -> Self {
        Reader {
            store,
            gets: HashMap::new(),
            families: HashMap::new(),
            compares: BTreeMap::new(),
            family_keys: HashMap::new(),
            deps: HashSet::new(),
        }
    }

    pub async fn get(&mut self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        if let Some(v) = self.gets.get(key) {
            return Ok(v.clone());
        }
        let v = self.store.get(key).await?;
        self.compares
            .insert(key.to_string(), v.as_ref().map_or(0, |kv| kv.mod_revision));
        self.gets.insert(key.to_string(), v.clone());
        Ok(v)
    }

    /// Every stored revision of a family, oldest first. The transaction compares the latest
    /// one (or, for a family with none, that revision 1 is still absent).
    pub async fn family(&mut self, family: &str) -> Result<Vec<KeyValue>, StoreError> {
        if let Some(v) = self.families.get(family) {
            return Ok(v.clone());
        }
        let (kvs, _) = self
            .store
            .range(&keys::taskdef_family_prefix(family))
            .await?;
        let key = match kvs.last() {
            Some(kv) => {
                self.compares.insert(kv.key.clone(), kv.mod_revision);
                kv.key.clone()
            }
            None => {
                let key = keys::taskdef_key(family, 1);
                self.compares.insert(key.clone(), 0);
                key
            }
        };
        self.family_keys.insert(family.to_string(), key);
        self.families.insert(family.to_string(), kvs.clone());
        Ok(kvs)
    }

    pub async fn list(&self, kind: Kind) -> Result<Vec<KeyValue>, StoreError> {
        Ok(self.store.range(&keys::prefix(kind)).await?.0)
    }
}
