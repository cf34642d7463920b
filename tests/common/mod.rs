pub mod berth;
pub mod etcd;
pub mod instances;
pub mod link;
pub mod manifests;
pub mod netns;
pub mod registry;
