//! Role: an IAM-style policy. Identities and tasks (`taskRole`) are bound to a
//! role; the API allows a request only when some statement allows its action on its resource
//! and no statement denies it (explicit Deny wins, default deny).
//!
//! ```yaml
//! apiVersion: berth.dev/v1
//! kind: Role
//! metadata: {name: reader}
//! spec:
//!   statements:
//!     - {effect: Allow, actions: ["berth:Describe*", "berth:List*", "berth:Get*"], resources: ["*"]}
//!     - {effect: Deny, actions: ["berth:*"], resources: ["service/payments"]}
//! ```
//!
//! IAM's own spelling is accepted too: `Statement`, `Effect`, `Action`, `Resource`, `Sid`, and
//! a single string where a list is expected.

use serde::{Deserialize, Deserializer, Serialize};

use super::object::Object;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(alias = "Statement", alias = "statement")]
    pub statements: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Statement {
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "Sid")]
    pub sid: Option<String>,
    #[serde(alias = "Effect")]
    pub effect: Effect,
    /// `berth:DescribeService`, `berth:Describe*`, `berth:*` or `*` (case-insensitive).
    #[serde(alias = "Action", alias = "action", deserialize_with = "one_or_many")]
    pub actions: Vec<String>,
    /// `service/web`, `service/*`, `task/*`, `*` (case-sensitive). Default `*`.
    #[serde(
        default = "everything",
        alias = "Resource",
        alias = "resource",
        deserialize_with = "one_or_many"
    )]
    pub resources: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    #[serde(alias = "allow", alias = "ALLOW")]
    Allow,
    #[serde(alias = "deny", alias = "DENY")]
    Deny,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleStatus {}

pub type Role = Object<RoleSpec, RoleStatus>;

fn everything() -> Vec<String> {
    vec!["*".to_string()]
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl RoleSpec {
    /// Everything on everything (the `admin` role `berth up` creates).
    pub fn admin() -> Self {
        RoleSpec {
            description: Some("Full access (created by berth)".into()),
            statements: vec![Statement {
                sid: None,
                effect: Effect::Allow,
                actions: vec!["berth:*".into()],
                resources: everything(),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_iam_spelling() {
        let s: RoleSpec = serde_json::from_str(
            r#"{"Statement":[{"Sid":"r","Effect":"Allow","Action":"berth:Describe*","Resource":"service/*"}]}"#,
        )
        .unwrap();
        assert_eq!(s.statements[0].actions, vec!["berth:Describe*"]);
        assert_eq!(s.statements[0].resources, vec!["service/*"]);
        let d: RoleSpec =
            serde_json::from_str(r#"{"statements":[{"effect":"Deny","actions":["berth:*"]}]}"#)
                .unwrap();
        assert_eq!(d.statements[0].resources, vec!["*"]);
        assert_eq!(d.statements[0].effect, Effect::Deny);
    }
}
