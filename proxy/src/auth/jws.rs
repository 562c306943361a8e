//! JWS compact serialization: split, decode, and check the protected header.
//!
//! Header rules (RFC 7515, RFC 7519, RFC 8725):
//! - exactly three base64url parts without padding (a five-part JWE is refused);
//! - `alg` required and implemented; `none` never (RFC 8725 §3.1);
//! - `crit` present → refused: this verifier implements no extensions (RFC 7515 §4.1.11);
//! - `jku`, `x5u`, `jwk`, `x5c` → refused: keys come only from the configured key set and a
//!   token that points elsewhere is not trusted (RFC 8725 §3.10);
//! - `typ`, when present, must say JWT (`JWT`, `at+jwt`, with or without `application/`),
//!   so other JWS objects cannot be replayed as logins (RFC 8725 §3.11);
//! - `cty` present → refused: nested JWTs are not accepted (RFC 7519 §5.2);
//! - `b64` other than `true` → refused: unencoded payloads (RFC 7797) are not accepted, with
//!   or without `crit`;
//! - any other header parameter is ignored, as RFC 7515 §4 requires for parameters a verifier
//!   does not understand and that are not listed in `crit`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use super::error::TokenError;
use super::jwk::Algorithm;
use super::strict_json::{parse_object, StrictError};

/// A token split and decoded, header checked, payload not yet parsed, signature not yet
/// verified. The payload is parsed only on demand ([`Parsed::claims`]): a token refused on its
/// header, or whose `kid` names no key, costs no parse of up to a token's worth of JSON.
#[derive(Debug)]
pub(crate) struct Parsed<'t> {
    /// `header.payload`, the bytes the signature covers.
    pub(crate) signing_input: &'t str,
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
    /// The payload, base64url-decoded.
    payload: Vec<u8>,
    pub(crate) signature: Vec<u8>,
}

impl Parsed<'_> {
    /// The payload's claims: a JSON object without duplicate member names.
    pub(crate) fn claims(&self) -> Result<Map<String, Value>, TokenError> {
        object(&self.payload, "payload is not a JSON object")
    }
}

fn decode(part: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed("invalid base64url"))
}

fn object(bytes: &[u8], what: &'static str) -> Result<Map<String, Value>, TokenError> {
    parse_object(bytes).map_err(|e| match e {
        StrictError::Duplicate => TokenError::DuplicateKey,
        StrictError::Invalid => TokenError::Malformed(what),
    })
}

/// Splits and decodes a compact JWS and checks its header. Every part's base64url is checked
/// before any JSON is parsed (a bad one is the cheapest refusal); the payload is left unparsed.
pub(crate) fn parse(token: &str) -> Result<Parsed<'_>, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not three dot-separated parts"));
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(TokenError::Malformed("empty part"));
    }
    let (header, payload, signature) = (decode(h)?, decode(p)?, decode(s)?);
    let header = object(&header, "header is not a JSON object")?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => {
            Algorithm::from_name(a).ok_or(TokenError::UnsupportedAlgorithm)?
        }
        Some(_) => return Err(TokenError::Malformed("alg is not a string")),
        None => return Err(TokenError::Malformed("no alg")),
    };
    if header.contains_key("crit") {
        return Err(TokenError::CriticalHeader);
    }
    for name in ["jku", "x5u", "jwk", "x5c"] {
        if header.contains_key(name) {
            return Err(TokenError::ForbiddenHeader(name));
        }
    }
    if header.contains_key("cty") {
        return Err(TokenError::WrongType);
    }
    // RFC 7516 §9: `enc` is what marks a JWE's header; a JWS's has none. A token that says it
    // is encrypted and signed at once is no token any issuer made.
    if header.contains_key("enc") {
        return Err(TokenError::Malformed("enc header: a JWE's, not a JWS's"));
    }
    // RFC 7797: `b64: false` says the payload was signed unencoded. Such a token must list
    // `b64` in `crit` (refused above); without it, a verifier reading the payload as
    // base64url would take claims the signer never meant. Only the default, `true`, passes.
    match header.get("b64") {
        None | Some(Value::Bool(true)) => {}
        Some(_) => return Err(TokenError::Malformed("unencoded payload (b64)")),
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) => {
            let t = t.to_ascii_lowercase();
            let t = t.strip_prefix("application/").unwrap_or(&t);
            if t != "jwt" && t != "at+jwt" {
                return Err(TokenError::WrongType);
            }
        }
        Some(_) => return Err(TokenError::Malformed("typ is not a string")),
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(TokenError::Malformed("kid is not a string")),
    };
    Ok(Parsed {
        signing_input: &token[..h.len() + 1 + p.len()],
        alg,
        kid,
        payload,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn tok(header: &str, payload: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(payload), b64("sig"))
    }

    #[test]
    fn header_rules() {
        let p = r#"{"exp":1}"#;
        let cases: Vec<(String, Result<Algorithm, TokenError>)> = vec![
            (tok(r#"{"alg":"ES256"}"#, p), Ok(Algorithm::ES256)),
            (
                tok(r#"{"alg":"ES256","typ":"JWT"}"#, p),
                Ok(Algorithm::ES256),
            ),
            (
                tok(r#"{"alg":"ES256","typ":"application/at+jwt"}"#, p),
                Ok(Algorithm::ES256),
            ),
            (
                tok(r#"{"alg":"ES256","x-custom":1,"x5t":"abc"}"#, p),
                Ok(Algorithm::ES256),
            ),
            (
                tok(r#"{"alg":"none"}"#, p),
                Err(TokenError::UnsupportedAlgorithm),
            ),
            (
                tok(r#"{"alg":"None"}"#, p),
                Err(TokenError::UnsupportedAlgorithm),
            ),
            (
                tok(r#"{"alg":"NONE"}"#, p),
                Err(TokenError::UnsupportedAlgorithm),
            ),
            (
                tok(r#"{"alg":"es256"}"#, p),
                Err(TokenError::UnsupportedAlgorithm),
            ),
            (
                tok(r#"{"alg":"RS1"}"#, p),
                Err(TokenError::UnsupportedAlgorithm),
            ),
            (
                tok(r#"{"typ":"JWT"}"#, p),
                Err(TokenError::Malformed("no alg")),
            ),
            (
                tok(r#"{"alg":"ES256","enc":"A256GCM"}"#, p),
                Err(TokenError::Malformed("enc header: a JWE's, not a JWS's")),
            ),
            (
                tok(r#"{"alg":7}"#, p),
                Err(TokenError::Malformed("alg is not a string")),
            ),
            (
                tok(r#"{"alg":"ES256","crit":["exp"]}"#, p),
                Err(TokenError::CriticalHeader),
            ),
            (
                tok(r#"{"alg":"ES256","crit":[]}"#, p),
                Err(TokenError::CriticalHeader),
            ),
            (
                tok(r#"{"alg":"ES256","jku":"https://x"}"#, p),
                Err(TokenError::ForbiddenHeader("jku")),
            ),
            (
                tok(r#"{"alg":"ES256","x5u":"https://x"}"#, p),
                Err(TokenError::ForbiddenHeader("x5u")),
            ),
            (
                tok(r#"{"alg":"ES256","jwk":{}}"#, p),
                Err(TokenError::ForbiddenHeader("jwk")),
            ),
            (
                tok(r#"{"alg":"ES256","x5c":[]}"#, p),
                Err(TokenError::ForbiddenHeader("x5c")),
            ),
            (
                tok(r#"{"alg":"ES256","typ":"dpop+jwt"}"#, p),
                Err(TokenError::WrongType),
            ),
            (
                tok(r#"{"alg":"ES256","cty":"JWT"}"#, p),
                Err(TokenError::WrongType),
            ),
            (
                tok(r#"{"alg":"ES256","b64":true}"#, p),
                Ok(Algorithm::ES256),
            ),
            (
                tok(r#"{"alg":"ES256","b64":false}"#, p),
                Err(TokenError::Malformed("unencoded payload (b64)")),
            ),
            (
                tok(r#"{"alg":"ES256","b64":"false"}"#, p),
                Err(TokenError::Malformed("unencoded payload (b64)")),
            ),
            (
                tok(r#"{"alg":"ES256","alg":"ES256"}"#, p),
                Err(TokenError::DuplicateKey),
            ),
            (
                tok(r#"{"alg":"ES256"}"#, r#"{"a":1,"a":2}"#),
                Err(TokenError::DuplicateKey),
            ),
            (
                tok(r#"{"alg":"ES256","kid":1}"#, p),
                Err(TokenError::Malformed("kid is not a string")),
            ),
            (
                tok(r#"{"alg":"ES256"}"#, "[1]"),
                Err(TokenError::Malformed("payload is not a JSON object")),
            ),
            (
                tok("[]", p),
                Err(TokenError::Malformed("header is not a JSON object")),
            ),
        ];
        for (t, want) in cases {
            let alg = parse(&t).and_then(|p| p.claims().map(|_| p.alg));
            assert_eq!(alg, want, "{t}");
        }
    }

    #[test]
    fn shape_rules() {
        let good = tok(r#"{"alg":"ES256"}"#, "{}");
        let (hp, _) = good.rsplit_once('.').expect("dot");
        for bad in [
            hp.to_owned(),
            format!("{good}.x.y"),
            format!("{hp}."),
            format!("{good}="),
            format!("{hp}.a+b/"),
            ".".to_owned(),
            String::new(),
        ] {
            assert!(
                matches!(parse(&bad), Err(TokenError::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}
