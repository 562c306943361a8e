//! The cache file of a fetched key set (`jwks_cache_file`): the set, the URL it came from (as
//! a SHA-256, and as logged: its query, which may hold a secret, left out) and when the
//! provider last confirmed it. A router that starts while the provider is away takes
//! a set from its own URL only (not the one a changed `jwks_url` left behind), and only while
//! it is not stale: keys a running router keeps past `jwks_max_staleness` stay trusted so that
//! no user is logged out, but a router starting anew does not begin with them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::MAX_JWKS_BYTES;

/// The format's name, in the file.
const FORMAT: &str = "nexus-edge.jwks-cache/v1";

/// Largest cache file read: the key set escaped as a JSON string, and the rest.
pub(super) const MAX_CACHE_BYTES: u64 = 2 * MAX_JWKS_BYTES as u64 + 4096;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cached {
    format: String,
    /// The URL as logged, for a reader.
    url: String,
    /// SHA-256 of the whole URL, hex: what is compared.
    url_sha256: String,
    confirmed_unix_ms: u64,
    /// The key set as the provider served it (its bytes, so its digest is the same).
    jwks: String,
}

/// Why a cache file is not used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum Unusable {
    /// Not this format (hand-written, or another file).
    #[error("not a key set cache ({0})")]
    NotACache(String),
    /// Written for another `jwks_url` (named as logged).
    #[error("kept from {0}, not from auth.jwks_url")]
    OtherUrl(String),
    /// Last confirmed longer ago than `jwks_max_staleness`.
    #[error("last confirmed by the provider {0:?} ago, past auth.jwks_max_staleness")]
    Stale(Duration),
}

/// SHA-256 of a URL, hex.
fn url_digest(url: &str) -> String {
    nexus_binding_store::snapshot::hex(&crate::auth::keyset::digest(url.as_bytes()))
}

/// The file's content for `jwks` (UTF-8, as every key set installed is), from `url` (logged
/// as `shown`), confirmed at `confirmed_unix_ms`.
pub(super) fn encode(url: &str, shown: &str, confirmed_unix_ms: u64, jwks: &[u8]) -> Vec<u8> {
    let cached = Cached {
        format: FORMAT.to_owned(),
        url: shown.to_owned(),
        url_sha256: url_digest(url),
        confirmed_unix_ms,
        jwks: String::from_utf8_lossy(jwks).into_owned(),
    };
    let mut out = serde_json::to_vec_pretty(&cached).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The key set a cache file holds, and when it was confirmed (never later than `now`), if
/// it is from `url` and not stale at `now`.
pub(super) fn decode(
    bytes: &[u8],
    url: &str,
    now_unix_ms: u64,
    max_staleness: Duration,
) -> Result<(Vec<u8>, u64), Unusable> {
    let cached: Cached =
        serde_json::from_slice(bytes).map_err(|e| Unusable::NotACache(e.to_string()))?;
    if cached.format != FORMAT {
        return Err(Unusable::NotACache(format!("format {:?}", cached.format)));
    }
    if cached.url_sha256 != url_digest(url) {
        return Err(Unusable::OtherUrl(cached.url));
    }
    // A time ahead of now (a clock set back since) counts as now, not as fresher.
    let at = cached.confirmed_unix_ms.min(now_unix_ms);
    let age = Duration::from_millis(now_unix_ms - at);
    if age > max_staleness {
        return Err(Unusable::Stale(Duration::from_secs(age.as_secs())));
    }
    Ok((cached.jwks.into_bytes(), at))
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://id.test/jwks";
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_cache_is_taken_from_its_own_url_while_fresh() {
        let jwks = br#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "\u00e9\""}]}"#;
        let file = encode(URL, URL, 1_000_000, jwks);
        assert_eq!(
            decode(&file, URL, 1_000_000 + 60_000, HOUR),
            Ok((jwks.to_vec(), 1_000_000))
        );
        // Confirmed "later than now": now.
        assert_eq!(
            decode(&file, URL, 500_000, HOUR),
            Ok((jwks.to_vec(), 500_000))
        );
        assert_eq!(
            decode(&file, "https://other.test/jwks", 1_000_000, HOUR),
            Err(Unusable::OtherUrl(URL.to_owned()))
        );
        // Only the digest is compared; the query stays out of the file.
        let secret = encode(
            "https://id.test/jwks?k=s3cret",
            "https://id.test/jwks?…",
            1,
            jwks,
        );
        assert!(!String::from_utf8_lossy(&secret).contains("s3cret"));
        assert!(decode(&secret, "https://id.test/jwks?k=s3cret", 1, HOUR).is_ok());
        assert!(decode(&secret, "https://id.test/jwks?k=other", 1, HOUR).is_err());
        assert_eq!(
            decode(&file, URL, 1_000_000 + 2 * 3_600_000, HOUR),
            Err(Unusable::Stale(2 * HOUR))
        );
        for bad in [
            &br#"{"keys": []}"#[..],
            b"",
            br#"{"format": "other", "url": "u", "url_sha256": "", "confirmed_unix_ms": 1, "jwks": ""}"#,
        ] {
            assert!(matches!(
                decode(bad, URL, 1, HOUR),
                Err(Unusable::NotACache(_))
            ));
        }
    }
}
