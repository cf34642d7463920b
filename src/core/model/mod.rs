//! The object model: Kubernetes-style envelopes with ECS field names inside.
//!
//! This file only declares the modules and re-exports their items, so every child imports
//! what it needs from its sibling file and none depends on this one.

mod cluster;
pub mod instance;
pub mod keys;
mod kind;
pub mod lb;
mod object;
pub mod role;
pub mod scaling;
pub mod secret;
pub mod service;
pub mod task;
pub mod taskdef;

pub use cluster::{Cluster, ClusterSettings, ClusterSpec, ClusterStatus, EcsClusterSetting};
pub use instance::*;
pub use kind::Kind;
pub use lb::{LoadBalancer, LoadBalancerSpec, TargetGroup, TargetGroupSpec};
pub use object::{new_id, now, Metadata, Object, API_VERSION};
pub use role::{Role, RoleSpec};
pub use scaling::{ScalingPolicy, ScalingPolicySpec, ScalingPolicyStatus};
pub use secret::{
    parse_secret_ref, SealedSecret, SealedSecretSpec, SealedValue, Secret, SecretRef, SecretSpec,
    SecretStatus,
};
pub use service::*;
pub use task::*;
pub use taskdef::*;
