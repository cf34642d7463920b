//! Applying manifests to the store: all or nothing.
//!
//! [`apply`] validates the set, resolves references across the set and the store, and writes
//! everything in ONE store transaction that compares the mod revision of every key it read
//! (absent for the keys it creates). When another writer got in between, it re-plans and tries
//! again; it never leaves half an apply behind.

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
    for attempt in 0..MAX_ATTEMPTS {
        let plan = plan_apply(store, docs).await?;
        if opts.dry_run || plan.ops.is_empty() {
            return Ok(plan.results);
        }
        if commit(store, plan.compares, plan.ops).await? {
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
}

impl<'a> Reader<'a> {
    fn new(store: &'a dyn Store) -> Self {
        Reader {
            store,
            gets: HashMap::new(),
            families: HashMap::new(),
            compares: BTreeMap::new(),
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
        match kvs.last() {
            Some(kv) => self.compares.insert(kv.key.clone(), kv.mod_revision),
            None => self.compares.insert(keys::taskdef_key(family, 1), 0),
        };
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

fn same_meta(a: &model::Metadata, b: &model::Metadata) -> bool {
    a.labels == b.labels && a.annotations == b.annotations
}

async fn plan_apply(store: &dyn Store, docs: &[Document]) -> Result<Plan, ApplyError> {
    let mut r = Reader::new(store);
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
                        c.metadata.uid = model::new_id();
                        c.metadata.created_at = Some(now);
                        c.status.status = "ACTIVE".into();
                        ops.push(Op::put(key, encode(&mut c)));
                        Outcome::Created
                    }
                    Some(kv) => {
                        let mut cur: Cluster = decode(&kv)?;
                        if cur.spec == want.spec && same_meta(&cur.metadata, &want.metadata) {
                            Outcome::Unchanged
                        } else {
                            cur.spec = want.spec.clone();
                            cur.metadata.labels = want.metadata.labels.clone();
                            cur.metadata.annotations = want.metadata.annotations.clone();
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
                });
            }
            Resource::TaskDefinition(want) => {
                let family = want.metadata.name.as_str();
                let stored = r.family(family).await?;
                let latest = match stored.last() {
                    Some(kv) => {
                        let td: TaskDefinition = decode(kv)?;
                        let rev = revision_of(kv).unwrap_or(td.status.revision);
                        Some((rev, td))
                    }
                    None => None,
                };
                let unchanged = latest.as_ref().is_some_and(|(_, td)| {
                    td.spec == want.spec
                        && same_meta(&td.metadata, &want.metadata)
                        && td.status.status != "INACTIVE"
                });
                let (rev, outcome) = match latest {
                    Some((rev, _)) if unchanged => (rev, Outcome::Unchanged),
                    _ => {
                        let rev = latest.as_ref().map_or(0, |(rev, _)| *rev) + 1;
                        let key = keys::taskdef_key(family, rev);
                        r.compares.insert(key.clone(), 0);
                        let mut td: TaskDefinition = want.clone();
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
                });
            }
            Resource::Service(_) => {}
            Resource::ScalingPolicy(want) => {
                let key = keys::key(Kind::ScalingPolicy, &want.metadata.name);
                let outcome = match r.get(&key).await? {
                    None => {
                        let mut p: model::ScalingPolicy = want.clone();
                        p.metadata.uid = model::new_id();
                        p.metadata.created_at = Some(now);
                        ops.push(Op::put(key, encode(&mut p)));
                        Outcome::Created
                    }
                    Some(kv) => {
                        let mut cur: model::ScalingPolicy = decode(&kv)?;
                        if cur.spec == want.spec && same_meta(&cur.metadata, &want.metadata) {
                            Outcome::Unchanged
                        } else {
                            cur.spec = want.spec.clone();
                            cur.metadata.labels = want.metadata.labels.clone();
                            cur.metadata.annotations = want.metadata.annotations.clone();
                            ops.push(Op::put(key, encode(&mut cur)));
                            Outcome::Configured
                        }
                    }
                };
                results[i] = Some(ObjectResult {
                    kind: Kind::ScalingPolicy,
                    name: want.metadata.name.clone(),
                    outcome,
                });
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
        let changed = current
            .as_ref()
            .is_none_or(|cur| cur.spec != want.spec || !same_meta(&cur.metadata, &want.metadata));
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
            ops.push(Op::put(cluster_key, encode(&mut c)));
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
        if errors.len() > before {
            continue;
        }

        let outcome = match current {
            None => {
                let mut s: Service = want.clone();
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
                cur.spec = want.spec.clone();
                cur.metadata.labels = want.metadata.labels.clone();
                cur.metadata.annotations = want.metadata.annotations.clone();
                cur.status.desired_count = want.spec.desired_count;
                if cur.status.status.is_empty() {
                    cur.status.status = "ACTIVE".into();
                }
                ops.push(Op::put(key, encode(&mut cur)));
                Outcome::Configured
            }
            Some(_) => Outcome::Unchanged,
        };
        results[i] = Some(ObjectResult {
            kind: Kind::Service,
            name: name.to_string(),
            outcome,
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
            },
        );
    }
    Ok(Plan {
        results,
        ops,
        compares: r.compares,
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

async fn plan_delete(store: &dyn Store, docs: &[Document]) -> Result<Plan, ApplyError> {
    let mut r = Reader::new(store);
    let now = model::now();
    let mut results = Vec::new();
    let mut ops = Vec::new();
    let mut errors = Vec::new();
    let mut done: HashSet<(Kind, &str)> = HashSet::new();
    let mut users: Option<(Vec<KeyValue>, Vec<KeyValue>, Vec<KeyValue>)> = None;

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
                        if users.is_none() {
                            users = Some((
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
                        if svc.is_empty() && inst == 0 && running == 0 {
                            ops.push(Op::delete(key));
                            Outcome::Pruned
                        } else {
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
            Resource::ScalingPolicy(_) => {
                let key = keys::key(Kind::ScalingPolicy, name);
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
