//! The controllers: each watches desired versus observed state in the store and reconciles,
//! all on the one runtime in `src/runtime`.

pub mod rollout;
pub mod service;

use crate::runtime::{Controller, Registry};
use crate::store::DynStore;

/// Every control-plane controller, registered for status reporting.
pub fn all(store: DynStore, registry: &Registry) -> Vec<Controller> {
    vec![
        service::ServiceController::controller(store.clone()).register(registry),
        crate::scheduler::Scheduler::controller(store.clone()).register(registry),
        crate::scheduler::instances::InstanceStatus::controller(store).register(registry),
    ]
}
