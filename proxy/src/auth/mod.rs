//! Token authentication: is this login token genuine, unexpired and meant for us?
//!
//! - [`jws`]: compact-serialization parsing and header rules (RFC 7515 / 8725);
//! - [`jwk`]: keys pinned to their algorithms; `keyset`: the JWKS plus HMAC secrets;
//! - [`claims`]: `exp`/`nbf`/`iss`/`aud` and the identity claims;
//! - `cache`: the verified-token cache; [`credential`]: where the token comes from;
//! - [`mint`]: signing, for the CLI, demo and tests;
//! - [`remote`]: a key set fetched from the identity provider (`[auth] jwks_url`).
//!
//! Whether the token belongs to the *addressed tenant* is not decided here but in
//! [`crate::authz`], on every request, cached token or not.

mod cache;
pub mod claims;
pub mod credential;
mod error;
pub mod jwk;
pub mod jws;
mod keyset;
pub mod mint;
pub mod remote;
pub(crate) mod strict_json;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use nexus_binding_store::revocations::Revocations;
use nexus_config::{AuthSettings, HmacKey, JwksSource};

pub use claims::VerifiedToken;
pub use credential::{extract_token, TokenPlaces};
pub use error::{
    www_authenticate_forbidden, www_authenticate_missing, AuthSetupError, CredentialError,
    TokenError,
};
pub use jwk::Algorithm;

use cache::TokenCache;
use claims::ClaimRules;
use keyset::KeySet;

/// The demo key set compiled into the binary (public keys only).
const DEMO_JWKS: &str = include_str!("../../../deploy/demo/jwks.json");

/// Verifies tokens. Shared by every request; keys are swapped atomically on reload.
pub struct Authenticator {
    source: JwksSource,
    hmac: Vec<HmacKey>,
    keys: ArcSwap<KeySet>,
    cache: TokenCache,
    rules: ClaimRules,
    max_token_bytes: usize,
    places: TokenPlaces,
    generation: AtomicU64,
    /// Full signature checks done (cache misses), for tests and metrics.
    signature_checks: AtomicU64,
    /// Key files parsed (start and reloads), for tests.
    key_set_loads: AtomicU64,
    /// The last key file refused (its SHA-256), or why it could not be read, while that
    /// holds: the file is polled every few seconds, and one that stays bad is reported once.
    refused: Mutex<Option<Refused>>,
    /// The revocations every token is checked against, cached or not (`[revocation]`).
    revocations: Revocations,
    /// Whether a key set was ever installed: a fetched one starts without (see
    /// [`Authenticator::has_key_set`]).
    key_set_installed: AtomicBool,
}

impl std::fmt::Debug for Authenticator {
    // Hand-written so the cache's hashing key (a secret) never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("source", &self.source)
            .field("keys", &self.key_count())
            .field("cached_tokens", &self.cache.len())
            .finish_non_exhaustive()
    }
}

/// Largest key file read, in bytes. An identity provider publishes a handful of keys (one
/// 8192-bit RSA JWK is under 1.5 KiB); a larger file is a mistake, and read whole it would be
/// re-read and hashed on every poll and, when changed, parsed key by key.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// Why the key file's content is not in use.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refused {
    /// The key set with this digest was refused.
    Set([u8; 32]),
    /// The file could not be read, for this reason.
    Unreadable(String),
}

/// The key file's bytes, at most [`MAX_JWKS_BYTES`], and where they came from; `None` for a
/// fetched key set, which [`remote::RemoteKeys`] hands to `install_fetched`.
fn read_source(source: &JwksSource) -> Option<Result<(Vec<u8>, String), AuthSetupError>> {
    Some(match source {
        JwksSource::Url(_) => return None,
        JwksSource::File(p) => {
            let path = p.display().to_string();
            // Opened and then looked at (a FIFO or a device there would block the read, and
            // every key reload after it; one renamed over the file between a look and an
            // open did, and revocation stopped unseen).
            match nexus_config::files::read_regular(p, MAX_JWKS_BYTES as u64) {
                Ok(bytes) => Ok((bytes, path)),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    Err(AuthSetupError::TooLarge {
                        path,
                        limit: MAX_JWKS_BYTES,
                    })
                }
                Err(source) => Err(AuthSetupError::Read { path, source }),
            }
        }
        JwksSource::EmbeddedDemo => Ok((
            DEMO_JWKS.as_bytes().to_vec(),
            "embedded demo key set".to_owned(),
        )),
    })
}

/// Builds a key set from what [`read_source`] read (bounded there).
fn load_set(
    bytes: &[u8],
    origin: &str,
    hmac: &[HmacKey],
    generation: u64,
    emptied: bool,
) -> Result<KeySet, AuthSetupError> {
    let text = std::str::from_utf8(bytes).map_err(|_| AuthSetupError::Format {
        path: origin.to_owned(),
        reason: "not UTF-8".to_owned(),
    })?;
    // A byte order mark, which some editors write and RFC 8259 §8.1 lets a reader ignore, as
    // the config and the bindings file are read.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    KeySet::load(text, origin, hmac, generation, emptied)
}

/// Says which keys of a new key set no issuer signs with under `[auth.issuer_keys]`: every
/// token they sign is refused, which a key pushed before its listing (or a typo) would
/// otherwise show only per request.
fn warn_unowned(keys: &KeySet, rules: &ClaimRules, origin: &str) {
    let gaps = IssuerKeyGaps::of(keys, rules);
    if !gaps.unowned.is_empty() || gaps.without_kid {
        tracing::warn!(source = origin, keys = ?gaps.unowned, without_kid = gaps.without_kid,
            "verification keys listed under no issuer in [auth.issuer_keys]: tokens they sign are refused");
    }
}

/// What [`Authenticator::issuer_key_gaps`] finds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IssuerKeyGaps {
    /// Key ids of the set listed under no issuer.
    pub unowned: Vec<String>,
    /// Whether the set holds a key without a `kid`.
    pub without_kid: bool,
    /// (issuer, kid) listed that the set does not hold.
    pub missing: Vec<(String, String)>,
}

impl IssuerKeyGaps {
    /// The gaps between `keys` and `rules`' `[auth.issuer_keys]` (none without one).
    fn of(keys: &KeySet, rules: &ClaimRules) -> Self {
        let Some(issuer_keys) = &rules.issuer_keys else {
            return Self::default();
        };
        let (unowned, without_kid) =
            keys.unowned(|kid| claims::listed_by_an_issuer(issuer_keys, kid));
        let mut missing: Vec<(String, String)> = issuer_keys
            .iter()
            .flat_map(|(iss, kids)| kids.iter().map(move |k| (iss, k)))
            .filter(|(_, kid)| !keys.has_kid(kid))
            .map(|(iss, kid)| (iss.clone(), kid.clone()))
            .collect();
        missing.sort();
        Self {
            unowned: unowned.into_iter().map(str::to_owned).collect(),
            without_kid,
            missing,
        }
    }
}

impl Authenticator {
    /// Loads the key set named by the settings.
    /// A fetched key set (`jwks_url`) is not loaded here: the authenticator starts with the
    /// HMAC secrets alone, until [`remote::RemoteKeys`] installs one.
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthSetupError> {
        let (keys, origin, installed) = match read_source(&settings.jwks) {
            None => (
                KeySet::hmac_only(&settings.hmac_keys),
                "the key set to be fetched".to_owned(),
                false,
            ),
            Some(read) => {
                let (bytes, origin) = read?;
                let keys = load_set(&bytes, &origin, &settings.hmac_keys, 1, false)?;
                (keys, origin, true)
            }
        };
        if settings.issuers.is_empty() {
            tracing::warn!(
                "[auth] issuers is empty: the iss claim is not checked, so a token of any \
                 issuer whose keys the JWKS holds, or of none, is accepted; list the issuer"
            );
        }
        if settings.audiences.is_empty() {
            // Said once at start: with an issuer that names an audience in every token,
            // every request would be refused, and the reason would only show per request.
            tracing::warn!(
                "[auth] audiences is empty: a token that carries an aud claim is refused (it \
                 names some other service, RFC 7519 §4.1.3); list this service's audience"
            );
        }
        let rules = ClaimRules {
            issuers: settings.issuers.clone(),
            audiences: settings.audiences.clone(),
            leeway: settings.leeway.as_secs(),
            max_lifetime: settings.max_token_lifetime.map(|d| d.as_secs()),
            issuer_keys: settings.issuer_keys.as_ref().map(|m| {
                m.iter()
                    .map(|(iss, kids)| (iss.clone(), kids.iter().cloned().collect()))
                    .collect()
            }),
            tenant_claim: settings.tenant_claim.clone(),
            org_claim: settings.org_claim.clone(),
        };
        warn_unowned(&keys, &rules, &origin);
        Ok(Self {
            source: settings.jwks.clone(),
            hmac: settings.hmac_keys.clone(),
            keys: ArcSwap::from_pointee(keys),
            cache: TokenCache::new(settings.token_cache_capacity),
            rules,
            max_token_bytes: settings.max_token_bytes,
            places: TokenPlaces::new(settings),
            generation: AtomicU64::new(1),
            signature_checks: AtomicU64::new(0),
            key_set_loads: AtomicU64::new(1),
            refused: Mutex::new(None),
            revocations: Revocations::none(),
            key_set_installed: AtomicBool::new(installed),
        })
    }

    /// Checks every token against `revocations` from now on.
    pub fn with_revocations(mut self, revocations: Revocations) -> Self {
        self.revocations = revocations;
        self
    }

    /// The revocations tokens are checked against.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Whether a revocation in force refuses `verified` at `now_unix`: for a token relied on
    /// after its request was decided (a tunnel's). [`Authenticator::verify`] checks it too.
    pub fn check_revoked(&self, verified: &VerifiedToken, now_unix: u64) -> Result<(), TokenError> {
        if self
            .revocations
            .refuses(&verified.revocation_facts(), now_unix)
        {
            Err(TokenError::Revoked)
        } else {
            Ok(())
        }
    }

    /// Re-reads the key file if its content changed. On error the current keys stay; a file
    /// whose `keys` array is empty revokes them all (see [`KeySet::load`]). Returns whether a
    /// new key set was installed. A refused content is refused once: until the file holds
    /// something else, it is `Ok(false)`, as the current keys stay.
    pub fn reload_keys(&self) -> Result<bool, AuthSetupError> {
        match read_source(&self.source) {
            Some(read) => self.install(read),
            None => Ok(false),
        }
    }

    /// Installs a key set fetched (or read from its cache file) by [`remote::RemoteKeys`],
    /// by the rules of [`Authenticator::reload_keys`]: the same content is no change, a
    /// refused one keeps the current keys and is refused once, an empty `keys` array
    /// withdraws every key. `origin` names it in what is logged.
    pub fn install_fetched(&self, bytes: Vec<u8>, origin: String) -> Result<bool, AuthSetupError> {
        self.install(Ok((bytes, origin)))
    }

    /// Whether a key set is in use: always, but for a fetched one that was neither fetched
    /// nor found in its cache file yet (until then only HMAC secrets verify tokens, and the
    /// router is not ready).
    pub fn has_key_set(&self) -> bool {
        self.key_set_installed.load(Ordering::Relaxed)
    }

    /// [`Authenticator::reload_keys`] and [`Authenticator::install_fetched`]: what was read,
    /// taken unless it is the set in use or the one refused last.
    fn install(
        &self,
        read: Result<(Vec<u8>, String), AuthSetupError>,
    ) -> Result<bool, AuthSetupError> {
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        let (bytes, origin) = match read {
            Ok(read) => read,
            // Said once (`Err`), then quiet while it stays so: the check comes every few
            // seconds, and a file that cannot be read is as much a refused key set as one that
            // does not parse (`key_set_refused`: rotation has stopped).
            Err(e) => {
                let said = e.to_string();
                if refused.as_ref() == Some(&Refused::Unreadable(said.clone())) {
                    return Ok(false);
                }
                *refused = Some(Refused::Unreadable(said));
                return Err(e);
            }
        };
        let digest = keyset::digest(&bytes);
        if digest == self.keys.load().digest {
            *refused = None;
            return Ok(false);
        }
        if *refused == Some(Refused::Set(digest)) {
            return Ok(false);
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.key_set_loads.fetch_add(1, Ordering::Relaxed);
        match load_set(&bytes, &origin, &self.hmac, generation, true) {
            Ok(keys) => {
                *refused = None;
                warn_unowned(&keys, &self.rules, &origin);
                self.keys.store(Arc::new(keys));
                self.key_set_installed.store(true, Ordering::Relaxed);
                // Entries of the old set are never served again (their generation is past);
                // kept, they would hold places and read as cached tokens. One verified in
                // flight under the old set may still be put back, ignored the same way.
                self.cache.clear();
                Ok(true)
            }
            Err(e) => {
                *refused = Some(Refused::Set(digest));
                Err(e)
            }
        }
    }

    /// Whether the key file holds a key set that was refused, or cannot be read: the keys in
    /// use may be older than the file (`key_set_refused` on `/metrics`).
    pub fn refusing(&self) -> bool {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// The generation of the key set in use. A token verified under another generation is
    /// verified again before it is trusted further: the cache does so for each request, a
    /// tunnel, which outlives the request that opened it, at its next piece.
    pub fn key_generation(&self) -> u64 {
        self.keys.load().generation
    }

    /// `verified`'s time claims at `now_unix`, with the configured leeway: for a token that
    /// keeps being relied on after its request was decided (a tunnel's).
    pub fn check_time(&self, verified: &VerifiedToken, now_unix: u64) -> Result<(), TokenError> {
        verified.check_time(now_unix, self.rules.leeway)
    }

    /// Under `[auth.issuer_keys]`: the key ids of the set listed under no issuer (tokens they
    /// sign are refused), whether a key without a `kid` is in it (it is no issuer's either),
    /// and each issuer's listed `kid`s the set does not hold (a key yet to come, or a typo).
    /// For `check`, which says them before a router runs.
    pub fn issuer_key_gaps(&self) -> IssuerKeyGaps {
        IssuerKeyGaps::of(&self.keys.load(), &self.rules)
    }

    /// Keys of the current set a token can be verified with: under `[auth.issuer_keys]`, only
    /// those some issuer lists (the others verify nothing), so `/readyz` and
    /// `verification_keys` read 0 when every listed kid is missing from the set.
    pub fn key_count(&self) -> usize {
        let keys = self.keys.load();
        match &self.rules.issuer_keys {
            None => keys.len(),
            Some(issuer_keys) => {
                keys.len_owned(|kid| claims::listed_by_an_issuer(issuer_keys, kid))
            }
        }
    }

    /// Keys the current set left out, each with why.
    pub fn skipped_keys(&self) -> Vec<String> {
        self.keys.load().skipped.clone()
    }

    /// RSA keys of the current set that have no `alg`, and so verify RS256 only.
    pub fn rs256_by_default(&self) -> Vec<String> {
        self.keys.load().rs256_by_default.clone()
    }

    /// Where a request's token may be, and what must repeat it.
    pub fn token_places(&self) -> &TokenPlaces {
        &self.places
    }

    /// Full signature verifications so far (cache misses).
    pub fn signature_checks(&self) -> u64 {
        self.signature_checks.load(Ordering::Relaxed)
    }

    /// Key files parsed so far: the one at start and every reload attempted.
    pub fn key_set_loads(&self) -> u64 {
        self.key_set_loads.load(Ordering::Relaxed)
    }

    /// Verified tokens currently cached.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// Verifies a token at `now_unix`: from the cache when this exact token was verified under
    /// the current keys, otherwise in full. Time claims and revocations are checked either
    /// way.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Arc<VerifiedToken>, TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLarge);
        }
        let keys = self.keys.load();
        let key = self.cache.key(token);
        if let Some(key) = &key {
            if let Some(hit) = self.cache.get(key, keys.generation) {
                return match hit.check_time(now_unix, self.rules.leeway) {
                    // Kept in the cache: a revocation taken back serves it again.
                    Ok(()) => self.check_revoked(&hit, now_unix).map(|()| hit),
                    Err(e) => {
                        self.cache.remove(key);
                        Err(e)
                    }
                };
            }
        }
        let parsed = jws::parse(token)?;
        let verify_key = keys.select(parsed.kid.as_deref(), parsed.alg)?;
        // Claims before the signature: a token they refuse (expired, another issuer or
        // audience) is refused without the costly check, however often it comes. Nothing
        // from them is trusted or kept until the signature verifies below.
        let claims = parsed.claims()?;
        let verified = claims::check(&claims, &self.rules, now_unix, parsed.kid, parsed.alg)?;
        claims::check_key_issuer(&claims, verify_key.kid.as_deref(), &self.rules)?;
        self.signature_checks.fetch_add(1, Ordering::Relaxed);
        verify_key.verify(
            parsed.alg,
            parsed.signing_input.as_bytes(),
            &parsed.signature,
        )?;
        if let Some(key) = key {
            self.cache
                .insert(key, Arc::clone(&verified), keys.generation);
        }
        self.check_revoked(&verified, now_unix)?;
        Ok(verified)
    }
}

#[cfg(test)]
mod tests;
