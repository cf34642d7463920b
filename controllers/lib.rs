//! berth-controllers: each controller watches desired versus observed state in the store and
//! reconciles, all on the one runtime in `berth_core::runtime` (ARCHITECTURE.md). They talk to
//! nothing but the store.

pub mod common;
pub mod deployment;
pub mod iam_binder;
pub mod instance_status;
pub mod lb_target;
pub mod recovery;
pub mod rollout;
pub mod scaling;
pub mod scheduler;
pub mod service;

use berth_core::model::{keys, parse_taskdef_ref, Kind, Service, TaskDefinition};
use berth_core::runtime::{Cache, Controller, Registry};
use berth_core::store::{DynStore, KeyValue};

/// Every control-plane controller, registered for status reporting.
pub fn all(store: DynStore, registry: &Registry) -> Vec<Controller> {
    vec![
        service::ServiceController::controller(store.clone()).register(registry),
        deployment::DeploymentController::controller(store.clone()).register(registry),
        recovery::RecoveryController::controller(store.clone()).register(registry),
        lb_target::LbTargetController::controller(store.clone()).register(registry),
        iam_binder::IamBinder::controller(store.clone()).register(registry),
        crate::scheduler::Scheduler::controller(store.clone()).register(registry),
        scaling::ScalingController::controller(store.clone()).register(registry),
        crate::instance_status::InstanceStatus::controller(store).register(registry),
    ]
}

/// Maps a changed task definition to the services that follow its family (from a local
/// cache of services), so a new revision triggers exactly those.
pub fn family_trigger(
    store: DynStore,
) -> impl Fn(&KeyValue) -> Vec<String> + Send + Sync + 'static {
    let services = Cache::start(store, &keys::prefix(Kind::Service), |_| {});
    move |kv: &KeyValue| -> Vec<String> {
        let Ok(td) = serde_json::from_slice::<TaskDefinition>(&kv.value) else {
            return vec![];
        };
        services
            .list()
            .iter()
            .filter_map(|kv| serde_json::from_slice::<Service>(&kv.value).ok())
            .filter(|s| {
                parse_taskdef_ref(&s.spec.task_definition).map(|(f, _)| f)
                    == Some(td.status.family.as_str())
            })
            .map(|s| s.metadata.name)
            .collect()
    }
}
