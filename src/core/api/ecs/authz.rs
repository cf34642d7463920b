//! What an ECS call is authorized as: `ecs:<Operation>` on the ECS ARNs it acts on, each also
//! known as the `berth:` action and `{kind}/{name}` resource the REST API uses for the same
//! change (so Roles written in either vocabulary decide; a Deny in either wins). Computed from
//! the one parse of the body the handler then acts on ([`super::EcsCall`]), with the same
//! helpers the handlers use to read names and clusters, so the two cannot disagree.
//!
//! Lists are authorized on their cluster's ARN (ListClusters, ListTaskDefinitions and the
//! account settings on `*`, as IAM has them).

use super::arn;
use super::ctx::{cluster_of, str_list};
use super::EcsCall;
use crate::auth::actions::{resource, role_name, Target};
use crate::model::{parse_taskdef_ref, Kind};

/// The berth name of an ECS call that maps onto no berth action (an operation berth does not
/// implement, or a body that is not a JSON object): `admin` reaches the handler's error.
pub const UNMAPPED: &str = "berth:EcsCall";

/// `family` or `family:rev` (an ARN's tail) as a task-definition ARN and berth resource.
fn taskdef(region: &str, r: &str) -> (String, String) {
    let family = parse_taskdef_ref(r).map(|(f, _)| f).unwrap_or(r);
    (
        arn::task_definition(region, r),
        resource(Kind::TaskDefinition, family),
    )
}

/// The kind, cluster and name an ECS resource ARN names, re-spelled in the caller's region
/// (ARNs are matched as berth resolves them, whatever region a client wrote in them).
pub fn canonical(region: &str, a: &str) -> Option<(String, Kind, String)> {
    let rest = a.strip_prefix("arn:")?.splitn(5, ':').nth(4)?;
    let (ty, path) = rest.split_once('/')?;
    let parts: Vec<&str> = path.split('/').collect();
    Some(match (ty, parts.as_slice()) {
        ("cluster", [n]) => (arn::cluster(region, n), Kind::Cluster, n.to_string()),
        ("service", [c, n]) => (arn::service(region, c, n), Kind::Service, n.to_string()),
        ("task", [c, n]) => (arn::task(region, c, n), Kind::Task, n.to_string()),
        ("container-instance", [c, n]) => (
            arn::container_instance(region, c, n),
            Kind::ContainerInstance,
            n.to_string(),
        ),
        ("task-definition", [fr]) => (
            arn::task_definition(region, fr),
            Kind::TaskDefinition,
            fr.to_string(),
        ),
        _ => return None,
    })
}

fn kind_verb(k: Kind) -> &'static str {
    match k {
        Kind::Cluster => "Cluster",
        Kind::Service => "Service",
        Kind::Task => "Task",
        Kind::ContainerInstance => "ContainerInstance",
        _ => "TaskDefinition",
    }
}

pub fn targets(c: &EcsCall) -> Vec<Target> {
    let (op, region, v) = (c.op.as_str(), c.region.as_str(), &*c.req);
    let ecs = format!("ecs:{op}");
    let s = |k: &str| v[k].as_str().map(arn::name).unwrap_or("").to_string();
    let cluster = cluster_of(v);
    let cluster_arn = arn::cluster(region, &cluster);
    let t = |r: String, a: &str, br: String| Target::new(&ecs, r).aka(a, br);
    let service = |name: &str, a: &str| {
        t(
            arn::service(region, &cluster, name),
            a,
            resource(Kind::Service, name),
        )
    };
    let instances = |a: &str, k: &str| -> Vec<Target> {
        str_list(v, k)
            .iter()
            .map(|w| {
                let id = arn::name(w);
                t(
                    arn::container_instance(region, &cluster, id),
                    a,
                    resource(Kind::ContainerInstance, id),
                )
            })
            .collect()
    };
    let mut out: Vec<Target> = match op {
        "ListClusters" => vec![t("*".into(), "berth:ListClusters", "*".into())],
        "DescribeClusters" => {
            let mut names = str_list(v, "clusters");
            if names.is_empty() {
                names.push("default".into());
            }
            names
                .iter()
                .map(|n| {
                    let n = arn::name(n);
                    t(
                        arn::cluster(region, n),
                        "berth:DescribeCluster",
                        resource(Kind::Cluster, n),
                    )
                })
                .collect()
        }
        "CreateCluster" => {
            let n = v["clusterName"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("default");
            vec![t(
                arn::cluster(region, n),
                "berth:Apply",
                resource(Kind::Cluster, n),
            )]
        }
        "DeleteCluster" | "UpdateCluster" | "UpdateClusterSettings" => {
            let a = if op == "DeleteCluster" {
                "berth:DeleteCluster"
            } else {
                "berth:Apply"
            };
            vec![t(cluster_arn.clone(), a, resource(Kind::Cluster, &cluster))]
        }
        "RegisterTaskDefinition" => {
            let f = v["family"].as_str().unwrap_or("");
            let mut o = vec![t(
                arn::task_definition(region, f),
                "berth:Apply",
                resource(Kind::TaskDefinition, f),
            )];
            if let Some(role) = v["taskRoleArn"].as_str() {
                o.push(Target::new(
                    "berth:PassRole",
                    format!("role/{}", role_name(role)),
                ));
            }
            o
        }
        "DescribeTaskDefinition" | "DeregisterTaskDefinition" => {
            let a = if op == "DescribeTaskDefinition" {
                "berth:DescribeTaskDefinition"
            } else {
                "berth:DeleteTaskDefinition"
            };
            let (r, br) = taskdef(region, &s("taskDefinition"));
            vec![t(r, a, br)]
        }
        "DeleteTaskDefinitions" => str_list(v, "taskDefinitions")
            .iter()
            .map(|w| {
                let (r, br) = taskdef(region, arn::name(w));
                t(r, "berth:DeleteTaskDefinition", br)
            })
            .collect(),
        "ListTaskDefinitions" | "ListTaskDefinitionFamilies" => {
            vec![t("*".into(), "berth:ListTaskDefinitions", "*".into())]
        }
        "CreateService" => vec![service(&s("serviceName"), "berth:Apply")],
        "UpdateService" => vec![service(&s("service"), "berth:Apply")],
        "DeleteService" => vec![service(&s("service"), "berth:DeleteService")],
        "DescribeServices" => str_list(v, "services")
            .iter()
            .map(|w| service(arn::name(w), "berth:DescribeService"))
            .collect(),
        "ListServices" => vec![t(cluster_arn.clone(), "berth:ListServices", "*".into())],
        "ListServiceDeployments" => vec![service(&s("service"), "berth:DescribeService")],
        "DescribeServiceDeployments" => str_list(v, "serviceDeploymentArns")
            .iter()
            .map(|w| match super::deployments::parts(w) {
                Some((cl, svc, id)) => Target::new(
                    &ecs,
                    arn::arn(region, &format!("service-deployment/{cl}/{svc}/{id}")),
                )
                .aka("berth:DescribeService", resource(Kind::Service, &svc)),
                None => t("*".into(), "berth:DescribeService", "*".into()),
            })
            .collect(),
        "RunTask" | "StartTask" => {
            let (r, br) = taskdef(region, &s("taskDefinition"));
            let mut o = vec![t(r, "berth:RunTask", br)];
            if op == "StartTask" {
                o.extend(instances("berth:RunTask", "containerInstances"));
            }
            o
        }
        "StopTask" => {
            let id = s("task");
            vec![t(
                arn::task(region, &cluster, &id),
                "berth:StopTask",
                resource(Kind::Task, &id),
            )]
        }
        "DescribeTasks" => str_list(v, "tasks")
            .iter()
            .map(|w| {
                let id = arn::name(w);
                t(
                    arn::task(region, &cluster, id),
                    "berth:DescribeTask",
                    resource(Kind::Task, id),
                )
            })
            .collect(),
        "ListTasks" => vec![t(cluster_arn.clone(), "berth:ListTasks", "*".into())],
        "ListContainerInstances" | "ListAttributes" => vec![t(
            cluster_arn.clone(),
            "berth:ListContainerInstances",
            "*".into(),
        )],
        "DescribeContainerInstances" => {
            instances("berth:DescribeContainerInstance", "containerInstances")
        }
        "UpdateContainerInstancesState" => {
            instances("berth:UpdateContainerInstance", "containerInstances")
        }
        "DeregisterContainerInstance" => {
            let id = s("containerInstance");
            vec![t(
                arn::container_instance(region, &cluster, &id),
                "berth:DeleteContainerInstance",
                resource(Kind::ContainerInstance, &id),
            )]
        }
        "PutAttributes" | "DeleteAttributes" => {
            let mut ids: Vec<String> = v["attributes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| arn::name(x["targetId"].as_str().unwrap_or("")).to_string())
                        .collect()
                })
                .unwrap_or_default();
            ids.sort();
            ids.dedup();
            ids.iter()
                .map(|id| {
                    t(
                        arn::container_instance(region, &cluster, id),
                        "berth:UpdateContainerInstance",
                        resource(Kind::ContainerInstance, id),
                    )
                })
                .collect()
        }
        "TagResource" | "UntagResource" | "ListTagsForResource" => {
            let a = v["resourceArn"].as_str().unwrap_or("");
            match canonical(region, a) {
                Some((r, k, name)) => {
                    let verb = if op == "ListTagsForResource" {
                        format!("berth:Describe{}", kind_verb(k))
                    } else {
                        "berth:TagResource".to_string()
                    };
                    vec![t(r, &verb, resource(k, &name))]
                }
                None => vec![t("*".into(), "berth:TagResource", "*".into())],
            }
        }
        "ListAccountSettings" => vec![t("*".into(), "berth:ListAccountSettings", "*".into())],
        "PutAccountSetting" | "PutAccountSettingDefault" | "DeleteAccountSetting" => {
            vec![t("*".into(), "berth:PutAccountSetting", "*".into())]
        }
        // Not one berth implements: the handler answers an error naming it.
        _ => vec![t("*".into(), UNMAPPED, "*".into())],
    };
    if out.is_empty() {
        // A call naming nothing (an empty list): still an `ecs:` action, on its cluster.
        out.push(Target::new(&ecs, cluster_arn).aka("berth:ListClusters", "*"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::sync::Arc;

    fn call(op: &str, req: Value) -> Vec<Target> {
        targets(&EcsCall {
            op: op.into(),
            region: "eu-west-1".into(),
            req: Arc::new(req),
        })
    }

    #[test]
    fn ecs_actions_on_ecs_arns_also_known_as_berth_ones() {
        let t = call(
            "DeleteService",
            json!({"cluster": "arn:aws:ecs:us-east-1:1:cluster/prod", "service": "arn:aws:ecs:us-east-1:1:service/prod/web"}),
        );
        assert_eq!(t[0].action, "ecs:DeleteService");
        assert_eq!(
            t[0].resource,
            "arn:aws:ecs:eu-west-1:000000000000:service/prod/web"
        );
        let a = t[0].alias.as_deref().unwrap();
        assert_eq!(
            (a.action.as_str(), a.resource.as_str()),
            ("berth:DeleteService", "service/web")
        );
        let t = call("ListServices", json!({}));
        assert_eq!(
            t[0].resource,
            "arn:aws:ecs:eu-west-1:000000000000:cluster/default"
        );
        let t = call(
            "StartTask",
            json!({"taskDefinition": "job:3", "containerInstances": ["i-1", "i-2"]}),
        );
        assert_eq!(t.len(), 3);
        assert_eq!(
            t[0].resource,
            "arn:aws:ecs:eu-west-1:000000000000:task-definition/job:3"
        );
        assert_eq!(
            t[0].alias.as_deref().unwrap().resource,
            "taskdefinition/job"
        );
        assert!(t[2].resource.ends_with("container-instance/default/i-2"));
        let t = call(
            "TagResource",
            json!({"resourceArn": "arn:aws:ecs:xx-1:9:service/default/web"}),
        );
        assert_eq!(
            t[0].resource,
            "arn:aws:ecs:eu-west-1:000000000000:service/default/web"
        );
        let t = call("FrobnicateCluster", json!({}));
        assert_eq!(t[0].action, "ecs:FrobnicateCluster");
        let t = call("DescribeTasks", json!({"tasks": []}));
        assert_eq!(t[0].action, "ecs:DescribeTasks");
    }
}
