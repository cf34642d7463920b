//! The reconcile runtime: small separate pieces (queue, back-off, watcher/cache, controller
//! runner) on tokio + futures, in the spirit of kube-runtime but store-agnostic.

pub mod backoff;
pub mod controller;
pub mod queue;
pub mod watcher;

pub use controller::{
    Action, Controller, ControllerOptions, ControllerStatus, Reconciler, Registry, Trigger,
};
pub use watcher::{watcher, Cache, WatcherEvent};
