//! Which requests may share a connection to an instance: one tenant's only, and of those the
//! ones with an identity apart from the anonymous ones.
//!
//! Pingora pools instance connections by address, scheme and name, so tenants bound to one
//! shared instance (a Solo node hosts dozens) would share them. HTTP/1.1 cannot tell a late
//! byte of one response from the start of the next: bytes an instance sends beyond what it
//! announced (a body on a HEAD, a 204 or a 304; more than its `Content-Length`; a whole
//! response sent twice) once the router has taken the response as complete and pooled the
//! connection are read as the answer to the next request that connection carries. Kept to one
//! tenant, that request is the same tenant's: an instance's fault can never hand one tenant
//! another's bytes. A request on a public path without a credential is anyone's, though, not
//! the tenant's: it gets connections that only such requests carry, so that a member's
//! answer sent late never reaches a caller who proved nothing. (Requests of a tenant's
//! members share theirs: keeping connections per user would multiply them by the users.)

use std::hash::{Hash, Hasher};

/// Who a request to an instance is known to be, as far as sharing connections goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A verified token of the tenant: the instance gets its identity.
    Member,
    /// No credential proved anything (a public path): anyone.
    Anonymous,
}

/// The Pingora group key that keeps `tenant`'s instance connections its own, and those of its
/// anonymous callers apart from its members'. A hash: two keys that collide (a chance in 2^64
/// for a pair) would share connections, as every tenant of an instance did before.
pub fn tenant_group_key(tenant: &str, caller: Caller) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    tenant.hash(&mut h);
    caller.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tenant_and_caller_has_its_own_key_and_keeps_it() {
        let key = tenant_group_key;
        assert_eq!(key("acme", Caller::Member), key("acme", Caller::Member));
        assert_ne!(key("acme", Caller::Member), key("globex", Caller::Member));
        assert_ne!(key("acme", Caller::Member), key("acme2", Caller::Member));
        assert_ne!(key("acme", Caller::Member), key("acme", Caller::Anonymous));
        assert_ne!(
            key("acme", Caller::Anonymous),
            key("globex", Caller::Anonymous)
        );
    }
}
