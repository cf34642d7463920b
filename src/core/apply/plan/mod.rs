//! Planning: the writes an apply or a delete makes, by kind, read through a
//! [`Reader`](super::reader::Reader) that remembers what the transaction must compare.

mod cluster;
mod delete;
mod lb;
mod secret;
mod service;
mod set;
mod simple;
mod taskdef;

pub use cluster::DEFAULT_CLUSTER;
pub(super) use cluster::{cluster_users, ClusterUsers};
pub(super) use delete::plan_delete;
pub(super) use set::plan_apply;
