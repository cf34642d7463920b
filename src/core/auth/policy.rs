//! IAM-style policy evaluation: a request (action, resource) is allowed when some statement
//! of the caller's role allows it and none denies it. Explicit Deny wins; no match is an
//! implicit deny. Actions match case-insensitively, resources case-sensitively; both accept
//! `*` (any run of characters) and `?` (one character).

use serde::Serialize;

use super::actions::Target;
use crate::model::role::{Effect, RoleSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Decision {
    Allowed,
    ExplicitDeny,
    ImplicitDeny,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    pub decision: Decision,
    /// The deciding statement (`Sid`, else `statements[i]`), when one matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
}

impl Evaluation {
    pub fn allowed(&self) -> bool {
        self.decision == Decision::Allowed
    }
}

pub use crate::util::glob::glob;

pub fn action_matches(pattern: &str, action: &str) -> bool {
    pattern == "*" || glob(pattern, action, true)
}

/// Actions a partial wildcard never *allows* (`berth:Get*` is a reader's, a Secret's value is
/// not): only the exact name, `berth:*` or `*`. A Deny matches them as any other action.
pub const EXPLICIT_ONLY: [&str; 1] = ["berth:GetSecretValue"];

/// Whether an Allow statement's action pattern grants `action`.
pub fn allow_matches(pattern: &str, action: &str) -> bool {
    if EXPLICIT_ONLY.iter().any(|a| a.eq_ignore_ascii_case(action)) {
        return pattern == "*"
            || pattern.eq_ignore_ascii_case("berth:*")
            || pattern.eq_ignore_ascii_case(action);
    }
    action_matches(pattern, action)
}

pub fn resource_matches(pattern: &str, resource: &str) -> bool {
    pattern == "*" || glob(pattern, resource, false)
}

/// Evaluate one (action, resource) against a role (`None`: the role does not exist).
pub fn evaluate(role: Option<&RoleSpec>, action: &str, resource: &str) -> Evaluation {
    let mut allow: Option<String> = None;
    if let Some(role) = role {
        for (i, s) in role.statements.iter().enumerate() {
            let hit = s.actions.iter().any(|a| match s.effect {
                Effect::Allow => allow_matches(a, action),
                Effect::Deny => action_matches(a, action),
            }) && s.resources.iter().any(|r| resource_matches(r, resource));
            if !hit {
                continue;
            }
            let name = s.sid.clone().unwrap_or_else(|| format!("statements[{i}]"));
            match s.effect {
                Effect::Deny => {
                    return Evaluation {
                        decision: Decision::ExplicitDeny,
                        statement: Some(name),
                    }
                }
                Effect::Allow => {
                    allow.get_or_insert(name);
                }
            }
        }
    }
    match allow {
        Some(name) => Evaluation {
            decision: Decision::Allowed,
            statement: Some(name),
        },
        None => Evaluation {
            decision: Decision::ImplicitDeny,
            statement: None,
        },
    }
}

/// Evaluate a request target and its alias (the same request in berth's vocabulary, see
/// [`Target::alias`]): an explicit Deny of either wins, else an Allow of either allows. The
/// answer names the (action, resource) that decided, or the target itself on no match.
pub fn evaluate_target<'a>(role: Option<&RoleSpec>, t: &'a Target) -> (Evaluation, &'a Target) {
    let first = evaluate(role, &t.action, &t.resource);
    let Some(alias) = t.alias.as_deref() else {
        return (first, t);
    };
    let second = evaluate(role, &alias.action, &alias.resource);
    match (first.decision, second.decision) {
        (Decision::ExplicitDeny, _) => (first, t),
        (_, Decision::ExplicitDeny) => (second, alias),
        (Decision::Allowed, _) => (first, t),
        (_, Decision::Allowed) => (second, alias),
        _ => (first, t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn role(json: &str) -> RoleSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn globbing() {
        assert!(glob("berth:Describe*", "berth:DescribeService", false));
        assert!(glob("berth:describe*", "berth:DescribeService", true));
        assert!(!glob("berth:describe*", "berth:DescribeService", false));
        assert!(glob("*", "", false));
        assert!(glob("a*b*c", "aXXbYYc", false));
        assert!(!glob("a*b*c", "aXXbYY", false));
        assert!(glob("task/?bc", "task/abc", false));
        assert!(!glob("task/?bc", "task/bc", false));
        assert!(glob("service/*", "service/web", false));
        assert!(!glob("service/*", "task/web", false));
    }

    #[test]
    fn reader_role() {
        let r = role(
            r#"{"statements":[{"effect":"Allow","actions":["berth:Describe*","berth:List*","berth:Get*"],"resources":["*"]}]}"#,
        );
        assert!(evaluate(Some(&r), "berth:DescribeService", "service/web").allowed());
        assert!(evaluate(Some(&r), "berth:ListServices", "*").allowed());
        let e = evaluate(Some(&r), "berth:DeleteService", "service/web");
        assert_eq!(e.decision, Decision::ImplicitDeny);
        assert_eq!(
            evaluate(None, "berth:ListServices", "*").decision,
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn secret_values_need_their_own_grant() {
        let reader = role(
            r#"{"statements":[{"effect":"Allow","actions":["berth:Describe*","berth:List*","berth:Get*"],"resources":["*"]}]}"#,
        );
        assert!(evaluate(Some(&reader), "berth:DescribeSecret", "secret/db").allowed());
        assert!(!evaluate(Some(&reader), "berth:GetSecretValue", "secret/db").allowed());
        let named = role(
            r#"{"statements":[{"effect":"Allow","actions":["berth:getsecretvalue"],"resources":["secret/db"]}]}"#,
        );
        assert!(evaluate(Some(&named), "berth:GetSecretValue", "secret/db").allowed());
        assert!(!evaluate(Some(&named), "berth:GetSecretValue", "secret/other").allowed());
        let admin = role(r#"{"statements":[{"effect":"Allow","actions":["berth:*"]}]}"#);
        assert!(evaluate(Some(&admin), "berth:GetSecretValue", "secret/db").allowed());
        let deny = role(
            r#"{"statements":[{"effect":"Allow","actions":["*"]},{"effect":"Deny","actions":["berth:Get*"]}]}"#,
        );
        assert!(!evaluate(Some(&deny), "berth:GetSecretValue", "secret/db").allowed());
    }

    #[test]
    fn explicit_deny_wins() {
        let r = role(
            r#"{"statements":[
                {"effect":"Allow","actions":["*"]},
                {"sid":"nopay","effect":"Deny","actions":["berth:Delete*"],"resources":["service/pay*"]}]}"#,
        );
        assert!(evaluate(Some(&r), "berth:DeleteService", "service/web").allowed());
        let e = evaluate(Some(&r), "berth:DeleteService", "service/payments");
        assert_eq!(e.decision, Decision::ExplicitDeny);
        assert_eq!(e.statement.as_deref(), Some("nopay"));
    }

    proptest! {
        #[test]
        fn star_matches_everything(s in ".{0,40}") {
            prop_assert!(glob("*", &s, false));
            prop_assert!(glob(&s.replace(['*', '?'], "x"), &s.replace(['*', '?'], "x"), false));
        }

        #[test]
        fn prefix_star(p in "[a-z]{0,8}", rest in "[a-z/]{0,12}") {
            let text = format!("{p}{rest}");
            let pattern = format!("{p}*");
            prop_assert!(glob(&pattern, &text, false));
        }

        #[test]
        fn glob_terminates_quickly(p in "[a*?]{0,30}", t in "a{0,60}b?") {
            let _ = glob(&p, &t, false);
        }
    }

    #[test]
    fn an_alias_allows_and_either_deny_wins() {
        let r = role(
            r#"{"statements":[{"effect":"Allow","actions":["berth:*"],"resources":["*"]},
               {"effect":"Deny","actions":["ecs:DeleteService"],"resources":["arn:aws:ecs:*:*:service/default/web"]}]}"#,
        );
        let t = |op: &str, arn: &str, a: &str, res: &str| Target::new(op, arn).aka(a, res);
        let del = |svc: &str| {
            t(
                "ecs:DeleteService",
                &format!("arn:aws:ecs:r:0:service/default/{svc}"),
                "berth:DeleteService",
                &format!("service/{svc}"),
            )
        };
        let web = del("web");
        let (e, by) = evaluate_target(Some(&r), &web);
        assert_eq!(
            (e.decision, by.action.as_str()),
            (Decision::ExplicitDeny, "ecs:DeleteService")
        );
        assert!(evaluate_target(Some(&r), &del("api")).0.allowed());
        let reader = role(
            r#"{"statements":[{"effect":"Allow","actions":["ecs:Describe*","ecs:List*"],"resources":["*"]}]}"#,
        );
        let list = t(
            "ecs:ListServices",
            "arn:aws:ecs:r:0:cluster/default",
            "berth:ListServices",
            "*",
        );
        assert!(evaluate_target(Some(&reader), &list).0.allowed());
        let create = t(
            "ecs:CreateService",
            "arn:aws:ecs:r:0:service/default/x",
            "berth:Apply",
            "service/x",
        );
        assert_eq!(
            evaluate_target(Some(&reader), &create).0.decision,
            Decision::ImplicitDeny
        );
    }
}
