//! Role checks: every statement names well-formed actions and resources.

use super::problems::Problems;
use crate::model::RoleSpec;

/// Problems with a role's statements, as (field path, message).
pub(super) fn check_role(spec: &RoleSpec) -> Problems {
    let mut out = Vec::new();
    if spec.statements.is_empty() {
        out.push((
            "spec.statements".to_string(),
            "a role needs at least one statement".to_string(),
        ));
    }
    for (i, s) in spec.statements.iter().enumerate() {
        let p = format!("spec.statements[{i}]");
        if s.actions.is_empty() {
            out.push((
                format!("{p}.actions"),
                "must name at least one action".into(),
            ));
        }
        for (j, a) in s.actions.iter().enumerate() {
            // berth's own actions, or ECS's (`ecs:DeleteService`: how ECS calls are authorized).
            let rest = ["berth:", "ecs:"].iter().find_map(|p| {
                (a.len() > p.len() && a[..p.len()].eq_ignore_ascii_case(p)).then(|| &a[p.len()..])
            });
            let ok = a == "*"
                || rest.is_some_and(|r| {
                    r.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '*' || c == '?')
                });
            if !ok {
                out.push((
                    format!("{p}.actions[{j}]"),
                    format!(
                        "invalid action {a:?}; write it like berth:DescribeService, berth:Describe*, ecs:DeleteService or *"
                    ),
                ));
            }
        }
        if s.resources.is_empty() {
            out.push((
                format!("{p}.resources"),
                "must name at least one resource (use \"*\" for all)".into(),
            ));
        }
        for (j, r) in s.resources.iter().enumerate() {
            if r.is_empty() || r.chars().any(|c| c.is_control() || c.is_whitespace()) {
                out.push((
                    format!("{p}.resources[{j}]"),
                    format!("invalid resource {r:?}; write it like service/web, task/* or *"),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::problems_of;
    use super::*;

    #[test]
    fn iam_spelling_passes_the_checks() {
        // The whole pipeline: IAM's spelling decodes (model::role) and then passes the checks.
        let role = "apiVersion: berth.dev/v1\nkind: Role\nmetadata: {name: r}\nspec:\n  Statement:\n    - {Sid: r, Effect: Allow, Action: 'berth:Describe*', Resource: 'service/*'}\n";
        assert_eq!(problems_of(role), Vec::<String>::new());
    }

    #[test]
    fn rejects_bad_actions() {
        let s: RoleSpec = serde_json::from_str(
            r#"{"statements":[{"effect":"Allow","actions":["ecs:ListServices","berth:","ecs:","iam:PassRole"]}]}"#,
        )
        .unwrap();
        let problems = check_role(&s);
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
