pub mod berth;
pub mod etcd;
