//! ECS's long ARNs (`arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/NAME`), and the berth name an
//! ARN or a plain name stands for.

/// berth has one account.
pub const ACCOUNT: &str = "000000000000";

pub fn arn(region: &str, rest: &str) -> String {
    format!("arn:aws:ecs:{region}:{ACCOUNT}:{rest}")
}

pub fn cluster(region: &str, name: &str) -> String {
    arn(region, &format!("cluster/{name}"))
}

pub fn service(region: &str, cluster: &str, name: &str) -> String {
    arn(region, &format!("service/{cluster}/{name}"))
}

pub fn task(region: &str, cluster: &str, id: &str) -> String {
    arn(region, &format!("task/{cluster}/{id}"))
}

pub fn container_instance(region: &str, cluster: &str, id: &str) -> String {
    arn(region, &format!("container-instance/{cluster}/{id}"))
}

/// `family:rev` → `arn:…:task-definition/family:rev`.
pub fn task_definition(region: &str, family_rev: &str) -> String {
    arn(region, &format!("task-definition/{family_rev}"))
}

/// The berth name in an ARN (its last `/` segment), or the name itself. A task definition's
/// ARN gives `family:rev`.
pub fn name(v: &str) -> &str {
    if v.starts_with("arn:") {
        v.rsplit('/').next().unwrap_or(v)
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_and_names() {
        let a = service("eu-west-1", "prod", "web");
        assert_eq!(a, "arn:aws:ecs:eu-west-1:000000000000:service/prod/web");
        assert_eq!(name(&a), "web");
        assert_eq!(name("web"), "web");
        assert_eq!(name(&task_definition("r", "job:3")), "job:3");
        assert_eq!(name(&cluster("r", "c1")), "c1");
    }
}
