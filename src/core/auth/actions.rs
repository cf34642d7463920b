//! Which action on which resource an API request is: the vocabulary of Role statements.
//!
//! | request                                   | action                        | resource            |
//! |-------------------------------------------|-------------------------------|---------------------|
//! | `GET /v1/{kind}`                          | `berth:List{Kinds}`           | `*`                 |
//! | `GET /v1/{kind}/{name}`                   | `berth:Describe{Kind}`        | `{kind}/{name}`     |
//! | `DELETE /v1/{kind}/{name}`                | `berth:Delete{Kind}` (tasks: `berth:StopTask`) | `{kind}/{name}` |
//! | `GET /v1/{kind}/{name}/{sub}`             | `berth:Get{Kind}{Sub}`        | `{kind}/{name}`     |
//! | `GET /v1/secrets/{name}/value`            | `berth:GetSecretValue` (only an exact grant, `berth:*` or `*`: see `policy::EXPLICIT_ONLY`) | `secret/{name}` |
//! | `POST /v1/{kind}/{name}/{verb}`           | `berth:{Verb}{Kind}` (e.g. `berth:StopTask`) | `{kind}/{name}` |
//! | `POST /v1/apply`                          | `berth:Apply` per document (+ `berth:PassRole` for a `taskRole`) | `{kind}/{name}` |
//! | `POST /v1/delete`                         | `berth:Delete{Kind}` per document | `{kind}/{name}` |
//! | `POST /v1/tasks`                          | `berth:RunTask`               | `taskdefinition/{family}` |
//! | `POST /v1/sources/{name}/apply`           | `berth:Apply` per document (+ `berth:PruneSource` with prune) | `{kind}/{name}`, `source/{name}` |
//! | `GET /v1/sources`, `/v1/sources/{name}`   | `berth:ListSources`, `berth:DescribeSource` | `*`, `source/{name}` |
//! | `GET /v1/audit`                           | `berth:LookupEvents`          | `*`                 |
//! | `POST /v1/auth/identities`                | `berth:CreateIdentity` + `berth:PassRole` | `identity/{name}`, `role/{role}` |
//! | `GET /v1/auth/whoami`, `POST /v1/auth/can-i` | (any authenticated caller) |                     |
//! | `GET /v1/events`, `GET /v1/watch/{kind}`  | `berth:ListEvents`, `berth:List{Kinds}` | `*`       |
//! | `GET /v1/sources[/{name}]`                | `berth:ListSources`, `berth:DescribeSource` | `source/{name}` |
//! | `POST /v1/sources/{name}/apply`           | `berth:Apply` per document (+ `berth:PruneSource`) | `{kind}/{name}`, `source/{name}` |
//! | `GET /metrics`                            | `berth:GetMetrics`            | `*`                 |
//! | `GET /ui…`                                | `berth:GetDashboard`          | `*`                 |
//! | `POST /` with an ECS `X-Amz-Target`       | `ecs:{Operation}`, also known as the `berth:` action of the same change (`api::ecs::authz`) | ECS ARNs (`arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/NAME`), also `{kind}/{name}` |
//!
//! `{kind}` in resources is the lower-case singular kind (`service`, `task`,
//! `taskdefinition`, `cluster`, `containerinstance`, `role`, `scalingpolicy`). Paths not in the
//! table get a generic name from their method and first segment (`GET /v1/sync/status` →
//! `berth:GetSync` on `sync/status`), so new endpoints are never left unprotected.

use axum::http::Method;
use serde::Serialize;
use serde_json::Value;

use crate::model::{parse_taskdef_ref, Kind};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub action: String,
    pub resource: String,
    /// The same request in berth's own vocabulary (an ECS call's `berth:` action on its
    /// `{kind}/{name}`): a statement about either decides, so Roles written for the REST API
    /// keep working for ECS clients. An explicit Deny of either wins; an Allow of either
    /// suffices (see [`crate::auth::policy::evaluate_target`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<Box<Target>>,
}

impl Target {
    pub fn new(action: impl Into<String>, resource: impl Into<String>) -> Self {
        Target {
            action: action.into(),
            resource: resource.into(),
            alias: None,
        }
    }

    /// This target, also known as `action` on `resource`.
    pub fn aka(mut self, action: impl Into<String>, resource: impl Into<String>) -> Self {
        self.alias = Some(Box::new(Target::new(action, resource)));
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    /// No authentication (`/healthz`).
    Public,
    /// Authentication required; every target must be allowed (empty: any authenticated
    /// caller). The first target is the request's primary action.
    Protected(Vec<Target>),
}

/// The primary action name of a classification (for audit and errors).
pub fn primary(c: &Classified) -> String {
    match c {
        Classified::Public => "berth:Health".into(),
        Classified::Protected(t) => t
            .first()
            .map(|t| t.action.clone())
            .unwrap_or_else(|| "berth:GetCallerIdentity".into()),
    }
}

fn camel(seg: &str) -> String {
    seg.split(['-', '_', '.'])
        .filter(|s| !s.is_empty())
        .map(|s| {
            let mut c = s.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// `Service` → `Services`, `ScalingPolicy` → `ScalingPolicies`.
fn plural_camel(kind: Kind) -> String {
    let s = kind.as_str();
    match s.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{s}s"),
    }
}

pub fn resource_type(kind: Kind) -> String {
    kind.as_str().to_ascii_lowercase()
}

/// `{kind}/{name}` (a task definition's family).
pub fn resource(kind: Kind, name: &str) -> String {
    let name = if kind == Kind::TaskDefinition {
        parse_taskdef_ref(name).map(|(f, _)| f).unwrap_or(name)
    } else {
        name
    };
    format!("{}/{name}", resource_type(kind))
}

/// Unknown endpoints: the verb and the first path segment name the action (never a
/// user-supplied segment), the rest is the resource.
fn generic(method: &Method, segs: &[&str]) -> Target {
    let verb = match *method {
        Method::GET | Method::HEAD => "Get",
        Method::DELETE => "Delete",
        Method::PUT | Method::PATCH => "Update",
        _ => "",
    };
    let rest: Vec<&str> = segs
        .iter()
        .copied()
        .filter(|s| *s != "v1" && !s.is_empty())
        .collect();
    let name = rest
        .first()
        .map(|s| camel(s))
        .unwrap_or_else(|| "Root".into());
    let resource = if rest.len() > 1 {
        rest.join("/")
    } else {
        "*".into()
    };
    Target::new(format!("berth:{verb}{name}"), resource)
}

/// Classify a request. `body` is the (already size-limited) request body.
pub fn classify(method: &Method, path: &str, body: &[u8]) -> Classified {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let get = *method == Method::GET || *method == Method::HEAD;
    let post = *method == Method::POST;
    let t = |a: &str, r: &str| Classified::Protected(vec![Target::new(a, r)]);
    match segs.as_slice() {
        ["healthz"] if get => Classified::Public,
        ["metrics", ..] => t("berth:GetMetrics", "*"),
        ["ui", ..] | [""] | [] if get => t("berth:GetDashboard", "*"),
        ["v1", "apply"] if post => Classified::Protected(apply_targets(body)),
        ["v1", "delete"] if post => Classified::Protected(delete_targets(body)),
        ["v1", "controllers"] | ["v1", "controllers", "leader"] if get => {
            t("berth:DescribeControllers", "*")
        }
        ["v1", "audit"] if get => t("berth:LookupEvents", "*"),
        ["v1", "auth", "whoami"] if get => Classified::Protected(vec![]),
        ["v1", "auth", "can-i"] if post => Classified::Protected(vec![]),
        ["v1", "auth", "identities"] if post => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let name = v["name"].as_str().unwrap_or("*");
            let role = v["role"].as_str().unwrap_or("*");
            Classified::Protected(vec![
                Target::new("berth:CreateIdentity", format!("identity/{name}")),
                Target::new("berth:PassRole", format!("role/{role}")),
            ])
        }
        ["v1", "auth", "identities"] if get => t("berth:ListIdentities", "*"),
        ["v1", "auth", "identities", name] if get => {
            t("berth:DescribeIdentity", &format!("identity/{name}"))
        }
        ["v1", "auth", "identities", name] if *method == Method::DELETE => {
            t("berth:DeleteIdentity", &format!("identity/{name}"))
        }
        // GitOps sources: a source apply is an apply of each document (its prune only touches
        // objects the source owns, and needs berth:PruneSource on the source).
        ["v1", "sources"] if get => t("berth:ListSources", "*"),
        ["v1", "sources", name] if get => t("berth:DescribeSource", &format!("source/{name}")),
        ["v1", "sources", name, "apply"] if post => {
            let mut targets = apply_targets(body);
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            if v["prune"].as_bool() == Some(true) {
                targets.push(Target::new("berth:PruneSource", format!("source/{name}")));
            }
            Classified::Protected(targets)
        }
        ["v1", "tasks"] if post => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let td = v["taskDefinition"].as_str().unwrap_or("*");
            t("berth:RunTask", &resource(Kind::TaskDefinition, td))
        }
        ["v1", "events"] if get => t("berth:ListEvents", "*"),
        // Agents (auth::node_authz): join tokens and agent credentials are an admin's; the
        // agent routes authenticate the agent's own credential, authorize every key and audit
        // every refusal themselves (api::agent_api).
        ["v1", "agent", "join-tokens"] if post => {
            t("berth:CreateAgentJoinToken", "agent-join-token/*")
        }
        ["v1", "agent", "join-tokens"] if get => t("berth:ListAgentJoinTokens", "*"),
        ["v1", "agent", "join-tokens", id] if *method == Method::DELETE => t(
            "berth:DeleteAgentJoinToken",
            &format!("agent-join-token/{id}"),
        ),
        ["v1", "agent", "instances", id, "credential"] if *method == Method::DELETE => t(
            "berth:RevokeAgentCredential",
            &resource(Kind::ContainerInstance, id),
        ),
        ["v1", "agent", "join"] if post => Classified::Public,
        ["v1", "agent", "store", ..] if post => Classified::Public,
        ["v1", "agent", "tasks", _, "token"] if get => Classified::Public,
        ["v1", "agent", "tasks", _, "credentials"] if post => Classified::Public,
        ["v1", "agent", "tasks", _, "secrets"] if get => Classified::Public,
        ["v1", "watch", kind] if get => match Kind::parse(kind) {
            Some(k) => t(&format!("berth:List{}", plural_camel(k)), "*"),
            None => Classified::Protected(vec![generic(method, &segs)]),
        },
        ["v1", "top", _] if get => t("berth:GetTop", "*"),
        ["v1", kind] if get => match Kind::parse(kind) {
            Some(k) => t(&format!("berth:List{}", plural_camel(k)), "*"),
            None => Classified::Protected(vec![generic(method, &segs)]),
        },
        ["v1", kind, name] => match Kind::parse(kind) {
            Some(k) if get => t(&format!("berth:Describe{}", k.as_str()), &resource(k, name)),
            Some(Kind::Task) if *method == Method::DELETE => {
                t("berth:StopTask", &resource(Kind::Task, name))
            }
            Some(k) if *method == Method::DELETE => {
                t(&format!("berth:Delete{}", k.as_str()), &resource(k, name))
            }
            Some(k) => t(&format!("berth:Update{}", k.as_str()), &resource(k, name)),
            None => Classified::Protected(vec![generic(method, &segs)]),
        },
        ["v1", kind, name, sub, ..] => match Kind::parse(kind) {
            Some(k) if get => t(
                &format!("berth:Get{}{}", k.as_str(), camel(sub)),
                &resource(k, name),
            ),
            Some(k) if *method == Method::DELETE => t(
                &format!("berth:Delete{}{}", k.as_str(), camel(sub)),
                &resource(k, name),
            ),
            Some(k) => t(
                &format!("berth:{}{}", camel(sub), k.as_str()),
                &resource(k, name),
            ),
            None => Classified::Protected(vec![generic(method, &segs)]),
        },
        _ => Classified::Protected(vec![generic(method, &segs)]),
    }
}

/// (kind, name, resource JSON) of each document of an apply/delete body.
fn documents(body: &[u8]) -> Option<Vec<(Kind, String, Value)>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let docs = v.get("documents")?.as_array()?;
    let mut out = Vec::new();
    for d in docs {
        let r = d.get("resource")?;
        let kind = Kind::parse(r.get("kind")?.as_str()?)?;
        let name = r.get("metadata")?.get("name")?.as_str()?.to_string();
        out.push((kind, name, r.clone()));
    }
    Some(out)
}

pub fn role_name(r: &str) -> &str {
    // `arn:aws:iam::123456789012:role/reader` or plain `reader`.
    r.rsplit('/').next().unwrap_or(r)
}

fn apply_targets(body: &[u8]) -> Vec<Target> {
    let Some(docs) = documents(body) else {
        return vec![Target::new("berth:Apply", "*")];
    };
    let mut out = vec![];
    for (kind, name, r) in &docs {
        out.push(Target::new("berth:Apply", resource(*kind, name)));
        if *kind == Kind::TaskDefinition {
            let spec = &r["spec"];
            if let Some(role) = spec["taskRole"].as_str().or(spec["taskRoleArn"].as_str()) {
                out.push(Target::new(
                    "berth:PassRole",
                    format!("role/{}", role_name(role)),
                ));
            }
        }
    }
    if out.is_empty() {
        out.push(Target::new("berth:Apply", "*"));
    }
    out
}

fn delete_targets(body: &[u8]) -> Vec<Target> {
    match documents(body) {
        Some(docs) if !docs.is_empty() => docs
            .iter()
            .map(|(k, n, _)| Target::new(format!("berth:Delete{}", k.as_str()), resource(*k, n)))
            .collect(),
        _ => vec![Target::new("berth:Delete", "*")],
    }
}

pub use role_name as task_role_name;

#[cfg(test)]
mod tests {
    use super::*;

    fn one(m: Method, p: &str, body: &str) -> (String, String) {
        match classify(&m, p, body.as_bytes()) {
            Classified::Protected(t) => (t[0].action.clone(), t[0].resource.clone()),
            Classified::Public => ("public".into(), String::new()),
        }
    }

    #[test]
    fn secrets() {
        assert_eq!(
            one(Method::GET, "/v1/secrets/db/value", ""),
            ("berth:GetSecretValue".into(), "secret/db".into())
        );
        assert_eq!(
            one(Method::GET, "/v1/secrets/db", ""),
            ("berth:DescribeSecret".into(), "secret/db".into())
        );
        assert_eq!(one(Method::GET, "/v1/secrets", "").0, "berth:ListSecrets");
        // The agent route authenticates the agent itself (api::agent_api).
        assert_eq!(
            one(Method::GET, "/v1/agent/tasks/t1/secrets", "").0,
            "public"
        );
    }

    #[test]
    fn table() {
        assert_eq!(one(Method::GET, "/healthz", "").0, "public");
        assert_eq!(
            one(Method::GET, "/v1/services", ""),
            ("berth:ListServices".into(), "*".into())
        );
        assert_eq!(
            one(Method::GET, "/v1/scalingpolicies", "").0,
            "berth:ListScalingPolicies"
        );
        assert_eq!(
            one(Method::GET, "/v1/services/web", ""),
            ("berth:DescribeService".into(), "service/web".into())
        );
        assert_eq!(
            one(Method::DELETE, "/v1/services/web", ""),
            ("berth:DeleteService".into(), "service/web".into())
        );
        assert_eq!(
            one(Method::DELETE, "/v1/tasks/abc", ""),
            ("berth:StopTask".into(), "task/abc".into())
        );
        assert_eq!(
            one(Method::POST, "/v1/tasks/abc/stop", "{}"),
            ("berth:StopTask".into(), "task/abc".into())
        );
        assert_eq!(
            one(Method::GET, "/v1/tasks/abc/logs", ""),
            ("berth:GetTaskLogs".into(), "task/abc".into())
        );
        assert_eq!(
            one(Method::GET, "/v1/td/web:3", ""),
            (
                "berth:DescribeTaskDefinition".into(),
                "taskdefinition/web".into()
            )
        );
        assert_eq!(
            one(Method::POST, "/v1/tasks", r#"{"taskDefinition":"job:2"}"#),
            ("berth:RunTask".into(), "taskdefinition/job".into())
        );
        assert_eq!(
            one(Method::GET, "/v1/sync/status", ""),
            ("berth:GetSync".into(), "sync/status".into())
        );
        assert_eq!(one(Method::GET, "/v1/events", "").0, "berth:ListEvents");
        assert_eq!(
            one(Method::GET, "/v1/watch/services", "").0,
            "berth:ListServices"
        );
        assert_eq!(one(Method::GET, "/v1/top/tasks", "").0, "berth:GetTop");
        assert_eq!(one(Method::GET, "/v1/sources", "").0, "berth:ListSources");
        assert_eq!(
            one(Method::GET, "/v1/sources/app", ""),
            ("berth:DescribeSource".into(), "source/app".into())
        );
        assert_eq!(one(Method::GET, "/v1/audit", "").0, "berth:LookupEvents");
        assert_eq!(one(Method::GET, "/metrics", "").0, "berth:GetMetrics");
        assert_eq!(one(Method::GET, "/ui/events", "").0, "berth:GetDashboard");
        assert_eq!(one(Method::POST, "/healthz", "").0, "berth:Healthz");
    }

    #[test]
    fn apply_is_per_document_with_pass_role() {
        let body = r#"{"documents":[
            {"source":{"file":"a","document":1},"resource":{"apiVersion":"berth.dev/v1","kind":"TaskDefinition","metadata":{"name":"web"},"spec":{"taskRole":"reader","containerDefinitions":[]}}},
            {"source":{"file":"a","document":2},"resource":{"apiVersion":"berth.dev/v1","kind":"Role","metadata":{"name":"reader"},"spec":{}}}]}"#;
        let Classified::Protected(t) = classify(&Method::POST, "/v1/apply", body.as_bytes()) else {
            panic!()
        };
        assert_eq!(
            t,
            vec![
                Target::new("berth:Apply", "taskdefinition/web"),
                Target::new("berth:PassRole", "role/reader"),
                Target::new("berth:Apply", "role/reader"),
            ]
        );
        let Classified::Protected(t) = classify(&Method::POST, "/v1/apply", b"garbage") else {
            panic!()
        };
        assert_eq!(t, vec![Target::new("berth:Apply", "*")]);
    }
}
