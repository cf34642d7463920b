//! Objects with no special apply semantics (scaling policies, roles, load balancers, target
//! groups): create, or update spec, labels and annotations.

use serde::Serialize;

use crate::apply::codec::{decode, encode};
use crate::apply::error::ApplyError;
use crate::apply::meta::{merged_annotations, same_meta};
use crate::apply::reader::Reader;
use crate::apply::report::{ObjectResult, Outcome};
use crate::manifest::Document;
use crate::model::{self, keys, Kind, Object};
use crate::store::Op;

/// What to store at `key` for `want`: a new object (with a uid), the stored one with the
/// manifest's spec, labels and annotations, or nothing when it is unchanged.
pub async fn update<S, T>(
    r: &mut Reader<'_>,
    key: &str,
    want: &Object<S, T>,
    stamped: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(Outcome, Option<Object<S, T>>), ApplyError>
where
    S: Serialize + serde::de::DeserializeOwned + Clone + PartialEq,
    T: Serialize + serde::de::DeserializeOwned + Clone + Default,
{
    Ok(match r.get(key).await? {
        None => {
            let mut p = want.clone();
            p.metadata.annotations = merged_annotations(None, &want.metadata.annotations, stamped);
            p.metadata.uid = model::new_id();
            p.metadata.created_at = Some(now);
            (Outcome::Created, Some(p))
        }
        Some(kv) => {
            let mut cur: Object<S, T> = decode(&kv)?;
            if cur.spec == want.spec && same_meta(&cur.metadata, &want.metadata, stamped) {
                (Outcome::Unchanged, None)
            } else {
                cur.spec = want.spec.clone();
                cur.metadata.labels = want.metadata.labels.clone();
                cur.metadata.annotations = merged_annotations(
                    Some(&cur.metadata.annotations),
                    &want.metadata.annotations,
                    stamped,
                );
                (Outcome::Configured, Some(cur))
            }
        }
    })
}

/// Create or update an object with no special apply semantics (spec + labels + annotations).
pub async fn plan_simple<S, T>(
    r: &mut Reader<'_>,
    doc: &Document,
    kind: Kind,
    want: &Object<S, T>,
    stamped: bool,
    now: chrono::DateTime<chrono::Utc>,
    ops: &mut Vec<Op>,
) -> Result<ObjectResult, ApplyError>
where
    S: Serialize + serde::de::DeserializeOwned + Clone + PartialEq,
    T: Serialize + serde::de::DeserializeOwned + Clone + Default,
{
    let key = keys::key(kind, &want.metadata.name);
    let (outcome, write) = update(r, &key, want, stamped, now).await?;
    if let Some(mut o) = write {
        ops.push(Op::put(key, encode(&mut o)));
    }
    Ok(ObjectResult {
        kind,
        name: want.metadata.name.clone(),
        outcome,
        source: Some(doc.source.clone()),
    })
}
