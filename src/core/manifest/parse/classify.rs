//! Deciding what a document is from its pass-1 value: a berth envelope of an applyable kind
//! (with the right apiVersion), a plain ECS task definition, or an error saying why neither.

use serde_json::{Map, Value};

use crate::manifest::document::{applyable_kinds, Source};
use crate::manifest::error::{closest, ManifestError};
use crate::model::{Kind, API_VERSION};

/// What a document turned out to be after pass 1.
pub(super) enum Plan {
    Typed(Kind),
    Ecs { wrapped: bool },
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
pub(super) fn classify(
    v: &Value,
    source: &Source,
    errors: &mut Vec<ManifestError>,
) -> Option<Plan> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
