//! Cluster checks. A cluster's spec is two switches that serde's types fully describe, so there
//! is nothing left to judge here; whether a switch may be turned on is a safety rule, checked
//! where manifests are applied. The function keeps the per-kind dispatch total.

use super::problems::Problems;
use crate::model::ClusterSpec;

pub(super) fn check_cluster(_spec: &ClusterSpec, _out: &mut Problems) {}
