//! Parsing one file's text into documents.
//!
//! Two passes over the text:
//! 1. every document is read into a `serde_json::Value` under a node budget (so YAML alias
//!    bombs stop early) to find its kind, its apiVersion and whether it is a plain ECS
//!    task-definition JSON;
//! 2. each document is deserialized into its typed object through `serde_path_to_error`, straight
//!    from serde_yaml's per-document deserializer, so errors carry the field path and the
//!    line/column serde_yaml reports.
//!
//! Errors that have a field but no position (kind/apiVersion checks, ECS JSON, semantic checks
//! found later) are located afterwards by walking the text to that field ([`locate_errors`]).

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::{closest, improve_message, strip_yaml_decorations};
use super::{applyable_kinds, Document, ManifestError, Resource, Source};
use crate::model::{self, Kind, Metadata, API_VERSION};

/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;
/// Values (scalars, lists, maps) one file may expand to, counting every YAML alias expansion.
pub const MAX_NODES: usize = 1_000_000;
/// Documents one file may hold.
pub const MAX_DOCUMENTS: usize = 10_000;
/// Errors per file that get a line/column looked up after the fact (each lookup re-reads the text).
const MAX_LOCATE: usize = 200;

/// ECS `DescribeTaskDefinition` output fields that berth computes itself.
const ECS_READ_ONLY: [&str; 8] = [
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Yaml,
    Json,
}

/// How a document was written, to map an object's field path back to the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `apiVersion`/`kind`/`metadata`/`spec`.
    Envelope,
    /// A plain ECS task definition (`family` + `containerDefinitions`), possibly wrapped in
    /// `{"taskDefinition": {...}}` as `aws ecs describe-task-definition` prints it.
    Ecs { wrapped: bool },
}

/// What is remembered about a parsed file to locate errors found later.
#[derive(Debug, Clone)]
pub(crate) struct FileInfo {
    pub format: Format,
    /// A JSON array of objects: document n is element n-1.
    pub json_array: bool,
    pub origins: HashMap<usize, Origin>,
}

/// Parse one file's text. `file` names it in errors; a `.json` name (or, for names that are
/// neither `.yaml` nor `.yml`, text starting with `{` or `[`) selects JSON, anything else YAML.
/// Empty documents are skipped. Semantic checks are [`super::validate`]'s job.
pub fn parse_str(text: &str, file: &str) -> Result<Vec<Document>, Vec<ManifestError>> {
    let (docs, errors, _) = parse_file(text, file);
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(errors)
    }
}

pub(crate) fn detect_format(text: &str, file: &str) -> Format {
    let lower = file.to_ascii_lowercase();
    if lower.ends_with(".json") {
        return Format::Json;
    }
    if lower.ends_with(".yaml") || lower.ends_with(".yml") {
        return Format::Yaml;
    }
    match text
        .trim_start_matches('\u{feff}')
        .trim_start()
        .chars()
        .next()
    {
        Some('{') | Some('[') => Format::Json,
        _ => Format::Yaml,
    }
}

/// Parse a file: documents, errors (located where possible) and what is needed to locate
/// errors found later.
pub(crate) fn parse_file(text: &str, file: &str) -> (Vec<Document>, Vec<ManifestError>, FileInfo) {
    let format = detect_format(text, file);
    let info = FileInfo {
        format,
        json_array: false,
        origins: HashMap::new(),
    };
    if text.len() > MAX_FILE_BYTES {
        let e = ManifestError::new(
            file,
            format!(
                "file is too large ({} bytes; the limit is {} MiB)",
                text.len(),
                MAX_FILE_BYTES >> 20
            ),
        );
        return (Vec::new(), vec![e], info);
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    // serde_yaml is unmaintained and has panicked on hostile input before: a panic in it must
    // become an error about this file, not take the server down.
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        let mut errors = Vec::new();
        let mut docs = Vec::new();
        let mut info = info.clone();
        match format {
            Format::Yaml => parse_yaml(text, file, &mut info, &mut docs, &mut errors),
            Format::Json => parse_json(text, file, &mut info, &mut docs, &mut errors),
        }
        // Classification errors come before the typed pass's: report in document order.
        errors.sort_by_key(|e| e.document.unwrap_or(0));
        locate_errors(text, &info, &mut errors);
        (docs, errors, info)
    }));
    match parsed {
        Ok(r) => r,
        Err(_) => {
            let e = ManifestError::new(
                file,
                "the parser failed on this file (an internal error, triggered by malformed input); check its syntax",
            );
            (Vec::new(), vec![e], info)
        }
    }
}

// ----- pass 1: values under a budget ---------------------------------------------------------

/// What a document turned out to be after pass 1.
enum Plan {
    Typed(Kind),
    Ecs { wrapped: bool },
}

fn parse_yaml(
    text: &str,
    file: &str,
    info: &mut FileInfo,
    docs: &mut Vec<Document>,
    errors: &mut Vec<ManifestError>,
) {
    let budget = Cell::new(MAX_NODES);
    let mut values: Vec<(usize, Value)> = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        if n > MAX_DOCUMENTS {
            errors.push(ManifestError::new(
                file,
                format!("too many documents (the limit is {MAX_DOCUMENTS} per file)"),
            ));
            break;
        }
        let mut track = serde_path_to_error::Track::new();
        let r = Bounded { budget: &budget }
            .deserialize(serde_path_to_error::Deserializer::new(de, &mut track));
        match r {
            Ok(Value::Null) => {}
            Ok(v) => values.push((n, v)),
            Err(e) => {
                errors.push(yaml_error(file, n, &track.path().to_string(), e, false));
                // Stop here. After a syntax error (or an unknown anchor, even one behind an
                // error of ours) the parser is stuck mid-document: it would repeat the error
                // forever or hand out the rest of a broken document (serde_yaml then panics).
                break;
            }
        }
    }

    let mut plans: HashMap<usize, Plan> = HashMap::new();
    let mut ecs_values: HashMap<usize, Value> = HashMap::new();
    for (n, v) in values {
        let source = Source {
            file: file.to_string(),
            document: n,
        };
        match classify(&v, &source, errors) {
            Some(Plan::Typed(kind)) => {
                plans.insert(n, Plan::Typed(kind));
            }
            Some(Plan::Ecs { wrapped }) => {
                plans.insert(n, Plan::Ecs { wrapped });
                ecs_values.insert(n, v);
            }
            None => {}
        }
    }
    let Some(&last) = plans.keys().max() else {
        return;
    };

    // pass 2: typed, straight from the YAML events for exact positions.
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        if n > last {
            break;
        }
        let source = Source {
            file: file.to_string(),
            document: n,
        };
        let result = match plans.get(&n) {
            None => continue,
            Some(Plan::Typed(kind)) => {
                info.origins.insert(n, Origin::Envelope);
                typed_from_yaml(*kind, de, &source)
            }
            Some(Plan::Ecs { wrapped }) => {
                info.origins.insert(n, Origin::Ecs { wrapped: *wrapped });
                let v = ecs_values.remove(&n).unwrap_or(Value::Null);
                typed_from_value(Kind::TaskDefinition, ecs_to_envelope(v, *wrapped), &source)
            }
        };
        match result {
            Ok(resource) => docs.push(Document { source, resource }),
            Err(e) => errors.push(e),
        }
    }
}

fn parse_json(
    text: &str,
    file: &str,
    info: &mut FileInfo,
    docs: &mut Vec<Document>,
    errors: &mut Vec<ManifestError>,
) {
    let budget = Cell::new(MAX_NODES);
    let mut de = serde_json::Deserializer::from_str(text);
    let mut track = serde_path_to_error::Track::new();
    let r = Bounded { budget: &budget }
        .deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track))
        .and_then(|v| de.end().map(|_| v));
    let value = match r {
        Ok(v) => v,
        Err(e) => {
            let mut me =
                ManifestError::new(file, json_message(&e)).with_field(track.path().to_string());
            if e.line() > 0 {
                me = me.with_location(e.line(), e.column());
            }
            errors.push(me);
            return;
        }
    };
    let values: Vec<(usize, Value)> = match value {
        Value::Array(items) => {
            info.json_array = true;
            if items.len() > MAX_DOCUMENTS {
                errors.push(ManifestError::new(
                    file,
                    format!("too many documents (the limit is {MAX_DOCUMENTS} per file)"),
                ));
                return;
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i + 1, v))
                .collect()
        }
        Value::Null => Vec::new(),
        v => vec![(1, v)],
    };
    for (n, v) in values {
        let source = Source {
            file: file.to_string(),
            document: n,
        };
        let result = match classify(&v, &source, errors) {
            None => continue,
            Some(Plan::Typed(kind)) => {
                info.origins.insert(n, Origin::Envelope);
                typed_from_value(kind, v, &source)
            }
            Some(Plan::Ecs { wrapped }) => {
                info.origins.insert(n, Origin::Ecs { wrapped });
                typed_from_value(Kind::TaskDefinition, ecs_to_envelope(v, wrapped), &source)
            }
        };
        match result {
            Ok(resource) => docs.push(Document { source, resource }),
            Err(e) => errors.push(e),
        }
    }
}

fn json_message(e: &serde_json::Error) -> String {
    // serde_json appends " at line L column C"; the position is reported separately.
    let msg = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    improve_message(msg.strip_suffix(&suffix).unwrap_or(&msg))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn is_ecs_taskdef(m: &Map<String, Value>) -> bool {
    m.contains_key("family") && m.contains_key("containerDefinitions")
}

/// Decide what a document is; push errors for what it cannot be.
fn classify(v: &Value, source: &Source, errors: &mut Vec<ManifestError>) -> Option<Plan> {
    let Value::Object(m) = v else {
        errors.push(ManifestError::at(
            source,
            None,
            format!(
                "not a berth manifest: expected a mapping with apiVersion, kind, metadata and spec, found {}",
                type_name(v)
            ),
        ));
        return None;
    };
    let Some(kind) = m.get("kind") else {
        if is_ecs_taskdef(m) {
            return Some(Plan::Ecs { wrapped: false });
        }
        if let Some(Value::Object(inner)) = m.get("taskDefinition") {
            if is_ecs_taskdef(inner) {
                return Some(Plan::Ecs { wrapped: true });
            }
        }
        errors.push(ManifestError::at(
            source,
            Some("kind"),
            format!(
                "missing field `kind`: not a berth manifest (expected `apiVersion: {API_VERSION}` and `kind:` one of {}, or a plain ECS task definition with `family` and `containerDefinitions`)",
                applyable_kinds()
            ),
        ));
        return None;
    };
    let mut ok = true;
    let kind = match kind.as_str() {
        None => {
            errors.push(ManifestError::at(
                source,
                Some("kind"),
                format!("must be a string, one of {}", applyable_kinds()),
            ));
            ok = false;
            None
        }
        Some(k) => match check_kind(k) {
            Ok(kind) => Some(kind),
            Err(msg) => {
                errors.push(ManifestError::at(source, Some("kind"), msg));
                ok = false;
                None
            }
        },
    };
    match m.get("apiVersion") {
        None => {
            errors.push(ManifestError::at(
                source,
                Some("apiVersion"),
                format!("missing field `apiVersion` (expected `{API_VERSION}`)"),
            ));
            ok = false;
        }
        Some(Value::String(s)) if s == API_VERSION => {}
        Some(other) => {
            let shown = match other {
                Value::String(s) => format!("`{s}`"),
                v => type_name(v).to_string(),
            };
            errors.push(ManifestError::at(
                source,
                Some("apiVersion"),
                format!("unsupported apiVersion {shown} (expected `{API_VERSION}`)"),
            ));
            ok = false;
        }
    }
    match (ok, kind) {
        (true, Some(kind)) => Some(Plan::Typed(kind)),
        _ => None,
    }
}

fn check_kind(k: &str) -> Result<Kind, String> {
    if let Some(kind) = Kind::APPLYABLE.into_iter().find(|kind| kind.as_str() == k) {
        return Ok(kind);
    }
    let loose = Kind::parse(k);
    if let Some(kind @ (Kind::Task | Kind::ContainerInstance)) = loose {
        return Err(format!(
            "kind `{k}` is written by berth ({kind} objects are created by the service controller and agents) and cannot be applied; apply one of {}",
            applyable_kinds()
        ));
    }
    let suggestion = loose
        .filter(|kind| Kind::APPLYABLE.contains(kind))
        .map(|kind| kind.as_str())
        .or_else(|| closest(k, Kind::APPLYABLE.iter().map(|kind| kind.as_str())));
    Err(match suggestion {
        Some(s) => format!(
            "unknown kind `{k}`, did you mean `{s}`? (expected one of {})",
            applyable_kinds()
        ),
        None => format!("unknown kind `{k}` (expected one of {})", applyable_kinds()),
    })
}

/// Turn a plain ECS task definition into a berth envelope: `family` becomes `metadata.name`,
/// `tags` become labels, read-only output fields and empty values are dropped.
fn ecs_to_envelope(v: Value, wrapped: bool) -> Value {
    let mut m = match v {
        Value::Object(m) => m,
        other => return other,
    };
    if wrapped {
        m = match m.remove("taskDefinition") {
            Some(Value::Object(inner)) => inner,
            _ => Map::new(),
        };
    }
    let family = m.remove("family").unwrap_or(Value::Null);
    for k in ECS_READ_ONLY {
        m.remove(k);
    }
    let mut metadata = Map::new();
    metadata.insert("name".into(), family);
    if let Some(Value::Array(tags)) = m.get("tags") {
        let labels: Option<Map<String, Value>> = tags
            .iter()
            .map(|t| match (t.get("key"), t.get("value")) {
                (Some(Value::String(k)), Some(Value::String(v))) => {
                    Some((k.clone(), Value::String(v.clone())))
                }
                _ => None,
            })
            .collect();
        if let Some(labels) = labels {
            m.remove("tags");
            if !labels.is_empty() {
                metadata.insert("labels".into(), Value::Object(labels));
            }
        }
    }
    drop_empty(&mut m, &["containerDefinitions"]);
    if let Some(Value::Array(containers)) = m.get_mut("containerDefinitions") {
        for c in containers {
            if let Value::Object(c) = c {
                drop_empty(c, &[]);
            }
        }
    }
    let mut env = Map::new();
    env.insert("apiVersion".into(), Value::String(API_VERSION.into()));
    env.insert("kind".into(), Value::String("TaskDefinition".into()));
    env.insert("metadata".into(), Value::Object(metadata));
    env.insert("spec".into(), Value::Object(m));
    Value::Object(env)
}

/// ECS output is full of `"volumesFrom": []`, `"secrets": null` and the like: empty values mean
/// "not set", so dropping them is harmless and lets such files through.
fn drop_empty(m: &mut Map<String, Value>, keep: &[&str]) {
    m.retain(|k, v| {
        keep.contains(&k.as_str())
            || !matches!(v, Value::Null)
                && !matches!(v, Value::Array(a) if a.is_empty())
                && !matches!(v, Value::Object(o) if o.is_empty())
    });
}

/// serde_json::Value under a node budget, refusing duplicate keys and YAML tags.
#[derive(Clone, Copy)]
struct Bounded<'b> {
    budget: &'b Cell<usize>,
}

impl Bounded<'_> {
    fn refuse<E: de::Error>(&self, msg: impl fmt::Display) -> E {
        E::custom(msg)
    }

    fn take<E: de::Error>(&self) -> Result<(), E> {
        match self.budget.get() {
            0 => Err(self.refuse(format!(
                "the file expands to more than {MAX_NODES} values (YAML aliases included): refusing a possible alias bomb"
            ))),
            n => {
                self.budget.set(n - 1);
                Ok(())
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::from(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(self.refuse(format!("number {v} is out of range"))),
            },
        }
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(self.refuse(format!("number {v} is out of range"))),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.take()?;
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| self.refuse(format!("{v} is not a finite number")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut out = Map::new();
        while let Some(k) = map.next_key_seed(KeySeed)? {
            if out.contains_key(&k) {
                return Err(self.refuse(format!("duplicate key `{k}`")));
            }
            let v = map.next_value_seed(self)?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Value, A::Error> {
        Err(self.refuse("YAML tags (`!name value`) are not supported in manifests"))
    }
}

/// A mapping key as a string (YAML allows numbers and booleans as keys).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = String;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok("null".to_string())
    }
}

// ----- pass 2: typed -------------------------------------------------------------------------

/// The manifest envelope as written by users: like [`model::Object`] but with an optional
/// `spec` (a Cluster needs none) and any `status` ignored (it belongs to berth).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Envelope<S> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: Metadata,
    spec: Option<S>,
    #[serde(default)]
    #[allow(dead_code)]
    status: IgnoredAny,
}

fn typed_from_yaml(
    kind: Kind,
    de: serde_yaml::Deserializer<'_>,
    source: &Source,
) -> Result<Resource, ManifestError> {
    fn go<S: DeserializeOwned>(
        de: serde_yaml::Deserializer<'_>,
        source: &Source,
    ) -> Result<Envelope<S>, ManifestError> {
        serde_path_to_error::deserialize::<_, Envelope<S>>(de).map_err(|e| {
            let path = e.path().to_string();
            yaml_error(&source.file, source.document, &path, e.into_inner(), true)
        })
    }
    match kind {
        Kind::Cluster => Ok(Resource::Cluster(finish(kind, go(de, source)?, source)?)),
        Kind::TaskDefinition => Ok(Resource::TaskDefinition(finish(
            kind,
            go(de, source)?,
            source,
        )?)),
        Kind::ScalingPolicy => Ok(Resource::ScalingPolicy(finish(
            kind,
            go(de, source)?,
            source,
        )?)),
        Kind::Role => Ok(Resource::Role(finish(kind, go(de, source)?, source)?)),
        Kind::LoadBalancer => Ok(Resource::LoadBalancer(finish(
            kind,
            go(de, source)?,
            source,
        )?)),
        Kind::TargetGroup => Ok(Resource::TargetGroup(finish(
            kind,
            go(de, source)?,
            source,
        )?)),
        _ => Ok(Resource::Service(finish(kind, go(de, source)?, source)?)),
    }
}

fn typed_from_value(kind: Kind, v: Value, source: &Source) -> Result<Resource, ManifestError> {
    fn go<S: DeserializeOwned>(v: Value, source: &Source) -> Result<Envelope<S>, ManifestError> {
        serde_path_to_error::deserialize::<_, Envelope<S>>(v).map_err(|e| {
            let path = e.path().to_string();
            let msg = e.into_inner().to_string();
            typed_error(source, &path, &msg, None)
        })
    }
    match kind {
        Kind::Cluster => Ok(Resource::Cluster(finish(kind, go(v, source)?, source)?)),
        Kind::TaskDefinition => Ok(Resource::TaskDefinition(finish(
            kind,
            go(v, source)?,
            source,
        )?)),
        Kind::ScalingPolicy => Ok(Resource::ScalingPolicy(finish(
            kind,
            go(v, source)?,
            source,
        )?)),
        Kind::Role => Ok(Resource::Role(finish(kind, go(v, source)?, source)?)),
        Kind::LoadBalancer => Ok(Resource::LoadBalancer(finish(
            kind,
            go(v, source)?,
            source,
        )?)),
        Kind::TargetGroup => Ok(Resource::TargetGroup(finish(kind, go(v, source)?, source)?)),
        _ => Ok(Resource::Service(finish(kind, go(v, source)?, source)?)),
    }
}

/// An error of the typed pass: `missing field` errors point at the missing field itself.
fn typed_error(
    source: &Source,
    path: &str,
    msg: &str,
    loc: Option<(usize, usize)>,
) -> ManifestError {
    let mut field = if path == "." {
        String::new()
    } else {
        path.to_string()
    };
    let mut message = improve_message(msg);
    if let Some(rest) = msg.strip_prefix("missing field `") {
        if let Some((name, _)) = rest.split_once('`') {
            field = if field.is_empty() {
                name.to_string()
            } else {
                format!("{field}.{name}")
            };
            message = format!("missing required field `{name}`");
        }
    }
    let mut e = ManifestError::at(source, None, message).with_field(field);
    if let Some((l, c)) = loc {
        e = e.with_location(l, c);
    }
    e
}

fn yaml_error(
    file: &str,
    document: usize,
    path: &str,
    e: serde_yaml::Error,
    typed: bool,
) -> ManifestError {
    let loc = e.location().map(|l| (l.line(), l.column()));
    let msg = strip_yaml_decorations(&e.to_string(), path, loc);
    let source = Source {
        file: file.to_string(),
        document,
    };
    if typed {
        return typed_error(&source, path, &msg, loc);
    }
    let mut me = ManifestError::at(&source, None, improve_message(&msg)).with_field(path);
    if let Some((l, c)) = loc {
        me = me.with_location(l, c);
    }
    me
}

fn finish<S: Default, T: Default>(
    kind: Kind,
    env: Envelope<S>,
    source: &Source,
) -> Result<model::Object<S, T>, ManifestError> {
    let spec = match (env.spec, kind) {
        (Some(s), _) => s,
        (None, Kind::Cluster) => S::default(),
        (None, _) => {
            return Err(ManifestError::at(
                source,
                Some("spec"),
                "missing required field `spec`",
            ))
        }
    };
    let mut o = model::Object::new(kind, env.metadata.name, spec);
    // Server-owned metadata in a manifest (say, from `berth get -o yaml`) is ignored.
    o.metadata.labels = env.metadata.labels;
    o.metadata.annotations = env.metadata.annotations;
    Ok(o)
}

// ----- locating errors after the fact ---------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `spec.containerDefinitions[0].image` → [spec, containerDefinitions, 0, image].
fn parse_path(field: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in field.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() && name != "?" {
            out.push(Seg::Key(name.to_string()));
        }
        while let Some(r) = rest.strip_prefix('[') {
            match r.split_once(']') {
                Some((idx, tail)) => {
                    if let Ok(i) = idx.parse() {
                        out.push(Seg::Index(i));
                    }
                    rest = tail;
                }
                None => break,
            }
        }
    }
    out
}

/// The object's field path → the path in the text as written.
fn text_path(origin: Origin, field: &str) -> Vec<Seg> {
    let segs = parse_path(field);
    match origin {
        Origin::Envelope => segs,
        Origin::Ecs { wrapped } => {
            let mut out = Vec::new();
            if wrapped {
                out.push(Seg::Key("taskDefinition".into()));
            }
            match segs.split_first() {
                Some((Seg::Key(k), rest)) if k == "spec" => out.extend(rest.iter().cloned()),
                Some((Seg::Key(k), rest)) if k == "metadata" => match rest.first() {
                    Some(Seg::Key(n)) if n == "name" => out.push(Seg::Key("family".into())),
                    Some(Seg::Key(n)) if n == "labels" => out.push(Seg::Key("tags".into())),
                    _ => {}
                },
                _ => {}
            }
            out
        }
    }
}

/// Fill in line/column for errors that name a document (and maybe a field) but no position.
pub(crate) fn locate_errors(text: &str, info: &FileInfo, errors: &mut [ManifestError]) {
    let mut budget = MAX_LOCATE;
    for e in errors.iter_mut() {
        if e.line.is_some() {
            continue;
        }
        let Some(doc) = e.document else { continue };
        if budget == 0 {
            break;
        }
        budget -= 1;
        let origin = info.origins.get(&doc).copied().unwrap_or(Origin::Envelope);
        let path = text_path(origin, e.field.as_deref().unwrap_or(""));
        if let Some((l, c)) = locate(text, info, doc, &path) {
            e.line = Some(l);
            e.column = Some(c);
        }
    }
}

const LOCATED: &str = "\u{0}located";

fn locate(text: &str, info: &FileInfo, document: usize, path: &[Seg]) -> Option<(usize, usize)> {
    catch_unwind(AssertUnwindSafe(|| {
        locate_inner(text, info, document, path)
    }))
    .ok()
    .flatten()
}

fn locate_inner(
    text: &str,
    info: &FileInfo,
    document: usize,
    path: &[Seg],
) -> Option<(usize, usize)> {
    match info.format {
        Format::Yaml => {
            let de = serde_yaml::Deserializer::from_str(text).nth(document.checked_sub(1)?)?;
            let err = Locate { path }.deserialize(de).err()?;
            err.location().map(|l| (l.line(), l.column()))
        }
        Format::Json => {
            let mut full = Vec::with_capacity(path.len() + 1);
            if info.json_array {
                full.push(Seg::Index(document.checked_sub(1)?));
            }
            full.extend(path.iter().cloned());
            let mut de = serde_json::Deserializer::from_str(text);
            let err = Locate { path: &full }.deserialize(&mut de).err()?;
            (err.line() > 0).then(|| (err.line(), err.column()))
        }
    }
}

/// Walks to `path` and fails there, so the deserializer attaches the position of that value
/// (or of the deepest enclosing value that exists).
struct Locate<'p> {
    path: &'p [Seg],
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("anything")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(LOCATED))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(LOCATED))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(LOCATED))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(LOCATED))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(LOCATED))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(LOCATED))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(LOCATED))
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some((Seg::Index(want), rest)) = self.path.split_first() {
            let mut i = 0;
            loop {
                if i == *want {
                    seq.next_element_seed(Locate { path: rest })?;
                    break;
                }
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
                i += 1;
            }
        }
        Err(de::Error::custom(LOCATED))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if let Some((Seg::Key(want), rest)) = self.path.split_first() {
            let mut seen = BTreeSet::new();
            while let Some(k) = map.next_key_seed(KeySeed)? {
                if &k == want && seen.insert(k) {
                    map.next_value_seed(Locate { path: rest })?;
                    break;
                }
                map.next_value::<IgnoredAny>()?;
            }
        }
        Err(de::Error::custom(LOCATED))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(format: Format) -> FileInfo {
        FileInfo {
            format,
            json_array: false,
            origins: HashMap::new(),
        }
    }

    #[test]
    fn paths_parse() {
        assert_eq!(
            parse_path("spec.containerDefinitions[0].portMappings[12].hostPort"),
            vec![
                Seg::Key("spec".into()),
                Seg::Key("containerDefinitions".into()),
                Seg::Index(0),
                Seg::Key("portMappings".into()),
                Seg::Index(12),
                Seg::Key("hostPort".into()),
            ]
        );
        assert_eq!(parse_path(""), vec![]);
        assert_eq!(
            parse_path("[3].kind"),
            vec![Seg::Index(3), Seg::Key("kind".into())]
        );
    }

    #[test]
    fn ecs_paths_map_back_to_the_text() {
        let o = Origin::Ecs { wrapped: true };
        assert_eq!(
            text_path(o, "spec.containerDefinitions[1].image"),
            parse_path("taskDefinition.containerDefinitions[1].image")
        );
        assert_eq!(
            text_path(Origin::Ecs { wrapped: false }, "metadata.name"),
            parse_path("family")
        );
    }

    #[test]
    fn locate_yaml_fields_in_later_documents() {
        let text =
            "a: 1\n---\nkind: X\nspec:\n  list:\n    - {x: 1}\n    - x: 2\n      y: [1, 2]\n";
        let i = info(Format::Yaml);
        assert_eq!(locate(text, &i, 2, &parse_path("kind")), Some((3, 7)));
        assert_eq!(
            locate(text, &i, 2, &parse_path("spec.list[1].y")),
            Some((8, 10))
        );
        assert_eq!(
            locate(text, &i, 2, &parse_path("spec.list[0].x")),
            Some((6, 11))
        );
        // A missing field: the enclosing mapping.
        assert_eq!(
            locate(text, &i, 2, &parse_path("spec.list[1].z")).map(|p| p.0),
            Some(7)
        );
        assert_eq!(locate(text, &i, 1, &[]), Some((1, 1)));
        assert_eq!(locate(text, &i, 9, &[]), None);
    }

    #[test]
    fn locate_json_fields() {
        let text =
            "[\n {\"kind\": \"A\"},\n {\n  \"kind\": \"B\",\n  \"spec\": {\"x\": [1, 2]}\n }\n]";
        let mut i = info(Format::Json);
        i.json_array = true;
        assert_eq!(
            locate(text, &i, 2, &parse_path("kind")).map(|p| p.0),
            Some(4)
        );
        assert_eq!(
            locate(text, &i, 2, &parse_path("spec.x[1]")).map(|p| p.0),
            Some(5)
        );
        assert_eq!(
            locate(text, &i, 1, &parse_path("kind")).map(|p| p.0),
            Some(2)
        );
    }

    #[test]
    fn kinds() {
        assert_eq!(check_kind("Service"), Ok(Kind::Service));
        assert!(check_kind("service")
            .unwrap_err()
            .contains("did you mean `Service`"));
        assert!(check_kind("services")
            .unwrap_err()
            .contains("did you mean `Service`"));
        assert!(check_kind("TaskDefinitoin")
            .unwrap_err()
            .contains("did you mean `TaskDefinition`"));
        assert!(check_kind("Task")
            .unwrap_err()
            .contains("cannot be applied"));
        assert!(check_kind("instances")
            .unwrap_err()
            .contains("cannot be applied"));
    }

    #[test]
    fn formats() {
        assert_eq!(detect_format("{}", "a.yaml"), Format::Yaml);
        assert_eq!(detect_format("kind: x", "a.json"), Format::Json);
        assert_eq!(detect_format("\u{feff}  [1]", "-"), Format::Json);
        assert_eq!(detect_format("kind: x", "-"), Format::Yaml);
    }

    #[test]
    fn ecs_envelope() {
        let v: Value = serde_json::from_str(
            r#"{"family":"f","revision":3,"status":"ACTIVE","volumesFrom":[],
                "containerDefinitions":[{"name":"a","image":"i","volumesFrom":[],"secrets":null}]}"#,
        )
        .unwrap();
        let env = ecs_to_envelope(v, false);
        assert_eq!(env["metadata"]["name"], "f");
        assert_eq!(env["kind"], "TaskDefinition");
        assert!(env["spec"].get("revision").is_none());
        assert!(env["spec"].get("volumesFrom").is_none());
        assert!(env["spec"]["containerDefinitions"][0]
            .get("secrets")
            .is_none());
    }

    #[test]
    fn unknown_anchor_after_an_error_does_not_panic() {
        // serde_yaml panics if asked for the document after a broken one.
        let text = "kind: TaskDefinition\napiVersion: a\napiVersion: b\nb: *a\n---\nkind: x\n";
        let errors = parse_str(text, "p.yaml").unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(!errors[0].message.contains("internal error"));
        let errors = parse_str("a: 1\nb: *nope\n---\nc: 1\n", "p.yaml").unwrap_err();
        assert!(errors[0].message.contains("unknown anchor"), "{errors:?}");
    }

    #[test]
    fn budget_counts_alias_expansion() {
        let mut text =
            String::from("apiVersion: berth.dev/v1\nkind: Cluster\nmetadata: {name: c}\nx: &x [");
        text.push_str(&"1,".repeat(2_000));
        text.push_str("1]\ny: [");
        text.push_str(&"*x,".repeat(600));
        text.push_str("*x]\n");
        let errors = parse_str(&text, "b.yaml").unwrap_err();
        assert!(errors[0].message.contains("alias bomb"), "{errors:?}");
    }
}
