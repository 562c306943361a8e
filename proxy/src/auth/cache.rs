//! The verified-token cache: a browser sends the same token for its whole life, so the
//! signature check is done once per token and key-set generation.
//!
//! - keyed by a BLAKE3 hash of the whole token, keyed with a per-process random key: the cache
//!   never holds tokens, two tokens that differ in any byte never share an entry, and nobody
//!   outside the process can even compute an entry's key. BLAKE3 rather than SHA-256 because
//!   hashing the token is the main cost of a cache hit (a third of it with SHA-256 here);
//! - bounded (`quick_cache`, sharded and lock-light), so a flood of distinct tokens costs a
//!   fixed amount of memory;
//! - an entry remembers the key-set generation it was verified under; after a key rotation it
//!   is ignored and the token re-verified, so a removed key stops working at once;
//! - what is cached are claims, not decisions: time claims, tenant and org are checked on
//!   every request, and an expired entry is dropped when seen.

use std::sync::Arc;

use quick_cache::sync::Cache;

use super::claims::VerifiedToken;

/// Keyed BLAKE3 of a token.
pub(crate) type TokenHash = [u8; 32];

/// A fresh random hashing key.
fn random_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    // If the system RNG fails the key stays zero: hashing is still collision-resistant, only
    // no longer secret, which costs nothing the cache relies on.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k);
    k
}

/// Verified tokens by hash.
pub(crate) struct TokenCache {
    inner: Option<Cache<TokenHash, (Arc<VerifiedToken>, u64)>>,
    /// The hashing key (random per process; a secret, so never in `Debug`).
    hash_key: [u8; 32],
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("len", &self.inner.as_ref().map_or(0, Cache::len))
            .finish()
    }
}

impl TokenCache {
    /// A cache of `capacity` entries; 0 disables caching.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: (capacity > 0).then(|| Cache::new(capacity)),
            hash_key: random_key(),
        }
    }

    /// The cache key of `token`: its keyed BLAKE3 hash, or `None` when the cache is off (then
    /// there is nothing to look up or fill, and the token is not hashed).
    pub(crate) fn key(&self, token: &str) -> Option<TokenHash> {
        self.inner.as_ref()?;
        Some(*blake3::keyed_hash(&self.hash_key, token.as_bytes()).as_bytes())
    }

    /// The entry for `key` if it was verified under key-set `generation`.
    pub(crate) fn get(&self, key: &TokenHash, generation: u64) -> Option<Arc<VerifiedToken>> {
        let (token, g) = self.inner.as_ref()?.get(key)?;
        (g == generation).then_some(token)
    }

    /// Remembers a verified token.
    pub(crate) fn insert(&self, key: TokenHash, token: Arc<VerifiedToken>, generation: u64) {
        if let Some(c) = &self.inner {
            c.insert(key, (token, generation));
        }
    }

    /// Drops an entry (expired).
    pub(crate) fn remove(&self, key: &TokenHash) {
        if let Some(c) = &self.inner {
            c.remove(key);
        }
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, Cache::len)
    }
}
