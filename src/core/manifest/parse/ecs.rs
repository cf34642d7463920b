//! Plain ECS task definitions (as `aws ecs describe-task-definition` prints them) turned into
//! berth envelopes.

use serde_json::{Map, Value};

use crate::model::API_VERSION;

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

/// Turn a plain ECS task definition into a berth envelope: `family` becomes `metadata.name`,
/// `tags` become labels, read-only output fields and empty values are dropped.
pub(super) fn ecs_to_envelope(v: Value, wrapped: bool) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
