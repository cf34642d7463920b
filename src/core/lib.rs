//! berth-core: the platform under berth's controllers, node and CLI.
//!
//! Modules are layered; each imports only those listed above it (ARCHITECTURE.md):
//!
//! | layer | modules |
//! |---|---|
//! | 0 helpers | [`util`] |
//! | 1 storage | [`store`] |
//! | 2 objects | [`model`], [`objects`] |
//! | 3 machinery | [`runtime`], [`manifest`], [`placement`], [`metrics`] |
//! | 4 policy | [`auth`], [`audit`], [`apply`], [`compose`] |
//! | 5 actors | [`agent`], [`gitops`], [`lb`] (and the `berth-controllers` crate) |
//! | 6 surface | [`api`] |

pub mod util;

pub mod store;

pub mod model;
pub mod objects;

pub mod manifest;
pub mod metrics;
pub mod placement;
pub mod runtime;

pub mod apply;
pub mod audit;
pub mod auth;
pub mod compose;

pub mod agent;
pub mod gitops;
pub mod lb;

pub mod api;
