//! The kinds of objects berth stores, and their names in manifests, URLs and the CLI.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Cluster,
    TaskDefinition,
    Service,
    Task,
    ContainerInstance,
    ScalingPolicy,
    Role,
    LoadBalancer,
    TargetGroup,
    Secret,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Cluster,
        Kind::TaskDefinition,
        Kind::Service,
        Kind::Task,
        Kind::ContainerInstance,
        Kind::ScalingPolicy,
        Kind::Role,
        Kind::LoadBalancer,
        Kind::TargetGroup,
        Kind::Secret,
    ];
    /// Kinds a user may apply from manifests (the rest are written by berth).
    pub const APPLYABLE: [Kind; 8] = [
        Kind::Cluster,
        Kind::TaskDefinition,
        Kind::Service,
        Kind::ScalingPolicy,
        Kind::Role,
        Kind::LoadBalancer,
        Kind::TargetGroup,
        Kind::Secret,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cluster => "Cluster",
            Kind::TaskDefinition => "TaskDefinition",
            Kind::Service => "Service",
            Kind::Task => "Task",
            Kind::ContainerInstance => "ContainerInstance",
            Kind::ScalingPolicy => "ScalingPolicy",
            Kind::Role => "Role",
            Kind::LoadBalancer => "LoadBalancer",
            Kind::TargetGroup => "TargetGroup",
            Kind::Secret => "Secret",
        }
    }
    /// The plural lower-case name used in URLs, store keys and the CLI.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Cluster => "clusters",
            Kind::TaskDefinition => "taskdefinitions",
            Kind::Service => "services",
            Kind::Task => "tasks",
            Kind::ContainerInstance => "containerinstances",
            Kind::ScalingPolicy => "scalingpolicies",
            Kind::Role => "roles",
            Kind::LoadBalancer => "loadbalancers",
            Kind::TargetGroup => "targetgroups",
            Kind::Secret => "secrets",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        let l = s.to_ascii_lowercase();
        Kind::ALL.into_iter().find(|k| {
            let singular = k.as_str().to_ascii_lowercase();
            l == singular
                || l == k.plural()
                || (k == &Kind::TaskDefinition && (l == "td" || l == "tds"))
                || (k == &Kind::ContainerInstance && (l == "instances" || l == "instance"))
                || (k == &Kind::Service && l == "svc")
                || (k == &Kind::ScalingPolicy && l == "sp")
                || (k == &Kind::LoadBalancer && (l == "lb" || l == "lbs"))
                || (k == &Kind::TargetGroup && (l == "tg" || l == "tgs"))
        })
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
