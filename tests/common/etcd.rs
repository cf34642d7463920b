//! Test harness: a real single-member etcd server on free 127.0.0.1 ports with a temporary data
//! dir, killed on drop. One implementation serves the tests and `berth bench store`:
//! src/bench/etcd.rs.
//!
//! ```ignore
//! mod common;
//! let etcd = common::etcd::EtcdServer::start_async().await;
//! let store = berth::store::open(&etcd.url()).await?;
//! ```

#[allow(unused_imports)]
pub use berth::bench::etcd::EtcdServer;
