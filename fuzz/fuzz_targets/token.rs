//! Token verification on arbitrary bytes: splitting, base64url, strict JSON, header rules,
//! signature and claims. Nothing may panic, and no token is accepted unless it is, byte for
//! byte, one of the genuine tokens signed with the demo key (the fuzzer has no private key, so
//! any other accepted token would be a forgery). That holds because the world signs with RS256
//! only, whose signatures cannot be altered and still verify; ECDSA's can ((r, s) and
//! (r, n - s) both verify), so an EC key here would need a weaker property.

#![no_main]

#[path = "world.rs"]
mod world;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let w = world::world();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(verified) = w.auth.verify(text, w.now) {
        assert!(
            w.tokens.iter().any(|t| t == text),
            "accepted a token nobody signed: {verified:?}"
        );
    }
    // The credential extractor sees the same bytes as a header value, a token header's and
    // a cookie header's.
    let header = [b"Bearer ".as_slice(), data].concat();
    let places = nexus_edge::auth::TokenPlaces::with_session_cookie(Some("sess"));
    let _ = nexus_edge::auth::extract_token(&[&header], &[data], &[data], &[data], &places);
});
