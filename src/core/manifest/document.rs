//! What parsing produces: a [`Document`] is a [`Resource`] (one applyable object) and the
//! [`Source`] it came from.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::{self, Kind};

/// Where a document came from: the file (as given to the loader) and the 1-based index of the
/// document in it (the n-th `---` section of a YAML file, or the n-th element of a JSON array).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Source {
    pub file: String,
    pub document: usize,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: document {}", self.file, self.document)
    }
}

/// One object a user may apply.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Cluster(model::Cluster),
    TaskDefinition(model::TaskDefinition),
    Service(model::Service),
    ScalingPolicy(model::ScalingPolicy),
    Role(model::Role),
    LoadBalancer(model::LoadBalancer),
    TargetGroup(model::TargetGroup),
    Secret(model::Secret),
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Cluster(_) => Kind::Cluster,
            Resource::TaskDefinition(_) => Kind::TaskDefinition,
            Resource::Service(_) => Kind::Service,
            Resource::ScalingPolicy(_) => Kind::ScalingPolicy,
            Resource::Role(_) => Kind::Role,
            Resource::LoadBalancer(_) => Kind::LoadBalancer,
            Resource::TargetGroup(_) => Kind::TargetGroup,
            Resource::Secret(_) => Kind::Secret,
        }
    }

    /// `metadata.name` (for a TaskDefinition: the family).
    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    pub fn metadata(&self) -> &model::Metadata {
        match self {
            Resource::Cluster(o) => &o.metadata,
            Resource::TaskDefinition(o) => &o.metadata,
            Resource::Service(o) => &o.metadata,
            Resource::ScalingPolicy(o) => &o.metadata,
            Resource::Role(o) => &o.metadata,
            Resource::LoadBalancer(o) => &o.metadata,
            Resource::TargetGroup(o) => &o.metadata,
            Resource::Secret(o) => &o.metadata,
        }
    }

    pub fn metadata_mut(&mut self) -> &mut model::Metadata {
        match self {
            Resource::Cluster(o) => &mut o.metadata,
            Resource::TaskDefinition(o) => &mut o.metadata,
            Resource::Service(o) => &mut o.metadata,
            Resource::ScalingPolicy(o) => &mut o.metadata,
            Resource::Role(o) => &mut o.metadata,
            Resource::LoadBalancer(o) => &mut o.metadata,
            Resource::TargetGroup(o) => &mut o.metadata,
            Resource::Secret(o) => &mut o.metadata,
        }
    }
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Resource::Cluster(o) => o.serialize(s),
            Resource::TaskDefinition(o) => o.serialize(s),
            Resource::Service(o) => o.serialize(s),
            Resource::ScalingPolicy(o) => o.serialize(s),
            Resource::Role(o) => o.serialize(s),
            Resource::LoadBalancer(o) => o.serialize(s),
            Resource::TargetGroup(o) => o.serialize(s),
            Resource::Secret(o) => o.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(d)?;
        let kind = v
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or_else(|| D::Error::missing_field("kind"))?;
        let r = match kind {
            "Cluster" => serde_json::from_value(v.clone()).map(Resource::Cluster),
            "TaskDefinition" => serde_json::from_value(v.clone()).map(Resource::TaskDefinition),
            "Service" => serde_json::from_value(v.clone()).map(Resource::Service),
            "ScalingPolicy" => serde_json::from_value(v.clone()).map(Resource::ScalingPolicy),
            "Role" => serde_json::from_value(v.clone()).map(Resource::Role),
            "LoadBalancer" => serde_json::from_value(v.clone()).map(Resource::LoadBalancer),
            "TargetGroup" => serde_json::from_value(v.clone()).map(Resource::TargetGroup),
            "Secret" => serde_json::from_value(v.clone()).map(Resource::Secret),
            other => {
                return Err(D::Error::custom(format!(
                    "kind `{other}` cannot be applied (expected one of {})",
                    applyable_kinds()
                )))
            }
        };
        r.map_err(D::Error::custom)
    }
}

/// A parsed manifest document and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub source: Source,
    pub resource: Resource,
}

impl Document {
    pub fn kind(&self) -> Kind {
        self.resource.kind()
    }
    pub fn name(&self) -> &str {
        self.resource.name()
    }
}

/// "Cluster, TaskDefinition, Service".
pub(crate) fn applyable_kinds() -> String {
    Kind::APPLYABLE
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_str;

    #[test]
    fn resource_deserializes_by_kind() {
        let json = r#"{"apiVersion":"berth.dev/v1","kind":"Service","metadata":{"name":"web"},
                       "spec":{"taskDefinition":"web"}}"#;
        let r: Resource = serde_json::from_str(json).unwrap();
        assert_eq!(r.kind(), Kind::Service);
        assert_eq!(r.name(), "web");
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["spec"]["cluster"], "default");
        let bad = json.replace("\"Service\"", "\"Task\"");
        let e = serde_json::from_str::<Resource>(&bad).unwrap_err();
        assert!(e.to_string().contains("cannot be applied"), "{e}");
    }

    #[test]
    fn document_serde_round_trip() {
        let docs = parse_str(
            "apiVersion: berth.dev/v1\nkind: Cluster\nmetadata: {name: c, labels: {a: b}}\n",
            "c.yaml",
        )
        .unwrap();
        let json = serde_json::to_string(&docs[0]).unwrap();
        let back: Document = serde_json::from_str(&json).unwrap();
        assert_eq!(back, docs[0]);
        assert_eq!(back.source.to_string(), "c.yaml: document 1");
    }
}
