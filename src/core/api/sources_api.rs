//! Sources over HTTP:
//!
//! - `GET /v1/sources`, `GET /v1/sources/{name}`: sync status records;
//! - `POST /v1/sources/{name}/apply` `{documents, dryRun, prune, path, commit, dirty}`: a
//!   client-side source apply (`takeOver` to take over objects other sources own) (`berth apply -f DIR --prune`): the documents (stamped by the
//!   client) applied as a whole, extraneous objects of the source pruned, in one transaction.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::apply::{self, SourceApplyOptions, SourceReport};
use crate::gitops::record::{self, SourceRecord, SourceSpec};
use crate::manifest::Document;

use super::error::ApiError;
use super::objects_api::to_json;
use super::state::ApiState;

pub async fn list(State(st): State<ApiState>) -> Result<Json<Vec<Value>>, ApiError> {
    let (kvs, _) = st.store.range(&record::sources_prefix()).await?;
    Ok(Json(kvs.iter().filter_map(to_json).collect()))
}

pub async fn get_one(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    apply::validate_source_name(&name).map_err(ApiError::bad_request)?;
    let kv = st
        .store
        .get(&record::source_key(&name))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("source {name:?} not found")))?;
    to_json(&kv)
        .map(Json)
        .ok_or_else(|| ApiError::internal(format!("stored source {name} is not valid JSON")))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceApplyRequest {
    pub documents: Vec<Document>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub prune: bool,
    /// Where the client read the manifests (informational).
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub dirty: bool,
    /// Take over objects another source owns.
    #[serde(default)]
    pub take_over: bool,
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad_request(format!("malformed JSON body at {path}: {}", e.into_inner()))
    })
}

pub async fn apply(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    apply::validate_source_name(&name).map_err(ApiError::bad_request)?;
    let req: SourceApplyRequest = decode(&body)?;
    let key = record::source_key(&name);
    let prev: Option<SourceRecord> = match st.store.get(&key).await? {
        Some(kv) => SourceRecord::from_kv(&kv).ok(),
        None => None,
    };
    if let Some(p) = &prev {
        if p.spec.kind != "apply" {
            return Err(ApiError::conflict(format!(
                "source {name:?} is the server's watched manifest folder ({}); apply with another --source name",
                p.spec.path
            )));
        }
    }
    let mut base = record::new_record(
        &name,
        SourceSpec {
            kind: "apply".into(),
            path: req.path.clone(),
            prune: req.prune,
            self_heal: false,
        },
    );
    base.metadata.created_at = prev
        .as_ref()
        .and_then(|p| p.metadata.created_at)
        .or_else(|| Some(crate::model::now()));
    let status = |report: &SourceReport| {
        let next = record::after_apply(
            prev.as_ref(),
            base.clone(),
            req.commit.clone(),
            req.dirty,
            report,
            true,
        );
        record::differs(prev.as_ref(), &next).then(|| (key.clone(), record::encode(&next)))
    };
    let opts = SourceApplyOptions {
        dry_run: req.dry_run,
        prune: req.prune,
        take_over: req.take_over,
        secrets: st.secrets.clone(),
    };
    let report = apply::apply_source(&*st.store, &name, &req.documents, &opts, &status).await?;
    Ok(Json(json!({
        "source": name,
        "dryRun": req.dry_run,
        "results": report.results,
        "extraneous": report.extraneous,
        "committed": report.committed,
    })))
}
