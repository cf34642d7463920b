//! Placement constraints, which both task definitions and services carry.

use super::problems::{push, Problems};
use crate::model::{PlacementConstraint, PlacementConstraintType};

pub(super) fn check_constraint(pc: &PlacementConstraint, pp: &str, out: &mut Problems) {
    match pc.kind {
        PlacementConstraintType::MemberOf => {
            if pc.expression.as_deref().is_none_or(|e| e.trim().is_empty()) {
                push(
                    out,
                    format!("{pp}.expression"),
                    "memberOf needs an expression (ECS cluster query language, e.g. `attribute:stack == prod`)",
                );
            }
        }
        PlacementConstraintType::DistinctInstance => {
            if pc.expression.is_some() {
                push(
                    out,
                    format!("{pp}.expression"),
                    "distinctInstance takes no expression",
                );
            }
        }
    }
}
