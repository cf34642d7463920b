//! berth-controllers: each controller watches desired versus observed state in the store and
//! reconciles, all on the one runtime in `berth_core::runtime` (ARCHITECTURE.md). They talk to
//! nothing but the store.

pub mod capacity;
pub mod common;
pub mod deployment;
pub mod gc;
pub mod iam_binder;
pub mod instance_status;
pub mod lb_target;
pub mod recovery;
pub mod rollout;
pub mod scaling;
pub mod scheduler;
pub mod service;

use berth_core::runtime::{Controller, Registry};
use berth_core::store::DynStore;

/// Settings of the control-plane controllers (flags of `berth up` / `berth server`).
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// How long an instance may stay disconnected before its tasks are replaced elsewhere.
    pub lost_instance_grace: std::time::Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            lost_instance_grace: recovery::DEFAULT_LOST_INSTANCE_GRACE,
        }
    }
}

/// Every control-plane controller with default settings, registered for status reporting.
pub fn all(store: DynStore, registry: &Registry) -> Vec<Controller> {
    all_with(store, registry, &ControlConfig::default())
}

/// Every control-plane controller, registered for status reporting.
pub fn all_with(store: DynStore, registry: &Registry, cfg: &ControlConfig) -> Vec<Controller> {
    vec![
        service::ServiceController::controller(store.clone()).register(registry),
        deployment::DeploymentController::controller(store.clone()).register(registry),
        recovery::RecoveryController::controller(store.clone(), cfg.lost_instance_grace)
            .register(registry),
        lb_target::LbTargetController::controller(store.clone()).register(registry),
        iam_binder::IamBinder::controller(store.clone()).register(registry),
        crate::scheduler::Scheduler::controller(store.clone()).register(registry),
        scaling::ScalingController::controller(store.clone()).register(registry),
        crate::instance_status::InstanceStatus::controller(store.clone()).register(registry),
        gc::controller(store).register(registry),
    ]
}
