pub mod berth;
pub mod etcd;
pub mod manifests;
