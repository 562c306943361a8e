//! Which requests may share a connection to an instance: one tenant's only.
//!
//! Pingora pools instance connections by address, scheme and name, so tenants bound to one
//! shared instance (a Solo node hosts dozens) would share them. HTTP/1.1 cannot tell a late
//! byte of one response from the start of the next: bytes an instance sends beyond what it
//! announced (a body on a HEAD, a 204 or a 304; more than its `Content-Length`) once the
//! router has taken the response as complete and pooled the connection are read as the answer
//! to the next request that connection carries. Kept to one tenant, that request is the same
//! tenant's: an instance's fault can never hand one tenant another's bytes.

use std::hash::{Hash, Hasher};

/// The Pingora group key that keeps `tenant`'s instance connections its own. A hash: two
/// tenants whose keys collide (a chance in 2^64 for a pair) would share connections, as every
/// tenant of an instance did before.
pub fn tenant_group_key(tenant: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    tenant.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tenant_has_its_own_key_and_keeps_it() {
        assert_eq!(tenant_group_key("acme"), tenant_group_key("acme"));
        assert_ne!(tenant_group_key("acme"), tenant_group_key("globex"));
        assert_ne!(tenant_group_key("acme"), tenant_group_key("acme2"));
    }
}
