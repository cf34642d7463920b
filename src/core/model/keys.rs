//! Store key layout. Everything berth writes lives under `/berth/`.

use super::kind::Kind;

pub const ROOT: &str = "/berth/";

pub fn prefix(kind: Kind) -> String {
    format!("{ROOT}{}/", kind.plural())
}

pub fn key(kind: Kind, name: &str) -> String {
    format!("{ROOT}{}/{name}", kind.plural())
}

/// Task definitions are stored one key per revision, zero-padded so a range is in order.
pub fn taskdef_family_prefix(family: &str) -> String {
    format!("{ROOT}taskdefinitions/{family}/")
}

pub fn taskdef_key(family: &str, revision: u32) -> String {
    format!("{ROOT}taskdefinitions/{family}/{revision:08}")
}

/// The key an agent holds with its lease: present while the agent is connected.
pub fn instance_lease_key(instance_id: &str) -> String {
    format!("{ROOT}leases/containerinstances/{instance_id}")
}

pub const INSTANCE_LEASE_PREFIX: &str = "/berth/leases/containerinstances/";

/// The name a key ends with (after the kind prefix).
pub fn name_of(key: &str, kind: Kind) -> Option<&str> {
    key.strip_prefix(&prefix(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taskdef_keys_sort_by_revision() {
        assert!(taskdef_key("web", 9) < taskdef_key("web", 10));
        assert!(taskdef_key("web", 2).starts_with(&taskdef_family_prefix("web")));
        assert!(!taskdef_key("web2", 1).starts_with(&taskdef_family_prefix("web")));
    }
}
