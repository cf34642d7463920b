//! Applying manifests to the store: all or nothing.
//!
//! [`apply`] validates the set, resolves references across the set and the store, and writes
//! everything in ONE store transaction that compares the mod revision of every key it read
//! (absent for the keys it creates). When another writer got in between, it re-plans and tries
//! again; it never leaves half an apply behind.

pub mod safety;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::manifest::{validate, Document, ManifestError, Resource};
use crate::model::{
    self, keys, Cluster, Kind, Object, Service, TaskDefinition, TaskDefinitionSpec,
    TaskDefinitionStatus,
};
use crate::store::{KeyValue, Op, Store, StoreError, Txn};

/// The cluster a service runs in when it names none; created on first use, as in ECS.
pub const DEFAULT_CLUSTER: &str = "default";

/// Attempts (plan + transaction) before an apply gives up with [`ApplyError::Conflict`].
pub const MAX_ATTEMPTS: usize = 8;

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
    Pruned,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
            Outcome::Pruned => "pruned",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of an apply's report. `name` is `family:N` for task definitions (the revision
/// registered, or the latest one when unchanged) and the plain family for a delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectResult {
    #[serde(with = "kind_serde")]
    pub kind: Kind,
    pub name: String,
    pub outcome: Outcome,
    /// The manifest document the object came from (absent for implicit objects and prunes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::manifest::Source>,
}

impl std::fmt::Display for ObjectResult {
    /// `service/web configured`, `taskdefinition/web:2 created`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} {}",
            self.kind.as_str().to_ascii_lowercase(),
            self.name,
            self.outcome
        )
    }
}

mod kind_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::model::Kind;

    pub fn serialize<S: Serializer>(k: &Kind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(k.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        let s = String::deserialize(d)?;
        Kind::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown kind `{s}`")))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOptions {
    /// Compute the results but write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The manifests are wrong (a bad field, a reference to something that does not exist, a
    /// service being deleted, a cluster still in use): the caller must change its input.
    #[error("{}", render(.0))]
    Invalid(Vec<ManifestError>),
    /// Other writers kept changing the keys this apply read; nothing was applied.
    #[error("conflict: the store kept changing underneath this request; gave up after {MAX_ATTEMPTS} attempts and wrote nothing")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApplyError {
    /// The HTTP status an API answers with: 422 invalid input, 409 conflict, 503 store
    /// unavailable, 500 otherwise.
    pub fn http_status(&self) -> u16 {
        match self {
            ApplyError::Invalid(_) => 422,
            ApplyError::Conflict => 409,
            ApplyError::Store(StoreError::Unavailable(_)) => 503,
            ApplyError::Store(_) => 500,
        }
    }

    pub fn is_invalid(&self) -> bool {
        matches!(self, ApplyError::Invalid(_))
    }

    /// The manifest errors of an `Invalid` error (empty otherwise).
    pub fn manifest_errors(&self) -> &[ManifestError] {
        match self {
            ApplyError::Invalid(e) => e,
            _ => &[],
        }
    }
}

fn render(errors: &[ManifestError]) -> String {
    match errors {
        [] => "invalid manifests".to_string(),
        [one] => one.to_string(),
        many => {
            let mut s = format!("{} problems in the manifests:", many.len());
            for e in many {
                s.push_str("\n  ");
                s.push_str(&e.to_string());
            }
            s
        }
    }
}

/// Apply documents: create what is missing, update what differs, register a new task
/// definition revision when a family's spec changed. All or nothing.
pub async fn apply(
    store: &dyn Store,
    docs: &[Document],
    opts: &ApplyOptions,
) -> Result<Vec<ObjectResult>, ApplyError> {
    let errors = validate(docs);
    if !errors.is_empty() {
        return Err(ApplyError::Invalid(errors));
    }
    safety::check_apply(store, docs).await?;
    for attempt in 0..MAX_ATTEMPTS {
        let mut r = Reader::new(store);
        let plan = plan_apply(&mut r, docs, false).await?;
        if opts.dry_run || plan.ops.is_empty() {
            return Ok(plan.results);
        }
        if commit(store, r.compares, plan.ops).await? {
            return Ok(plan.results);
        }
        backoff(attempt).await;
    }
    Err(ApplyError::Conflict)
}

/// `berth delete -f`: services are marked for deletion (the service controller stops their
/// tasks and removes the key), clusters are removed when nothing uses them, task definition
/// families become INACTIVE (every revision stays readable). All or nothing.
pub async fn delete_documents(
    store: &dyn Store,
    docs: &[Document],
) -> Result<Vec<ObjectResult>, ApplyError> {
    for attempt in 0..MAX_ATTEMPTS {
        let plan = plan_delete(store, docs).await?;
        if plan.ops.is_empty() {
            return Ok(plan.results);
        }
        if commit(store, plan.compares, plan.ops).await? {
            return Ok(plan.results);
        }
        backoff(attempt).await;
    }
    Err(ApplyError::Conflict)
}

/// The latest stored revision of a task definition family (whatever its status).
pub async fn latest_taskdef(
    store: &dyn Store,
    family: &str,
) -> Result<Option<TaskDefinition>, StoreError> {
    if crate::manifest::validate_name(family).is_err() {
        return Ok(None);
    }
    let (kvs, _) = store.range(&keys::taskdef_family_prefix(family)).await?;
    kvs.last().map(decode).transpose()
}

/// Resolve `family` (its latest revision) or `family:N` (exactly that revision).
pub async fn resolve_taskdef(
    store: &dyn Store,
    reference: &str,
) -> Result<Option<TaskDefinition>, StoreError> {
    match model::parse_taskdef_ref(reference) {
        None => Ok(None),
        Some((family, None)) => latest_taskdef(store, family).await,
        Some((family, Some(rev))) => {
            if crate::manifest::validate_name(family).is_err() {
                return Ok(None);
            }
            match store.get(&keys::taskdef_key(family, rev)).await? {
                None => Ok(None),
                Some(kv) => decode(&kv).map(Some),
            }
        }
    }
}

// ----- machinery -----------------------------------------------------------------------------

fn decode<S, T>(kv: &KeyValue) -> Result<Object<S, T>, StoreError>
where
    S: serde::de::DeserializeOwned,
    T: serde::de::DeserializeOwned + Default,
{
    Object::from_kv(kv).map_err(|e| StoreError::Corrupt(format!("{}: {e}", kv.key)))
}

/// Serialize for the store: `metadata.revision` is the kv's mod revision, never stored.
fn encode<S: Serialize, T: Serialize>(o: &mut Object<S, T>) -> Vec<u8> {
    o.metadata.revision = 0;
    o.to_bytes()
}

async fn commit(
    store: &dyn Store,
    compares: BTreeMap<String, i64>,
    ops: Vec<Op>,
) -> Result<bool, StoreError> {
    let mut txn = Txn::new();
    for (key, rev) in compares {
        txn = txn.when(crate::store::Compare::mod_revision(key, rev));
    }
    for op in ops {
        txn = txn.and_then(op);
    }
    Ok(store.txn(txn).await?.succeeded)
}

async fn backoff(attempt: usize) {
    let base = 5u64 << attempt.min(6);
    let jitter = rand::random::<u64>() % (base + 1);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

/// Reads through one plan, remembering every key's mod revision for the transaction.
struct Reader<'a> {
    store: &'a dyn Store,
    gets: HashMap<String, Option<KeyValue>>,
    families: HashMap<String, Vec<KeyValue>>,
    compares: BTreeMap<String, i64>,
    /// The key compared for each family read (its latest revision, or revision 1 absent).
    family_keys: HashMap<String, String>,
    /// Keys read (not written) whose values the writes depend on: a written service's cluster
    /// and task definition family. A source apply compares only these and the written keys.
    deps: HashSet<String>,
}

impl<'a> Reader<'a> {
    fn new(store: &'a dyn Store) -> Self {
        Reader {
            store,
            gets: HashMap::new(),
            families: HashMap::new(),
            compares: BTreeMap::new(),
            family_keys: HashMap::new(),
            deps: HashSet::new(),
        }
    }

    async fn get(&mut self, key: &str) -> Result<Option<KeyValue>, StoreError> {
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
    async fn family(&mut self, family: &str) -> Result<Vec<KeyValue>, StoreError> {
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

    async fn list(&self, kind: Kind) -> Result<Vec<KeyValue>, StoreError> {
        Ok(self.store.range(&keys::prefix(kind)).await?.0)
    }
}

/// The revision number of a task definition key (`…/web/00000004` → 4).
fn revision_of(kv: &KeyValue) -> Option<u32> {
    kv.key.rsplit('/').next()?.parse().ok()
}

struct Plan {
    results: Vec<ObjectResult>,
    ops: Vec<Op>,
    compares: BTreeMap<String, i64>,
}

/// A family as it will be after this apply.
struct FamilyAfter {
    latest: u32,
    spec: TaskDefinitionSpec,
    stored: Vec<KeyValue>,
}

fn err(doc: &Document, field: &str, msg: impl Into<String>) -> ManifestError {
    ManifestError::at(&doc.source, Some(field), msg)
}

/// How a stored object's metadata differs from a manifest's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetaDiff {
    Same,
    /// Only the ownership annotations (source, file, document) differ.
    Ownership,
    /// Labels or the user's own annotations differ.
    User,
}

/// `stamped`: the manifest carries its source's ownership annotations (a source apply), so a
/// different owner is a difference. The commit and dirty annotations never are.
fn meta_diff(cur: &model::Metadata, want: &model::Metadata, stamped: bool) -> MetaDiff {
    if cur.labels != want.labels
        || ownership::user(&cur.annotations) != ownership::user(&want.annotations)
    {
        MetaDiff::User
    } else if stamped
        && ownership::durable(&cur.annotations) != ownership::durable(&want.annotations)
    {
        MetaDiff::Ownership
    } else {
        MetaDiff::Same
    }
}

fn same_meta(cur: &model::Metadata, want: &model::Metadata, stamped: bool) -> bool {
    meta_diff(cur, want, stamped) == MetaDiff::Same
}

/// The annotations to store: the manifest's own, plus the ownership ones — the manifest's stamp
/// for a source apply, the stored object's otherwise (a plain apply never changes who owns an
/// object).
fn merged_annotations(
    stored: Option<&BTreeMap<String, String>>,
    want: &BTreeMap<String, String>,
    stamped: bool,
) -> BTreeMap<String, String> {
    let mut out = ownership::user(want);
    let owner = if stamped { Some(want) } else { stored };
    if let Some(owner) = owner {
        for k in ownership::KEYS {
            if let Some(v) = owner.get(k) {
                out.insert(k.to_string(), v.clone());
            }
        }
    }
    out
}

/// Create or update an object with no special apply semantics (spec + labels + annotations).
async fn plan_simple<S, T>(
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
    let outcome = match r.get(&key).await? {
        None => {
            let mut p = want.clone();
            p.metadata.annotations = merged_annotations(None, &want.metadata.annotations, stamped);
            p.metadata.uid = model::new_id();
            p.metadata.created_at = Some(now);
            ops.push(Op::put(key, encode(&mut p)));
            Outcome::Created
        }
        Some(kv) => {
            let mut cur: Object<S, T> = decode(&kv)?;
            if cur.spec == want.spec && same_meta(&cur.metadata, &want.metadata, stamped) {
                Outcome::Unchanged
            } else {
                cur.spec = want.spec.clone();
                cur.metadata.labels = want.metadata.labels.clone();
                cur.metadata.annotations = merged_annotations(
                    Some(&cur.metadata.annotations),
                    &want.metadata.annotations,
                    stamped,
                );
                ops.push(Op::put(key, encode(&mut cur)));
                Outcome::Configured
            }
        }
    };
    Ok(ObjectResult {
        kind,
        name: want.metadata.name.clone(),
        outcome,
        source: Some(doc.source.clone()),
    })
}

async fn plan_apply(
    r: &mut Reader<'_>,
    docs: &[Document],
    stamped: bool,
) -> Result<Plan, ApplyError> {
    let now = model::now();
    let mut results: Vec<Option<ObjectResult>> = vec![None; docs.len()];
    let mut ops = Vec::new();
    let mut errors = Vec::new();
    let mut families: HashMap<String, FamilyAfter> = HashMap::new();
    let set_clusters: HashSet<&str> = docs
        .iter()
        .filter(|d| d.kind() == Kind::Cluster)
        .map(|d| d.name())
        .collect();

    // Clusters and task definitions first: services refer to them.
    for (i, doc) in docs.iter().enumerate() {
        match &doc.resource {
            Resource::Cluster(want) => {
                let key = keys::key(Kind::Cluster, &want.metadata.name);
                let outcome = match r.get(&key).await? {
                    None => {
                        let mut c: Cluster = want.clone();
                        c.metadata.annotations =
                            merged_annotations(None, &want.metadata.annotations, stamped);
                        c.metadata.uid = model::new_id();
                        c.metadata.created_at = Some(now);
                        c.status.status = "ACTIVE".into();
                        ops.push(Op::put(key, encode(&mut c)));
                        Outcome::Created
                    }
                    Some(kv) => {
                        let mut cur: Cluster = decode(&kv)?;
                        if cur.spec == want.spec
                            && same_meta(&cur.metadata, &want.metadata, stamped)
                        {
                            Outcome::Unchanged
                        } else {
                            cur.spec = want.spec.clone();
                            cur.metadata.labels = want.metadata.labels.clone();
                            cur.metadata.annotations = merged_annotations(
                                Some(&cur.metadata.annotations),
                                &want.metadata.annotations,
                                stamped,
                            );
                            if cur.status.status.is_empty() {
                                cur.status.status = "ACTIVE".into();
                            }
                            ops.push(Op::put(key, encode(&mut cur)));
                            Outcome::Configured
                        }
                    }
                };
                results[i] = Some(ObjectResult {
                    kind: Kind::Cluster,
                    name: want.metadata.name.clone(),
                    outcome,
                    source: Some(doc.source.clone()),
                });
            }
            Resource::TaskDefinition(want) => {
                let family = want.metadata.name.as_str();
                let stored = r.family(family).await?;
                let latest = match stored.last() {
                    Some(kv) => {
                        let td: TaskDefinition = decode(kv)?;
                        let rev = revision_of(kv).unwrap_or(td.status.revision);
                        Some((rev, td, kv.key.clone()))
                    }
                    None => None,
                };
                // A new revision when the spec, labels or the user's annotations changed (or the
                // family was deleted); a change of owner alone relabels the latest revision.
                let diff = latest.as_ref().map(|(_, td, _)| {
                    if td.spec != want.spec || td.status.status == "INACTIVE" {
                        MetaDiff::User
                    } else {
                        meta_diff(&td.metadata, &want.metadata, stamped)
                    }
                });
                let (rev, outcome) = match latest {
                    Some((rev, _, _)) if diff == Some(MetaDiff::Same) => (rev, Outcome::Unchanged),
                    Some((rev, mut td, key)) if diff == Some(MetaDiff::Ownership) => {
                        td.metadata.annotations = merged_annotations(
                            Some(&td.metadata.annotations),
                            &want.metadata.annotations,
                            stamped,
                        );
                        ops.push(Op::put(key, encode(&mut td)));
                        (rev, Outcome::Configured)
                    }
                    _ => {
                        let rev = latest.as_ref().map_or(0, |(rev, _, _)| *rev) + 1;
                        let key = keys::taskdef_key(family, rev);
                        r.compares.insert(key.clone(), 0);
                        let mut td: TaskDefinition = want.clone();
                        td.metadata.annotations = merged_annotations(
                            latest.as_ref().map(|(_, td, _)| &td.metadata.annotations),
                            &want.metadata.annotations,
                            stamped,
                        );
                        td.metadata.name = format!("{family}:{rev}");
                        td.metadata.uid = model::new_id();
                        td.metadata.created_at = Some(now);
                        td.status = TaskDefinitionStatus {
                            family: family.to_string(),
                            revision: rev,
                            status: "ACTIVE".into(),
                            registered_at: Some(now),
                        };
                        ops.push(Op::put(key, encode(&mut td)));
                        (rev, Outcome::Created)
                    }
                };
                families.insert(
                    family.to_string(),
                    FamilyAfter {
                        latest: rev,
                        spec: want.spec.clone(),
                        stored,
                    },
                );
                results[i] = Some(ObjectResult {
                    kind: Kind::TaskDefinition,
                    name: format!("{family}:{rev}"),
                    outcome,
                    source: Some(doc.source.clone()),
                });
            }
            Resource::Service(_) => {}
            Resource::ScalingPolicy(want) => {
                results[i] = Some(
                    plan_simple(r, doc, Kind::ScalingPolicy, want, stamped, now, &mut ops).await?,
                );
            }
            Resource::Role(want) => {
                results[i] =
                    Some(plan_simple(r, doc, Kind::Role, want, stamped, now, &mut ops).await?);
            }
            Resource::LoadBalancer(want) => {
                results[i] = Some(
                    plan_simple(r, doc, Kind::LoadBalancer, want, stamped, now, &mut ops).await?,
                );
            }
            Resource::TargetGroup(want) => {
                results[i] = Some(
                    plan_simple(r, doc, Kind::TargetGroup, want, stamped, now, &mut ops).await?,
                );
            }
        }
    }

    // Load balancers: their target groups exist, and no two load balancers share a port.
    let stored_lbs: Vec<model::LoadBalancer> = {
        let (kvs, _) = r.store.range(&keys::prefix(Kind::LoadBalancer)).await?;
        kvs.iter().filter_map(|kv| decode(kv).ok()).collect()
    };
    for doc in docs {
        let Resource::LoadBalancer(want) = &doc.resource else {
            continue;
        };
        for tg in model::lb::target_groups_of(&want.spec) {
            let in_set = docs
                .iter()
                .any(|d| d.kind() == Kind::TargetGroup && d.name() == tg);
            if !in_set && r.get(&keys::key(Kind::TargetGroup, &tg)).await?.is_none() {
                errors.push(err(
                    doc,
                    "spec.listeners",
                    format!("target group `{tg}` does not exist: define it in the manifests (kind: TargetGroup) or create it first"),
                ));
            }
        }
        for (i, l) in want.spec.listeners.iter().enumerate() {
            let in_set = docs
                .iter()
                .filter(|d| d.name() != want.metadata.name)
                .any(|d| match &d.resource {
                    Resource::LoadBalancer(o) => o.spec.listeners.iter().any(|x| x.port == l.port),
                    _ => false,
                });
            let in_store = stored_lbs.iter().any(|o| {
                o.metadata.name != want.metadata.name
                    && o.spec.listeners.iter().any(|x| x.port == l.port)
            });
            let ours = stored_lbs.iter().any(|o| {
                o.metadata.name == want.metadata.name
                    && o.spec.listeners.iter().any(|x| x.port == l.port)
            });
            if in_set || in_store {
                errors.push(err(
                    doc,
                    &format!("spec.listeners[{i}].port"),
                    format!(
                        "port {} is already used by another load balancer's listener",
                        l.port
                    ),
                ));
            } else if !ours && std::net::TcpListener::bind(("0.0.0.0", l.port)).is_err() {
                // The control plane runs a load balancer: a port something else on this host
                // holds could never be served.
                errors.push(err(
                    doc,
                    &format!("spec.listeners[{i}].port"),
                    format!("port {} is already in use on this host", l.port),
                ));
            }
        }
    }

    // Services a ScalingPolicy drives (in the set or the store): the policy owns their
    // desiredCount, so an apply keeps the current one instead of fighting the scaler (and a
    // source does not take the scaler's changes for drift). A new service starts at the
    // manifest's count.
    let mut scaled: HashSet<String> = docs
        .iter()
        .filter_map(|d| match &d.resource {
            Resource::ScalingPolicy(p) => Some(p.spec.service.clone()),
            _ => None,
        })
        .collect();
    if docs.iter().any(|d| d.kind() == Kind::Service) {
        for kv in r.list(Kind::ScalingPolicy).await? {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&kv.value) {
                if let Some(s) = v["spec"]["service"].as_str() {
                    scaled.insert(s.to_string());
                }
            }
        }
    }
    let mut implicit_default: HashSet<&str> = HashSet::new();
    let mut created_default = false;
    for (i, doc) in docs.iter().enumerate() {
        let Resource::Service(want) = &doc.resource else {
            continue;
        };
        let name = want.metadata.name.as_str();
        let key = keys::key(Kind::Service, name);
        let current: Option<Service> = match r.get(&key).await? {
            Some(kv) => Some(decode(&kv)?),
            None => None,
        };
        if let Some(cur) = &current {
            if cur.metadata.deletion_timestamp.is_some() {
                errors.push(err(
                    doc,
                    "metadata.name",
                    format!(
                        "service `{name}` is being deleted; apply it again once its tasks have stopped and it is gone"
                    ),
                ));
                continue;
            }
        }
        let mut want_spec = want.spec.clone();
        if let Some(cur) = current.as_ref().filter(|_| scaled.contains(name)) {
            want_spec.desired_count = cur.spec.desired_count;
        }
        let changed = current.as_ref().is_none_or(|cur| {
            cur.spec != want_spec || !same_meta(&cur.metadata, &want.metadata, stamped)
        });
        let before = errors.len();

        // The cluster: in the set or in the store. Like ECS, the `default` cluster comes into
        // being the first time something uses it.
        let cluster = want.spec.cluster.as_str();
        let cluster_key = keys::key(Kind::Cluster, cluster);
        let exists = set_clusters.contains(cluster)
            || implicit_default.contains(cluster)
            || r.get(&cluster_key).await?.is_some();
        if exists {
            // fine
        } else if cluster == DEFAULT_CLUSTER {
            let mut c: Cluster = Object::new(Kind::Cluster, cluster, Default::default());
            c.metadata.uid = model::new_id();
            c.metadata.created_at = Some(now);
            c.status.status = "ACTIVE".into();
            ops.push(Op::put(cluster_key.clone(), encode(&mut c)));
            implicit_default.insert(cluster);
            created_default = true;
        } else {
            errors.push(err(
                doc,
                "spec.cluster",
                format!(
                    "cluster `{cluster}` does not exist: define it in the manifests (kind: Cluster) or create it first"
                ),
            ));
        }

        // The task definition: in the set or in the store.
        let reference = want.spec.task_definition.as_str();
        let Some((family, pinned)) = model::parse_taskdef_ref(reference) else {
            errors.push(err(
                doc,
                "spec.taskDefinition",
                "must be `family` or `family:REVISION`",
            ));
            continue;
        };
        let resolved: Option<(String, TaskDefinitionSpec, bool)> = match families.get(family) {
            Some(fam) => match pinned {
                None => Some((format!("{family}:{}", fam.latest), fam.spec.clone(), true)),
                Some(n) if n == fam.latest => Some((reference.to_string(), fam.spec.clone(), true)),
                Some(n) => match fam.stored.iter().find(|kv| revision_of(kv) == Some(n)) {
                    Some(kv) => {
                        let td: TaskDefinition = decode(kv)?;
                        let active = td.status.status != "INACTIVE";
                        Some((reference.to_string(), td.spec, active))
                    }
                    None => {
                        errors.push(err(
                            doc,
                            "spec.taskDefinition",
                            format!(
                                "task definition `{reference}` does not exist (the latest revision of `{family}` is {})",
                                fam.latest
                            ),
                        ));
                        None
                    }
                },
            },
            None => {
                let stored = r.family(family).await?;
                let found = match pinned {
                    None => stored.last(),
                    Some(n) => stored.iter().find(|kv| revision_of(kv) == Some(n)),
                };
                match found {
                    Some(kv) => {
                        let td: TaskDefinition = decode(kv)?;
                        let active = td.status.status != "INACTIVE";
                        let rev = revision_of(kv).unwrap_or(td.status.revision);
                        Some((format!("{family}:{rev}"), td.spec, active))
                    }
                    None => {
                        let msg = match stored.last().and_then(revision_of) {
                            None => format!(
                                "task definition family `{family}` does not exist: define it in the manifests (kind: TaskDefinition) or register it first"
                            ),
                            Some(latest) => format!(
                                "task definition `{reference}` does not exist (the latest revision of `{family}` is {latest})"
                            ),
                        };
                        errors.push(err(doc, "spec.taskDefinition", msg));
                        None
                    }
                }
            }
        };
        if changed {
            if let Some((resolved_name, spec, active)) = &resolved {
                if !active {
                    errors.push(err(
                        doc,
                        "spec.taskDefinition",
                        format!(
                            "task definition `{resolved_name}` is INACTIVE (deleted); apply its manifest again to register a new revision"
                        ),
                    ));
                }
                for (field, msg) in
                    crate::manifest::check_service_against_taskdef(&want.spec, spec, resolved_name)
                {
                    errors.push(err(doc, &field, msg));
                }
            }
        }
        // Target groups: in the set or in the store.
        for (k, lb) in want.spec.load_balancers.iter().enumerate() {
            let in_set = docs
                .iter()
                .any(|d| d.kind() == Kind::TargetGroup && d.name() == lb.target_group);
            if !in_set
                && r.get(&keys::key(Kind::TargetGroup, &lb.target_group))
                    .await?
                    .is_none()
            {
                errors.push(err(
                    doc,
                    &format!("spec.loadBalancers[{k}].targetGroup"),
                    format!(
                        "target group `{}` does not exist: define it in the manifests (kind: TargetGroup) or create it first",
                        lb.target_group
                    ),
                ));
            }
        }
        if errors.len() > before {
            continue;
        }

        let outcome = match current {
            None => {
                let mut s: Service = want.clone();
                s.metadata.annotations =
                    merged_annotations(None, &want.metadata.annotations, stamped);
                s.metadata.uid = model::new_id();
                s.metadata.created_at = Some(now);
                s.status = model::ServiceStatus {
                    status: "ACTIVE".into(),
                    desired_count: want.spec.desired_count,
                    ..Default::default()
                };
                ops.push(Op::put(key, encode(&mut s)));
                Outcome::Created
            }
            Some(mut cur) if changed => {
                cur.spec = want_spec.clone();
                cur.metadata.labels = want.metadata.labels.clone();
                cur.metadata.annotations = merged_annotations(
                    Some(&cur.metadata.annotations),
                    &want.metadata.annotations,
                    stamped,
                );
                cur.status.desired_count = want_spec.desired_count;
                if cur.status.status.is_empty() {
                    cur.status.status = "ACTIVE".into();
                }
                ops.push(Op::put(key, encode(&mut cur)));
                Outcome::Configured
            }
            Some(_) => Outcome::Unchanged,
        };
        if outcome != Outcome::Unchanged {
            // What this write relies on: its cluster and task definition stay as read.
            r.deps.insert(cluster_key);
            if let Some(k) = r.family_keys.get(family) {
                r.deps.insert(k.clone());
            }
        }
        results[i] = Some(ObjectResult {
            kind: Kind::Service,
            name: name.to_string(),
            outcome,
            source: Some(doc.source.clone()),
        });
    }

    if !errors.is_empty() {
        return Err(ApplyError::Invalid(errors));
    }
    let mut results: Vec<ObjectResult> = results.into_iter().flatten().collect();
    if created_default {
        results.insert(
            0,
            ObjectResult {
                kind: Kind::Cluster,
                name: DEFAULT_CLUSTER.to_string(),
                outcome: Outcome::Created,
                source: None,
            },
        );
    }
    // The compares stay in the reader: the caller decides which of them the transaction needs.
    Ok(Plan {
        results,
        ops,
        compares: BTreeMap::new(),
    })
}

/// `spec.cluster` of a stored object, read loosely (a half-written object still counts).
fn cluster_of(kv: &KeyValue) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&kv.value).ok()?;
    v.pointer("/spec/cluster")?.as_str().map(str::to_string)
}

fn task_is_stopped(kv: &KeyValue) -> bool {
    serde_json::from_slice::<serde_json::Value>(&kv.value)
        .ok()
        .and_then(|v| {
            v.pointer("/status/lastStatus")
                .and_then(|s| s.as_str())
                .map(|s| s == "STOPPED")
        })
        .unwrap_or(false)
}

type ClusterUsers = (Vec<KeyValue>, Vec<KeyValue>, Vec<KeyValue>);

/// What still uses a cluster ("services a, b", "2 container instance(s)", …); empty when
/// nothing does. `users` caches the listings across calls of one plan.
async fn cluster_users(
    r: &Reader<'_>,
    name: &str,
    users: &mut Option<ClusterUsers>,
) -> Result<Vec<String>, StoreError> {
    if users.is_none() {
        *users = Some((
            r.list(Kind::Service).await?,
            r.list(Kind::ContainerInstance).await?,
            r.list(Kind::Task).await?,
        ));
    }
    let (services, instances, tasks) = users.as_ref().expect("loaded above");
    let in_cluster = |kv: &&KeyValue| cluster_of(kv).as_deref() == Some(name);
    let svc: Vec<&str> = services
        .iter()
        .filter(in_cluster)
        .filter_map(|kv| keys::name_of(&kv.key, Kind::Service))
        .collect();
    let inst = instances.iter().filter(in_cluster).count();
    let running = tasks
        .iter()
        .filter(in_cluster)
        .filter(|kv| !task_is_stopped(kv))
        .count();
    let mut parts = Vec::new();
    if !svc.is_empty() {
        parts.push(format!("services {}", svc.join(", ")));
    }
    if inst > 0 {
        parts.push(format!("{inst} container instance(s)"));
    }
    if running > 0 {
        parts.push(format!("{running} task(s) not yet stopped"));
    }
    Ok(parts)
}

async fn plan_delete(store: &dyn Store, docs: &[Document]) -> Result<Plan, ApplyError> {
    let mut r = Reader::new(store);
    let now = model::now();
    let mut results = Vec::new();
    let mut ops = Vec::new();
    let mut errors = Vec::new();
    let mut done: HashSet<(Kind, &str)> = HashSet::new();
    let mut users: Option<ClusterUsers> = None;

    for doc in docs {
        let name = doc.name();
        if !done.insert((doc.kind(), name)) {
            continue;
        }
        let outcome = match &doc.resource {
            Resource::Service(_) => {
                let key = keys::key(Kind::Service, name);
                match r.get(&key).await? {
                    None => Outcome::Unchanged,
                    Some(kv) => {
                        let mut s: Service = decode(&kv)?;
                        if s.metadata.deletion_timestamp.is_some() {
                            Outcome::Unchanged
                        } else {
                            s.metadata.deletion_timestamp = Some(now);
                            s.status.status = "DRAINING".into();
                            ops.push(Op::put(key, encode(&mut s)));
                            Outcome::Pruned
                        }
                    }
                }
            }
            Resource::Cluster(_) => {
                let key = keys::key(Kind::Cluster, name);
                match r.get(&key).await? {
                    None => Outcome::Unchanged,
                    Some(_) => {
                        let parts = cluster_users(&r, name, &mut users).await?;
                        if parts.is_empty() {
                            ops.push(Op::delete(key));
                            Outcome::Pruned
                        } else {
                            errors.push(err(
                                doc,
                                "metadata.name",
                                format!(
                                    "cluster `{name}` is still in use by {}; delete those first",
                                    parts.join(" and ")
                                ),
                            ));
                            continue;
                        }
                    }
                }
            }
            Resource::ScalingPolicy(_)
            | Resource::Role(_)
            | Resource::LoadBalancer(_)
            | Resource::TargetGroup(_) => {
                let key = keys::key(doc.kind(), name);
                match r.get(&key).await? {
                    None => Outcome::Unchanged,
                    Some(_) => {
                        ops.push(Op::delete(key));
                        Outcome::Pruned
                    }
                }
            }
            Resource::TaskDefinition(_) => {
                let stored = r.family(name).await?;
                let mut changed = false;
                for kv in &stored {
                    let mut td: TaskDefinition = decode(kv)?;
                    if td.status.status != "INACTIVE" {
                        td.status.status = "INACTIVE".into();
                        r.compares.insert(kv.key.clone(), kv.mod_revision);
                        ops.push(Op::put(kv.key.clone(), encode(&mut td)));
                        changed = true;
                    }
                }
                if changed {
                    Outcome::Pruned
                } else {
                    Outcome::Unchanged
                }
            }
        };
        results.push(ObjectResult {
            kind: doc.kind(),
            name: name.to_string(),
            outcome,
            source: Some(doc.source.clone()),
        });
    }
    if !errors.is_empty() {
        return Err(ApplyError::Invalid(errors));
    }
    Ok(Plan {
        results,
        ops,
        compares: r.compares,
    })
}

// ----- sources: ownership, inventory, prune ---------------------------------------------------
//
// A *source* is a named set of manifests applied as a whole: the folder `berth up --manifests`
// watches, or a folder applied with `berth apply --prune`. Every object it applies carries
// ownership annotations ([`ownership`]); its *inventory* (`/berth/inventories/NAME`) lists what
// it owns. An object the source owns that is no longer in its manifests is *extraneous*: pruned
// with `prune`, otherwise reported. The objects, the prunes, the inventory and the source's
// status record are written in ONE transaction.

/// The annotations berth writes on every object applied from a source. Only a source writes
/// them; a plain `berth apply` keeps whatever the stored object had.
pub mod ownership {
    use std::collections::BTreeMap;

    /// The source's name.
    pub const SOURCE: &str = "berth.dev/source";
    /// The manifest file, relative to the source's folder.
    pub const FILE: &str = "berth.dev/source-file";
    /// The 1-based index of the document in that file.
    pub const DOCUMENT: &str = "berth.dev/source-document";
    /// The HEAD commit of the git work tree when the object was last written (git only).
    pub const COMMIT: &str = "berth.dev/commit";
    /// `"true"` when the folder had uncommitted changes at that write (git only).
    pub const DIRTY: &str = "berth.dev/dirty";

    pub const KEYS: [&str; 5] = [SOURCE, FILE, DOCUMENT, COMMIT, DIRTY];
    /// Never a reason to write by themselves: a commit that leaves an object as it was does not
    /// rewrite it (nor register a task definition revision). They record the commit of the
    /// object's last change.
    pub const TRANSIENT: [&str; 2] = [COMMIT, DIRTY];

    pub fn is_ownership_key(k: &str) -> bool {
        KEYS.contains(&k)
    }

    /// The user's own annotations: everything but the ownership ones.
    pub fn user(a: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        a.iter()
            .filter(|(k, _)| !is_ownership_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The ownership annotations that make an object different: source, file, document.
    pub fn durable(a: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
        a.iter()
            .filter(|(k, _)| is_ownership_key(k) && !TRANSIENT.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// The source an object belongs to, if any.
    pub fn owner(a: &BTreeMap<String, String>) -> Option<&str> {
        a.get(SOURCE).map(String::as_str)
    }
}

/// What a source stamps on its objects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stamp {
    pub source: String,
    /// HEAD of the git work tree the folder is in (None: not a git work tree, or no commit yet).
    pub commit: Option<String>,
    /// The folder has uncommitted changes (tracked or untracked).
    pub dirty: bool,
}

/// `file` (as the loader named it) relative to `root` (the path given to the loader). A file
/// loaded on its own is named by its file name.
pub fn relative_file(file: &str, root: &str) -> String {
    let root = root.trim_end_matches('/');
    if file == root {
        return std::path::Path::new(file)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.to_string());
    }
    match file.strip_prefix(root).and_then(|r| r.strip_prefix('/')) {
        Some(rel) if !rel.is_empty() => rel.to_string(),
        _ => file.to_string(),
    }
}

/// Stamp the ownership annotations on documents loaded from `root` (replacing any the
/// manifests carried themselves).
pub fn stamp(docs: &mut [Document], root: &str, s: &Stamp) {
    for d in docs {
        let file = relative_file(&d.source.file, root);
        let index = d.source.document;
        let a = &mut d.resource.metadata_mut().annotations;
        for k in ownership::KEYS {
            a.remove(k);
        }
        a.insert(ownership::SOURCE.into(), s.source.clone());
        a.insert(ownership::FILE.into(), file);
        a.insert(ownership::DOCUMENT.into(), index.to_string());
        if let Some(c) = &s.commit {
            a.insert(ownership::COMMIT.into(), c.clone());
            a.insert(ownership::DIRTY.into(), s.dirty.to_string());
        }
    }
}

/// Source names are store-key and URL safe: 1–128 of `A-Z a-z 0-9 . _ -`, not starting with
/// a dot.
pub fn validate_source_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 128 || !ok_chars || name.starts_with('.') {
        return Err(format!(
            "invalid source name {name:?}: use 1-128 letters, digits, '.', '_' or '-', not starting with '.'"
        ));
    }
    Ok(())
}

/// The default source name of a folder or file: its base name, with anything outside
/// `A-Z a-z 0-9 . _ -` replaced by `-` (`manifests/` → `manifests`).
pub fn default_source_name(path: &std::path::Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name.trim_start_matches('.').to_string();
    name.truncate(128);
    if name.is_empty() {
        "root".to_string()
    } else {
        name
    }
}

/// Where a source's inventory lives.
pub fn inventory_key(source: &str) -> String {
    format!("{}inventories/{source}", keys::ROOT)
}

/// An object by kind and name (a task definition by its family).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    #[serde(with = "kind_serde")]
    pub kind: Kind,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        ObjectRef {
            kind,
            name: name.into(),
        }
    }

    pub fn of(doc: &Document) -> Self {
        ObjectRef::new(doc.kind(), doc.name())
    }
}

/// Prune order: what uses things goes before what it uses (services before their task
/// definitions, everything before clusters).
fn prune_rank(k: Kind) -> u8 {
    match k {
        Kind::Service => 1,
        Kind::TaskDefinition => 2,
        Kind::Cluster => 3,
        _ => 0,
    }
}

impl Ord for ObjectRef {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (prune_rank(self.kind), self.kind.as_str(), &self.name).cmp(&(
            prune_rank(other.kind),
            other.kind.as_str(),
            &other.name,
        ))
    }
}

impl PartialOrd for ObjectRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            self.kind.as_str().to_ascii_lowercase(),
            self.name
        )
    }
}

/// What a source owns in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    pub source: String,
    pub objects: Vec<ObjectRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceApplyOptions {
    /// Plan and report, write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Prune extraneous objects (owned by the source, no longer in its manifests).
    #[serde(default)]
    pub prune: bool,
}

/// An extraneous object left in place, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extraneous {
    #[serde(with = "kind_serde")]
    pub kind: Kind,
    pub name: String,
    pub reason: String,
}

/// The result of one source apply (or its dry run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceReport {
    /// One line per manifest object (plus an implicitly created default cluster), then one per
    /// pruned object.
    pub results: Vec<ObjectResult>,
    /// Extraneous objects not pruned (prune off, or still in use).
    pub extraneous: Vec<Extraneous>,
    /// The source's inventory after this apply.
    pub inventory: Vec<ObjectRef>,
    /// The store revision of the transaction (None when nothing was written).
    pub committed: Option<i64>,
}

impl SourceReport {
    /// The store matches the manifests: every object unchanged and nothing extraneous.
    pub fn in_sync(&self) -> bool {
        self.extraneous.is_empty() && self.results.iter().all(|r| r.outcome == Outcome::Unchanged)
    }

    /// Objects that are (or, for a dry run, would be) created, configured or pruned.
    pub fn changes(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.outcome != Outcome::Unchanged)
            .count()
    }
}

/// Builds the source's status record for the apply's transaction, as (key, value); None leaves
/// it as it is.
pub type StatusWriter<'a> = dyn Fn(&SourceReport) -> Option<(String, Vec<u8>)> + Send + Sync + 'a;

/// Apply a source's documents as a whole: create/update what differs, prune (or report)
/// extraneous objects, update the inventory and write `status`'s record — one transaction, all
/// or nothing. Documents should be [`stamp`]ed; an unstamped one is stamped with `source`.
///
/// Only keys written and keys those writes depend on are compared (not every object read), so
/// a sync that changes one object of a thousand is a small transaction.
pub async fn apply_source(
    store: &dyn Store,
    source: &str,
    docs: &[Document],
    opts: &SourceApplyOptions,
    status: &StatusWriter<'_>,
) -> Result<SourceReport, ApplyError> {
    validate_source_name(source)
        .map_err(|m| ApplyError::Invalid(vec![ManifestError::new("(source)", m)]))?;
    let errors = validate(docs);
    if !errors.is_empty() {
        return Err(ApplyError::Invalid(errors));
    }
    safety::check_apply(store, docs).await?;
    let stamped: Vec<Document>;
    let docs = if docs
        .iter()
        .all(|d| ownership::owner(&d.resource.metadata().annotations) == Some(source))
    {
        docs
    } else {
        stamped = docs
            .iter()
            .cloned()
            .map(|mut d| {
                let a = &mut d.resource.metadata_mut().annotations;
                a.insert(ownership::SOURCE.into(), source.to_string());
                d
            })
            .collect();
        &stamped
    };
    let desired: std::collections::BTreeSet<ObjectRef> = docs.iter().map(ObjectRef::of).collect();
    let inv_key = inventory_key(source);
    for attempt in 0..MAX_ATTEMPTS {
        let t0 = std::time::Instant::now();
        let mut r = Reader::new(store);
        let plan = plan_apply(&mut r, docs, true).await?;
        let t_plan = t0.elapsed();
        let stored_inv: Inventory = match r.get(&inv_key).await? {
            None => Inventory::default(),
            Some(kv) => serde_json::from_slice(&kv.value).unwrap_or_else(|e| {
                tracing::warn!(key = %inv_key, error = %e, "unreadable inventory; relying on ownership annotations");
                Inventory::default()
            }),
        };
        r.deps.insert(inv_key.clone());
        let owned = owned_objects(store, source, &desired).await?;
        let candidates = prune_candidates(&stored_inv.objects, &owned, &desired);
        let pruned = plan_prune(&mut r, source, &candidates, docs, opts.prune).await?;
        let t_prune = t0.elapsed();

        let mut inventory = desired.clone();
        inventory.extend(
            pruned
                .extraneous
                .iter()
                .map(|e| ObjectRef::new(e.kind, e.name.clone())),
        );
        let inventory: Vec<ObjectRef> = inventory.into_iter().collect();
        let mut ops = plan.ops;
        ops.extend(pruned.ops);
        let mut results = plan.results;
        results.extend(pruned.results);
        if inventory != stored_inv.objects || stored_inv.source != source {
            let inv = Inventory {
                source: source.to_string(),
                objects: inventory.clone(),
            };
            ops.push(Op::put(
                inv_key.clone(),
                serde_json::to_vec(&inv).expect("inventory serializes"),
            ));
        }
        let mut report = SourceReport {
            results,
            extraneous: pruned.extraneous,
            inventory,
            committed: None,
        };
        if opts.dry_run {
            return Ok(report);
        }
        if let Some((key, value)) = status(&report) {
            ops.push(Op::put(key, value));
        }
        let t_status = t0.elapsed();
        if ops.is_empty() {
            return Ok(report);
        }
        let written: HashSet<&str> = ops.iter().map(Op::key).collect();
        let compares: BTreeMap<String, i64> = r
            .compares
            .iter()
            .filter(|(k, _)| written.contains(k.as_str()) || r.deps.contains(k.as_str()))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let committed = commit_at(store, compares, ops).await?;
        tracing::debug!(
            source,
            plan_ms = t_plan.as_secs_f64() * 1e3,
            prune_ms = (t_prune - t_plan).as_secs_f64() * 1e3,
            status_ms = (t_status - t_prune).as_secs_f64() * 1e3,
            commit_ms = (t0.elapsed() - t_status).as_secs_f64() * 1e3,
            "source apply timings"
        );
        if let Some(rev) = committed {
            report.committed = Some(rev);
            return Ok(report);
        }
        backoff(attempt).await;
    }
    Err(ApplyError::Conflict)
}

/// Like [`commit`], returning the transaction's revision when it succeeded.
async fn commit_at(
    store: &dyn Store,
    compares: BTreeMap<String, i64>,
    ops: Vec<Op>,
) -> Result<Option<i64>, StoreError> {
    let mut txn = Txn::new();
    for (key, rev) in compares {
        txn = txn.when(crate::store::Compare::mod_revision(key, rev));
    }
    for op in ops {
        txn = txn.and_then(op);
    }
    let r = store.txn(txn).await?;
    Ok(r.succeeded.then_some(r.revision))
}

/// What may be extraneous: the inventory and every object carrying the source's annotation,
/// minus what the manifests hold now; in prune order.
pub fn prune_candidates(
    inventory: &[ObjectRef],
    owned: &[ObjectRef],
    desired: &std::collections::BTreeSet<ObjectRef>,
) -> Vec<ObjectRef> {
    let all: std::collections::BTreeSet<ObjectRef> =
        inventory.iter().chain(owned).cloned().collect();
    all.into_iter().filter(|o| !desired.contains(o)).collect()
}

/// Objects in the store annotated as belonging to `source` (a task definition family by its
/// latest revision), other than the `desired` ones (which are not prune candidates anyway).
async fn owned_objects(
    store: &dyn Store,
    source: &str,
    desired: &std::collections::BTreeSet<ObjectRef>,
) -> Result<Vec<ObjectRef>, StoreError> {
    let needle = format!(
        "\"{}\":{}",
        ownership::SOURCE,
        serde_json::to_string(source).expect("a string serializes")
    );
    let needle = needle.as_bytes();
    let mut out = Vec::new();
    for kind in Kind::APPLYABLE {
        let prefix = keys::prefix(kind);
        let (kvs, _) = store.range(&prefix).await?;
        let mut latest: BTreeMap<String, &KeyValue> = BTreeMap::new();
        for kv in &kvs {
            let Some(rest) = kv.key.strip_prefix(&prefix) else {
                continue;
            };
            let name = if kind == Kind::TaskDefinition {
                match rest.split_once('/') {
                    Some((family, _)) => family,
                    None => continue,
                }
            } else {
                rest
            };
            // Keys come sorted, so the last revision of a family wins.
            latest.insert(name.to_string(), kv);
        }
        for (name, kv) in latest {
            if desired.contains(&ObjectRef::new(kind, name.as_str()))
                || !kv.value.windows(needle.len()).any(|w| w == needle)
            {
                continue;
            }
            let v: serde_json::Value = match serde_json::from_slice(&kv.value) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if v["metadata"]["annotations"][ownership::SOURCE].as_str() == Some(source) {
                out.push(ObjectRef::new(kind, name));
            }
        }
    }
    Ok(out)
}

struct PrunePlan {
    results: Vec<ObjectResult>,
    ops: Vec<Op>,
    extraneous: Vec<Extraneous>,
}

/// Plan pruning `candidates`. An object now owned by another source, already gone or already
/// being deleted is dropped from the inventory silently.
async fn plan_prune(
    r: &mut Reader<'_>,
    source: &str,
    candidates: &[ObjectRef],
    docs: &[Document],
    prune: bool,
) -> Result<PrunePlan, ApplyError> {
    let now = model::now();
    let mut plan = PrunePlan {
        results: vec![],
        ops: vec![],
        extraneous: vec![],
    };
    let mut errors = Vec::new();
    let mut users: Option<ClusterUsers> = None;
    let not_ours = |a: &BTreeMap<String, String>| ownership::owner(a).is_some_and(|o| o != source);
    let services_in_set = || {
        docs.iter().filter_map(|d| match &d.resource {
            Resource::Service(s) => Some((d, s)),
            _ => None,
        })
    };
    for c in candidates {
        let name = c.name.as_str();
        let mut keep = |reason: String| {
            plan.extraneous.push(Extraneous {
                kind: c.kind,
                name: name.to_string(),
                reason,
            })
        };
        let off = || "not in the manifests any more; prune is off".to_string();
        let result = |outcome| ObjectResult {
            kind: c.kind,
            name: name.to_string(),
            outcome,
            source: None,
        };
        match c.kind {
            Kind::Service => {
                let key = keys::key(Kind::Service, name);
                let Some(kv) = r.get(&key).await? else {
                    continue;
                };
                let mut s: Service = decode(&kv)?;
                if not_ours(&s.metadata.annotations) || s.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if !prune {
                    keep(off());
                    continue;
                }
                s.metadata.deletion_timestamp = Some(now);
                s.status.status = "DRAINING".into();
                plan.ops.push(Op::put(key, encode(&mut s)));
                plan.results.push(result(Outcome::Pruned));
            }
            Kind::TaskDefinition => {
                let stored = r.family(name).await?;
                let Some(last) = stored.last() else {
                    continue;
                };
                let latest: TaskDefinition = decode(last)?;
                if not_ours(&latest.metadata.annotations) {
                    continue;
                }
                let mut active = Vec::new();
                for kv in &stored {
                    let td: TaskDefinition = decode(kv)?;
                    if td.status.status != "INACTIVE" {
                        active.push((kv.clone(), td));
                    }
                }
                if active.is_empty() {
                    continue;
                }
                if !prune {
                    keep(off());
                    continue;
                }
                let users: Vec<&Document> = services_in_set()
                    .filter(|(_, s)| {
                        model::parse_taskdef_ref(&s.spec.task_definition).map(|(f, _)| f)
                            == Some(name)
                    })
                    .map(|(d, _)| d)
                    .collect();
                if !users.is_empty() {
                    for d in users {
                        errors.push(err(
                            d,
                            "spec.taskDefinition",
                            format!(
                                "task definition family `{name}` is no longer in the manifests and would be pruned, but this service uses it: keep its manifest or change the service"
                            ),
                        ));
                    }
                    continue;
                }
                for (kv, mut td) in active {
                    td.status.status = "INACTIVE".into();
                    r.compares.insert(kv.key.clone(), kv.mod_revision);
                    plan.ops.push(Op::put(kv.key.clone(), encode(&mut td)));
                }
                plan.results.push(result(Outcome::Pruned));
            }
            Kind::Cluster => {
                let key = keys::key(Kind::Cluster, name);
                let Some(kv) = r.get(&key).await? else {
                    continue;
                };
                let cl: Cluster = decode(&kv)?;
                if not_ours(&cl.metadata.annotations) {
                    continue;
                }
                let in_set: Vec<&str> = services_in_set()
                    .filter(|(_, s)| s.spec.cluster == name)
                    .map(|(_, s)| s.metadata.name.as_str())
                    .collect();
                if !in_set.is_empty() {
                    keep(format!(
                        "not in the manifests any more, but still used by services in them: {}",
                        in_set.join(", ")
                    ));
                    continue;
                }
                if !prune {
                    keep(off());
                    continue;
                }
                let parts = cluster_users(r, name, &mut users).await?;
                if !parts.is_empty() {
                    keep(format!(
                        "prune waits: still in use by {}",
                        parts.join(" and ")
                    ));
                    continue;
                }
                plan.ops.push(Op::delete(key));
                plan.results.push(result(Outcome::Pruned));
            }
            kind => {
                let key = keys::key(kind, name);
                let Some(kv) = r.get(&key).await? else {
                    continue;
                };
                let v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap_or_default();
                let owner = v["metadata"]["annotations"][ownership::SOURCE].as_str();
                if owner.is_some_and(|o| o != source) {
                    continue;
                }
                if !prune {
                    keep(off());
                    continue;
                }
                plan.ops.push(Op::delete(key));
                plan.results.push(result(Outcome::Pruned));
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApplyError::Invalid(errors));
    }
    Ok(plan)
}

#[cfg(test)]
mod source_tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    fn store() -> (tempfile::TempDir, EmbeddedStore) {
        let d = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(d.path().join("store")).unwrap();
        (d, s)
    }

    fn td(name: &str, image: &str) -> String {
        format!(
            "apiVersion: berth.dev/v1\nkind: TaskDefinition\nmetadata: {{name: {name}}}\nspec:\n  containerDefinitions:\n    - {{name: a, image: {image}, memory: 16}}\n---\n"
        )
    }

    fn svc(name: &str, family: &str, n: u32) -> String {
        format!(
            "apiVersion: berth.dev/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{taskDefinition: {family}, desiredCount: {n}}}\n---\n"
        )
    }

    /// Documents of `files` (name, text) stamped as source `src` at `commit`.
    fn docs(files: &[(&str, String)], commit: &str) -> Vec<Document> {
        let mut out = Vec::new();
        for (f, text) in files {
            out.extend(crate::manifest::parse_str(text, f).unwrap());
        }
        stamp(
            &mut out,
            "",
            &Stamp {
                source: "src".into(),
                commit: Some(commit.into()),
                dirty: false,
            },
        );
        out
    }

    fn no_status(_: &SourceReport) -> Option<(String, Vec<u8>)> {
        None
    }

    async fn run(s: &EmbeddedStore, d: &[Document], prune: bool) -> SourceReport {
        let opts = SourceApplyOptions {
            dry_run: false,
            prune,
        };
        apply_source(s, "src", d, &opts, &no_status).await.unwrap()
    }

    fn lines(r: &SourceReport) -> Vec<String> {
        r.results.iter().map(|o| o.to_string()).collect()
    }

    async fn revision(s: &EmbeddedStore) -> i64 {
        s.revision().await.unwrap()
    }

    #[test]
    fn relative_files_and_source_names() {
        assert_eq!(relative_file("manifests/web.yaml", "manifests"), "web.yaml");
        assert_eq!(
            relative_file("manifests/a/b.yaml", "manifests/"),
            "a/b.yaml"
        );
        assert_eq!(relative_file("./web.yaml", "."), "web.yaml");
        assert_eq!(relative_file("dir/web.yaml", "dir/web.yaml"), "web.yaml");
        assert_eq!(relative_file("other/x.yaml", "dir"), "other/x.yaml");
        assert_eq!(
            default_source_name(std::path::Path::new("/tmp/my repo/manifests")),
            "manifests"
        );
        assert_eq!(default_source_name(std::path::Path::new("/x/a b")), "a-b");
        assert!(validate_source_name("web-1.x_y").is_ok());
        assert!(validate_source_name("").is_err());
        assert!(validate_source_name(".hidden").is_err());
        assert!(validate_source_name("a/b").is_err());
    }

    #[test]
    fn prune_candidates_are_owned_minus_desired_in_prune_order() {
        let r = |k, n: &str| ObjectRef::new(k, n);
        let desired: std::collections::BTreeSet<ObjectRef> =
            [r(Kind::Service, "keep")].into_iter().collect();
        let inv = vec![
            r(Kind::Cluster, "c"),
            r(Kind::Service, "keep"),
            r(Kind::TaskDefinition, "old"),
        ];
        let owned = vec![r(Kind::Service, "gone"), r(Kind::TaskDefinition, "old")];
        assert_eq!(
            prune_candidates(&inv, &owned, &desired),
            [
                r(Kind::Service, "gone"),
                r(Kind::TaskDefinition, "old"),
                r(Kind::Cluster, "c")
            ]
        );
    }

    #[tokio::test]
    async fn source_apply_stamps_and_a_new_commit_alone_writes_nothing() {
        let (_d, s) = store();
        let files = [("web.yaml", td("web", "img:1") + &svc("web", "web", 2))];
        let r = run(&s, &docs(&files, "c1"), true).await;
        assert_eq!(
            lines(&r),
            [
                "cluster/default created",
                "taskdefinition/web:1 created",
                "service/web created"
            ]
        );
        assert!(r.committed.is_some());
        let kv = s
            .get(&keys::key(Kind::Service, "web"))
            .await
            .unwrap()
            .unwrap();
        let stored: Service = decode(&kv).unwrap();
        let a = &stored.metadata.annotations;
        assert_eq!(a[ownership::SOURCE], "src");
        assert_eq!(a[ownership::FILE], "web.yaml");
        assert_eq!(a[ownership::DOCUMENT], "2");
        assert_eq!(a[ownership::COMMIT], "c1");
        assert_eq!(a[ownership::DIRTY], "false");
        let inv: Inventory =
            serde_json::from_slice(&s.get(&inventory_key("src")).await.unwrap().unwrap().value)
                .unwrap();
        assert_eq!(
            inv.objects,
            [
                ObjectRef::new(Kind::Service, "web"),
                ObjectRef::new(Kind::TaskDefinition, "web")
            ]
        );

        // The same content at another commit: no write, no new revision.
        let before = revision(&s).await;
        let r = run(&s, &docs(&files, "c2"), true).await;
        assert!(r.in_sync(), "{:?}", lines(&r));
        assert_eq!(r.committed, None);
        assert_eq!(revision(&s).await, before);

        // A real change records the commit that made it.
        let files = [("web.yaml", td("web", "img:1") + &svc("web", "web", 4))];
        let r = run(&s, &docs(&files, "c3"), true).await;
        assert_eq!(
            lines(&r),
            ["taskdefinition/web:1 unchanged", "service/web configured"]
        );
        let kv = s
            .get(&keys::key(Kind::Service, "web"))
            .await
            .unwrap()
            .unwrap();
        let stored: Service = decode(&kv).unwrap();
        assert_eq!(stored.metadata.annotations[ownership::COMMIT], "c3");
        assert_eq!(stored.spec.desired_count, 4);
    }

    #[tokio::test]
    async fn moving_a_manifest_relabels_without_a_new_revision() {
        let (_d, s) = store();
        run(&s, &docs(&[("a.yaml", td("web", "img:1"))], "c1"), false).await;
        let r = run(&s, &docs(&[("b.yaml", td("web", "img:1"))], "c2"), false).await;
        assert_eq!(lines(&r), ["taskdefinition/web:1 configured"]);
        let latest = latest_taskdef(&s, "web").await.unwrap().unwrap();
        assert_eq!(latest.metadata.name, "web:1");
        assert_eq!(latest.metadata.annotations[ownership::FILE], "b.yaml");
    }

    #[tokio::test]
    async fn plain_apply_keeps_ownership_and_drift_shows_in_a_dry_run() {
        let (_d, s) = store();
        let files = [("web.yaml", td("web", "img:1") + &svc("web", "web", 2))];
        let d = docs(&files, "c1");
        run(&s, &d, true).await;
        // Someone applies a changed copy without a source.
        let changed =
            crate::manifest::parse_str(&(td("web", "img:1") + &svc("web", "web", 3)), "copy.yaml")
                .unwrap();
        let out = apply(&s, &changed, &ApplyOptions::default()).await.unwrap();
        assert_eq!(
            out.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
            ["taskdefinition/web:1 unchanged", "service/web configured"]
        );
        let kv = s
            .get(&keys::key(Kind::Service, "web"))
            .await
            .unwrap()
            .unwrap();
        let stored: Service = decode(&kv).unwrap();
        assert_eq!(
            stored.metadata.annotations[ownership::SOURCE],
            "src",
            "still owned"
        );
        // The source sees the drift in a dry run, and puts it back.
        let opts = SourceApplyOptions {
            dry_run: true,
            prune: true,
        };
        let before = revision(&s).await;
        let r = apply_source(&s, "src", &d, &opts, &no_status)
            .await
            .unwrap();
        assert!(!r.in_sync());
        assert_eq!(
            lines(&r),
            ["taskdefinition/web:1 unchanged", "service/web configured"]
        );
        assert_eq!(revision(&s).await, before, "a dry run writes nothing");
        let r = run(&s, &d, true).await;
        assert_eq!(r.changes(), 1);
        assert!(run(&s, &d, true).await.in_sync());
    }

    #[tokio::test]
    async fn prune_drains_services_and_deactivates_task_definitions() {
        let (_d, s) = store();
        let files = vec![
            ("web.yaml", td("web", "img:1") + &svc("web", "web", 2)),
            ("job.yaml", td("job", "img:1")),
        ];
        run(&s, &docs(&files, "c1"), true).await;
        // Without prune: reported, left alone.
        let only_job = [("job.yaml", td("job", "img:1"))];
        let r = run(&s, &docs(&only_job, "c2"), false).await;
        assert_eq!(lines(&r), ["taskdefinition/job:1 unchanged"]);
        assert_eq!(r.extraneous.len(), 2, "{:?}", r.extraneous);
        assert!(!r.in_sync());
        assert!(
            r.inventory.contains(&ObjectRef::new(Kind::Service, "web")),
            "still owned"
        );
        // With prune: the service drains, the family goes INACTIVE, all in one transaction.
        let r = run(&s, &docs(&only_job, "c3"), true).await;
        assert_eq!(
            lines(&r),
            [
                "taskdefinition/job:1 unchanged",
                "service/web pruned",
                "taskdefinition/web pruned"
            ]
        );
        assert!(r.extraneous.is_empty());
        assert_eq!(r.inventory, [ObjectRef::new(Kind::TaskDefinition, "job")]);
        let kv = s
            .get(&keys::key(Kind::Service, "web"))
            .await
            .unwrap()
            .unwrap();
        let stored: Service = decode(&kv).unwrap();
        assert!(stored.metadata.deletion_timestamp.is_some());
        let web = latest_taskdef(&s, "web").await.unwrap().unwrap();
        assert_eq!(web.status.status, "INACTIVE");
        // Idempotent: nothing more to do.
        let r = run(&s, &docs(&only_job, "c3"), true).await;
        assert!(r.in_sync(), "{:?} {:?}", lines(&r), r.extraneous);
        assert_eq!(r.committed, None);
    }

    #[tokio::test]
    async fn prune_finds_owned_objects_without_an_inventory_and_spares_other_owners() {
        let (_d, s) = store();
        let files = vec![("a.yaml", td("a", "img:1")), ("b.yaml", td("b", "img:1"))];
        run(&s, &docs(&files, "c1"), true).await;
        s.delete(&inventory_key("src")).await.unwrap();
        // `b` moves to another source.
        let mut other = crate::manifest::parse_str(&td("b", "img:1"), "b.yaml").unwrap();
        stamp(
            &mut other,
            "",
            &Stamp {
                source: "other".into(),
                commit: None,
                dirty: false,
            },
        );
        let opts = SourceApplyOptions {
            dry_run: false,
            prune: true,
        };
        apply_source(&s, "other", &other, &opts, &no_status)
            .await
            .unwrap();
        let r = run(&s, &docs(&[("c.yaml", td("c", "img:1"))], "c2"), true).await;
        assert_eq!(
            lines(&r),
            ["taskdefinition/c:1 created", "taskdefinition/a pruned"]
        );
        assert_eq!(
            latest_taskdef(&s, "b")
                .await
                .unwrap()
                .unwrap()
                .status
                .status,
            "ACTIVE"
        );
    }

    #[tokio::test]
    async fn pruning_a_family_a_service_still_uses_is_refused() {
        let (_d, s) = store();
        let files = vec![
            ("td.yaml", td("web", "img:1")),
            ("svc.yaml", svc("web", "web", 1)),
        ];
        run(&s, &docs(&files, "c1"), true).await;
        let before = revision(&s).await;
        let opts = SourceApplyOptions {
            dry_run: false,
            prune: true,
        };
        let e = apply_source(&s, "src", &docs(&files[1..], "c2"), &opts, &no_status)
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("svc.yaml") && msg.contains("would be pruned"),
            "{msg}"
        );
        assert_eq!(revision(&s).await, before, "nothing written");
    }

    #[tokio::test]
    async fn status_record_rides_in_the_same_transaction() {
        let (_d, s) = store();
        let d = docs(&[("a.yaml", td("a", "img:1"))], "c1");
        let opts = SourceApplyOptions {
            dry_run: false,
            prune: true,
        };
        let status = |r: &SourceReport| {
            Some((
                "/berth/sources/src".to_string(),
                format!("{}", r.changes()).into_bytes(),
            ))
        };
        let r = apply_source(&s, "src", &d, &opts, &status).await.unwrap();
        let rev = r.committed.unwrap();
        let kv = s.get("/berth/sources/src").await.unwrap().unwrap();
        assert_eq!(kv.value, b"1");
        assert_eq!(kv.mod_revision, rev);
        let td_kv = s.get(&keys::taskdef_key("a", 1)).await.unwrap().unwrap();
        assert_eq!(td_kv.mod_revision, rev, "one transaction");
    }

    #[tokio::test]
    async fn a_scaled_services_desired_count_belongs_to_its_scaling_policy() {
        let (_d, s) = store();
        let policy = "apiVersion: berth.dev/v1\nkind: ScalingPolicy\nmetadata: {name: web-cpu}\nspec:\n  service: web\n  minCapacity: 1\n  maxCapacity: 9\n  targetTracking: {predefinedMetricType: ECSServiceAverageCPUUtilization, targetValue: 50}\n---\n";
        let files = |n| {
            [(
                "web.yaml",
                td("web", "img:1") + &svc("web", "web", n) + policy,
            )]
        };
        let r = run(&s, &docs(&files(2), "c1"), true).await;
        assert!(
            lines(&r).contains(&"service/web created".to_string()),
            "{:?}",
            lines(&r)
        );
        // The scaler moves the count.
        let key = keys::key(Kind::Service, "web");
        let mut cur: Service = decode(&s.get(&key).await.unwrap().unwrap()).unwrap();
        cur.spec.desired_count = 5;
        s.put(&key, encode(&mut cur)).await.unwrap();
        // Not drift; a later commit (even one changing the manifest's count) keeps it.
        let opts = SourceApplyOptions {
            dry_run: true,
            prune: true,
        };
        let r = apply_source(&s, "src", &docs(&files(2), "c2"), &opts, &no_status)
            .await
            .unwrap();
        assert!(r.in_sync(), "{:?}", lines(&r));
        run(&s, &docs(&files(3), "c3"), true).await;
        let cur: Service = decode(&s.get(&key).await.unwrap().unwrap()).unwrap();
        assert_eq!(cur.spec.desired_count, 5);
    }
}
