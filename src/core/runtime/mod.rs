//! The reconcile runtime: small separate pieces (queue, back-off, watcher, shared informer and
//! reflector stores, the cluster cache, controller runner) on tokio + futures, in the spirit of kube-runtime but store-agnostic.

pub mod backoff;
pub mod cluster_cache;
pub mod controller;
pub mod informer;
pub mod own_writes;
pub mod queue;
pub mod reflector;
pub mod watcher;

pub use cluster_cache::{ClusterCache, Usage};
pub use controller::{
    Action, Controller, ControllerOptions, ControllerStatus, Reconciler, Registry, Trigger,
};
pub use informer::{CacheError, SharedInformer};
pub use own_writes::OwnWrites;
pub use reflector::{Change, ChangeKind, Reflector};
pub use watcher::{watcher, Cache, WatcherEvent};
