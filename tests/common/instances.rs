//! Fake container instances (records plus connected leases, no agent) for placement tests.
#![allow(dead_code)]

use std::time::Duration;

use berth::bench::harness::fake_instance;
use berth::model::{keys, Kind};
use berth::store::{DynStore, Op, Txn};

/// Register `prefix-0 … prefix-(n-1)` with `cpu` units and `memory` MiB each, all held by one
/// lease of `ttl`, as connected ACTIVE instances of the default cluster.
pub async fn register(store: &DynStore, prefix: &str, sizes: &[(u32, u32)], ttl: Duration) {
    let lease = store.lease_grant(ttl).await.unwrap();
    for (i, (cpu, memory)) in sizes.iter().enumerate() {
        let id = format!("{prefix}-{i}");
        let inst = fake_instance(&id, *cpu, *memory);
        let txn = Txn::new()
            .and_then(Op::put(
                keys::key(Kind::ContainerInstance, &id),
                inst.to_bytes(),
            ))
            .and_then(Op::put_with_lease(
                keys::instance_lease_key(&id),
                b"x".to_vec(),
                lease,
            ));
        store.txn(txn).await.unwrap();
    }
}
