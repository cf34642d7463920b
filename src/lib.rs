//! berth: a self-hosted work-alike of Amazon ECS on Docker.

pub mod agent;
pub mod api;
pub mod apply;
pub mod audit;
pub mod auth;
pub mod cli;
#[path = "../controllers/mod.rs"]
pub mod controllers;
pub mod gitops;
pub mod lb;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod node;
pub mod objects;
pub mod runtime;
pub mod scheduler;
pub mod store;
pub mod ui;
