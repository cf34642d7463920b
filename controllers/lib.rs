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

use berth_core::auth::identity::TASK_CREDS;
use berth_core::runtime::{ClusterCache, Controller, Registry};
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

/// The shared cache every control-plane controller of a process reads and triggers from: each
/// prefix a controller watches is covered, so the process watches the store once.
pub fn cache(store: DynStore) -> ClusterCache {
    ClusterCache::start(store, &[TASK_CREDS])
}

/// Every control-plane controller with default settings on a cache of their own (see
/// [`all_with`]).
pub fn all(store: DynStore, registry: &Registry) -> Vec<Controller> {
    let c = cache(store.clone());
    all_with(store, &c, registry, &ControlConfig::default())
}

/// Every control-plane controller, reading from and triggered by one shared cache, writing
/// through `store` (the leader's fenced store), registered for status reporting.
pub fn all_with(
    store: DynStore,
    cache: &ClusterCache,
    registry: &Registry,
    cfg: &ControlConfig,
) -> Vec<Controller> {
    let shared = |c: Controller| c.shared(&cache.informer).register(registry);
    vec![
        shared(service::ServiceController::controller_with(
            store.clone(),
            cache,
        )),
        shared(deployment::DeploymentController::controller_with(
            store.clone(),
            cache,
        )),
        shared(recovery::RecoveryController::controller(
            store.clone(),
            cache,
            cfg.lost_instance_grace,
        )),
        shared(lb_target::LbTargetController::controller_with(
            store.clone(),
            cache,
        )),
        shared(iam_binder::IamBinder::controller_with(store.clone(), cache)),
        shared(scheduler::Scheduler::controller_with(store.clone(), cache)),
        shared(scaling::ScalingController::controller_with(
            store.clone(),
            cache,
        )),
        shared(instance_status::InstanceStatus::controller_with(
            store.clone(),
            cache,
        )),
        shared(gc::controller_with(store, cache)),
    ]
}
