//! The key set: JWKS keys plus configured HMAC secrets, indexed by `kid`.
//!
//! A `kid` may name keys of different types that the issuer treats as alternatives (RFC 7517
//! §4.5 gives this example): each key verifies one algorithm, so the token's `alg` picks among
//! them. Two keys with the same `kid` and algorithm are ambiguous; the second is skipped.

use std::collections::HashMap;
use std::sync::Arc;

use nexus_config::HmacKey;
use serde_json::Value;

use super::error::{AuthSetupError, TokenError};
use super::jwk::{parse_jwk, Algorithm, VerifyKey};
use super::strict_json::{parse_object, StrictError};

/// An immutable set of verification keys; swapped whole on reload.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    /// Keys by `kid`; the keys under one `kid` have distinct algorithms.
    by_kid: HashMap<String, Vec<Arc<VerifyKey>>>,
    /// Keys without a `kid` (usable only when they are the only key).
    anonymous: Vec<Arc<VerifyKey>>,
    /// Bumped on every reload; cache entries from older generations are ignored.
    pub(crate) generation: u64,
    /// SHA-256 of the JWKS text, to skip reloads of an unchanged file.
    pub(crate) digest: [u8; 32],
    /// Keys left out, each with why (a duplicate `kid`, an unsupported or broken key).
    pub(crate) skipped: Vec<String>,
    /// RSA keys without `alg`, which verify RS256 only (a key set that signs PS256 or RS512
    /// with them must say so): told at load and by `check`.
    pub(crate) rs256_by_default: Vec<String>,
}

impl KeySet {
    /// Builds a key set from JWKS text and the configured HMAC keys. Bad keys are skipped with
    /// a warning naming them; a set with no usable key is an error, except, with `emptied`,
    /// one whose `keys` array is empty: on a reload that is how every key is revoked at
    /// once, and keeping the old keys would keep accepting what an operator withdrew. (Keys
    /// all skipped are no such intent: the current keys stay.)
    pub(crate) fn load(
        text: &str,
        origin: &str,
        hmac: &[HmacKey],
        generation: u64,
        emptied: bool,
    ) -> Result<KeySet, AuthSetupError> {
        let format = |reason: String| AuthSetupError::Format {
            path: origin.to_owned(),
            reason,
        };
        // A key written with a member twice (`"alg"` twice, with different values) would be
        // read by its last value here and maybe its first by whoever checks the file: refused
        // whole, as a token is.
        if parse_object(text.as_bytes()) == Err(StrictError::Duplicate) {
            return Err(format(
                "an object repeats a member name, so which of its values is meant is unclear"
                    .to_owned(),
            ));
        }
        let doc: Value = serde_json::from_str(text).map_err(|e| format(e.to_string()))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| format("no \"keys\" array".to_owned()))?;
        let mut set = KeySet {
            generation,
            digest: digest(text.as_bytes()),
            ..KeySet::default()
        };
        let mut skipped = Vec::new();
        let mut anonymous = Vec::new();
        for (i, jwk) in keys.iter().enumerate() {
            let name = jwk
                .get("kid")
                .and_then(Value::as_str)
                .map_or_else(|| format!("keys[{i}]"), |k| format!("kid {k:?}"));
            let parsed = parse_jwk(jwk);
            if parsed.as_ref().is_ok_and(|k| k.kid.is_none()) {
                anonymous.push(name.clone());
            }
            match parsed {
                Ok(key) if jwk.get("alg").is_none() && key.alg == Algorithm::RS256 => {
                    set.rs256_by_default.push(name.clone());
                    set.insert(key, &name, &mut skipped);
                }
                Ok(key) => set.insert(key, &name, &mut skipped),
                Err(reason) => skipped.push(format!("{name}: {reason}")),
            }
        }
        // A token names its key by `kid`; one without a `kid` reaches only the set's one key.
        // Beside other keys (HMAC secrets included) a key without one verifies nothing:
        // skipped and said, not counted as a key in use.
        if !set.anonymous.is_empty() && set.len() + hmac.len() > 1 {
            set.anonymous.clear();
            skipped.extend(anonymous.iter().map(|name| {
                format!(
                    "{name}: no kid, beside other keys: a token selects its key by kid, so this \
                     one would verify nothing (give it a kid)"
                )
            }));
            set.rs256_by_default.retain(|n| !anonymous.contains(n));
        }
        if !set.rs256_by_default.is_empty() {
            tracing::info!(source = origin, keys = %set.rs256_by_default.join(", "),
                "RSA keys without alg verify RS256 only");
        }
        for sk in &skipped {
            tracing::warn!(source = origin, key = %sk, "verification key skipped");
        }
        // Keys given and none usable is a mistake, whatever HMAC secrets are configured
        // beside them: the current keys stay (HMAC keys counted here would let a bad push
        // revoke every JWKS key).
        if !keys.is_empty() && set.len() == 0 {
            return Err(AuthSetupError::NoKeys {
                path: origin.to_owned(),
                skipped: skipped.len(),
                reasons: skipped.join("; "),
            });
        }
        if keys.is_empty() && emptied {
            tracing::error!(
                source = origin,
                "the JWKS holds no keys: every token it signed is refused until keys are added"
            );
        }
        for h in hmac {
            // Refused whole, not skipped: the secret was configured on purpose, and without it
            // every HS256 token would be refused while the router looked healthy.
            if set.by_kid.contains_key(&h.kid) {
                return Err(AuthSetupError::HmacKidTaken {
                    path: origin.to_owned(),
                    kid: h.kid.clone(),
                });
            }
            set.by_kid.insert(
                h.kid.clone(),
                vec![Arc::new(VerifyKey::hmac(&h.kid, h.alg, &h.secret))],
            );
        }
        if set.len() == 0 && emptied {
            return Ok(set);
        }
        if set.len() == 0 {
            return Err(AuthSetupError::NoKeys {
                path: origin.to_owned(),
                skipped: skipped.len(),
                reasons: skipped.join("; "),
            });
        }
        set.skipped = skipped;
        Ok(set)
    }

    /// The HMAC secrets alone: the set a fetched JWKS starts from, before its first fetch.
    /// (Their `kid`s are checked against the JWKS's when one comes, by [`KeySet::load`].)
    pub(crate) fn hmac_only(hmac: &[HmacKey]) -> KeySet {
        let mut set = KeySet {
            generation: 1,
            ..KeySet::default()
        };
        for h in hmac {
            set.by_kid.insert(
                h.kid.clone(),
                vec![Arc::new(VerifyKey::hmac(&h.kid, h.alg, &h.secret))],
            );
        }
        set
    }

    /// Adds a parsed JWKS key; a second key with the same `kid` and algorithm is skipped.
    fn insert(&mut self, key: VerifyKey, name: &str, skipped: &mut Vec<String>) {
        match key.kid.clone() {
            Some(kid) => {
                let same_kid = self.by_kid.entry(kid).or_default();
                if same_kid.iter().any(|k| k.alg == key.alg) {
                    skipped.push(format!("{name}: duplicate kid for {}", key.alg.name()));
                } else {
                    same_kid.push(Arc::new(key));
                }
            }
            None => self.anonymous.push(Arc::new(key)),
        }
    }

    /// Key ids of the set that `owned` does not accept, and whether a key without a `kid`
    /// is in it: keys no issuer signs with, under `[auth.issuer_keys]`.
    pub(crate) fn unowned(&self, owned: impl Fn(&str) -> bool) -> (Vec<&str>, bool) {
        let mut kids: Vec<&str> = self
            .by_kid
            .keys()
            .map(String::as_str)
            .filter(|k| !owned(k))
            .collect();
        kids.sort_unstable();
        (kids, !self.anonymous.is_empty())
    }

    /// Whether a key of the set has this `kid`.
    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// Number of usable keys.
    pub(crate) fn len(&self) -> usize {
        self.by_kid.values().map(Vec::len).sum::<usize>() + self.anonymous.len()
    }

    /// Number of usable keys whose `kid` `owned` accepts: under `[auth.issuer_keys]`, the
    /// keys some issuer signs with (a key without a `kid` is no issuer's).
    pub(crate) fn len_owned(&self, owned: impl Fn(&str) -> bool) -> usize {
        self.by_kid
            .iter()
            .filter(|(kid, _)| owned(kid))
            .map(|(_, keys)| keys.len())
            .sum()
    }

    /// The key that verifies a token with this `kid` and `alg`. Without a `kid`, only a lone
    /// key is used. A `kid` that names no key of the token's algorithm is an algorithm
    /// mismatch: the token asks a known key to verify what it was not published for.
    pub(crate) fn select(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<&Arc<VerifyKey>, TokenError> {
        let key = match kid {
            Some(k) => {
                let keys = self.by_kid.get(k).ok_or(TokenError::UnknownKey)?;
                keys.iter().find(|key| key.alg == alg).or(keys.first())
            }
            None if self.len() == 1 => self
                .by_kid
                .values()
                .flatten()
                .next()
                .or(self.anonymous.first()),
            None => None,
        }
        .ok_or(TokenError::UnknownKey)?;
        if key.alg == alg {
            Ok(key)
        } else {
            Err(TokenError::AlgorithmMismatch)
        }
    }
}

/// SHA-256 of a key file's bytes.
pub(crate) fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
