//! Helpers shared by the checks' tests.

use super::set::validate;
use crate::manifest::parse::parse_str;

pub(super) fn problems_of(yaml: &str) -> Vec<String> {
    let docs = parse_str(yaml, "t.yaml").unwrap_or_else(|e| panic!("{e:?}"));
    validate(&docs)
        .into_iter()
        .map(|e| format!("{}: {}", e.field.unwrap_or_default(), e.message))
        .collect()
}

pub(super) const TD: &str = "apiVersion: berth.dev/v1\nkind: TaskDefinition\nmetadata: {name: t}\nspec:\n  containerDefinitions:\n    - {name: a, image: i, memory: 32}\n";
