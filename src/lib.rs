//! berth: a self-hosted work-alike of Amazon ECS on Docker.
//!
//! This crate is the top of the layers (ARCHITECTURE.md): [`node`] assembles a process from
//! `berth-core` and `berth-controllers`, [`bench`] measures it, [`cli`] is the `berth` command.
//! The lower crates are re-exported so that `berth::store`, `berth::model`, … name them.

pub use berth_controllers as controllers;
pub use berth_core::*;

pub mod node;

pub mod bench;

pub mod cli;
