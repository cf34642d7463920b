//! Fast tests of the service, deployment, recovery and lb_target controllers: the embedded
//! store in a temp dir, every controller, and a simulated agent (a fake, no Docker) — each
//! test takes milliseconds to a couple of seconds and asserts on store state only.

mod harness;

mod backoff;
mod deployment;
mod lb_target;
mod recovery;
mod service;
mod work;
