//! Secrets: the manifest's plaintext values are sealed with the control plane's data key
//! (`auth::secrets_key`) before anything is written; the store only ever holds ciphertext.
//! Unchanged when every stored value opens to the manifest's value (no new nonces, no write).

use crate::apply::codec::{decode, encode};
use crate::apply::error::ApplyError;
use crate::apply::meta::{merged_annotations, same_meta};
use crate::apply::reader::Reader;
use crate::apply::report::{ObjectResult, Outcome};
use crate::auth::secrets_key::SecretsKey;
use crate::manifest::{Document, ManifestError};
use crate::model::{self, keys, Kind, SealedSecret, SealedSecretSpec, Secret};
use crate::store::Op;

/// Whether the stored sealed spec holds exactly `want`'s values under `key`.
fn same_values(key: &SecretsKey, name: &str, cur: &SealedSecretSpec, want: &Secret) -> bool {
    cur.data.len() == want.spec.data.len()
        && want.spec.data.iter().all(|(k, v)| {
            cur.data
                .get(k)
                .and_then(|sv| key.open(&cur.key_id, name, k, sv).ok())
                .is_some_and(|open| open == *v)
        })
}

fn seal(key: &SecretsKey, want: &Secret) -> SealedSecretSpec {
    let name = &want.metadata.name;
    SealedSecretSpec {
        key_id: key.id().to_string(),
        data: want
            .spec
            .data
            .iter()
            .map(|(k, v)| (k.clone(), key.seal(name, k, v)))
            .collect(),
    }
}

pub async fn plan_secret(
    r: &mut Reader<'_>,
    doc: &Document,
    want: &Secret,
    key: Option<&SecretsKey>,
    stamped: bool,
    now: chrono::DateTime<chrono::Utc>,
    ops: &mut Vec<Op>,
) -> Result<ObjectResult, ApplyError> {
    let name = &want.metadata.name;
    let Some(key) = key else {
        return Err(ApplyError::Invalid(vec![ManifestError::at(
            &doc.source,
            Some("kind"),
            format!(
                "Secret {name} cannot be stored: this server holds no secrets key (values are \
                 only ever stored encrypted)"
            ),
        )]));
    };
    let k = keys::key(Kind::Secret, name);
    let (outcome, write) = match r.get(&k).await? {
        None => {
            let mut s = SealedSecret::new(Kind::Secret, name.clone(), seal(key, want));
            s.metadata.labels = want.metadata.labels.clone();
            s.metadata.annotations = merged_annotations(None, &want.metadata.annotations, stamped);
            s.metadata.uid = model::new_id();
            s.metadata.created_at = Some(now);
            (Outcome::Created, Some(s))
        }
        Some(kv) => {
            let mut cur: SealedSecret = decode(&kv)?;
            if same_values(key, name, &cur.spec, want)
                && same_meta(&cur.metadata, &want.metadata, stamped)
            {
                (Outcome::Unchanged, None)
            } else {
                if !same_values(key, name, &cur.spec, want) {
                    cur.spec = seal(key, want);
                }
                cur.metadata.labels = want.metadata.labels.clone();
                cur.metadata.annotations = merged_annotations(
                    Some(&cur.metadata.annotations),
                    &want.metadata.annotations,
                    stamped,
                );
                (Outcome::Configured, Some(cur))
            }
        }
    };
    if let Some(mut o) = write {
        ops.push(Op::put(k, encode(&mut o)));
    }
    Ok(ObjectResult {
        kind: Kind::Secret,
        name: name.clone(),
        outcome,
        source: Some(doc.source.clone()),
    })
}
