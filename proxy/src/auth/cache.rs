//! The verified-token cache: a browser sends the same token for its whole life, so the
//! signature check is done once per token and key-set generation.
//!
//! - keyed by the SHA-256 of the whole token: the cache never holds tokens, and two tokens
//!   that differ in any byte never share an entry. Hashing is most of a cache hit, and with
//!   the CPU's SHA extensions (x86 SHA-NI, ARMv8 SHA2) SHA-256 hashes a 629-byte token in
//!   0.32 µs against keyed BLAKE3's 0.81 µs: BLAKE3's SIMD width needs many 1 KiB chunks and
//!   a token is one (`cargo bench -p nexus-bench --bench decision -- token_hash`). The
//!   cache's own table hashes these keys again with a per-process random seed, so slot
//!   placement stays unpredictable to clients;
//! - bounded (`quick_cache`, sharded and lock-light), so a flood of distinct tokens costs a
//!   fixed amount of memory: in entries, and in bytes, as an entry counts once per KiB
//!   started of the identity claims it keeps (see [`ClaimKib`]);
//! - an entry remembers the key-set generation it was verified under; after a key rotation it
//!   is ignored and the token re-verified, so a removed key stops working at once (the
//!   rotation also empties the cache, so what it counts is what can be served);
//! - what is cached are claims, not decisions: time claims, tenant and org are checked on
//!   every request, and an expired entry is dropped when seen.

use std::sync::Arc;

use aws_lc_rs::digest;
use quick_cache::sync::Cache;
use quick_cache::Weighter;

use super::claims::VerifiedToken;

/// SHA-256 of a token.
pub(crate) type TokenHash = [u8; 32];

/// An entry: the verified token and the key-set generation it was verified under.
type Entry = (Arc<VerifiedToken>, u64);

/// Claim bytes one unit of capacity stands for.
const UNIT: usize = 1024;

/// An entry's weight: one per KiB started of the claims it keeps (`sub`, tenant, org, `kid`,
/// `jti`; at least one). A common token weighs one, so capacity reads as tokens; a token whose
/// claims fill `max_token_bytes` would otherwise pin several KiB (each claim is kept as text
/// and as a header value) for one unit, `capacity` times over.
#[derive(Clone, Copy, Debug)]
struct ClaimKib;

impl Weighter<TokenHash, Entry> for ClaimKib {
    fn weight(&self, _: &TokenHash, (token, _): &Entry) -> u64 {
        let bytes = [
            &token.sub,
            &token.tenant,
            &token.org,
            &token.kid,
            &token.jti,
        ]
        .iter()
        .filter_map(|c| c.as_ref())
        .map(String::len)
        .sum::<usize>();
        bytes.div_ceil(UNIT).max(1) as u64
    }
}

/// Verified tokens by hash.
pub(crate) struct TokenCache {
    inner: Option<Cache<TokenHash, Entry, ClaimKib>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("len", &self.len())
            .finish()
    }
}

impl TokenCache {
    /// A cache of `capacity` units ([`ClaimKib`]); 0 disables caching.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: (capacity > 0)
                .then(|| Cache::with_weighter(capacity, capacity as u64, ClaimKib)),
        }
    }

    /// The cache key of `token`: its SHA-256, or `None` when the cache is off (then there is
    /// nothing to look up or fill, and the token is not hashed).
    pub(crate) fn key(&self, token: &str) -> Option<TokenHash> {
        self.inner.as_ref()?;
        let hash = digest::digest(&digest::SHA256, token.as_bytes());
        // A SHA-256 digest is 32 bytes by definition, so this never falls back.
        hash.as_ref().try_into().ok()
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

    /// Drops every entry (a new key set: see [`super::Authenticator::reload_keys`]).
    pub(crate) fn clear(&self) {
        if let Some(c) = &self.inner {
            c.clear();
        }
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, Cache::len)
    }
}
