//! Pass 2: a document of a known kind decoded into its typed object through
//! `serde_path_to_error`, so errors carry the field path (and, from YAML, the position).

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_json::Value;

use crate::manifest::document::{applyable_kinds, Resource, Source};
use crate::manifest::error::{improve_message, strip_yaml_decorations, ManifestError};
use crate::model::{Kind, Metadata, Object};

/// The manifest envelope as written by users: like [`Object`] but with an optional
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

/// Where a document's typed form is read from: serde_yaml's per-document deserializer (exact
/// positions), or a pass-1 value (JSON, and ECS task definitions turned into envelopes).
pub(super) enum Input<'a> {
    Yaml(serde_yaml::Deserializer<'a>),
    Value(Value),
}

impl Input<'_> {
    fn envelope<S: DeserializeOwned>(self, source: &Source) -> Result<Envelope<S>, ManifestError> {
        match self {
            Input::Yaml(de) => {
                serde_path_to_error::deserialize::<_, Envelope<S>>(de).map_err(|e| {
                    let path = e.path().to_string();
                    yaml_error(&source.file, source.document, &path, e.into_inner(), true)
                })
            }
            Input::Value(v) => serde_path_to_error::deserialize::<_, Envelope<S>>(v).map_err(|e| {
                let path = e.path().to_string();
                let msg = e.into_inner().to_string();
                typed_error(source, &path, &msg, None)
            }),
        }
    }
}

/// Decode a document of `kind`. Every kind is listed, none falls back to another: a kind the
/// model gains must be given a decoder here or is refused by name.
pub(super) fn decode(
    kind: Kind,
    input: Input<'_>,
    source: &Source,
) -> Result<Resource, ManifestError> {
    fn object<S: DeserializeOwned + Default, T: Default>(
        kind: Kind,
        input: Input<'_>,
        source: &Source,
    ) -> Result<Object<S, T>, ManifestError> {
        finish(kind, input.envelope(source)?, source)
    }
    Ok(match kind {
        Kind::Cluster => Resource::Cluster(object(kind, input, source)?),
        Kind::TaskDefinition => Resource::TaskDefinition(object(kind, input, source)?),
        Kind::Service => Resource::Service(object(kind, input, source)?),
        Kind::ScalingPolicy => Resource::ScalingPolicy(object(kind, input, source)?),
        Kind::Role => Resource::Role(object(kind, input, source)?),
        Kind::LoadBalancer => Resource::LoadBalancer(object(kind, input, source)?),
        Kind::TargetGroup => Resource::TargetGroup(object(kind, input, source)?),
        Kind::Secret => Resource::Secret(object(kind, input, source)?),
        Kind::Task | Kind::ContainerInstance => {
            return Err(ManifestError::at(
                source,
                Some("kind"),
                format!(
                    "kind `{kind}` cannot be applied (expected one of {})",
                    applyable_kinds()
                ),
            ))
        }
    })
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

pub(super) fn yaml_error(
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
) -> Result<Object<S, T>, ManifestError> {
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
    let mut o = Object::new(kind, env.metadata.name, spec);
    // Server-owned metadata in a manifest (say, from `berth get -o yaml`) is ignored.
    o.metadata.labels = env.metadata.labels;
    o.metadata.annotations = env.metadata.annotations;
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_without_a_manifest_form_are_refused_by_name() {
        let source = Source {
            file: "k.yaml".into(),
            document: 1,
        };
        let v: Value = serde_json::json!({
            "apiVersion": crate::model::API_VERSION,
            "kind": "Task",
            "metadata": {"name": "t"},
            "spec": {},
        });
        let e = decode(Kind::Task, Input::Value(v), &source).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("kind"));
        assert!(e.message.contains("kind `Task` cannot be applied"), "{e}");
        assert!(e.message.contains(&applyable_kinds()), "{e}");
    }
}
