//! Store values of model objects, as apply reads and writes them.

use serde::Serialize;

use crate::model::Object;
use crate::store::{KeyValue, StoreError};

pub fn decode<S, T>(kv: &KeyValue) -> Result<Object<S, T>, StoreError>
where
    S: serde::de::DeserializeOwned,
    T: serde::de::DeserializeOwned + Default,
{
    Object::from_kv(kv).map_err(|e| StoreError::Corrupt(format!("{}: {e}", kv.key)))
}

/// Serialize for the store: `metadata.revision` is the kv's mod revision, never stored.
pub fn encode<S: Serialize, T: Serialize>(o: &mut Object<S, T>) -> Vec<u8> {
    o.metadata.revision = 0;
    o.to_bytes()
}
